// Two workers registered under one name: the build fails, at the second one's name.

#[multiproc::process(name = "app::square")]
fn square(n: u64) -> u64 {
    n * n
}

mod other {
    #[multiproc::process(name = "app::square")]
    pub fn square_again(n: u64) -> u64 {
        n * n
    }
}

fn main() {
    assert_eq!(square(2), other::square_again(2));
}
