#[derive(serde::Serialize, serde::Deserialize)]
struct MyProcess<T> {
    value: T,
}

#[multiproc::process]
impl<T> MyProcess<T> {
    fn run(&mut self) {}
}

fn main() {}
