#[multiproc::process]
unsafe fn poke(addr: usize) -> u8 {
    addr as u8
}

fn main() {}
