//! `Lock`: Python's docs example (processes print one at a time), and what happens when a
//! process dies holding the lock: the next acquire says so at once instead of hanging.
//!
//! ```text
//! hello world 0
//! ...
//! hello world 9
//! a child was killed holding the lock; the next acquire says: the process that held this lock died; ...
//! the lock works again: acquired
//! ```
use std::time::Duration;

use multiproc::{process, ErrorKind, Event, Lock, Process};

#[process]
fn f(lock: Lock, i: u32) {
    let _guard = lock.acquire().expect("lock");
    println!("hello world {i}");
}

#[process]
fn die_holding(lock: Lock, ready: Event) {
    let _guard = lock.acquire().expect("lock");
    ready.set();
    // SAFETY: kills this process, lock held; SIGKILL cannot be caught.
    unsafe { libc::raise(libc::SIGKILL) };
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let lock = Lock::new()?;
    // In order, so that the output is stable: the lock still serializes the prints.
    for i in 0..10 {
        let p = Process::new(f, (lock.clone(), i));
        p.start()?;
        p.join()?;
    }

    let ready = Event::new()?;
    let p = Process::new(die_holding, (lock.clone(), ready.clone()));
    p.start()?;
    ready.wait_timeout(Duration::from_secs(30))?;
    match lock.acquire_timeout(Duration::from_secs(30)) {
        Err(err) if err.kind() == ErrorKind::OwnerDied => {
            println!("a child was killed holding the lock; the next acquire says: {err}")
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    p.join()?;
    let _guard = lock.acquire()?;
    println!("the lock works again: acquired");
    Ok(())
}
