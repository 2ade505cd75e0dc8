//! What travels over a control socket: frames during the bootstrap, messages afterwards.
//!
//! A **frame** is an 8-byte little-endian length followed by that many bytes of [`codec`](crate::codec) data;
//! descriptors follow in a separate one-byte message. Frames carry the bootstrap handshake, whose
//! format never changes, so that a child of another build can still say so clearly. Frames are
//! read exactly (never past their end): what follows the handshake stays in the socket.
//!
//! A **message** carries the pool's tasks and replies, once both ends are known to run the same
//! build. It is one `sendmsg`: a fixed prefix, the lengths of its blocks, an encoded header, a
//! payload and the blocks (byte vectors sent as they are, beside the encoded bytes), with
//! its descriptors attached to its first bytes. A [`Reader`] takes a whole small message with
//! one `recvmsg` into a buffer it reuses; only the part of a large one that did not fit is read
//! again, straight into the vector that keeps it.
//!
//! Reads take an optional deadline and wait in `poll(2)`; end of file at a frame or message
//! boundary is `Ok(None)`, inside one it is a [`ErrorKind::Disconnected`] error.
//!
//! Every length read here was written by another process, which may be corrupt or hostile:
//! a length above what the protocol allows at that point is a [`ErrorKind::Codec`] error
//! before anything is allocated ([`Frame::MAX_LEN`], `message`'s `MAX_HEADER` and `MAX_BLOCKS`,
//! [`sys::MAX_FDS`]). Below it, a payload's buffer reserves at most [`AHEAD`] bytes of address
//! space before its bytes arrive, touches none of them until they do, and beyond that at most
//! doubles as they arrive; a header's buffer (zero-filled) grows only as its bytes arrive. So
//! the memory a peer costs follows what it sends, never what it declares.
//!
//! Messages can also be moved without waiting, for a thread that serves many peers (the pool's
//! driver): [`Reader::try_recv`] keeps a message that arrives in parts until it is whole, and
//! [`try_send_message`] leaves what the socket cannot take yet to [`Unsent::resume`]. A peer
//! that stops in the middle of a message then holds up nobody but itself.
//!
//! The two protocols live apart, one file each: `frame` (the bootstrap's frames, and their
//! descriptors in a one-byte message of their own) and `message` (the pool's messages, their
//! descriptors on their first bytes). Both send through [`send_parts_until`] when a deadline
//! bounds them, and grow their buffers with [`make_room`].

use std::os::fd::{AsFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

mod frame;
mod message;

pub(crate) use frame::*;
pub(crate) use message::*;

/// Address space a buffer reserves for a declared length before its bytes arrive (it is
/// read into without zero-filling, so none of it is memory until they do); beyond it, the
/// buffer at most doubles as bytes arrive. 64 MiB: a pool argument of that size is received
/// without a single reallocation (a reallocation below glibc's mmap threshold copies).
pub(crate) const AHEAD: usize = 64 << 20;

/// Payloads and blocks from this size on are received into huge pages: most of the cost of
/// receiving a large vector is faulting in fresh 4 KiB pages.
pub(crate) const HUGE_PAGES_FROM: usize = 4 << 20;

/// Makes room in `out`, which is being filled up to `len` bytes, for at least one more byte
/// when it has none: [`AHEAD`] bytes at first, then as many as it holds (it doubles), never
/// past `len`. Filled without zeroing, its memory follows the bytes that arrived, not the
/// length declared. A length no allocation can hold is a codec error (a corrupt stream), not
/// an abort.
pub(crate) fn make_room(out: &mut Vec<u8>, len: usize, what: &str) -> Result<()> {
    if out.len() < out.capacity() || out.len() >= len {
        return Ok(());
    }
    let step = (len - out.len()).min(out.capacity().max(AHEAD));
    out.try_reserve_exact(step)
        .map_err(|_| too_large(what, len as u64))?;
    if out.capacity() >= HUGE_PAGES_FROM {
        sys::advise_huge_pages(out.spare_capacity_mut());
    }
    Ok(())
}

pub(crate) fn too_large(what: &str, len: u64) -> Error {
    Error::new(
        ErrorKind::Codec,
        format!("a {what} of {len} bytes from the other process is too large"),
    )
}

/// Sends a message of `total` bytes, `fds` with its first bytes, through `send_now(sent, fds)`,
/// which hands the socket what it takes now of the bytes after the first `sent` and returns
/// how many that was (`0` when the socket is full); between two calls that send nothing it
/// waits for room, at most until `deadline`. A peer that stops reading is a timeout
/// (`timed_out`), after which the stream is out of step; a failed send is an error that says
/// `failed`.
pub(crate) fn send_parts_until(
    stream: &UnixStream,
    total: usize,
    fds: &[RawFd],
    deadline: Option<Instant>,
    (failed, timed_out): (&str, &str),
    mut send_now: impl FnMut(usize, &[RawFd]) -> std::io::Result<usize>,
) -> Result<()> {
    let mut sent = 0;
    let mut fds = fds;
    while sent < total {
        let now = send_now(sent, fds).map_err(|err| Error::io(failed, err))?;
        if now > 0 {
            sent += now;
            fds = &[];
            continue;
        }
        let ready = sys::poll_one(stream.as_fd(), sys::WRITABLE, deadline)
            .map_err(|err| Error::io("cannot wait for the other process", err))?;
        if ready == 0 {
            return Err(Error::timeout(timed_out));
        }
    }
    Ok(())
}
