#[derive(serde::Serialize, serde::Deserialize)]
struct MyProcess {
    id: u32,
}

#[multiproc::process]
impl MyProcess {
    fn start(&mut self) {}
}

fn main() {}
