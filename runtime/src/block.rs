//! A byte block of a message: a large vector of plain old data that travels beside a message's
//! payload (by index, like descriptors), moved in and out of it without a copy.
//!
//! A block owns one heap allocation and remembers the alignment it was made with, so that a
//! `Vec<E>` of any [`Pod`] element type (a `Vec<f64>` as well as a `Vec<u8>`) becomes a block
//! without a copy, and a block made for `E`s (by a reader told their alignment) becomes a
//! `Vec<E>` again without one. Anything else (a block of another alignment, one whose length
//! is not a whole number of `E`s) is refused, for the caller to copy.

use std::alloc::Layout;
use std::mem::{align_of, size_of, MaybeUninit};
use std::ptr::NonNull;

use bytemuck::Pod;

/// The largest alignment a block is made with on a reader's word: a larger one (a forged
/// length word) is refused as corrupt.
pub(crate) const MAX_ALIGN: usize = 4096;

/// A byte block (see the module docs). Not public API.
#[doc(hidden)]
pub struct Block {
    /// The allocation (aligned to `align`), or `align` itself as a dangling pointer when
    /// `capacity` is 0.
    ptr: NonNull<u8>,
    /// Initialised bytes.
    len: usize,
    /// Bytes allocated (with `Layout::from_size_align(capacity, align)`); 0: none.
    capacity: usize,
    align: usize,
}

// SAFETY: a `Block` owns its allocation outright (as a `Vec<u8>` does) and gives shared access
// only through `&self`: sending it to or sharing it with another thread is sound.
unsafe impl Send for Block {}
// SAFETY: see `Send`: `&Block` only reads.
unsafe impl Sync for Block {}

impl Block {
    /// The block of `values`, without a copy (`Err` with them back for elements without a
    /// size, whose bytes say nothing of their count).
    pub(crate) fn from_vec<E: Pod>(values: Vec<E>) -> Result<Block, Vec<E>> {
        if size_of::<E>() == 0 {
            return Err(values);
        }
        let mut values = std::mem::ManuallyDrop::new(values);
        let (len, capacity) = (values.len(), values.capacity());
        // A vector's pointer is never null (dangling and aligned when it has no capacity).
        let ptr = NonNull::new(values.as_mut_ptr().cast::<u8>()).unwrap_or(NonNull::dangling());
        Ok(Block {
            ptr,
            len: len * size_of::<E>(),
            capacity: capacity * size_of::<E>(),
            align: align_of::<E>(),
        })
    }

    /// An empty block with room for `capacity` bytes aligned to `align` (a power of two, at
    /// most [`MAX_ALIGN`]); `None` when that cannot be allocated.
    pub(crate) fn with_capacity(capacity: usize, align: usize) -> Option<Block> {
        if !align.is_power_of_two() || align > MAX_ALIGN {
            return None;
        }
        let dangling = NonNull::new(std::ptr::without_provenance_mut::<u8>(align))?;
        if capacity == 0 {
            return Some(Block {
                ptr: dangling,
                len: 0,
                capacity: 0,
                align,
            });
        }
        let layout = Layout::from_size_align(capacity, align).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) })?;
        Some(Block {
            ptr,
            len: 0,
            capacity,
            align,
        })
    }

    /// The alignment its allocation was made with.
    pub(crate) fn align(&self) -> usize {
        self.align
    }

    /// The room past its length.
    pub(crate) fn spare_capacity_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: `len..capacity` lies in the allocation (or is empty at the dangling,
        // aligned, non-null pointer), which `&mut self` gives exclusive access to.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(self.len).cast::<MaybeUninit<u8>>(),
                self.capacity - self.len,
            )
        }
    }

    /// Makes its first `len` bytes its contents.
    ///
    /// # Safety
    /// `len` is at most the capacity, and the first `len` bytes are initialised.
    pub(crate) unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity);
        self.len = len;
    }

    /// The vector of `E`s it carries: the allocation itself when it was made for `E`s (their
    /// alignment, and a whole number of them in both its length and capacity), else `Err`
    /// with the block unchanged.
    pub(crate) fn into_vec<E: Pod>(self) -> Result<Vec<E>, Block> {
        let size = size_of::<E>();
        if size == 0
            || self.align != align_of::<E>()
            || !self.len.is_multiple_of(size)
            || !self.capacity.is_multiple_of(size)
        {
            return Err(self);
        }
        let block = std::mem::ManuallyDrop::new(self);
        // SAFETY: the pointer was allocated (or, for no capacity, is dangling and aligned) with
        // `E`'s alignment and `capacity` bytes, which is the layout of `capacity / size` `E`s
        // (`Layout::array`), as `Vec<E>` frees it; its first `len / size` `E`s are initialised
        // bytes, and every bit pattern is an `E` (`Pod`). The block is forgotten: the vector
        // owns the allocation alone.
        Ok(unsafe {
            Vec::from_raw_parts(
                block.ptr.as_ptr().cast::<E>(),
                block.len / size,
                block.capacity / size,
            )
        })
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.capacity != 0 {
            // SAFETY: allocated with exactly this layout (`with_capacity`, or a `Vec<E>`'s
            // `Layout::array::<E>(capacity / size)`, the same size and alignment), and owned.
            unsafe {
                std::alloc::dealloc(
                    self.ptr.as_ptr(),
                    Layout::from_size_align_unchecked(self.capacity, self.align),
                )
            };
        }
    }
}

impl std::ops::Deref for Block {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialised and lie in the allocation (or `len` is
        // 0 at a dangling, aligned, non-null pointer); `&self` keeps them alive and unchanged.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Clone for Block {
    /// A copy in an allocation of the same alignment.
    fn clone(&self) -> Block {
        let Some(mut copy) = Block::with_capacity(self.len, self.align) else {
            std::alloc::handle_alloc_error(
                Layout::from_size_align(self.len, self.align).unwrap_or(Layout::new::<u8>()),
            );
        };
        for (out, byte) in copy.spare_capacity_mut().iter_mut().zip(self.iter()) {
            out.write(*byte);
        }
        // SAFETY: its `len` bytes (its capacity) were just written.
        unsafe { copy.set_len(self.len) };
        copy
    }
}

impl From<Vec<u8>> for Block {
    fn from(bytes: Vec<u8>) -> Block {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        let (len, capacity) = (bytes.len(), bytes.capacity());
        // A `Vec<u8>`'s pointer is never null.
        let ptr = NonNull::new(bytes.as_mut_ptr()).unwrap_or(NonNull::dangling());
        Block {
            ptr,
            len,
            capacity,
            align: 1,
        }
    }
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("len", &self.len)
            .field("align", &self.align)
            .finish()
    }
}

impl PartialEq for Block {
    fn eq(&self, other: &Block) -> bool {
        **self == **other
    }
}

impl PartialEq<Vec<u8>> for Block {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == **other
    }
}

impl Eq for Block {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_of_any_alignment_moves_in_and_out_without_a_copy() {
        let floats: Vec<f64> = (0..1000).map(|i| i as f64 * 0.5).collect();
        let sent = floats.clone();
        let at = sent.as_ptr();
        let block = Block::from_vec(sent).unwrap();
        assert_eq!((block.len(), block.align()), (8000, 8));
        assert_eq!(&block[8..16], &0.5f64.to_ne_bytes());
        let back = block.into_vec::<f64>().unwrap();
        assert_eq!((back.as_ptr(), &back), (at, &floats));
        let bytes = Block::from(vec![1u8, 2, 3]);
        let ptr = bytes.as_ptr();
        let back = bytes.into_vec::<u8>().unwrap();
        assert_eq!((back.as_ptr(), back), (ptr, vec![1, 2, 3]));
    }

    #[test]
    fn a_block_of_another_alignment_or_length_is_refused() {
        // Bytes (alignment 1) asked for as `u32`s, or not a whole number of them: refused,
        // the block given back as it was.
        let bytes = Block::from(1u32.to_ne_bytes().repeat(3));
        let back = bytes.into_vec::<u32>().unwrap_err();
        assert_eq!((back.len(), back.align()), (12, 1));
        let odd = Block::from_vec(vec![0u32; 7]).unwrap();
        assert_eq!(odd.into_vec::<u64>().unwrap_err().len(), 28);
        // Made by a reader for `u64`s, filled, then taken as them.
        let mut made = Block::with_capacity(16, 8).unwrap();
        for (i, byte) in made.spare_capacity_mut().iter_mut().enumerate() {
            byte.write(if i % 8 == 0 { 9 } else { 0 });
        }
        // SAFETY: all 16 bytes were just written.
        unsafe { made.set_len(16) };
        assert_eq!(made.into_vec::<u64>().unwrap(), vec![9, 9]);
        // Bad alignments, and the empty block.
        assert!(Block::with_capacity(8, 3).is_none());
        assert!(Block::with_capacity(8, MAX_ALIGN * 2).is_none());
        let empty = Block::with_capacity(0, 8).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.into_vec::<f64>().unwrap(), Vec::<f64>::new());
        assert_eq!(Block::from_vec(vec![(); 3]).unwrap_err().len(), 3);
    }
}
