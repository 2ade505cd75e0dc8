//! Descriptors that belong to the process that opened or received them.
//!
//! A child started with `fork` inherits every descriptor of its parent, and a copy of its
//! memory: without care it would keep a pipe end that the parent then closes (its peer would
//! never see end of file), and could use the parent's channels through that memory. So each
//! channel descriptor is registered with the library, which closes them all in a forked child
//! (it gets its own duplicates for the channels passed as arguments), and each remembers the
//! fork generation of the process that owns it: in a forked child, the parent's copies refuse
//! to work (the descriptor number may by then be another file) and are never closed twice.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use crate::current;
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// Bumped in every forked child of this process.
static GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

fn generation() -> u64 {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // Without the hook, a forked child could use its parent's channels by mistake; the
        // descriptors are closed there all the same, so that use fails (EBADF) or, if the
        // number was reused, misbehaves. pthread_atfork only fails without memory.
        let _ = sys::at_fork_child(forked);
    });
    GENERATION.load(Ordering::Relaxed)
}

/// Installs the fork hook now, if it was not: called before a fork, so that a child forked while
/// another thread was installing it does not wait for that thread (see `start::fork`).
pub(crate) fn settle_before_fork() {
    let _ = generation();
}

/// A descriptor owned by this process (see the module docs).
#[derive(Debug)]
pub(crate) struct LocalFd {
    /// Always `Some` outside `drop`.
    fd: Option<OwnedFd>,
    generation: u64,
}

impl LocalFd {
    /// Takes `fd`, registered with the library so that forked children close their copy.
    pub(crate) fn new(fd: OwnedFd) -> LocalFd {
        let generation = generation();
        current::register_fd(&fd);
        LocalFd {
            fd: Some(fd),
            generation,
        }
    }

    /// The descriptor, unless this is a forked child's copy of its parent's.
    pub(crate) fn get(&self) -> Result<BorrowedFd<'_>> {
        match &self.fd {
            Some(fd) if self.generation == GENERATION.load(Ordering::Relaxed) => Ok(fd.as_fd()),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                "this channel belongs to the parent process: a child started with fork has \
                 its parent's memory but not its channels (their descriptors are closed in \
                 the child); pass channels to a child as arguments",
            )),
        }
    }

    /// A duplicate, for this process.
    pub(crate) fn try_clone(&self) -> Result<LocalFd> {
        let fd = self.get()?;
        let fd = current::registered(|| fd.try_clone_to_owned(), |fd| vec![fd.as_raw_fd()])
            .map_err(|err| Error::io("cannot duplicate a channel's descriptor", err))?;
        Ok(LocalFd::new(fd))
    }
}

impl Drop for LocalFd {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        if self.generation != GENERATION.load(Ordering::Relaxed) {
            // A forked child's copy: the library closed the descriptor already, and its
            // number may belong to another file now.
            std::mem::forget(fd);
            return;
        }
        // Unregistered and closed at once: a number must never stay registered once closed
        // (a child forked in between would close whatever reuses it), nor be open and
        // unregistered while another thread forks.
        current::close_registered(fd);
    }
}
