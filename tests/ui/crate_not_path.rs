#[multiproc::process(crate = "not a path")]
fn square(n: u64) -> u64 {
    n * n
}

fn main() {}
