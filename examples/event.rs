//! `Event`: three processes wait for the parent's go; one `set` wakes them all.
//!
//! ```text
//! waiting: nobody has started
//! go!
//! worker 0 started
//! ...
//! ```
use std::time::Duration;

use multiproc::{process, Event, Process};

#[process]
fn worker(go: Event, i: u32) {
    if go.wait_timeout(Duration::from_secs(30)).expect("wait") {
        println!("worker {i} started");
    }
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let go = Event::new()?;
    let workers: Vec<Process> = (0..3)
        .map(|i| Process::new(worker, (go.clone(), i)))
        .collect();
    for p in &workers {
        p.start()?;
    }
    std::thread::sleep(Duration::from_millis(100));
    println!("waiting: nobody has started");
    println!("go!");
    go.set();
    for p in &workers {
        p.join()?;
    }
    Ok(())
}
