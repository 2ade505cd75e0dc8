//! The tutorial's "Terminating processes": the child is terminated before it finishes.
//!
//! ```text
//! My Process has terminated, terminating main thread
//! Terminating Child Process
//! Child Process successfully terminated
//! ```
use std::time::Duration;

use multiproc::{process, Process};

#[process]
fn child_process() {
    std::thread::sleep(Duration::from_secs(5));
    println!("Starting function");
    println!("Finished function");
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let p = Process::new(child_process, ());
    p.start()?;
    println!("My Process has terminated, terminating main thread");
    println!("Terminating Child Process");
    p.terminate()?;
    let code = p.join()?;
    assert_eq!(code, -15, "killed by SIGTERM");
    println!("Child Process successfully terminated");
    Ok(())
}
