//! The tutorial's "Creating a process with Forkserver": a clean server process forks each
//! child on request; the child's parent is the server, not `main`.
//!
//! ```text
//! Fork server started the child: PID 4242, its parent 4241, main is 4240
//! This is process: 0
//! This is process: 1
//! This is process: 2
//! ```
use multiproc::{get_context, process, StartMethod};

#[process]
fn spawn_process(i: u32) {
    println!("This is process: {i}");
}

#[process]
fn who_am_i(main_pid: u32) {
    println!(
        "Fork server started the child: PID {}, its parent {}, main is {main_pid}",
        std::process::id(),
        std::os::unix::process::parent_id()
    );
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let ctx = get_context(StartMethod::ForkServer);
    let p = ctx.process(who_am_i, std::process::id());
    p.start()?;
    p.join()?;
    for i in 0..3 {
        let p = ctx.process(spawn_process, i);
        p.start()?;
        p.join()?;
    }
    Ok(())
}
