//! `Barrier`: Python's `threading.Barrier` algorithm on a shared lock, condition and counters.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::condition::{CondState, Condition};
use super::lock::{Lock, LockGuard, LockState};
use super::raw::Deadline;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{self, Encoded, SharedFd};
use crate::registry::{self, Entry, Target};
use crate::shm::{Region, Shareable, Shared};

const BARRIER_TAG: u64 = u64::from_le_bytes(*b"mp:barri");

/// Filling: parties arrive.
const FILLING: i32 = 0;
/// Draining: the barrier tripped; the parties leave.
const DRAINING: i32 = 1;
/// Resetting: `reset` was called while parties waited; they leave with an error.
const RESETTING: i32 = -1;
/// Broken: `abort`, a timeout, a failed action or a dead owner.
const BROKEN: i32 = -2;

/// No default timeout.
const NO_TIMEOUT: u64 = u64::MAX;

#[repr(C)]
pub(crate) struct BarrierState {
    tag: AtomicU64,
    /// Default timeout of `wait`, in nanoseconds (`NO_TIMEOUT`: none).
    timeout_ns: AtomicU64,
    parties: AtomicU32,
    /// Parties inside `wait`.
    count: AtomicU32,
    state: AtomicI32,
    lock: LockState,
    cond: CondState,
}

// SAFETY: atomics, and a lock and condition state that are `Shareable` themselves.
unsafe impl Shareable for BarrierState {
    const WHAT: &'static str = "a barrier";
    fn is_valid(&self) -> bool {
        self.tag.load(Ordering::Relaxed) == BARRIER_TAG
    }
}

/// The action: a registered worker, found by name in every process, and its encoded
/// arguments with the descriptors they carry (a `Value` to count passes in, say).
struct Action {
    entry: &'static Entry,
    args: Vec<u8>,
    fds: Vec<SharedFd>,
}

impl Action {
    fn new(name: &str, encoded: Encoded) -> Result<Action> {
        Ok(Action {
            entry: registry::lookup(name)?,
            args: encoded.bytes,
            fds: encoded.fds.into_iter().map(SharedFd::new).collect(),
        })
    }

    /// Runs the worker on (a fresh decoding of) its arguments.
    fn run(&self) -> Result<()> {
        let fds = self
            .fds
            .iter()
            .map(|fd| fd.try_clone().map(SharedFd::into_inner))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|err| Error::io("cannot duplicate the barrier action's descriptors", err))?;
        handle::with_incoming(fds, || self.entry.invoke(&self.args)).map(drop)
    }
}

/// A barrier shared by processes: Python's `multiprocessing.Barrier`.
///
/// `parties` processes (or threads) call [`wait`](Self::wait); the last to arrive runs the
/// optional action, and then all of them go on, each with a distinct index in `0..parties`.
/// The barrier can be used again at once. [`abort`](Self::abort), a wait that times out, an
/// action that panics or a process that dies holding the barrier's lock **break** it: every
/// pending and later `wait` fails with [`ErrorKind::BrokenBarrier`] until
/// [`reset`](Self::reset). Clones are handles to the same barrier; it can be sent to another
/// process like a [`Lock`].
///
/// A party that dies inside `wait` stays counted: the round it died in trips one party early
/// (the survivors go on with a party missing), and the barrier cannot drain any more, so the
/// next round waits until its timeout breaks it, and even [`reset`](Self::reset) cannot make
/// it usable again: create a new one. Give parties a timeout ([`BarrierBuilder::timeout`])
/// when they may be killed.
///
/// ```
/// let barrier = multiproc::Barrier::new(2)?;
/// let indexes = std::thread::scope(|s| {
///     let other = s.spawn(|| barrier.wait().unwrap());
///     let mine = barrier.wait().unwrap();
///     [mine, other.join().unwrap()]
/// });
/// assert_eq!(indexes.iter().sum::<usize>(), 1); // 0 and 1, in some order
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    state: Shared<BarrierState>,
    lock: Lock,
    cond: Condition,
    action: Option<Arc<Action>>,
}

/// Builds a [`Barrier`] with an action or a default timeout (Python's
/// `Barrier(parties, action, timeout)`).
///
/// ```
/// use std::time::Duration;
///
/// #[multiproc::process]
/// fn announce(round: multiproc::Value<u32>) {
///     *round.lock().unwrap() += 1;
/// }
///
/// let round = multiproc::Value::new(0u32)?;
/// let barrier = multiproc::Barrier::builder(1)
///     .action(announce, round.clone())
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(barrier.wait()?, 0); // one party: the action runs at once
/// assert_eq!(round.get()?, 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "a builder does nothing until `build`"]
pub struct BarrierBuilder {
    parties: usize,
    action: Option<(&'static str, Result<Encoded>)>,
    timeout: Option<Duration>,
}

impl fmt::Debug for BarrierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierBuilder")
            .field("parties", &self.parties)
            .field("action", &self.action.as_ref().map(|(name, _)| name))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl BarrierBuilder {
    /// Runs `action(args)` (a `#[multiproc::process]` function, like a pool initializer) in
    /// the last party to arrive, before any party goes on; a panic in it breaks the barrier
    /// and propagates from that party's `wait`. The arguments are encoded now and decoded
    /// afresh for every run, in whichever process runs it; they may hold shared objects (a
    /// [`Value`](crate::Value), an [`Event`](crate::Event), ...). Default: no action.
    ///
    /// ```
    /// #[multiproc::process]
    /// fn tick() {}
    ///
    /// let barrier = multiproc::Barrier::builder(1).action(tick, ()).build()?;
    /// barrier.wait()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn action<F: Target>(mut self, _action: F, args: F::Args) -> Self {
        self.action = Some((F::NAME, crate::carrier::encode_args::<F>(args)));
        self
    }

    /// The timeout of [`Barrier::wait`]. Default: none (wait forever).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let barrier = multiproc::Barrier::builder(2).timeout(Duration::from_millis(10)).build()?;
    /// let err = barrier.wait().unwrap_err(); // the other party never comes
    /// assert_eq!(err.kind(), multiproc::ErrorKind::BrokenBarrier);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Creates the barrier. Errors: [`ErrorKind::InvalidInput`] for zero parties or more than
    /// `u32::MAX`, [`ErrorKind::UnknownEntry`] when the action is not registered.
    ///
    /// ```
    /// let err = multiproc::Barrier::builder(0).build().unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::InvalidInput);
    /// ```
    pub fn build(self) -> Result<Barrier> {
        let parties = u32::try_from(self.parties)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "a barrier needs 1 to {} parties, not {}",
                        u32::MAX,
                        self.parties
                    ),
                )
            })?;
        let action = match self.action {
            None => None,
            Some((name, encoded)) => Some(Arc::new(Action::new(
                name,
                encoded.map_err(|err| {
                    Error::new(
                        err.kind(),
                        format!("cannot encode the arguments of the barrier action `{name}`"),
                    )
                    .with_source(err)
                })?,
            )?)),
        };
        let region = Arc::new(Region::new("barrier", std::mem::size_of::<BarrierState>())?);
        let lock = Lock::init_at(
            Arc::clone(&region),
            std::mem::offset_of!(BarrierState, lock),
        )?;
        let cond = Condition::init_at(
            Arc::clone(&region),
            std::mem::offset_of!(BarrierState, cond),
            lock.clone(),
        )?;
        let state = Shared::<BarrierState>::at(region, 0)?;
        let timeout = self.timeout.map_or(NO_TIMEOUT, |t| {
            u64::try_from(t.as_nanos()).unwrap_or(NO_TIMEOUT - 1)
        });
        state.timeout_ns.store(timeout, Ordering::Relaxed);
        state.parties.store(parties, Ordering::Relaxed);
        state.tag.store(BARRIER_TAG, Ordering::Release);
        Ok(Barrier {
            state,
            lock,
            cond,
            action,
        })
    }
}

impl Barrier {
    /// A barrier for `parties` parties, without action or timeout.
    ///
    /// ```
    /// let barrier = multiproc::Barrier::new(3)?;
    /// assert_eq!(barrier.parties(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(parties: usize) -> Result<Barrier> {
        Barrier::builder(parties).build()
    }

    /// A builder, to add an action or a timeout.
    ///
    /// ```
    /// let barrier = multiproc::Barrier::builder(2).build()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder(parties: usize) -> BarrierBuilder {
        BarrierBuilder {
            parties,
            action: None,
            timeout: None,
        }
    }

    fn from_state(state: Shared<BarrierState>, action: Option<Arc<Action>>) -> Result<Barrier> {
        let region = Arc::clone(state.region());
        let lock = Lock::existing_at(
            Arc::clone(&region),
            std::mem::offset_of!(BarrierState, lock),
        )?;
        let cond = Condition::existing_at(
            region,
            std::mem::offset_of!(BarrierState, cond),
            lock.clone(),
        )?;
        Ok(Barrier {
            state,
            lock,
            cond,
            action,
        })
    }

    /// The number of parties.
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(4)?.parties(), 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn parties(&self) -> usize {
        self.state.parties.load(Ordering::Relaxed) as usize
    }

    /// The number of parties waiting now (0 while the barrier drains or is broken).
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(2)?.n_waiting(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn n_waiting(&self) -> usize {
        if self.state.state.load(Ordering::SeqCst) == FILLING {
            self.state.count.load(Ordering::SeqCst) as usize
        } else {
            0
        }
    }

    /// Whether the barrier is broken.
    ///
    /// ```
    /// let barrier = multiproc::Barrier::new(2)?;
    /// barrier.abort()?;
    /// assert!(barrier.broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn broken(&self) -> bool {
        self.state.state.load(Ordering::SeqCst) == BROKEN
    }

    /// Takes the barrier's lock. A dead previous owner breaks the barrier: its counters may be
    /// half-updated.
    fn enter(&self) -> Result<LockGuard<'_>> {
        match self.lock.acquire() {
            Err(err) if err.kind() == ErrorKind::OwnerDied => {
                let guard = self.lock.acquire()?;
                self.break_locked()?;
                drop(guard);
                Err(broken("a process died holding the barrier's lock"))
            }
            other => other,
        }
    }

    /// Breaks the barrier (with its lock held).
    fn break_locked(&self) -> Result<()> {
        self.state.state.store(BROKEN, Ordering::SeqCst);
        self.cond.notify_all()
    }

    /// A condition wait that turns a dead lock owner into a broken barrier.
    fn wait_on<'a>(
        &'a self,
        guard: LockGuard<'a>,
        deadline: Deadline,
        predicate: impl FnMut(&mut LockGuard<'a>) -> bool,
    ) -> Result<(LockGuard<'a>, bool)> {
        match self.cond.wait_for_until(guard, deadline, predicate) {
            Err(err) if err.kind() == ErrorKind::OwnerDied => {
                let guard = self.lock.acquire()?;
                self.break_locked()?;
                drop(guard);
                Err(broken("a process died holding the barrier's lock"))
            }
            other => other,
        }
    }

    /// Waits until `parties` parties have called `wait`, with the default timeout: the index
    /// of this party, in `0..parties` (arrival order, distinct across parties).
    ///
    /// Errors: [`ErrorKind::BrokenBarrier`] when the barrier is or becomes broken, or when the
    /// timeout runs out (which breaks it).
    ///
    /// ```
    /// let barrier = multiproc::Barrier::new(1)?;
    /// assert_eq!(barrier.wait()?, 0);
    /// assert_eq!(barrier.wait()?, 0); // usable again at once
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) -> Result<usize> {
        let timeout = match self.state.timeout_ns.load(Ordering::Relaxed) {
            NO_TIMEOUT => None,
            ns => Some(Duration::from_nanos(ns)),
        };
        self.wait_by(Deadline::from_timeout(timeout))
    }

    /// [`wait`](Self::wait) with this timeout instead of the default one.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let barrier = multiproc::Barrier::new(2)?;
    /// let err = barrier.wait_timeout(Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::BrokenBarrier);
    /// assert!(barrier.broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_by(Deadline::after(timeout))
    }

    fn wait_by(&self, deadline: Deadline) -> Result<usize> {
        let state = &*self.state;
        let guard = self.enter()?;
        // Wait while the barrier drains or resets (bounded by the same deadline: a party that
        // died inside would make it wait forever).
        let (guard, ok) = self.wait_on(guard, deadline, |_| {
            !matches!(state.state.load(Ordering::SeqCst), DRAINING | RESETTING)
        })?;
        if !ok {
            self.break_locked()?;
            return Err(broken("timed out waiting for the barrier to drain"));
        }
        if state.state.load(Ordering::SeqCst) == BROKEN {
            return Err(broken("the barrier is broken"));
        }
        let index = state.count.load(Ordering::SeqCst);
        state.count.store(index + 1, Ordering::SeqCst);
        let (guard, result) = if index + 1 == state.parties.load(Ordering::SeqCst) {
            self.trip(guard)
        } else {
            self.wait_for_trip(guard, deadline)
        };
        // Leaving (also on error): the last to leave a drained or reset barrier refills it.
        if let Some(guard) = guard {
            let count = state.count.load(Ordering::SeqCst).saturating_sub(1);
            state.count.store(count, Ordering::SeqCst);
            if count == 0 && matches!(state.state.load(Ordering::SeqCst), DRAINING | RESETTING) {
                state.state.store(FILLING, Ordering::SeqCst);
                self.cond.notify_all()?;
            }
            drop(guard);
        }
        result.map(|()| index as usize)
    }

    /// The last party: runs the action and releases the others.
    fn trip<'a>(&'a self, guard: LockGuard<'a>) -> (Option<LockGuard<'a>>, Result<()>) {
        if let Some(action) = &self.action {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| action.run()));
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    let _ = self.break_locked();
                    return (Some(guard), Err(err));
                }
                Err(panic) => {
                    let _ = self.break_locked();
                    self.state.count.store(
                        self.state.count.load(Ordering::SeqCst) - 1,
                        Ordering::SeqCst,
                    );
                    drop(guard);
                    std::panic::resume_unwind(panic);
                }
            }
        }
        self.state.state.store(DRAINING, Ordering::SeqCst);
        let notified = self.cond.notify_all();
        (Some(guard), notified)
    }

    /// Any other party: waits for the last one, or for the barrier to break.
    /// Takes the barrier's lock, past owner deaths; `None` only on an unexpected error.
    fn reacquire(&self) -> Option<LockGuard<'_>> {
        loop {
            match self.lock.acquire() {
                Ok(guard) => return Some(guard),
                Err(err) if err.kind() == ErrorKind::OwnerDied => continue,
                Err(_) => return None,
            }
        }
    }

    fn wait_for_trip<'a>(
        &'a self,
        guard: LockGuard<'a>,
        deadline: Deadline,
    ) -> (Option<LockGuard<'a>>, Result<()>) {
        let state = &*self.state;
        match self.wait_on(guard, deadline, |_| {
            state.state.load(Ordering::SeqCst) != FILLING
        }) {
            // The wait consumed the guard; take the lock again to leave properly (retrying
            // past a second owner death: a party that cannot leave would keep the barrier
            // from ever draining).
            Err(err) => (self.reacquire(), Err(err)),
            Ok((guard, false)) => {
                let _ = self.break_locked();
                (Some(guard), Err(broken("timed out waiting at the barrier")))
            }
            Ok((guard, true)) => match state.state.load(Ordering::SeqCst) {
                DRAINING => (Some(guard), Ok(())),
                RESETTING => (Some(guard), Err(broken("the barrier was reset"))),
                _ => (Some(guard), Err(broken("the barrier is broken"))),
            },
        }
    }

    /// Puts the barrier back to its initial state: parties waiting now fail with
    /// [`ErrorKind::BrokenBarrier`], later ones wait normally (also after a break).
    ///
    /// ```
    /// let barrier = multiproc::Barrier::new(2)?;
    /// barrier.abort()?;
    /// barrier.reset()?;
    /// assert!(!barrier.broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn reset(&self) -> Result<()> {
        let guard = match self.enter() {
            Err(err) if err.kind() == ErrorKind::BrokenBarrier => self.lock.acquire()?,
            other => other?,
        };
        let state = &*self.state;
        if state.count.load(Ordering::SeqCst) > 0 {
            if matches!(state.state.load(Ordering::SeqCst), FILLING | BROKEN) {
                state.state.store(RESETTING, Ordering::SeqCst);
            }
        } else {
            state.state.store(FILLING, Ordering::SeqCst);
        }
        let notified = self.cond.notify_all();
        drop(guard);
        notified
    }

    /// Breaks the barrier: parties waiting now and later fail with
    /// [`ErrorKind::BrokenBarrier`], until [`reset`](Self::reset).
    ///
    /// ```
    /// let barrier = multiproc::Barrier::new(2)?;
    /// barrier.abort()?;
    /// assert_eq!(barrier.wait().unwrap_err().kind(), multiproc::ErrorKind::BrokenBarrier);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn abort(&self) -> Result<()> {
        let guard = match self.enter() {
            // A dead owner already broke it.
            Err(err) if err.kind() == ErrorKind::BrokenBarrier => return Ok(()),
            other => other?,
        };
        let broke = self.break_locked();
        drop(guard);
        broke
    }
}

fn broken(message: &str) -> Error {
    Error::new(ErrorKind::BrokenBarrier, message)
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .field("action", &self.action.as_ref().map(|a| a.entry.name()))
            .finish()
    }
}

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let action = self
            .action
            .as_ref()
            .map(|a| (a.entry.name(), &a.args, &a.fds));
        (&self.state, action).serialize(serializer)
    }
}

type ActionData = (String, Vec<u8>, Vec<SharedFd>);

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let (state, action) =
            <(Shared<BarrierState>, Option<ActionData>)>::deserialize(deserializer)?;
        let action = action
            .map(|(name, args, fds)| {
                registry::lookup(&name).map(|entry| Arc::new(Action { entry, args, fds }))
            })
            .transpose()
            .map_err(crate::error::de_error)?;
        Barrier::from_state(state, action).map_err(crate::error::de_error)
    }
}
