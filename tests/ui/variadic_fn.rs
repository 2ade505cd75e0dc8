#[multiproc::process]
fn sum(first: i32, _: ...) -> i32 {
    first
}

fn main() {}
