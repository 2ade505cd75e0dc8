//! Waiting on descriptors: `ppoll(2)` with a deadline, never a sleep loop.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Readiness events for [`poll_one`].
pub(crate) const READABLE: i16 = libc::POLLIN;
/// Room to write (a socket's send buffer has space again).
pub(crate) const WRITABLE: i16 = libc::POLLOUT;
/// The peer closed its end (end of file ahead, or hang-up).
pub(crate) const PEER_CLOSED: i16 = libc::POLLRDHUP | libc::POLLHUP;

/// The time left until `deadline` for `ppoll(2)`: `None` waits forever. To the nanosecond:
/// `poll(2)` counts whole milliseconds, which made a 50 us wait last a millisecond.
fn poll_timeout(deadline: Option<Instant>) -> Option<libc::timespec> {
    let left = deadline?.saturating_duration_since(Instant::now());
    Some(libc::timespec {
        tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: left.subsec_nanos() as libc::c_long,
    })
}

/// `ppoll(2)` on `fds` without a signal mask (as `poll(2)`), for at most `timeout`.
fn ppoll(fds: &mut [libc::pollfd], timeout: Option<libc::timespec>) -> libc::c_int {
    let timeout_ptr = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd; `timeout_ptr` is null or
    // points at a timespec that outlives the call; a null signal mask leaves the mask as it is.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout_ptr,
            std::ptr::null(),
        )
    }
}

/// Waits until `fd` reports one of `events` (errors and hang-ups always count) or `deadline`
/// passes. Returns the events seen, or `0` on timeout.
pub(crate) fn poll_one(
    fd: BorrowedFd<'_>,
    events: i16,
    deadline: Option<Instant>,
) -> io::Result<i16> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        let n = ppoll(std::slice::from_mut(&mut pfd), poll_timeout(deadline));
        if n >= 0 {
            if n == 0 && deadline.is_some_and(|d| Instant::now() < d) {
                continue;
            }
            return Ok(if n == 0 { 0 } else { pfd.revents });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Whether `fd` reports one of `events` now (errors and hang-ups count), without waiting.
pub(crate) fn ready_now(fd: BorrowedFd<'_>, events: i16) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        let n = ppoll(std::slice::from_mut(&mut pfd), Some(now));
        if n >= 0 {
            return Ok(n > 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// How long a wait for an event that is often moments away (a short child's end, the fork
/// server's answer) looks for it awake before it sleeps: about the CPU time of one start.
///
/// A process asleep in `ppoll` or `waitid` is woken by the kernel when the event comes: on a
/// core gone idle meanwhile (as it goes while the other core runs the child) the wake-up costs
/// 20 - 30 us on the 2-core virtual machine this was measured on, a sixth of a whole fork
/// start. Looking awake for a moment first costs at most about this much CPU per wait.
pub(crate) const LOOK_AWAKE: Duration = Duration::from_micros(250);

/// Calls `ready` until it says yes or `limit` has passed, yielding the processor between
/// calls (a process this one waits for may be queued behind it on its core); whether it
/// said yes. `ready` is called once at least, even with a zero `limit`, and each call should
/// be about a system call's worth of work: the time is read after each. The limit is checked
/// between yields, not during one: a yield to another process that is ready on this core may
/// last that process's time slice.
///
/// Where this thread may run on one processor only, or the process may use no more than one
/// processor's worth of time, `ready` is called once: every moment spent looking would be a
/// moment the awaited process cannot run.
pub(crate) fn look_awake(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    if ready() {
        return true;
    }
    if limit.is_zero() || !several_processors() {
        return false;
    }
    loop {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::yield_now();
        if ready() {
            return true;
        }
    }
}

/// Whether looking awake can help: the calling thread may run on more than one processor
/// (asked each time: a thread's affinity can change, and a child inherits its forking
/// thread's), and the process may use more than one processor's worth of time (its CPU
/// quota, asked once per process: `std::thread::available_parallelism`).
fn several_processors() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    /// 0: not asked yet, 1: one processor's worth, 2: more.
    static QUOTA: AtomicU8 = AtomicU8::new(0);
    let quota = match QUOTA.load(Ordering::Relaxed) {
        0 => {
            // An error (nothing could be read) leaves the look on, as without a quota.
            let more = std::thread::available_parallelism().map_or(true, |n| n.get() > 1);
            // A race asks twice, with the same answer.
            QUOTA.store(if more { 2 } else { 1 }, Ordering::Relaxed);
            more
        }
        known => known == 2,
    };
    if !quota {
        return false;
    }
    // SAFETY: an all-zero cpu_set_t is a valid, empty set; the call fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid out-buffer of the size given; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    // A failure (more processors than the set holds) counts as several.
    // SAFETY: `set` is initialised (filled, or still empty on failure).
    rc != 0 || unsafe { libc::CPU_COUNT(&set) } > 1
}

/// Waits on several descriptors at once; fills `revents` in `fds`. Returns how many are ready
/// (`0` on timeout).
pub(crate) fn poll_many(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        let n = ppoll(fds, poll_timeout(deadline));
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The deadline `timeout` from now, `None` when it does not fit an `Instant`.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn ready_now_does_not_wait() {
        let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!ready_now(rx.as_fd(), READABLE).unwrap());
        tx.write_all(b"x").unwrap();
        assert!(ready_now(rx.as_fd(), READABLE).unwrap());
    }

    #[test]
    fn look_awake_looks_once_at_zero_then_until_ready_or_the_limit() {
        let mut calls = 0;
        assert!(!look_awake(Duration::ZERO, || {
            calls += 1;
            false
        }));
        assert_eq!(calls, 1);
        if !several_processors() {
            return;
        }
        let mut calls = 0;
        assert!(look_awake(Duration::from_secs(60), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
        let start = Instant::now();
        assert!(!look_awake(Duration::from_millis(5), || false));
        assert!(start.elapsed() >= Duration::from_millis(5));
    }
}
