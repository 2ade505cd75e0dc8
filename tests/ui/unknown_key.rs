#[multiproc::process(nmae = "stable::square")]
fn square(n: u64) -> u64 {
    n * n
}

fn main() {}
