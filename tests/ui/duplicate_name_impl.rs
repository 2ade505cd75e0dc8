// A process type registered under a worker's name: the build fails too, one namespace for both.

#[multiproc::process(name = "app::job")]
fn job() {}

#[derive(serde::Serialize, serde::Deserialize)]
struct Job;

#[multiproc::process(name = "app::job")]
impl Job {
    fn run(&mut self) {}
}

fn main() {
    job();
}
