#[derive(serde::Serialize, serde::Deserialize)]
struct Job {
    id: u32,
}

#[multiproc::process(codec = "json")]
impl Job {
    fn run(&mut self) {}
}

fn main() {
    // The type is still a process type: the attribute's error is the only one.
    let _ = multiproc::Process::from(Job { id: 1 });
}
