//! Thin safe wrappers over the glibc and kernel calls the primitives are built on: the robust
//! process-shared `pthread_mutex_t`, the shared futex, and the `CLOCK_MONOTONIC` deadlines both
//! take. Every `unsafe` FFI call of `sync` and `shared` is in this file.
//!
//! Why a futex and not a `pthread_cond_t`: glibc's process-shared condition variable (2.25 and
//! later, 2.36 here) keeps per-group waiter references in the shared object. A waiter killed
//! while blocked never drops its reference, and the next `pthread_cond_signal` that needs to
//! switch groups waits for it forever: a SIGKILLed waiter hangs every later notifier (checked
//! with a C reproduction on this glibc). A futex word holds no per-waiter state, so a waiter
//! that dies leaves nothing behind; the condition built on it (`condition.rs`) keeps its
//! counters under the robust mutex.

use std::cell::UnsafeCell;
use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// A point on `CLOCK_MONOTONIC`, or never. Waits take absolute deadlines, so a wait that is
/// interrupted and resumed never waits longer than asked, and a wall-clock jump changes nothing.
#[derive(Clone, Copy)]
pub(crate) struct Deadline(Option<libc::timespec>);

impl Deadline {
    /// No deadline: wait as long as it takes.
    pub(crate) const NEVER: Deadline = Deadline(None);

    /// `timeout` from now (never, when that does not fit a `timespec`).
    #[allow(clippy::useless_conversion)] // `time_t` and `c_long` are `i32` on some targets
    pub(crate) fn after(timeout: Duration) -> Deadline {
        let now = monotonic_now();
        let mut nsec = i64::from(now.tv_nsec) + i64::from(timeout.subsec_nanos());
        let mut carry = 0;
        if nsec >= 1_000_000_000 {
            nsec -= 1_000_000_000;
            carry = 1;
        }
        let sec = i64::try_from(timeout.as_secs())
            .ok()
            .and_then(|s| i64::from(now.tv_sec).checked_add(s))
            .and_then(|s| s.checked_add(carry))
            .and_then(|s| libc::time_t::try_from(s).ok());
        match (sec, libc::c_long::try_from(nsec)) {
            (Some(tv_sec), Ok(tv_nsec)) => Deadline(Some(libc::timespec { tv_sec, tv_nsec })),
            // Past the end of time: as good as never.
            _ => Deadline::NEVER,
        }
    }

    /// `after(timeout)`, or never for `None`.
    pub(crate) fn from_timeout(timeout: Option<Duration>) -> Deadline {
        timeout.map_or(Deadline::NEVER, Deadline::after)
    }

    /// Whether the deadline has passed.
    pub(crate) fn expired(&self) -> bool {
        match &self.0 {
            None => false,
            Some(d) => {
                let now = monotonic_now();
                (now.tv_sec, now.tv_nsec) >= (d.tv_sec, d.tv_nsec)
            }
        }
    }

    fn as_ptr(&self) -> *const libc::timespec {
        self.0
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec)
    }
}

fn monotonic_now() -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, exclusively borrowed timespec; CLOCK_MONOTONIC always exists
    // on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now
}

extern "C" {
    // glibc 2.30 and later; the `libc` crate does not declare it yet.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// How a mutex behaves when its owner locks it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MutexKind {
    /// Locking it again is an error (`EDEADLK`), unlocking by a non-owner too (`EPERM`).
    ErrorCheck,
    /// The owner may lock it again; it is released by as many unlocks.
    Recursive,
}

/// What a lock attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The caller holds the mutex.
    Yes,
    /// The caller holds the mutex, whose previous owner died holding it. It stays
    /// inconsistent (unusable once unlocked) until [`RawMutex::make_consistent`].
    OwnerDied,
    /// The deadline passed (or, for `try_lock`, the mutex is held).
    No,
    /// An error-checking mutex that the calling thread already holds.
    Mine,
}

/// A robust, process-shared `pthread_mutex_t` that lives in shared memory.
///
/// Robust: when the thread that holds it dies (its process is killed, say), the kernel marks
/// it, and the next locker gets `EOWNERDEAD` instead of waiting forever.
#[repr(C)]
pub(crate) struct RawMutex(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex is made to be used from many threads (and, process-shared, from many
// processes) at once through pointers; every access goes through the pthread functions.
unsafe impl Sync for RawMutex {}
// SAFETY: as above; the value has no thread affinity while nobody holds it.
unsafe impl Send for RawMutex {}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::Error::from_raw_os_error(rc).kind(),
            format!("{what}: {}", io::Error::from_raw_os_error(rc)),
        ))
    }
}

impl RawMutex {
    /// Initializes the mutex in place: robust, process-shared, of `kind`.
    ///
    /// # Safety
    ///
    /// Nobody else uses the mutex yet, or ever used it: it is in memory this process just
    /// created and has not shared. (Initializing a mutex in use is undefined behavior.)
    pub(crate) unsafe fn init(&self, kind: MutexKind) -> io::Result<()> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is writable storage for an attribute object.
        check(
            unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) },
            "pthread_mutexattr_init",
        )?;
        let ty = match kind {
            MutexKind::ErrorCheck => libc::PTHREAD_MUTEX_ERRORCHECK,
            MutexKind::Recursive => libc::PTHREAD_MUTEX_RECURSIVE,
        };
        let attr = attr.as_mut_ptr();
        // SAFETY: `attr` was initialized above; the setters only write it; the mutex storage is
        // valid, suitably aligned (`#[repr(C)]` in a page-aligned mapping) and, per this
        // function's contract, unused by anyone else. The attribute is destroyed once used.
        let rc = unsafe {
            let mut rc = libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED);
            if rc == 0 {
                rc = libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            if rc == 0 {
                rc = libc::pthread_mutexattr_settype(attr, ty);
            }
            if rc == 0 {
                rc = libc::pthread_mutex_init(self.0.get(), attr);
            }
            libc::pthread_mutexattr_destroy(attr);
            rc
        };
        check(rc, "cannot initialize a process-shared mutex")
    }

    fn outcome(rc: libc::c_int, what: &str) -> io::Result<Locked> {
        match rc {
            0 => Ok(Locked::Yes),
            libc::EOWNERDEAD => Ok(Locked::OwnerDied),
            libc::ETIMEDOUT | libc::EBUSY => Ok(Locked::No),
            libc::EDEADLK => Ok(Locked::Mine),
            rc => check(rc, what).map(|()| Locked::No),
        }
    }

    /// Locks, waiting until `deadline` at most.
    pub(crate) fn lock(&self, deadline: Deadline) -> io::Result<Locked> {
        let rc = if deadline.0.is_none() {
            // SAFETY: an initialized process-shared mutex in a live mapping (the callers hold
            // the mapping for as long as they hold this reference).
            unsafe { libc::pthread_mutex_lock(self.0.get()) }
        } else {
            // SAFETY: as above; the deadline is a valid CLOCK_MONOTONIC timespec.
            unsafe {
                pthread_mutex_clocklock(self.0.get(), libc::CLOCK_MONOTONIC, deadline.as_ptr())
            }
        };
        Self::outcome(rc, "pthread_mutex_lock")
    }

    /// Locks if nobody holds the mutex: `Locked::No` when another thread holds it,
    /// `Locked::Mine` when the calling thread does (error-checking kind).
    pub(crate) fn try_lock(&self) -> io::Result<Locked> {
        // SAFETY: an initialized process-shared mutex in a live mapping.
        let rc = unsafe { libc::pthread_mutex_trylock(self.0.get()) };
        Self::outcome(rc, "pthread_mutex_trylock")
    }

    /// Unlocks; an error when the calling thread does not hold the mutex.
    pub(crate) fn unlock(&self) -> io::Result<()> {
        // SAFETY: an initialized process-shared mutex in a live mapping; unlocking a mutex the
        // caller does not hold is reported (`EPERM`), not undefined, for robust mutexes.
        check(
            unsafe { libc::pthread_mutex_unlock(self.0.get()) },
            "pthread_mutex_unlock",
        )
    }

    /// After [`Locked::OwnerDied`]: marks the mutex usable again. The caller still holds it.
    pub(crate) fn make_consistent(&self) -> io::Result<()> {
        // SAFETY: an initialized robust mutex in a live mapping, held by the caller after
        // `EOWNERDEAD`.
        check(
            unsafe { libc::pthread_mutex_consistent(self.0.get()) },
            "pthread_mutex_consistent",
        )
    }
}

/// What a futex wait came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken by a `futex_wake`, or the word no longer held the expected value, or a signal
    /// interrupted the wait: look at the word again.
    Maybe,
    /// The deadline passed.
    TimedOut,
}

/// Waits while `word` holds `expected`, until a [`futex_wake`] on it or `deadline`.
///
/// The futex is shared (not `FUTEX_PRIVATE_FLAG`): the kernel keys it by the file and offset
/// of the mapping, so every process that maps the region waits on the same word, whatever
/// address it is mapped at.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> io::Result<Wake> {
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; the timeout pointer
    // is null or points to a valid timespec (an absolute CLOCK_MONOTONIC time, which
    // FUTEX_WAIT_BITSET expects without FUTEX_CLOCK_REALTIME).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            deadline.as_ptr(),
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if rc == 0 {
        return Ok(Wake::Maybe);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(Wake::Maybe),
        Some(libc::ETIMEDOUT) => Ok(Wake::TimedOut),
        _ => Err(io::Error::new(err.kind(), format!("futex wait: {err}"))),
    }
}

/// Wakes up to `count` waiters of `word`.
pub(crate) fn futex_wake(word: &AtomicU32, count: u32) {
    let count = count.min(i32::MAX as u32);
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE only reads the address as a key.
    // It cannot fail on a mapped, aligned word; a failure would only mean nobody is woken.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, count) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn new_mutex(kind: MutexKind) -> Box<RawMutex> {
        // SAFETY: an all-zero pthread_mutex_t is valid storage for pthread_mutex_init.
        let m = Box::new(RawMutex(UnsafeCell::new(unsafe { std::mem::zeroed() })));
        // SAFETY: fresh, unshared storage.
        unsafe { m.init(kind) }.unwrap();
        m
    }

    #[test]
    fn errorcheck_reports_relock_and_foreign_unlock() {
        let m = new_mutex(MutexKind::ErrorCheck);
        assert_eq!(m.lock(Deadline::NEVER).unwrap(), Locked::Yes);
        assert_eq!(m.lock(Deadline::NEVER).unwrap(), Locked::Mine);
        assert_eq!(m.try_lock().unwrap(), Locked::Mine);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(
                    m.lock(Deadline::after(Duration::from_millis(20))).unwrap(),
                    Locked::No
                );
                assert!(m.unlock().is_err());
            });
        });
        m.unlock().unwrap();
        assert!(m.unlock().is_err());
    }

    #[test]
    fn recursive_counts() {
        let m = new_mutex(MutexKind::Recursive);
        for _ in 0..3 {
            assert_eq!(m.lock(Deadline::NEVER).unwrap(), Locked::Yes);
        }
        for _ in 0..3 {
            m.unlock().unwrap();
        }
        assert!(m.unlock().is_err());
    }

    #[test]
    fn futex_times_out_and_sees_changes() {
        let word = AtomicU32::new(0);
        let t = std::time::Instant::now();
        assert_eq!(
            futex_wait(&word, 0, Deadline::after(Duration::from_millis(30))).unwrap(),
            Wake::TimedOut
        );
        assert!(t.elapsed() >= Duration::from_millis(30));
        word.store(1, Ordering::SeqCst);
        assert_eq!(futex_wait(&word, 0, Deadline::NEVER).unwrap(), Wake::Maybe);
        assert!(Deadline::after(Duration::ZERO).expired());
        assert!(!Deadline::after(Duration::MAX).expired());
    }
}
