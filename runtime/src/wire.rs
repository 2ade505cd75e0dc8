//! What travels over a control socket: frames during the bootstrap, messages afterwards.
//!
//! A **frame** is an 8-byte little-endian length followed by that many bytes of [`codec`] data;
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

use std::cell::RefCell;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;
use crate::{spare, sys};

const HEADER: usize = 8;

/// Encodes `value` and writes it as one frame. A closed peer is an error, never a SIGPIPE.
pub(crate) fn send<T: Serialize>(stream: &UnixStream, value: &T) -> Result<()> {
    let mut frame = vec![0u8; HEADER];
    codec::encode_into(value, &mut frame)?;
    let len = (frame.len() - HEADER) as u64;
    frame[..HEADER].copy_from_slice(&len.to_le_bytes());
    sys::send_all(stream.as_fd(), &mut [io::IoSlice::new(&frame)])
        .map_err(|err| Error::io("cannot send a frame to the other process", err))
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

// ---------------------------------------------------------------------------------------------
// Messages

/// The first bytes of every message: a stream that lost its place fails clearly.
const MAGIC: [u8; 4] = *b"mpm1";
/// Magic, header length (u32), descriptor count (u32), block count (u32), payload length (u64).
const PREFIX: usize = 24;
/// What one read of a [`Reader`] asks for: a whole task or reply of a few items, and more.
const READ_SIZE: usize = 64 << 10;

/// How long a reader looks for a message without sleeping before it blocks (see
/// `Reader::spin`): the CPU an idle worker or a waiting caller spends per wait, at most.
const SPIN: std::time::Duration = std::time::Duration::from_micros(20);
/// Headers are small (a function's name, a panic's message): a larger one is a corrupt stream.
const MAX_HEADER: usize = 64 << 20;
/// Blocks in one message (a map chunk of that many byte vectors is split across messages
/// long before this).
const MAX_BLOCKS: usize = 1 << 20;

/// Payloads and blocks from this size on are received into huge pages: most of the cost of
/// receiving a large vector is faulting in fresh 4 KiB pages.
const HUGE_PAGES_FROM: usize = 4 << 20;

thread_local! {
    /// The prefix and header of the message being sent: reused, no allocation per message.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Sends `header` with the payload, blocks and descriptors of `body` as one message, in one
/// `sendmsg` when the socket takes it all (no copy of payload or blocks). A closed peer is an
/// error, never a SIGPIPE.
pub(crate) fn send_message<H: Serialize>(
    stream: &UnixStream,
    header: &H,
    body: &Encoded,
) -> Result<()> {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut head) => send_message_with(stream, header, body, &mut head),
        // Only if a header's `Serialize` sent a message itself: correct, with its own buffer.
        Err(_) => send_message_with(stream, header, body, &mut Vec::new()),
    })
}

fn send_message_with<H: Serialize>(
    stream: &UnixStream,
    header: &H,
    body: &Encoded,
    head: &mut Vec<u8>,
) -> Result<()> {
    let corrupt = |what: String| Error::new(ErrorKind::Codec, what);
    if body.fds.len() > sys::MAX_FDS {
        return Err(corrupt(format!(
            "a message can carry at most {} descriptors, not {}",
            sys::MAX_FDS,
            body.fds.len()
        )));
    }
    if body.blocks.len() > MAX_BLOCKS {
        return Err(corrupt(format!(
            "a message can carry at most {MAX_BLOCKS} byte blocks, not {}",
            body.blocks.len()
        )));
    }
    head.clear();
    head.extend_from_slice(&[0; PREFIX]);
    for block in &body.blocks {
        head.extend_from_slice(&(block.len() as u64).to_le_bytes());
    }
    let fixed = head.len();
    codec::encode_into(header, head)?;
    let header_len = head.len() - fixed;
    if header_len > MAX_HEADER {
        return Err(corrupt(format!(
            "a message header of {header_len} bytes is too large (at most {MAX_HEADER})"
        )));
    }
    head[..4].copy_from_slice(&MAGIC);
    head[4..8].copy_from_slice(&(header_len as u32).to_le_bytes());
    head[8..12].copy_from_slice(&(body.fds.len() as u32).to_le_bytes());
    head[12..16].copy_from_slice(&(body.blocks.len() as u32).to_le_bytes());
    head[16..24].copy_from_slice(&(body.bytes.len() as u64).to_le_bytes());
    let fds = body.raw_fds();
    let sent = if body.blocks.is_empty() {
        let mut slices = [io::IoSlice::new(head), io::IoSlice::new(&body.bytes)];
        sys::send_all_with_fds(stream.as_fd(), &mut slices, &fds)
    } else {
        let mut slices = Vec::with_capacity(2 + body.blocks.len());
        slices.push(io::IoSlice::new(head));
        slices.push(io::IoSlice::new(&body.bytes));
        slices.extend(body.blocks.iter().map(|b| io::IoSlice::new(b)));
        sys::send_all_with_fds(stream.as_fd(), &mut slices, &fds)
    };
    sent.map_err(|err| Error::io("cannot send a message to the other process", err))
}

/// The reading end of a message stream: a buffer reused from message to message, and the
/// descriptors received ahead of the message they belong to.
///
/// One `Reader` must read everything that arrives on its socket once messages begin: bytes it
/// read past the end of one message are the start of the next.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Descriptors received, in order; each message takes its count from the front. They
    /// arrive with the first bytes of their message, so never after it is complete.
    fds: Vec<OwnedFd>,
    space: Vec<u8>,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new()
    }
}

impl Reader {
    pub(crate) fn new() -> Reader {
        Reader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            fds: Vec::new(),
            space: Vec::new(),
        }
    }

    /// Whether bytes of a next message are already here (a poll of the socket would not see
    /// them).
    pub(crate) fn buffered(&self) -> bool {
        self.end > self.start
    }

    /// Reads one message: its header and its body (payload, blocks, descriptors).
    /// `Ok(None)` when the peer closed the stream cleanly between messages. `deadline` bounds
    /// the wait for a message to begin; once it has, the rest is read without one (the peer is
    /// sending it, or gone and the read ends at end of file).
    pub(crate) fn recv<H: DeserializeOwned>(
        &mut self,
        stream: &UnixStream,
        deadline: Option<Instant>,
    ) -> Result<Option<(H, Encoded)>> {
        if !self.fill(stream, PREFIX, deadline)? {
            return Ok(None);
        }
        let prefix = &self.buf[self.start..self.start + PREFIX];
        if prefix[..4] != MAGIC {
            return Err(Error::new(
                ErrorKind::Codec,
                format!(
                    "corrupt message from the other process: it starts with {:02x?}, not the message mark",
                    &prefix[..4]
                ),
            ));
        }
        let word = |i: usize| {
            u32::from_le_bytes([prefix[i], prefix[i + 1], prefix[i + 2], prefix[i + 3]]) as usize
        };
        let (header_len, fd_count, block_count) = (word(4), word(8), word(12));
        let mut payload_len = [0u8; 8];
        payload_len.copy_from_slice(&prefix[16..24]);
        let payload_len = u64::from_le_bytes(payload_len);
        if header_len > MAX_HEADER || block_count > MAX_BLOCKS || fd_count > sys::MAX_FDS {
            return Err(Error::new(
                ErrorKind::Codec,
                format!(
                    "corrupt message from the other process: a header of {header_len} bytes, {block_count} blocks, {fd_count} descriptors"
                ),
            ));
        }
        let lens_end = PREFIX + 8 * block_count;
        let fixed = lens_end + header_len;
        self.fill(stream, fixed, None)?;
        let at = self.start;
        let block_lens: Vec<u64> = self.buf[at + PREFIX..at + lens_end]
            .chunks_exact(8)
            .map(|c| {
                let mut len = [0u8; 8];
                len.copy_from_slice(c);
                u64::from_le_bytes(len)
            })
            .collect();
        let header = codec::decode::<H>(&self.buf[at + lens_end..at + fixed])?;
        self.start += fixed;
        let bytes = self.take(stream, payload_len, "payload")?;
        let mut blocks = Vec::with_capacity(block_lens.len());
        for len in block_lens {
            blocks.push(self.take(stream, len, "block")?);
        }
        if self.fds.len() < fd_count {
            return Err(Error::new(
                ErrorKind::Codec,
                format!(
                    "expected {fd_count} descriptors with a message from the other process, got {}",
                    self.fds.len()
                ),
            ));
        }
        let fds = self.fds.drain(..fd_count).collect();
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        Ok(Some((header, Encoded { bytes, fds, blocks })))
    }

    /// Reads until `n` bytes are buffered. `false` at a clean end of file before any byte;
    /// `deadline` bounds only the wait for a first byte.
    fn fill(&mut self, stream: &UnixStream, n: usize, deadline: Option<Instant>) -> Result<bool> {
        while self.end - self.start < n {
            if self.buf.len() - self.start < n {
                // Room for the whole prefix and header: move what is here to the front, and
                // grow for a header larger than a read.
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
                let want = n.max(READ_SIZE);
                if self.buf.len() < want {
                    self.buf
                        .try_reserve_exact(want - self.buf.len())
                        .map_err(|_| {
                            Error::new(
                                ErrorKind::Codec,
                                format!("a message header of {n} bytes is too large"),
                            )
                        })?;
                    self.buf.resize(want, 0);
                }
            }
            if self.space.is_empty() {
                self.space = sys::fds_space();
            }
            if self.start == self.end {
                if let Some(n_read) = self.spin(stream, deadline)? {
                    if n_read == 0 {
                        return Ok(false);
                    }
                    self.end += n_read;
                    continue;
                }
                if let Some(deadline) = deadline {
                    let ready = sys::poll_one(stream.as_fd(), sys::READABLE, Some(deadline))
                        .map_err(|err| Error::io("cannot wait for the other process", err))?;
                    if ready == 0 {
                        return Err(Error::timeout(
                            "timed out waiting for a message from the other process",
                        ));
                    }
                }
            }
            let n_read = sys::recv_some_with_fds(
                stream.as_fd(),
                &mut self.buf[self.end..],
                &mut self.space,
                &mut self.fds,
                true,
            )
            .map_err(|err| Error::io("cannot read from the other process", err))?;
            if n_read == 0 {
                if self.start == self.end {
                    return Ok(false);
                }
                return Err(Error::new(
                    ErrorKind::Disconnected,
                    "the other process closed the connection in the middle of a message",
                ));
            }
            self.end += n_read;
        }
        Ok(true)
    }

    /// Before sleeping for a message: looks for one without waiting, again and again, for
    /// [`SPIN`] (or until `deadline`), yielding the processor between looks. A reply to a
    /// short task usually comes within that time, and catching it awake saves the two
    /// wake-ups (sleeper and waker) a blocking read costs: a pool call's round trip drops from
    /// about a pipe ping-pong to a fraction of it. `Ok(None)`: nothing came; block now.
    fn spin(&mut self, stream: &UnixStream, deadline: Option<Instant>) -> Result<Option<usize>> {
        let until = Instant::now() + SPIN;
        let until = deadline.map_or(until, |d| d.min(until));
        loop {
            match sys::recv_some_with_fds(
                stream.as_fd(),
                &mut self.buf[self.end..],
                &mut self.space,
                &mut self.fds,
                false,
            ) {
                Ok(n_read) => return Ok(Some(n_read)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(Error::io("cannot read from the other process", err)),
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            std::thread::yield_now();
        }
    }

    /// Takes the next `len` bytes: those already buffered, then the rest read straight into
    /// the vector's spare capacity (no zero-filling, no copy).
    fn take(&mut self, stream: &UnixStream, len: u64, what: &str) -> Result<Vec<u8>> {
        let too_large = || {
            Error::new(
                ErrorKind::Codec,
                format!("a message {what} of {len} bytes is too large"),
            )
        };
        let len = usize::try_from(len).map_err(|_| too_large())?;
        let mut out = match spare::take(len) {
            Some(reused) => reused,
            None => {
                let mut out = Vec::new();
                out.try_reserve_exact(len).map_err(|_| too_large())?;
                if len >= HUGE_PAGES_FROM {
                    sys::advise_huge_pages(out.spare_capacity_mut());
                }
                out
            }
        };
        let here = len.min(self.end - self.start);
        out.extend_from_slice(&self.buf[self.start..self.start + here]);
        self.start += here;
        if here < len {
            let rest = (len - here) as u64;
            let read = Read::take(stream, rest)
                .read_to_end(&mut out)
                .map_err(|err| Error::io("cannot read from the other process", err))?;
            if read as u64 != rest {
                return Err(Error::new(
                    ErrorKind::Disconnected,
                    "the other process closed the connection in the middle of a message",
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn body(bytes: Vec<u8>, fds: Vec<OwnedFd>, blocks: Vec<Vec<u8>>) -> Encoded {
        Encoded { bytes, fds, blocks }
    }

    /// A descriptor whose file says `text` when read.
    fn fd_saying(text: &str) -> OwnedFd {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(text.as_bytes()).unwrap();
        OwnedFd::from(a)
    }

    fn read_from(fd: OwnedFd, len: usize) -> String {
        let mut s = UnixStream::from(fd);
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn a_message_carries_payload_blocks_and_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let sent = body(
            b"payload".to_vec(),
            vec![fd_saying("one"), fd_saying("two")],
            vec![vec![7u8; 3], Vec::new(), vec![9u8; 200_000]],
        );
        let writer = std::thread::spawn(move || send_message(&a, &("head", 42u64), &sent));
        let mut reader = Reader::new();
        let ((name, n), got): ((String, u64), Encoded) = reader.recv(&b, None).unwrap().unwrap();
        writer.join().unwrap().unwrap();
        assert_eq!((name.as_str(), n), ("head", 42));
        assert_eq!(got.bytes, b"payload");
        assert_eq!(
            got.blocks,
            vec![vec![7u8; 3], Vec::new(), vec![9u8; 200_000]]
        );
        let mut fds = got.fds.into_iter();
        assert_eq!(read_from(fds.next().unwrap(), 3), "one");
        assert_eq!(read_from(fds.next().unwrap(), 3), "two");
        assert!(!reader.buffered());
    }

    #[test]
    fn back_to_back_messages_keep_their_own_descriptors() {
        // Both messages are in the socket before the first read: one read takes both, and each
        // gets the descriptors that were sent with it.
        let (a, b) = UnixStream::pair().unwrap();
        send_message(
            &a,
            &1u8,
            &body(vec![1], vec![fd_saying("first")], Vec::new()),
        )
        .unwrap();
        send_message(&a, &2u8, &body(vec![2; 10], Vec::new(), Vec::new())).unwrap();
        send_message(
            &a,
            &3u8,
            &body(vec![3], vec![fd_saying("third")], Vec::new()),
        )
        .unwrap();
        drop(a);
        let mut reader = Reader::new();
        let (h, first): (u8, Encoded) = reader.recv(&b, None).unwrap().unwrap();
        assert_eq!((h, first.bytes.as_slice()), (1, &[1u8][..]));
        assert_eq!(first.fds.len(), 1);
        assert_eq!(read_from(first.fds.into_iter().next().unwrap(), 5), "first");
        let (h, second): (u8, Encoded) = reader.recv(&b, None).unwrap().unwrap();
        assert_eq!((h, second.bytes, second.fds.len()), (2, vec![2; 10], 0));
        let (h, third): (u8, Encoded) = reader.recv(&b, None).unwrap().unwrap();
        assert_eq!(h, 3);
        assert_eq!(read_from(third.fds.into_iter().next().unwrap(), 5), "third");
        assert!(reader.recv::<u8>(&b, None).unwrap().is_none());
    }

    #[test]
    fn a_large_header_and_payload_span_many_reads() {
        let (a, b) = UnixStream::pair().unwrap();
        let header = "h".repeat(3 * READ_SIZE);
        let payload: Vec<u8> = (0..5 * READ_SIZE).map(|i| i as u8).collect();
        let sent = body(payload.clone(), Vec::new(), Vec::new());
        let h2 = header.clone();
        let writer = std::thread::spawn(move || {
            send_message(&a, &h2, &sent)?;
            send_message(&a, &"next", &Encoded::default())
        });
        let mut reader = Reader::new();
        let (h, got): (String, Encoded) = reader.recv(&b, None).unwrap().unwrap();
        assert_eq!(h, header);
        assert_eq!(got.bytes, payload);
        let (h, _): (String, Encoded) = reader.recv(&b, None).unwrap().unwrap();
        assert_eq!(h, "next");
        writer.join().unwrap().unwrap();
    }

    #[test]
    fn a_corrupt_message_is_a_clear_error() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[0xAB; PREFIX]).unwrap();
        let err = Reader::new().recv::<u8>(&b, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(err.to_string().contains("corrupt message"), "{err}");

        // A valid mark with absurd lengths.
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut prefix = [0u8; PREFIX];
        prefix[..4].copy_from_slice(&MAGIC);
        prefix[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        a.write_all(&prefix).unwrap();
        let err = Reader::new().recv::<u8>(&b, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);

        // A payload length no allocation can hold.
        let (mut a, b) = UnixStream::pair().unwrap();
        prefix[4..8].copy_from_slice(&1u32.to_le_bytes());
        prefix[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        a.write_all(&prefix).unwrap();
        a.write_all(&[5]).unwrap();
        let err = Reader::new().recv::<u8>(&b, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(err.to_string().contains("too large"), "{err}");

        // Descriptors announced but not sent.
        let (mut a, b) = UnixStream::pair().unwrap();
        prefix[8..12].copy_from_slice(&2u32.to_le_bytes());
        prefix[16..24].copy_from_slice(&0u64.to_le_bytes());
        a.write_all(&prefix).unwrap();
        a.write_all(&[5]).unwrap();
        let err = Reader::new().recv::<u8>(&b, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(err.to_string().contains("expected 2 descriptors"), "{err}");
    }

    #[test]
    fn a_truncated_message_is_a_disconnect() {
        let (a, b) = UnixStream::pair().unwrap();
        send_message(
            &a,
            &"whole",
            &body(vec![1; 100], Vec::new(), vec![vec![2; 50]]),
        )
        .unwrap();
        drop(a);
        // Everything but the last byte, then end of file.
        let mut bytes = Vec::new();
        (&b).read_to_end(&mut bytes).unwrap();
        for cut in [1, PREFIX - 1, PREFIX + 3, bytes.len() - 60, bytes.len() - 1] {
            let (mut c, d) = UnixStream::pair().unwrap();
            c.write_all(&bytes[..cut]).unwrap();
            drop(c);
            let err = Reader::new().recv::<String>(&d, None).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Disconnected, "cut at {cut}: {err}");
        }
        let (mut c, d) = UnixStream::pair().unwrap();
        c.write_all(&bytes).unwrap();
        drop(c);
        let mut reader = Reader::new();
        let (h, got): (String, Encoded) = reader.recv(&d, None).unwrap().unwrap();
        assert_eq!(
            (h.as_str(), got.bytes.len(), got.blocks[0].len()),
            ("whole", 100, 50)
        );
        assert!(reader.recv::<String>(&d, None).unwrap().is_none());
    }

    #[test]
    fn waiting_for_a_message_times_out() {
        let (_a, b) = UnixStream::pair().unwrap();
        let err = Reader::new()
            .recv::<u8>(
                &b,
                Some(Instant::now() + std::time::Duration::from_millis(20)),
            )
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
    }

    #[test]
    fn descriptors_received_are_close_on_exec() {
        let (a, b) = UnixStream::pair().unwrap();
        send_message(
            &a,
            &0u8,
            &body(Vec::new(), vec![fd_saying("x")], Vec::new()),
        )
        .unwrap();
        let (_, got): (u8, Encoded) = Reader::new().recv(&b, None).unwrap().unwrap();
        let flags = nix::fcntl::fcntl(&got.fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(flags & libc::FD_CLOEXEC != 0);
    }
}
