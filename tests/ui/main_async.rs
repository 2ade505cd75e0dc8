#[multiproc::main]
async fn start() {}

fn main() {}
