// A rejected generic worker used at its call sites: the rejection is the only error.

#[multiproc::process]
fn largest<T: PartialOrd>(a: T, b: T) -> T {
    if a > b {
        a
    } else {
        b
    }
}

fn main() -> multiproc::Result<()> {
    let _ = largest(1, 2);
    let pool = multiproc::Pool::new(2)?;
    let biggest: Vec<u32> = pool.starmap(largest, [(1, 2), (4, 3)])?;
    assert_eq!(biggest, [2, 4]);
    multiproc::Process::new(largest, (1u8, 2u8)).start()?;
    Ok(())
}
