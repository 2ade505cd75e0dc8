// A registered name with a NUL byte: the name becomes a symbol, which may hold none.
use multiproc::process;

#[process(name = "a\0b")]
fn nul(x: u32) -> u32 {
    x
}

fn main() {
    let _ = nul(1);
}
