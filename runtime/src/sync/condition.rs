//! `Condition`: a condition variable shared by processes, on a robust [`Lock`].
//!
//! Built on a futex rather than glibc's process-shared `pthread_cond_t`, which a waiter killed
//! while blocked can wedge for good (see `raw.rs`). The state is three counters in shared
//! memory, changed only under the lock: `waiters` (in `wait`), `signals` (wake-ups granted and
//! not yet taken) and `seq` (the futex word, bumped by every notify). A waiter reads `seq`
//! under the lock, releases the lock, sleeps while `seq` is unchanged, takes the lock back and
//! consumes a signal if there is one. `notify(n)` grants at most `n` signals, and never more
//! than there are waiters without one: a notify wakes at most `n` waiters, as in Python.
//!
//! A waiter that dies while asleep holds no lock and leaves only its place in `waiters`: a
//! later `notify_all` grants it a signal nobody takes, which at worst makes a later wait
//! return early (a spurious wake-up, which condition variables allow anyway). Never a hang.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::lock::{owner_died, recover, Lock, LockGuard, LockState};
use super::raw::{
    futex_wait, futex_wake, Deadline, Locked, RawMutex, Wake, FIRST_CHECK, LAST_CHECK,
};
use crate::error::{Error, ErrorKind, Result};
use crate::shm::{Region, Shareable, Shared};

const CONDITION_TAG: u64 = u64::from_le_bytes(*b"mp:cond\0");

/// The shared state of a condition variable (its lock lives elsewhere).
#[repr(C)]
pub(crate) struct CondState {
    tag: AtomicU64,
    /// The futex word: bumped by every notify that grants signals.
    seq: AtomicU32,
    /// Threads inside `wait`.
    waiters: AtomicU32,
    /// Wake-ups granted by notify and not yet taken by a waiter.
    signals: AtomicU32,
}

// SAFETY: atomics only: any bytes are valid, no drop, all mutation atomic.
unsafe impl Shareable for CondState {
    const WHAT: &'static str = "a condition";
    fn is_valid(&self) -> bool {
        self.tag.load(Ordering::Relaxed) == CONDITION_TAG
    }
}

/// A waiter's sleep (the lock released): until a notify moves `seq` on, `deadline` passes, or
/// the lock's holder is found to have ended. A process that dies holding the lock without
/// notifying would otherwise leave every waiter asleep for good (nobody can notify through a
/// lock a dead process holds), and a barrier's waiters with them; woken, the waiter takes the
/// lock over and reports [`ErrorKind::OwnerDied`]. The holder is looked at as a mutex's
/// waiter looks at its owner: after 1 ms, then at most every 50 ms.
fn sleep(
    state: &CondState,
    seq: u32,
    deadline: Deadline,
    mutex: &RawMutex,
) -> std::io::Result<Wake> {
    let mut interval = FIRST_CHECK;
    loop {
        let woke = futex_wait(&state.seq, seq, deadline.earlier(Deadline::after(interval)))?;
        if woke == Wake::Maybe || deadline.expired() {
            return Ok(woke);
        }
        if mutex.holder_ended() {
            return Ok(Wake::Maybe);
        }
        interval = (interval * 2).min(LAST_CHECK);
    }
}

impl CondState {
    /// Leaves `wait` (under the lock).
    fn leave(&self) {
        let waiters = self.waiters.load(Ordering::Relaxed).saturating_sub(1);
        self.waiters.store(waiters, Ordering::Relaxed);
        let signals = self.signals.load(Ordering::Relaxed);
        self.signals.store(signals.min(waiters), Ordering::Relaxed);
    }

    /// Takes a granted signal, if any (under the lock).
    fn take_signal(&self) -> bool {
        let signals = self.signals.load(Ordering::Relaxed);
        if signals == 0 {
            return false;
        }
        self.signals.store(signals - 1, Ordering::Relaxed);
        true
    }

    /// After the lock's previous owner died: keeps the counters coherent (under the lock).
    fn repair(&self) {
        let waiters = self.waiters.load(Ordering::Relaxed);
        let signals = self.signals.load(Ordering::Relaxed);
        self.signals.store(signals.min(waiters), Ordering::Relaxed);
    }
}

mod sealed {
    /// Guards of a [`Lock`](crate::Lock): what a condition releases and takes back.
    pub trait Sealed {
        fn held_lock(&self) -> &crate::Lock;
    }
}

pub(crate) use sealed::Sealed;

/// A guard that [`Condition::wait`] can release while it waits and take back after:
/// [`LockGuard`], and the guards of [`Value`](crate::Value) and [`Array`](crate::Array) (so a
/// condition can share the lock of a value and wait on the value itself).
///
/// Sealed: only this crate's guards implement it.
///
/// ```
/// use std::time::Duration;
///
/// use multiproc::{Condition, Value, WaitGuard};
///
/// /// Waits (a little) on any guard of the condition's lock.
/// fn nap<G: WaitGuard>(cond: &Condition, guard: G) -> multiproc::Result<G> {
///     Ok(cond.wait_timeout(guard, Duration::from_millis(1))?.0)
/// }
///
/// let v = Value::new(1u8)?;
/// let cond = Condition::with_lock(v.get_lock().clone())?;
/// let guard = nap(&cond, v.lock()?)?; // a ValueGuard
/// assert_eq!(*guard, 1);
/// drop(guard);
/// let lock_guard = nap(&cond, cond.acquire()?)?; // a LockGuard of the same lock
/// # drop(lock_guard);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait WaitGuard: Sealed {}

impl Sealed for LockGuard<'_> {
    fn held_lock(&self) -> &Lock {
        self.lock()
    }
}

impl WaitGuard for LockGuard<'_> {}

/// A condition variable shared by processes: Python's `multiprocessing.Condition`.
///
/// It has a [`Lock`]: its own ([`new`](Self::new)), or one you give it
/// ([`with_lock`](Self::with_lock): the lock of a [`Value`](crate::Value) for example).
/// [`wait`](Self::wait) takes the guard of that lock, releases the lock while it sleeps, and
/// gives the guard back once notified, std-style; [`notify`](Self::notify) and friends may be
/// called with or without the lock held. Clones are handles to the same condition; it can be
/// sent to another process like a [`Lock`].
///
/// If a process dies holding the lock, the next acquire or `wait` of another process returns
/// [`ErrorKind::OwnerDied`] (the lock is released), as for a [`Lock`].
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
///
/// let cond = multiproc::Condition::new()?;
/// let ready = AtomicBool::new(false); // shared memory, in a real program
/// std::thread::scope(|s| -> multiproc::Result<()> {
///     s.spawn(|| {
///         let _guard = cond.acquire().unwrap();
///         ready.store(true, Ordering::SeqCst);
///         cond.notify_all().unwrap();
///     });
///     let guard = cond.acquire()?;
///     let _guard = cond.wait_for(guard, |_| ready.load(Ordering::SeqCst))?;
///     Ok(())
/// })?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Condition {
    state: Shared<CondState>,
    lock: Lock,
}

/// A condition and its own lock, in one region.
#[repr(C)]
struct WithOwnLock {
    cond: CondState,
    lock: LockState,
}

impl Condition {
    /// A new condition with its own lock (a [`Lock`]; Python's default is an `RLock`).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// drop(cond.acquire()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Condition> {
        let region = Arc::new(Region::new(
            "condition",
            std::mem::size_of::<WithOwnLock>(),
        )?);
        let lock = Lock::init_at(Arc::clone(&region), std::mem::offset_of!(WithOwnLock, lock))?;
        Condition::init_at(region, std::mem::offset_of!(WithOwnLock, cond), lock)
    }

    /// A new condition that uses `lock` (a clone of it: the same lock), like Python's
    /// `Condition(lock)`.
    ///
    /// ```
    /// let counter = multiproc::Value::new(0u32)?;
    /// let cond = multiproc::Condition::with_lock(counter.get_lock().clone())?;
    /// let mut n = counter.lock()?;
    /// *n += 1;
    /// cond.notify_all()?; // with the lock held: fine
    /// # drop(n);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(lock: Lock) -> Result<Condition> {
        let region = Arc::new(Region::new("condition", std::mem::size_of::<CondState>())?);
        Condition::init_at(region, 0, lock)
    }

    /// A condition at `offset` of `region`, which this process just created.
    pub(crate) fn init_at(region: Arc<Region>, offset: usize, lock: Lock) -> Result<Condition> {
        let state = Shared::<CondState>::at(region, offset)?;
        state.tag.store(CONDITION_TAG, Ordering::Release);
        Ok(Condition { state, lock })
    }

    /// The condition at `offset` of `region`, received from another process.
    pub(crate) fn existing_at(region: Arc<Region>, offset: usize, lock: Lock) -> Result<Condition> {
        let state = Shared::<CondState>::at(region, offset)?;
        if !state.is_valid() {
            return Err(Error::new(
                ErrorKind::Codec,
                "the shared memory received does not hold a condition where expected",
            ));
        }
        Ok(Condition { state, lock })
    }

    /// The condition's lock.
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let lock: &multiproc::Lock = cond.lock();
    /// drop(lock.acquire()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Acquires the condition's lock ([`Lock::acquire`]).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let guard = cond.acquire()?;
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        self.lock.acquire()
    }

    /// Acquires the condition's lock, waiting at most `timeout` ([`Lock::acquire_timeout`]).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let cond = multiproc::Condition::new()?;
    /// assert!(cond.acquire_timeout(Duration::from_millis(10))?.is_some());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_>>> {
        self.lock.acquire_timeout(timeout)
    }

    /// Acquires the condition's lock if it is free ([`Lock::try_acquire`]).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let guard = cond.try_acquire()?.expect("free");
    /// assert!(cond.try_acquire()?.is_none());
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Option<LockGuard<'_>>> {
        self.lock.try_acquire()
    }

    /// Releases the lock of `guard`, waits for a notification, takes the lock back and returns
    /// the guard. May wake up spuriously: wait in a loop on your predicate, or use
    /// [`wait_for`](Self::wait_for).
    ///
    /// Errors: [`ErrorKind::InvalidInput`] when `guard` is not a guard of this condition's
    /// lock (the guard is dropped); [`ErrorKind::OwnerDied`] when, on taking the lock back,
    /// its previous owner had died holding it (the guard is gone and the lock released).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let guard = cond.acquire()?;
    /// std::thread::scope(|s| -> multiproc::Result<()> {
    ///     s.spawn(|| cond.notify_one().unwrap()); // waits for the lock: after `wait` sleeps
    ///     let _guard = cond.wait(guard)?;
    ///     Ok(())
    /// })?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait<G: WaitGuard>(&self, guard: G) -> Result<G> {
        let (guard, _) = self.wait_until(guard, Deadline::NEVER)?;
        Ok(guard)
    }

    /// [`wait`](Self::wait) for at most `timeout`: the guard, and `false` when the time ran
    /// out before a notification (Python's `wait(timeout)` returning `False`).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let cond = multiproc::Condition::new()?;
    /// let (guard, notified) = cond.wait_timeout(cond.acquire()?, Duration::from_millis(10))?;
    /// assert!(!notified);
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout<G: WaitGuard>(&self, guard: G, timeout: Duration) -> Result<(G, bool)> {
        self.wait_until(guard, Deadline::after(timeout))
    }

    /// Waits until `predicate` holds (checked first, then after every wake-up, always with
    /// the lock held). The predicate gets the guard, to read what it protects.
    ///
    /// ```
    /// let count = multiproc::Value::new(0u32)?;
    /// let cond = multiproc::Condition::with_lock(count.get_lock().clone())?;
    /// std::thread::scope(|s| -> multiproc::Result<()> {
    ///     s.spawn(|| {
    ///         for _ in 0..3 {
    ///             *count.lock().unwrap() += 1;
    ///             cond.notify_all().unwrap();
    ///         }
    ///     });
    ///     let n = cond.wait_for(count.lock()?, |n| **n == 3)?;
    ///     assert_eq!(*n, 3);
    ///     Ok(())
    /// })?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_for<G: WaitGuard>(
        &self,
        guard: G,
        predicate: impl FnMut(&mut G) -> bool,
    ) -> Result<G> {
        let (guard, _) = self.wait_for_until(guard, Deadline::NEVER, predicate)?;
        Ok(guard)
    }

    /// [`wait_for`](Self::wait_for) for at most `timeout`: the guard, and the predicate's last
    /// value (`false`: the time ran out), like Python's `wait_for(predicate, timeout)`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let cond = multiproc::Condition::new()?;
    /// let (guard, ok) =
    ///     cond.wait_for_timeout(cond.acquire()?, Duration::from_millis(10), |_| false)?;
    /// assert!(!ok);
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_for_timeout<G: WaitGuard>(
        &self,
        guard: G,
        timeout: Duration,
        predicate: impl FnMut(&mut G) -> bool,
    ) -> Result<(G, bool)> {
        self.wait_for_until(guard, Deadline::after(timeout), predicate)
    }

    pub(crate) fn wait_for_until<G: WaitGuard>(
        &self,
        mut guard: G,
        deadline: Deadline,
        mut predicate: impl FnMut(&mut G) -> bool,
    ) -> Result<(G, bool)> {
        loop {
            if predicate(&mut guard) {
                return Ok((guard, true));
            }
            if deadline.expired() {
                return Ok((guard, false));
            }
            guard = self.wait_until(guard, deadline)?.0;
        }
    }

    pub(crate) fn wait_until<G: WaitGuard>(
        &self,
        guard: G,
        deadline: Deadline,
    ) -> Result<(G, bool)> {
        if !guard.held_lock().same_as(&self.lock) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "Condition::wait needs a guard of the condition's own lock",
            ));
        }
        let state = &*self.state;
        // Through the guard's own mapping of the lock: the condition may have mapped the same
        // segment separately (it arrived as another argument).
        let lock = guard.held_lock().clone();
        let mutex = lock.raw();
        state
            .waiters
            .store(state.waiters.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let mut seq = state.seq.load(Ordering::Relaxed);
        loop {
            if let Err(err) = mutex.unlock() {
                state.leave();
                return Err(Error::io("cannot release a condition's lock", err));
            }
            let woke = sleep(state, seq, deadline, mutex);
            match mutex.lock(Deadline::NEVER) {
                Ok(Locked::Yes) => {}
                Ok(Locked::OwnerDied) => {
                    state.leave();
                    std::mem::forget(guard);
                    recover(mutex, "lock")?;
                    return Err(owner_died("lock"));
                }
                Ok(Locked::No | Locked::Mine) => {
                    std::mem::forget(guard);
                    return Err(Error::new(
                        ErrorKind::Io,
                        "a condition could not take its lock back",
                    ));
                }
                Err(err) => {
                    std::mem::forget(guard);
                    return Err(Error::io("cannot take a condition's lock back", err));
                }
            }
            // The lock is held again: the guard is valid whatever happens next.
            let woke = match woke {
                Ok(woke) => woke,
                Err(err) => {
                    state.leave();
                    return Err(Error::io("cannot wait on a condition", err));
                }
            };
            if state.take_signal() {
                state.leave();
                return Ok((guard, true));
            }
            if woke == Wake::TimedOut || deadline.expired() {
                state.leave();
                return Ok((guard, false));
            }
            seq = state.seq.load(Ordering::Relaxed);
        }
    }

    /// Wakes at most `n` of the threads waiting on this condition, in any process (Python's
    /// `notify(n)`). Takes the lock for the time of the call unless the calling thread holds
    /// it (Python requires the caller to hold it).
    ///
    /// Errors: [`ErrorKind::OwnerDied`] when taking the lock found its previous owner dead
    /// (nobody was notified; the lock is released).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// cond.notify(2)?; // nobody waits: nothing happens
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify(&self, n: u32) -> Result<()> {
        self.notify_up_to(n)
    }

    /// Wakes one waiter ([`notify(1)`](Self::notify)).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let guard = cond.acquire()?;
    /// cond.notify_one()?; // the calling thread holds the lock: fine too
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify_one(&self) -> Result<()> {
        self.notify_up_to(1)
    }

    /// Wakes every waiter.
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// cond.notify_all()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify_all(&self) -> Result<()> {
        self.notify_up_to(u32::MAX)
    }

    fn notify_up_to(&self, n: u32) -> Result<()> {
        let state = &*self.state;
        let mutex = self.lock.raw();
        let locked_here = match mutex
            .lock(Deadline::NEVER)
            .map_err(|err| Error::io("cannot acquire a condition's lock", err))?
        {
            Locked::Yes => true,
            Locked::Mine => false,
            Locked::OwnerDied => {
                state.repair();
                recover(mutex, "lock")?;
                return Err(owner_died("lock"));
            }
            Locked::No => {
                return Err(Error::new(
                    ErrorKind::Io,
                    "a condition could not take its lock",
                ))
            }
        };
        let waiters = state.waiters.load(Ordering::Relaxed);
        let signals = state.signals.load(Ordering::Relaxed);
        let grant = n.min(waiters.saturating_sub(signals));
        if grant > 0 {
            state.signals.store(signals + grant, Ordering::Relaxed);
            state.seq.fetch_add(1, Ordering::Relaxed);
            // Woken with the lock still held: if this process dies before it releases the
            // lock, the waiters already run and see the death, instead of sleeping on.
            futex_wake(&state.seq, grant);
        }
        if locked_here {
            // Cannot fail: this thread holds the mutex, which is consistent.
            let _ = mutex.unlock();
        }
        Ok(())
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .field("waiters", &self.state.waiters.load(Ordering::Relaxed))
            .finish()
    }
}
