#[multiproc::process]
struct Worker {
    id: u32,
}

fn main() {}
