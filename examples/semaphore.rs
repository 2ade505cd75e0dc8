//! `Semaphore`: at most 2 of 6 workers in the section at a time, checked with a shared
//! `Value`; and a `BoundedSemaphore` refusing a release past its initial value.
//!
//! ```text
//! 6 workers ran, at most 2 at a time
//! bounded semaphore: released too many times? a bounded semaphore released too many times (its value is at most 1)
//! ```
use std::time::Duration;

use multiproc::{process, BoundedSemaphore, Process, Semaphore, Value};

#[process]
fn worker(sem: Semaphore, inside: Value<u32>, most: Value<u32>) {
    let _permit = sem.acquire().expect("semaphore");
    {
        let mut n = inside.lock().expect("lock");
        *n += 1;
        let mut m = most.lock().expect("lock");
        *m = (*m).max(*n);
    }
    std::thread::sleep(Duration::from_millis(50));
    *inside.lock().expect("lock") -= 1;
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let sem = Semaphore::new(2)?;
    let inside = Value::new(0u32)?;
    let most = Value::new(0u32)?;
    let workers: Vec<Process> = (0..6)
        .map(|_| Process::new(worker, (sem.clone(), inside.clone(), most.clone())))
        .collect();
    for p in &workers {
        p.start()?;
    }
    for p in &workers {
        p.join()?;
    }
    println!("6 workers ran, at most {} at a time", most.get()?);
    assert!(most.get()? <= 2);

    let bounded = BoundedSemaphore::new(1)?;
    let err = bounded.release().unwrap_err();
    println!("bounded semaphore: released too many times? {err}");
    Ok(())
}
