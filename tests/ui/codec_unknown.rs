#[multiproc::process(codec = "json")]
fn shape(v: u64) -> u64 {
    v
}

fn main() {
    // The worker's name still works: the attribute's error is the only one.
    let _ = multiproc::Process::new(shape, 1);
}
