#[derive(serde::Serialize, serde::Deserialize)]
struct Job {
    id: u32,
}

#[multiproc::process(codec = "msgpack")]
impl Job {
    fn run(&mut self) {}
}

fn main() {
    let _ = multiproc::Process::from(Job { id: 1 });
}
