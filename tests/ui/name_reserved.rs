// A registered name under `multiproc::`, the library's own: the pool's worker is registered
// as `multiproc::pool::worker`, and a second entry of that name made every pool fail to start
// at run time ("registered twice").
use multiproc::process;

#[process(name = "multiproc::pool::worker")]
fn mine(x: u32) -> u32 {
    x
}

fn main() {
    let _ = mine(1);
}
