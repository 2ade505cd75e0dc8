//! The tutorial's "Creating a process with Spawn": three processes, each printing its number.
//!
//! ```text
//! This is process: 0
//! This is process: 1
//! This is process: 2
//! ```
use multiproc::{process, Process, StartMethod};

#[process]
fn spawn_process(i: u32) {
    println!("This is process: {i}");
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    multiproc::set_start_method(StartMethod::Spawn)?;
    let mut jobs = Vec::new();
    for i in 0..3 {
        let p = Process::new(spawn_process, i);
        p.start()?;
        // Joined in turn so the output keeps the tutorial's order.
        p.join()?;
        jobs.push(p);
    }
    Ok(())
}
