#[derive(serde::Serialize)]
struct MyProcess {
    id: u32,
}

#[multiproc::process]
impl MyProcess {
    fn run(&mut self) {
        self.id += 1;
    }
}

fn main() {}
