//! Unix sockets and the descriptors that travel on them (`SCM_RIGHTS`): every send builds on
//! one `sendmsg(2)` ([`send_msg`]) and every receive with descriptors on one `recvmsg(2)`
//! ([`recv_msg`]), which owns every descriptor the kernel installed, also when the control data
//! was cut short (`MSG_CTRUNC`). No message carries more than [`MAX_FDS`] descriptors.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use super::fd::set_cloexec;

/// Sends `data` and the descriptors `fds` in one message (SCM_RIGHTS).
pub(crate) fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    match send_msg(sock, &[IoSlice::new(data)], fds, true)? {
        n if n == data.len() => Ok(()),
        _ => Err(io::Error::other(
            "short write of a descriptor-passing message",
        )),
    }
}

/// One `sendmsg(2)` of `slices` with `MSG_NOSIGNAL` (a closed peer is `EPIPE`, never a SIGPIPE
/// that would kill a host that did not ignore it), and `MSG_DONTWAIT` unless `wait`; the
/// descriptors `fds` (`SCM_RIGHTS`), if any, go with the bytes sent. Retries `EINTR`; returns
/// the number of bytes sent. Every send of this module is made of these.
fn send_msg(
    sock: BorrowedFd<'_>,
    slices: &[IoSlice<'_>],
    fds: &[RawFd],
    wait: bool,
) -> io::Result<usize> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let mut flags = MsgFlags::MSG_NOSIGNAL;
    if !wait {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), slices, cmsgs, flags, None) {
            Ok(n) => return Ok(n),
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

/// Takes ownership of descriptor `fd`, which must be an open Unix socket, and marks it
/// `O_CLOEXEC` so it does not leak into programs this process executes. A descriptor that is
/// not open, or not a socket, is an error (and is left alone).
///
/// # Safety
///
/// `fd` must not be owned by anything else in this process (no `OwnedFd`, `File` or other
/// handle refers to it, and nothing closes it later): the stream returned owns it and closes
/// it when dropped. A spawned child's control socket, which its parent handed to it for this
/// purpose alone (`--multiproc-child N`), is such a descriptor.
pub(crate) unsafe fn adopt_socket(fd: RawFd) -> io::Result<std::os::unix::net::UnixStream> {
    // SAFETY: `stat` is plain old data, for which all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if fd < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is negative"),
        ));
    }
    // SAFETY: fstat only writes into `st`, which we own; an invalid fd gives EBADF.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a socket"),
        ));
    }
    // SAFETY: the descriptor is open and is a socket, and the caller guarantees that nothing
    // else in the process owns it.
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    set_cloexec(stream.as_fd(), true)?;
    Ok(stream)
}

/// Writes all of `slices` to a socket with `MSG_NOSIGNAL` (a closed peer is `EPIPE`, not a
/// SIGPIPE that would kill a host that did not ignore it).
pub(crate) fn send_all(sock: BorrowedFd<'_>, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut slices = slices;
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match send_msg(sock, slices, &[], true)? {
            0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            n => IoSlice::advance_slices(&mut slices, n),
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
    let mut fds = fds;
    while !slices.is_empty() {
        let batch = &slices[..slices.len().min(MAX_SLICES)];
        match send_msg(sock, batch, fds, true)? {
            0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            n => {
                // The descriptors went with these bytes.
                fds = &[];
                IoSlice::advance_slices(&mut slices, n);
            }
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
    let mut fds = fds;
    let mut sent = 0;
    while !slices.is_empty() {
        let batch = &slices[..slices.len().min(MAX_SLICES)];
        match send_msg(sock, batch, fds, false) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                fds = &[];
                sent += n;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(err) => return Err(err),
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

/// One `recv` without waiting into `buf`: the number of bytes, `0` at end of file; a socket
/// with nothing to read is a `WouldBlock` error, an interrupted call an `Interrupted` one.
pub(crate) fn recv_now(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we borrow
    // exclusively.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
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

/// How many bytes `sock` holds unread (`FIONREAD`): one light system call, where a
/// `recvmsg(2)` that finds nothing costs about three times as much. A closed stream holds 0.
pub(crate) fn unread_bytes(sock: BorrowedFd<'_>) -> io::Result<usize> {
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at `unread`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::FIONREAD, &mut unread) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(unread).unwrap_or(0))
}

/// Raises the send buffer of `sock` as far as an unprivileged process may (the kernel caps
/// the request at `net.core.wmem_max`), and returns the size it now has.
pub(crate) fn grow_send_buffer(sock: BorrowedFd<'_>) -> io::Result<usize> {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt::SndBuf};
    // The kernel silently caps the request; a refusal only leaves the default in place.
    let _ = setsockopt(&sock, SndBuf, &(64 << 20));
    getsockopt(&sock, SndBuf).map_err(io::Error::from)
}

/// Sends one record made of `slices`, with the descriptors `fds` attached (`SCM_RIGHTS`), on a
/// `SOCK_SEQPACKET` socket. With `nonblocking`, a full send buffer is
/// `io::ErrorKind::WouldBlock`; a closed peer is `BrokenPipe` (never a SIGPIPE).
pub(crate) fn send_record(
    sock: BorrowedFd<'_>,
    slices: &[IoSlice<'_>],
    fds: &[RawFd],
    nonblocking: bool,
) -> io::Result<()> {
    let total: usize = slices.iter().map(|s| s.len()).sum();
    match send_msg(sock, slices, fds, !nonblocking)? {
        n if n == total => Ok(()),
        n => Err(io::Error::other(format!(
            "short write of a {total}-byte record ({n} bytes)"
        ))),
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::sys::{pipe, poll_one, READABLE};

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
    fn a_negative_descriptor_is_refused_with_a_reason() {
        // `--multiproc-child -1` by hand: the error said "Success (os error 0)", the errno
        // left over from before, since no call had failed.
        // SAFETY: -1 is no descriptor; nothing is adopted.
        let err = unsafe { adopt_socket(-1) }.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("-1"), "{err}");
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
}
