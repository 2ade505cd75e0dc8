//! The tutorial's "Using a process in subclass": a type with a `run` method, five instances.
//!
//! ```text
//! called run method in process: MyProcess-1
//! called run method in process: MyProcess-2
//! called run method in process: MyProcess-3
//! called run method in process: MyProcess-4
//! called run method in process: MyProcess-5
//! ```
use multiproc::{current_process, process, Process};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct MyProcess;

#[process]
impl MyProcess {
    fn run(&mut self) {
        println!("called run method in process: {}", current_process().name());
    }
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    for _ in 0..5 {
        let p = Process::from(MyProcess);
        p.start()?;
        p.join()?;
    }
    Ok(())
}
