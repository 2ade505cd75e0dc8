//! Waiting on descriptors: `poll(2)` with a deadline, never a sleep loop.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Readiness events for [`poll_one`].
pub(crate) const READABLE: i16 = libc::POLLIN;
/// Room to write (a socket's send buffer has space again).
pub(crate) const WRITABLE: i16 = libc::POLLOUT;
/// The peer closed its end (end of file ahead, or hang-up).
pub(crate) const PEER_CLOSED: i16 = libc::POLLRDHUP | libc::POLLHUP;

/// Milliseconds left until `deadline` for `poll(2)`: `-1` waits forever, rounds up so a wait
/// never ends before its deadline.
fn poll_timeout(deadline: Option<Instant>) -> i32 {
    match deadline {
        None => -1,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = left.as_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u128) as i32
        }
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
        let timeout = poll_timeout(deadline);
        // SAFETY: `pfd` is a valid, exclusively borrowed pollfd array of length 1.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
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
        let timeout = poll_timeout(deadline);
        // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
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
