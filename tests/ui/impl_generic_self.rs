#[derive(serde::Serialize, serde::Deserialize)]
struct MyProcess<T> {
    value: T,
}

#[multiproc::process]
impl MyProcess<u32> {
    fn run(&mut self) {}
}

fn main() {}
