//! `Semaphore` and `BoundedSemaphore`: a counter in shared memory and a futex to sleep on.
//!
//! No lock: acquire is a compare-and-swap that takes a unit, or a futex wait while the counter
//! is zero; release adds a unit and wakes one sleeper. A process that dies in a wait leaves
//! nothing behind (at worst a stale sleeper count, which only costs a spurious wake-up call).
//! A unit held by a process that dies is lost, as in Python: a semaphore has no owner.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::raw::{futex_wait, futex_wake, Deadline, Wake};
use crate::error::{Error, ErrorKind, Result};
use crate::shm::{Region, Shareable, Shared};

const SEMAPHORE_TAG: u64 = u64::from_le_bytes(*b"mp:sem\0\0");
const BOUNDED_TAG: u64 = u64::from_le_bytes(*b"mp:bsem\0");

/// The largest value of a semaphore (Python's `SEM_VALUE_MAX` on Linux).
///
/// ```
/// use multiproc::SEM_VALUE_MAX;
///
/// let sem = multiproc::Semaphore::new(SEM_VALUE_MAX)?;
/// assert!(sem.release().is_err()); // no room above the maximum
/// # Ok::<(), multiproc::Error>(())
/// ```
pub const SEM_VALUE_MAX: u32 = i32::MAX as u32;

/// The shared state of a semaphore.
#[repr(C)]
pub(crate) struct SemState {
    tag: AtomicU64,
    /// The units available; the futex word.
    value: AtomicU32,
    /// Processes (threads) asleep in `futex_wait`, or about to be.
    sleepers: AtomicU32,
    /// The value `release` may not exceed.
    max: AtomicU32,
}

// SAFETY: atomics only: any bytes are valid, no drop, all mutation atomic.
unsafe impl Shareable for SemState {
    const WHAT: &'static str = "a semaphore";
    fn is_valid(&self) -> bool {
        self.tag.load(Ordering::Relaxed) == SEMAPHORE_TAG
    }
}

/// The shared state of a bounded semaphore (the same, with another tag).
#[repr(C)]
pub(crate) struct BoundedState(SemState);

// SAFETY: as for `SemState`.
unsafe impl Shareable for BoundedState {
    const WHAT: &'static str = "a bounded semaphore";
    fn is_valid(&self) -> bool {
        self.0.tag.load(Ordering::Relaxed) == BOUNDED_TAG
    }
}

impl SemState {
    fn init(&self, tag: u64, value: u32, max: u32) -> Result<()> {
        if value > max {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("a semaphore's value must be at most {max}, not {value}"),
            ));
        }
        self.value.store(value, Ordering::Relaxed);
        self.max.store(max, Ordering::Relaxed);
        self.tag.store(tag, Ordering::Release);
        Ok(())
    }

    fn try_take(&self) -> bool {
        let mut value = self.value.load(Ordering::Relaxed);
        while value > 0 {
            match self.value.compare_exchange_weak(
                value,
                value - 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => value = now,
            }
        }
        false
    }

    /// Takes a unit by `deadline`: `Ok(false)` when it passed first.
    fn take(&self, deadline: Deadline) -> Result<bool> {
        loop {
            if self.try_take() {
                return Ok(true);
            }
            // Announce the sleep before the kernel checks the value: a release that adds a
            // unit after this sees the sleeper and wakes it, one before makes the wait return.
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let woke = futex_wait(&self.value, 0, deadline);
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            match woke.map_err(|err| Error::io("cannot wait on a semaphore", err))? {
                Wake::Maybe => {}
                Wake::TimedOut => return Ok(self.try_take()),
            }
        }
    }

    fn give(&self, what: &str) -> Result<()> {
        let max = self.max.load(Ordering::Relaxed);
        let mut value = self.value.load(Ordering::Relaxed);
        loop {
            if value >= max {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("{what} released too many times (its value is at most {max})"),
                ));
            }
            match self.value.compare_exchange_weak(
                value,
                value + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => value = now,
            }
        }
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            futex_wake(&self.value, 1);
        }
        Ok(())
    }

    fn value(&self) -> u32 {
        self.value.load(Ordering::SeqCst)
    }
}

/// A semaphore shared by processes: Python's `multiprocessing.Semaphore`.
///
/// A counter of units: [`acquire`](Self::acquire) takes one (waiting while there are none) and
/// returns a [`SemaphoreGuard`] that gives it back on drop, or keeps it taken with
/// [`SemaphoreGuard::forget`]; [`release`](Self::release) adds one, from any thread or process
/// (a semaphore has no owner). A unit held by a process that dies is not given back, as in
/// Python. Clones are handles to the same semaphore; it can be sent to another process like a
/// [`Lock`](crate::Lock).
///
/// ```
/// let sem = multiproc::Semaphore::new(2)?;
/// let a = sem.acquire()?;
/// let b = sem.acquire()?;
/// assert!(sem.try_acquire().is_none());
/// drop(a);
/// assert_eq!(sem.get_value(), 1);
/// # drop(b);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Semaphore {
    state: Shared<SemState>,
}

impl Semaphore {
    /// A new semaphore with `value` units (Python's default is 1); at most [`SEM_VALUE_MAX`].
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(0)?;
    /// assert!(sem.try_acquire().is_none());
    /// assert!(multiproc::Semaphore::new(u32::MAX).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<Semaphore> {
        let region = Arc::new(Region::new("semaphore", std::mem::size_of::<SemState>())?);
        let state = Shared::<SemState>::at(region, 0)?;
        state.init(SEMAPHORE_TAG, value, SEM_VALUE_MAX)?;
        Ok(Semaphore { state })
    }

    /// Takes a unit, waiting while there is none.
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(1)?;
    /// let permit = sem.acquire()?;
    /// assert_eq!(sem.get_value(), 0);
    /// drop(permit);
    /// assert_eq!(sem.get_value(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<SemaphoreGuard<'_>> {
        self.acquire_by(Deadline::NEVER)
            .and_then(super::without_deadline)
    }

    /// Takes a unit, waiting at most `timeout`: `Ok(None)` when it ran out (Python's
    /// `acquire(timeout=t)` returning `False`).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let sem = multiproc::Semaphore::new(0)?;
    /// assert!(sem.acquire_timeout(Duration::from_millis(10))?.is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<SemaphoreGuard<'_>>> {
        self.acquire_by(Deadline::after(timeout))
    }

    fn acquire_by(&self, deadline: Deadline) -> Result<Option<SemaphoreGuard<'_>>> {
        Ok(self
            .state
            .take(deadline)?
            .then(|| SemaphoreGuard { state: &self.state }))
    }

    /// Takes a unit if there is one (Python's `acquire(False)`).
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(1)?;
    /// let permit = sem.try_acquire().expect("one unit");
    /// assert!(sem.try_acquire().is_none());
    /// # drop(permit);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
        self.state
            .try_take()
            .then(|| SemaphoreGuard { state: &self.state })
    }

    /// Adds a unit and wakes one waiter. An error ([`ErrorKind::InvalidInput`]) only past
    /// [`SEM_VALUE_MAX`].
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(0)?;
    /// sem.release()?;
    /// sem.release()?;
    /// assert_eq!(sem.get_value(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.state.give("a semaphore")
    }

    /// The units available now (Python's `get_value()`); another process may change it at any
    /// time.
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(3)?;
    /// assert_eq!(sem.get_value(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_value(&self) -> u32 {
        self.state.value()
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.get_value())
            .finish()
    }
}

/// A semaphore whose value may not exceed its initial value: Python's
/// `multiprocessing.BoundedSemaphore`. A [`release`](Self::release) past it is an
/// [`ErrorKind::InvalidInput`] error (Python's `ValueError`).
///
/// ```
/// let sem = multiproc::BoundedSemaphore::new(1)?;
/// let permit = sem.acquire()?;
/// permit.forget(); // keep the unit taken...
/// sem.release()?; // ...and give it back by hand
/// let err = sem.release().unwrap_err(); // one too many
/// assert_eq!(err.kind(), multiproc::ErrorKind::InvalidInput);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundedSemaphore {
    state: Shared<BoundedState>,
}

impl BoundedSemaphore {
    /// A new bounded semaphore with `value` units, which is also its maximum.
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(2)?;
    /// assert_eq!((sem.get_value(), sem.max_value()), (2, 2));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        let region = Arc::new(Region::new(
            "bounded-semaphore",
            std::mem::size_of::<BoundedState>(),
        )?);
        let state = Shared::<BoundedState>::at(region, 0)?;
        state.0.init(BOUNDED_TAG, value, value.min(SEM_VALUE_MAX))?;
        Ok(BoundedSemaphore { state })
    }

    fn acquire_by(&self, deadline: Deadline) -> Result<Option<SemaphoreGuard<'_>>> {
        Ok(self.state.0.take(deadline)?.then(|| SemaphoreGuard {
            state: &self.state.0,
        }))
    }

    /// Takes a unit, waiting while there is none.
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(1)?;
    /// drop(sem.acquire()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<SemaphoreGuard<'_>> {
        self.acquire_by(Deadline::NEVER)
            .and_then(super::without_deadline)
    }

    /// Takes a unit, waiting at most `timeout`: `Ok(None)` when it ran out.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let sem = multiproc::BoundedSemaphore::new(1)?;
    /// let _held = sem.acquire()?;
    /// assert!(sem.acquire_timeout(Duration::from_millis(10))?.is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<SemaphoreGuard<'_>>> {
        self.acquire_by(Deadline::after(timeout))
    }

    /// Takes a unit if there is one.
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(1)?;
    /// assert!(sem.try_acquire().is_some());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
        self.state.0.try_take().then(|| SemaphoreGuard {
            state: &self.state.0,
        })
    }

    /// Adds a unit and wakes one waiter; an [`ErrorKind::InvalidInput`] error when the value
    /// is already at its maximum.
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(1)?;
    /// assert!(sem.release().is_err()); // already at 1
    /// sem.acquire()?.forget();
    /// sem.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.state.0.give("a bounded semaphore")
    }

    /// The units available now.
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(4)?;
    /// let _one = sem.acquire()?;
    /// assert_eq!(sem.get_value(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_value(&self) -> u32 {
        self.state.0.value()
    }

    /// The maximum value: the initial one.
    ///
    /// ```
    /// assert_eq!(multiproc::BoundedSemaphore::new(5)?.max_value(), 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn max_value(&self) -> u32 {
        self.state.0.max.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("value", &self.get_value())
            .field("max_value", &self.max_value())
            .finish()
    }
}

/// A unit taken from a [`Semaphore`] or [`BoundedSemaphore`], given back on drop.
///
/// Unlike a lock guard it is `Send`: a semaphore has no owner.
///
/// ```
/// let sem = multiproc::Semaphore::new(1)?;
/// let permit = sem.acquire()?;
/// std::thread::scope(|s| {
///     s.spawn(move || drop(permit)); // another thread gives it back
/// });
/// assert_eq!(sem.get_value(), 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the unit is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    state: &'a SemState,
}

impl SemaphoreGuard<'_> {
    /// Keeps the unit taken: nothing is given back on drop. Another thread or process gives
    /// it back later with `release` (how a bounded queue counts its free slots).
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(1)?;
    /// sem.acquire()?.forget();
    /// assert_eq!(sem.get_value(), 0);
    /// sem.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Only fails when someone released units by hand past the maximum meanwhile; the unit
        // is then not needed.
        let _ = self.state.give("a semaphore");
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard").finish_non_exhaustive()
    }
}
