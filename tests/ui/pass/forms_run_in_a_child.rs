// Forms no other case has, each run in a spawned child: a worker in a function body, one of
// two workers of one name behind exclusive `cfg`s, `ref` / `ref mut` / `_` patterns, a raw
// identifier, a `Result` return, a `where` clause, an attribute on an argument, doc comments
// around the attribute, and process types whose `run` is a `const fn` or returns `!`.
use multiproc::{process, Process, ProcessBuilder, StartMethod, Target};
use serde::{Deserialize, Serialize};

#[process]
#[cfg(unix)]
fn platform(x: u32) -> u32 {
    x + 1
}

#[process]
#[cfg(not(unix))]
fn platform(x: u32) -> u32 {
    x + 2
}

/// Before the attribute.
#[process]
/// After it.
fn patterns(ref a: u32, ref mut b: u32, _: String) -> u32 {
    *b += *a;
    *b
}

#[process]
fn r#match(r#type: u8) -> u8 {
    r#type
}

#[process]
fn checked(x: u32) -> Result<u32, String>
where
    u32: Copy,
{
    if x == 0 {
        Err("zero".to_string())
    } else {
        Ok(x)
    }
}

#[process]
fn annotated(#[allow(unused_variables)] unused: u32) -> u32 {
    7
}

#[derive(Serialize, Deserialize)]
struct Constant;

#[process]
impl Constant {
    const fn run(&self) {}
}

#[derive(Serialize, Deserialize)]
struct Never(i32);

#[process]
impl Never {
    fn run(&mut self) -> ! {
        std::process::exit(self.0)
    }
}

fn inner_name() -> &'static str {
    #[process]
    fn in_body(x: u32) -> u32 {
        x * 3
    }
    let handle = ProcessBuilder::new()
        .start_method(StartMethod::Spawn)
        .spawn(in_body, 5)
        .unwrap();
    assert_eq!(handle.join().unwrap(), 15);
    <in_body as Target>::NAME
}

fn in_child<T: Target>(target: T, args: T::Args) -> T::Output {
    ProcessBuilder::new()
        .start_method(StartMethod::Spawn)
        .spawn(target, args)
        .unwrap()
        .join()
        .unwrap()
}

fn main() {
    multiproc::init();
    assert_eq!(in_child(platform, 1), 2);
    assert_eq!(in_child(patterns, (2, 3, String::new())), 5);
    assert_eq!(in_child(r#match, 4), 4);
    assert_eq!(<r#match as Target>::NAME, concat!(module_path!(), "::match"));
    assert_eq!(in_child(checked, 0), Err("zero".to_string()));
    assert_eq!(in_child(checked, 2), Ok(2));
    assert_eq!(in_child(annotated, 1), 7);
    assert_eq!(inner_name(), concat!(module_path!(), "::in_body"));
    for (p, code) in [
        (Process::from(Constant), 0),
        (Process::from(Never(9)), 9),
    ] {
        let p = p.with_start_method(StartMethod::Spawn);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), code);
    }
}
