//! Results of pool work: [`AsyncResult`] for `apply_async` / `map_async`, and the sinks through
//! which the driver thread delivers chunks to them and to `imap` iterators.
//!
//! A result is ready when whoever completes it (the driver thread as a chunk arrives, or the
//! caller that cancels it) stores it in its [`Slot`], which then wakes every kind of waiter at
//! once: threads blocked in `get` (a condvar), the task that `.await`s it (its `Waker`), and the
//! [`Watch`]es of `as_completed` / `wait` over several results. Nothing polls. Done callbacks
//! run after that, as Python's do: a callback sees its future done, and may use it.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::jobs::{cancelled, Shared, Sink};
use super::lent;
use crate::carrier::{ChunkAppender, ChunkDecoder};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;

type OnSuccess<T> = Box<dyn FnOnce(&T) + Send>;
type OnError = Box<dyn FnOnce(&Error) + Send>;
/// How far an [`Imap`](super::Imap) or a `map` has come, for
/// [`Imap::on_progress`](super::Imap::on_progress) and
/// [`Pool::map_async_progress`](super::Pool::map_async_progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Items whose result was taken (or failed).
    pub done: u64,
    /// Items known so far: the total once the input is exhausted (`total` then says so), the
    /// items submitted until then (an `imap`'s input is read lazily).
    pub known: u64,
    /// The number of items in all, once known.
    pub total: Option<u64>,
}

/// A progress callback of `map` (see `Pool::map_async_progress`).
pub(crate) type ProgressFn = Box<dyn FnMut(Progress) + Send>;
/// A done callback: called once with the outcome, whatever it is.
pub(crate) type OnDone<T> = Box<dyn FnOnce(std::result::Result<&T, &Error>) + Send>;

struct SlotState<T> {
    value: Option<Result<T>>,
    ready: bool,
    /// The result callbacks (`on_success`, `on_error`) were taken and are running: the value
    /// comes in a moment.
    completing: bool,
    /// While `completing`: whether what is being stored is the Cancelled error.
    completing_cancelled: bool,
    /// A cancel reached the work before its result was stored (see `claim_cancel`): what
    /// comes is stored as the Cancelled error.
    cancel_claimed: bool,
    taken: bool,
    /// The thread whose done callbacks borrow the value (a success), moved out of `value`
    /// meanwhile and put back after them: it cannot be taken until then (see `unlent`). Done
    /// callbacks added meanwhile wait in `on_done` for that thread to run them.
    lent: Option<ThreadId>,
    on_success: Option<OnSuccess<T>>,
    on_error: Option<OnError>,
    on_done: Vec<OnDone<T>>,
    /// The task that `.await`s the result.
    waker: Option<Waker>,
    /// Waits over several results (`as_completed`, `wait`), told this one's index when ready.
    watchers: Vec<(Arc<Watch>, usize)>,
    /// Threads blocked on the slot's condition variable: it is notified only if there are
    /// (a notify is a system call, once per result on the driver thread otherwise).
    sleepers: usize,
}

pub(crate) struct Slot<T> {
    state: Mutex<SlotState<T>>,
    cond: Condvar,
    /// `state.ready`, readable without the lock (a waiter spins on it before it sleeps).
    settled: AtomicBool,
    /// The job that fills it, once registered in the job table (what `cancel` cancels).
    job: OnceLock<u64>,
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Arc<Slot<T>> {
        Arc::new(Slot {
            state: Mutex::new(SlotState {
                value: None,
                ready: false,
                completing: false,
                completing_cancelled: false,
                cancel_claimed: false,
                taken: false,
                lent: None,
                on_success: None,
                on_error: None,
                on_done: Vec::new(),
                waker: None,
                watchers: Vec::new(),
                sleepers: 0,
            }),
            cond: Condvar::new(),
            settled: AtomicBool::new(false),
            job: OnceLock::new(),
        })
    }

    /// Records the job that fills the slot (see `Sink::registered`).
    pub(crate) fn set_job(&self, job: u64) {
        let _ = self.job.set(job);
    }

    pub(crate) fn job(&self) -> Option<u64> {
        self.job.get().copied()
    }

    /// Whether the result is ready (or coming), or a callback waits for it (which runs it on
    /// the completing thread).
    pub(crate) fn ready_or_called_back(&self) -> bool {
        let state = self.lock();
        state.ready
            || state.completing
            || state.on_success.is_some()
            || state.on_error.is_some()
            || !state.on_done.is_empty()
    }

    /// A cancel that reached the work (`AsyncResult::cancel`): the result becomes the Cancelled
    /// error unless it is already stored or being stored (its result callbacks running).
    /// Returns whether the result is, or will be, that error: false if values came first.
    pub(crate) fn claim_cancel(&self) -> bool {
        let mut state = self.lock();
        if state.ready {
            return matches!(&state.value, Some(Err(err)) if err.kind() == ErrorKind::Cancelled);
        }
        if state.completing {
            return state.completing_cancelled;
        }
        state.cancel_claimed = true;
        true
    }

    /// Whether the result is stored and is an error of `kind`.
    pub(crate) fn failed_with(&self, kind: ErrorKind) -> bool {
        let state = self.lock();
        state.ready && matches!(&state.value, Some(Err(err)) if err.kind() == kind)
    }

    /// The error the work ended in, once ready (a copy: it stays for `get`).
    pub(crate) fn error(&self) -> Option<Error> {
        match &self.lock().value {
            Some(Err(err)) => Some(err.duplicate()),
            _ => None,
        }
    }

    /// Tells `watch` (as `index`) when the result is ready: at once if it is.
    pub(crate) fn watch(&self, watch: &Arc<Watch>, index: usize) {
        let mut state = self.lock();
        if state.ready {
            drop(state);
            watch.notify(index);
            return;
        }
        state.watchers.push((watch.clone(), index));
    }

    /// Stops telling `watch` (a wait over several results that is over).
    pub(crate) fn unwatch(&self, watch: &Arc<Watch>) {
        self.lock().watchers.retain(|(w, _)| !Arc::ptr_eq(w, watch));
    }

    /// Calls `callback` with the outcome once the result is ready: in the thread that completes
    /// it, once it shows as ready and its waiters are woken, or now, in this thread, if it is
    /// ready. No lock is held meanwhile: the callback may use this result, add callbacks to it,
    /// wait for others. A success is lent to the thread whose done callbacks run: a callback
    /// added meanwhile (by one of them, or by another thread) runs there, after them.
    pub(crate) fn on_done(&self, callback: OnDone<T>) {
        let mut state = self.lock();
        if !state.ready || state.lent.is_some() {
            state.on_done.push(callback);
            return;
        }
        match state.value.take() {
            Some(Ok(value)) => {
                state.lent = Some(thread::current().id());
                drop(state);
                self.lend(value, vec![callback]);
            }
            Some(Err(err)) => {
                let copy = err.duplicate();
                state.value = Some(Err(err));
                drop(state);
                run_done(Err(&copy), vec![callback]);
            }
            // Taken already: the callback still learns that the work is done.
            None => {
                drop(state);
                let taken = Error::new(ErrorKind::InvalidInput, "the result was already taken");
                run_done(Err(&taken), vec![callback]);
            }
        }
    }

    /// Runs done `callbacks` with `value`, a success lent to this thread (`state.lent` says
    /// so), then those added meanwhile; then puts the value back, and wakes whoever waits to
    /// take it.
    fn lend(&self, value: T, mut callbacks: Vec<OnDone<T>>) {
        loop {
            run_done(Ok(&value), callbacks);
            let mut state = self.lock();
            callbacks = std::mem::take(&mut state.on_done);
            if callbacks.is_empty() {
                state.value = Some(Ok(value));
                state.lent = None;
                if state.sleepers > 0 {
                    self.cond.notify_all();
                }
                let waker = state.waker.take();
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
                return;
            }
        }
    }

    /// The state once the value is not lent to the done callbacks of another thread (it can
    /// be taken then), waiting for them at most until `deadline`. An error if it is lent to
    /// this thread's (it cannot be taken from under them: they have it as their argument), or
    /// still lent at the deadline.
    fn unlent(&self, deadline: Option<Instant>) -> Result<MutexGuard<'_, SlotState<T>>> {
        let mut state = self.lock();
        while let Some(lender) = state.lent {
            if lender == thread::current().id() {
                return Err(lent_here());
            }
            state = self.sleep(state, deadline).ok_or_else(|| {
                Error::timeout("the result's done callbacks were still running at the deadline")
            })?;
        }
        Ok(state)
    }

    /// Sleeps once on the slot's condition, counted among its sleepers (whom a change
    /// notifies), until `deadline` at most (`None`: an hour at a time); `None`, without
    /// sleeping, once the deadline has passed.
    fn sleep<'a>(
        &'a self,
        mut state: MutexGuard<'a, SlotState<T>>,
        deadline: Option<Instant>,
    ) -> Option<MutexGuard<'a, SlotState<T>>> {
        let left = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        if left.is_zero() {
            return None;
        }
        state.sleepers += 1;
        let mut state = self
            .cond
            .wait_timeout(state, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        state.sleepers -= 1;
        Some(state)
    }

    /// Looks for the result awake for a moment (see `channel::ring::spin`): a short task's
    /// comes within it, and the completing thread then has no sleeper to wake.
    fn spin_until_settled(&self) {
        crate::channel::ring::spin(|| self.settled.load(Ordering::Acquire));
    }

    /// Waits until the result is ready, at most until `deadline`; whether it is.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        self.spin_until_settled();
        let mut state = self.lock();
        while !state.ready {
            match self.sleep(state, deadline) {
                Some(next) => state = next,
                None => return false,
            }
        }
        true
    }

    /// The value, once ready: taken out (later calls fail), while an error stays (a copy is
    /// returned each time). `None` while not ready. A success that done callbacks of another
    /// thread borrow is taken once they return, waiting for them at most until `deadline`.
    pub(crate) fn take_value(&self, deadline: Option<Instant>) -> Option<Result<T>> {
        let mut state = match self.unlent(deadline) {
            Ok(state) => state,
            // Lent: ready.
            Err(err) => return Some(Err(err)),
        };
        state.ready.then(|| Self::take_from(&mut state))
    }

    /// Takes the value out of a ready, unlent `state` (see `take_value`).
    fn take_from(state: &mut SlotState<T>) -> Result<T> {
        match state.value.take() {
            Some(Err(err)) => {
                let copy = err.duplicate();
                state.value = Some(Err(err));
                Err(copy)
            }
            Some(Ok(value)) => {
                state.taken = true;
                Ok(value)
            }
            None => Err(Error::new(
                ErrorKind::InvalidInput,
                "the result was already taken",
            )),
        }
    }

    /// `poll` of a future over this slot: the value if ready (and not lent to another thread's
    /// done callbacks), else the waker is kept.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut state = self.lock();
        let lent_to_me = state.lent.is_some_and(|t| t == thread::current().id());
        if !state.ready || (state.lent.is_some() && !lent_to_me) {
            match &state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => state.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        if lent_to_me {
            return Poll::Ready(Err(lent_here()));
        }
        Poll::Ready(Self::take_from(&mut state))
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, once it is either pending (result callbacks may still be registered) or
    /// ready: one registered while the others run would be lost, so this waits that moment out.
    fn settled_or_pending(&self) -> MutexGuard<'_, SlotState<T>> {
        let mut state = self.lock();
        while state.completing && !state.ready {
            state.sleepers += 1;
            state = self
                .cond
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.sleepers -= 1;
        }
        state
    }

    /// Stores the result: the result callbacks (`on_success`, `on_error`) run first, in the
    /// calling thread (a panicking one becomes the result's error); then the result becomes
    /// ready and whoever waits is woken (blocked threads, watches, an `.await`ing task), then
    /// the done callbacks run, in the calling thread, as Python's `set_result` does.
    pub(crate) fn complete(&self, result: Result<T>) {
        let (on_success, on_error, claimed) = {
            let mut state = self.lock();
            if state.ready || state.completing {
                return;
            }
            state.completing = true;
            state.completing_cancelled = state.cancel_claimed
                || matches!(&result, Err(err) if err.kind() == ErrorKind::Cancelled);
            (
                state.on_success.take(),
                state.on_error.take(),
                state.cancel_claimed,
            )
        };
        // What a cancel that said it cancelled the work promised: dropped, outside the lock
        // (it is the user's).
        let result = if claimed {
            drop(result);
            Err(cancelled())
        } else {
            result
        };
        let result = run_callbacks(result, on_success, on_error);
        let (waker, watchers, on_done, lent, error) = {
            let mut state = self.lock();
            let on_done = std::mem::take(&mut state.on_done);
            let (mut lent, mut error) = (None, None);
            match result {
                // Lent to the done callbacks; taken once they return.
                Ok(value) if !on_done.is_empty() => {
                    state.lent = Some(thread::current().id());
                    lent = Some(value);
                }
                Err(err) if !on_done.is_empty() => {
                    error = Some(err.duplicate());
                    state.value = Some(Err(err));
                }
                result => state.value = Some(result),
            }
            state.ready = true;
            self.settled.store(true, Ordering::Release);
            if state.sleepers > 0 {
                self.cond.notify_all();
            }
            // A lent value wakes its `.await`ing task once it is back (the waker may run the
            // task at once, on this thread: it must not find the value lent here).
            let waker = if lent.is_none() {
                state.waker.take()
            } else {
                None
            };
            (
                waker,
                std::mem::take(&mut state.watchers),
                on_done,
                lent,
                error,
            )
        };
        // Outside the lock: a waker may run the task at once, on this thread.
        if let Some(waker) = waker {
            waker.wake();
        }
        for (watch, index) in watchers {
            watch.notify(index);
        }
        if let Some(value) = lent {
            self.lend(value, on_done);
        } else if let Some(err) = error {
            run_done(Err(&err), on_done);
        }
    }
}

/// The error of taking a value lent to the done callbacks that run in the calling thread.
fn lent_here() -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        "the result is lent to the done callbacks running in this thread (it is their argument)",
    )
}

/// Runs done callbacks; a panic in one is reported and does not stop the others (as Python
/// logs and ignores an exception in a done callback).
fn run_done<T>(outcome: std::result::Result<&T, &Error>, callbacks: Vec<OnDone<T>>) {
    for callback in callbacks {
        if panic::catch_unwind(AssertUnwindSafe(|| callback(outcome))).is_err() {
            log::error!("a done callback panicked (ignored)");
        }
    }
}

/// A wait over several results (`as_completed`, `wait`): each slot watched tells it its index
/// when it is ready.
#[derive(Default)]
pub(crate) struct Watch {
    ready: Mutex<Vec<usize>>,
    /// Whether `ready` holds indices, readable without the lock (a waiter spins on it).
    any: AtomicBool,
    cond: Condvar,
    /// Threads blocked on `cond` (changed under `ready`'s lock): a ready slot notifies only
    /// when one sleeps, and only the first of a run (the sleeper waits for a first index).
    sleepers: std::sync::atomic::AtomicUsize,
}

impl Watch {
    pub(crate) fn new() -> Arc<Watch> {
        Arc::new(Watch::default())
    }

    fn notify(&self, index: usize) {
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        let first = ready.is_empty();
        ready.push(index);
        self.any.store(true, Ordering::Release);
        if first && self.sleepers.load(Ordering::Relaxed) > 0 {
            self.cond.notify_all();
        }
    }

    /// The indices that became ready since the last call, in the order they did; waits for at
    /// least one until `deadline` (empty if none came by then).
    pub(crate) fn next_ready(&self, deadline: Option<Instant>) -> Vec<usize> {
        // Results of short tasks come microseconds apart: looked for awake first, which spares
        // the completing thread a wake-up (a system call) and this one a sleep.
        crate::channel::ring::spin(|| self.any.load(Ordering::Acquire));
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        while ready.is_empty() {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                break;
            }
            self.sleepers.fetch_add(1, Ordering::Relaxed);
            ready = self
                .cond
                .wait_timeout(ready, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
        }
        self.any.store(false, Ordering::Release);
        std::mem::take(&mut *ready)
    }
}

fn run_callbacks<T>(
    result: Result<T>,
    on_success: Option<OnSuccess<T>>,
    on_error: Option<OnError>,
) -> Result<T> {
    let outcome = match (&result, on_success, on_error) {
        (Ok(value), Some(callback), _) => panic::catch_unwind(AssertUnwindSafe(|| callback(value))),
        (Err(err), _, Some(callback)) => panic::catch_unwind(AssertUnwindSafe(|| callback(err))),
        _ => Ok(()),
    };
    match outcome {
        Ok(()) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".into());
            Err(Error::new(
                ErrorKind::Panicked,
                format!("a result callback panicked: {message}"),
            ))
        }
    }
}

/// The result of [`Pool::apply_async`](super::Pool::apply_async) or
/// [`Pool::map_async`](super::Pool::map_async), as Python's `AsyncResult`.
///
/// The work runs whether or not anyone waits; [`get`](Self::get) waits for it and returns the
/// value or the error (a remote panic, a dead worker, a timeout of the task, a terminated
/// pool). Never hangs: every task submitted to a pool ends in a value or an error.
///
/// It is also a [`Future`] of the same `Result`, under any async runtime: the pool's driver
/// thread wakes the task that awaits it when the result arrives (no polling, no thread per
/// future). Dropping it unfinished leaves the work running, as dropping an unawaited result
/// does; [`cancel`](Self::cancel) stops it.
///
/// ```no_run
/// use multiproc::{process, Pool};
///
/// #[process]
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// // Under any executor: tokio, async-std, `futures::executor::block_on`.
/// async fn nine(pool: &Pool) -> multiproc::Result<u64> {
///     pool.apply_async(square, 3).await
/// }
/// ```
pub struct AsyncResult<T> {
    slot: Arc<Slot<T>>,
    pool: Option<Arc<Shared>>,
    /// Its job is one task (`apply_async`): a waiter may run it (see `run_here_if_queued`).
    single: bool,
}

impl<T> AsyncResult<T> {
    pub(crate) fn new(slot: Arc<Slot<T>>, pool: Option<Arc<Shared>>) -> AsyncResult<T> {
        AsyncResult {
            slot,
            pool,
            single: false,
        }
    }

    /// The result of a job of one task (see `run_here_if_queued`).
    pub(crate) fn of_one_task(mut self) -> AsyncResult<T> {
        self.single = true;
        self
    }

    pub(crate) fn failed(err: Error) -> AsyncResult<T> {
        let slot = Slot::new();
        slot.complete(Err(err));
        AsyncResult::new(slot, None)
    }

    /// Before an unbounded wait: runs the task here, on an idle worker, if its job is that one
    /// task, it is still queued, and nothing asked for its completion on the driver thread
    /// (callbacks). A bounded wait
    /// does not: it must be able to return at its deadline with the task still going.
    pub(crate) fn run_here_if_queued(&self) {
        let (Some(pool), Some(job), true) = (&self.pool, self.slot.job(), self.single) else {
            return;
        };
        if !self.slot.ready_or_called_back() {
            lent::run_queued_here(pool, job);
        }
    }

    /// Waiting in a result callback of the same pool would wait for the very thread that
    /// runs it.
    pub(crate) fn would_deadlock(&self) -> bool {
        self.pool.as_ref().is_some_and(|p| p.in_driver()) && !self.ready()
    }

    fn deadlock_error() -> Error {
        Error::new(
            ErrorKind::InvalidInput,
            "cannot wait for a pool result in one of the pool's result callbacks (they run on its driver thread)",
        )
    }

    /// Whether the result is available.
    pub fn ready(&self) -> bool {
        self.slot.lock().ready
    }

    /// Cancels the work: its chunks not yet handed to a worker are dropped from the queue
    /// (the workers go on with other work), chunks already running finish and their results
    /// are dropped, and the result becomes an [`ErrorKind::Cancelled`] error. Other work in
    /// the pool is not touched. Returns `false` when the result was already complete (it then
    /// stays as it is).
    ///
    /// ```no_run
    /// # use multiproc::{process, ErrorKind, Pool};
    /// # #[process]
    /// # fn square(n: u64) -> u64 { n * n }
    /// # fn main() -> multiproc::Result<()> {
    /// let pool = Pool::new(2)?;
    /// let squares = pool.map_async_chunked(square, 0..1_000_000, 10);
    /// if squares.cancel() {
    ///     assert_eq!(squares.get().unwrap_err().kind(), ErrorKind::Cancelled);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn cancel(&self) -> bool {
        self.cancel_with(false)
    }

    /// [`cancel`](Self::cancel), and the workers running a chunk of this work are killed (and
    /// replaced) instead of finishing it: for work that must stop now.
    pub fn cancel_and_kill(&self) -> bool {
        self.cancel_with(true)
    }

    fn cancel_with(&self, kill: bool) -> bool {
        let (Some(pool), Some(job)) = (&self.pool, self.slot.job()) else {
            return false;
        };
        // The work may be delivering its last values meanwhile: whichever of the two stores
        // first wins, under the slot's lock.
        pool.cancel(job, kill, false) && self.slot.claim_cancel()
    }

    /// The slot the result is stored in (the executor's waits watch it).
    pub(crate) fn slot(&self) -> &Slot<T> {
        &self.slot
    }

    /// Cancels the work only while its one task waits in the queue (the executor's `cancel`,
    /// as Python's: a task a worker has is not cancelled).
    pub(crate) fn cancel_if_queued(&self) -> bool {
        let (Some(pool), Some(job)) = (&self.pool, self.slot.job()) else {
            return false;
        };
        pool.cancel(job, false, true)
    }

    /// Whether a task of the work still waits in the queue.
    pub(crate) fn queued(&self) -> bool {
        match (&self.pool, self.slot.job()) {
            (Some(pool), Some(job)) => pool.is_queued(job),
            _ => false,
        }
    }

    /// Whether the work succeeded; an [`ErrorKind::InvalidInput`] error while not ready (as
    /// Python raises `ValueError`).
    pub fn successful(&self) -> Result<bool> {
        let state = self.slot.lock();
        if !state.ready {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the result is not ready",
            ));
        }
        Ok(matches!(state.value, Some(Ok(_)))
            || state.lent.is_some()
            || (state.taken && state.value.is_none()))
    }

    /// Waits until the result is available. Returns at once, not ready, when called in a
    /// result callback of the same pool (waiting there could never end).
    pub fn wait(&self) {
        if self.would_deadlock() {
            return;
        }
        self.run_here_if_queued();
        self.slot.spin_until_settled();
        let mut state = self.slot.lock();
        while !state.ready {
            state.sleepers += 1;
            state = self
                .slot
                .cond
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.sleepers -= 1;
        }
    }

    /// Waits at most `timeout`; returns whether the result is available.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        if self.would_deadlock() {
            return false;
        }
        self.slot.wait_until(Instant::now().checked_add(timeout))
    }

    /// Waits for the result and returns it.
    pub fn get(self) -> Result<T> {
        if self.would_deadlock() {
            return Err(Self::deadlock_error());
        }
        self.wait();
        self.take()
    }

    /// Waits at most `timeout` for the result: an [`ErrorKind::Timeout`] error if it is not
    /// ready by then (the work goes on; ask again later). The value can be taken once.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        if self.would_deadlock() {
            return Err(Self::deadlock_error());
        }
        if !self.wait_timeout(timeout) {
            return Err(Error::timeout(format!(
                "the result was not ready within {timeout:?}"
            )));
        }
        self.take()
    }

    fn take(&self) -> Result<T> {
        let mut state = self.slot.unlent(None)?;
        match state.value.take() {
            Some(value) => {
                state.taken = true;
                value
            }
            None => Err(Error::new(
                ErrorKind::InvalidInput,
                "the result was already taken",
            )),
        }
    }

    /// Calls `callback` with the value when the work succeeds, before the result becomes ready
    /// (in the pool's driver thread; at once if it is already done). Keep it short: it holds up
    /// the delivery of other results. A panic in it becomes the result's error.
    ///
    /// While a callback (or the decoding of a result) runs on the driver thread, that thread
    /// counts as one of yours for the [`ForkPolicy`](crate::ForkPolicy): it may hold any lock of
    /// yours, so a [`Fork`](crate::StartMethod::Fork) start meanwhile is refused under the
    /// default policy. At other times the pool's threads do not count.
    pub fn on_success(self, callback: impl FnOnce(&T) + Send + 'static) -> Self {
        let mut state = self.slot.settled_or_pending();
        if !state.ready {
            state.on_success = Some(Box::new(callback));
        } else if matches!(state.value, Some(Ok(_))) {
            if let Some(value) = state.value.take() {
                state.value = Some(run_callbacks(value, Some(Box::new(callback)), None));
            }
        }
        drop(state);
        self
    }

    /// Calls `callback` with the error when the work fails (see [`on_success`](Self::on_success)).
    pub fn on_error(self, callback: impl FnOnce(&Error) + Send + 'static) -> Self {
        let mut state = self.slot.settled_or_pending();
        if !state.ready {
            state.on_error = Some(Box::new(callback));
        } else if matches!(state.value, Some(Err(_))) {
            // As on a pending result: a panic in it becomes the result's error.
            if let Some(failed) = state.value.take() {
                state.value = Some(run_callbacks(failed, None, Some(Box::new(callback))));
            }
        }
        drop(state);
        self
    }
}

impl<T> Future for AsyncResult<T> {
    type Output = Result<T>;

    /// Ready once the result is; until then the waker is kept in the result, and woken by the
    /// thread that completes it. Polling again after `Ready` fails (the value was taken).
    /// Polled in a result callback of the same pool while not ready, it is ready with an
    /// [`ErrorKind::InvalidInput`] error, as [`get`](Self::get) there: an executor that
    /// blocks on it (`block_on`) would hold the driver thread, which alone can complete it.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        if self.would_deadlock() {
            return Poll::Ready(Err(Self::deadlock_error()));
        }
        self.slot.poll_take(cx)
    }
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

/// The one output of a chunk of one item (`apply`).
pub(super) fn single<T>(values: Vec<T>) -> Result<T> {
    match <[T; 1]>::try_from(values) {
        Ok([value]) => Ok(value),
        Err(values) => Err(miscounted(values.len(), 1)),
    }
}

/// A worker's reply that holds `got` results for a chunk of `items` items: out of protocol
/// (a worker whose memory a task wrote over), never a list shifted by the difference.
pub(super) fn miscounted(got: usize, items: usize) -> Error {
    Error::new(
        ErrorKind::Codec,
        format!(
            "a task's reply holds {got} result{} for its {items} item{}",
            if got == 1 { "" } else { "s" },
            if items == 1 { "" } else { "s" }
        ),
    )
}

/// How many items each chunk of a `map` holds: how many results its reply must hold.
pub(crate) enum ChunkSizes {
    /// `chunksize` each, the last what is left of `items`.
    Even { chunksize: usize, items: usize },
    /// Told as the chunks are encoded (from an input whose length is only its word), each
    /// before its chunk is queued.
    Told(Arc<Mutex<Told>>),
}

/// The sizes of a map's chunks, told as they are encoded from an input whose length is only
/// its word (see [`ChunkSizes::Told`]).
#[derive(Debug, Default)]
pub(crate) struct Told {
    /// Each chunk's items, in order, told before the chunk is queued.
    pub sizes: Vec<usize>,
    /// Set with the last chunk's size: the map has `sizes.len()` chunks, which is fewer than
    /// it was made for when the input ended early.
    pub ended: bool,
}

impl ChunkSizes {
    /// Of a map that has no chunks.
    pub(crate) fn none() -> ChunkSizes {
        ChunkSizes::Even {
            chunksize: 1,
            items: 0,
        }
    }

    /// The items of chunk `chunk`, once known.
    fn of(&self, chunk: u32) -> Option<usize> {
        let chunk = chunk as usize;
        match self {
            ChunkSizes::Even { chunksize, items } => {
                let start = chunk.checked_mul(*chunksize)?;
                (start < *items).then(|| (*chunksize).min(items - start))
            }
            ChunkSizes::Told(told) => told
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sizes
                .get(chunk)
                .copied(),
        }
    }

    /// The number of chunks, once told that the input ended; `None` while the map may have as
    /// many as it was made for. The end is always told with a chunk (the one that came short,
    /// empty when the input ended on a chunk's boundary), queued after it is told: the sink
    /// completes with that chunk's delivery, whenever the others came.
    fn ended_at(&self) -> Option<usize> {
        match self {
            ChunkSizes::Even { .. } => None,
            ChunkSizes::Told(told) => {
                let told = told.lock().unwrap_or_else(PoisonError::into_inner);
                told.ended.then_some(told.sizes.len())
            }
        }
    }
}

/// The sink of `apply`: one chunk of one item.
pub(crate) struct ApplySink<T> {
    pub slot: Arc<Slot<T>>,
    pub decode: ChunkDecoder<T>,
}

impl<T: DeserializeOwned + Send> Sink for ApplySink<T> {
    fn registered(&mut self, job: u64) {
        self.slot.set_job(job);
    }

    fn deliver(&mut self, _chunk: u32, result: Result<Encoded>) -> bool {
        let value = result
            .and_then(|encoded| (self.decode)(encoded, 1))
            .and_then(single);
        self.slot.complete(value);
        true
    }

    fn fail(&mut self, err: &Error) {
        self.slot.complete(Err(err.duplicate()));
    }
}

/// The sink of `map`: every chunk, then the whole list in input order.
///
/// Each chunk is decoded as it arrives: in its turn straight onto the end of the list (one
/// copy, into memory reserved once for every item), early into a list of its own, moved onto
/// the end in its turn. A delivery decodes its own chunk only: chunks that waited encoded were
/// all decoded by the delivery of the one they waited for, on the driver thread, which saw to
/// nothing else for as long as the map is long (timeouts, `terminate`, deaths).
pub(crate) struct MapSink<T> {
    slot: Arc<Slot<Vec<T>>>,
    all: Vec<T>,
    /// The next chunk to decode onto `all`.
    next: u32,
    /// Chunks that arrived before their turn, decoded.
    early: BTreeMap<u32, Vec<T>>,
    chunks: u32,
    remaining: usize,
    /// The first failure in input order so far.
    error: Option<(u32, Error)>,
    decode: ChunkAppender<T>,
    /// What each chunk's reply must hold.
    sizes: ChunkSizes,
    /// Told the items done as each chunk arrives, with the size of the chunks.
    progress: Option<(usize, ProgressFn)>,
    items: usize,
    items_done: usize,
}

impl<T> MapSink<T> {
    /// The sink of `chunks` chunks of `items` items in all, of `sizes`.
    pub(crate) fn new(
        slot: Arc<Slot<Vec<T>>>,
        chunks: usize,
        items: usize,
        sizes: ChunkSizes,
        decode: ChunkAppender<T>,
    ) -> Self {
        // Reserved, not touched: pages are faulted in as chunks are decoded. An input that
        // claims more items than memory can hold (its own word: `0..u64::MAX`, or a wrong
        // `ExactSizeIterator`) reserves nothing here rather than panic in the caller.
        let mut all = Vec::new();
        let _ = all.try_reserve_exact(items);
        // A list of megabytes is often fresh memory from the kernel (glibc maps a block of
        // that size on its own until a first one is freed, and gives the top of its heap back
        // past a threshold as blocks are freed): faulted in 4 KiB at a time, its pages cost
        // more than the copies that fill them (2048 faults for W2's 8 MiB of squares, in the
        // benchmark that alternates the map with a floor that frees 16 MiB a run). Memory
        // already in place is only marked (the heap's range stays marked for huge pages, as
        // `wire::make_room`'s buffers do).
        if std::mem::size_of_val(all.spare_capacity_mut()) >= crate::wire::HUGE_PAGES_FROM {
            crate::sys::advise_huge_pages(all.spare_capacity_mut());
        }
        MapSink {
            slot,
            all,
            next: 0,
            early: BTreeMap::new(),
            chunks: chunks as u32,
            remaining: chunks,
            error: None,
            decode,
            sizes,
            progress: None,
            items,
            items_done: 0,
        }
    }

    /// Calls `progress` as each chunk (of `chunksize` items, the last maybe fewer) arrives.
    pub(crate) fn with_progress(mut self, chunksize: usize, progress: ProgressFn) -> Self {
        self.progress = Some((chunksize, progress));
        self
    }

    fn report_progress(&mut self, chunk: u32) {
        let Some((chunksize, progress)) = &mut self.progress else {
            return;
        };
        let start = (chunk as usize).saturating_mul(*chunksize);
        let size = (*chunksize).min(self.items.saturating_sub(start));
        self.items_done = (self.items_done + size).min(self.items);
        let items = self.items as u64;
        let report = Progress {
            done: self.items_done as u64,
            known: items,
            total: Some(items),
        };
        // It runs in the driver thread: a panic is the map's error, said as such (it was
        // taken for the decoding's, which the same catch covers), and it is not called again.
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| progress(report))) {
            self.progress = None;
            let message = crate::child::panic_message(&*payload);
            self.failed(
                chunk,
                Error::new(
                    ErrorKind::Panicked,
                    format!("the map's progress callback panicked: {message}"),
                ),
            );
        }
    }

    /// Records a failure of `chunk`, unless an earlier chunk already failed.
    fn failed(&mut self, chunk: u32, err: Error) {
        if self.error.as_ref().is_none_or(|(c, _)| chunk < *c) {
            self.error = Some((chunk, err));
            // Later chunks cannot make it into the list any more.
            self.early.retain(|&c, _| c < chunk);
        }
    }

    /// Decodes `chunk` onto the end of `out`: `false` when it failed (recorded, and `out` as
    /// it was).
    fn decode_onto(&mut self, chunk: u32, encoded: Encoded, out: &mut Vec<T>) -> bool {
        let before = out.len();
        // Told before the chunk was queued; a chunk no size was told for holds nothing.
        let items = self.sizes.of(chunk).unwrap_or(0);
        // A `Deserialize` that panics fails its chunk alone, as an error does: a chunk decoded
        // before its turn must not win over an earlier one that fails after it.
        let decode = self.decode;
        let decoded = panic::catch_unwind(AssertUnwindSafe(|| decode(encoded, out, items)))
            .unwrap_or_else(|payload| Err(super::reply::decoding_panicked(&*payload)));
        if let Err(err) = decoded {
            out.truncate(before);
            self.failed(chunk, err);
            return false;
        }
        let got = out.len() - before;
        if got != items {
            out.truncate(before);
            self.failed(chunk, miscounted(got, items));
            return false;
        }
        true
    }

    /// Decodes the chunk that arrived: onto the list in its turn, then moves the early chunks
    /// whose turn has come onto it (no user code: their decoding is done).
    fn arrived(&mut self, chunk: u32, encoded: Encoded) {
        if chunk != self.next {
            let mut own = Vec::new();
            if self.decode_onto(chunk, encoded, &mut own) {
                self.early.insert(chunk, own);
            }
            return;
        }
        let mut all = std::mem::take(&mut self.all);
        let decoded = self.decode_onto(chunk, encoded, &mut all);
        self.all = all;
        if !decoded {
            return;
        }
        self.next += 1;
        while let Some(mut own) = self.early.remove(&self.next) {
            self.all.append(&mut own);
            self.next += 1;
        }
    }
}

impl<T: DeserializeOwned + Send> Sink for MapSink<T> {
    fn registered(&mut self, job: u64) {
        self.slot.set_job(job);
    }

    fn deliver(&mut self, chunk: u32, result: Result<Encoded>) -> bool {
        let stopped_before = self.error.as_ref().is_some_and(|(c, _)| chunk > *c);
        match result {
            Ok(_) if stopped_before || chunk >= self.chunks => {}
            Ok(encoded) => self.arrived(chunk, encoded),
            // The first failure in input order wins, whatever the order of arrival.
            Err(err) => self.failed(chunk, err),
        }
        if chunk < self.chunks {
            self.report_progress(chunk);
        }
        self.remaining = self.remaining.saturating_sub(1);
        // An input that ended early has fewer chunks than the sink was made for: those it
        // never had are not waited for.
        let never_sent = self
            .sizes
            .ended_at()
            .map_or(0, |chunks| (self.chunks as usize).saturating_sub(chunks));
        if self.remaining > never_sent {
            return false;
        }
        let result = match self.error.take() {
            Some((_, err)) => Err(err),
            None => Ok(std::mem::take(&mut self.all)),
        };
        self.slot.complete(result);
        true
    }

    fn fail(&mut self, err: &Error) {
        self.slot.complete(Err(err.duplicate()));
    }
}

/// Chunks delivered to an `imap` iterator, by chunk index.
pub(crate) struct ImapState<T> {
    pub inner: Mutex<ImapInner<T>>,
    pub cond: Condvar,
    /// The items of the largest chunk submitted so far: no reply holds more results.
    pub largest: AtomicUsize,
}

pub(crate) struct ImapInner<T> {
    pub chunks: BTreeMap<u32, Result<Vec<T>>>,
    pub failed: Option<Error>,
    /// The task that polls the iterator as a `Stream`.
    pub waker: Option<Waker>,
}

impl<T> ImapState<T> {
    pub(crate) fn new() -> Arc<ImapState<T>> {
        Arc::new(ImapState {
            inner: Mutex::new(ImapInner {
                chunks: BTreeMap::new(),
                failed: None,
                waker: None,
            }),
            cond: Condvar::new(),
            largest: AtomicUsize::new(0),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ImapInner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes whoever waits: a blocked `next`, a polling task.
    fn wake(&self, mut inner: MutexGuard<'_, ImapInner<T>>) {
        let waker = inner.waker.take();
        drop(inner);
        self.cond.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

pub(crate) struct ImapSink<T> {
    pub state: Arc<ImapState<T>>,
    pub decode: ChunkDecoder<T>,
}

impl<T: DeserializeOwned + Send> Sink for ImapSink<T> {
    fn deliver(&mut self, chunk: u32, result: Result<Encoded>) -> bool {
        // No chunk holds more than the largest submitted so far (this one among them).
        let most = self.state.largest.load(Ordering::Acquire);
        // User code (a `Deserialize`) may panic: that fails this chunk's items alone, in place,
        // as a chunk that fails any other way. Left to the caller, the panic failed the whole
        // job: every chunk after it, and those that came before it out of order.
        let decode = self.decode;
        let values = result.and_then(|encoded| {
            panic::catch_unwind(AssertUnwindSafe(|| decode(encoded, most)))
                .unwrap_or_else(|payload| Err(super::reply::decoding_panicked(&*payload)))
        });
        let mut inner = self.state.lock();
        inner.chunks.insert(chunk, values);
        self.state.wake(inner);
        false
    }

    fn fail(&mut self, err: &Error) {
        let mut inner = self.state.lock();
        inner.failed = Some(err.duplicate());
        self.state.wake(inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::{self, Raw};
    use std::sync::mpsc;

    fn decode(encoded: Encoded, out: &mut Vec<u64>, items: usize) -> Result<()> {
        carrier::decode_chunk_into::<u64, Raw>(encoded, out, items)
    }

    fn chunk(values: Vec<u64>) -> Result<Encoded> {
        carrier::encode_chunk::<u64, Raw>(values)
    }

    const BOUND: Duration = Duration::from_secs(20);

    /// Done callbacks run once, after the result shows as ready, and may use their slot (as
    /// Python's use their future): see it ready, add a callback (which runs after them, in
    /// their thread), but not take the value lent to them, which stays for its owner.
    #[test]
    fn done_callbacks_run_once_ready_and_may_use_their_slot() {
        let slot: Arc<Slot<u64>> = Slot::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for name in ["first", "second"] {
            let (s, seen) = (slot.clone(), seen.clone());
            slot.on_done(Box::new(move |outcome| {
                let ready = s.lock().ready;
                let taken = s.take_value(None).map(|r| r.map_err(|e| e.kind()));
                let record = format!("{name} {outcome:?} ready {ready} take {taken:?}");
                seen.lock().unwrap().push(record);
                let seen = seen.clone();
                s.on_done(Box::new(move |outcome| {
                    seen.lock().unwrap().push(format!("{name}'s {outcome:?}"))
                }));
            }));
        }
        slot.complete(Ok(7));
        slot.complete(Ok(8));
        let lent = "Some(Err(InvalidInput))";
        assert_eq!(
            *seen.lock().unwrap(),
            [
                format!("first Ok(7) ready true take {lent}"),
                format!("second Ok(7) ready true take {lent}"),
                "first's Ok(7)".to_string(),
                "second's Ok(7)".to_string(),
            ]
        );
        assert_eq!(slot.take_value(None).unwrap().unwrap(), 7);
        // Added once the value is taken: at once, told so.
        let (tx, rx) = mpsc::channel();
        slot.on_done(Box::new(move |outcome| {
            tx.send(outcome.map_err(|e| e.kind()).copied()).unwrap()
        }));
        assert_eq!(rx.try_recv().unwrap(), Err(ErrorKind::InvalidInput));
    }

    /// While done callbacks borrow a success in one thread, another sees the result ready,
    /// takes the value once they return (a bounded take times out before), and a callback it
    /// adds runs in their thread, after them.
    #[test]
    fn a_lent_value_is_taken_once_the_done_callbacks_return() {
        let slot: Arc<Slot<u64>> = Slot::new();
        let (entered, in_callback) = mpsc::channel();
        let (release, held) = mpsc::channel::<()>();
        slot.on_done(Box::new(move |_| {
            entered.send(()).unwrap();
            held.recv_timeout(BOUND).unwrap();
        }));
        let completer = {
            let slot = slot.clone();
            std::thread::spawn(move || slot.complete(Ok(7)))
        };
        in_callback.recv_timeout(BOUND).unwrap();
        assert!(slot.wait_until(Some(Instant::now())));
        let soon = Instant::now() + Duration::from_millis(50);
        let err = slot.take_value(Some(soon)).unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        let (ran, runs) = mpsc::channel();
        slot.on_done(Box::new(move |outcome| {
            ran.send((std::thread::current().id(), outcome.ok().copied()))
                .unwrap()
        }));
        assert!(
            runs.try_recv().is_err(),
            "ran before the lent value's callbacks ended"
        );
        let taker = {
            let slot = slot.clone();
            std::thread::spawn(move || slot.take_value(None))
        };
        release.send(()).unwrap();
        let lender = completer.thread().id();
        assert_eq!(runs.recv_timeout(BOUND).unwrap(), (lender, Some(7)));
        assert_eq!(taker.join().unwrap().unwrap().unwrap(), 7);
        completer.join().unwrap();
    }

    #[test]
    fn a_map_whose_input_ended_early_completes_with_its_last_chunk() {
        // Made for 5 chunks of 2; the input held 3 items: chunks of 2 and 1, the second told
        // as the last, before or after the first arrives.
        for told_first in [true, false] {
            let told = Arc::new(Mutex::new(Told::default()));
            let slot = Slot::new();
            let mut sink =
                MapSink::new(slot.clone(), 5, 10, ChunkSizes::Told(told.clone()), decode);
            let tell = |count, last| {
                let mut told = told.lock().unwrap();
                told.sizes.push(count);
                told.ended = last;
            };
            tell(2, false);
            if told_first {
                tell(1, true);
            }
            assert!(!sink.deliver(0, chunk(vec![0, 1])));
            if !told_first {
                tell(1, true);
            }
            assert!(
                sink.deliver(1, chunk(vec![4])),
                "complete with its last chunk"
            );
            assert_eq!(slot.take_value(None).unwrap().unwrap(), vec![0, 1, 4]);
        }
        // No item at all: one empty chunk, the last.
        let told = Arc::new(Mutex::new(Told {
            sizes: vec![0],
            ended: true,
        }));
        let slot = Slot::new();
        let mut sink = MapSink::new(slot.clone(), 5, 10, ChunkSizes::Told(told), decode);
        assert!(sink.deliver(0, chunk(vec![])));
        assert_eq!(slot.take_value(None).unwrap().unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn a_map_whose_input_claims_more_items_than_memory_holds_reserves_nothing() {
        let slot = Slot::new();
        let mut sink = MapSink::new(slot.clone(), 1, usize::MAX, ChunkSizes::none(), decode);
        assert_eq!(sink.all.capacity(), 0);
        sink.fail(&Error::new(ErrorKind::InvalidInput, "no"));
        assert!(slot.take_value(None).unwrap().is_err());
    }

    #[test]
    fn a_reply_with_more_or_fewer_results_than_its_chunk_has_items_fails_the_map() {
        let even = || ChunkSizes::Even {
            chunksize: 3,
            items: 5,
        };
        let told = || {
            ChunkSizes::Told(Arc::new(Mutex::new(Told {
                sizes: vec![3, 2],
                ended: true,
            })))
        };
        for sizes in [even, told] {
            // Chunk 1 holds 2 items; its reply 1 or 3 results, arriving first or last.
            for (wrong, early) in [(1, false), (3, false), (1, true), (3, true)] {
                let slot = Slot::new();
                let mut sink = MapSink::new(slot.clone(), 2, 5, sizes(), decode);
                let first = chunk(vec![0, 1, 4]);
                let second = chunk(vec![9; wrong]);
                let done = if early {
                    sink.deliver(1, second);
                    sink.deliver(0, first)
                } else {
                    sink.deliver(0, first);
                    sink.deliver(1, second)
                };
                assert!(done);
                let err = slot.take_value(None).unwrap().unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Codec);
                assert!(
                    err.to_string().contains(&format!(
                        "holds {wrong} result{} for its 2 items",
                        if wrong == 1 { "" } else { "s" }
                    )),
                    "{err}"
                );
            }
            // The right counts: the whole list, in order.
            let slot = Slot::new();
            let mut sink = MapSink::new(slot.clone(), 2, 5, sizes(), decode);
            sink.deliver(1, chunk(vec![9, 16]));
            assert!(sink.deliver(0, chunk(vec![0, 1, 4])));
            assert_eq!(slot.take_value(None).unwrap().unwrap(), [0, 1, 4, 9, 16]);
        }
        // `apply`: one result, no other count.
        assert_eq!(single(vec![7]).unwrap(), 7);
        for wrong in [vec![], vec![1, 2]] {
            let n = wrong.len();
            let err = single(wrong).unwrap_err();
            assert!(err
                .to_string()
                .contains(&format!("holds {n} results for its 1 item")));
        }
    }
}
