//! Python's "Queues" example, then its "worker processes" example: tasks fed to four workers
//! through one queue, results collected through another.
//!
//! ```text
//! [42, None, "hello"]
//! 10 results, every task once: true
//! a timeout is not an empty queue: Timeout, Empty
//! ```
use std::time::Duration;

use multiproc::{process, ErrorKind, Process, Queue};

#[process]
fn f(q: Queue<(i32, Option<i32>, String)>) {
    q.put((42, None, "hello".to_string())).expect("put");
}

/// Takes tasks until the `None` sentinel; puts `(task, result, worker pid)` for each.
#[process]
fn worker(tasks: Queue<Option<u64>>, done: Queue<(u64, u64, u32)>) {
    while let Ok(Some(n)) = tasks.get() {
        done.put((n, n * n, std::process::id())).expect("put");
    }
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let q = Queue::new()?;
    let p = Process::new(f, q.clone());
    p.start()?;
    let (a, b, c) = q.get()?;
    println!("[{a}, {b:?}, {c:?}]");
    p.join()?;

    let tasks = Queue::<Option<u64>>::new()?;
    let done = Queue::<(u64, u64, u32)>::new()?;
    let workers: Vec<Process> = (0..4)
        .map(|_| Process::new(worker, (tasks.clone(), done.clone())))
        .collect();
    for w in &workers {
        w.start()?;
    }
    for n in 0..10 {
        tasks.put(Some(n))?;
    }
    let mut seen: Vec<u64> = (0..10)
        .map(|_| done.get().map(|(n, _square, _pid)| n))
        .collect::<multiproc::Result<_>>()?;
    for _ in &workers {
        tasks.put(None)?; // one sentinel per worker
    }
    for w in &workers {
        w.join()?;
    }
    seen.sort_unstable();
    println!(
        "{} results, every task once: {}",
        seen.len(),
        seen == (0..10).collect::<Vec<_>>()
    );

    let timeout = done.get_timeout(Duration::from_millis(50)).unwrap_err();
    let empty = done.try_get().unwrap_err();
    debug_assert_eq!(timeout.kind(), ErrorKind::Timeout);
    println!(
        "a timeout is not an empty queue: {:?}, {:?}",
        timeout.kind(),
        empty.kind()
    );
    Ok(())
}
