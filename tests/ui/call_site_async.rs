// A rejected async worker used at its call sites: the rejection is the only error.

#[multiproc::process]
async fn fetch(n: u32) -> u32 {
    n + 1
}

fn main() -> multiproc::Result<()> {
    let _future = fetch(1);
    let pool = multiproc::Pool::new(2)?;
    let _: Vec<u32> = pool.map(fetch, 0..4)?;
    Ok(())
}
