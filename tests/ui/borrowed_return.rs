#[multiproc::process]
fn greeting(n: u32) -> &'static str {
    if n > 0 {
        "hi"
    } else {
        "bye"
    }
}

fn main() {}
