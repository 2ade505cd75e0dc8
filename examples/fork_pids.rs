//! The tutorial's "Creating a process with Fork": the parent and the forked child print their
//! PIDs.
//!
//! ```text
//! PID of Parent process is : 25989
//! PID of Child process is : 25990
//! ```
use multiproc::{process, Process, StartMethod};

#[process]
fn child() {
    println!("PID of Child process is : {}", std::process::id());
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let p = Process::new(child, ()).with_start_method(StartMethod::Fork);
    println!("PID of Parent process is : {}", std::process::id());
    p.start()?;
    p.join()?;
    Ok(())
}
