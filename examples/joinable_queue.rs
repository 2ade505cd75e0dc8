//! A `JoinableQueue`: the producer puts work and waits with `join` until consumers have
//! called `task_done` for every item (Python's `queue.join()` pattern, across processes).
//!
//! ```text
//! all 20 tasks done
//! 20 results, sum of squares 2470
//! ```
use std::time::Duration;

use multiproc::{process, JoinableQueue, Process, SimpleQueue};

#[process]
fn consumer(tasks: JoinableQueue<u64>, results: SimpleQueue<u64>) {
    loop {
        let n = tasks.get().expect("get");
        std::thread::sleep(Duration::from_millis(5)); // work
        results.put(n * n).expect("put");
        tasks.task_done().expect("task_done");
    }
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let tasks = JoinableQueue::<u64>::new()?;
    let results = SimpleQueue::<u64>::new()?;
    let consumers: Vec<Process> = (0..3)
        .map(|_| Process::new(consumer, (tasks.clone(), results.clone())).with_daemon(true))
        .collect();
    for c in &consumers {
        c.start()?;
    }
    for n in 0..20 {
        tasks.put(n)?;
    }
    // Waits until every item put so far has been marked done. When a consumer may die,
    // prefer join_timeout: an item it held is never marked done.
    tasks.join()?;
    println!("all 20 tasks done");
    let squares: Vec<u64> = (0..20)
        .map(|_| results.get())
        .collect::<multiproc::Result<_>>()?;
    println!(
        "{} results, sum of squares {}",
        squares.len(),
        squares.iter().sum::<u64>()
    );
    // The consumers are daemonic: they are terminated when main returns.
    Ok(())
}
