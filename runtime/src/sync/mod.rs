//! Synchronization primitives shared by processes: Python's `multiprocessing.synchronize`.
//!
//! | Python | multiproc | built on |
//! |---|---|---|
//! | `Lock()` | [`Lock`] | a robust mutex: a futex word that holds its owner's thread id |
//! | `RLock()` | [`RLock`] | the same, recursive |
//! | `Semaphore(n)` | [`Semaphore`] | a counter and a futex |
//! | `BoundedSemaphore(n)` | [`BoundedSemaphore`] | the same, with a maximum |
//! | `Event()` | [`Event`] | a flag and a futex |
//! | `Condition(lock)` | [`Condition`] | a [`Lock`], counters and a futex |
//! | `Barrier(parties, action, timeout)` | [`Barrier`] | Python's algorithm on a [`Lock`] and a [`Condition`] |
//!
//! Each object lives in a small anonymous shared memory segment (a `memfd`, freed with its
//! last handle: nothing to clean up in `/dev/shm`). A clone is a cheap handle to the same
//! object, and every type is `Send + Sync + Serialize + Deserialize`: pass it to
//! [`Process::new`](crate::Process::new), to a pool task or initializer, or return it from a
//! task, and the other process maps the same segment (the descriptor travels beside the
//! bytes). Outside such a message (say, encoded to JSON) serialization fails: a descriptor
//! number means nothing elsewhere.
//!
//! The cost: each object holds one descriptor and one mapping in each process that has it
//! (clones share them; every received copy has its own). Thousands of objects at once need a
//! higher `RLIMIT_NOFILE` than the usual 1024.
//!
//! # When a process dies holding a lock
//!
//! CPython's locks are POSIX semaphores: when a process dies holding one, every other process
//! that wants it waits forever. Here the mutexes are *robust*: a mutex records its owner's
//! thread id, a waiter looks now and then (at least every 50 ms) whether that thread still
//! lives, and when it has ended (even as a zombie nobody reaped yet), the next acquire (of a
//! [`Lock`], [`RLock`], a [`Condition`]'s lock, a [`Value`](crate::Value) or
//! [`Array`](crate::Array)) returns promptly an error of kind [`ErrorKind::OwnerDied`]: "the
//! process that held this lock died; the data it protected may be inconsistent".
//!
//! The error carries no guard: the lock was **released**, so the next
//! acquire succeeds. Only the first acquirer after a death sees the error; repair the
//! protected data then (take the lock again, check, fix), or give up. A [`Barrier`] whose
//! lock owner died breaks ([`ErrorKind::BrokenBarrier`]).
//! Semaphores and events have no owner: a unit held by a dead process is lost, as in Python.
//!
//! ```no_run
//! use multiproc::{process, ErrorKind, Process, Value};
//!
//! #[process]
//! fn die_holding(counter: Value<i64>) {
//!     let mut n = counter.lock().unwrap();
//!     *n += 1;
//!     std::process::abort(); // killed with the lock held
//! }
//!
//! #[multiproc::main]
//! fn main() -> multiproc::Result<()> {
//!     let counter = Value::new(0i64)?;
//!     let p = Process::new(die_holding, counter.clone());
//!     p.start()?;
//!     p.join()?;
//!     let err = counter.lock().unwrap_err(); // at once, not a hang
//!     assert_eq!(err.kind(), ErrorKind::OwnerDied);
//!     assert_eq!(*counter.lock()?, 1); // released: usable again
//!     Ok(())
//! }
//! ```
//!
//! # Differences from Python
//!
//! - **Guards.** `acquire` returns a guard that releases on drop (`with lock:`); a timed or
//!   non-blocking acquire returns `Ok(None)` where Python returns `False`. Releasing a lock
//!   twice, or one this thread does not hold, cannot be written (Python raises).
//! - **Owner-bound locks.** A mutex is released by the thread that acquired it (it records its id): lock
//!   guards are not `Send`, and a lock cannot be released by another process. Python's `Lock`
//!   is a semaphore that anyone may release; use a [`Semaphore`] or [`BoundedSemaphore`] (whose
//!   guard has [`forget`](SemaphoreGuard::forget), and whose `release` anyone may call) for
//!   that hand-off.
//! - **Relocking a `Lock`** in the thread that holds it is an
//!   [`ErrorKind::InvalidInput`] error instead of a deadlock.
//! - **`Condition`** uses a [`Lock`] by default (Python: an `RLock`), its `wait` takes and
//!   gives back the guard (std-style), and `notify` may be called without the lock held (it
//!   takes it for the time of the call).
//! - **Owner death** is reported ([`ErrorKind::OwnerDied`]), see
//!   above; CPython hangs.
//! - **Timeouts** are [`Duration`](std::time::Duration)s measured on `CLOCK_MONOTONIC`
//!   (a wall-clock jump does not shorten or stretch them).

mod barrier;
mod condition;
mod event;
mod lock;
pub(crate) mod raw;
mod semaphore;

pub use barrier::{Barrier, BarrierBuilder};
pub use condition::{Condition, WaitGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard, SEM_VALUE_MAX};

pub(crate) use condition::Sealed;
pub(crate) use lock::LockState;

use crate::error::{Error, ErrorKind, Result};

/// The guard of an acquire without a deadline, which cannot time out.
pub(crate) fn without_deadline<T>(guard: Option<T>) -> Result<T> {
    guard.ok_or_else(|| {
        Error::new(
            ErrorKind::Io,
            "a wait without a deadline returned without its object",
        )
    })
}
