//! Frames: the bootstrap handshake's values, each an 8-byte little-endian length and that
//! many bytes of [`codec`] data, read exactly (never past their end, so that what follows the
//! handshake stays in the socket); descriptors follow a frame in a one-byte message of their
//! own. The format never changes, so that a child of another build can still say so clearly.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{make_room, send_parts_until, too_large};
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

const HEADER: usize = 8;

/// A value that travels as a frame, with the largest encoding the protocol allows for it: a
/// reader refuses a longer declared length before it allocates anything, and a sender
/// refuses to send one.
pub(crate) trait Frame: Serialize + DeserializeOwned {
    /// The largest encoded length, in bytes.
    const MAX_LEN: u64;
}

/// The frame of `value`: its length, then its encoding (refused if longer than allowed).
fn encode_frame<T: Frame>(value: &T) -> Result<Vec<u8>> {
    let mut frame = Vec::new();
    encode_frame_into(value, &mut frame)?;
    Ok(frame)
}

/// Appends the frame of `value` to `out` (see [`encode_frame`]); on error `out` may hold part
/// of it.
fn encode_frame_into<T: Frame>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    codec::encode_into(value, out)?;
    let len = (out.len() - start - HEADER) as u64;
    if len > T::MAX_LEN {
        return Err(Error::new(
            ErrorKind::Codec,
            format!(
                "cannot send a `{}` of {len} bytes: at most {} may be sent",
                std::any::type_name::<T>(),
                T::MAX_LEN
            ),
        ));
    }
    out[start..start + HEADER].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Several frames written with one `sendmsg` (a bootstrap's): one system call where there
/// would be one per frame. Nothing is sent if one of them cannot be encoded.
#[derive(Default)]
pub(crate) struct Frames(Vec<u8>);

impl Frames {
    /// Adds the frame of `value`.
    pub(crate) fn push<T: Frame>(&mut self, value: &T) -> Result<()> {
        encode_frame_into(value, &mut self.0)
    }

    /// How many bytes the frames added take.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Sends the frames added, bounded by `deadline` as [`send_until`] is.
    pub(crate) fn send_until(&self, stream: &UnixStream, deadline: Option<Instant>) -> Result<()> {
        send_bytes_until(stream, &self.0, &[], deadline)
    }
}

/// Encodes `value` and writes it as one frame. A closed peer is an error, never a SIGPIPE.
pub(crate) fn send<T: Frame>(stream: &UnixStream, value: &T) -> Result<()> {
    let frame = encode_frame(value)?;
    sys::send_all(stream.as_fd(), &mut [io::IoSlice::new(&frame)])
        .map_err(|err| Error::io("cannot send a frame to the other process", err))
}

/// [`send`] bounded by `deadline`: a peer that stops reading in the middle of a large frame
/// is an [`ErrorKind::Timeout`] error (the stream is then out of step). The library sends its
/// bounded frames together ([`Frames`]); the tests send them one by one.
#[cfg(test)]
pub(crate) fn send_until<T: Frame>(
    stream: &UnixStream,
    value: &T,
    deadline: Option<Instant>,
) -> Result<()> {
    let frame = encode_frame(value)?;
    send_bytes_until(stream, &frame, &[], deadline)
}

/// Sends `bytes`, with `fds` on the first of them, waiting for room at most until `deadline`.
fn send_bytes_until(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[RawFd],
    deadline: Option<Instant>,
) -> Result<()> {
    let errors = (
        "cannot send to the other process",
        "timed out sending to the other process: it does not read",
    );
    send_parts_until(stream, bytes.len(), fds, deadline, errors, |sent, fds| {
        sys::send_now_with_fds(stream.as_fd(), &mut [io::IoSlice::new(&bytes[sent..])], fds)
    })
}

/// Reads one frame and decodes it. `Ok(None)` when the peer closed the stream cleanly. A
/// declared length above [`Frame::MAX_LEN`] is a [`ErrorKind::Codec`] error (the stream is
/// then out of step).
pub(crate) fn recv<T: Frame>(stream: &UnixStream, deadline: Option<Instant>) -> Result<Option<T>> {
    let mut header = [0u8; HEADER];
    if !read_exact_until(stream, &mut header, deadline, true)? {
        return Ok(None);
    }
    let len = u64::from_le_bytes(header);
    if len > T::MAX_LEN {
        return Err(Error::new(
            ErrorKind::Codec,
            format!(
                "corrupt frame from the other process: a `{}` of {len} bytes (at most {})",
                std::any::type_name::<T>(),
                T::MAX_LEN
            ),
        ));
    }
    let body = read_body(stream, len, deadline)?;
    codec::decode(&body).map(Some)
}

/// Reads the `len` bytes of a frame into a new buffer, which grows as they arrive.
fn read_body(stream: &UnixStream, len: u64, deadline: Option<Instant>) -> Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| too_large("frame", len))?;
    let mut body = Vec::new();
    while body.len() < len {
        make_room(&mut body, len, "frame")?;
        let room = (body.capacity() - body.len()).min(len - body.len());
        let n_read = match deadline {
            // Straight into the spare capacity: no zero-filling of a buffer about to be
            // overwritten (for large payloads that doubles the page faults).
            None => Read::take(stream, room as u64)
                .read_to_end(&mut body)
                .map_err(|err| Error::io("cannot read from the other process", err))?,
            // Read at once, and waited for only when nothing has arrived (see
            // `read_exact_until`).
            Some(_) => match sys::recv_now_into(stream.as_fd(), &mut body, room) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    wait_readable(stream, deadline)?;
                    continue;
                }
                read => read.map_err(|err| Error::io("cannot read from the other process", err))?,
            },
        };
        if n_read == 0 {
            return Err(Error::new(
                ErrorKind::Disconnected,
                "the other process closed the connection in the middle of a message",
            ));
        }
    }
    Ok(body)
}

/// Waits until `stream` has bytes to read (or its end), at most until `deadline`: nothing had
/// arrived when it was read.
fn wait_readable(stream: &UnixStream, deadline: Option<Instant>) -> Result<()> {
    let ready = sys::poll_one(stream.as_fd(), sys::READABLE, deadline)
        .map_err(|err| Error::io("cannot wait for the other process", err))?;
    if ready == 0 {
        return Err(Error::timeout(
            "timed out waiting for a message from the other process",
        ));
    }
    Ok(())
}

/// Fills `buf`; returns `false` on a clean end of file before the first byte when `eof_ok`.
fn read_exact_until(
    stream: &UnixStream,
    buf: &mut [u8],
    deadline: Option<Instant>,
    eof_ok: bool,
) -> Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        let read = match deadline {
            None => (&*stream).read(&mut buf[filled..]),
            // What has arrived is read at once; the wait (a `poll(2)`) comes only when
            // nothing has: a bootstrap or a child's last message is usually there in full,
            // and a poll before each read doubled the system calls of reading it.
            Some(_) => match sys::recv_now(stream.as_fd(), &mut buf[filled..]) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    wait_readable(stream, deadline)?;
                    continue;
                }
                read => read,
            },
        };
        match read {
            Ok(0) if filled == 0 && eof_ok => return Ok(false),
            Ok(0) => {
                return Err(Error::new(
                    ErrorKind::Disconnected,
                    "the other process closed the connection in the middle of a message",
                ))
            }
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Error::io("cannot read from the other process", err)),
        }
    }
    Ok(true)
}

/// The one data byte of a message that carries descriptors after a frame.
const FDS_MARK: u8 = b'D';

/// Sends descriptors that belong to the frame just sent (nothing when there are none),
/// waiting for room at most until `deadline`. More than one message can carry
/// ([`sys::MAX_FDS`]) is an [`ErrorKind::InvalidInput`] error, before anything is sent.
pub(crate) fn send_fds_until(
    stream: &UnixStream,
    fds: &[RawFd],
    deadline: Option<Instant>,
) -> Result<()> {
    if fds.is_empty() {
        return Ok(());
    }
    if fds.len() > sys::MAX_FDS {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "cannot send {} descriptors to a starting process: at most {} travel with its \
                 arguments",
                fds.len(),
                sys::MAX_FDS
            ),
        ));
    }
    send_bytes_until(stream, &[FDS_MARK], fds, deadline)
}

/// Receives the `count` descriptors that belong to the frame just read. A count above what
/// one message can carry ([`sys::MAX_FDS`], the kernel's limit) is a [`ErrorKind::Codec`]
/// error, before anything is allocated or read.
pub(crate) fn recv_fds(stream: &UnixStream, count: u32) -> Result<Vec<OwnedFd>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if count as usize > sys::MAX_FDS {
        return Err(Error::new(
            ErrorKind::Codec,
            format!(
                "the other process announced {count} descriptors: a message carries at most {}",
                sys::MAX_FDS
            ),
        ));
    }
    let mut mark = [0u8; 1];
    match sys::recv_with_fds(stream.as_fd(), &mut mark, count as usize) {
        Ok(Some(fds)) if fds.len() == count as usize && mark[0] == FDS_MARK => Ok(fds),
        Ok(Some(fds)) => Err(Error::new(
            ErrorKind::Codec,
            format!(
                "expected {count} descriptors from the other process, got {}",
                fds.len()
            ),
        )),
        Ok(None) => Err(Error::new(
            ErrorKind::Disconnected,
            "the other process closed the connection before its descriptors arrived",
        )),
        Err(err) => Err(Error::io(
            "cannot receive descriptors from the other process",
            err,
        )),
    }
}
