struct Opaque;

#[multiproc::process]
fn produce() -> Opaque {
    Opaque
}

fn main() {}
