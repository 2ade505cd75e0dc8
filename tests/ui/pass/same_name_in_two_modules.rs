// The same function or type name in two modules is two workers: each is registered under its
// module path, and the build accepts both.
use multiproc::{Runnable, Target};

mod a {
    #[multiproc::process]
    pub fn add(x: u32, y: u32) -> u32 {
        x + y
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Job;

    #[multiproc::process]
    impl Job {
        fn run(&mut self) {}
    }
}

mod b {
    #[multiproc::process]
    pub fn add(x: u32, y: u32) -> u32 {
        x * y
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Job;

    #[multiproc::process]
    impl Job {
        fn run(&mut self) {}
    }
}

fn main() {
    assert_ne!(<a::add as Target>::NAME, <b::add as Target>::NAME);
    assert_ne!(<a::Job as Runnable>::NAME, <b::Job as Runnable>::NAME);
    assert_eq!(a::add(2, 3) + b::add(2, 3), 11);
}
