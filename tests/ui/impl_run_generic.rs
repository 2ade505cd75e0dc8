#[derive(serde::Serialize, serde::Deserialize)]
struct MyProcess {
    id: u32,
}

#[multiproc::process]
impl MyProcess {
    fn run<T: Default>(&mut self) {
        let _ = T::default();
    }
}

fn main() {}
