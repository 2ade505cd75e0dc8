//! Descriptors this library owns that a forked child must not keep ([`LibraryFd`]), the
//! registry of them, the process's one fork hook, and the order of the library's locks.
//!
//! A child started with `fork` inherits every descriptor of its parent and a copy of its
//! memory. Without care it would keep another child's control socket (that child would never
//! see its parent die), the fork server's, a worker's, or a channel's end (its peer would never
//! see end of file). So each such descriptor is a [`LibraryFd`]: registered here as it is made,
//! unregistered and closed at once when it is dropped; a forked child closes every registered
//! descriptor as it starts (`start::fork`), except those handed to it.
//!
//! # The fork lock
//!
//! The registry's lock is the one a fork holds while it forks. A descriptor made by a thread
//! that may run beside a fork (a pool's driver thread, any thread under a permissive
//! `ForkPolicy`) is made and registered under it ([`made`]); a dropped one is unregistered and
//! closed under it. A child forked meanwhile then either predates a descriptor or closes it: it
//! never keeps one open and unregistered, and never closes a number left registered by a
//! descriptor already closed (another file may have it by then).
//!
//! # Lock order
//!
//! Where several of the library's locks are held, they are taken in this order; a fork
//! (`start::fork::fork_child`) takes them all, in this order, and holds them across `fork(2)`:
//!
//! 1. the panic hook's (`child::lock_panic_hook`);
//! 2. the fork server client's (`start::lock_client`);
//! 3. who this process is (`current::lock_me`);
//! 4. the unreaped children (`current::lock_children`);
//! 5. the descriptors (this registry, [`lock_registry`]);
//! 6. the executable `spawn` runs (`start::lock_executable`), taken alone elsewhere.
//!
//! A fork-started child's reaping lock (`start::Popen`, which no fork takes) comes before the
//! descriptors: its pidfd, opened late, is registered under it.
//!
//! So the closure given to [`made`] takes none of them, and drops no [`LibraryFd`] (its drop
//! takes the registry's lock).
//!
//! # The fork hook
//!
//! One `pthread_atfork` child handler, installed before the first fork
//! ([`settle_before_fork`]) or the first [`LibraryFd`], runs in every forked child. It bumps the
//! fork generation ([`generation`]), which two readers compare with the one they saw:
//!
//! 1. each [`LibraryFd`], made in a generation: in a forked child the parent's copies are known
//!    as such (a channel refuses to work through them; their drop closes nothing, since the
//!    child closed them as it started and their numbers may be another file's by then);
//! 2. the futex locks' cached thread id (`sync::raw`), read again in a child, whose thread has
//!    another id.

use std::fmt;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};

use crate::sys;

/// Bumped in every forked child of this process, by the fork hook.
static GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Installs the fork hook, once; returns whether it is installed (`pthread_atfork` fails only
/// without memory).
pub(crate) fn fork_hooked() -> bool {
    static HOOK: Once = Once::new();
    static HOOKED: AtomicBool = AtomicBool::new(false);
    HOOK.call_once(|| {
        HOOKED.store(sys::at_fork_child(forked).is_ok(), Ordering::Relaxed);
    });
    HOOKED.load(Ordering::Relaxed)
}

/// Installs the fork hook now, if it was not: called before a fork, so that a child forked
/// while another thread was installing it does not wait for that thread (see `start::fork`).
pub(crate) fn settle_before_fork() {
    let _ = fork_hooked();
}

/// How many forks separate this process from the one that installed the fork hook (see the
/// module docs); meaningful once [`fork_hooked`] has installed it.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// The descriptors registered, by number (a number is held by one open descriptor at a time).
static REGISTRY: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Locks the registry: a fork holds this lock across `fork(2)` (see the lock order in the
/// module docs), and its child closes what it lists.
pub(crate) fn lock_registry() -> MutexGuard<'static, Vec<RawFd>> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

fn add(fds: &mut Vec<RawFd>, raw: RawFd) {
    if !fds.contains(&raw) {
        fds.push(raw);
    }
}

fn remove(fds: &mut Vec<RawFd>, raw: RawFd) {
    if let Some(i) = fds.iter().position(|&f| f == raw) {
        fds.swap_remove(i);
    }
}

/// A descriptor this library owns that a forked child must not keep (see the module docs):
/// an `OwnedFd`, a `UnixStream`, or an `Arc` of one (a descriptor shared by several handles).
/// Registered when it is made, unregistered and closed at once when it is dropped.
pub(crate) struct LibraryFd<T: AsRawFd = OwnedFd> {
    /// Always `Some` outside `drop`.
    fd: Option<T>,
    /// The fork generation of the process that owns it.
    generation: u64,
}

impl<T: AsRawFd> LibraryFd<T> {
    /// Takes `fd` and registers it. A descriptor that a thread beside a fork may make is made
    /// with [`made`] instead, so that no fork sees it made but unregistered.
    pub(crate) fn new(fd: T) -> LibraryFd<T> {
        let _ = fork_hooked();
        let generation = generation();
        add(&mut lock_registry(), fd.as_raw_fd());
        LibraryFd {
            fd: Some(fd),
            generation,
        }
    }

    /// Whether this is a forked child's copy of its parent's descriptor: closed in the child
    /// as it started, and not to be used (its number may be another file's).
    pub(crate) fn inherited(&self) -> bool {
        self.generation != GENERATION.load(Ordering::Relaxed)
    }

    /// Keeps the descriptor registered and open for the rest of the process (a child's own
    /// control socket, the pipe on which a fork server's child reports its exit), so that the
    /// children this process forks close it.
    pub(crate) fn keep_for_life(mut self) -> RawFd {
        let fd = self.fd.take();
        let raw = fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        std::mem::forget(fd);
        raw
    }

    fn get(&self) -> &T {
        match &self.fd {
            Some(fd) => fd,
            None => unreachable!("a LibraryFd is taken only by its drop or keep_for_life"),
        }
    }
}

impl LibraryFd<OwnedFd> {
    /// A duplicate, for this process; `None` if this is a forked child's copy of its parent's
    /// (see [`inherited`](Self::inherited)).
    pub(crate) fn try_clone(&self) -> Option<std::io::Result<LibraryFd>> {
        if self.inherited() {
            return None;
        }
        let fd = self.get().as_fd();
        Some(made(|fds| Ok(fds.own(fd.try_clone_to_owned()?))))
    }
}

impl<T: AsRawFd> Deref for LibraryFd<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.get()
    }
}

impl<T: AsRawFd + AsFd> AsFd for LibraryFd<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get().as_fd()
    }
}

impl<T: AsRawFd> AsRawFd for LibraryFd<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.get().as_raw_fd()
    }
}

impl<T: AsRawFd> fmt::Debug for LibraryFd<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LibraryFd")
            .field("fd", &self.fd.as_ref().map(AsRawFd::as_raw_fd))
            .field("generation", &self.generation)
            .finish()
    }
}

impl<T: AsRawFd> Drop for LibraryFd<T> {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        if self.inherited() {
            // A forked child's copy: the child closed the descriptor as it started, and its
            // number may belong to another file now.
            std::mem::forget(fd);
            return;
        }
        // Unregistered and closed at once: a number must never stay registered once closed
        // (a child forked in between would close whatever reuses it), nor be open and
        // unregistered while another thread forks.
        let mut fds = lock_registry();
        remove(&mut fds, fd.as_raw_fd());
        drop(fd);
    }
}

/// What the closure given to [`made`] registers its descriptors with.
pub(crate) struct Registering<'a> {
    fds: &'a mut Vec<RawFd>,
    generation: u64,
}

impl Registering<'_> {
    /// `fd`, registered: a [`LibraryFd`].
    pub(crate) fn own<T: AsRawFd>(&mut self, fd: T) -> LibraryFd<T> {
        add(self.fds, fd.as_raw_fd());
        LibraryFd {
            fd: Some(fd),
            generation: self.generation,
        }
    }

    /// Registers `fd`, which the next fork in this thread hands to its child (`start::fork`):
    /// it is no [`LibraryFd`], since that fork unregisters it in the parent once it has forked
    /// (`ForChild::kept_fd`) and the parent closes its copy under the fork's locks. Until then a fork in another
    /// thread closes it in its child. If that fork never comes, [`unregister`] unregisters it.
    pub(crate) fn hand_over(&mut self, fd: &impl AsRawFd) {
        add(self.fds, fd.as_raw_fd());
    }
}

/// Runs `make` under the registry's lock, which a fork holds while it forks: what `make`
/// registers ([`Registering::own`]) is never seen by a fork in another thread made but
/// unregistered (its child would keep it open, and with it a worker or a channel's peer
/// alive). `make` must not take the library's other locks, nor drop a [`LibraryFd`]; so it
/// registers each descriptor after whatever may fail (a descriptor it closes on failure is
/// closed under the lock, and no fork sees it).
pub(crate) fn made<T, E>(
    make: impl FnOnce(&mut Registering<'_>) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let _ = fork_hooked();
    let generation = generation();
    let mut fds = lock_registry();
    make(&mut Registering {
        fds: &mut fds,
        generation,
    })
}

/// Registers `raw` for the rest of the process, if it is not registered already: a
/// descriptor the process keeps open for good (a child's own control socket), which the
/// children it forks must close.
pub(crate) fn register_for_life(raw: RawFd) {
    let _ = fork_hooked();
    add(&mut lock_registry(), raw);
}

/// Unregisters the number `raw`: handed over ([`Registering::hand_over`]) and taken by no
/// fork, or registered ([`register_for_life`]) for a child about to be forked that keeps it
/// (`start::forkserver::serve`); it is no longer the library's to close in forked children.
pub(crate) fn unregister(raw: RawFd) {
    remove(&mut lock_registry(), raw);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn registered(fd: &impl AsRawFd) -> bool {
        lock_registry().contains(&fd.as_raw_fd())
    }

    /// Every registered number is an open descriptor (checked under the registry's lock, as
    /// a fork would see it): nothing is closed and left registered.
    fn registry_is_open() -> bool {
        lock_registry().iter().all(|&raw| {
            // SAFETY: F_GETFD only reads the descriptor's flags; an unknown number is EBADF.
            let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
            flags != -1
        })
    }

    #[test]
    fn a_library_fd_is_registered_while_it_lives_and_closed_with_it() {
        let (read, write) = sys::pipe().unwrap();
        let write = LibraryFd::new(write);
        assert!(registered(&write));
        assert!(!write.inherited());
        drop(write);
        assert!(registry_is_open());
        // Its end closed, the pipe's other end sees no writer left.
        let mut byte = [0u8; 1];
        assert_eq!(sys::read_full(read.as_fd(), &mut byte).unwrap(), 0);
    }

    #[test]
    fn made_registers_what_it_owns_and_what_it_hands_over() {
        let (owned, handed) = made(|fds| {
            let (a, b) = std::os::unix::net::UnixStream::pair()?;
            fds.hand_over(&b);
            Ok::<_, std::io::Error>((fds.own(a), b))
        })
        .unwrap();
        assert!(registered(&owned) && registered(&handed));
        unregister(handed.as_raw_fd());
        assert!(!registered(&handed));
        let shared = Arc::new(owned);
        let other = Arc::clone(&shared);
        drop(shared);
        assert!(registered(&*other), "registered until its last handle goes");
        drop(other);
        assert!(registry_is_open());
    }

    #[test]
    fn a_descriptor_kept_for_life_stays_registered() {
        let (a, _b) = sys::pipe().unwrap();
        let raw = LibraryFd::new(a).keep_for_life();
        assert!(lock_registry().contains(&raw));
        // SAFETY: `raw` was kept open by keep_for_life and nothing else owns it.
        let a = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let mut fds = lock_registry();
        remove(&mut fds, raw);
        drop(a);
    }

    #[test]
    fn a_clone_is_registered_on_its_own() {
        let (a, _b) = sys::pipe().unwrap();
        let a = LibraryFd::new(a);
        let Some(Ok(clone)) = a.try_clone() else {
            panic!("a descriptor of this process duplicates");
        };
        assert_ne!(clone.as_raw_fd(), a.as_raw_fd());
        drop(a);
        assert!(registered(&clone));
    }
}
