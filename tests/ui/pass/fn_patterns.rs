// Patterns in argument position, a recursive body, and attributes on the function.
use multiproc::{process, Target};

#[process]
fn patterns(mut x: u32, (a, b): (u8, u8), [c, _]: [u16; 2]) -> u32 {
    x += u32::from(a) + u32::from(b) + u32::from(c);
    x
}

#[process]
fn single_pattern((a, b): (String, String)) -> String {
    a + &b
}

/// Recursion goes through the worker value.
#[process]
#[inline]
pub fn factorial(n: u64) -> u64 {
    if n <= 1 {
        1
    } else {
        n * factorial(n - 1)
    }
}

#[process]
#[must_use]
const fn constant(n: u32) -> u32 {
    n + 1
}

#[process]
fn never(code: i32) -> ! {
    std::process::exit(code)
}

mod inner {
    #[multiproc::process]
    pub(crate) fn in_module(v: Vec<String>) -> usize {
        v.len()
    }
}

fn assert_target<T: Target>(_: T) {}

fn main() {
    assert_eq!(patterns(1, (2, 3), [4, 5]), 10);
    assert_eq!(<patterns as Target>::call((1, (2, 3), [4, 5])), 10);
    assert_eq!(single_pattern(("a".into(), "b".into())), "ab");
    assert_eq!(
        <single_pattern as Target>::call(("a".into(), "b".into())),
        "ab"
    );
    assert_eq!(factorial(5), 120);
    assert_eq!(<factorial as Target>::call(6), 720);
    assert_eq!(constant(1), 2);
    assert_eq!(inner::in_module(vec![String::new()]), 1);
    assert_eq!(
        <inner::in_module as Target>::NAME,
        concat!(module_path!(), "::inner::in_module")
    );
    assert_target(never);
    let _: fn(i32) -> ! = *never;
}
