// A worker whose attribute has a misspelled key, used at its call sites: the key is the only error.

#[multiproc::process(nmae = "stable::square")]
fn square(n: u64) -> u64 {
    n * n
}

fn main() -> multiproc::Result<()> {
    let pool = multiproc::Pool::new(2)?;
    let squares: Vec<u64> = pool.map(square, 0..4)?;
    assert_eq!(squares.len(), square(2) as usize);
    Ok(())
}
