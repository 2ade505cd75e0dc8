#[derive(serde::Serialize, serde::Deserialize)]
struct MyProcess {
    id: u32,
}

#[multiproc::process]
impl MyProcess {
    async fn run(&mut self) {}
}

fn main() {}
