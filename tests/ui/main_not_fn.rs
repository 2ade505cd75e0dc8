#[multiproc::main]
mod app {}

fn main() {}
