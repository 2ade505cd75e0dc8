//! A pool worker's rings: its tasks (parent to worker) and its replies (worker to parent) go
//! through two shared-memory rings of the queues' design (`channel::ring`: robust locks, a
//! commit that is one store), with a doorbell each way that is rung only when the other side
//! sleeps. A message larger than [`RECORD_MAX`], or with byte blocks, has its body in the
//! worker's bulk area (`bulk`, after the rings in the same region) and only its header and the
//! body's descriptor in its ring record (flagged by `IN_BULK` in the record's header length).
//! The worker's control socket stays beside them, for what neither carries: messages with
//! descriptors, bodies larger than a bulk slot or met by two slots in use, the worker's `Ready`
//! and initializer failure, and every end of file.
//!
//! # Two messages in flight each way at most
//!
//! The pool hands a worker at most two tasks at a time (one running, one queued behind it, see
//! below): a ring holds at most two messages, which its 256 KiB always take, so a put never
//! finds it full (a put that does, from a corrupt ring, falls back on the socket, or for a
//! queued task is not made). Which way a message went does not matter to its reader, which looks at both.
//!
//! # Tasks queued behind a running one
//!
//! The driver may put a second task in the ring while the worker runs one (see
//! `Driver::dispatch`), so that the worker goes from one to the next without waiting for the
//! driver. Such a task names a claim word (`TaskHeader::claim`), which holds its ticket: the
//! worker takes the word (ticket to 0) before it runs the task; whoever wants the task not to
//! run (a caller's `cancel`, or the driver before it kills the worker for the task it runs)
//! revokes it (ticket to its complement). One compare-and-swap each, so exactly one of them
//! wins: a revoked task never runs (the worker answers it `Cancelled` unrun), and a claimed
//! one is known to run.
//!
//! # Doorbells
//!
//! A reader that finds nothing spins a few microseconds (the writer is often running on the
//! other core), then says it sleeps (a word in the region), looks once more, and polls its
//! doorbell (an `eventfd`) beside the socket and, for the parent, the worker's exit descriptor:
//! so the pool's driver still waits on all its workers at once, their deaths and its deadlines
//! included, without a busy loop. A writer rings the doorbell after its commit only if the
//! reader said it sleeps (both sides store, then load, with sequential consistency: one of them
//! sees the other).
//!
//! # Processes that die
//!
//! A ring is the worker's alone: when the worker dies, its ring is dropped with it (whatever
//! lock it held, whatever half-written record it left), and the worker that replaces it gets a
//! new region. What the parent reads from the ring is the worker's word, checked like what it
//! reads from the socket: [`decode_record`] bounds every length, and a reply must carry its
//! task's ticket.

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::bulk::{self, Bulk, InPlace, Way};
use crate::channel::ring::{Outbound, Ring, Taken, INLINE_MAX};
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{Encoded, SharedFd};
use crate::shm::Region;
use crate::sys;

/// Data bytes of each ring (the least a ring may have).
const RING_BYTES: usize = 256 << 10;
/// Where the doorbell words lie in the region, after the two rings.
const BELLS_AT: usize = 2 * Ring::size(RING_BYTES);
/// Where the bulk area lies (see `bulk`), after the doorbell words.
const BULK_AT: usize = (BELLS_AT + 4096).next_multiple_of(4096);
/// The flag, in a record's header length, of a record whose body is in the bulk area: what
/// follows its header is the area's descriptor of the body (see `bulk`).
const IN_BULK: u32 = 1 << 31;
/// The doorbell words: the worker sleeps (waiting for a task), the parent sleeps (waiting
/// for a reply); and the worker takes no more tasks (it is about to abort).
const WORKER_SLEEPS: usize = 0;
const PARENT_SLEEPS: usize = 1;
const WORKER_CLOSED: usize = 2;
/// The claim words of tasks queued behind a running one (see [`Rings::claim`]): two, used in
/// turn, since a worker holds at most one task queued behind the one it runs.
const CLAIMS: usize = 2;
/// How many of the words after the rings are in use: the three above, then the claims.
const WORDS: usize = 3 + CLAIMS;

/// The largest record a ring carries: a message's encoded header and payload, and their
/// 4-byte split. Larger ones go on the socket.
pub(crate) const RECORD_MAX: usize = INLINE_MAX;

/// A reader looks for a message a few microseconds before it sleeps, as the queues' readers.
pub(crate) use crate::channel::ring::spin;

thread_local! {
    /// The record being put: reused, no allocation per message.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a worker is sent as its first message: its rings' region and its two doorbells.
#[derive(Deserialize)]
pub(crate) struct Setup {
    region: Region,
    /// Rung by the parent when it put a task while the worker sleeps.
    to_worker: SharedFd,
    /// Rung by the worker when it put a reply while the parent sleeps.
    to_parent: SharedFd,
}

/// A [`Setup`] as the parent sends it (the same fields, borrowed).
#[derive(Serialize)]
pub(crate) struct SetupOut<'a> {
    region: &'a Region,
    to_worker: &'a SharedFd,
    to_parent: &'a SharedFd,
}

/// One worker's two rings and doorbells, as each side holds them.
pub(crate) struct Rings {
    tasks: Ring,
    replies: Ring,
    bulk: Bulk,
    region: Arc<Region>,
    to_worker: SharedFd,
    to_parent: SharedFd,
}

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rings").field("tasks", &self.tasks).finish()
    }
}

fn corrupt(what: &str) -> Error {
    Error::new(
        ErrorKind::Codec,
        format!("corrupt message in a pool worker's ring: {what}"),
    )
}

/// The message a ring record holds: its header and its body (a payload only: messages with
/// descriptors never go in a ring, and a record whose body is in a bulk area is refused here).
/// Every length is checked against the record.
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
pub(crate) fn decode_record<H: DeserializeOwned>(record: &[u8]) -> Result<(H, Encoded)> {
    decode_in(record, None).map(|(header, body, _)| (header, body))
}

/// Whether the body of a message of `way` is filled in after its record is committed: a task
/// large enough for its reader to fault in huge pages meanwhile (see `bulk::Bulk::read`).
fn fill_after(way: Way, body: &Encoded) -> bool {
    way == Way::Tasks
        && body.bytes.len() + body.blocks.iter().map(|b| b.len()).sum::<usize>()
            >= crate::wire::HUGE_PAGES_FROM
}

/// A bulk area, the way its records go, how to wait for a body filled in after its record,
/// and whether a payload is read in place.
type BulkOf<'a> = (&'a Bulk, Way, Option<bulk::Wait<'a>>, bool);

/// A message, and its payload when it is read in place in a bulk slot (then the message's own
/// payload is empty).
type Message<H> = (H, Encoded, Option<InPlace>);

/// The message a ring record holds, its body in the record or in `bulk`'s area (whose slots
/// of `way` the record may name, see `bulk`). Every length is checked against the record or
/// the area.
fn decode_in<H: DeserializeOwned>(record: &[u8], bulk: Option<BulkOf<'_>>) -> Result<Message<H>> {
    let Some((split, rest)) = record.split_first_chunk::<4>() else {
        return Err(corrupt("a record shorter than its header length"));
    };
    let split = u32::from_le_bytes(*split);
    let header_len = (split & !IN_BULK) as usize;
    if header_len > rest.len() {
        return Err(corrupt(&format!(
            "a header of {header_len} bytes in a record of {}",
            record.len()
        )));
    }
    let (header, payload) = rest.split_at(header_len);
    let header = codec::decode::<H>(header)?;
    if split & IN_BULK != 0 {
        let Some((bulk, way, wait, in_place)) = bulk else {
            return Err(corrupt("a record whose body is in a bulk area it has not"));
        };
        let (body, view) = bulk.read(way, payload, wait, in_place)?;
        return Ok((header, body, view));
    }
    let mut bytes = crate::spare::take_or_new(payload.len());
    bytes.extend_from_slice(payload);
    Ok((
        header,
        Encoded {
            bytes,
            fds: Vec::new(),
            blocks: Vec::new(),
        },
        None,
    ))
}

/// Encodes the record of a message into `out`; `false` when it cannot go in a ring
/// (descriptors, blocks, or too large).
fn encode_record<H: Serialize>(header: &H, body: &Encoded, out: &mut Vec<u8>) -> Result<bool> {
    if !body.fds.is_empty() || !body.blocks.is_empty() || body.bytes.len() > RECORD_MAX {
        return Ok(false);
    }
    out.clear();
    out.extend_from_slice(&[0; 4]);
    codec::encode_into(header, out)?;
    let header_len = out.len() - 4;
    if header_len + body.bytes.len() + 4 > RECORD_MAX {
        return Ok(false);
    }
    out[..4].copy_from_slice(&(header_len as u32).to_le_bytes());
    out.extend_from_slice(&body.bytes);
    Ok(true)
}

/// The bytes of a record taken from a ring.
fn record_bytes(taken: &Taken) -> Result<&[u8]> {
    match taken {
        Taken::Small(bytes, len) => bytes
            .get(..*len)
            .ok_or_else(|| corrupt("a record longer than its buffer")),
        Taken::Inline(bytes) => Ok(bytes),
        Taken::Socket(_) => Err(corrupt("a socket record")),
    }
}

/// A message put in a ring whose body is still to be copied into its bulk slot (a large task,
/// whose worker makes its buffers meanwhile): copied in when this drops, then the slot is the
/// reader's to free. Nothing else does it: a caller drops this as soon as it can.
pub(crate) struct Unfilled<'a> {
    rings: &'a Rings,
    lease: Option<bulk::Lease<'a>>,
    body: &'a Encoded,
    bell: (usize, &'a SharedFd),
}

impl Drop for Unfilled<'_> {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let (sleeper, bell) = self.bell;
        // The worker copies out behind: a stripe in wakes it if it fell asleep. The copy
        // cannot fail (the body fits the slot: `Bulk::write` checked); the slot's word says
        // `FILLED` whatever happens, so its reader never waits for ever.
        let _ = lease.fill(self.body, &|| self.rings.ring_bell(sleeper, bell));
        self.rings.ring_bell(sleeper, bell);
        lease.committed();
    }
}

impl Rings {
    /// New rings for a worker about to be adopted.
    pub(crate) fn create() -> Result<Rings> {
        // Without the address space for a bulk area (a limit on it, `ulimit -v`), rings with
        // none: large messages then go on the socket.
        Rings::create_with(bulk::SLOT_BYTES).or_else(|_| Rings::create_with(0))
    }

    /// New rings whose bulk area has slots of `slot_bytes` ([`bulk::SLOT_BYTES`]; less for
    /// the fuzz harness, and 0 when there is no room for an area).
    fn create_with(slot_bytes: usize) -> Result<Rings> {
        let region = Arc::new(Region::new(
            "pool-rings",
            BULK_AT + bulk::area_bytes(slot_bytes),
        )?);
        let tasks = Ring::create(&region, 0, RING_BYTES, None)?;
        let replies = Ring::create(&region, Ring::size(RING_BYTES), RING_BYTES, None)?;
        let bulk = Bulk::with_slots(Arc::clone(&region), BULK_AT, slot_bytes)?;
        let bell = || {
            sys::eventfd()
                .map(SharedFd::new)
                .map_err(|err| Error::io("cannot make a pool worker's doorbell", err))
        };
        Ok(Rings {
            tasks,
            replies,
            bulk,
            region,
            to_worker: bell()?,
            to_parent: bell()?,
        })
    }

    /// What the worker is sent of its rings.
    pub(crate) fn setup(&self) -> SetupOut<'_> {
        SetupOut {
            region: &self.region,
            to_worker: &self.to_worker,
            to_parent: &self.to_parent,
        }
    }

    /// The worker's side of the rings it was sent.
    pub(crate) fn open(setup: Setup) -> Result<Rings> {
        let region = Arc::new(setup.region);
        if region.len() < BULK_AT + bulk::area_bytes(0) {
            return Err(corrupt("a region too small"));
        }
        // The slots the parent made room for (see `create`).
        let slot_bytes = bulk::slot_bytes_in(region.len() - BULK_AT);
        Ok(Rings {
            tasks: Ring::open(&region, 0)?,
            replies: Ring::open(&region, Ring::size(RING_BYTES))?,
            bulk: Bulk::with_slots(Arc::clone(&region), BULK_AT, slot_bytes)?,
            region,
            to_worker: setup.to_worker,
            to_parent: setup.to_parent,
        })
    }

    fn bell_word(&self, which: usize) -> Option<&AtomicU64> {
        self.region
            .words(BELLS_AT, WORDS)
            .ok()
            .map(|words| &words[which])
    }

    /// The claim word `slot` (1 or 2; 0 names none).
    fn claim_word(&self, slot: u8) -> Option<&AtomicU64> {
        match slot as usize {
            0 => None,
            n if n <= CLAIMS => self.bell_word(WORKER_CLOSED + n),
            _ => None,
        }
    }

    /// Parent: the task of `ticket`, about to be put behind a running one, may be claimed
    /// through word `slot` (see the module docs).
    pub(crate) fn offer(&self, slot: u8, ticket: u64) {
        if let Some(word) = self.claim_word(slot) {
            word.store(ticket, Ordering::SeqCst);
        }
    }

    /// Parent (the driver, or a caller's `cancel`): the queued task of `ticket` in word `slot`
    /// will not run; `false` when the worker has already claimed it (it runs or ran).
    pub(crate) fn revoke(&self, slot: u8, ticket: u64) -> bool {
        let Some(word) = self.claim_word(slot) else {
            return false;
        };
        match word.compare_exchange(ticket, !ticket, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => true,
            Err(now) => now == !ticket,
        }
    }

    /// Parent: whether the queued task of `ticket` in word `slot` is still unclaimed (neither
    /// run nor revoked).
    pub(crate) fn unclaimed(&self, slot: u8, ticket: u64) -> bool {
        self.claim_word(slot)
            .is_some_and(|word| word.load(Ordering::SeqCst) == ticket)
    }

    /// Parent: whether the worker claimed the queued task of `ticket` in word `slot` (it
    /// runs or ran it).
    pub(crate) fn claimed(&self, slot: u8, ticket: u64) -> bool {
        self.claim_word(slot).is_some_and(|word| {
            let now = word.load(Ordering::SeqCst);
            now != ticket && now != !ticket
        })
    }

    /// Worker: claims the task of `ticket` before running it; `false` when it was revoked (it
    /// must not run). A task that names no claim word runs.
    pub(crate) fn claim(&self, slot: u8, ticket: u64) -> bool {
        let Some(word) = self.claim_word(slot) else {
            return true;
        };
        match word.compare_exchange(ticket, 0, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => true,
            Err(now) => now != !ticket,
        }
    }

    /// Puts a message in `ring` (its body in the record, or in a slot of `way` of the bulk area)
    /// if it can go there (`None`: it cannot); rings `bell` if the reader sleeps. The body of a
    /// large task is copied in after the commit, when the [`Unfilled`] returned drops.
    fn put<'a, H: Serialize>(
        &'a self,
        ring: &Ring,
        way: Way,
        header: &H,
        body: &'a Encoded,
        (sleeper, bell): (usize, &'a SharedFd),
    ) -> Result<Option<Unfilled<'a>>> {
        let (put, unfilled) =
            SCRATCH.with(|scratch| -> Result<(bool, Option<bulk::Lease<'_>>)> {
                let Ok(mut scratch) = scratch.try_borrow_mut() else {
                    // Only if a header's `Serialize` sent a message itself: the socket takes it.
                    return Ok((false, None));
                };
                let lease = if encode_record(header, body, &mut scratch)? {
                    None
                } else {
                    // Too large for a record, or with blocks: its body in the bulk area, when it
                    // fits there and a slot is free.
                    if !self.bulk.fits(body) {
                        return Ok((false, None));
                    }
                    scratch.clear();
                    scratch.extend_from_slice(&[0; 4]);
                    codec::encode_into(header, &mut scratch)?;
                    let header_len = scratch.len() - 4;
                    if scratch.len() + bulk::descriptor_len(body) > RECORD_MAX {
                        return Ok((false, None));
                    }
                    scratch[..4].copy_from_slice(&(header_len as u32 | IN_BULK).to_le_bytes());
                    let Some(lease) = self.bulk.write(way, body, &mut scratch)? else {
                        return Ok((false, None));
                    };
                    // A reply is filled in before its record is committed: the parent never waits
                    // for a worker. A large task after: the worker makes its buffers meanwhile.
                    if !fill_after(way, body) {
                        lease.fill(body, &|| {})?;
                    }
                    Some(lease)
                };
                let item = Outbound::Inline(std::mem::take(&mut *scratch));
                let put = ring.try_push_inline(&item);
                if let Outbound::Inline(bytes) = item {
                    *scratch = bytes;
                }
                // Not committed: the lease, dropped, frees the slot.
                Ok(match put {
                    Ok(true) => (true, lease),
                    Ok(false) => (false, None),
                    Err(err) => return Err(err),
                })
            })?;
        if !put {
            return Ok(None);
        }
        self.ring_bell(sleeper, bell);
        let lease = match unfilled {
            Some(lease) if fill_after(way, body) => Some(lease),
            Some(lease) => {
                // Filled in before the commit: the slot is the reader's to free.
                lease.committed();
                None
            }
            None => None,
        };
        Ok(Some(Unfilled {
            rings: self,
            lease,
            body,
            bell: (sleeper, bell),
        }))
    }

    /// Rings `bell` if the reader whose word is `sleeper` says it sleeps. After the commit (or
    /// the filling of a task's body): the reader stores its word, then looks at the ring or
    /// the slot (see the module docs).
    fn ring_bell(&self, sleeper: usize, bell: &SharedFd) {
        fence(Ordering::SeqCst);
        if self
            .bell_word(sleeper)
            .is_some_and(|word| word.load(Ordering::SeqCst) != 0)
        {
            sys::eventfd_signal(bell.as_fd());
        }
    }

    /// Parent: puts a task in the task ring if it can go there (`false`: send it on the socket).
    /// A worker that said it takes no more tasks gets none here: on the socket, which it shut,
    /// the task fails at once (EPIPE) and goes to another worker instead of dying with it.
    pub(crate) fn put_task<H: Serialize>(&self, header: &H, body: &Encoded) -> Result<bool> {
        Ok(self.put_task_unfilled(header, body)?.is_some())
    }

    /// Parent: [`put_task`](Self::put_task), but a large task's body is copied into its bulk
    /// slot only when the [`Unfilled`] returned drops (`None`: not put), so that the caller can
    /// first let go of its locks (the worker waits for the body meanwhile).
    pub(crate) fn put_task_unfilled<'a, H: Serialize>(
        &'a self,
        header: &H,
        body: &'a Encoded,
    ) -> Result<Option<Unfilled<'a>>> {
        if self
            .bell_word(WORKER_CLOSED)
            .is_some_and(|word| word.load(Ordering::SeqCst) != 0)
        {
            return Ok(None);
        }
        self.put(
            &self.tasks,
            Way::Tasks,
            header,
            body,
            (WORKER_SLEEPS, &self.to_worker),
        )
    }

    /// Worker: what says, from a panic hook about to abort, that this worker takes no more
    /// tasks (before it shuts its socket's reading side and sends its last reply).
    pub(crate) fn closer(&self) -> impl Fn() + Send + Sync + 'static {
        let region = Arc::clone(&self.region);
        move || {
            if let Ok(words) = region.words(BELLS_AT, WORDS) {
                words[WORKER_CLOSED].store(1, Ordering::SeqCst);
            }
        }
    }

    /// Worker: puts a reply in the reply ring if it can go there (`false`: send it on the
    /// socket).
    pub(crate) fn put_reply<H: Serialize>(&self, header: &H, body: &Encoded) -> Result<bool> {
        let put = self.put(
            &self.replies,
            Way::Replies,
            header,
            body,
            (PARENT_SLEEPS, &self.to_parent),
        )?;
        Ok(put.is_some())
    }

    fn take<H: DeserializeOwned>(
        &self,
        ring: &Ring,
        bulk: BulkOf<'_>,
    ) -> Result<Option<Message<H>>> {
        let Some(taken) = ring.try_pop_inline()? else {
            return Ok(None);
        };
        let message = decode_in(record_bytes(&taken)?, Some(bulk))?;
        if let Taken::Inline(bytes) = taken {
            crate::spare::give(bytes);
        }
        Ok(Some(message))
    }

    /// Parent: the reply in the ring, if one is there. An error: the ring is corrupt.
    pub(crate) fn take_reply<H: DeserializeOwned>(&self) -> Result<Option<(H, Encoded)>> {
        let taken = self.take(&self.replies, (&self.bulk, Way::Replies, None, false))?;
        Ok(taken.map(|(header, body, _)| (header, body)))
    }

    /// Worker: the task in the ring, if one is there. An error: the ring is corrupt, or the
    /// parent (whose control socket is `control`) went away before it filled in the task's
    /// body in the bulk area.
    #[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
    pub(crate) fn take_task<H: DeserializeOwned>(
        &self,
        control: BorrowedFd<'_>,
    ) -> Result<Option<(H, Encoded)>> {
        let taken = self.take_task_in(control, false)?;
        Ok(taken.map(|(header, body, _)| (header, body)))
    }

    /// Worker: [`take_task`](Self::take_task), but a payload in the bulk area is read in
    /// place (its slot stays taken until the view is dropped): decoded from there, it is
    /// copied once, into the task's arguments.
    pub(crate) fn take_task_in_place<H: DeserializeOwned>(
        &self,
        control: BorrowedFd<'_>,
    ) -> Result<Option<Message<H>>> {
        self.take_task_in(control, true)
    }

    /// Worker: the task in the ring, its body in the bulk area waited for as the parent fills
    /// it in, its payload read in place or not.
    fn take_task_in<H: DeserializeOwned>(
        &self,
        control: BorrowedFd<'_>,
        in_place: bool,
    ) -> Result<Option<Message<H>>> {
        let wait = |word: &AtomicU64, progress: &AtomicU64, mark: u64| {
            self.wait_filled(word, progress, mark, control)
        };
        self.take(&self.tasks, (&self.bulk, Way::Tasks, Some(&wait), in_place))
    }

    /// Worker: waits until the parent has filled in the body of a task up to `mark`, as the
    /// slot's `progress` word says, or whole, as its `word` says (it fills it in right after it
    /// committed the record, see `bulk`): spins while the parent's copy moves on, then sleeps
    /// on the doorbell, which the parent rings after each stripe and after the filling if the
    /// worker said it sleeps, and on the control socket, whose end means the parent is gone.
    fn wait_filled(
        &self,
        word: &AtomicU64,
        progress: &AtomicU64,
        mark: u64,
        control: BorrowedFd<'_>,
    ) -> Result<()> {
        let filled = || {
            progress.load(Ordering::Acquire) >= mark || word.load(Ordering::SeqCst) == bulk::FILLED
        };
        while !filled() {
            let seen = progress.load(Ordering::Relaxed);
            if spin(filled) {
                break;
            }
            if progress.load(Ordering::Relaxed) != seen {
                // The parent is copying: its next stripe is near.
                continue;
            }
            self.worker_sleeps(true);
            if !filled() {
                let mut fds = [
                    libc::pollfd {
                        fd: control.as_raw_fd(),
                        events: libc::POLLRDHUP,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: self.worker_bell().as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                let polled = sys::poll_many(&mut fds, None);
                self.worker_sleeps(false);
                polled.map_err(|err| Error::io("cannot wait for a task's body", err))?;
                if fds[0].revents != 0 && !filled() {
                    return Err(Error::new(
                        ErrorKind::Io,
                        "the pool closed this worker's socket before it filled in a task",
                    ));
                }
            }
            self.worker_sleeps(false);
            sys::eventfd_drain(self.worker_bell());
        }
        Ok(())
    }

    /// Whether a reply waits in the ring.
    pub(crate) fn reply_waiting(&self) -> bool {
        self.replies.has_records()
    }

    /// Whether a task waits in the ring.
    pub(crate) fn task_waiting(&self) -> bool {
        self.tasks.has_records()
    }

    fn set(&self, which: usize, sleeps: bool) {
        if let Some(word) = self.bell_word(which) {
            word.store(u64::from(sleeps), Ordering::SeqCst);
        }
    }

    /// Parent: about to sleep until a reply (`true`), or awake again (`false`). Before a sleep,
    /// look at the ring once more: a reply put before this store rang no bell.
    pub(crate) fn parent_sleeps(&self, sleeps: bool) {
        self.set(PARENT_SLEEPS, sleeps);
    }

    /// Worker: about to sleep until a task, or awake again (as [`parent_sleeps`](Self::parent_sleeps)).
    pub(crate) fn worker_sleeps(&self, sleeps: bool) {
        self.set(WORKER_SLEEPS, sleeps);
    }

    /// The parent's doorbell, to poll (readable once rung; drain it after).
    pub(crate) fn parent_bell(&self) -> BorrowedFd<'_> {
        self.to_parent.as_fd()
    }

    /// The worker's doorbell.
    pub(crate) fn worker_bell(&self) -> BorrowedFd<'_> {
        self.to_worker.as_fd()
    }
}

/// For the fuzz harness: `input` as another process could leave it in a ring (a record's header
/// word, then its bytes, in place of a record committed there), read back as the parent reads a
/// reply and as a worker reads a task.
#[cfg(feature = "fuzzing")]
pub(crate) fn read_forged<R: DeserializeOwned, T: DeserializeOwned>(input: &[u8]) {
    // Bulk slots of 16 KiB: a body is read out of the area whole, as long as its descriptor
    // says (the area holds that many bytes), and the harness bounds each input's memory.
    let Ok(rings) = Rings::create_with(16 << 10) else {
        return;
    };
    // A worker reading a task waits for its body while the parent's socket is open: here it
    // is closed (the body of a forged record is never filled in).
    let Ok((control, _)) = std::os::unix::net::UnixStream::pair() else {
        return;
    };
    // A record as long as the input's payload commits the tail past the bytes written below.
    let len = input.len().saturating_sub(12).min(RECORD_MAX - 4);
    let body = Encoded {
        bytes: vec![0; len],
        ..Encoded::default()
    };
    for (ring, base) in [(&rings.replies, Ring::size(RING_BYTES)), (&rings.tasks, 0)] {
        if !matches!(
            rings.put(
                ring,
                Way::Replies,
                &(),
                &body,
                (PARENT_SLEEPS, &rings.to_parent)
            ),
            Ok(Some(_))
        ) {
            return;
        }
        let forged = &input[..input.len().min(8 + RECORD_MAX)];
        if rings.region.write_bytes(base + 4096, forged).is_err() {
            return;
        }
    }
    let _ = rings.take_reply::<R>();
    let _ = rings.take_reply::<R>();
    if let Ok(Some((_, task))) = rings.take_task::<T>(control.as_fd()) {
        let _ = codec::decode::<(u64, String, Vec<u32>)>(&task.bytes);
    }
    let _ = decode_record::<R>(input);
    let _ = decode_record::<T>(input);
}

/// For the fuzz harness: a ring record as [`read_forged`] takes it (its header word, then the
/// record), holding `header` and `payload`.
#[cfg(feature = "fuzzing")]
pub(crate) fn forged_seed<H: Serialize>(header: &H, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::new();
    let body = Encoded {
        bytes: payload.to_vec(),
        ..Encoded::default()
    };
    if !matches!(encode_record(header, &body, &mut record), Ok(true)) {
        return Vec::new();
    }
    // An inline record (kind 1) of that length, as `channel::ring` writes it.
    let mut out = ((1u64 << 32) | record.len() as u64).to_ne_bytes().to_vec();
    out.extend_from_slice(&record);
    out
}

/// For the fuzz harness: a record as [`read_forged`] takes it whose body (of `payload` bytes
/// and a block of `block` bytes) is in bulk slot `slot`.
#[cfg(feature = "fuzzing")]
pub(crate) fn forged_bulk_seed<H: Serialize>(
    header: &H,
    slot: u32,
    payload: u64,
    block: u64,
) -> Vec<u8> {
    let mut record = vec![0; 4];
    if codec::encode_into(header, &mut record).is_err() {
        return Vec::new();
    }
    let header_len = (record.len() - 4) as u32;
    record[..4].copy_from_slice(&(header_len | IN_BULK).to_le_bytes());
    record.extend_from_slice(&slot.to_le_bytes());
    record.extend_from_slice(&1u32.to_le_bytes());
    record.extend_from_slice(&payload.to_le_bytes());
    record.extend_from_slice(&block.to_le_bytes());
    let mut out = ((1u64 << 32) | record.len() as u64).to_ne_bytes().to_vec();
    out.extend_from_slice(&record);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Block;
    use std::time::Instant;

    #[test]
    fn a_record_round_trips_and_garbage_is_refused() {
        let body = Encoded {
            bytes: vec![1, 2, 3],
            ..Encoded::default()
        };
        let mut out = Vec::new();
        assert!(encode_record(&(7u64, "x".to_string()), &body, &mut out).unwrap());
        let (header, decoded) = decode_record::<(u64, String)>(&out).unwrap();
        assert_eq!(header, (7, "x".to_string()));
        assert_eq!(decoded.bytes, [1, 2, 3]);
        for bad in [&[][..], &[1, 0], &[9, 0, 0, 0, 1], &[0xff; 12]] {
            assert!(decode_record::<(u64, String)>(bad).is_err());
        }
        let big = Encoded {
            bytes: vec![0; RECORD_MAX],
            ..Encoded::default()
        };
        assert!(!encode_record(&(), &big, &mut out).unwrap());
    }

    /// A parent's rings and the worker's view of them, as a worker opens them from its setup.
    fn parent_and_worker() -> (Rings, Rings) {
        let parent = Rings::create().unwrap();
        let sent = crate::handle::encode(&parent.setup()).unwrap();
        let setup =
            crate::handle::with_incoming(sent.fds, || codec::decode::<Setup>(&sent.bytes)).unwrap();
        let worker = Rings::open(setup).unwrap();
        (parent, worker)
    }

    #[test]
    fn both_sides_see_the_messages_in_order() {
        let (parent, worker) = parent_and_worker();
        let body = Encoded {
            bytes: vec![5; 1000],
            ..Encoded::default()
        };
        for i in 0..2000u64 {
            assert!(parent.put_task(&i, &body).unwrap());
            assert!(worker.task_waiting());
            let (n, task) = worker
                .take_task::<u64>(worker.parent_bell())
                .unwrap()
                .unwrap();
            assert_eq!((n, task.bytes.len()), (i, 1000));
            assert!(worker
                .take_task::<u64>(worker.parent_bell())
                .unwrap()
                .is_none());
            assert!(worker.put_reply(&(i + 1), &Encoded::default()).unwrap());
            assert_eq!(parent.take_reply::<u64>().unwrap().unwrap().0, i + 1);
        }
        // Bodies too large for a record, or with blocks, go through the bulk area: a task
        // filled in while the worker may already be looking at its record.
        let large = Encoded {
            bytes: (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect(),
            blocks: vec![Block::from(vec![7; 3]), Block::from(vec![8; 5 << 20])],
            ..Encoded::default()
        };
        std::thread::scope(|scope| {
            let putter = scope.spawn(|| parent.put_task(&9u64, &large).unwrap());
            let (n, task) = loop {
                if let Some(task) = worker.take_task::<u64>(worker.parent_bell()).unwrap() {
                    break task;
                }
            };
            assert!(putter.join().unwrap());
            assert_eq!(n, 9);
            assert!(task.bytes == large.bytes && task.blocks == large.blocks);
        });
        assert!(worker.put_reply(&10u64, &large).unwrap());
        let (n, reply) = parent.take_reply::<u64>().unwrap().unwrap();
        assert!(n == 10 && reply.bytes == large.bytes && reply.blocks == large.blocks);
        // A sleeper's bell rings; an awake one's does not.
        parent.parent_sleeps(true);
        assert!(worker.put_reply(&1u8, &Encoded::default()).unwrap());
        assert_eq!(
            sys::poll_one(parent.parent_bell(), sys::READABLE, Some(Instant::now())).unwrap(),
            1
        );
        sys::eventfd_drain(parent.parent_bell());
        parent.parent_sleeps(false);
        assert!(worker.put_reply(&2u8, &Encoded::default()).unwrap());
        assert_eq!(
            sys::poll_one(parent.parent_bell(), sys::READABLE, Some(Instant::now())).unwrap(),
            0
        );
    }

    /// A task record committed whose body the parent has not filled in yet: the worker waits
    /// for it (woken by its doorbell once filled), and gives up when the parent's socket ends.
    #[test]
    fn a_worker_waits_for_a_task_body_until_filled_or_the_parent_is_gone() {
        let (parent, worker) = parent_and_worker();
        let body = Encoded {
            bytes: vec![3; 200 << 10],
            ..Encoded::default()
        };
        let commit_unfilled = || {
            let mut record = vec![0; 4];
            codec::encode_into(&7u64, &mut record).unwrap();
            let header_len = record.len() as u32 - 4;
            record[..4].copy_from_slice(&(header_len | IN_BULK).to_le_bytes());
            let lease = parent
                .bulk
                .write(Way::Tasks, &body, &mut record)
                .unwrap()
                .unwrap();
            assert!(parent
                .tasks
                .try_push_inline(&Outbound::Inline(record))
                .unwrap());
            lease
        };
        let (control, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let lease = commit_unfilled();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                lease.fill(&body, &|| {}).unwrap();
                sys::eventfd_signal(parent.to_worker.as_fd());
                lease.committed();
            });
            let (n, task) = worker.take_task::<u64>(control.as_fd()).unwrap().unwrap();
            assert!(n == 7 && task.bytes == body.bytes);
        });
        // Never filled: the wait ends when the parent's end of the socket closes.
        commit_unfilled().committed();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                drop(peer);
            });
            let err = worker.take_task::<u64>(control.as_fd()).unwrap_err();
            assert!(
                err.to_string().contains("before it filled in a task"),
                "{err}"
            );
        });
    }
}
