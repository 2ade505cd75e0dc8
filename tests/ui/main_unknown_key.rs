#[multiproc::main(name = "app")]
fn main() {}
