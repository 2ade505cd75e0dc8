#[derive(serde::Serialize, serde::Deserialize)]
struct MyProcess {
    id: u32,
}

#[multiproc::process]
impl MyProcess {
    fn run(&mut self, times: u32) {
        self.id += times;
    }
}

fn main() {}
