//! Records: how a message that cannot travel in a channel's shared-memory ring (`ring`)
//! crosses its `SOCK_SEQPACKET` socket, and the socket ends that carry them.
//!
//! A record is an 11-byte header (kind, number of the item's descriptors, sequence number)
//! and then either the codec bytes of the item (*inline*), or the length of those bytes,
//! which wait in a `memfd` attached to the record (*spilled*). The item's own descriptors (a
//! [`SharedFd`] inside the value) ride along with `SCM_RIGHTS`, after the spill file if there
//! is one. The sequence number ties the record to the ring entry that announces it (see
//! `ring`): a reader can recognize, and drop, a record whose entry was taken by a process
//! that died before it could read the record.
//!
//! Items larger than the ring's inline limit (64 KiB) are spilled: the socket then holds a
//! few hundred bytes for them whatever their size, a 100 MiB message never waits for its
//! reader, and the kernel buffer limits the number of unread records rather than their bytes.

use std::cell::RefCell;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::fd::{self, LibraryFd};
use crate::handle::{self, Encoded, SharedFd};
use crate::sys;

/// The most descriptors one record can carry (the kernel's `SCM_MAX_FD`).
const MAX_FDS: usize = 253;
/// Items whose encoding is larger than this never travel inline.
const INLINE_CAP: usize = 64 * 1024;
/// Smallest inline limit, whatever the send buffer.
const INLINE_FLOOR: usize = 4 * 1024;
/// Kind, descriptor count (`u16`), sequence number (`u64`).
const HEADER: usize = 11;
const KIND_INLINE: u8 = 1;
const KIND_SPILLED: u8 = 2;

thread_local! {
    /// Receive buffer, large enough for any record this module sends.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One end of a `SOCK_SEQPACKET` socket pair.
///
/// The descriptor is a [`LibraryFd`]: a child started with `fork` closes its inherited copy at
/// once (it gets its own duplicate when an end is one of its arguments), so a pipe end
/// dropped by the parent is really closed, and its peer sees [`ErrorKind::Disconnected`]
/// instead of waiting forever.
pub(crate) struct Endpoint {
    fd: LibraryFd,
    inline_max: usize,
}

/// What [`Endpoint::recv`] found.
pub(crate) enum Incoming {
    /// A whole record.
    Record(Received),
    /// Nothing to read right now (non-blocking read).
    Nothing,
    /// The peer is gone and every record was read.
    Eof,
    /// A record was taken off the channel but cannot be used (cut short because this process
    /// ran out of descriptors, or its spill file cannot be mapped): the item is lost, and the
    /// caller must account for it as taken (a bounded queue's slot, a joinable task).
    Lost(Error),
}

impl Endpoint {
    /// A connected pair, each end with the largest send buffer the system allows.
    pub(crate) fn pair() -> Result<(Endpoint, Endpoint)> {
        // Registered as they are made: a fork in another thread never sees them unregistered.
        let (a, b) = fd::made(|fds| {
            let (a, b) = sys::seqpacket_pair()?;
            Ok::<_, std::io::Error>((fds.own(a), fds.own(b)))
        })
        .map_err(|err| Error::io("cannot create a socket pair for a channel", err))?;
        let a = Endpoint::adopt(a, true);
        let b = Endpoint::adopt(b, true);
        Ok((a?, b?))
    }

    /// On failure `fd` is closed, with its registration.
    fn adopt(fd: LibraryFd, grow: bool) -> Result<Endpoint> {
        let sndbuf = if grow {
            sys::grow_send_buffer(fd.as_fd())
        } else {
            nix::sys::socket::getsockopt(&*fd, nix::sys::socket::sockopt::SndBuf)
                .map_err(std::io::Error::from)
        }
        .map_err(|err| Error::io("cannot read the send buffer size of a channel", err))?;
        Ok(Endpoint {
            fd,
            inline_max: (sndbuf / 16).clamp(INLINE_FLOOR, INLINE_CAP),
        })
    }

    /// A duplicate of this end (same socket).
    pub(crate) fn try_clone(&self) -> Result<Endpoint> {
        Ok(Endpoint {
            fd: match self.fd.try_clone() {
                Some(fd) => {
                    fd.map_err(|err| Error::io("cannot duplicate a channel's descriptor", err))?
                }
                None => return Err(inherited()),
            },
            inline_max: self.inline_max,
        })
    }

    /// The descriptor, when this process owns it.
    pub(crate) fn fd(&self) -> Result<BorrowedFd<'_>> {
        if self.fd.inherited() {
            return Err(inherited());
        }
        Ok(self.fd.as_fd())
    }

    /// Makes a record ready to send (possibly several times, when a non-blocking send finds
    /// the buffer full) from an encoded item.
    pub(crate) fn outgoing(&self, encoded: Encoded) -> Result<Outgoing> {
        Outgoing::new(encoded, self.inline_max)
    }

    /// Sends `record` as number `seq`. Blocking: waits for room in the kernel buffer.
    /// Non-blocking: returns `Ok(false)` when there is none. A peer that is gone is
    /// [`ErrorKind::Disconnected`].
    pub(crate) fn send(&self, record: &Outgoing, seq: u64, nonblocking: bool) -> Result<bool> {
        let raw: Vec<RawFd> = record.fds.iter().map(AsRawFd::as_raw_fd).collect();
        let seq = seq.to_le_bytes();
        let slices = [
            IoSlice::new(&record.header[..3]),
            IoSlice::new(&seq),
            IoSlice::new(&record.header[3..]),
            IoSlice::new(&record.inline),
        ];
        match sys::send_record(self.fd()?, &slices, &raw, nonblocking) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(err) if err.raw_os_error() == Some(libc::EPIPE) => Err(Error::new(
                ErrorKind::Disconnected,
                "the other end of the channel is closed",
            )),
            Err(err) if err.raw_os_error() == Some(libc::ETOOMANYREFS) => Err(Error::io(
                "too many descriptors are waiting in channels (items larger than the inline \
                 limit, or carrying descriptors, count against RLIMIT_NOFILE until read)",
                err,
            )),
            Err(err) => Err(Error::io("cannot send a message on a channel", err)),
        }
    }

    /// Takes one record, if there is one (non-blocking), or waits for one.
    pub(crate) fn recv(&self, nonblocking: bool) -> Result<Incoming> {
        let fd = self.fd()?;
        let received = BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            if buffer.len() < HEADER + INLINE_CAP {
                buffer.resize(HEADER + INLINE_CAP, 0);
            }
            let got = sys::recv_record(fd, &mut buffer, MAX_FDS, nonblocking)?;
            // The header (and a spilled record's length), then an inline item's bytes.
            let mut header = [0u8; HEADER + 8];
            let n = got.len.min(header.len());
            header[..n].copy_from_slice(&buffer[..n]);
            let inline = (got.len >= HEADER && buffer[0] == KIND_INLINE)
                .then(|| buffer[HEADER..got.len].to_vec());
            Ok::<_, std::io::Error>((got, header, inline))
        });
        let (got, header, inline) = match received {
            Ok(received) => received,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok(Incoming::Nothing)
            }
            Err(err) if err.raw_os_error() == Some(libc::ECONNRESET) => return Ok(Incoming::Eof),
            Err(err) => return Err(Error::io("cannot receive a message from a channel", err)),
        };
        let mut fds = got.fds;
        if got.len == 0 && fds.is_empty() {
            return Ok(Incoming::Eof);
        }
        // From here on the record is off the channel: whatever goes wrong loses it.
        let parsed = (|| {
            let corrupt = |what: &str| {
                Error::new(
                    ErrorKind::Codec,
                    format!("a message on a channel is corrupt: {what}"),
                )
            };
            if got.truncated {
                return Err(Error::new(
                ErrorKind::Io,
                "a message on a channel was cut short: it does not fit the receive buffer, or its \
                 descriptors could not all be received (too many open files?); the item is lost",
            ));
            }
            if got.len < HEADER {
                return Err(corrupt("short header"));
            }
            let item_fds = usize::from(u16::from_le_bytes([header[1], header[2]]));
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&header[3..HEADER]);
            let seq = u64::from_le_bytes(seq);
            match header[0] {
                KIND_INLINE if fds.len() == item_fds => Ok(Incoming::Record(Received {
                    payload: Payload::Inline(inline.unwrap_or_default()),
                    fds,
                    seq,
                })),
                KIND_SPILLED if fds.len() == item_fds + 1 && got.len == HEADER + 8 => {
                    let mut len = [0u8; 8];
                    len.copy_from_slice(&header[HEADER..]);
                    let len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| {
                        Error::new(ErrorKind::Codec, "a message is too large for this process")
                    })?;
                    let spill = fds.remove(0);
                    let mapping = sys::SealedMapping::new(spill.as_fd(), len)
                        .map_err(|err| Error::io("cannot map a large message", err))?;
                    Ok(Incoming::Record(Received {
                        payload: Payload::Mapped(mapping),
                        fds,
                        seq,
                    }))
                }
                KIND_INLINE | KIND_SPILLED => Err(corrupt("descriptors missing")),
                _ => Err(corrupt("unknown kind")),
            }
        })();
        Ok(parsed.unwrap_or_else(Incoming::Lost))
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.fd() {
            Ok(fd) => write!(f, "fd {}", fd.as_raw_fd()),
            Err(_) => f.write_str("the parent's"),
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        // SharedFd::serialize duplicates the descriptor into the message's side list.
        let fd = self.fd().map_err(crate::error::ser_error)?;
        let shared = SharedFd::new(
            fd.try_clone_to_owned()
                .map_err(|_| serde::ser::Error::custom("cannot duplicate a channel end"))?,
        );
        shared.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let fd = SharedFd::deserialize(deserializer)?.into_inner();
        Endpoint::adopt(LibraryFd::new(fd), false).map_err(crate::error::de_error)
    }
}

/// The error of a forked child that uses its parent's channel.
fn inherited() -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        "this channel belongs to the parent process: a child started with fork has its \
         parent's memory but not its channels (their descriptors are closed in the child); \
         pass channels to a child as arguments",
    )
}

/// A record ready to send, inline bytes, descriptors (the spill file first).
pub(crate) struct Outgoing {
    header: Vec<u8>,
    inline: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Outgoing {
    fn new(encoded: Encoded, inline_max: usize) -> Result<Outgoing> {
        let Encoded { bytes, fds, .. } = encoded;
        if fds.len() >= MAX_FDS {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a message can carry at most {} descriptors, this one has {}",
                    MAX_FDS - 1,
                    fds.len()
                ),
            ));
        }
        let count = (fds.len() as u16).to_le_bytes();
        if bytes.len() <= inline_max {
            return Ok(Outgoing {
                header: vec![KIND_INLINE, count[0], count[1]],
                inline: bytes,
                fds,
            });
        }
        let spill = sys::sealed_memfd("message", &bytes).map_err(|err| {
            Error::io(
                format!("cannot store a message of {} bytes", bytes.len()),
                err,
            )
        })?;
        let mut header = vec![KIND_SPILLED, count[0], count[1]];
        header.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        let mut all = Vec::with_capacity(fds.len() + 1);
        all.push(spill);
        all.extend(fds);
        Ok(Outgoing {
            header,
            inline: Vec::new(),
            fds: all,
        })
    }
}

/// A record taken from a socket: its bytes and the descriptors of the item.
pub(crate) struct Received {
    payload: Payload,
    fds: Vec<OwnedFd>,
    seq: u64,
}

impl Received {
    /// The sequence number it was sent with.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}

enum Payload {
    /// Copied out of the record.
    Inline(Vec<u8>),
    /// In the record's sealed memory file, mapped read-only: decoded in place.
    Mapped(sys::SealedMapping),
}

/// Decodes a received record as a `T`.
pub(crate) fn decode<T: DeserializeOwned>(record: Received) -> Result<T> {
    let bytes = match &record.payload {
        Payload::Inline(bytes) => bytes.as_slice(),
        Payload::Mapped(mapping) => mapping.bytes(),
    };
    handle::with_incoming(record.fds, || codec::decode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare<T: Serialize>(end: &Endpoint, value: &T) -> Outgoing {
        end.outgoing(handle::encode(value).unwrap()).unwrap()
    }

    fn take(end: &Endpoint) -> Received {
        match end.recv(true).unwrap() {
            Incoming::Record(r) => r,
            Incoming::Nothing => panic!("nothing"),
            Incoming::Eof => panic!("eof"),
            Incoming::Lost(err) => panic!("lost: {err}"),
        }
    }

    #[test]
    fn inline_and_spilled_records() {
        let (a, b) = Endpoint::pair().unwrap();
        let small = "x".repeat(100);
        let big = "y".repeat(INLINE_CAP * 3);
        assert!(a.send(&prepare(&a, &small), 7, false).unwrap());
        assert!(a.send(&prepare(&a, &big), 8, false).unwrap());
        let first = take(&b);
        assert_eq!(first.seq(), 7);
        assert_eq!(decode::<String>(first).unwrap(), small);
        let second = take(&b);
        assert_eq!(second.seq(), 8);
        assert_eq!(decode::<String>(second).unwrap(), big);
        assert!(matches!(b.recv(true).unwrap(), Incoming::Nothing));
        drop(a);
        assert!(matches!(b.recv(true).unwrap(), Incoming::Eof));
    }

    #[test]
    fn descriptors_ride_along() {
        let (a, b) = Endpoint::pair().unwrap();
        let (x, y) = std::os::unix::net::UnixStream::pair().unwrap();
        let value = (SharedFd::new(OwnedFd::from(x)), "z".repeat(INLINE_CAP * 2));
        assert!(a.send(&prepare(&a, &value), 0, false).unwrap());
        let (fd, s): (SharedFd, String) = decode(take(&b)).unwrap();
        assert_eq!(s.len(), INLINE_CAP * 2);
        let mut x = std::os::unix::net::UnixStream::from(fd.into_inner());
        std::io::Write::write_all(&mut x, b"!").unwrap();
        let mut buf = [0u8; 1];
        std::io::Read::read_exact(&mut &y, &mut buf).unwrap();
        assert_eq!(&buf, b"!");
    }

    #[test]
    fn a_closed_peer_is_disconnected() {
        let (a, b) = Endpoint::pair().unwrap();
        drop(b);
        let err = a.send(&prepare(&a, &1u8), 0, false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Disconnected);
    }
}
