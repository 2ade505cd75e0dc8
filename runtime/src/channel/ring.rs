//! The ring every channel carries its items in: a circular buffer of records in a shared
//! memory [`Region`], with a robust lock for each side, and futex wake-ups issued only when
//! somebody sleeps.
//!
//! # Layout
//!
//! A ring is a 4 KiB header page (counters, futex words, the two locks) and then a data area
//! of `capacity` bytes (a power of two). `tail` and `head` pack, in one 64-bit word each, the
//! number of items put (taken) in the high half and the byte position in the low half (both
//! modulo 2^32): one atomic store commits a record, its byte position and its count together.
//!
//! Records are 8-byte aligned words: a header word (kind, payload length), then the payload.
//! An *inline* record carries an item's codec bytes; a *socket* record carries a sequence
//! number and says that the item is the socket record with that number (an item with
//! descriptors, or one larger than [`INLINE_MAX`], which is spilled to a sealed `memfd`); a
//! *pad* record fills the end of the data area when the next record does not fit before it.
//!
//! # Producers and consumers
//!
//! Producers take the *tail lock*, check for room (bytes, and the bound of a bounded queue),
//! copy the record in (for a socket record: send the item on the socket first), and commit
//! by storing `tail`. Consumers take the *head lock*, copy the record at `head` out, and
//! commit by storing `head` (for a socket record: then receive the item from the socket,
//! still under the lock, so that socket records are taken in the order of their ring
//! records). The two sides only meet on `head` and `tail`, so one producer and one consumer
//! never contend for a lock.
//!
//! # Processes that die
//!
//! Every step before the commit store only writes memory that nobody else reads yet, and the
//! commit is one store: a process killed at any point, lock held or not, leaves the ring
//! consistent. The locks are robust: the next process to take one gets
//! [`ErrorKind::OwnerDied`], and simply takes it again (nothing to repair). What the dead
//! process was doing is lost or done, never half done:
//! - a consumer killed before its commit took nothing; after it, it took that one item;
//! - a consumer killed between committing a socket record and receiving its item leaves the
//!   item in the socket: the next consumer of a socket record drops it (its sequence number
//!   is lower than expected), so it is lost with the consumer that held it;
//! - a producer's sequence number is taken (`next_seq`) before it sends: a producer killed
//!   between sending and committing leaves an item in the socket that no ring record names,
//!   dropped in the same way, and no two socket records ever share a number.
//!
//! # Waiting
//!
//! A consumer that finds the ring empty spins briefly (the producer is often running on
//! another core; after a microsecond the spin yields the processor between looks), then
//! registers in `readers` and sleeps on the `items` futex word; a
//! producer that commits while `readers` is not zero bumps `items` and wakes one sleeper.
//! The same goes for producers waiting for room (`writers`, `space`; all are woken, since
//! the room one consumer frees may suit only some of them). A process killed while
//! registered leaves its count behind: later commits then make a needless wake-up call,
//! nothing worse. Every waiter sleeps in slices of [`SLICE`] and looks again: a process
//! killed between its commit and its wake-up call leaves nobody asleep for good, and a pipe
//! notices a peer that was killed (see `pipe`).
//!
//! The locks are waited for as the operation allows ([`Wait`]): a try takes a lock only if
//! it is free (a held one means empty or full, as CPython's `get_nowait` raises `Empty`
//! when its reader lock is busy), a timed operation waits for it until its deadline, an
//! untimed one as long as it takes. A holder that is alive but does not run (stopped by
//! SIGSTOP or a debugger, in the middle of a copy) is never taken over: only untimed
//! operations wait for it to go on.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::{self, Endpoint, Incoming, Outgoing, Received};
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::handle;
use crate::shm::{Region, Shareable, Shared};
use crate::sync::raw::{futex_wait, futex_wake, Deadline};
use crate::sync::{Lock, LockGuard, LockState};
use crate::sys;

/// How long an operation may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all (`try_*`): [`ErrorKind::Empty`] / [`ErrorKind::Full`].
    No,
    /// Until the deadline (`None`: forever); then [`ErrorKind::Timeout`].
    Until(Option<Instant>),
}

const TAG: u64 = u64::from_le_bytes(*b"mp:ring\0");
/// The header page: counters, then the two locks.
const HEADER_PAGE: usize = 4096;
const HEAD_LOCK_AT: usize = 1024;
const TAIL_LOCK_AT: usize = 2048;
/// Items whose encoding is larger than this (or that carry descriptors) go through the
/// socket.
pub(crate) const INLINE_MAX: usize = 64 * 1024;
/// Items up to this size are copied out of the ring into a buffer on the stack.
const SMALL: usize = 120;

const KIND_INLINE: u64 = 1;
const KIND_SOCKET: u64 = 2;
const KIND_PAD: u64 = 3;

/// How long a waiter spins before it sleeps.
const SPIN: Duration = Duration::from_micros(20);
/// How long it spins without yielding the processor.
const BUSY_SPIN: Duration = Duration::from_micros(1);
/// The longest single sleep of a waiter that must notice events no futex announces.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// The counters of a ring, each group on its own cache line.
#[repr(C)]
struct Header {
    tag: AtomicU64,
    capacity: AtomicU32,
    /// The most items the ring holds (a bounded queue), `0`: as many as fit.
    bound: AtomicU32,
    _line0: [u64; 6],
    /// Items put (high half) and bytes written (low half); stored under the tail lock.
    tail: AtomicU64,
    /// The sequence number of the next socket record; under the tail lock.
    next_seq: AtomicU64,
    /// A value `head` had, under the tail lock: producers look at `head` itself (the
    /// consumers' cache line) only when this one says the ring is full.
    head_seen: AtomicU64,
    _line1: [u64; 5],
    /// Items taken (high half) and bytes read (low half); stored under the head lock.
    head: AtomicU64,
    /// A value `tail` had, under the head lock: consumers look at `tail` itself only when
    /// this one says the ring is empty.
    tail_seen: AtomicU64,
    _line2: [u64; 6],
    /// Futex word of the consumers: bumped when an item is committed while one sleeps.
    items: AtomicU32,
    /// Consumers registered to sleep on `items`.
    readers: AtomicU32,
    _line3: [u64; 7],
    /// Futex word of the producers: bumped when room is freed while one sleeps.
    space: AtomicU32,
    /// Producers registered to sleep on `space`.
    writers: AtomicU32,
    _line4: [u64; 7],
}

// SAFETY: atomics and never-accessed padding: any bytes are a valid value, no drop, all
// mutation through atomics.
unsafe impl Shareable for Header {
    const WHAT: &'static str = "a channel ring";
    fn is_valid(&self) -> bool {
        self.tag.load(Ordering::Acquire) == TAG
    }
}

fn pos(packed: u64) -> u32 {
    packed as u32
}

fn count(packed: u64) -> u32 {
    (packed >> 32) as u32
}

/// `packed` advanced by `bytes` and `items`.
fn advance(packed: u64, bytes: u32, items: u32) -> u64 {
    (u64::from(count(packed).wrapping_add(items)) << 32)
        | u64::from(pos(packed).wrapping_add(bytes))
}

/// The bytes a payload of `len` bytes takes, whole words.
fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

fn corrupt(what: &str) -> Error {
    Error::new(
        ErrorKind::Codec,
        format!("a channel's shared ring is corrupt: {what}"),
    )
}

/// An item ready to put: encoded once, before any lock or wait.
pub(crate) enum Outbound {
    /// Copied into the ring.
    Inline(Vec<u8>),
    /// Sent on the socket, announced by a ring record.
    Socket(Outgoing),
}

impl Outbound {
    /// Encodes `value`; items with descriptors or larger than [`INLINE_MAX`] go through `end`.
    pub(crate) fn new<T: serde::Serialize + ?Sized>(value: &T, end: &Endpoint) -> Result<Self> {
        let encoded = handle::encode(value)?;
        if encoded.fds.is_empty() && encoded.bytes.len() <= INLINE_MAX {
            Ok(Outbound::Inline(encoded.bytes))
        } else {
            Ok(Outbound::Socket(end.outgoing(encoded)?))
        }
    }

    /// The bytes of its ring record.
    fn record_len(&self) -> usize {
        match self {
            Outbound::Inline(bytes) => 8 + padded(bytes.len()),
            Outbound::Socket(_) => 16,
        }
    }
}

/// An item taken from a ring.
pub(crate) enum Taken {
    /// A small inline item, copied to the stack.
    Small([u8; SMALL], usize),
    /// A larger inline item.
    Inline(Vec<u8>),
    /// An item that came through the socket.
    Socket(Received),
}

/// Decodes a taken item as a `T`.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(taken: Taken) -> Result<T> {
    match taken {
        Taken::Small(bytes, len) => codec::decode(&bytes[..len]),
        Taken::Inline(bytes) => codec::decode(&bytes),
        Taken::Socket(received) => record::decode(received),
    }
}

/// What [`Ring::try_push`] came to.
#[derive(Clone, Copy)]
enum Pushed {
    Done,
    /// No room in the ring (or the bound is reached).
    NoRoom,
    /// The socket's send buffer is full.
    SocketFull,
    /// The tail lock is held, and the wait did not allow waiting for it (see [`Ring::lock`]).
    Busy,
}

/// What [`Ring::take`] came to.
enum Took {
    /// An item was taken (an error: it is lost, see [`Incoming::Lost`]).
    Item(Result<Taken>),
    Empty,
    /// The head lock is held, and the wait did not allow waiting for it (see [`Ring::lock`]).
    Busy,
}

/// A ring in a shared region: cheap to clone, travels as the region and its offset.
#[derive(Clone)]
pub(crate) struct Ring {
    header: Shared<Header>,
    head_lock: Lock,
    tail_lock: Lock,
    /// Offset of the ring in its region.
    base: usize,
    capacity: u32,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("region", self.region())
            .field("base", &self.base)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Ring {
    /// The bytes a ring of `capacity` data bytes takes in a region.
    pub(crate) const fn size(capacity: usize) -> usize {
        HEADER_PAGE + capacity
    }

    /// A new, empty ring at `base` of `region`, which this process just created and has not
    /// shared. `capacity`: a power of two, at least 2 records of [`INLINE_MAX`]; `bound`:
    /// the most items it holds, `None` for as many as fit.
    pub(crate) fn create(
        region: &Arc<Region>,
        base: usize,
        capacity: usize,
        bound: Option<u32>,
    ) -> Result<Ring> {
        if std::mem::size_of::<LockState>() > HEAD_LOCK_AT
            || !capacity.is_power_of_two()
            || !(2 * (8 + INLINE_MAX)..=1 << 30).contains(&capacity)
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("a channel ring cannot have {capacity} bytes"),
            ));
        }
        let header = Shared::<Header>::at(region.clone(), base)?;
        let ring = Ring {
            head_lock: Lock::init_at(region.clone(), base + HEAD_LOCK_AT)?,
            tail_lock: Lock::init_at(region.clone(), base + TAIL_LOCK_AT)?,
            header,
            base,
            capacity: capacity as u32,
        };
        ring.data_words(0, capacity / 8)?;
        ring.header
            .capacity
            .store(capacity as u32, Ordering::Relaxed);
        ring.header
            .bound
            .store(bound.unwrap_or(0), Ordering::Relaxed);
        ring.header.tag.store(TAG, Ordering::Release);
        Ok(ring)
    }

    /// The ring at `base` of `region`, received from another process: checks its tag and
    /// its size.
    pub(crate) fn open(region: &Arc<Region>, base: usize) -> Result<Ring> {
        let header = Shared::<Header>::at(region.clone(), base)?;
        if !header.is_valid() {
            return Err(Error::new(
                ErrorKind::Codec,
                "the shared memory received does not hold a channel ring",
            ));
        }
        let capacity = header.capacity.load(Ordering::Relaxed);
        let ring = Ring {
            head_lock: Lock::existing_at(region.clone(), base + HEAD_LOCK_AT)?,
            tail_lock: Lock::existing_at(region.clone(), base + TAIL_LOCK_AT)?,
            header,
            base,
            capacity,
        };
        if !capacity.is_power_of_two() || (capacity as usize) < 2 * (8 + INLINE_MAX) {
            return Err(corrupt("bad capacity"));
        }
        ring.data_words(0, capacity as usize / 8)?;
        Ok(ring)
    }

    /// The region the ring lives in.
    pub(crate) fn region(&self) -> &Arc<Region> {
        self.header.region()
    }

    /// Its offset in the region.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// `count` words of the data area from byte `at` on.
    fn data_words(&self, at: usize, count: usize) -> Result<&[AtomicU64]> {
        self.region().words(self.base + HEADER_PAGE + at, count)
    }

    /// The bound of a bounded ring.
    pub(crate) fn bound(&self) -> Option<usize> {
        match self.header.bound.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n as usize),
        }
    }

    /// Items in the ring (a snapshot).
    pub(crate) fn len(&self) -> usize {
        // Head first: the tail read after it is at least as recent, so no underflow.
        let head = self.header.head.load(Ordering::Acquire);
        let tail = self.header.tail.load(Ordering::Acquire);
        count(tail).wrapping_sub(count(head)) as usize
    }

    /// Whether a record is waiting.
    pub(crate) fn has_records(&self) -> bool {
        pos(self.header.tail.load(Ordering::SeqCst)) != pos(self.header.head.load(Ordering::SeqCst))
    }

    /// Whether a bounded ring holds its bound of items (a snapshot).
    pub(crate) fn is_full(&self) -> bool {
        self.bound().is_some_and(|bound| self.len() >= bound)
    }

    /// Takes a side's lock, waiting for it as the operation's `wait` allows: a try
    /// ([`Wait::No`]) only takes a free lock, a timed operation waits for it until its
    /// deadline, an untimed one as long as it takes. `Ok(None)`: not taken. A holder that
    /// died left the ring consistent (see the module docs): take it again. A holder that is
    /// alive but does not run (stopped by SIGSTOP or a debugger) is never taken over: only
    /// untimed operations wait for it to go on.
    fn lock<'a>(lock: &'a Lock, wait: Wait) -> Result<Option<LockGuard<'a>>> {
        loop {
            let attempt = match wait {
                Wait::No => lock.try_acquire(),
                Wait::Until(None) => lock.acquire().map(Some),
                Wait::Until(Some(deadline)) => {
                    lock.acquire_timeout(deadline.saturating_duration_since(Instant::now()))
                }
            };
            match attempt {
                Err(err) if err.kind() == ErrorKind::OwnerDied => continue,
                other => return other,
            }
        }
    }

    /// Takes a side's lock if it is free, for a ring of inline items only (see
    /// [`try_push_inline`](Self::try_push_inline)): there each lock is one process's alone, so
    /// a lock held by anyone else is held out of turn (by code that found the ring and took it),
    /// and is never waited for: an error. A holder that died is as in [`lock`](Self::lock).
    fn lock_alone<'a>(lock: &'a Lock) -> Result<LockGuard<'a>> {
        loop {
            match lock.try_acquire() {
                Ok(Some(guard)) => return Ok(guard),
                Ok(None) => return Err(corrupt("a lock is held out of turn")),
                Err(err) if err.kind() == ErrorKind::OwnerDied => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Puts an inline `item` if there is room now: `Ok(false)` when there is none. For a ring
    /// that carries nothing but inline items, with no socket of its own beside it (a pool
    /// worker's: its messages too large for the ring go on the worker's control socket), and
    /// one process on each side: its locks are never waited for (see
    /// [`lock_alone`](Self::lock_alone)).
    pub(crate) fn try_push_inline(&self, item: &Outbound) -> Result<bool> {
        match self.try_push(item, None, Wait::No, &|| Ok(()))? {
            Pushed::Done => Ok(true),
            Pushed::NoRoom | Pushed::SocketFull | Pushed::Busy => Ok(false),
        }
    }

    /// Takes the next item of a ring of inline items only (see
    /// [`try_push_inline`](Self::try_push_inline)): `Ok(None)` when the ring is empty; a
    /// socket record is corrupt there.
    pub(crate) fn try_pop_inline(&self) -> Result<Option<Taken>> {
        match self.take(None, Wait::No)? {
            Took::Item(taken) => taken.map(Some),
            Took::Empty | Took::Busy => Ok(None),
        }
    }

    /// Puts `item` if there is room now, waiting for the tail lock as `wait` allows (see
    /// [`lock`](Self::lock)). For a socket item, sends it on `end` first. Without `end` (a ring
    /// of inline items only), a socket item is refused and the lock is not waited for.
    /// `counted` runs just before the commit (see [`push_counted`](Self::push_counted)).
    fn try_push(
        &self,
        item: &Outbound,
        end: Option<&Endpoint>,
        wait: Wait,
        counted: &dyn Fn() -> Result<()>,
    ) -> Result<Pushed> {
        let h = &*self.header;
        let cap = self.capacity;
        let need = item.record_len() as u32;
        let guard = match end {
            Some(_) => match Ring::lock(&self.tail_lock, wait)? {
                Some(guard) => guard,
                None => return Ok(Pushed::Busy),
            },
            None => Ring::lock_alone(&self.tail_lock)?,
        };
        let tail = h.tail.load(Ordering::Relaxed);
        let at = pos(tail) & (cap - 1);
        let pad = if cap - at < need { cap - at } else { 0 };
        let bound = h.bound.load(Ordering::Relaxed);
        let fits = |head: u64| {
            let used = pos(tail).wrapping_sub(pos(head));
            if used > cap {
                return Err(corrupt("the tail is behind the head"));
            }
            Ok(cap - used >= pad + need
                && (bound == 0 || count(tail).wrapping_sub(count(head)) < bound))
        };
        // `head_seen` is never ahead of `head`, and the room it shows is there: only when it
        // shows too little, look at `head` (and remember it).
        if !fits(h.head_seen.load(Ordering::Acquire))? {
            let head = h.head.load(Ordering::Acquire);
            h.head_seen.store(head, Ordering::Release);
            if !fits(head)? {
                return Ok(Pushed::NoRoom);
            }
        }
        if pad != 0 {
            self.data_words(at as usize, 1)?[0].store(KIND_PAD << 32, Ordering::Relaxed);
        }
        let start = ((at + pad) & (cap - 1)) as usize;
        match item {
            Outbound::Inline(bytes) => {
                let words = self.data_words(start, 1 + bytes.len().div_ceil(8))?;
                words[0].store((KIND_INLINE << 32) | bytes.len() as u64, Ordering::Relaxed);
                for (word, chunk) in words[1..].iter().zip(bytes.chunks(8)) {
                    let mut w = [0u8; 8];
                    w[..chunk.len()].copy_from_slice(chunk);
                    word.store(u64::from_ne_bytes(w), Ordering::Relaxed);
                }
            }
            Outbound::Socket(record) => {
                let Some(end) = end else {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        "this ring carries no socket items",
                    ));
                };
                // Numbered before it is sent: no number is ever used twice (module docs).
                let seq = h.next_seq.load(Ordering::Relaxed);
                h.next_seq.store(seq.wrapping_add(1), Ordering::Relaxed);
                if !end.send(record, seq, true)? {
                    return Ok(Pushed::SocketFull);
                }
                let words = self.data_words(start, 2)?;
                words[0].store((KIND_SOCKET << 32) | 8, Ordering::Relaxed);
                words[1].store(seq, Ordering::Relaxed);
            }
        }
        counted()?;
        h.tail
            .store(advance(tail, pad + need, 1), Ordering::Release);
        drop(guard);
        fence(Ordering::SeqCst);
        if h.readers.load(Ordering::Relaxed) != 0 {
            h.items.fetch_add(1, Ordering::SeqCst);
            futex_wake(&h.items, 1);
        }
        Ok(Pushed::Done)
    }

    /// Takes the next item if there is one and the head lock is free: `Ok(None)` when the
    /// ring is empty or another consumer holds the lock. An outer error means nothing was
    /// taken; an inner one, that an item was taken but is lost (see [`Incoming::Lost`]).
    #[cfg(test)]
    fn try_pop(&self, end: &Endpoint) -> Result<Option<Result<Taken>>> {
        match self.take(Some(end), Wait::No)? {
            Took::Item(taken) => Ok(Some(taken)),
            Took::Empty | Took::Busy => Ok(None),
        }
    }

    /// Takes the next item if there is one, waiting for the head lock as `wait` allows (see
    /// [`lock`](Self::lock)). An error means nothing was taken. Without `end` (a ring of
    /// inline items only), a socket record is corrupt and the lock is not waited for.
    fn take(&self, end: Option<&Endpoint>, wait: Wait) -> Result<Took> {
        let h = &*self.header;
        let cap = self.capacity;
        if pos(h.tail_seen.load(Ordering::Acquire)) == pos(h.head.load(Ordering::Relaxed))
            && !self.has_records()
        {
            return Ok(Took::Empty);
        }
        let guard = match end {
            Some(_) => match Ring::lock(&self.head_lock, wait)? {
                Some(guard) => guard,
                None => return Ok(Took::Busy),
            },
            None => Ring::lock_alone(&self.head_lock)?,
        };
        let taken = loop {
            let head = h.head.load(Ordering::Relaxed);
            // `tail_seen` is never ahead of `tail`, and what it shows is committed (the
            // consumer that stored it had acquired `tail`; the head lock orders the rest):
            // only when it shows nothing, look at `tail` (and remember it).
            if pos(head) == pos(h.tail_seen.load(Ordering::Acquire)) {
                let tail = h.tail.load(Ordering::Acquire);
                h.tail_seen.store(tail, Ordering::Release);
                if pos(head) == pos(tail) {
                    return Ok(Took::Empty);
                }
            }
            // What is committed from `head` on (whole records: `tail_seen` is at a record's
            // end). A record or pad that claims more was written by no producer of this ring
            // (another process scribbled on it): taking it would carry `head` past `tail`, for
            // good with a pad, which would be taken again and again.
            let committed = pos(h.tail_seen.load(Ordering::Acquire)).wrapping_sub(pos(head));
            if committed > cap {
                return Err(corrupt("the head is past the tail"));
            }
            let committed = committed as usize;
            let at = (pos(head) & (cap - 1)) as usize;
            let first = self.data_words(at, 1)?[0].load(Ordering::Relaxed);
            let len = first as u32 as usize;
            let room = cap as usize - at - 8;
            match first >> 32 {
                KIND_PAD if cap as usize - at <= committed => {
                    h.head
                        .store(advance(head, cap - at as u32, 0), Ordering::Release);
                }
                KIND_INLINE if len <= room && len <= INLINE_MAX && 8 + padded(len) <= committed => {
                    let words = self.data_words(at + 8, len.div_ceil(8))?;
                    let taken = if len <= SMALL {
                        let mut out = [0u8; SMALL];
                        copy_out(words, &mut out[..len]);
                        Taken::Small(out, len)
                    } else {
                        let mut out = vec![0u8; len];
                        copy_out(words, &mut out);
                        Taken::Inline(out)
                    };
                    h.head
                        .store(advance(head, 8 + padded(len) as u32, 1), Ordering::Release);
                    break Ok(taken);
                }
                KIND_SOCKET if len == 8 && room >= 8 && committed >= 16 => {
                    let Some(end) = end else {
                        return Err(corrupt("a socket record"));
                    };
                    let seq = self.data_words(at + 8, 1)?[0].load(Ordering::Relaxed);
                    h.head.store(advance(head, 16, 1), Ordering::Release);
                    break socket_item(end, seq).map(Taken::Socket);
                }
                _ => return Err(corrupt("unknown record")),
            }
        };
        drop(guard);
        fence(Ordering::SeqCst);
        if h.writers.load(Ordering::Relaxed) != 0 {
            h.space.fetch_add(1, Ordering::SeqCst);
            futex_wake(&h.space, u32::MAX);
        }
        Ok(Took::Item(taken))
    }

    /// Puts `item`, waiting for room as `wait` allows. `check` runs before every wait (and
    /// at least every [`SLICE`] while waiting, with `sliced`): its error ends the put.
    pub(crate) fn push(
        &self,
        item: &Outbound,
        end: &Endpoint,
        wait: Wait,
        sliced: bool,
        what: &str,
        check: impl Fn() -> Result<()>,
    ) -> Result<()> {
        self.push_counted(item, end, wait, sliced, what, check, &|| Ok(()))
    }

    /// [`push`](Self::push), which runs `counted` once it has room, with the tail lock held,
    /// right before the store that commits the item (its error ends the put, and nothing is
    /// put): a joinable queue counts the item there, after every wait, so that a producer
    /// killed or stopped while it waits has counted nothing, and before any consumer can
    /// take it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push_counted(
        &self,
        item: &Outbound,
        end: &Endpoint,
        wait: Wait,
        sliced: bool,
        what: &str,
        check: impl Fn() -> Result<()>,
        counted: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        let timed_out = || Error::timeout(format!("timed out waiting for room in the {what}"));
        loop {
            let pushed = self.try_push(item, Some(end), wait, counted)?;
            let deadline = match (pushed, wait) {
                (Pushed::Done, _) => return Ok(()),
                // A held lock is as good as no room for a try (another producer is at work).
                (_, Wait::No) => {
                    return Err(Error::new(ErrorKind::Full, format!("the {what} is full")))
                }
                // The deadline passed waiting for the lock.
                (Pushed::Busy, Wait::Until(_)) => return Err(timed_out()),
                (_, Wait::Until(deadline)) => deadline,
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(timed_out());
            }
            check()?;
            match pushed {
                Pushed::SocketFull => {
                    // Rare (many items with descriptors or spilled, unread): poll the socket
                    // in slices, so that `check` (close, hang-up) runs now and then.
                    let until = slice_end(deadline);
                    sys::poll_one(end.fd()?, libc::POLLOUT, until)
                        .map_err(|err| Error::io("cannot wait on a channel", err))?;
                }
                _ => self.sleep(
                    &self.header.space,
                    &self.header.writers,
                    || self.has_room(item) || check().is_err(),
                    deadline,
                    sliced,
                )?,
            }
        }
    }

    /// Takes an item, waiting as `wait` allows. `check` runs when the ring is empty, before
    /// every wait (and at least every [`SLICE`] while waiting, with `sliced`): its error ends
    /// the wait. Errors as [`try_pop`](Self::try_pop).
    pub(crate) fn pop(
        &self,
        end: &Endpoint,
        wait: Wait,
        sliced: bool,
        what: &str,
        check: impl Fn() -> Result<()>,
    ) -> Result<Result<Taken>> {
        let timed_out = || Error::timeout(format!("timed out waiting for an item from the {what}"));
        let mut slept = false;
        loop {
            let busy = match self.take(Some(end), wait)? {
                Took::Item(taken) => return Ok(taken),
                Took::Empty => false,
                Took::Busy => true,
            };
            let deadline = match wait {
                // A held lock is as good as empty for a try (another consumer is at work), as
                // for CPython's `get_nowait`, whose reader lock is busy.
                Wait::No => {
                    check()?;
                    return Err(Error::new(ErrorKind::Empty, format!("the {what} is empty")));
                }
                Wait::Until(deadline) => deadline,
            };
            let leave = if busy {
                // The deadline passed waiting for the lock.
                timed_out()
            } else if spin(|| self.has_records()) {
                continue;
            } else {
                match check() {
                    Err(err) => err,
                    Ok(()) if deadline.is_some_and(|d| Instant::now() >= d) => timed_out(),
                    Ok(()) => {
                        self.sleep(
                            &self.header.items,
                            &self.header.readers,
                            || self.has_records() || check().is_err(),
                            deadline,
                            sliced,
                        )?;
                        slept = true;
                        continue;
                    }
                }
            };
            if slept {
                self.pass_on();
            }
            return Err(leave);
        }
    }

    /// A waiter that was perhaps woken for an item, and leaves without it, wakes another.
    fn pass_on(&self) {
        let h = &*self.header;
        if self.has_records() && h.readers.load(Ordering::SeqCst) != 0 {
            h.items.fetch_add(1, Ordering::SeqCst);
            futex_wake(&h.items, 1);
        }
    }

    /// Waits until a record is waiting, `stop` is true, `deadline` passes, or a wake-up;
    /// with `sliced`, no longer than [`SLICE`]. Returns whether a record is waiting.
    pub(crate) fn wait_readable(
        &self,
        deadline: Option<Instant>,
        sliced: bool,
        stop: impl Fn() -> bool,
    ) -> Result<bool> {
        if self.has_records() || spin(|| self.has_records()) {
            return Ok(true);
        }
        self.sleep(
            &self.header.items,
            &self.header.readers,
            || self.has_records() || stop(),
            deadline,
            sliced,
        )?;
        // A poll does not take the item it was perhaps woken for.
        self.pass_on();
        Ok(self.has_records())
    }

    /// Whether `item` would fit now (a snapshot, for waiters).
    fn has_room(&self, item: &Outbound) -> bool {
        let h = &*self.header;
        let head = h.head.load(Ordering::SeqCst);
        let tail = h.tail.load(Ordering::SeqCst);
        let cap = self.capacity;
        let at = pos(tail) & (cap - 1);
        let need = item.record_len() as u32;
        let pad = if cap - at < need { cap - at } else { 0 };
        let used = pos(tail).wrapping_sub(pos(head));
        let bound = h.bound.load(Ordering::Relaxed);
        used <= cap
            && cap - used >= pad + need
            && (bound == 0 || count(tail).wrapping_sub(count(head)) < bound)
    }

    /// Sleeps on `word` unless `ready`, until a wake-up or `deadline` (with `sliced`, at most
    /// [`SLICE`]), registered in `waiters` meanwhile.
    fn sleep(
        &self,
        word: &AtomicU32,
        waiters: &AtomicU32,
        ready: impl Fn() -> bool,
        deadline: Option<Instant>,
        sliced: bool,
    ) -> Result<()> {
        let seen = word.load(Ordering::SeqCst);
        waiters.fetch_add(1, Ordering::SeqCst);
        let slept = if ready() {
            Ok(())
        } else {
            let until = if sliced {
                slice_end(deadline)
            } else {
                deadline
            };
            let until =
                Deadline::from_timeout(until.map(|d| d.saturating_duration_since(Instant::now())));
            futex_wait(word, seen, until).map(drop)
        };
        waiters.fetch_sub(1, Ordering::SeqCst);
        slept.map_err(|err| Error::io("cannot wait on a channel", err))
    }

    /// Wakes every waiter of the ring, in every process: they look again at what they wait
    /// for (a closed queue, a peer gone).
    pub(crate) fn wake_all(&self) {
        let h = &*self.header;
        h.items.fetch_add(1, Ordering::SeqCst);
        h.space.fetch_add(1, Ordering::SeqCst);
        futex_wake(&h.items, u32::MAX);
        futex_wake(&h.space, u32::MAX);
    }
}

/// The earlier of `deadline` and one [`SLICE`] from now.
fn slice_end(deadline: Option<Instant>) -> Option<Instant> {
    let slice = Instant::now() + SLICE;
    Some(deadline.map_or(slice, |d| d.min(slice)))
}

/// Copies `out.len()` bytes out of `words`.
fn copy_out(words: &[AtomicU64], out: &mut [u8]) {
    for (chunk, word) in out.chunks_mut(8).zip(words) {
        let w = word.load(Ordering::Relaxed).to_ne_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

/// Receives the socket record numbered `seq`, dropping older ones (items whose ring record
/// was taken by a consumer that died before receiving them, or that were sent by a producer
/// that died before writing their ring record).
fn socket_item(end: &Endpoint, seq: u64) -> Result<Received> {
    loop {
        match end.recv(true)? {
            Incoming::Record(received) if received.seq() == seq => return Ok(received),
            Incoming::Record(received) if received.seq() < seq => drop(received),
            Incoming::Record(_) => return Err(corrupt("a socket record is missing")),
            Incoming::Lost(err) => return Err(err),
            Incoming::Nothing | Incoming::Eof => {
                return Err(corrupt("the socket record of an item is missing"))
            }
        }
    }
}

/// Spins up to [`SPIN`] until `ready` (whether it is), for a ring's reader here and a pool
/// worker's rings (`pool::rings`): busy for the first microsecond, then yielding the
/// processor between looks. On a machine whose cores are all busy, the process this
/// waiter has just woken may be queued behind it on its own core: a busy spin would keep
/// it from running (and from answering) until the spin ends.
pub(crate) fn spin(ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        let spun = start.elapsed();
        if spun >= SPIN {
            return false;
        }
        if spun >= BUSY_SPIN {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(capacity: usize, bound: Option<u32>) -> (Ring, Endpoint, Endpoint) {
        let region = Arc::new(Region::new("test-ring", Ring::size(capacity)).unwrap());
        let ring = Ring::create(&region, 0, capacity, bound).unwrap();
        let (tx, rx) = Endpoint::pair().unwrap();
        (ring, tx, rx)
    }

    fn put<T: serde::Serialize>(ring: &Ring, tx: &Endpoint, v: &T) -> Result<()> {
        let item = Outbound::new(v, tx)?;
        ring.push(&item, tx, Wait::No, false, "ring", || Ok(()))
    }

    fn get<T: serde::de::DeserializeOwned>(ring: &Ring, rx: &Endpoint) -> Result<T> {
        decode(ring.pop(rx, Wait::No, false, "ring", || Ok(()))??)
    }

    #[test]
    fn wraps_around_with_mixed_sizes_in_order() {
        let cap = 4 * (8 + INLINE_MAX) * 2;
        let cap = cap.next_power_of_two();
        let (ring, tx, rx) = ring(cap, None);
        for round in 0..50u32 {
            let items: Vec<Vec<u8>> = (0..7)
                .map(|i| vec![(round + i) as u8; ((round * 7919 + i * 104729) % 40000) as usize])
                .collect();
            for item in &items {
                put(&ring, &tx, item).unwrap();
            }
            assert_eq!(ring.len(), items.len());
            for item in &items {
                assert_eq!(&get::<Vec<u8>>(&ring, &rx).unwrap(), item);
            }
            assert_eq!(
                get::<Vec<u8>>(&ring, &rx).unwrap_err().kind(),
                ErrorKind::Empty
            );
        }
    }

    #[test]
    fn socket_items_keep_their_place() {
        let (ring, tx, rx) = ring(1 << 20, None);
        let big = "b".repeat(INLINE_MAX + 1);
        put(&ring, &tx, &"a".to_string()).unwrap();
        put(&ring, &tx, &big).unwrap();
        put(&ring, &tx, &"c".to_string()).unwrap();
        assert_eq!(get::<String>(&ring, &rx).unwrap(), "a");
        assert_eq!(get::<String>(&ring, &rx).unwrap(), big);
        assert_eq!(get::<String>(&ring, &rx).unwrap(), "c");
    }

    #[test]
    fn an_orphaned_socket_record_is_dropped() {
        let (ring, tx, rx) = ring(1 << 20, None);
        let big = "x".repeat(INLINE_MAX + 1);
        // A producer that died after sending, before its ring record: seq 0 is orphaned.
        let orphan = tx
            .outgoing(handle::encode(&"orphan".repeat(20_000)).unwrap())
            .unwrap();
        ring.header.next_seq.store(1, Ordering::Relaxed);
        assert!(tx.send(&orphan, 0, true).unwrap());
        put(&ring, &tx, &big).unwrap();
        assert_eq!(get::<String>(&ring, &rx).unwrap(), big);
        assert!(matches!(rx.recv(true).unwrap(), Incoming::Nothing));
    }

    #[test]
    fn a_bound_and_a_full_ring_refuse_items() {
        let (ring, tx, rx) = ring(1 << 20, Some(3));
        for i in 0..3u64 {
            put(&ring, &tx, &i).unwrap();
        }
        assert!(ring.is_full());
        assert_eq!(put(&ring, &tx, &9u64).unwrap_err().kind(), ErrorKind::Full);
        assert_eq!(get::<u64>(&ring, &rx).unwrap(), 0);
        put(&ring, &tx, &3u64).unwrap();
        let (ring, tx, _rx) = self::ring(1 << 18, None);
        let mut n = 0;
        while put(&ring, &tx, &vec![0u8; 1000]).is_ok() {
            n += 1;
        }
        // 1003 bytes encoded (a 3-byte length), 1008 in whole words, and the header word.
        assert_eq!(n, (1 << 18) / 1016);
    }

    #[test]
    fn a_sleeping_reader_is_woken() {
        let (ring, tx, rx) = ring(1 << 20, None);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                decode::<u64>(
                    ring.pop(&rx, Wait::Until(None), false, "ring", || Ok(()))
                        .unwrap()
                        .unwrap(),
                )
                .unwrap()
            });
            std::thread::sleep(Duration::from_millis(50));
            put(&ring, &tx, &42u64).unwrap();
            assert_eq!(reader.join().unwrap(), 42);
        });
    }

    /// A side's lock, waited for.
    fn held(lock: &Lock) -> LockGuard<'_> {
        Ring::lock(lock, Wait::Until(None)).unwrap().unwrap()
    }

    /// Forks a child that runs `f` and is SIGKILLed at its end; waits for it.
    fn in_killed_child(f: impl FnOnce()) {
        // SAFETY: the child only takes a process-shared lock, stores to shared memory, sends
        // on a socket and kills itself: no allocation, no lock of this process's threads.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            f();
            // SAFETY: raise takes a signal number; SIGKILL ends the child here.
            unsafe { libc::raise(libc::SIGKILL) };
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(1) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    }

    #[test]
    fn a_process_killed_holding_a_lock_wedges_nobody() {
        let (ring, tx, rx) = ring(1 << 20, Some(10));
        let big = "s".repeat(INLINE_MAX + 1);
        put(&ring, &tx, &1u64).unwrap();
        put(&ring, &tx, &big).unwrap();
        // A producer killed in the middle of a put: half a record written past the tail, a
        // sequence number taken and its record sent, nothing committed.
        in_killed_child(|| {
            let guard = held(&ring.tail_lock);
            let tail = pos(ring.header.tail.load(Ordering::Relaxed)) & (ring.capacity - 1);
            let words = ring.data_words(tail as usize, 2).unwrap();
            words[0].store((KIND_INLINE << 32) | 1000, Ordering::Relaxed);
            words[1].store(u64::MAX, Ordering::Relaxed);
            let seq = ring.header.next_seq.load(Ordering::Relaxed);
            ring.header.next_seq.store(seq + 1, Ordering::Relaxed);
            std::mem::forget(guard);
        });
        // Its record, sent on the socket before it died (sent from here: a forked child's
        // copies of the channel's descriptors refuse to work).
        let seq = ring.header.next_seq.load(Ordering::Relaxed) - 1;
        let orphan = tx.outgoing(handle::encode(&"orphan").unwrap()).unwrap();
        assert!(tx.send(&orphan, seq, true).unwrap());
        // A consumer killed holding the head lock, before its commit: it took nothing.
        in_killed_child(|| {
            let guard = held(&ring.head_lock);
            std::mem::forget(guard);
        });
        assert_eq!(ring.len(), 2);
        put(&ring, &tx, &big).unwrap();
        put(&ring, &tx, &3u64).unwrap();
        assert_eq!(get::<u64>(&ring, &rx).unwrap(), 1);
        // A consumer killed after committing a socket entry, before receiving its record:
        // that one item is lost with it.
        in_killed_child(|| {
            let guard = held(&ring.head_lock);
            let head = ring.header.head.load(Ordering::Relaxed);
            ring.header
                .head
                .store(advance(head, 16, 1), Ordering::Release);
            std::mem::forget(guard);
        });
        assert_eq!(ring.len(), 2);
        // The next socket entry's consumer drops the orphan and the lost item's record.
        assert_eq!(get::<String>(&ring, &rx).unwrap(), big);
        assert_eq!(get::<u64>(&ring, &rx).unwrap(), 3);
        assert_eq!(get::<u64>(&ring, &rx).unwrap_err().kind(), ErrorKind::Empty);
        assert!(matches!(rx.recv(true).unwrap(), Incoming::Nothing));
        // The count is exact: the bound still allows 10 items.
        for i in 0..10u64 {
            put(&ring, &tx, &i).unwrap();
        }
        assert_eq!(put(&ring, &tx, &0u64).unwrap_err().kind(), ErrorKind::Full);
    }

    #[test]
    fn a_held_lock_is_waited_for_as_the_operation_allows() {
        let (ring, tx, rx) = ring(1 << 20, None);
        put(&ring, &tx, &1u64).unwrap();
        let item = Outbound::new(&2u64, &tx).unwrap();
        let (holding, held_tx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            // Another thread (as good as a stopped process: it does not let go) holds both.
            let ring = &ring;
            s.spawn(move || {
                let head = held(&ring.head_lock);
                let tail = held(&ring.tail_lock);
                holding.send(()).unwrap();
                let _ = release_rx.recv();
                drop((head, tail));
            });
            held_tx.recv().unwrap();
            let soon = || Wait::Until(Some(Instant::now() + Duration::from_millis(20)));
            let pop = |wait| ring.pop(&rx, wait, true, "ring", || Ok(())).map(drop);
            let push = |wait| ring.push(&item, &tx, wait, true, "ring", || Ok(()));
            // A try does not wait: the item is there, but the lock is taken.
            assert_eq!(pop(Wait::No).unwrap_err().kind(), ErrorKind::Empty);
            assert_eq!(push(Wait::No).unwrap_err().kind(), ErrorKind::Full);
            // A timed wait waits for the lock until its deadline, then times out.
            let t = Instant::now();
            assert_eq!(pop(soon()).unwrap_err().kind(), ErrorKind::Timeout);
            assert_eq!(push(soon()).unwrap_err().kind(), ErrorKind::Timeout);
            assert!(
                t.elapsed() >= Duration::from_millis(40),
                "{:?}",
                t.elapsed()
            );
            // An untimed one waits as long as it takes.
            let got = s.spawn(|| {
                decode::<u64>(
                    ring.pop(&rx, Wait::Until(None), false, "ring", || Ok(()))
                        .unwrap()
                        .unwrap(),
                )
                .unwrap()
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(!got.is_finished());
            release.send(()).unwrap();
            assert_eq!(got.join().unwrap(), 1);
        });
        push(&ring, &tx, &item);
        assert_eq!(get::<u64>(&ring, &rx).unwrap(), 2);

        fn push(ring: &Ring, tx: &Endpoint, item: &Outbound) {
            ring.push(item, tx, Wait::No, false, "ring", || Ok(()))
                .unwrap();
        }
    }

    #[test]
    fn a_record_that_claims_more_than_is_committed_is_corrupt() {
        let (ring, tx, rx) = ring(1 << 18, None);
        for (kind, len) in [(KIND_PAD, 0), (KIND_INLINE, 64), (KIND_SOCKET, 8)] {
            put(&ring, &tx, &1u8).unwrap();
            // The committed record (a header word and one word) rewritten by a scribbler.
            let head = pos(ring.header.head.load(Ordering::Relaxed)) & (ring.capacity - 1);
            let words = ring.data_words(head as usize, 1).unwrap();
            words[0].store((kind << 32) | len, Ordering::Relaxed);
            let err = match ring.try_pop(&rx) {
                Err(err) | Ok(Some(Err(err))) => err,
                Ok(_) => panic!("kind {kind}: a record taken"),
            };
            assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
            // A sane record put over it is taken again once the head is moved by hand.
            let tail = ring.header.tail.load(Ordering::Relaxed);
            ring.header.head.store(tail, Ordering::Relaxed);
            ring.header.tail_seen.store(tail, Ordering::Relaxed);
        }
        put(&ring, &tx, &9u8).unwrap();
        assert_eq!(get::<u8>(&ring, &rx).unwrap(), 9);
    }

    /// Waits in `push` or `pop` for at most 2 s, as a queue does (in slices); how it ended and
    /// how long it took.
    fn waited<R>(f: impl FnOnce(Wait) -> Result<R>) -> (Result<(), ErrorKind>, Duration) {
        let t = Instant::now();
        let r = f(Wait::Until(Some(Instant::now() + Duration::from_secs(2))));
        (r.map(drop).map_err(|e| e.kind()), t.elapsed())
    }

    #[test]
    fn a_consumer_killed_between_commit_and_wake_up_leaves_nobody_asleep() {
        let (ring, tx, _rx) = ring(1 << 20, Some(1));
        put(&ring, &tx, &1u64).unwrap();
        std::thread::scope(|s| {
            let producer = s.spawn(|| {
                let item = Outbound::new(&2u64, &tx).unwrap();
                waited(|wait| ring.push(&item, &tx, wait, true, "ring", || Ok(())))
            });
            std::thread::sleep(Duration::from_millis(100));
            // A consumer that commits its take and dies before its wake-up call.
            in_killed_child(|| {
                let guard = held(&ring.head_lock);
                let head = ring.header.head.load(Ordering::Relaxed);
                ring.header
                    .head
                    .store(advance(head, 16, 1), Ordering::Release);
                drop(guard);
            });
            // (The producer may have put its item already: no look at the length here.)
            let (r, took) = producer.join().unwrap();
            assert_eq!(
                r,
                Ok(()),
                "the producer slept {took:?} with room in the ring"
            );
            assert!(took < Duration::from_secs(1), "{took:?}");
        });
    }

    #[test]
    fn a_producer_killed_between_commit_and_wake_up_leaves_nobody_asleep() {
        let (ring, tx, rx) = ring(1 << 20, None);
        let item = Outbound::new(&7u64, &tx).unwrap();
        let Outbound::Inline(bytes) = &item else {
            panic!("a u64 is inline")
        };
        std::thread::scope(|s| {
            let consumer = s.spawn(|| waited(|wait| ring.pop(&rx, wait, true, "ring", || Ok(()))));
            std::thread::sleep(Duration::from_millis(100));
            // A producer that commits its record and dies before its wake-up call.
            in_killed_child(|| {
                let guard = held(&ring.tail_lock);
                let tail = ring.header.tail.load(Ordering::Relaxed);
                let at = (pos(tail) & (ring.capacity - 1)) as usize;
                let words = ring.data_words(at, 2).unwrap();
                words[0].store((KIND_INLINE << 32) | bytes.len() as u64, Ordering::Relaxed);
                let mut word = [0u8; 8];
                word[..bytes.len()].copy_from_slice(bytes);
                words[1].store(u64::from_ne_bytes(word), Ordering::Relaxed);
                ring.header
                    .tail
                    .store(advance(tail, 16, 1), Ordering::Release);
                drop(guard);
            });
            let (r, took) = consumer.join().unwrap();
            assert_eq!(
                r,
                Ok(()),
                "the consumer slept {took:?} with an item in the ring"
            );
            assert!(took < Duration::from_secs(1), "{took:?}");
        });
    }
}
