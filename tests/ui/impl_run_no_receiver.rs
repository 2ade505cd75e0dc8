#[derive(serde::Serialize, serde::Deserialize)]
struct MyProcess {
    id: u32,
}

#[multiproc::process]
impl MyProcess {
    fn run() {}
}

fn main() {}
