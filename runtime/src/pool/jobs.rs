//! The pool's job table, shared by the pool's handle and its driver thread: the queue of tasks,
//! the sinks that wait for their results, and the pool's lifecycle.
//!
//! A job is registered with [`Shared::submit`] (with a [`Sink`] to deliver its chunks to), may
//! queue more tasks later with [`Shared::push`] (`map` as it encodes, `imap` as it is
//! consumed), and ends when its sink says it is complete, when it is forgotten (an `imap`
//! dropped early), or when the pool fails every job ([`Shared::fail_all`]: terminated,
//! broken, or stopped).

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::Instant;

use super::link::{Link, IDLE, LENT};
use crate::current;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;
use crate::{spare, sys};

/// Where the driver delivers the results of one job's chunks.
pub(crate) trait Sink: Send {
    /// Delivers the result of one chunk (the encoded `Vec` of outputs, or why it failed).
    /// Returns `true` once the job is complete and the sink can be dropped.
    fn deliver(&mut self, chunk: u32, result: Result<Encoded>) -> bool;
    /// Fails everything the job still waits for.
    fn fail(&mut self, err: &Error);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Takes work.
    Running,
    /// `close()`: takes no new work; what was submitted finishes.
    Closed,
    /// `terminate()`: workers killed, pending work failed.
    Terminated,
    /// The driver has exited: nothing runs any more.
    Stopped,
}

/// One chunk of work: encoded arguments for a registered function.
pub(crate) struct Task {
    pub job: u64,
    pub chunk: u32,
    pub entry: &'static str,
    /// The encoded chunk of arguments and the descriptors it carries.
    pub payload: Encoded,
    /// When it was submitted: it fails if no worker could be started for the pool's start
    /// retry limit since then (see `Driver::fail_if_starved`).
    pub queued: Instant,
}

pub(crate) struct State {
    pub lifecycle: Lifecycle,
    pub queue: VecDeque<Task>,
    jobs: HashMap<u64, Box<dyn Sink>>,
    /// Jobs that submit their chunks lazily (`imap`): after `close`, the driver stops waiting
    /// for them once `join` is called.
    lazy: HashSet<u64>,
    forgotten: HashSet<u64>,
    /// Jobs whose sink the driver has taken out to deliver a chunk (outside the lock).
    delivering: HashSet<u64>,
    pub broken: Option<Error>,
    joining: bool,
    next_job: u64,
}

impl State {
    /// Whether jobs still expect results: they keep a closed pool alive; lazy ones (`imap`)
    /// only until `join` is called.
    pub(super) fn waiting(&self) -> bool {
        self.jobs
            .keys()
            .any(|job| !(self.joining && self.lazy.contains(job)))
    }
}

/// What the pool's handle and its driver share.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(super) wake: OwnedFd,
    driver_thread: OnceLock<ThreadId>,
    pub(super) links: Mutex<Vec<Arc<Link>>>,
    maxtasks: OnceLock<Option<u64>>,
    /// Large buffers a caller of `apply` is done with, for the driver to free.
    discarded: Mutex<Vec<Vec<u8>>>,
    /// Numbers the tickets of tasks (see [`Shared::ticket`]).
    tickets: AtomicU64,
    ticket_key: std::collections::hash_map::RandomState,
}

/// From this many bytes on, a caller of `apply` leaves the freeing of its sent arguments to
/// the driver thread: unmapping 64 MiB of 4 KiB pages takes milliseconds, and would delay the
/// caller's reading of the reply.
const DISCARD_FROM: usize = 4 << 20;

impl Shared {
    pub(crate) fn new() -> Result<Arc<Shared>> {
        let wake = current::registered(sys::eventfd, |wake| vec![wake.as_raw_fd()])
            .map_err(|err| Error::io("cannot create the pool's eventfd", err))?;
        Ok(Arc::new(Shared {
            state: Mutex::new(State {
                lifecycle: Lifecycle::Running,
                queue: VecDeque::new(),
                jobs: HashMap::new(),
                lazy: HashSet::new(),
                forgotten: HashSet::new(),
                delivering: HashSet::new(),
                broken: None,
                joining: false,
                next_job: 0,
            }),
            wake,
            driver_thread: OnceLock::new(),
            links: Mutex::new(Vec::new()),
            maxtasks: OnceLock::new(),
            discarded: Mutex::new(Vec::new()),
            tickets: AtomicU64::new(0),
            ticket_key: std::collections::hash_map::RandomState::new(),
        }))
    }

    /// A fresh ticket for a task sent to a worker: its reply must carry it back. Unique in the
    /// pool and not guessable from the task's arguments, so a task that writes on its own
    /// socket cannot forge the reply to another task, nor pass a message of its own for the
    /// reply to its own (see `Reply::Done`).
    pub(crate) fn ticket(&self) -> u64 {
        use std::hash::BuildHasher;
        let n = self.tickets.fetch_add(1, Ordering::Relaxed);
        self.ticket_key.hash_one(n)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn wake(&self) {
        sys::eventfd_signal(self.wake.as_fd());
    }

    /// Called by the driver thread as it starts (see [`in_driver`](Self::in_driver)).
    pub(super) fn set_driver_thread(&self) {
        let _ = self.driver_thread.set(std::thread::current().id());
    }

    /// The pool's `maxtasksperchild`: a worker that has run as many is not lent.
    pub(super) fn set_maxtasks(&self, maxtasks: Option<u64>) {
        let _ = self.maxtasks.set(maxtasks);
    }

    /// Whether the caller is the driver thread (a result callback): it must not wait for the
    /// pool, which only it can drive.
    pub(crate) fn in_driver(&self) -> bool {
        self.driver_thread.get() == Some(&std::thread::current().id())
    }

    /// Borrows an idle, ready worker for one task run by the caller, when the pool runs and no
    /// queued task waits (queued work keeps its turn).
    pub(crate) fn lend(&self) -> Option<Arc<Link>> {
        let state = self.lock();
        if state.lifecycle != Lifecycle::Running
            || state.broken.is_some()
            || !state.queue.is_empty()
        {
            return None;
        }
        let maxtasks = self.maxtasks.get().copied().flatten();
        let links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        let link = links.iter().find(|link| {
            link.ready.load(Ordering::Acquire)
                && maxtasks.is_none_or(|max| link.done.load(Ordering::Acquire) < max)
                && link
                    .state
                    .compare_exchange(IDLE, LENT, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
        })?;
        Some(link.clone())
    }

    /// Gives a borrowed worker back and lets the driver use it again.
    pub(crate) fn give_back(&self, link: &Link) {
        let _ = link
            .state
            .compare_exchange(LENT, IDLE, Ordering::AcqRel, Ordering::Acquire);
        // Wake the driver only when it has something to do with this worker: queued work (it
        // may have skipped the worker while it was lent), or a pool closing (it waits for
        // borrowed workers before it stops). Waking it after every call would cost the caller
        // a context switch on a small machine.
        let state = self.lock();
        if !state.queue.is_empty() || state.lifecycle != Lifecycle::Running {
            drop(state);
            self.wake();
        }
    }

    /// Frees the byte blocks of a sent task: on the driver thread when they are large (see
    /// [`DISCARD_FROM`]), here otherwise. Its encoded bytes are kept as a spare buffer.
    pub(crate) fn discard(&self, sent: Encoded) {
        spare::give(sent.bytes);
        let large = sent.blocks.iter().map(Vec::len).sum::<usize>() >= DISCARD_FROM;
        if !large {
            return;
        }
        self.discarded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(sent.blocks);
        self.wake();
    }

    pub(super) fn free_discarded(&self) {
        let discarded = std::mem::take(
            &mut *self
                .discarded
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        drop(discarded);
    }

    /// `join` was called: lazy jobs no longer keep a closed pool's driver alive.
    pub(crate) fn joining(&self) {
        self.lock().joining = true;
        self.wake();
    }

    /// Why the pool takes no new work, if it does not.
    fn refusal(state: &State) -> Option<Error> {
        if let Some(err) = &state.broken {
            return Some(err.duplicate());
        }
        match state.lifecycle {
            Lifecycle::Running => None,
            Lifecycle::Terminated => Some(Error::new(
                ErrorKind::NotRunning,
                "pool not running (it was terminated)",
            )),
            Lifecycle::Closed | Lifecycle::Stopped => Some(Error::new(
                ErrorKind::NotRunning,
                "pool not running (it was closed)",
            )),
        }
    }

    /// Registers a job and queues its first tasks at once; fails its sink and returns the error
    /// when the pool takes no work. `lazy` jobs push more tasks later (`imap`).
    pub(crate) fn submit(
        &self,
        mut sink: Box<dyn Sink>,
        tasks: impl FnOnce(u64) -> Vec<Task>,
        lazy: bool,
    ) -> Result<u64> {
        let mut state = self.lock();
        if let Some(err) = Self::refusal(&state) {
            drop(state);
            sink.fail(&err);
            return Err(err);
        }
        let job = state.next_job;
        state.next_job += 1;
        state.jobs.insert(job, sink);
        if lazy {
            state.lazy.insert(job);
        }
        state.queue.extend(tasks(job));
        drop(state);
        self.wake();
        Ok(job)
    }

    /// Queues more tasks of a registered job. Fails when the job is gone (it was failed: the
    /// pool was terminated, broken, or stopped after `close` and `join`).
    pub(crate) fn push(&self, job: u64, tasks: impl IntoIterator<Item = Task>) -> Result<()> {
        let mut state = self.lock();
        let known = state.jobs.contains_key(&job) || state.delivering.contains(&job);
        if !known && !state.forgotten.contains(&job) {
            // Delivered and removed, or failed: say why the pool cannot take more.
            let err = Self::refusal(&state).unwrap_or_else(|| {
                Error::new(
                    ErrorKind::NotRunning,
                    "this work was already failed by the pool",
                )
            });
            return Err(err);
        }
        if matches!(state.lifecycle, Lifecycle::Terminated | Lifecycle::Stopped) {
            return Err(Self::refusal(&state)
                .unwrap_or_else(|| Error::new(ErrorKind::NotRunning, "pool not running")));
        }
        state.queue.extend(tasks);
        drop(state);
        self.wake();
        Ok(())
    }

    /// Drops a job (an `imap` iterator dropped early, or a `map` whose chunk did not encode):
    /// its queued tasks are discarded and results still in flight are ignored.
    pub(crate) fn forget(&self, job: u64) {
        let mut state = self.lock();
        state.queue.retain(|t| t.job != job);
        state.lazy.remove(&job);
        if state.jobs.remove(&job).is_none() {
            state.forgotten.insert(job);
        }
        drop(state);
        self.wake();
    }

    pub(super) fn deliver(&self, job: u64, chunk: u32, result: Result<Encoded>) {
        let Some(mut sink) = self.take_for_delivery(job) else {
            return;
        };
        // Outside the lock: decoding and callbacks run here. User code (a `Deserialize`, a
        // callback) may panic: that fails this job, not the driver.
        let complete = match panic::catch_unwind(AssertUnwindSafe(|| sink.deliver(chunk, result))) {
            Ok(complete) => complete,
            Err(payload) => {
                let err = Error::new(
                    ErrorKind::Panicked,
                    format!(
                        "decoding a result panicked: {}",
                        crate::child::panic_message(&*payload)
                    ),
                );
                let _ = panic::catch_unwind(AssertUnwindSafe(|| sink.fail(&err)));
                true
            }
        };
        let mut state = self.lock();
        state.delivering.remove(&job);
        if state.forgotten.remove(&job) || complete {
            state.lazy.remove(&job);
            return;
        }
        state.jobs.insert(job, sink);
    }

    fn take_for_delivery(&self, job: u64) -> Option<Box<dyn Sink>> {
        let mut state = self.lock();
        let sink = state.jobs.remove(&job)?;
        state.delivering.insert(job);
        Some(sink)
    }

    /// Fails every job, queued or running, with `err`.
    pub(super) fn fail_all(&self, err: &Error) {
        let jobs: Vec<Box<dyn Sink>> = {
            let mut state = self.lock();
            state.queue.clear();
            state.lazy.clear();
            state.jobs.drain().map(|(_, sink)| sink).collect()
        };
        for mut sink in jobs {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| sink.fail(err)));
        }
    }

    pub(super) fn mark_broken(&self, err: Error) {
        let copy = err.duplicate();
        {
            let mut state = self.lock();
            if state.broken.is_none() {
                state.broken = Some(err);
            }
        }
        self.fail_all(&copy);
    }

    /// The driver exits: whatever still waits fails with a clear error.
    pub(super) fn finish(&self) {
        let err = {
            let mut state = self.lock();
            let err = match state.lifecycle {
                Lifecycle::Terminated => {
                    Error::new(ErrorKind::Terminated, "the pool was terminated")
                }
                _ => Error::new(
                    ErrorKind::NotRunning,
                    "the pool was closed and joined before this work was submitted",
                ),
            };
            if state.lifecycle != Lifecycle::Terminated {
                state.lifecycle = Lifecycle::Stopped;
            }
            err
        };
        self.fail_all(&err);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        current::unregister_fd(&self.wake);
    }
}
