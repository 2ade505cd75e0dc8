//! A crate that forbids `unsafe` code can still declare workers: the generated code is the
//! macro's, not the crate's.
#![forbid(unsafe_code)]

#[multiproc::process]
fn double(n: u64) -> u64 {
    n * 2
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Job;

#[multiproc::process]
impl Job {
    fn run(&mut self) {}
}

fn main() {
    assert_eq!(double(2), 4);
}
