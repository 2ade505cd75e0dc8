//! The tutorial's "Identifying the current process": the PIDs of main and of the child.
//!
//! ```text
//! PID of Main process is: 9401
//! PID of Child Process is: 9402
//! ```
use multiproc::{current_process, process, Process};

#[process]
fn child_process() {
    println!("PID of Child Process is: {}", current_process().pid());
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    println!("PID of Main process is: {}", current_process().pid());
    let p = Process::new(child_process, ());
    p.start()?;
    p.join()?;
    Ok(())
}
