//! A pool worker as seen from outside the driver thread ([`Link`]): its socket and rings, its
//! exit and its state, so that a caller of `apply` can borrow an idle worker and run its task itself.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::rings::Rings;
use crate::fd::LibraryFd;
use crate::wire;

/// A worker as seen from outside the driver thread: what a caller of `apply` needs to borrow an
/// idle worker and run its task itself (two hand-offs per call instead of four).
pub(crate) struct Link {
    /// A duplicate of the worker's control socket; closed with its registration.
    pub control: LibraryFd<UnixStream>,
    /// Readable when the worker has exited.
    pub exit: Arc<LibraryFd>,
    /// A duplicate of the worker's pidfd, to kill it on a task timeout; closed with its
    /// registration.
    pub pidfd: LibraryFd,
    pub name: String,
    pub pid: i32,
    /// `IDLE`, `DRIVER` (running a task the driver dispatched), `LENT` (a caller runs one),
    /// `GONE` (exited, buried by the driver).
    pub state: AtomicU8,
    pub ready: AtomicBool,
    /// Tasks run, for `maxtasksperchild`.
    pub done: AtomicU64,
    /// The exit code, once the driver has buried the worker.
    pub exitcode: Mutex<Option<Option<i32>>>,
    pub buried: Condvar,
    /// Reads the worker's messages, for the driver and for a borrower alike (never both at
    /// once: the worker answers whoever gave it its task).
    pub inbox: Mutex<wire::Reader>,
    /// The worker's rings, beside its socket: read and written by whoever reads its inbox.
    pub rings: Rings,
    /// To be retired (the pool shrinks, or the worker is above its memory limit): given no
    /// more tasks, and let go by the driver once idle (see `Driver::manage`).
    pub retire: AtomicBool,
}

pub(crate) const IDLE: u8 = 0;
pub(crate) const DRIVER: u8 = 1;
pub(crate) const LENT: u8 = 2;
pub(crate) const GONE: u8 = 3;

impl Link {
    /// A reply reported the worker's resident size: above the pool's limit, the worker is
    /// retired once this task is delivered.
    pub(super) fn note_resident(&self, resident: Option<u64>, limit: Option<u64>) {
        if resident
            .zip(limit)
            .is_some_and(|(resident, limit)| resident > limit)
        {
            self.retire.store(true, Ordering::Release);
        }
    }

    /// The driver has reaped this worker (`code`: its exit code, if known): tells whoever waits.
    pub(super) fn mark_buried(&self, code: Option<i32>) {
        self.state.store(GONE, Ordering::Release);
        *self.exitcode.lock().unwrap_or_else(PoisonError::into_inner) = Some(code);
        self.buried.notify_all();
    }

    /// Waits (bounded) for the driver to bury this worker; returns its exit code if known.
    pub(crate) fn wait_buried(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let mut code = self.exitcode.lock().unwrap_or_else(PoisonError::into_inner);
        while code.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            code = self
                .buried
                .wait_timeout(code, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        code.flatten()
    }
}
