#[multiproc::process(name = "a::square", name = "b::square")]
fn square(n: u64) -> u64 {
    n * n
}

fn main() {}
