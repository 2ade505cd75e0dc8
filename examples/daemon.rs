//! The tutorial's "Daemon processes": the non-daemonic process prints and ends; the daemonic
//! one loops forever and is terminated when `main` returns.
//!
//! ```text
//! starting my Process
//! ending my Process
//! ```
use std::time::Duration;

use multiproc::{process, Process};

#[process]
fn non_daemon_process() {
    println!("starting my Process");
    std::thread::sleep(Duration::from_millis(300));
    println!("ending my Process");
}

#[process]
fn daemon_process() {
    loop {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let non_daemon = Process::new(non_daemon_process, ());
    let daemon = Process::new(daemon_process, ());
    daemon.set_daemon(true)?;
    non_daemon.set_daemon(false)?;
    daemon.start()?;
    non_daemon.start()?;
    // Returning from main joins `non_daemon` and terminates `daemon`, as Python does at exit.
    Ok(())
}
