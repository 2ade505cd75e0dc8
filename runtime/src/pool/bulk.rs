//! A pool worker's bulk area: shared memory beside its rings (in the same region) for the
//! messages too large for a ring record (a map chunk of a megabyte, a 64 MiB vector given to
//! `apply`). The writer copies the message's payload and byte blocks into a free *slot* of its
//! direction and puts in the ring a record that holds the message's header and a small
//! descriptor instead of its body (which slot, the payload's length, each block's length); the
//! reader copies them out of the slot into the buffers it hands on, then frees the slot. A
//! worker decodes a task's payload in place instead (`InPlace`: one copy, into the task's
//! arguments) and frees the slot once the task has run.
//!
//! # Filled before or after the commit
//!
//! A reply's body is copied in before its record is committed: the parent never waits for a
//! worker. A large task's (from [`wire::HUGE_PAGES_FROM`] on) is copied in after: the worker,
//! woken by the record, makes its buffers and faults in their pages (the costly part of
//! receiving a large vector) while the parent copies, then copies the body out a [`STRIPE`]
//! behind the parent, who says how far it got in the slot's *progress word* after each
//! stripe, until the slot's word says [`FILLED`] (a doorbell, and the end of its control
//! socket if the parent dies, end that wait). The two copies run at once, on two cores: a
//! 64 MiB vector crosses in about the time of one copy.
//!
//! # Blocks keep their alignment
//!
//! A block's length in a descriptor carries the alignment of its allocation (see
//! [`Block`]) in its top byte, and the reader makes the block's buffer with that alignment:
//! a `Vec<f64>` sent as a block becomes a `Vec<f64>` again without another copy.
//!
//! # Slots and their owners
//!
//! Four slots of [`SLOT_BYTES`]: two for tasks (written by the parent, read by the worker),
//! two for replies (the other way), each with a word that says it is in use (and a progress
//! word after the four). A writer takes a
//! slot whose word is 0 and sets it to 1 before its record is committed; the reader sets it
//! back to 0 once it has copied the message out (and its record is taken). Two slots each
//! way, because the pool has at most two messages in flight each way (a task running, one
//! queued behind it in the ring): while the worker has not copied the first task out, a
//! second goes in the other slot. With both in use (or a message larger than a slot, or one
//! with descriptors) the message goes on the socket, as before: nothing ever waits for a slot.
//!
//! # A peer that lies
//!
//! A task can write anything in its own process's memory, the area included. What the parent
//! reads from it is bounded by the parent's own constants: a descriptor names a reply slot,
//! and lengths whose sum (each rounded up to 8) fits in [`SLOT_BYTES`], or it is out of
//! protocol. The words in use are only a courtesy between honest peers: a worker that clears
//! the word of a task slot early only spoils its own task's bytes, and bytes a worker changes
//! while the parent copies them out are garbage to be decoded like any other. The parent
//! accesses the area only by 8-byte atomics (see `shm::Region::words`), so it stays sound
//! whatever the worker does at the same time; the worker reads a task's payload in place only
//! in a slot the parent has filled and does not write until the worker frees it. The area
//! lives and dies with the worker's rings: a replacement gets a new one.
//!
//! # Resident memory
//!
//! The area is a sparse memory file: only the pages written hold memory, and they stay for
//! the next message of that size (no page faults for the next chunk). A reader that took a
//! message larger than [`KEEP_RESIDENT`] gives back the pages past that mark.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::block::{Block, MAX_ALIGN};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;
use crate::shm::Region;
use crate::{spare, sys, wire};

/// Bytes of each slot: the largest body (payload and blocks, each rounded up to 8 bytes) that
/// goes through the area.
pub(crate) const SLOT_BYTES: usize = 128 << 20;
/// Slots 0 and 1 carry tasks, 2 and 3 replies.
const SLOTS: usize = 4;
/// Pages of a slot kept after a message, for the next one; those past it are given back.
const KEEP_RESIDENT: usize = 80 << 20;
/// A slot's word once its writer has copied the whole body in (1: taken, being written).
pub(crate) const FILLED: u64 = 2;
/// The fixed part of a descriptor: slot, block count, payload length.
const DESCRIPTOR_HEAD: usize = 16;

/// Bytes the writer of a large task copies in before it says how far it got (see
/// [`Lease::fill`]): the reader copies each stripe out as soon as it is in.
const STRIPE: usize = 256 << 10;
/// Bits of a block's length word in a descriptor below its alignment (as a power of two).
const ALIGN_SHIFT: u32 = 56;

/// How a reader waits until the writer has filled a slot in up to a mark: given the slot's
/// word, its progress word and the mark, returns once the progress word is at the mark or the
/// slot's word says [`FILLED`].
pub(crate) type Wait<'a> = &'a dyn Fn(&AtomicU64, &AtomicU64, u64) -> Result<()>;

/// Which way a message goes: which slots it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    Tasks,
    Replies,
}

impl Way {
    fn slots(self) -> [usize; 2] {
        match self {
            Way::Tasks => [0, 1],
            Way::Replies => [2, 3],
        }
    }
}

/// A worker's bulk area, at `at` in its rings' region.
pub(crate) struct Bulk {
    region: Arc<Region>,
    at: usize,
    /// [`SLOT_BYTES`], but for the fuzz harness's smaller areas.
    slot_bytes: usize,
}

impl std::fmt::Debug for Bulk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulk").field("at", &self.at).finish()
    }
}

fn corrupt(what: &str) -> Error {
    Error::new(
        ErrorKind::Codec,
        format!("corrupt message in a pool worker's bulk area: {what}"),
    )
}

const fn padded(len: usize) -> Option<usize> {
    len.checked_next_multiple_of(8)
}

/// The room a body takes in a slot, if it fits one.
fn room(bytes: usize, blocks: impl Iterator<Item = usize>, slot_bytes: usize) -> Option<usize> {
    let mut total = padded(bytes)?;
    for len in blocks {
        total = total.checked_add(padded(len)?)?;
    }
    (total <= slot_bytes).then_some(total)
}

/// The bytes of an area of slots of `slot_bytes`.
pub(crate) const fn area_bytes(slot_bytes: usize) -> usize {
    4096 + SLOTS * slot_bytes
}

/// The slots (a multiple of 4096 bytes each) that an area of `area` bytes holds.
pub(crate) const fn slot_bytes_in(area: usize) -> usize {
    (area.saturating_sub(4096) / SLOTS) / 4096 * 4096
}

/// The bytes of the descriptor of `body` in a record.
pub(crate) fn descriptor_len(body: &Encoded) -> usize {
    DESCRIPTOR_HEAD + 8 * body.blocks.len()
}

/// A slot taken by a writer, not yet handed to the reader: freed on drop unless
/// [`committed`](Lease::committed).
pub(crate) struct Lease<'a> {
    bulk: &'a Bulk,
    slot: usize,
}

impl Lease<'_> {
    /// Copies `body` (the one [`Bulk::write`] described) into the slot, and says it is whole.
    /// On the way it says how far it got after each [`STRIPE`], in the slot's progress word,
    /// then calls `stripe_in` (which wakes a reader asleep): a reader that waits (a worker,
    /// for a large task) copies out behind it.
    pub(crate) fn fill(&self, body: &Encoded, stripe_in: &dyn Fn()) -> Result<()> {
        let start = self.bulk.slot_at(self.slot);
        let mut at = start;
        let progress = self.bulk.progress(self.slot);
        let copied = std::iter::once(&body.bytes[..])
            .chain(body.blocks.iter().map(|block| &block[..]))
            .try_for_each(|part| {
                let words = self.bulk.region.words(at, part.len().div_ceil(8))?;
                for (bytes, words) in part.chunks(STRIPE).zip(words.chunks(STRIPE / 8)) {
                    copy_in(bytes, words);
                    at += bytes.len().div_ceil(8) * 8;
                    if let Some(progress) = progress {
                        progress.store((at - start) as u64, Ordering::Release);
                    }
                    stripe_in();
                }
                Ok::<_, Error>(())
            });
        // Whole even when the copy failed (it cannot: the body fits the slot): a reader that
        // waits for it must not wait for ever.
        if let Some(word) = self.bulk.word(self.slot) {
            word.store(FILLED, Ordering::SeqCst);
        }
        copied
    }

    /// The message's record was committed (and its body filled in): the slot is the reader's
    /// to free.
    pub(crate) fn committed(self) {
        std::mem::forget(self);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(word) = self.bulk.word(self.slot) {
            word.store(0, Ordering::Release);
        }
    }
}

impl Bulk {
    /// The area at `at` in `region`, with slots of `slot_bytes` (a multiple of 4096).
    pub(crate) fn with_slots(region: Arc<Region>, at: usize, slot_bytes: usize) -> Result<Bulk> {
        if !at.is_multiple_of(4096)
            || !slot_bytes.is_multiple_of(4096)
            || at
                .checked_add(area_bytes(slot_bytes))
                .is_none_or(|end| end > region.len())
        {
            return Err(corrupt("a region too small"));
        }
        Ok(Bulk {
            region,
            at,
            slot_bytes,
        })
    }

    fn word(&self, slot: usize) -> Option<&AtomicU64> {
        self.region
            .words(self.at, SLOTS)
            .ok()
            .and_then(|words| words.get(slot))
    }

    /// Slot `slot`'s progress word: the bytes of its body its writer has copied in so far.
    fn progress(&self, slot: usize) -> Option<&AtomicU64> {
        self.region
            .words(self.at + 8 * SLOTS, SLOTS)
            .ok()
            .and_then(|words| words.get(slot))
    }

    /// Where slot `slot` begins in the region.
    fn slot_at(&self, slot: usize) -> usize {
        self.at + 4096 + slot * self.slot_bytes
    }

    /// Writer: whether `body` may go through the area (no descriptors, and it fits a slot).
    pub(crate) fn fits(&self, body: &Encoded) -> bool {
        body.fds.is_empty()
            && body.blocks.iter().all(|b| b.align() <= MAX_ALIGN)
            && room(
                body.bytes.len(),
                body.blocks.iter().map(|b| b.len()),
                self.slot_bytes,
            )
            .is_some()
    }

    /// Writer: takes a free slot of `way` for `body`, and appends its descriptor to `record`;
    /// `None` when no slot is free or the body does not fit one. The body is copied in by
    /// [`Lease::fill`], before the record is committed or (for a reader that waits, see
    /// [`read`](Self::read)) after.
    pub(crate) fn write(
        &self,
        way: Way,
        body: &Encoded,
        record: &mut Vec<u8>,
    ) -> Result<Option<Lease<'_>>> {
        if !self.fits(body) {
            return Ok(None);
        }
        let Some(slot) = way.slots().into_iter().find(|&slot| {
            self.word(slot).is_some_and(|word| {
                word.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            })
        }) else {
            return Ok(None);
        };
        let lease = Lease { bulk: self, slot };
        if let Some(progress) = self.progress(slot) {
            progress.store(0, Ordering::Release);
        }
        record.extend_from_slice(&(slot as u32).to_le_bytes());
        record.extend_from_slice(&(body.blocks.len() as u32).to_le_bytes());
        record.extend_from_slice(&(body.bytes.len() as u64).to_le_bytes());
        for block in &body.blocks {
            // Its alignment too: the reader makes the block's buffer with it, so that a
            // vector of `f64`s, say, becomes one again without a copy.
            let align = u64::from(block.align().trailing_zeros()) << ALIGN_SHIFT;
            record.extend_from_slice(&(block.len() as u64 | align).to_le_bytes());
        }
        Ok(Some(lease))
    }

    /// Reader: the body that `descriptor` (from a record of `way`) says is in the area, copied
    /// out; the slot is free again. Every length is checked against the slot.
    ///
    /// With `wait` (a worker reading a task, which the parent fills in after it committed the
    /// record), the buffers are made and their pages faulted in first, while the parent
    /// copies, and each stripe is copied out once `wait` says the parent has copied it in (or
    /// fails: the parent is gone). The parent itself never waits for a worker.
    pub(crate) fn read(
        &self,
        way: Way,
        descriptor: &[u8],
        wait: Option<Wait<'_>>,
        in_place: bool,
    ) -> Result<(Encoded, Option<InPlace>)> {
        let Some((head, lens)) = descriptor.split_at_checked(DESCRIPTOR_HEAD) else {
            return Err(corrupt("a descriptor shorter than its head"));
        };
        let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or([0; 8]));
        let slot = (word(0) & 0xffff_ffff) as usize;
        let count = (word(0) >> 32) as usize;
        let payload = usize::try_from(word(8)).unwrap_or(usize::MAX);
        if !way.slots().contains(&slot) {
            return Err(corrupt(&format!("slot {slot} for this direction")));
        }
        if lens.len() != count.saturating_mul(8) {
            return Err(corrupt(&format!(
                "{count} blocks in a descriptor of {} bytes",
                descriptor.len()
            )));
        }
        // Each block's length and the alignment of its buffer (as a power of two).
        let blocks_of: Vec<(usize, u32)> = lens
            .chunks_exact(8)
            .map(|len| {
                let len = u64::from_le_bytes(len.try_into().unwrap_or([0; 8]));
                let bytes = usize::try_from(len & ((1 << ALIGN_SHIFT) - 1)).unwrap_or(usize::MAX);
                (bytes, (len >> ALIGN_SHIFT) as u32)
            })
            .collect();
        let Some(total) = room(payload, blocks_of.iter().map(|b| b.0), self.slot_bytes) else {
            return Err(corrupt("a body larger than its slot"));
        };
        // A vector's alignment is at most the size of its elements, so at most its length: a
        // larger one (many tiny blocks of page alignment, say) is forged.
        let blocks_of = blocks_of
            .into_iter()
            .map(|(len, shift)| match 1usize.checked_shl(shift) {
                Some(align) if align <= MAX_ALIGN && align <= len.max(1) => Ok((len, align)),
                _ => Err(corrupt(
                    "a block whose alignment is past its length or the largest",
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let (Some(slot_word), Some(progress)) = (self.word(slot), self.progress(slot)) else {
            return Err(corrupt("a region too small"));
        };
        let fault_in = |spare: &mut [MaybeUninit<u8>]| {
            if spare.len() >= wire::HUGE_PAGES_FROM {
                sys::advise_huge_pages(spare);
                if wait.is_some() {
                    // Faulted in now, while the writer copies.
                    for byte in spare.iter_mut().step_by(4096) {
                        byte.write(0);
                    }
                }
            }
        };
        let payload_len = if in_place { 0 } else { payload };
        let mut bytes = spare::take_or_new(payload_len);
        bytes
            .try_reserve_exact(payload_len)
            .map_err(|_| corrupt(&format!("{payload_len} bytes that cannot be allocated")))?;
        fault_in(&mut bytes.spare_capacity_mut()[..payload_len]);
        let mut blocks = blocks_of
            .iter()
            .map(|&(len, align)| {
                let mut block = Block::with_capacity(len, align)
                    .ok_or_else(|| corrupt(&format!("{len} bytes that cannot be allocated")))?;
                fault_in(block.spare_capacity_mut());
                Ok(block)
            })
            .collect::<Result<Vec<_>>>()?;
        let slot_at = self.slot_at(slot);
        // Waits until the writer has copied in the body up to `at` (from the slot's start).
        let filled_to = |at: usize| match wait {
            Some(wait) => wait(slot_word, progress, at as u64),
            None => Ok(()),
        };
        let mut at = slot_at;
        let payload_at = at;
        if in_place {
            at += payload.div_ceil(8) * 8;
        } else {
            let out = &mut bytes.spare_capacity_mut()[..payload];
            at = self.copy_out_behind(at, slot_at, out, &filled_to)?;
            // SAFETY: the first `payload` bytes of the spare capacity were just written (the
            // buffer holds at least that: reserved above).
            unsafe { bytes.set_len(payload) };
        }
        for (block, &(len, _)) in blocks.iter_mut().zip(&blocks_of) {
            at = self.copy_out_behind(
                at,
                slot_at,
                &mut block.spare_capacity_mut()[..len],
                &filled_to,
            )?;
            // SAFETY: as above, for the block's `len` bytes (its capacity).
            unsafe { block.set_len(len) };
        }
        // The whole body (a payload read in place included), and the slot's word says so: the
        // writer is done with the slot, which the reader may now free. (Its last progress
        // store comes just before, and a slot freed in between would be `FILLED` for good.)
        filled_to(usize::MAX)?;
        let done = Done {
            region: Arc::clone(&self.region),
            word_at: self.at + 8 * slot,
            give_back: (total > KEEP_RESIDENT)
                .then(|| (payload_at + KEEP_RESIDENT, payload_at + total)),
        };
        let body = Encoded {
            bytes,
            fds: Vec::new(),
            blocks,
        };
        if in_place {
            let view = InPlace {
                at: payload_at,
                len: payload,
                done,
            };
            // The slot's word says the body is whole (waited for above): read in place from
            // here on (the region holds the payload: `room` bounded it by the slot).
            return Ok((body, Some(view)));
        }
        drop(done);
        Ok((body, None))
    }

    /// Copies the part of a body at `at` in the slot that begins at `slot_at` out into `out`,
    /// a [`STRIPE`] at a time, each once `filled_to` says the writer has copied it in; returns
    /// where the next part begins.
    fn copy_out_behind(
        &self,
        mut at: usize,
        slot_at: usize,
        out: &mut [MaybeUninit<u8>],
        filled_to: &dyn Fn(usize) -> Result<()>,
    ) -> Result<usize> {
        let words = self.region.words(at, out.len().div_ceil(8))?;
        for (out, words) in out.chunks_mut(STRIPE).zip(words.chunks(STRIPE / 8)) {
            at += out.len().div_ceil(8) * 8;
            filled_to(at - slot_at)?;
            copy_out(words, out);
        }
        Ok(at)
    }
}

/// What a reader does once it no longer needs a slot: gives back the pages past
/// [`KEEP_RESIDENT`], then frees the slot for its writer.
struct Done {
    region: Arc<Region>,
    word_at: usize,
    give_back: Option<(usize, usize)>,
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some((from, to)) = self.give_back {
            give_back(&self.region, from, to);
        }
        if let Ok(words) = self.region.words(self.word_at, 1) {
            words[0].store(0, Ordering::Release);
        }
    }
}

/// A task's payload read in place in its bulk slot (see [`Bulk::read`]): the slot stays the
/// worker's, and the parent writes nothing there, until this is dropped.
pub(crate) struct InPlace {
    at: usize,
    len: usize,
    done: Done,
}

impl InPlace {
    /// The payload.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `at..at + len` lies inside the region (bounded by the slot, see `Bulk::read`),
        // whose mapping lives as long as `self.done.region`. Nobody writes it while this
        // borrow lives: the parent writes a slot only between taking it (its word from 0 to 1)
        // and its `FILLED` store, which this worker saw before it made `self` (`Bulk::read`
        // waits for it: SeqCst on both sides, after the parent's writes), and the word stays
        // `FILLED` until `self` drops (after the borrow, which borrows `self`).
        unsafe { std::slice::from_raw_parts(self.done.region.as_ptr().add(self.at), self.len) }
    }
}

/// Gives back the pages of bytes `from..to` of `region` (they read as zeros after).
fn give_back(region: &Region, from: usize, to: usize) {
    let start = from.next_multiple_of(4096);
    let end = to.next_multiple_of(4096);
    if end <= region.len() && start < end {
        // SAFETY: `start..end` is a page-aligned range inside the live shared mapping;
        // MADV_REMOVE frees its backing pages, which then read as zeros: nothing in this
        // process holds a reference into them (the area is accessed through atomics, copied in
        // and out, or borrowed by an `InPlace`, which has ended when this runs).
        unsafe {
            libc::madvise(
                region.as_ptr().add(start).cast(),
                end - start,
                libc::MADV_REMOVE,
            )
        };
    }
}

/// Copies `bytes` into `words`, 8 bytes a word (the last one padded with zeros).
fn copy_in(bytes: &[u8], words: &[AtomicU64]) {
    let mut chunks = bytes.chunks_exact(8);
    for (chunk, word) in (&mut chunks).zip(words) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        word.store(u64::from_ne_bytes(w), Ordering::Relaxed);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        if let Some(word) = words.get(bytes.len() / 8) {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            word.store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
    }
}

/// Copies `words` out into `out` (as many bytes as it has room for).
fn copy_out(words: &[AtomicU64], out: &mut [MaybeUninit<u8>]) {
    let len = out.len();
    let mut chunks = out.chunks_exact_mut(8);
    for (chunk, word) in (&mut chunks).zip(words) {
        let w = word.load(Ordering::Relaxed).to_ne_bytes();
        if let Ok(chunk) = <&mut [MaybeUninit<u8>; 8]>::try_from(chunk) {
            *chunk = w.map(MaybeUninit::new);
        }
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        if let Some(word) = words.get(len / 8) {
            let w = word.load(Ordering::Relaxed).to_ne_bytes();
            for (out, byte) in rest.iter_mut().zip(w) {
                out.write(byte);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area() -> Bulk {
        let region = Arc::new(Region::new("test-bulk", area_bytes(SLOT_BYTES)).unwrap());
        Bulk::with_slots(region, 0, SLOT_BYTES).unwrap()
    }

    fn body(bytes: usize, blocks: &[usize]) -> Encoded {
        Encoded {
            bytes: (0..bytes).map(|i| i as u8).collect(),
            fds: Vec::new(),
            blocks: blocks
                .iter()
                .map(|&n| Block::from(vec![n as u8; n]))
                .collect(),
        }
    }

    #[test]
    fn bodies_round_trip_in_two_slots_each_way() {
        let bulk = area();
        let sent = body(100_003, &[0, 1, 9, 70_000]);
        let (mut first, mut second, mut third) = (Vec::new(), Vec::new(), Vec::new());
        let a = bulk.write(Way::Tasks, &sent, &mut first).unwrap().unwrap();
        let b = bulk.write(Way::Tasks, &sent, &mut second).unwrap().unwrap();
        // Both task slots taken: the next task goes elsewhere; replies have their own.
        assert!(bulk.write(Way::Tasks, &sent, &mut third).unwrap().is_none());
        let reply = bulk
            .write(Way::Replies, &sent, &mut third)
            .unwrap()
            .unwrap();
        for lease in [&a, &b, &reply] {
            lease.fill(&sent, &|| {}).unwrap();
        }
        a.committed();
        b.committed();
        reply.committed();
        let got = bulk.read(Way::Tasks, &first, None, false).unwrap().0;
        assert_eq!((&got.bytes, &got.blocks), (&sent.bytes, &sent.blocks));
        // A record of one way names none of the other's slots.
        assert!(bulk.read(Way::Replies, &second, None, false).is_err());
        assert!(bulk.read(Way::Tasks, &third, None, false).is_err());
        let got = bulk.read(Way::Replies, &third, None, false).unwrap().0;
        assert_eq!((&got.bytes, &got.blocks), (&sent.bytes, &sent.blocks));
        bulk.read(Way::Tasks, &second, None, false).unwrap();
        // Read in place, the payload stays in its slot, which is taken until the view drops.
        let mut fourth = Vec::new();
        let lease = bulk.write(Way::Tasks, &sent, &mut fourth).unwrap().unwrap();
        lease.fill(&sent, &|| {}).unwrap();
        lease.committed();
        let (got, view) = bulk.read(Way::Tasks, &fourth, None, true).unwrap();
        let view = view.unwrap();
        assert!(got.bytes.is_empty() && got.blocks == sent.blocks);
        assert_eq!(view.bytes(), &sent.bytes[..]);
        let mut other = Vec::new();
        let taken = bulk.write(Way::Tasks, &sent, &mut other).unwrap().unwrap();
        assert!(bulk.write(Way::Tasks, &sent, &mut other).unwrap().is_none());
        drop(view);
        drop(taken);
        // The slot read is free again; a lease dropped unfilled frees its slot.
        let mut record = Vec::new();
        drop(bulk.write(Way::Tasks, &sent, &mut record).unwrap().unwrap());
        assert!(bulk
            .write(Way::Tasks, &sent, &mut record)
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_waiting_reader_copies_out_behind_the_writer_into_buffers_of_their_alignment() {
        use std::time::{Duration, Instant};
        let bulk = area();
        let floats: Vec<f64> = (0..(3 * STRIPE + 100) / 8).map(|i| i as f64).collect();
        let sent = Encoded {
            bytes: vec![5; 1000],
            fds: Vec::new(),
            blocks: vec![
                Block::from_vec(floats.clone()).unwrap(),
                Block::from(vec![6; STRIPE + 3]),
            ],
        };
        let mut record = Vec::new();
        let lease = bulk.write(Way::Tasks, &sent, &mut record).unwrap().unwrap();
        // How far the reader has copied out, and the marks it reached before the body was
        // whole.
        let reached = AtomicU64::new(0);
        let early = std::sync::Mutex::new(Vec::new());
        let wait = |word: &AtomicU64, progress: &AtomicU64, mark: u64| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while progress.load(Ordering::Acquire) < mark && word.load(Ordering::SeqCst) != FILLED {
                if Instant::now() > deadline {
                    return Err(corrupt("the writer never got there"));
                }
                std::thread::yield_now();
            }
            if word.load(Ordering::SeqCst) != FILLED {
                early.lock().unwrap().push(mark);
            }
            reached.store(mark, Ordering::SeqCst);
            Ok(())
        };
        // After each stripe the writer gives the reader a moment to catch up (it goes on
        // without it after a while: a reader that does not copy behind fails below, it does
        // not hang).
        let patience = std::sync::Mutex::new(Some(Instant::now() + Duration::from_secs(10)));
        let progress = bulk.progress(0).unwrap();
        let stripe_in = || {
            let mut patience = patience.lock().unwrap();
            let target = progress.load(Ordering::Acquire);
            while let Some(until) = *patience {
                if reached.load(Ordering::SeqCst) >= target {
                    break;
                }
                if Instant::now() > until {
                    *patience = None;
                }
                std::thread::yield_now();
            }
        };
        let got = std::thread::scope(|scope| {
            let reader = scope.spawn(|| bulk.read(Way::Tasks, &record, Some(&wait), false));
            lease.fill(&sent, &stripe_in).unwrap();
            lease.committed();
            reader.join().unwrap().unwrap().0
        });
        assert_eq!((&got.bytes, &got.blocks), (&sent.bytes, &sent.blocks));
        // Stripe by stripe while the writer copied, not once at the end.
        let early = early.into_inner().unwrap();
        assert!(early.len() >= 5, "{early:?}");
        // The reader freed the slot once the writer was done with it.
        assert_eq!(bulk.word(0).unwrap().load(Ordering::SeqCst), 0);
        // The block of `f64`s was made for them: it becomes their vector as it is.
        let mut blocks = got.blocks.into_iter();
        let block = blocks.next().unwrap();
        assert_eq!(block.align(), 8);
        let at = block.as_ptr();
        let back = block.into_vec::<f64>().unwrap();
        assert_eq!((back.as_ptr().cast::<u8>(), &back), (at, &floats));
        assert_eq!(blocks.next().unwrap().align(), 1);
    }

    #[test]
    fn what_does_not_fit_is_refused_and_lengths_are_bounded() {
        let bulk = area();
        let mut record = Vec::new();
        let big = Encoded {
            blocks: vec![Block::from(Vec::new()), Block::from(Vec::new())],
            ..Encoded::default()
        };
        assert!(bulk.fits(&big));
        // An area of no slots (a parent without the address space for one) takes no body.
        assert_eq!(slot_bytes_in(area_bytes(SLOT_BYTES)), SLOT_BYTES);
        assert_eq!(slot_bytes_in(area_bytes(0)), 0);
        let region = Arc::new(Region::new("test-bulk", area_bytes(0)).unwrap());
        let none = Bulk::with_slots(region, 0, 0).unwrap();
        assert!(!none.fits(&body(1, &[])) && !none.fits(&body(0, &[1])));
        assert!(room(SLOT_BYTES - 8, [9].into_iter(), SLOT_BYTES).is_none());
        assert!(room(usize::MAX - 2, [].into_iter(), SLOT_BYTES).is_none());
        assert!(room(8, [usize::MAX - 7].into_iter(), SLOT_BYTES).is_none());
        assert!(bulk
            .write(Way::Replies, &big, &mut record)
            .unwrap()
            .is_some());
        let head = |slot: u64, blocks: u64, payload: u64| {
            let mut d = (slot | (blocks << 32)).to_le_bytes().to_vec();
            d.extend_from_slice(&payload.to_le_bytes());
            d
        };
        let mut overflow = head(2, 1, 8);
        overflow.extend_from_slice(&u64::MAX.to_le_bytes());
        for bad in [
            Vec::new(),
            vec![2, 0, 0],
            head(4, 0, 8),
            head(u64::from(u32::MAX), 0, 8),
            head(2, 0, SLOT_BYTES as u64 + 1),
            head(2, 0, u64::MAX),
            head(3, 2, 8),
            overflow,
            // A block of 16 bytes whose buffer would be aligned to 8 KiB, or to 32.
            [
                head(2, 1, 8),
                (16u64 | 13 << ALIGN_SHIFT).to_le_bytes().to_vec(),
            ]
            .concat(),
            [
                head(2, 1, 8),
                (16u64 | 5 << ALIGN_SHIFT).to_le_bytes().to_vec(),
            ]
            .concat(),
        ] {
            assert!(
                bulk.read(Way::Replies, &bad, None, false).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            bulk.read(Way::Replies, &head(3, 0, 16), None, false)
                .unwrap()
                .0
                .bytes,
            [0; 16]
        );
    }
}
