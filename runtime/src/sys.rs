//! Thin safe wrappers over the system calls that need `unsafe`, or that std does not offer.
//!
//! Everything here returns `std::io::Result` and retries `EINTR`. Waits take an optional
//! deadline and block in `poll(2)`: no sleep loops anywhere.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

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

/// `pidfd_open(2)`: a descriptor that refers to process `pid` for its whole life; it becomes
/// readable when the process exits, and signals sent through it cannot reach a recycled pid.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOSYS) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "pidfd_open is not supported by this kernel (multiproc needs Linux 5.3 or later)",
            ));
        }
        return Err(err);
    }
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns (O_CLOEXEC is
    // implied for pidfds).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`. A process that already exited is not an error.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

/// `waitpid(pid)` for one of our own children: returns its exit code in Python's convention
/// (`n` for an exit, `-signal` for a death by signal), or `None` with `nohang` while it runs.
pub(crate) fn wait_child(pid: i32, nohang: bool) -> io::Result<Option<i32>> {
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out pointer; we only ever wait for a pid we forked.
        let rc = unsafe { libc::waitpid(pid, &mut status, flags) };
        if rc == 0 {
            return Ok(None);
        }
        if rc == pid {
            return Ok(Some(exitcode_from_status(status)));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Python's `os.waitstatus_to_exitcode`.
pub(crate) fn exitcode_from_status(status: i32) -> i32 {
    if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// Ends the calling process at once: no atexit handlers, no unwinding, no destructors.
pub(crate) fn exit_now(code: i32) -> ! {
    report_exit(code);
    // SAFETY: _exit is async-signal-safe and always sound to call.
    unsafe { libc::_exit(code) }
}

/// Sets or clears `FD_CLOEXEC`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD on a borrowed, open descriptor.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFD);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        if libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A pipe with both ends `O_CLOEXEC`: `(read, write)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether the C library knows this process to have a single thread: glibc's
/// `__libc_single_threaded` (2.32 and later) is true until the first `pthread_create` (every
/// Rust thread is one) and stays false afterwards. `false` means "maybe several": count them.
/// Found with `dlsym` once, so that a C library without it (musl, an older glibc) only loses
/// the shortcut. About 5 ns, where counting takes a `stat(2)` in `/proc` (1 to 5 us).
pub(crate) fn known_single_threaded() -> bool {
    static FLAG: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let address = *FLAG.get_or_init(|| {
        // SAFETY: a lookup of a NUL-terminated symbol name in the global scope; it returns the
        // symbol's address or null.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) as usize }
    });
    if address == 0 {
        return false;
    }
    // SAFETY: the address of glibc's `char __libc_single_threaded`, which lives as long as the
    // process. Read atomically all the same: while it is true this thread is the only one and
    // nothing else writes it; once false it stays false.
    let flag = unsafe { &*(address as *const std::sync::atomic::AtomicU8) };
    flag.load(std::sync::atomic::Ordering::Acquire) != 0
}

/// Number of threads of this process.
///
/// One `stat(2)` of `/proc/self/task`, whose link count the kernel reports as the number of
/// threads plus two (`proc_task_getattr`, since Linux 2.6): a microsecond, where reading and
/// parsing `/proc/self/stat` takes nine system calls and the kernel's formatting of fifty
/// fields (8 to 25 us, on the path of every fork start). Falls back to `/proc/self/stat` if
/// the link count does not look like that.
pub(crate) fn thread_count() -> io::Result<usize> {
    // SAFETY: `libc::stat` is plain old data, for which all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path, and `st` is a valid out-pointer.
    let rc = unsafe { libc::stat(c"/proc/self/task".as_ptr(), &mut st) };
    if rc == 0 && st.st_nlink >= 3 {
        return Ok(st.st_nlink as usize - 2);
    }
    thread_count_from_stat()
}

/// Number of threads of this process, from `/proc/self/stat`.
fn thread_count_from_stat() -> io::Result<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    rest.split_whitespace()
        .nth(17)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("cannot read the thread count from /proc/self/stat"))
}

/// Sends `data` and the descriptors `fds` in one message (SCM_RIGHTS).
pub(crate) fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(data)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) if n == data.len() => return Ok(()),
            Ok(_) => {
                return Err(io::Error::other(
                    "short write of a descriptor-passing message",
                ))
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// Receives one message of exactly `data.len()` bytes and up to `max_fds` descriptors.
/// Returns `Ok(None)` at end of file. Received descriptors are `O_CLOEXEC`.
///
/// `max_fds` is at most [`MAX_FDS`] (no message carries more): a larger count, which may
/// come from another process, is an error before anything is allocated or read. Descriptors
/// beyond `max_fds` are an error too, and those the kernel did install are closed.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    data: &mut [u8],
    max_fds: usize,
) -> io::Result<Option<Vec<OwnedFd>>> {
    if max_fds > MAX_FDS {
        return Err(too_many_fds(max_fds));
    }
    let mut space = vec![0u8; cmsg_space_for(max_fds)];
    let mut fds = Vec::new();
    let got = recv_msg(sock, &mut [IoSliceMut::new(data)], &mut space, 0, &mut fds)?;
    if got.fds_dropped {
        // `fds` (what did arrive) is closed here.
        return Err(fds_dropped());
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    if got.bytes != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "expected a {}-byte message, got {} bytes",
                data.len(),
                got.bytes
            ),
        ));
    }
    Ok(Some(fds))
}

fn too_many_fds(count: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{count} descriptors announced: a message carries at most {MAX_FDS}"),
    )
}

fn fds_dropped() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "descriptors were dropped: more than the message may carry, or more than this process \
         may open",
    )
}

/// Control-message space for `fds` descriptors (at most [`MAX_FDS`]).
fn cmsg_space_for(fds: usize) -> usize {
    let bytes = fds.min(MAX_FDS) * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE only computes a size (of at most a few kilobytes here).
    unsafe { libc::CMSG_SPACE(bytes as u32) as usize }
}

/// What one [`recv_msg`] received.
struct Got {
    bytes: usize,
    /// The kernel dropped descriptors for lack of control space (`MSG_CTRUNC`), or could
    /// not install them all (this process is out of descriptors).
    fds_dropped: bool,
    /// The record did not fit (`MSG_TRUNC`, `SOCK_SEQPACKET` only).
    truncated: bool,
}

/// One `recvmsg(2)` into `iov` (retrying `EINTR`), with `space` for control messages. Every
/// descriptor the kernel installed is appended to `fds` (close-on-exec), owned at once: also
/// when the control data was cut short (`MSG_CTRUNC`), where a reader that stops at the flag
/// would leak those that did arrive.
// `msg_controllen` and `cmsg_len` are `size_t` with glibc, `socklen_t` with musl.
#[allow(clippy::unnecessary_cast)]
fn recv_msg(
    sock: BorrowedFd<'_>,
    iov: &mut [IoSliceMut<'_>],
    space: &mut [u8],
    flags: libc::c_int,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Got> {
    // SAFETY: `msghdr` is plain old data, for which all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    let (n, msg) = loop {
        msg.msg_iov = iov.as_mut_ptr().cast();
        msg.msg_iovlen = iov.len() as _;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = space.len() as _;
        // SAFETY: `IoSliceMut` is ABI-compatible with `iovec` and each describes a buffer we
        // borrow mutably; `space` is ours for the control data; the kernel writes within the
        // lengths given.
        let n =
            unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break (n as usize, msg);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let controllen = (msg.msg_controllen as usize).min(space.len());
    let header = std::mem::size_of::<libc::cmsghdr>();
    // SAFETY: CMSG_LEN only computes a size.
    let data_at = unsafe { libc::CMSG_LEN(0) } as usize;
    let align = |len: usize| len.next_multiple_of(std::mem::size_of::<usize>());
    let mut at = 0;
    while at + header <= controllen {
        // SAFETY: `at + header` bytes of `space` are in bounds; read unaligned, as a byte
        // buffer does not promise the alignment of `cmsghdr`.
        let cmsg: libc::cmsghdr =
            unsafe { std::ptr::read_unaligned(space.as_ptr().add(at).cast()) };
        let len = cmsg.cmsg_len as usize;
        if len < data_at || at + len > controllen {
            break;
        }
        if cmsg.cmsg_level == libc::SOL_SOCKET && cmsg.cmsg_type == libc::SCM_RIGHTS {
            let count = (len - data_at) / std::mem::size_of::<RawFd>();
            for i in 0..count {
                let from = at + data_at + i * std::mem::size_of::<RawFd>();
                let fd = RawFd::from_ne_bytes([
                    space[from],
                    space[from + 1],
                    space[from + 2],
                    space[from + 3],
                ]);
                // SAFETY: SCM_RIGHTS installed this descriptor in this process for us alone.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        at += align(len);
    }
    Ok(Got {
        bytes: n,
        fds_dropped: msg.msg_flags & libc::MSG_CTRUNC != 0,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
    })
}

/// Reads until `buf` is full or end of file; returns how many bytes were read.
pub(crate) fn read_full(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[filled..].as_mut_ptr().cast(),
                buf.len() - filled,
            )
        };
        match n {
            0 => break,
            n if n > 0 => filled += n as usize,
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(filled)
}

/// Writes all of `buf`.
pub(crate) fn write_full(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unwritten tail of `buf`.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                buf[done..].as_ptr().cast(),
                buf.len() - done,
            )
        };
        if n >= 0 {
            done += n as usize;
        } else {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// `/dev/null` opened for reading, close-on-exec: what a child's standard input becomes.
pub(crate) fn open_devnull() -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated path; the result is a new descriptor or -1.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `null` (from [`open_devnull`]) the standard input of this process, as CPython does in
/// every child.
pub(crate) fn stdin_from(null: OwnedFd) {
    if null.as_raw_fd() == 0 {
        // Standard input was closed and `/dev/null` took its place: keep it, across exec too.
        // SAFETY: F_SETFD on a descriptor we own, which then stays open as fd 0.
        unsafe { libc::fcntl(0, libc::F_SETFD, 0) };
        std::mem::forget(null);
    } else {
        // SAFETY: dup2 onto fd 0 of a descriptor we own (closed when `null` drops); fd 0 is
        // replaced atomically.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
}

/// Sets the disposition of `signal` to its default.
pub(crate) fn default_signal(signal: i32) {
    // SAFETY: SIG_DFL is always a valid disposition.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}

/// Ignores `signal`.
pub(crate) fn ignore_signal(signal: i32) {
    // SAFETY: SIG_IGN is always a valid disposition.
    unsafe { libc::signal(signal, libc::SIG_IGN) };
}

/// The name of a signal (`"SIGKILL"`), or its number.
pub(crate) fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

/// Takes ownership of descriptor `fd`, which must be an open Unix socket, and marks it
/// `O_CLOEXEC` so it does not leak into programs this process executes.
pub(crate) fn adopt_socket(fd: RawFd) -> io::Result<std::os::unix::net::UnixStream> {
    // SAFETY: fstat only writes into `st`; an invalid fd gives EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if fd < 0 || unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a socket"),
        ));
    }
    // SAFETY: the descriptor is open, is a socket, and was handed to this process by its parent
    // for this purpose alone: nothing else in the process owns it.
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    set_cloexec(stream.as_fd(), true)?;
    Ok(stream)
}

/// A non-blocking, close-on-exec `eventfd(2)`: a counter one thread bumps to wake another
/// that polls it.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Bumps an eventfd (wakes its poller).
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a valid buffer; a full counter (EAGAIN) still wakes.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

/// Resets an eventfd's counter.
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a valid buffer; EAGAIN when already zero.
    unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
}

/// Writes all of `slices` to a socket with `MSG_NOSIGNAL` (a closed peer is `EPIPE`, not a
/// SIGPIPE that would kill a host that did not ignore it).
pub(crate) fn send_all(sock: BorrowedFd<'_>, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut slices = slices;
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match sendmsg::<()>(sock.as_raw_fd(), slices, &[], MsgFlags::MSG_NOSIGNAL, None) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// The most descriptors one `sendmsg` can pass (the kernel's `SCM_MAX_FD`).
pub(crate) const MAX_FDS: usize = 253;

/// The most slices one `sendmsg` takes (`IOV_MAX`).
const MAX_SLICES: usize = 1024;

/// [`send_all`], with the descriptors `fds` (`SCM_RIGHTS`) attached to the first bytes sent:
/// a reader gets them with the first bytes of this message, whatever else it reads.
pub(crate) fn send_all_with_fds(
    sock: BorrowedFd<'_>,
    slices: &mut [IoSlice<'_>],
    fds: &[RawFd],
) -> io::Result<()> {
    let mut slices = slices;
    IoSlice::advance_slices(&mut slices, 0);
    let rights = [ControlMessage::ScmRights(fds)];
    let mut cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    while !slices.is_empty() {
        let batch = &slices[..slices.len().min(MAX_SLICES)];
        match sendmsg::<()>(sock.as_raw_fd(), batch, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                // The descriptors went with these bytes.
                cmsgs = &[];
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// [`send_all_with_fds`] without waiting: sends what the socket takes now and returns how
/// many bytes that was (fewer than all when its buffer filled; `0` when it was full). The
/// descriptors go with the first bytes, if any are sent.
pub(crate) fn send_now_with_fds(
    sock: BorrowedFd<'_>,
    slices: &mut [IoSlice<'_>],
    fds: &[RawFd],
) -> io::Result<usize> {
    let mut slices = slices;
    IoSlice::advance_slices(&mut slices, 0);
    let rights = [ControlMessage::ScmRights(fds)];
    let mut cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    let mut sent = 0;
    while !slices.is_empty() {
        let batch = &slices[..slices.len().min(MAX_SLICES)];
        match sendmsg::<()>(sock.as_raw_fd(), batch, cmsgs, flags, None) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                cmsgs = &[];
                sent += n;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(err) => return Err(err.into()),
        }
    }
    Ok(sent)
}

/// One `recv` without waiting of at most `max` bytes, appended to `buf` in its spare capacity
/// (no zero-filling of memory about to be overwritten). Returns the number of bytes, `0` at
/// end of file; a socket with nothing to read is a `WouldBlock` error.
pub(crate) fn recv_now_into(
    sock: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    let at = spare.as_mut_ptr();
    loop {
        // SAFETY: the kernel writes at most `want` bytes at `at`, inside the vector's spare
        // capacity, which we borrow exclusively.
        let n = unsafe { libc::recv(sock.as_raw_fd(), at.cast(), want, libc::MSG_DONTWAIT) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: `recv` initialized the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Asks the kernel to back the whole 2 MiB pages inside `buf` (memory this process is about
/// to fill, such as a large vector's spare capacity) with transparent huge pages: one page
/// fault per 2 MiB instead of 512, and a cheaper unmap. Only a hint: without THP it does
/// nothing.
pub(crate) fn advise_huge_pages(buf: &mut [std::mem::MaybeUninit<u8>]) {
    const HUGE: usize = 2 << 20;
    let start = buf.as_mut_ptr() as usize;
    let first = start.next_multiple_of(HUGE);
    let last = (start + buf.len()) / HUGE * HUGE;
    if first < last {
        // SAFETY: `first..last` lies inside `buf`, which the caller owns exclusively; the
        // advice changes how the range is backed, never what it holds.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            )
        };
    }
}

/// Control-message space for [`MAX_FDS`] descriptors, for [`recv_some_with_fds`].
pub(crate) fn fds_space() -> Vec<u8> {
    vec![0u8; cmsg_space_for(MAX_FDS)]
}

/// One `recvmsg` of up to `buf.len()` bytes; the descriptors that came with them are appended
/// to `fds` (close-on-exec). Returns the number of bytes, `0` at end of file. `space` comes from
/// [`fds_space`]; descriptors the kernel had to drop for lack of it are an error. Without
/// `wait`, a socket with nothing to read is a `WouldBlock` error.
pub(crate) fn recv_some_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    space: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    wait: bool,
) -> io::Result<usize> {
    let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
    let got = recv_msg(sock, &mut [IoSliceMut::new(buf)], space, flags, fds)?;
    if got.fds_dropped {
        return Err(fds_dropped());
    }
    Ok(got.bytes)
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets, both close-on-exec: every `sendmsg` is
/// one record, and every `recvmsg` takes one whole record (or none), whoever else reads.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// Raises the send buffer of `sock` as far as an unprivileged process may (the kernel caps
/// the request at `net.core.wmem_max`), and returns the size it now has.
pub(crate) fn grow_send_buffer(sock: BorrowedFd<'_>) -> io::Result<usize> {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt::SndBuf};
    // The kernel silently caps the request; a refusal only leaves the default in place.
    let _ = setsockopt(&sock, SndBuf, &(64 << 20));
    getsockopt(&sock, SndBuf).map_err(io::Error::from)
}

/// A new anonymous, close-on-exec memory file (`memfd_create(2)`) that holds `bytes` and is
/// sealed against any change (write, grow, shrink, further seals): whoever receives it can map
/// it and read it as plain immutable memory. `name` shows in `/proc/<pid>/fd`.
pub(crate) fn sealed_memfd(name: &str, bytes: &[u8]) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(format!("multiproc:{name}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))?;
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new descriptor
    // or -1.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    io::Write::write_all(&mut file, bytes)?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on our own memfd, which nobody has mapped.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// A read-only mapping of a memory file sealed by [`sealed_memfd`] (or by anyone, as long as
/// it is sealed against writes and shrinking): its bytes cannot change while mapped.
pub(crate) struct SealedMapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl SealedMapping {
    /// Maps the first `len` bytes of `fd`; an error unless the file is sealed against writes
    /// and shrinking and holds at least `len` bytes.
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<SealedMapping> {
        // SAFETY: F_GET_SEALS only reads the seals of a borrowed, open descriptor.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        let needed = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK;
        if seals < 0 || seals & needed != needed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the memory file is not sealed against changes",
            ));
        }
        let size = std::fs::File::from(fd.try_clone_to_owned()?)
            .metadata()?
            .len();
        if size < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the memory file holds {size} bytes, not {len}"),
            ));
        }
        if len == 0 {
            return Ok(SealedMapping {
                ptr: std::ptr::NonNull::dangling(),
                len,
            });
        }
        // SAFETY: a new private read-only mapping of `len` bytes of the file, which holds at
        // least that many and cannot shrink; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(SealedMapping { ptr, len })
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes (or is dangling with `len == 0`) for as long
        // as `self` lives; the file is sealed against writes and shrinking, so no process can
        // change or remove them while they are borrowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SealedMapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps exactly the mapping made in `new`, whose bytes are no longer
            // borrowed (`bytes` borrows `self`).
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

// SAFETY: the mapping is immutable memory; sharing or sending a read-only view is sound.
unsafe impl Send for SealedMapping {}
// SAFETY: as above.
unsafe impl Sync for SealedMapping {}

/// Sends one record made of `slices`, with the descriptors `fds` attached (`SCM_RIGHTS`), on a
/// `SOCK_SEQPACKET` socket. With `nonblocking`, a full send buffer is
/// `io::ErrorKind::WouldBlock`; a closed peer is `BrokenPipe` (never a SIGPIPE).
pub(crate) fn send_record(
    sock: BorrowedFd<'_>,
    slices: &[IoSlice<'_>],
    fds: &[RawFd],
    nonblocking: bool,
) -> io::Result<()> {
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
    let mut flags = MsgFlags::MSG_NOSIGNAL;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    let total: usize = slices.iter().map(|s| s.len()).sum();
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), slices, cmsgs, flags, None) {
            Ok(n) if n == total => return Ok(()),
            Ok(n) => {
                return Err(io::Error::other(format!(
                    "short write of a {total}-byte record ({n} bytes)"
                )))
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// One record received by [`recv_record`].
pub(crate) struct RecvRecord {
    /// Bytes of the record now at the start of the buffer; `0` is end of file (the peer is
    /// gone and nothing is left to read).
    pub len: usize,
    /// Descriptors that came with it, close-on-exec.
    pub fds: Vec<OwnedFd>,
    /// The record, or its descriptors, did not fit (`MSG_TRUNC` / `MSG_CTRUNC`).
    pub truncated: bool,
}

/// Receives one record of a `SOCK_SEQPACKET` socket into `buf`, with up to `max_fds`
/// descriptors. With `nonblocking`, no record ready is `io::ErrorKind::WouldBlock`.
pub(crate) fn recv_record(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
    nonblocking: bool,
) -> io::Result<RecvRecord> {
    if max_fds > MAX_FDS {
        return Err(too_many_fds(max_fds));
    }
    let mut space = vec![0u8; cmsg_space_for(max_fds)];
    let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    let mut fds = Vec::new();
    let got = recv_msg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut space,
        flags,
        &mut fds,
    )?;
    Ok(RecvRecord {
        len: got.bytes,
        fds,
        truncated: got.truncated || got.fds_dropped,
    })
}

/// Registers `handler` to run in the child after every `fork(2)` of this process
/// (`pthread_atfork`). The handler runs where only async-signal-safe work is allowed.
pub(crate) fn at_fork_child(handler: extern "C" fn()) -> io::Result<()> {
    // SAFETY: registers a plain `extern "C" fn()` with no prepare or parent handler; the
    // handler is a static function that lives for the whole program.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(handler)) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Where this process reports its own exit code, `pid << 32 | fd`; 0 for nowhere. The pid is
/// the process that asked: a forked copy (another pid) inherits the word but does not report.
static EXIT_REPORT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes this process write its exit code (a little-endian `i32`, as `waitpid` will see it) on
/// `fd` just before it ends through [`exit_now`] or `exit(3)` (`std::process::exit`, glibc
/// only): a fork-server child's status pipe, so that its code survives the death of the
/// server that would otherwise report it. `fd` must stay open for the life of the process.
pub(crate) fn report_exit_on(fd: RawFd) {
    let pid = u64::from(std::process::id());
    let word = pid << 32 | u64::from(fd as u32);
    EXIT_REPORT.store(word, std::sync::atomic::Ordering::SeqCst);
    #[cfg(target_env = "gnu")]
    {
        extern "C" {
            // glibc's `on_exit(3)`: like `atexit`, but the handler is given the exit status.
            fn on_exit(
                handler: extern "C" fn(libc::c_int, *mut libc::c_void),
                arg: *mut libc::c_void,
            ) -> libc::c_int;
        }
        extern "C" fn on_exit_report(status: libc::c_int, _arg: *mut libc::c_void) {
            report_exit(status);
        }
        static HOOKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !HOOKED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: registers a static function that only reads an atomic and writes four
            // bytes; it ignores its argument, which is null.
            unsafe { on_exit(on_exit_report, std::ptr::null_mut()) };
        }
    }
}

/// Writes `code` where [`report_exit_on`] said, if this process asked. Async-signal-safe.
fn report_exit(code: i32) {
    let word = EXIT_REPORT.load(std::sync::atomic::Ordering::SeqCst);
    if word == 0 {
        return;
    }
    let (pid, fd) = ((word >> 32) as u32, word as u32 as RawFd);
    if pid != std::process::id() {
        return;
    }
    // What `waitpid` will read: the low byte.
    let bytes = (code & 0xff).to_le_bytes();
    // SAFETY: write(2) of a local buffer on the descriptor this process set aside for it; a
    // short or failed write leaves the code to the fork server, as before.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// Fills `buf` with random bytes from the kernel (`getrandom(2)`): for secrets, such as a
/// spawned child's launch key.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes at the start of `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe whose write end is sent as `copies` descriptors in one message on `tx`, then
    /// closed here: the read end hangs up once every copy that arrived is closed.
    fn send_copies_of_a_pipe(tx: BorrowedFd<'_>, copies: usize, data: &[u8]) -> OwnedFd {
        let (read, write) = pipe().unwrap();
        let raw = vec![write.as_raw_fd(); copies];
        send_all_with_fds(tx, &mut [IoSlice::new(data)], &raw).unwrap();
        read
    }

    fn hung_up(read: &OwnedFd) -> bool {
        poll_one(read.as_fd(), READABLE, Some(Instant::now())).unwrap() & libc::POLLHUP != 0
    }

    #[test]
    fn a_descriptor_count_above_the_kernel_limit_is_refused_before_any_allocation() {
        // A message with one descriptor waits: the refusal comes before it is read.
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let _read = send_copies_of_a_pipe(a.as_fd(), 1, b"D");
        let mut data = [0u8; 1];
        let err = recv_with_fds(b.as_fd(), &mut data, 0x3FFF_FFF0).unwrap_err();
        assert!(err.to_string().contains("at most 253"), "{err}");
        assert_eq!(
            recv_with_fds(b.as_fd(), &mut data, 1)
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        let (c, d) = seqpacket_pair().unwrap();
        let _read = send_copies_of_a_pipe(c.as_fd(), 1, b"D");
        let err = recv_record(d.as_fd(), &mut data, MAX_FDS + 1, false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("at most 253"), "{err}");
        assert_eq!(cmsg_space_for(usize::MAX), cmsg_space_for(MAX_FDS));
    }

    #[test]
    fn descriptors_of_a_truncated_control_message_are_closed() {
        // Five copies sent, room for two: the kernel installs two and drops three
        // (MSG_CTRUNC). The two must be closed, not leaked: then the pipe hangs up.
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let read = send_copies_of_a_pipe(a.as_fd(), 5, b"D");
        let mut data = [0u8; 1];
        let err = recv_with_fds(b.as_fd(), &mut data, 2).unwrap_err();
        assert!(err.to_string().contains("dropped"), "{err}");
        assert!(hung_up(&read), "a received descriptor was leaked");

        // The same through the stream reader's receive (room for MAX_FDS, sent more: the
        // kernel refuses a sendmsg of more than SCM_MAX_FD, so shrink the space instead).
        let read = send_copies_of_a_pipe(a.as_fd(), 5, b"xyz");
        let mut space = vec![0u8; cmsg_space_for(3)];
        let mut fds = Vec::new();
        let mut buf = [0u8; 8];
        let err = recv_some_with_fds(b.as_fd(), &mut buf, &mut space, &mut fds, true).unwrap_err();
        assert!(err.to_string().contains("dropped"), "{err}");
        // (Room for three is rounded up to four.)
        assert!(
            (3..5).contains(&fds.len()),
            "{} descriptors arrived",
            fds.len()
        );
        drop(fds);
        assert!(hung_up(&read), "a received descriptor was leaked");

        // And a channel record.
        let (c, d) = seqpacket_pair().unwrap();
        let read = send_copies_of_a_pipe(c.as_fd(), 4, b"r");
        let got = recv_record(d.as_fd(), &mut buf, 1, false).unwrap();
        assert!(got.truncated);
        assert!(
            (1..4).contains(&got.fds.len()),
            "{} descriptors",
            got.fds.len()
        );
        drop(got);
        assert!(hung_up(&read), "a received descriptor was leaked");
    }

    #[test]
    fn descriptors_received_whole_are_all_kept() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let read = send_copies_of_a_pipe(a.as_fd(), 3, b"D");
        let mut data = [0u8; 1];
        let fds = recv_with_fds(b.as_fd(), &mut data, 3).unwrap().unwrap();
        assert_eq!((fds.len(), data[0]), (3, b'D'));
        assert!(!hung_up(&read));
        for fd in &fds {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
            assert!(flags & libc::FD_CLOEXEC != 0);
        }
        drop(fds);
        assert!(hung_up(&read));
    }

    #[test]
    fn a_process_with_threads_is_not_known_single_threaded() {
        // The test harness runs this on a thread of its own.
        assert!(!known_single_threaded());
        assert!(thread_count().unwrap() >= 2);
    }

    #[test]
    fn thread_count_agrees_with_proc_self_stat() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            ready_tx.send(()).unwrap();
            rx.recv().ok();
        });
        ready_rx.recv().unwrap();
        // Other tests come and go on their own threads: trust a reading taken between two
        // equal readings of `/proc/self/stat`.
        let agreed = (0..1000).find_map(|_| {
            let before = thread_count_from_stat().unwrap();
            let fast = thread_count().unwrap();
            let after = thread_count_from_stat().unwrap();
            (before == after).then_some((fast, before))
        });
        tx.send(()).unwrap();
        other.join().unwrap();
        let (fast, slow) = agreed.expect("the thread count never held still");
        assert_eq!(fast, slow);
        assert!(fast >= 2, "{fast}");
    }
}
