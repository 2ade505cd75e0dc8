// A rejected process type used at its call sites: the rejection is the only error.

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

fn main() -> multiproc::Result<()> {
    let p = multiproc::Process::from(MyProcess { id: 1 });
    p.start()?;
    let ctx = multiproc::get_context(multiproc::StartMethod::Spawn);
    ctx.process_from(MyProcess { id: 2 }).start()?;
    MyProcess { id: 3 }.run(4);
    Ok(())
}
