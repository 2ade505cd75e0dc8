//! `Condition`: a consumer process waits until the producer has put 5 items in a shared
//! `Value`, waking on each notification; the condition shares the value's lock.
//!
//! ```text
//! produced 1
//! ...
//! consumer saw 5 items
//! ```
use std::time::Duration;

use multiproc::{process, Condition, Process, Value};

#[process]
fn consumer(cond: Condition, items: Value<u32>) {
    let guard = items.lock().expect("lock");
    let (guard, done) = cond
        .wait_for_timeout(guard, Duration::from_secs(30), |n| **n >= 5)
        .expect("wait");
    assert!(done);
    println!("consumer saw {} items", *guard);
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let items = Value::new(0u32)?;
    let cond = Condition::with_lock(items.get_lock().clone())?;
    let p = Process::new(consumer, (cond.clone(), items.clone()));
    p.start()?;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(20));
        let mut n = items.lock()?;
        *n += 1;
        println!("produced {}", *n);
        cond.notify_all()?;
    }
    p.join()?;
    Ok(())
}
