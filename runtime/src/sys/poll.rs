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
