//! `Lock` and `RLock`: robust process-shared mutexes, with guards that release on drop.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::raw::{Deadline, Locked, MutexKind, RawMutex};
use crate::error::{Error, ErrorKind, Result};
use crate::shm::{Region, Shareable, Shared};

/// Tags that say what a shared region holds, checked when one arrives from another process.
pub(crate) const LOCK_TAG: u64 = u64::from_le_bytes(*b"mp:lock\0");
const RLOCK_TAG: u64 = u64::from_le_bytes(*b"mp:rlock");

/// The shared state of a lock: a tag and a robust process-shared mutex.
#[repr(C)]
pub(crate) struct LockState {
    tag: AtomicU64,
    mutex: RawMutex,
}

// SAFETY: atomics only (the mutex is three `AtomicU32`s): any bytes are a valid value, no
// drop, all mutation through atomics.
unsafe impl Shareable for LockState {
    const WHAT: &'static str = "a lock";
    fn is_valid(&self) -> bool {
        self.tag.load(Ordering::Relaxed) == LOCK_TAG
    }
}

/// The shared state of a recursive lock.
#[repr(C)]
pub(crate) struct RLockState(LockState);

// SAFETY: as for `LockState`.
unsafe impl Shareable for RLockState {
    const WHAT: &'static str = "a recursive lock";
    fn is_valid(&self) -> bool {
        self.0.tag.load(Ordering::Relaxed) == RLOCK_TAG
    }
}

impl LockState {
    /// Initializes a lock in a region that this process just created and has not shared.
    fn init(&self, kind: MutexKind, tag: u64) -> Result<()> {
        // The callers pass state in a region they just created (zero-filled, never shared).
        self.mutex.init(kind);
        self.tag.store(tag, Ordering::Release);
        Ok(())
    }
}

/// The error of an acquire that found the previous owner dead.
pub(crate) fn owner_died(what: &str) -> Error {
    Error::new(
        ErrorKind::OwnerDied,
        format!(
            "the process that held this {what} died; the data it protected may be inconsistent \
             (the {what} was released and can be acquired again)"
        ),
    )
}

/// Acquires `mutex` by `deadline` (`None`: try once). `Ok(true)`: the caller holds it.
///
/// When the previous owner died holding it, `on_owner_died` runs while the caller holds it
/// (to repair the state the lock protects, if the caller knows how), then the mutex is made
/// consistent and released, and the result is an [`ErrorKind::OwnerDied`] error.
pub(crate) fn acquire_raw(
    mutex: &RawMutex,
    deadline: Option<Deadline>,
    what: &str,
    on_owner_died: impl FnOnce(),
) -> Result<bool> {
    let outcome = match deadline {
        None => mutex.try_lock(),
        Some(deadline) => mutex.lock(deadline),
    }
    .map_err(|err| Error::io(format!("cannot acquire a {what}"), err))?;
    match outcome {
        Locked::Yes => Ok(true),
        Locked::No => Ok(false),
        // A try: held, by this thread (Python's `acquire(False)` says `False` too).
        Locked::Mine if deadline.is_none() => Ok(false),
        Locked::Mine => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "this thread already holds the {what}, which is not recursive: waiting for it \
                 would wait forever (use an RLock)"
            ),
        )),
        Locked::OwnerDied => {
            on_owner_died();
            recover(mutex, what)?;
            Err(owner_died(what))
        }
    }
}

/// After `Locked::OwnerDied`: releases the mutex, which works as before.
pub(crate) fn recover(mutex: &RawMutex, what: &str) -> Result<()> {
    mutex
        .unlock()
        .map_err(|err| Error::io(format!("cannot recover a {what} whose owner died"), err))
}

/// A lock shared by processes: Python's `multiprocessing.Lock`, as a robust mutex.
///
/// [`acquire`](Self::acquire) returns a [`LockGuard`]; dropping the guard releases the lock.
/// The lock is not recursive: acquiring it again in the thread that holds it is an
/// [`ErrorKind::InvalidInput`] error, not a deadlock. Clones are handles to the same lock, and
/// a lock can be an argument of [`Process::new`](crate::Process::new), of a pool task or
/// initializer, or a task's result: it travels as its shared memory's descriptor.
///
/// **When a process dies holding the lock**, the next acquire (in any process) returns an
/// [`ErrorKind::OwnerDied`] error promptly, instead of waiting forever as in CPython; the lock
/// is then free again, so the acquire after that succeeds. See the [crate docs](https://docs.rs/multiproc/latest/multiproc/#differences-from-python)
/// for the other differences from Python, notably: only the thread that acquired a lock can
/// release it (use a [`Semaphore`](crate::Semaphore) to hand a permit to another process).
///
/// ```
/// use std::time::Duration;
///
/// let lock = multiproc::Lock::new()?;
/// {
///     let _guard = lock.acquire()?;
///     // Held: another try fails, a timed acquire from another thread would time out.
///     assert!(lock.try_acquire()?.is_none());
/// } // released here
/// assert!(lock.acquire_timeout(Duration::from_millis(10))?.is_some());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lock {
    state: Shared<LockState>,
}

impl Lock {
    /// A new, unlocked lock in its own shared memory segment.
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// drop(lock.acquire()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Lock> {
        let region = Arc::new(Region::new("lock", std::mem::size_of::<LockState>())?);
        Lock::init_at(region, 0)
    }

    /// A new lock at `offset` of `region`, which this process just created and has not shared.
    pub(crate) fn init_at(region: Arc<Region>, offset: usize) -> Result<Lock> {
        let state = Shared::<LockState>::at(region, offset)?;
        state.init(MutexKind::ErrorCheck, LOCK_TAG)?;
        Ok(Lock { state })
    }

    /// The lock at `offset` of `region`, received from another process: checks its tag.
    pub(crate) fn existing_at(region: Arc<Region>, offset: usize) -> Result<Lock> {
        let state = Shared::<LockState>::at(region, offset)?;
        if !state.is_valid() {
            return Err(Error::new(
                ErrorKind::Codec,
                "the shared memory received does not hold a lock where expected",
            ));
        }
        Ok(Lock { state })
    }

    pub(crate) fn raw(&self) -> &RawMutex {
        &self.state.mutex
    }

    /// Whether `self` and `other` are handles to the same lock.
    pub(crate) fn same_as(&self, other: &Lock) -> bool {
        self.state.same_as(&other.state)
    }

    fn acquire_by(&self, deadline: Option<Deadline>) -> Result<Option<LockGuard<'_>>> {
        let held = acquire_raw(self.raw(), deadline, "lock", || {})?;
        Ok(held.then(|| LockGuard::new(self)))
    }

    /// Waits for the lock and returns a guard that releases it on drop.
    ///
    /// Errors: [`ErrorKind::OwnerDied`] when the previous owner died holding the lock (it is
    /// free again: retry), [`ErrorKind::InvalidInput`] when this thread already holds it.
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let guard = lock.acquire()?;
    /// let again = lock.acquire(); // the same thread: an error, not a deadlock
    /// assert_eq!(again.unwrap_err().kind(), multiproc::ErrorKind::InvalidInput);
    /// drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        self.acquire_by(Some(Deadline::NEVER))
            .and_then(super::without_deadline)
    }

    /// Waits for the lock at most `timeout`: `Ok(None)` when it ran out (Python's
    /// `acquire(timeout=t)` returning `False`). Errors as [`acquire`](Self::acquire).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let lock = multiproc::Lock::new()?;
    /// let held = lock.acquire()?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let attempt = lock.acquire_timeout(Duration::from_millis(20)).unwrap();
    ///         assert!(attempt.is_none(), "held by the other thread");
    ///     });
    /// });
    /// drop(held);
    /// assert!(lock.acquire_timeout(Duration::from_millis(20))?.is_some());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_>>> {
        self.acquire_by(Some(Deadline::after(timeout)))
    }

    /// Takes the lock if it is free: `Ok(None)` when anyone holds it, this thread included
    /// (Python's `acquire(False)`). Errors: [`ErrorKind::OwnerDied`].
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let guard = lock.try_acquire()?.expect("free");
    /// assert!(lock.try_acquire()?.is_none());
    /// drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Option<LockGuard<'_>>> {
        self.acquire_by(None)
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("region", self.state.region())
            .finish()
    }
}

/// Makes a type `!Send` (the mutex is released by the thread that locked it: it records its
/// owner's thread id) and keeps it `Sync`.
type NotSend = PhantomData<std::sync::MutexGuard<'static, ()>>;

/// Proof that the calling thread holds a [`Lock`]; dropping it releases the lock.
///
/// Not `Send`: the thread that acquired the lock releases it.
///
/// ```
/// let lock = multiproc::Lock::new()?;
/// let guard = lock.acquire()?;
/// drop(guard); // released
/// assert!(lock.try_acquire()?.is_some());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    _not_send: NotSend,
}

impl<'a> LockGuard<'a> {
    pub(crate) fn new(lock: &'a Lock) -> LockGuard<'a> {
        LockGuard {
            lock,
            _not_send: PhantomData,
        }
    }

    /// The lock this guard holds.
    pub(crate) fn lock(&self) -> &'a Lock {
        self.lock
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Cannot fail: this thread holds the mutex, which is consistent.
        let _ = self.lock.raw().unlock();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

/// A recursive lock shared by processes: Python's `multiprocessing.RLock`.
///
/// The thread that holds it may acquire it again; it is free once every [`RLockGuard`] is
/// dropped. Owner death, cloning and sending work as for [`Lock`].
///
/// ```
/// let rlock = multiproc::RLock::new()?;
/// let a = rlock.acquire()?;
/// let b = rlock.acquire()?; // the same thread: fine
/// drop(b);
/// drop(a); // free now
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RLock {
    state: Shared<RLockState>,
}

impl RLock {
    /// A new, unlocked recursive lock in its own shared memory segment.
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// assert!(rlock.try_acquire()?.is_some());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<RLock> {
        let region = Arc::new(Region::new("rlock", std::mem::size_of::<RLockState>())?);
        let state = Shared::<RLockState>::at(region, 0)?;
        state.0.init(MutexKind::Recursive, RLOCK_TAG)?;
        Ok(RLock { state })
    }

    fn acquire_by(&self, deadline: Option<Deadline>) -> Result<Option<RLockGuard<'_>>> {
        let held = acquire_raw(&self.state.0.mutex, deadline, "lock", || {})?;
        Ok(held.then(|| RLockGuard {
            rlock: self,
            _not_send: PhantomData,
        }))
    }

    /// Waits for the lock (at once when this thread holds it) and returns a guard.
    ///
    /// Errors: [`ErrorKind::OwnerDied`] when the previous owner died holding it (it is free
    /// again: retry).
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// let guards: Vec<_> = (0..3).map(|_| rlock.acquire()).collect::<Result<_, _>>()?;
    /// assert_eq!(guards.len(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<RLockGuard<'_>> {
        self.acquire_by(Some(Deadline::NEVER))
            .and_then(super::without_deadline)
    }

    /// Waits at most `timeout`: `Ok(None)` when it ran out.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let rlock = multiproc::RLock::new()?;
    /// let _held = rlock.acquire()?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| assert!(rlock.acquire_timeout(Duration::from_millis(20)).unwrap().is_none()));
    /// });
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<RLockGuard<'_>>> {
        self.acquire_by(Some(Deadline::after(timeout)))
    }

    /// Takes the lock if it is free or this thread holds it: `Ok(None)` otherwise.
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// let a = rlock.try_acquire()?.expect("free");
    /// let b = rlock.try_acquire()?.expect("mine: recursive");
    /// # drop((a, b));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Option<RLockGuard<'_>>> {
        self.acquire_by(None)
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("region", self.state.region())
            .finish()
    }
}

/// One level of holding an [`RLock`]; dropping it releases that level.
///
/// Not `Send`: the thread that acquired the lock releases it.
///
/// ```
/// let rlock = multiproc::RLock::new()?;
/// let outer = rlock.acquire()?;
/// let inner = rlock.acquire()?;
/// drop(inner); // still held once
/// drop(outer); // free
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the level is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    rlock: &'a RLock,
    _not_send: NotSend,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        // Cannot fail: this thread holds the mutex, which is consistent.
        let _ = self.rlock.state.0.mutex.unlock();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod mapping_tests {
    use super::*;

    #[test]
    fn a_forgotten_guard_leaves_nothing_behind() {
        // A leaked guard leaves its lock held, and nothing else: other locks of the thread
        // work after the leaked one is unmapped. (With glibc's robust mutexes, which link a
        // held mutex into a per-thread list inside the mutex, the next lock wrote to freed
        // memory.)
        std::thread::spawn(|| {
            let a = Lock::new().unwrap();
            std::mem::forget(a.acquire().unwrap());
            drop(a);
            let b = Lock::new().unwrap();
            drop(b.acquire().unwrap());
            let c = RLock::new().unwrap();
            std::mem::forget(c.acquire().unwrap());
            drop(c);
            drop(b.acquire().unwrap());
        })
        .join()
        .unwrap();
    }
}
