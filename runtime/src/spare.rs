//! Spare buffers: large byte buffers a process is done with, kept for the next message.
//!
//! A pool message of a megabyte is encoded into, or received into, a buffer of a megabyte;
//! allocating a fresh one each time makes the kernel fault in and zero its pages every time
//! (glibc returns large blocks to the kernel when they are freed), which cost more than the
//! copies themselves. So the buffers of sent and decoded messages are given back here, and
//! the next message that needs one takes it, pages already in place.
//!
//! Only buffers of [`KEEP_FROM`] bytes or more are kept (smaller ones come cheap from
//! `malloc`), at most [`KEEP_TOTAL`] bytes in all. The list is behind a mutex that is only
//! ever *tried*: a thread that finds it busy allocates or frees as usual, so no thread ever
//! waits here, and the child of a fork taken while another thread held it is not stuck
//! either.

use std::sync::Mutex;

/// Buffers smaller than this are not kept.
const KEEP_FROM: usize = 64 << 10;
/// At most this many bytes of spare buffers per process.
const KEEP_TOTAL: usize = 16 << 20;

struct Spare {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

static SPARE: Mutex<Spare> = Mutex::new(Spare {
    buffers: Vec::new(),
    bytes: 0,
});

/// An empty buffer with room for at least `len` bytes: a spare one when one fits (the
/// smallest that does), `None` when none does (the caller allocates as it sees fit).
pub(crate) fn take(len: usize) -> Option<Vec<u8>> {
    if len < KEEP_FROM / 2 {
        return None;
    }
    let mut spare = SPARE.try_lock().ok()?;
    let best = spare
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= len)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i)?;
    let buffer = spare.buffers.swap_remove(best);
    spare.bytes -= buffer.capacity();
    Some(buffer)
}

/// An empty buffer with room for `len` bytes: a spare one, or a new one.
pub(crate) fn take_or_new(len: usize) -> Vec<u8> {
    take(len).unwrap_or_else(|| Vec::with_capacity(len))
}

/// Keeps `buffer` for a next message if it is large and there is room; frees it otherwise.
pub(crate) fn give(mut buffer: Vec<u8>) {
    let capacity = buffer.capacity();
    if !(KEEP_FROM..=KEEP_TOTAL).contains(&capacity) {
        return;
    }
    let Ok(mut spare) = SPARE.try_lock() else {
        return;
    };
    if spare.bytes + capacity > KEEP_TOTAL {
        return;
    }
    buffer.clear();
    spare.bytes += capacity;
    spare.buffers.push(buffer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_are_reused_small_ones_are_not() {
        // Other tests of this binary may use the list too: only what this one gave is known.
        let big = Vec::<u8>::with_capacity(3 * KEEP_FROM);
        let ptr = big.as_ptr();
        give(big);
        let mut found = false;
        let mut taken = Vec::new();
        while let Some(b) = take(2 * KEEP_FROM) {
            assert!(b.capacity() >= 2 * KEEP_FROM && b.is_empty());
            found |= b.as_ptr() == ptr;
            taken.push(b);
        }
        assert!(found, "the buffer given back was not taken again");
        assert!(take(10).is_none(), "small requests allocate");
        give(Vec::with_capacity(10));
        give(Vec::with_capacity(KEEP_TOTAL + 1));
        assert!(take(KEEP_TOTAL + 1).is_none());
        assert!(take_or_new(KEEP_TOTAL + 1).capacity() > KEEP_TOTAL);
    }
}
