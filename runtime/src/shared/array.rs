//! `Array<T>`, a shared slice with its own lock, and `RawArray<T>`, without.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::time::Duration;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::block::{Block, BlockHeader, ARRAY_TAG, RAW_ARRAY_TAG};
use crate::error::Result;
use crate::shm::Shared;
use crate::sync::{Lock, LockGuard, Sealed, WaitGuard};

/// A fixed-length array shared by processes, with its own lock: Python's
/// `multiprocessing.Array`.
///
/// [`lock`](Self::lock) returns an [`ArrayGuard`] that derefs to `[T]`. `T` is plain old data
/// ([`Pod`]). Clones are handles to the same array; it can be sent to another process like a
/// [`Lock`] (the elements are not copied: both map the same memory). A process that dies
/// holding the lock makes the next `lock()` return
/// [`ErrorKind::OwnerDied`](crate::ErrorKind::OwnerDied).
///
/// ```
/// let a = multiproc::Array::from_slice(&[1.0f64, 2.0, 3.0])?;
/// {
///     let mut xs = a.lock()?;
///     for x in xs.iter_mut() {
///         *x *= 2.0;
///     }
/// }
/// assert_eq!(a.to_vec()?, [2.0, 4.0, 6.0]);
/// assert_eq!(a.len(), 3);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Array<T> {
    block: Block<T>,
}

impl<T: Pod> Array<T> {
    /// A new array of `len` zeros (Python's `Array('d', len)`).
    ///
    /// ```
    /// let a = multiproc::Array::<u32>::new(4)?;
    /// assert_eq!(a.to_vec()?, [0, 0, 0, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(len: usize) -> Result<Array<T>> {
        Ok(Array {
            block: Block::new(ARRAY_TAG, len, &[])?,
        })
    }

    /// A new array holding a copy of `values`.
    ///
    /// ```
    /// let a = multiproc::Array::from_slice(b"hello")?;
    /// assert_eq!(&*a.lock()?, b"hello");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_slice(values: &[T]) -> Result<Array<T>> {
        Ok(Array {
            block: Block::new(ARRAY_TAG, values.len(), values)?,
        })
    }

    /// A new array of `len` zeros without a lock: a [`RawArray`] (Python's `RawArray`).
    ///
    /// ```
    /// let a = multiproc::Array::<i16>::raw(3)?;
    /// assert_eq!(a.to_vec(), [0, 0, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn raw(len: usize) -> Result<RawArray<T>> {
        RawArray::new(len)
    }

    /// The number of elements.
    ///
    /// ```
    /// assert_eq!(multiproc::Array::<u8>::new(10)?.len(), 10);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.block.len()
    }

    /// Whether the array has no elements.
    ///
    /// ```
    /// assert!(multiproc::Array::<u8>::new(0)?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.block.len() == 0
    }

    fn guard<'a>(&'a self, guard: LockGuard<'a>) -> ArrayGuard<'a, T> {
        ArrayGuard {
            guard,
            data: self.block.data(),
            len: self.block.len(),
            _marker: PhantomData,
        }
    }

    /// Takes the lock: the guard derefs to the elements and releases the lock on drop.
    ///
    /// Errors: [`ErrorKind::OwnerDied`](crate::ErrorKind::OwnerDied) when a process died
    /// holding the lock (released now: the next `lock()` succeeds),
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when this thread already
    /// holds it.
    ///
    /// ```
    /// let a = multiproc::Array::<u64>::new(3)?;
    /// a.lock()?[2] = 7;
    /// assert_eq!(a.lock()?.iter().sum::<u64>(), 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>> {
        Ok(self.guard(self.block.lock().acquire()?))
    }

    /// Takes the lock, waiting at most `timeout`: `Ok(None)` when it ran out.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let a = multiproc::Array::<u8>::new(1)?;
    /// assert!(a.lock_timeout(Duration::from_millis(10))?.is_some());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<ArrayGuard<'_, T>>> {
        Ok(self
            .block
            .lock()
            .acquire_timeout(timeout)?
            .map(|g| self.guard(g)))
    }

    /// Takes the lock if it is free: `Ok(None)` otherwise.
    ///
    /// ```
    /// let a = multiproc::Array::<u8>::new(1)?;
    /// let held = a.try_lock()?.expect("free");
    /// assert!(a.try_lock()?.is_none());
    /// # drop(held);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> Result<Option<ArrayGuard<'_, T>>> {
        Ok(self.block.lock().try_acquire()?.map(|g| self.guard(g)))
    }

    /// A copy of the elements, read under the lock (Python's `a[:]`).
    ///
    /// ```
    /// let a = multiproc::Array::from_slice(&[1u8, 2])?;
    /// assert_eq!(a.to_vec()?, vec![1, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        Ok(self.lock()?.to_vec())
    }

    /// The array's lock (Python's `get_lock()`), to build a [`Condition`](crate::Condition)
    /// on it, for example.
    ///
    /// ```
    /// let a = multiproc::Array::<u8>::new(1)?;
    /// let cond = multiproc::Condition::with_lock(a.get_lock().clone())?;
    /// # drop(cond);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> &Lock {
        self.block.lock()
    }
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            block: self.block.clone(),
        }
    }
}

impl<T> fmt::Debug for Array<T> {
    /// Shows the handle, not the elements: reading them would take the lock.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.block.len())
            .field("region", self.block.header().region())
            .finish()
    }
}

impl<T> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.block.header().serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let header = Shared::<BlockHeader>::deserialize(deserializer)?;
        let block = Block::from_header(header, ARRAY_TAG).map_err(crate::error::de_error)?;
        Ok(Array { block })
    }
}

/// The lock of an [`Array`], held: derefs to `[T]`; dropping it releases the lock.
///
/// Not `Send`: the thread that took the lock releases it. A [`Condition`](crate::Condition)
/// built on the array's lock can [`wait`](crate::Condition::wait) with it.
///
/// ```
/// let a = multiproc::Array::<i32>::new(3)?;
/// let mut xs = a.lock()?;
/// xs.copy_from_slice(&[3, 1, 2]);
/// xs.sort();
/// assert_eq!(*xs, [1, 2, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T> {
    guard: LockGuard<'a>,
    data: NonNull<T>,
    len: usize,
    _marker: PhantomData<&'a mut [T]>,
}

impl<T> Deref for ArrayGuard<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `data` points to `len` aligned elements in a mapping the guard's lock keeps
        // alive; the lock is held by this thread for the guard's lifetime, and every access to
        // an `Array`'s data goes through such a guard, so nothing else touches it meanwhile.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference through the guard.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), self.len) }
    }
}

impl<T> Sealed for ArrayGuard<'_, T> {
    fn held_lock(&self) -> &Lock {
        self.guard.lock()
    }
}

impl<T> WaitGuard for ArrayGuard<'_, T> {}

impl<T: fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&&**self).finish()
    }
}

/// A fixed-length array shared by processes, without a lock: Python's `RawArray`.
///
/// Elements are copied in and out with atomic operations: an element of 2, 4 or 8 bytes is
/// never torn; a larger one may be read half old, half new while another process writes it.
///
/// ```
/// let a = multiproc::RawArray::<u32>::new(3)?;
/// a.set(1, 5)?;
/// assert_eq!(a.get(1), Some(5));
/// assert_eq!(a.get(3), None);
/// assert!(a.set(3, 0).is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RawArray<T> {
    block: Block<T>,
}

impl<T: Pod> RawArray<T> {
    /// A new array of `len` zeros, without a lock.
    ///
    /// ```
    /// assert_eq!(multiproc::RawArray::<u8>::new(2)?.to_vec(), [0, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(len: usize) -> Result<RawArray<T>> {
        Ok(RawArray {
            block: Block::new(RAW_ARRAY_TAG, len, &[])?,
        })
    }

    /// A new array holding a copy of `values`, without a lock.
    ///
    /// ```
    /// let a = multiproc::RawArray::from_slice(&[1i64, -1])?;
    /// assert_eq!(a.get(1), Some(-1));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_slice(values: &[T]) -> Result<RawArray<T>> {
        Ok(RawArray {
            block: Block::new(RAW_ARRAY_TAG, values.len(), values)?,
        })
    }

    /// The number of elements.
    ///
    /// ```
    /// assert_eq!(multiproc::RawArray::<u8>::new(3)?.len(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.block.len()
    }

    /// Whether the array has no elements.
    ///
    /// ```
    /// assert!(!multiproc::RawArray::<u8>::new(1)?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.block.len() == 0
    }

    /// A copy of element `index`; `None` past the end.
    ///
    /// ```
    /// let a = multiproc::RawArray::from_slice(&[4u8])?;
    /// assert_eq!((a.get(0), a.get(1)), (Some(4), None));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Option<T> {
        self.block.load(index)
    }

    /// Replaces element `index`; an [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)
    /// error past the end.
    ///
    /// ```
    /// let a = multiproc::RawArray::<f32>::new(1)?;
    /// a.set(0, 0.5)?;
    /// assert!(a.set(1, 0.5).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.block.store(index, value)
    }

    /// A copy of every element.
    ///
    /// ```
    /// assert_eq!(multiproc::RawArray::from_slice(&[1u16, 2])?.to_vec(), [1, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        // Cannot fail: the elements fit the segment (checked when mapped).
        self.block.load_all().unwrap_or_default()
    }

    /// Replaces every element with `values`, which must have the array's length.
    ///
    /// ```
    /// let a = multiproc::RawArray::<u8>::new(2)?;
    /// a.copy_from_slice(&[7, 8])?;
    /// assert!(a.copy_from_slice(&[1]).is_err());
    /// assert_eq!(a.to_vec(), [7, 8]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn copy_from_slice(&self, values: &[T]) -> Result<()> {
        self.block.store_all(values)
    }
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            block: self.block.clone(),
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawArray").field(&self.to_vec()).finish()
    }
}

impl<T> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.block.header().serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let header = Shared::<BlockHeader>::deserialize(deserializer)?;
        let block = Block::from_header(header, RAW_ARRAY_TAG).map_err(crate::error::de_error)?;
        Ok(RawArray { block })
    }
}
