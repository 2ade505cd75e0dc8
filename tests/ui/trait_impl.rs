#[derive(serde::Serialize, serde::Deserialize)]
struct MyProcess {
    id: u32,
}

trait Job {
    fn run(&mut self);
}

#[multiproc::process]
impl Job for MyProcess {
    fn run(&mut self) {}
}

fn main() {}
