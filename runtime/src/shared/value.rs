//! `Value<T>`, a value with its own lock, and `RawValue<T>`, without.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::time::Duration;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::block::{Block, BlockHeader, RAW_VALUE_TAG, VALUE_TAG};
use crate::error::Result;
use crate::shm::Shared;
use crate::sync::{Lock, LockGuard, Sealed, WaitGuard};

/// A value shared by processes, with its own lock: Python's `multiprocessing.Value`.
///
/// [`lock`](Self::lock) returns a [`ValueGuard`] that derefs to the value, so
/// `*counter.lock()? += 1` is an atomic increment across processes. [`get`](Self::get) and
/// [`set`](Self::set) take the lock for one copy (Python's `.value`). `T` is plain old data
/// ([`Pod`]). Clones are handles to the same value; it can be sent to another process like a
/// [`Lock`] (the value is not copied: both map the same memory). A process that dies holding
/// the lock makes the next `lock()` return [`ErrorKind::OwnerDied`](crate::ErrorKind::OwnerDied).
///
/// ```no_run
/// use multiproc::{process, Process, Value};
///
/// #[process]
/// fn count(counter: Value<i64>) {
///     for _ in 0..10_000 {
///         *counter.lock().unwrap() += 1;
///     }
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let counter = Value::new(0i64)?;
///     let workers: Vec<_> = (0..4).map(|_| Process::new(count, counter.clone())).collect();
///     for p in &workers {
///         p.start()?;
///     }
///     for p in &workers {
///         p.join()?;
///     }
///     assert_eq!(counter.get()?, 40_000);
///     Ok(())
/// }
/// ```
pub struct Value<T> {
    block: Block<T>,
}

impl<T: Pod> Value<T> {
    /// A new shared value, with its lock, in its own shared memory segment.
    ///
    /// ```
    /// let v = multiproc::Value::new(1.5f64)?;
    /// assert_eq!(v.get()?, 1.5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: T) -> Result<Value<T>> {
        Ok(Value {
            block: Block::new(VALUE_TAG, 1, &[value])?,
        })
    }

    /// A new shared value without a lock: a [`RawValue`] (Python's `RawValue`, or `Value(...,
    /// lock=False)`).
    ///
    /// ```
    /// let v = multiproc::Value::raw(7u32)?;
    /// v.store(8);
    /// assert_eq!(v.load(), 8);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn raw(value: T) -> Result<RawValue<T>> {
        RawValue::new(value)
    }

    fn guard<'a>(&'a self, guard: LockGuard<'a>) -> ValueGuard<'a, T> {
        ValueGuard {
            guard,
            data: self.block.data(),
            _marker: PhantomData,
        }
    }

    /// Takes the lock: the guard derefs to the value and releases the lock on drop.
    ///
    /// Errors: [`ErrorKind::OwnerDied`](crate::ErrorKind::OwnerDied) when a process died
    /// holding the lock (released now: the next `lock()` succeeds; the value is whatever that
    /// process left), [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when this
    /// thread already holds it.
    ///
    /// ```
    /// let counter = multiproc::Value::new(0i64)?;
    /// *counter.lock()? += 1;
    /// assert_eq!(*counter.lock()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> Result<ValueGuard<'_, T>> {
        Ok(self.guard(self.block.lock().acquire()?))
    }

    /// Takes the lock, waiting at most `timeout`: `Ok(None)` when it ran out.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let v = multiproc::Value::new(0u8)?;
    /// let held = v.lock()?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| assert!(v.lock_timeout(Duration::from_millis(10)).unwrap().is_none()));
    /// });
    /// # drop(held);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<ValueGuard<'_, T>>> {
        Ok(self
            .block
            .lock()
            .acquire_timeout(timeout)?
            .map(|g| self.guard(g)))
    }

    /// Takes the lock if it is free: `Ok(None)` otherwise.
    ///
    /// ```
    /// let v = multiproc::Value::new(0u8)?;
    /// let held = v.try_lock()?.expect("free");
    /// assert!(v.try_lock()?.is_none());
    /// # drop(held);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> Result<Option<ValueGuard<'_, T>>> {
        Ok(self.block.lock().try_acquire()?.map(|g| self.guard(g)))
    }

    /// A copy of the value, read under the lock (Python's `v.value`).
    ///
    /// ```
    /// assert_eq!(multiproc::Value::new(3u16)?.get()?, 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        Ok(*self.lock()?)
    }

    /// Replaces the value under the lock (Python's `v.value = x`).
    ///
    /// ```
    /// let v = multiproc::Value::new(3u16)?;
    /// v.set(4)?;
    /// assert_eq!(v.get()?, 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, value: T) -> Result<()> {
        *self.lock()? = value;
        Ok(())
    }

    /// The value's lock (Python's `get_lock()`): to build a
    /// [`Condition`](crate::Condition) on it, for example. Locking it by hand gives no access
    /// to the value; [`lock`](Self::lock) does both.
    ///
    /// ```
    /// let v = multiproc::Value::new(0u32)?;
    /// let cond = multiproc::Condition::with_lock(v.get_lock().clone())?;
    /// # drop(cond);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> &Lock {
        self.block.lock()
    }
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            block: self.block.clone(),
        }
    }
}

impl<T> fmt::Debug for Value<T> {
    /// Shows the handle, not the value: reading it would take the lock.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("type", &std::any::type_name::<T>())
            .field("region", self.block.header().region())
            .finish()
    }
}

impl<T> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.block.header().serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let header = Shared::<BlockHeader>::deserialize(deserializer)?;
        let block = Block::from_header(header, VALUE_TAG).map_err(crate::error::de_error)?;
        Ok(Value { block })
    }
}

/// The lock of a [`Value`], held: derefs to the value; dropping it releases the lock.
///
/// Not `Send`: the thread that took the lock releases it. A [`Condition`](crate::Condition)
/// built on the value's lock can [`wait`](crate::Condition::wait) with it.
///
/// ```
/// let v = multiproc::Value::new([0u8; 4])?;
/// let mut bytes = v.lock()?;
/// bytes[1] = 9;
/// drop(bytes);
/// assert_eq!(v.get()?, [0, 9, 0, 0]);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T> {
    guard: LockGuard<'a>,
    data: NonNull<T>,
    _marker: PhantomData<&'a mut T>,
}

impl<T> Deref for ValueGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `data` points to the value, aligned, in a mapping the guard's lock keeps
        // alive; the lock is held by this thread for the guard's lifetime, and every access to
        // a `Value`'s data goes through such a guard, so nothing else touches it meanwhile.
        unsafe { self.data.as_ref() }
    }
}

impl<T> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference through the guard.
        unsafe { self.data.as_mut() }
    }
}

impl<T> Sealed for ValueGuard<'_, T> {
    fn held_lock(&self) -> &Lock {
        self.guard.lock()
    }
}

impl<T> WaitGuard for ValueGuard<'_, T> {}

impl<T: fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&**self).finish()
    }
}

/// A value shared by processes, without a lock: Python's `RawValue`.
///
/// [`load`](Self::load) and [`store`](Self::store) copy the value with atomic operations: a
/// value of 2, 4 or 8 bytes (aligned, as Rust's are) is never torn; a larger one may be read
/// half old, half new while another process writes it. Use a [`Value`] to update it safely.
///
/// ```
/// let flag = multiproc::RawValue::new(0u32)?;
/// let copy = flag.clone(); // the same memory: send it to another process
/// copy.store(1);
/// assert_eq!(flag.load(), 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RawValue<T> {
    block: Block<T>,
}

impl<T: Pod> RawValue<T> {
    /// A new shared value without a lock.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(1i32)?;
    /// assert_eq!(v.load(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: T) -> Result<RawValue<T>> {
        Ok(RawValue {
            block: Block::new(RAW_VALUE_TAG, 1, &[value])?,
        })
    }

    /// A copy of the value.
    ///
    /// ```
    /// assert_eq!(multiproc::RawValue::new(2.5f32)?.load(), 2.5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn load(&self) -> T {
        self.block.load(0).unwrap_or_else(T::zeroed)
    }

    /// Replaces the value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(0u64)?;
    /// v.store(u64::MAX);
    /// assert_eq!(v.load(), u64::MAX);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn store(&self, value: T) {
        // Cannot fail: element 0 exists.
        let _ = self.block.store(0, value);
    }
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            block: self.block.clone(),
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawValue").field(&self.load()).finish()
    }
}

impl<T> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.block.header().serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let header = Shared::<BlockHeader>::deserialize(deserializer)?;
        let block = Block::from_header(header, RAW_VALUE_TAG).map_err(crate::error::de_error)?;
        Ok(RawValue { block })
    }
}
