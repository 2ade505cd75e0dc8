//! Synchronization primitives shared by processes: Python's `multiprocessing.synchronize`.
//!
//! A private module: its types are re-exported at the crate's root, and documented (the table
//! of Python equivalents, owner death, the differences from Python) in the facade's crate docs.

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
