//! Length-prefixed frames of codec-encoded values over a stream socket.
//!
//! A frame is an 8-byte little-endian length followed by that many bytes of [`codec`] data.
//! Reads take an optional deadline and wait in `poll(2)`; end of file at a frame boundary is
//! `Ok(None)`, inside a frame it is a [`ErrorKind::Disconnected`] error.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

const HEADER: usize = 8;

/// Encodes `value` and writes it as one frame.
pub(crate) fn send<T: Serialize>(stream: &UnixStream, value: &T) -> Result<()> {
    send_with_payload(stream, value, &[])
}

/// Writes `header` as one frame followed by the raw bytes of `payload`, in one `sendmsg` when
/// the socket takes it (no copy of the payload into the frame). A closed peer is an error,
/// never a SIGPIPE.
pub(crate) fn send_with_payload<T: Serialize>(
    stream: &UnixStream,
    header: &T,
    payload: &[u8],
) -> Result<()> {
    let mut head = vec![0u8; HEADER];
    codec::encode_into(header, &mut head)?;
    let len = (head.len() - HEADER) as u64;
    head[..HEADER].copy_from_slice(&len.to_le_bytes());
    sys::send_all(
        stream.as_fd(),
        &mut [io::IoSlice::new(&head), io::IoSlice::new(payload)],
    )
    .map_err(|err| Error::io("cannot send a frame to the other process", err))
}

/// Reads `len` raw bytes that follow a header frame.
pub(crate) fn recv_payload(
    stream: &UnixStream,
    len: u64,
    deadline: Option<Instant>,
) -> Result<Vec<u8>> {
    read_body(stream, len, "payload", deadline)
}

/// Reads one frame and decodes it. `Ok(None)` when the peer closed the stream cleanly.
pub(crate) fn recv<T: DeserializeOwned>(
    stream: &UnixStream,
    deadline: Option<Instant>,
) -> Result<Option<T>> {
    let mut header = [0u8; HEADER];
    if !read_exact_until(stream, &mut header, deadline, true)? {
        return Ok(None);
    }
    let body = read_body(stream, u64::from_le_bytes(header), "frame", deadline)?;
    codec::decode(&body).map(Some)
}

/// Reads `len` bytes into a new buffer; a length that cannot be allocated is a codec error
/// (a corrupt header), not an abort.
fn read_body(
    stream: &UnixStream,
    len: u64,
    what: &str,
    deadline: Option<Instant>,
) -> Result<Vec<u8>> {
    let too_large = || {
        Error::new(
            ErrorKind::Codec,
            format!("{what} of {len} bytes is too large"),
        )
    };
    let len = usize::try_from(len).map_err(|_| too_large())?;
    let mut body = Vec::new();
    body.try_reserve_exact(len).map_err(|_| too_large())?;
    if deadline.is_none() {
        // Straight into the spare capacity: no zero-filling of a buffer about to be
        // overwritten (for large payloads that doubles the page faults).
        let read = Read::take(stream, len as u64)
            .read_to_end(&mut body)
            .map_err(|err| Error::io("cannot read from the other process", err))?;
        if read != len {
            return Err(Error::new(
                ErrorKind::Disconnected,
                "the other process closed the connection in the middle of a message",
            ));
        }
        return Ok(body);
    }
    body.resize(len, 0);
    read_exact_until(stream, &mut body, deadline, false)?;
    Ok(body)
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
        if deadline.is_some() {
            let ready = sys::poll_one(stream.as_fd(), sys::READABLE, deadline)
                .map_err(|err| Error::io("cannot wait for the other process", err))?;
            if ready == 0 {
                return Err(Error::timeout(
                    "timed out waiting for a message from the other process",
                ));
            }
        }
        match (&*stream).read(&mut buf[filled..]) {
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

/// Sends descriptors that belong to the frame just sent (nothing when there are none).
pub(crate) fn send_fds(stream: &UnixStream, fds: &[RawFd]) -> Result<()> {
    if fds.is_empty() {
        return Ok(());
    }
    sys::send_with_fds(stream.as_fd(), &[FDS_MARK], fds)
        .map_err(|err| Error::io("cannot pass descriptors to the other process", err))
}

/// Receives the `count` descriptors that belong to the frame just read.
pub(crate) fn recv_fds(stream: &UnixStream, count: u32) -> Result<Vec<OwnedFd>> {
    if count == 0 {
        return Ok(Vec::new());
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
