// A rejected generic process type used at its call sites: the rejection is the only error.

#[derive(serde::Serialize, serde::Deserialize)]
struct MyProcess<T> {
    value: T,
}

#[multiproc::process]
impl<T> MyProcess<T> {
    fn run(&mut self) {}
}

fn main() -> multiproc::Result<()> {
    multiproc::Process::from(MyProcess { value: 1u32 }).start()?;
    Ok(())
}
