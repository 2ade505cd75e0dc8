#[multiproc::main]
fn start(args: Vec<String>) {
    let _ = args;
}

fn main() {}
