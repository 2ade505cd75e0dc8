//! The soft task timeout, in the worker: the driver sends [`SOFT_TIMEOUT_SIGNAL`] to a worker
//! whose task has run longer than [`PoolBuilder::soft_task_timeout`](super::PoolBuilder::soft_task_timeout);
//! the worker's handler sets a flag, which the task reads with [`soft_timeout_expired`] or
//! [`check_soft_timeout`] (billiard's `SoftTimeLimitExceeded`, without an exception thrown
//! into the task: Rust code has no way to be interrupted, so it looks).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// The signal that asks a task to stop: `SIGUSR1`, as billiard's. Installed in a worker only
/// when its pool has a soft task timeout.
pub(crate) const SOFT_TIMEOUT_SIGNAL: i32 = libc::SIGUSR1;

/// Set by the signal handler; cleared before each task.
static EXPIRED: AtomicBool = AtomicBool::new(false);

extern "C" fn expired(_signal: libc::c_int) {
    // Async-signal-safe: a store to an atomic.
    EXPIRED.store(true, Ordering::Relaxed);
}

/// Installs the handler (in a worker of a pool with a soft task timeout).
pub(super) fn install() -> Result<()> {
    sys::on_signal(SOFT_TIMEOUT_SIGNAL, expired)
        .map_err(|err| Error::io("cannot install the soft task timeout's signal handler", err))
}

/// A task begins: the last one's soft timeout is forgotten.
pub(super) fn reset() {
    EXPIRED.store(false, Ordering::Relaxed);
}

/// Whether the task this pool worker runs has passed its pool's soft time limit
/// ([`PoolBuilder::soft_task_timeout`](crate::PoolBuilder::soft_task_timeout)): the pool asks
/// it to stop, and kills it at the hard limit ([`task_timeout`](crate::PoolBuilder::task_timeout))
/// if it has not returned by then. Always `false` outside a pool worker, or in a pool without a
/// soft time limit. It is reset as each task begins. (A signal sent as a task ends, just
/// before its reply is read, is pending before the worker can be given its next task, and
/// is taken as it next enters the kernel, which it all but always does before it begins
/// that task, which clears it; only a worker that finds the task without entering the
/// kernel, and before the signal's interrupt lands, could see it in that next task.)
///
/// ```no_run
/// #[multiproc::process]
/// fn search(limit: u64) -> Option<u64> {
///     for n in 0..limit {
///         if multiproc::soft_timeout_expired() {
///             return None; // out of time: a partial answer
///         }
///         // ... work on n ...
///     }
///     Some(limit)
/// }
/// ```
pub fn soft_timeout_expired() -> bool {
    EXPIRED.load(Ordering::Relaxed)
}

/// [`soft_timeout_expired`] as an error to return with `?`: an [`ErrorKind::SoftTimeout`]
/// error once the task's soft time limit has passed, `Ok(())` before. A task's result crosses
/// a process boundary, so a task that stops on it returns what it can serialize: its message,
/// say.
///
/// ```no_run
/// #[multiproc::process]
/// fn crunch(rounds: u64) -> Result<u64, String> {
///     let mut acc = 0u64;
///     for round in 0..rounds {
///         multiproc::check_soft_timeout().map_err(|err| err.to_string())?;
///         acc = acc.wrapping_mul(31).wrapping_add(round);
///     }
///     Ok(acc)
/// }
/// ```
pub fn check_soft_timeout() -> Result<()> {
    if soft_timeout_expired() {
        return Err(Error::new(
            ErrorKind::SoftTimeout,
            "the task's soft time limit passed",
        ));
    }
    Ok(())
}
