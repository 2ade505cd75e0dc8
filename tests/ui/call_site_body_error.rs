// A rejected worker keeps its body checked: its own mistake is reported as well, once, and the
// call sites add nothing.

#[multiproc::process]
fn count(text: &str) -> u32 {
    text.len()
}

fn main() -> multiproc::Result<()> {
    let _ = count("four");
    let pool = multiproc::Pool::new(2)?;
    let _: Vec<u32> = pool.map(count, ["a"])?;
    Ok(())
}
