#[multiproc::process]
extern "C" fn callback(n: i32) -> i32 {
    n
}

fn main() {}
