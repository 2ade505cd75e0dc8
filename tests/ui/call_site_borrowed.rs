// A rejected worker used at its call sites: the rejection is the only error, not one more per use.

#[multiproc::process]
fn greet(name: &str) -> String {
    format!("hello {name}")
}

fn main() -> multiproc::Result<()> {
    let _ = greet("direct");
    let p = multiproc::Process::new(greet, "child");
    p.start()?;
    let pool = multiproc::Pool::new(2)?;
    let greetings: Vec<String> = pool.map(greet, ["a", "b"])?;
    assert_eq!(greetings.len(), 2);
    let _ = pool.apply(greet, "c")?.len();
    Ok(())
}
