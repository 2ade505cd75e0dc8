struct Opaque;

#[multiproc::process]
fn consume(id: u32, value: Opaque) -> u32 {
    let _ = value;
    id
}

fn main() {}
