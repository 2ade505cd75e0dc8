//! What `Value`, `Array` and their raw kinds share: a region with a header (tag, element size,
//! length, lock) followed by the elements.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::shm::{unit_of, Region, Shareable, Shared};
use crate::sync::{Lock, LockState};

pub(crate) const VALUE_TAG: u64 = u64::from_le_bytes(*b"mp:value");
pub(crate) const ARRAY_TAG: u64 = u64::from_le_bytes(*b"mp:array");
pub(crate) const RAW_VALUE_TAG: u64 = u64::from_le_bytes(*b"mp:rawvl");
pub(crate) const RAW_ARRAY_TAG: u64 = u64::from_le_bytes(*b"mp:rawar");

const PAGE: usize = 4096;

#[repr(C)]
pub(crate) struct BlockHeader {
    tag: AtomicU64,
    elem_size: AtomicU64,
    len: AtomicU64,
    lock: LockState,
}

// SAFETY: atomics and a `Shareable` lock state: any bytes are valid, no drop, all mutation
// atomic.
unsafe impl Shareable for BlockHeader {
    const WHAT: &'static str = "a shared value or array";
    fn is_valid(&self) -> bool {
        matches!(
            self.tag.load(Ordering::Relaxed),
            VALUE_TAG | ARRAY_TAG | RAW_VALUE_TAG | RAW_ARRAY_TAG
        )
    }
}

/// `len` elements of `T` after a header, in a shared region.
pub(crate) struct Block<T> {
    header: Shared<BlockHeader>,
    lock: Lock,
    len: usize,
    _marker: PhantomData<T>,
}

impl<T> Clone for Block<T> {
    fn clone(&self) -> Self {
        Block {
            header: self.header.clone(),
            lock: self.lock.clone(),
            len: self.len,
            _marker: PhantomData,
        }
    }
}

fn what(tag: u64) -> &'static str {
    match tag {
        VALUE_TAG => "a Value",
        ARRAY_TAG => "an Array",
        RAW_VALUE_TAG => "a RawValue",
        _ => "a RawArray",
    }
}

impl<T> Block<T> {
    pub(crate) fn header(&self) -> &Shared<BlockHeader> {
        &self.header
    }

    pub(crate) fn lock(&self) -> &Lock {
        &self.lock
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl<T: Pod> Block<T> {
    fn data_offset() -> Result<usize> {
        if std::mem::size_of::<T>() == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} has no size: there is nothing to share",
                    std::any::type_name::<T>()
                ),
            ));
        }
        if std::mem::align_of::<T>() > PAGE {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "shared values cannot be aligned to more than {PAGE} bytes ({} wants {})",
                    std::any::type_name::<T>(),
                    std::mem::align_of::<T>()
                ),
            ));
        }
        Ok(std::mem::size_of::<BlockHeader>().next_multiple_of(std::mem::align_of::<T>()))
    }

    /// A new block of `len` elements, zeros, then `init` copied in front.
    pub(crate) fn new(tag: u64, len: usize, init: &[T]) -> Result<Block<T>> {
        let offset = Self::data_offset()?;
        let size = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|bytes| bytes.checked_add(offset))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("{} of {len} elements is too large", what(tag)),
                )
            })?;
        let name = match tag {
            VALUE_TAG => "value",
            ARRAY_TAG => "array",
            RAW_VALUE_TAG => "raw-value",
            _ => "raw-array",
        };
        let region = Arc::new(Region::new(name, size)?);
        region.write_units(offset, bytemuck::cast_slice(init), unit_of::<T>())?;
        let lock = Lock::init_at(Arc::clone(&region), std::mem::offset_of!(BlockHeader, lock))?;
        let header = Shared::<BlockHeader>::at(region, 0)?;
        header
            .elem_size
            .store(std::mem::size_of::<T>() as u64, Ordering::Relaxed);
        header.len.store(len as u64, Ordering::Relaxed);
        header.tag.store(tag, Ordering::Release);
        Ok(Block {
            header,
            lock,
            len,
            _marker: PhantomData,
        })
    }

    /// A block received from another process: checks what it is, and that it fits.
    pub(crate) fn from_header(header: Shared<BlockHeader>, tag: u64) -> Result<Block<T>> {
        let found = header.tag.load(Ordering::Acquire);
        let elem_size = header.elem_size.load(Ordering::Relaxed);
        let mismatch = |detail: String| {
            Error::new(
                ErrorKind::Codec,
                format!(
                    "the shared memory received is not {} of {}: {detail}",
                    what(tag),
                    std::any::type_name::<T>()
                ),
            )
        };
        if found != tag {
            return Err(mismatch(format!("it is {}", what(found))));
        }
        if elem_size != std::mem::size_of::<T>() as u64 {
            return Err(mismatch(format!("its elements are {elem_size} bytes")));
        }
        let len = usize::try_from(header.len.load(Ordering::Relaxed))
            .map_err(|_| mismatch("too long".into()))?;
        let fits = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|bytes| bytes.checked_add(Self::data_offset().ok()?))
            .is_some_and(|end| end <= header.region().len());
        if !fits {
            return Err(mismatch(format!("{len} elements do not fit its segment")));
        }
        let lock = Lock::existing_at(
            Arc::clone(header.region()),
            std::mem::offset_of!(BlockHeader, lock),
        )?;
        Ok(Block {
            header,
            lock,
            len,
            _marker: PhantomData,
        })
    }

    /// The first element (aligned, inside the mapping, valid for `len` elements).
    pub(crate) fn data(&self) -> NonNull<T> {
        let offset = Self::data_offset().unwrap_or(0);
        let base = self.header.region().as_ptr();
        // `new` and `from_header` checked that `len` elements fit at `offset`, aligned.
        NonNull::new(base.wrapping_add(offset).cast::<T>()).unwrap_or(NonNull::dangling())
    }

    /// Copies element `index` out with atomic loads.
    pub(crate) fn load(&self, index: usize) -> Option<T> {
        if index >= self.len {
            return None;
        }
        let mut value = T::zeroed();
        let offset = Self::data_offset().ok()? + index * std::mem::size_of::<T>();
        self.header
            .region()
            .read_units(offset, bytemuck::bytes_of_mut(&mut value), unit_of::<T>())
            .ok()?;
        Some(value)
    }

    /// Copies `value` into element `index` with atomic stores.
    pub(crate) fn store(&self, index: usize, value: T) -> Result<()> {
        if index >= self.len {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("index {index} is out of an array of {}", self.len),
            ));
        }
        let offset = Self::data_offset()? + index * std::mem::size_of::<T>();
        self.header
            .region()
            .write_units(offset, bytemuck::bytes_of(&value), unit_of::<T>())
    }

    /// Copies every element out with atomic loads.
    pub(crate) fn load_all(&self) -> Result<Vec<T>> {
        let mut out = vec![T::zeroed(); self.len];
        self.header.region().read_units(
            Self::data_offset()?,
            bytemuck::cast_slice_mut(&mut out),
            unit_of::<T>(),
        )?;
        Ok(out)
    }

    /// Copies `values` over the elements with atomic stores (same length).
    pub(crate) fn store_all(&self, values: &[T]) -> Result<()> {
        if values.len() != self.len {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} values cannot fill an array of {}",
                    values.len(),
                    self.len
                ),
            ));
        }
        self.header.region().write_units(
            Self::data_offset()?,
            bytemuck::cast_slice(values),
            unit_of::<T>(),
        )
    }
}
