// `name = "..."` sets the registered name exactly; `crate = "..."` a re-exported path.
use multiproc::{process, Target};

mod reexport {
    pub use multiproc as mp;
}

#[process(name = "stable::square")]
fn square(n: u64) -> u64 {
    n * n
}

#[process(crate = "crate::reexport::mp", name = "via::reexport")]
fn cube(n: u64) -> u64 {
    n * n * n
}

#[process(crate = "::multiproc")]
fn absolute() {}

fn main() {
    assert_eq!(<square as Target>::NAME, "stable::square");
    assert_eq!(<cube as Target>::NAME, "via::reexport");
    assert_eq!(square(3) + cube(2), 17);
    absolute();
}
