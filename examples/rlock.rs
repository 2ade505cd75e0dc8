//! `RLock`: a recursive lock. The process that holds it may take it again (here, a function
//! that locks calls another that locks); another process waits until every level is released.
//!
//! ```text
//! parent holds the rlock 2 levels deep
//! child: busy while the parent holds it (try_acquire: None)
//! child: acquired it once the parent released both levels
//! ```
use std::time::Duration;

use multiproc::{process, Process, RLock};

fn inner(rlock: &RLock) -> multiproc::Result<()> {
    let _level2 = rlock.acquire()?; // the same thread: no deadlock
    println!("parent holds the rlock 2 levels deep");
    Ok(())
}

#[process]
fn child(rlock: RLock, expect_busy: bool) {
    if expect_busy {
        let got = rlock.try_acquire().expect("try_acquire");
        println!("child: busy while the parent holds it (try_acquire: {got:?})");
    } else {
        let got = rlock
            .acquire_timeout(Duration::from_secs(30))
            .expect("acquire");
        assert!(got.is_some());
        println!("child: acquired it once the parent released both levels");
    }
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let rlock = RLock::new()?;
    {
        let _level1 = rlock.acquire()?;
        inner(&rlock)?;
        let p = Process::new(child, (rlock.clone(), true));
        p.start()?;
        p.join()?;
    }
    let p = Process::new(child, (rlock.clone(), false));
    p.start()?;
    p.join()?;
    Ok(())
}
