//! Messages: the pool's tasks and replies, once both ends are known to run the same build.
//! One `sendmsg` each: a fixed prefix, the lengths of its blocks, an encoded header, a payload
//! and the blocks, with its descriptors attached to its first bytes; a [`Reader`] takes a
//! whole small message with one `recvmsg` into a buffer it reuses.

use std::cell::RefCell;
use std::io::{self, Read};
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{make_room, send_parts_until, too_large};
use crate::block::Block;
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;
use crate::{spare, sys};
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
/// The reader's buffer grows to a header's length only as its bytes arrive.
const MAX_HEADER: usize = 64 << 20;
/// Blocks in one message (a map chunk of that many byte vectors is split across messages
/// long before this).
const MAX_BLOCKS: usize = 1 << 20;

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
    with_head(header, body, |head| {
        let fds = body.raw_fds();
        with_slices(head, body, |slices| {
            sys::send_all_with_fds(stream.as_fd(), slices, &fds)
        })
        .map_err(|err| Error::io("cannot send a message to the other process", err))
    })
}

/// [`send_message`] without waiting: sends what the socket takes now. `Ok(None)` when that was
/// the whole message (the usual case); otherwise the rest is left to [`Unsent::resume`].
pub(crate) fn try_send_message<H: Serialize>(
    stream: &UnixStream,
    header: &H,
    body: &Encoded,
) -> Result<Option<Unsent>> {
    with_head(header, body, |head| {
        let mut unsent = Unsent {
            head: Vec::new(),
            sent: 0,
        };
        if unsent.send_now(stream, head, body)? {
            return Ok(None);
        }
        // Only a message the socket could not take whole keeps a copy of its head.
        unsent.head = head.to_vec();
        Ok(Some(unsent))
    })
}

/// [`send_message`] bounded by `deadline` (none: as long as it takes): a peer that stops
/// reading in the middle of a large message is a [`ErrorKind::Timeout`] error, and the stream
/// is then out of step.
pub(crate) fn send_message_until<H: Serialize>(
    stream: &UnixStream,
    header: &H,
    body: &Encoded,
    deadline: Option<Instant>,
) -> Result<()> {
    if deadline.is_none() {
        return send_message(stream, header, body);
    }
    let errors = (
        "cannot send a message to the other process",
        "timed out sending a message to the other process",
    );
    with_head(header, body, |head| {
        let fds = body.raw_fds();
        send_parts_until(
            stream,
            message_len(head, body),
            &fds,
            deadline,
            errors,
            |sent, fds| {
                with_slices(head, body, |slices| {
                    let mut slices = &mut slices[..];
                    io::IoSlice::advance_slices(&mut slices, sent);
                    sys::send_now_with_fds(stream.as_fd(), slices, fds)
                })
            },
        )
    })
}

/// The part of a message that a send without waiting could not hand to the socket yet.
#[derive(Debug)]
pub(crate) struct Unsent {
    /// The message's prefix, block lengths and header.
    head: Vec<u8>,
    /// Bytes of the message sent so far (the descriptors went with the first of them).
    sent: usize,
}

impl Unsent {
    /// Sends more of the message whose body is `body` (the one it was started with), as much as
    /// the socket takes now. `Ok(true)` once it is all sent.
    pub(crate) fn resume(&mut self, stream: &UnixStream, body: &Encoded) -> Result<bool> {
        let head = std::mem::take(&mut self.head);
        let done = self.send_now(stream, &head, body);
        self.head = head;
        done
    }

    fn send_now(&mut self, stream: &UnixStream, head: &[u8], body: &Encoded) -> Result<bool> {
        let fds = if self.sent == 0 {
            body.raw_fds()
        } else {
            Vec::new()
        };
        let total = message_len(head, body);
        let sent = with_slices(head, body, |slices| {
            let mut slices = &mut slices[..];
            io::IoSlice::advance_slices(&mut slices, self.sent);
            sys::send_now_with_fds(stream.as_fd(), slices, &fds)
        })
        .map_err(|err| Error::io("cannot send a message to the other process", err))?;
        self.sent += sent;
        Ok(self.sent == total)
    }
}

/// The length of a message of `body` whose prefix, block lengths and header are `head`.
fn message_len(head: &[u8], body: &Encoded) -> usize {
    head.len() + body.bytes.len() + body.blocks.iter().map(|b| b.len()).sum::<usize>()
}

/// Runs `send` with the prefix, block lengths and encoded `header` of a message of `body`,
/// built in a buffer reused from message to message.
fn with_head<H: Serialize, T>(
    header: &H,
    body: &Encoded,
    send: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<T> {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut head) => {
            encode_head(header, body, &mut head)?;
            send(&head)
        }
        // Only if a header's `Serialize` sent a message itself: correct, with its own buffer.
        Err(_) => {
            let mut head = Vec::new();
            encode_head(header, body, &mut head)?;
            send(&head)
        }
    })
}

/// The slices of a whole message: its head, payload and blocks.
fn with_slices<T>(head: &[u8], body: &Encoded, f: impl FnOnce(&mut [io::IoSlice<'_>]) -> T) -> T {
    if body.blocks.is_empty() {
        f(&mut [io::IoSlice::new(head), io::IoSlice::new(&body.bytes)])
    } else {
        let mut slices = Vec::with_capacity(2 + body.blocks.len());
        slices.push(io::IoSlice::new(head));
        slices.push(io::IoSlice::new(&body.bytes));
        slices.extend(body.blocks.iter().map(|b| io::IoSlice::new(b)));
        f(&mut slices)
    }
}

/// Writes the prefix, block lengths and encoded `header` of a message of `body` into `head`;
/// refuses, before anything is sent, what a message cannot carry.
fn encode_head<H: Serialize>(header: &H, body: &Encoded, head: &mut Vec<u8>) -> Result<()> {
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
    Ok(())
}

/// The reading end of a message stream: a buffer reused from message to message, the
/// descriptors received ahead of the message they belong to, and the message being read.
///
/// One `Reader` must read everything that arrives on its socket once messages begin: bytes it
/// read past the end of one message are the start of the next.
///
/// A read that returns before its message is whole ([`Reader::try_recv`] finding nothing more
/// to read, or a deadline passing) keeps what it has: the next read resumes the message where
/// that one stopped. So a reader that serves several peers (the pool's driver) never waits on
/// one that stops in the middle of a message.
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
    /// The message being read, once its prefix, block lengths and header are buffered.
    partial: Option<Partial>,
    /// The last read ended for want of bytes: those buffered are not a whole message.
    starved: bool,
}

/// A message whose body is still arriving.
#[derive(Debug)]
struct Partial {
    /// Where its encoded header lies in the reader's buffer, which keeps it until the message
    /// is whole.
    header: Range<usize>,
    fd_count: usize,
    payload_len: usize,
    block_lens: Vec<usize>,
    /// The payload as read so far (its buffer grows as bytes arrive).
    bytes: Vec<u8>,
    /// The blocks begun: all whole but the last.
    blocks: Vec<Vec<u8>>,
}

/// What a read of a message stream found.
#[derive(Debug)]
pub(crate) enum Received<H> {
    /// A whole message: its header and its body (payload, blocks, descriptors).
    Message(H, Encoded),
    /// The peer closed the stream cleanly, between messages.
    Closed,
    /// No whole message yet: what came is kept, and a next read goes on from there.
    Partial,
}

/// How long a read may wait for bytes that have not arrived.
#[derive(Debug, Clone, Copy)]
enum Wait {
    No,
    /// Until the deadline (`None`: for ever), then an [`ErrorKind::Timeout`] error.
    Until(Option<Instant>),
}

/// How far [`Reader::fill`] got.
#[derive(Debug, PartialEq, Eq)]
enum Fill {
    Full,
    /// Fewer bytes than asked for, and no more to read without waiting.
    Short,
    /// A clean end of file, before any byte.
    Closed,
}

/// How far [`Reader::begin`] got.
#[derive(Debug)]
enum Begun {
    /// The prefix, block lengths and header are in: the body follows.
    Body(Partial),
    /// Not all here, and no more to read without waiting.
    Short,
    /// A clean end of file, before any byte.
    Closed,
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
            partial: None,
            starved: false,
        }
    }

    /// Whether bytes of a next message are already here, and may be a whole one (a poll of the
    /// socket would not see them). Not after a read that stopped for want of more.
    pub(crate) fn buffered(&self) -> bool {
        self.end > self.start && !self.starved
    }

    /// Whether part of a message has been read and not the rest (a next read resumes it).
    pub(crate) fn mid_message(&self) -> bool {
        self.partial.is_some() || self.end > self.start
    }

    /// Reads one message: its header and its body (payload, blocks, descriptors).
    /// `Ok(None)` when the peer closed the stream cleanly between messages. `deadline` bounds
    /// the whole read: a peer that stops in the middle of a message is a timeout too (and a
    /// next read resumes that message).
    pub(crate) fn recv<H: DeserializeOwned>(
        &mut self,
        stream: &UnixStream,
        deadline: Option<Instant>,
    ) -> Result<Option<(H, Encoded)>> {
        match self.read(stream, Wait::Until(deadline))? {
            Received::Message(header, body) => Ok(Some((header, body))),
            Received::Closed => Ok(None),
            // Only a read that does not wait stops short without an error.
            Received::Partial => Err(Error::timeout(
                "timed out waiting for a message from the other process",
            )),
        }
    }

    /// Reads what has arrived, without waiting: a whole message when its last bytes are here,
    /// [`Received::Partial`] when they are not (yet).
    pub(crate) fn try_recv<H: DeserializeOwned>(
        &mut self,
        stream: &UnixStream,
    ) -> Result<Received<H>> {
        self.read(stream, Wait::No)
    }

    fn read<H: DeserializeOwned>(
        &mut self,
        stream: &UnixStream,
        wait: Wait,
    ) -> Result<Received<H>> {
        let read = self.read_message(stream, wait);
        self.starved = !matches!(read, Ok(Received::Message(..)));
        read
    }

    fn read_message<H: DeserializeOwned>(
        &mut self,
        stream: &UnixStream,
        wait: Wait,
    ) -> Result<Received<H>> {
        // A header is decoded as soon as it is here (a corrupt one fails before its body is
        // waited for), and again at the end only for a message that took more than one read.
        let (mut partial, header) = match self.partial.take() {
            Some(partial) => (partial, None),
            None => match self.begin(stream, wait)? {
                Begun::Body(partial) => {
                    let header = codec::decode::<H>(&self.buf[partial.header.clone()])?;
                    (partial, Some(header))
                }
                Begun::Short => return Ok(Received::Partial),
                Begun::Closed => return Ok(Received::Closed),
            },
        };
        match self.read_body(stream, &mut partial, wait) {
            Ok(true) => {}
            Ok(false) => {
                self.partial = Some(partial);
                return Ok(Received::Partial);
            }
            Err(err) => {
                if err.kind() == ErrorKind::Timeout {
                    self.partial = Some(partial);
                }
                return Err(err);
            }
        }
        let header = match header {
            Some(header) => Ok(header),
            None => codec::decode::<H>(&self.buf[partial.header.clone()]),
        };
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        let header = header?;
        if self.fds.len() < partial.fd_count {
            return Err(Error::new(
                ErrorKind::Codec,
                format!(
                    "expected {} descriptors with a message from the other process, got {}",
                    partial.fd_count,
                    self.fds.len()
                ),
            ));
        }
        let fds = self.fds.drain(..partial.fd_count).collect();
        let body = Encoded {
            bytes: partial.bytes,
            fds,
            blocks: partial.blocks.into_iter().map(Block::from).collect(),
        };
        Ok(Received::Message(header, body))
    }

    /// Reads a message's prefix, block lengths and header.
    fn begin(&mut self, stream: &UnixStream, wait: Wait) -> Result<Begun> {
        match self.fill(stream, PREFIX, wait)? {
            Fill::Full => {}
            Fill::Short => return Ok(Begun::Short),
            Fill::Closed => return Ok(Begun::Closed),
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
        let payload_len = u64_at(prefix, 16);
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
        // Bytes buffered stay buffered when this stops short: the prefix is read again then.
        if self.fill(stream, fixed, wait)? != Fill::Full {
            return Ok(Begun::Short);
        }
        let at = self.start;
        let block_lens = self.buf[at + PREFIX..at + lens_end]
            .chunks_exact(8)
            .map(|len| part_len(u64_at(len, 0), "message block"))
            .collect::<Result<Vec<usize>>>()?;
        let payload_len = part_len(payload_len, "message payload")?;
        let bytes = new_part(payload_len, "message payload")?;
        self.start += fixed;
        Ok(Begun::Body(Partial {
            header: at + lens_end..at + fixed,
            fd_count,
            payload_len,
            blocks: Vec::with_capacity(block_lens.len()),
            block_lens,
            bytes,
        }))
    }

    /// Reads the payload and blocks of `partial`. `Ok(false)`: not all here yet (only without
    /// waiting).
    fn read_body(
        &mut self,
        stream: &UnixStream,
        partial: &mut Partial,
        wait: Wait,
    ) -> Result<bool> {
        if !self.read_part(stream, &mut partial.bytes, partial.payload_len, wait)? {
            return Ok(false);
        }
        // Every block begun but the last is whole.
        let mut i = partial.blocks.len().saturating_sub(1);
        while i < partial.block_lens.len() {
            let len = partial.block_lens[i];
            if i == partial.blocks.len() {
                partial.blocks.push(new_part(len, "message block")?);
            }
            if !self.read_part(stream, &mut partial.blocks[i], len, wait)? {
                return Ok(false);
            }
            i += 1;
        }
        Ok(true)
    }

    /// Reads until `out` holds `len` bytes: those already buffered, then the rest straight
    /// into the vector's spare capacity (no zero-filling, no copy). `Ok(false)`: not all here
    /// yet (only without waiting).
    fn read_part(
        &mut self,
        stream: &UnixStream,
        out: &mut Vec<u8>,
        len: usize,
        wait: Wait,
    ) -> Result<bool> {
        let here = (len - out.len()).min(self.end - self.start);
        out.extend_from_slice(&self.buf[self.start..self.start + here]);
        self.start += here;
        let cut_short = || {
            Error::new(
                ErrorKind::Disconnected,
                "the other process closed the connection in the middle of a message",
            )
        };
        let failed = |err| Error::io("cannot read from the other process", err);
        while out.len() < len {
            make_room(out, len, "message part")?;
            let rest = (len - out.len()).min(out.capacity() - out.len());
            let n_read = match wait {
                Wait::Until(None) => Read::take(stream, rest as u64)
                    .read_to_end(out)
                    .map_err(failed)?,
                Wait::Until(Some(deadline)) => {
                    let ready = sys::poll_one(stream.as_fd(), sys::READABLE, Some(deadline))
                        .map_err(|err| Error::io("cannot wait for the other process", err))?;
                    if ready == 0 {
                        return Err(Error::timeout(
                            "timed out waiting for the rest of a message from the other process",
                        ));
                    }
                    match sys::recv_now_into(stream.as_fd(), out, rest) {
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                        read => read.map_err(failed)?,
                    }
                }
                Wait::No => match sys::recv_now_into(stream.as_fd(), out, rest) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    read => read.map_err(failed)?,
                },
            };
            if n_read == 0 {
                return Err(cut_short());
            }
        }
        Ok(true)
    }

    /// Reads until `n` bytes are buffered (`wait` bounds every wait for more).
    fn fill(&mut self, stream: &UnixStream, n: usize, wait: Wait) -> Result<Fill> {
        while self.end - self.start < n {
            if self.start > 0 && self.buf.len() - self.start < n {
                // Too little room left for the whole prefix and header: move what is here
                // to the front.
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            if self.end == self.buf.len() {
                // Full (and `start` is 0): grow for a header larger than a read, at most
                // doubling as its bytes arrive, never to the length it declares up front.
                let want = n.min(2 * self.end).max(READ_SIZE);
                self.buf
                    .try_reserve_exact(want - self.buf.len())
                    .map_err(|_| too_large("message header", n as u64))?;
                self.buf.resize(want, 0);
            }
            if self.space.is_empty() {
                self.space = sys::fds_space();
            }
            let n_read = match wait {
                Wait::No => match self.recv_some(stream, false) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(Fill::Short),
                    read => read,
                },
                Wait::Until(deadline) => {
                    let spun = if self.start == self.end {
                        self.spin(stream, deadline)?
                    } else {
                        None
                    };
                    match spun {
                        Some(n_read) => Ok(n_read),
                        None => {
                            if let Some(deadline) = deadline {
                                let ready =
                                    sys::poll_one(stream.as_fd(), sys::READABLE, Some(deadline))
                                        .map_err(|err| {
                                            Error::io("cannot wait for the other process", err)
                                        })?;
                                if ready == 0 {
                                    return Err(Error::timeout(
                                        "timed out waiting for a message from the other process",
                                    ));
                                }
                            }
                            self.recv_some(stream, true)
                        }
                    }
                }
            }
            .map_err(|err| Error::io("cannot read from the other process", err))?;
            if n_read == 0 {
                if self.start == self.end {
                    return Ok(Fill::Closed);
                }
                return Err(Error::new(
                    ErrorKind::Disconnected,
                    "the other process closed the connection in the middle of a message",
                ));
            }
            self.end += n_read;
        }
        Ok(Fill::Full)
    }

    /// One `recvmsg` into the free end of the buffer, descriptors kept.
    fn recv_some(&mut self, stream: &UnixStream, wait: bool) -> io::Result<usize> {
        sys::recv_some_with_fds(
            stream.as_fd(),
            &mut self.buf[self.end..],
            &mut self.space,
            &mut self.fds,
            wait,
        )
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
            match self.recv_some(stream, false) {
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
}

/// The little-endian `u64` at `bytes[at..at + 8]`.
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The length of a payload or block, which must fit a vector (at most `isize::MAX` bytes):
/// any length below is allowed (a large argument is legitimate), its buffer growing as its
/// bytes arrive.
fn part_len(len: u64, what: &str) -> Result<usize> {
    usize::try_from(len)
        .ok()
        .filter(|&len| len <= isize::MAX as usize)
        .ok_or_else(|| too_large(what, len))
}

/// An empty vector for a payload or block of `len` bytes: a spare buffer with room for them
/// all (memory this process already has), or a new one with room for the first
/// [`AHEAD`](super::AHEAD) of them (see [`make_room`]). A length no allocation can hold is a codec
/// error (a corrupt message), not an abort.
fn new_part(len: usize, what: &str) -> Result<Vec<u8>> {
    if let Some(reused) = spare::take(len) {
        return Ok(reused);
    }
    let mut out = Vec::new();
    make_room(&mut out, len, what)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! The tests of both protocols (some send a message and a frame on one socket), here beside
    //! the reader whose state they inspect.
    use super::*;
    use crate::wire::{recv, recv_fds, send_fds_until, send_until, Frame, AHEAD};
    use std::io::Write;

    impl Frame for String {
        const MAX_LEN: u64 = 1 << 20;
    }

    impl Frame for Vec<u8> {
        const MAX_LEN: u64 = 1 << 30;
    }

    fn body(bytes: Vec<u8>, fds: Vec<OwnedFd>, blocks: Vec<Vec<u8>>) -> Encoded {
        Encoded {
            bytes,
            fds,
            blocks: blocks.into_iter().map(Block::from).collect(),
        }
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

    /// A message prefix: mark, header length, descriptor count, block count, payload length.
    fn prefix(header: u32, fds: u32, blocks: u32, payload: u64) -> Vec<u8> {
        let mut prefix = MAGIC.to_vec();
        prefix.extend_from_slice(&header.to_le_bytes());
        prefix.extend_from_slice(&fds.to_le_bytes());
        prefix.extend_from_slice(&blocks.to_le_bytes());
        prefix.extend_from_slice(&payload.to_le_bytes());
        prefix
    }

    #[test]
    fn memory_follows_the_bytes_that_arrive_not_the_lengths_declared() {
        // A header that declares 60 MiB, of which 100 bytes come.
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&prefix(60 << 20, 0, 0, 0)).unwrap();
        a.write_all(&[7; 100]).unwrap();
        let mut reader = Reader::new();
        assert!(matches!(
            reader.try_recv::<u8>(&b).unwrap(),
            Received::Partial
        ));
        assert!(reader.buf.len() <= READ_SIZE, "{} bytes", reader.buf.len());

        // A payload and blocks that declare 4 GiB, of which a kilobyte comes.
        for (blocks, payload) in [(0, 4u64 << 30), (1, 0)] {
            let (mut a, b) = UnixStream::pair().unwrap();
            a.write_all(&prefix(1, 0, blocks, payload)).unwrap();
            if blocks == 1 {
                a.write_all(&(4u64 << 30).to_le_bytes()).unwrap();
            }
            a.write_all(&[0; 1 + 1000]).unwrap();
            let mut reader = Reader::new();
            assert!(matches!(
                reader.try_recv::<u8>(&b).unwrap(),
                Received::Partial
            ));
            let partial = reader.partial.as_ref().unwrap();
            let held =
                partial.bytes.capacity() + partial.blocks.iter().map(Vec::capacity).sum::<usize>();
            assert!(held <= AHEAD, "{held} bytes reserved for 1000 received");
        }

        // A frame that declares more than its type allows is refused at once; one that
        // declares less, but more than comes, holds only what came.
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&(2u64 << 30).to_le_bytes()).unwrap();
        let err = recv::<Vec<u8>>(&b, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(err.to_string().contains("corrupt frame"), "{err}");
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&(60u64 << 20).to_le_bytes()).unwrap();
        a.write_all(&[1; 1000]).unwrap();
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        let err = recv::<Vec<u8>>(&b, Some(soon)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);

        // And a declared descriptor count above the kernel's limit; nor does a sender try.
        let err = recv_fds(&b, 0x3FFF_FFF0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(err.to_string().contains("at most 253"), "{err}");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
        let err = send_fds_until(&a, &[fd; 254], None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("at most 253"), "{err}");
        send_fds_until(&a, &[fd; 253], None).unwrap();
    }

    #[test]
    fn large_parts_grow_as_they_arrive_and_arrive_whole() {
        let (a, b) = UnixStream::pair().unwrap();
        let payload: Vec<u8> = (0..AHEAD + (9 << 20) + 3)
            .map(|i| (i % 253) as u8)
            .collect();
        let blocks = vec![vec![1u8; 100], vec![2u8; 3 * READ_SIZE], vec![3; 5]];
        let sent = body(payload.clone(), Vec::new(), blocks.clone());
        let writer = std::thread::spawn(move || {
            send_message(&a, &1u8, &sent)?;
            send_until(&a, &payload, None)
        });
        let (h, got): (u8, Encoded) = Reader::new().recv(&b, None).unwrap().unwrap();
        assert_eq!(h, 1);
        assert_eq!(got.blocks, blocks);
        let frame = recv::<Vec<u8>>(
            &b,
            Some(Instant::now() + std::time::Duration::from_secs(30)),
        )
        .unwrap()
        .unwrap();
        writer.join().unwrap().unwrap();
        assert_eq!(got.bytes, frame);
        assert_eq!(frame.len(), AHEAD + (9 << 20) + 3);
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
    fn a_message_in_parts_is_read_without_waiting() {
        let (a, b) = UnixStream::pair().unwrap();
        let sent = body(vec![4; 1000], Vec::new(), vec![vec![5; 300], Vec::new()]);
        send_message(&a, &"parts", &sent).unwrap();
        send_message(&a, &"next", &Encoded::default()).unwrap();
        drop(a);
        let mut whole = Vec::new();
        (&b).read_to_end(&mut whole).unwrap();
        let (mut c, d) = UnixStream::pair().unwrap();
        let mut reader = Reader::new();
        // Cut inside the prefix, the header, the payload, between blocks, and in the next one.
        let cuts = [0, 10, PREFIX + 20, 600, whole.len() - 40, whole.len() - 3];
        let mut got = Vec::new();
        for pair in cuts.windows(2) {
            c.write_all(&whole[pair[0]..pair[1]]).unwrap();
            match reader.try_recv::<String>(&d).unwrap() {
                Received::Message(h, body) => got.push((h, body)),
                Received::Partial => assert!(!reader.buffered()),
                Received::Closed => panic!("closed"),
            }
        }
        assert_eq!(got.len(), 1, "one whole message so far");
        c.write_all(&whole[whole.len() - 3..]).unwrap();
        drop(c);
        let Received::Message(h, _) = reader.try_recv::<String>(&d).unwrap() else {
            panic!("the next message is whole");
        };
        assert_eq!(h, "next");
        assert!(matches!(
            reader.try_recv::<String>(&d).unwrap(),
            Received::Closed
        ));
        let (h, body) = got.pop().unwrap();
        assert_eq!(h, "parts");
        assert_eq!(body.bytes, vec![4; 1000]);
        assert_eq!(body.blocks, vec![vec![5; 300], Vec::new()]);
    }

    #[test]
    fn a_stalled_message_times_out_then_resumes() {
        let (c, d) = UnixStream::pair().unwrap();
        send_message(&c, &7u32, &body(vec![9; 5000], Vec::new(), Vec::new())).unwrap();
        drop(c);
        let mut whole = Vec::new();
        (&d).read_to_end(&mut whole).unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&whole[..2000]).unwrap();
        let mut reader = Reader::new();
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        let err = reader.recv::<u32>(&b, Some(soon)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        a.write_all(&whole[2000..]).unwrap();
        let (h, got): (u32, Encoded) = reader.recv(&b, None).unwrap().unwrap();
        assert_eq!((h, got.bytes), (7, vec![9; 5000]));
    }

    #[test]
    fn a_send_without_waiting_leaves_the_rest_for_later() {
        let (a, b) = UnixStream::pair().unwrap();
        let payload: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let sent = body(
            payload.clone(),
            vec![fd_saying("with")],
            vec![vec![3; 1 << 20]],
        );
        // Nobody reads yet: the socket takes a part.
        let mut unsent = try_send_message(&a, &"big", &sent)
            .unwrap()
            .expect("more than a socket holds");
        let reader = std::thread::spawn(move || {
            let got: (String, Encoded) = Reader::new().recv(&b, None).unwrap().unwrap();
            got
        });
        while !unsent.resume(&a, &sent).unwrap() {
            sys::poll_one(a.as_fd(), sys::WRITABLE, None).unwrap();
        }
        let (h, got) = reader.join().unwrap();
        assert_eq!(h, "big");
        assert_eq!(got.bytes, payload);
        assert_eq!(got.blocks, vec![vec![3; 1 << 20]]);
        assert_eq!(read_from(got.fds.into_iter().next().unwrap(), 4), "with");
        // A small message goes whole.
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(try_send_message(&a, &"small", &Encoded::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_send_bounded_by_a_deadline_times_out() {
        let (a, _b) = UnixStream::pair().unwrap();
        let sent = body(vec![0; 8 << 20], Vec::new(), Vec::new());
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        let err = send_message_until(&a, &0u8, &sent, Some(soon)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
    }

    #[test]
    fn a_frame_bounded_by_a_deadline_times_out_and_one_that_fits_goes() {
        let (a, b) = UnixStream::pair().unwrap();
        let soon = || Some(Instant::now() + std::time::Duration::from_millis(20));
        // The peer reads nothing: a frame larger than the socket holds times out, and so do
        // descriptors sent after it (the buffer is full).
        let err = send_until(&a, &vec![7u8; 8 << 20], soon()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        let err = send_fds_until(&a, &[std::os::fd::AsRawFd::as_raw_fd(&b)], soon()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);

        let (a, b) = UnixStream::pair().unwrap();
        send_until(&a, &"hello".to_string(), soon()).unwrap();
        send_fds_until(&a, &[std::os::fd::AsRawFd::as_raw_fd(&a)], soon()).unwrap();
        assert_eq!(recv::<String>(&b, soon()).unwrap().unwrap(), "hello");
        assert_eq!(recv_fds(&b, 1).unwrap().len(), 1);
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
