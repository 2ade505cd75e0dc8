#[multiproc::main]
fn start<T: Default>() {
    let _ = T::default();
}

fn main() {}
