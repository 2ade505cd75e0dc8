//! The pool's job table, shared by the pool's handle and its driver thread: the queue of tasks,
//! the sinks that wait for their results, and the pool's lifecycle.
//!
//! A job is registered with [`Shared::submit`] (with a [`Sink`] to deliver its chunks to), may
//! queue more tasks later with [`Shared::push`] (`map` as it encodes, `imap` as it is
//! consumed), and ends when its sink says it is complete, when it is forgotten (an `imap`
//! dropped early), or when the pool fails every job ([`Shared::fail_all`]: terminated,
//! broken, or stopped).
//!
//! A job can also be cancelled ([`Shared::cancel`]): its queued tasks leave the queue here, so
//! the driver never sees them; its sink fails at once; results of its chunks still running go
//! nowhere, and the workers that run them are killed only when the caller asks
//! ([`Shared::take_kills`], which the driver reads).

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::AsFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::link::{Link, IDLE, LENT};
use super::{reply, threads};
use crate::block::Block;
use crate::error::{Error, ErrorKind, Result};
use crate::fd::{self, LibraryFd};
use crate::handle::Encoded;
use crate::{spare, sys};

/// Where the driver delivers the results of one job's chunks.
pub(crate) trait Sink: Send {
    /// Told its job's number as it is registered (what a result's `cancel` names).
    fn registered(&mut self, _job: u64) {}
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

/// A task a borrower left running on its worker (see [`State::orphans`]).
pub(crate) struct Orphan {
    pub link: Arc<Link>,
    pub job: u64,
    pub chunk: u32,
    pub ticket: u64,
    /// Whether it went in the worker's ring (not on its socket).
    pub in_ring: bool,
}

/// A task queued in a worker's ring behind the one it runs (see [`State::prefetched`]).
pub(crate) struct Prefetched {
    pub job: u64,
    pub ticket: u64,
    /// Its claim word.
    pub slot: u8,
    pub link: Arc<Link>,
}

impl Prefetched {
    fn unclaimed(&self) -> bool {
        self.link.rings.unclaimed(self.slot, self.ticket)
    }
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
    /// Jobs cancelled while their sink was out for delivery: failed when it comes back.
    cancelling: HashSet<u64>,
    /// Cancelled jobs whose running chunks' workers are to be killed (see `take_kills`).
    kills: HashSet<u64>,
    /// Tasks the driver put in a worker's ring behind the task it runs: still queued until
    /// the worker claims them, and revoked by a cancel that comes first (see `rings`).
    pub(super) prefetched: Vec<Prefetched>,
    /// Jobs a waiting thread runs on a borrowed worker (see `lent::run_queued_here`), out of
    /// `jobs` with their sinks: their worker, and whether a cancel came meanwhile.
    borrowed: HashMap<u64, (Arc<Link>, bool)>,
    /// Workers whose borrower left its task to them (its job was cancelled meanwhile): the
    /// driver takes them back busy with it, reads its reply and delivers it nowhere (see
    /// `lent::round_trip`).
    pub(super) orphans: Vec<Orphan>,
    pub broken: Option<Error>,
    joining: bool,
    next_job: u64,
}

impl State {
    /// Whether a task of `job` may still run: its job is neither done nor cancelled nor
    /// dropped (`forget`).
    pub(super) fn wants(&self, job: u64) -> bool {
        self.jobs.contains_key(&job)
            || (self.delivering.contains(&job) && !self.cancelling.contains(&job))
    }

    /// Puts a task that did not run back at the front of the queue (it was taken first),
    /// unless its job was cancelled or dropped meanwhile: then it never runs. A task revoked
    /// from a worker's ring by a `cancel` must not come back through the driver's own records
    /// of it (a steal, a dead worker's burial), which still hold it.
    pub(super) fn requeue(&mut self, task: Task) {
        if self.wants(task.job) {
            self.queue.push_front(task);
        }
    }

    /// Whether jobs still expect results: they keep a closed pool alive; lazy ones (`imap`)
    /// only until `join` is called.
    pub(super) fn waiting(&self) -> bool {
        !self.borrowed.is_empty()
            || self
                .jobs
                .keys()
                .any(|job| !(self.joining && self.lazy.contains(job)))
    }
}

/// The error of work a pool closed and joined did not take: the rest of a lazy map's input,
/// which the pool finished without (it waits for the work submitted, not for the input).
pub(super) fn joined() -> Error {
    Error::new(
        ErrorKind::NotRunning,
        "the pool was closed and joined (an executor shut down) before this work was \
         submitted: a lazy map (imap, Executor::map) reads its input as its results are taken, \
         so take them before the shutdown",
    )
}

/// The error of the work a terminated pool did not do.
pub(super) fn terminated() -> Error {
    Error::new(ErrorKind::Terminated, "the pool was terminated")
}

/// What the pool's handle and its driver share.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(super) wake: LibraryFd,
    driver_thread: OnceLock<ThreadId>,
    pub(super) links: Mutex<Vec<Arc<Link>>>,
    maxtasks: OnceLock<Option<u64>>,
    /// What a thread that borrows a worker must know (see [`Shared::lend`]).
    lending: OnceLock<Lending>,
    /// Large buffers a caller of `apply` is done with, for the driver to free.
    discarded: Mutex<Vec<Block>>,
    /// Numbers the tickets of tasks (see [`Shared::ticket`]).
    tickets: AtomicU64,
    ticket_key: std::collections::hash_map::RandomState,
    /// Whether `kills` has jobs: the driver looks at no lock for them otherwise.
    kills_pending: AtomicBool,
    /// Whether the driver sleeps (see [`Shared::nudge`]).
    driver_sleeps: AtomicU8,
}

/// The settings a thread running a task on a borrowed worker keeps to (see `pool::lent`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Lending {
    /// The pool's `task_timeout`.
    pub task_timeout: Option<Duration>,
    /// The pool's `max_memory_per_child`.
    pub max_memory: Option<u64>,
    /// No worker is lent under a soft task timeout: the driver sends its signal.
    pub soft_timeout: bool,
}

/// How the driver waits (see [`Shared::sleeps`]).
pub(super) const AWAKE: u8 = 0;
pub(super) const NAPPING: u8 = 1;
pub(super) const ASLEEP: u8 = 2;

/// The longest nap of a driver that was busy a moment ago: a task queued meanwhile waits at
/// most this long for it, without a wake-up.
pub(super) const NAP: Duration = Duration::from_micros(50);

/// The error of cancelled work.
pub(crate) fn cancelled() -> Error {
    Error::new(ErrorKind::Cancelled, "the work was cancelled")
}

/// From this many bytes on, a caller of `apply` leaves the freeing of its sent arguments to
/// the driver thread: unmapping 64 MiB of 4 KiB pages takes milliseconds, and would delay the
/// caller's reading of the reply.
const DISCARD_FROM: usize = 4 << 20;

impl Shared {
    pub(crate) fn new() -> Result<Arc<Shared>> {
        let wake = fd::made(|fds| Ok::<_, std::io::Error>(fds.own(sys::eventfd()?)))
            .map_err(|err| Error::io("cannot create the pool's eventfd", err))?;
        Ok(Arc::new(Shared {
            state: Mutex::new(State {
                lifecycle: Lifecycle::Running,
                queue: VecDeque::new(),
                jobs: HashMap::new(),
                lazy: HashSet::new(),
                forgotten: HashSet::new(),
                delivering: HashSet::new(),
                cancelling: HashSet::new(),
                borrowed: HashMap::new(),
                prefetched: Vec::new(),
                orphans: Vec::new(),
                kills: HashSet::new(),
                broken: None,
                joining: false,
                next_job: 0,
            }),
            wake,
            driver_thread: OnceLock::new(),
            links: Mutex::new(Vec::new()),
            maxtasks: OnceLock::new(),
            lending: OnceLock::new(),
            discarded: Mutex::new(Vec::new()),
            tickets: AtomicU64::new(0),
            ticket_key: std::collections::hash_map::RandomState::new(),
            kills_pending: AtomicBool::new(false),
            driver_sleeps: AtomicU8::new(ASLEEP),
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

    /// Wakes the driver for tasks just queued, only if it sleeps (or is about to) without a
    /// deadline near: an awake driver looks at the queue before it sleeps, and a napping one
    /// when its nap ends (see [`Shared::sleeps`]). A burst of submits then costs no system call
    /// and no wake-up per task, nor does a task its caller runs at once itself (see
    /// `lent::run_queued_here`).
    fn nudge(&self) {
        if self.driver_sleeps.load(Ordering::SeqCst) == ASLEEP {
            self.wake();
        }
    }

    /// The driver is about to sleep (`ASLEEP`: it dispatches once more after saying so, under
    /// the queue's lock, so that a task queued before that is seen and one queued after it
    /// wakes it), to nap (`NAPPING`: it looks at the queue again within [`NAP`]), or is
    /// awake again (`AWAKE`).
    pub(super) fn sleeps(&self, how: u8) {
        self.driver_sleeps.store(how, Ordering::SeqCst);
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
        self.idle_link()
    }

    /// An idle, ready worker, now marked lent; the caller holds the state's lock.
    fn idle_link(&self) -> Option<Arc<Link>> {
        let maxtasks = self.maxtasks.get().copied().flatten();
        let links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        let link = links.iter().find(|link| {
            link.ready.load(Ordering::Acquire)
                && !link.retire.load(Ordering::Acquire)
                && maxtasks.is_none_or(|max| link.done.load(Ordering::Acquire) < max)
                && link
                    .state
                    .compare_exchange(IDLE, LENT, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
        })?;
        Some(link.clone())
    }

    /// The pool's settings for borrowed workers, once (at the pool's build).
    pub(crate) fn set_lending(&self, lending: Lending) {
        let _ = self.lending.set(lending);
    }

    /// The pool's settings for borrowed workers.
    pub(crate) fn lending(&self) -> Lending {
        self.lending.get().copied().unwrap_or_default()
    }

    /// An idle worker lent with the task of `job`, taken out of the queue with the job's sink
    /// (the driver no longer knows the job): only when that task is the whole job (the caller
    /// knows: `apply_async`; a job of several may have others out with workers) and heads
    /// the queue (no task queued before it is overtaken), the pool takes work, and no soft
    /// task timeout asks the driver to watch every task. `None` otherwise: the task stays
    /// queued for the driver.
    pub(crate) fn lend_for(&self, job: u64) -> Option<(Arc<Link>, Task, Box<dyn Sink>)> {
        if self
            .lending
            .get()
            .is_none_or(|lending| lending.soft_timeout)
        {
            return None;
        }
        let mut state = self.lock();
        let alone = state.queue.front().is_some_and(|task| task.job == job)
            && state.queue.get(1).is_none_or(|task| task.job != job);
        if state.lifecycle != Lifecycle::Running
            || state.broken.is_some()
            || !alone
            || state.lazy.contains(&job)
            || !state.jobs.contains_key(&job)
        {
            return None;
        }
        let link = self.idle_link()?;
        let task = state.queue.pop_front()?;
        let sink = state.jobs.remove(&job)?;
        state.borrowed.insert(job, (link.clone(), false));
        Some((link, task, sink))
    }

    /// The waiting thread is done running `job` on a borrowed worker (see `lend_for`): whether
    /// it was cancelled meanwhile. Wakes a closing driver, which waited for it.
    pub(crate) fn end_borrow(&self, job: u64) -> bool {
        let mut state = self.lock();
        let cancelled = state.borrowed.remove(&job).is_some_and(|(_, c)| c);
        let closing = state.lifecycle != Lifecycle::Running;
        drop(state);
        if closing {
            self.wake();
        }
        cancelled
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
        // And a worker to be retired (see `Link::retire`): the driver lets it go once idle.
        if !state.queue.is_empty()
            || state.lifecycle != Lifecycle::Running
            || link.retire.load(Ordering::Acquire)
        {
            drop(state);
            self.wake();
        }
    }

    /// Frees the byte blocks of a sent task: on the driver thread when they are large (see
    /// [`DISCARD_FROM`]), here otherwise. Its encoded bytes are kept as a spare buffer.
    pub(crate) fn discard(&self, sent: Encoded) {
        spare::give(sent.bytes);
        let large = sent.blocks.iter().map(|b| b.len()).sum::<usize>() >= DISCARD_FROM;
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

    /// `terminate`: the driver stops, and so does every caller running a task on a borrowed
    /// worker (see `lent::round_trip`), woken by its worker's bell: its result can never come
    /// either, and it must not wait for its worker to die (a worker that ignores SIGTERM holds
    /// out for the driver's grace).
    pub(crate) fn terminate(&self) {
        self.lock().lifecycle = Lifecycle::Terminated;
        self.wake();
        // Lent before the lifecycle changed (a worker is lent under the state's lock, only to
        // a running pool): the borrower, rung after, looks at the lifecycle once woken.
        let links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        for link in links.iter() {
            if link.state.load(Ordering::Acquire) == LENT {
                sys::eventfd_signal(link.rings.parent_bell());
            }
        }
    }

    /// Whether `job`, run by a waiting thread on a borrowed worker, was cancelled.
    pub(crate) fn borrow_cancelled(&self, job: u64) -> bool {
        self.lock().borrowed.get(&job).is_some_and(|&(_, c)| c)
    }

    /// A borrower leaves the task it sent to its worker (its job was cancelled): the driver
    /// takes the worker back busy with it (see [`State::orphans`]).
    pub(crate) fn orphan(&self, orphan: Orphan) {
        // Not lent, nor idle: taken by the driver only, once it knows of the task.
        orphan
            .link
            .state
            .store(super::link::DRIVER, Ordering::Release);
        self.lock().orphans.push(orphan);
        self.wake();
    }

    /// Whether the pool was terminated (a borrower's call then fails at once).
    pub(crate) fn terminated(&self) -> bool {
        self.lock().lifecycle == Lifecycle::Terminated
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
            Lifecycle::Closed => Some(Error::new(
                ErrorKind::NotRunning,
                "pool not running (it was closed)",
            )),
            Lifecycle::Stopped => Some(Error::new(
                ErrorKind::NotRunning,
                "pool not running (it was closed and joined)",
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
        sink.registered(job);
        state.jobs.insert(job, sink);
        if lazy {
            state.lazy.insert(job);
        }
        state.queue.extend(tasks(job));
        drop(state);
        self.nudge();
        Ok(job)
    }

    /// Queues more tasks of a registered job. Fails when the job is gone (it was failed: the
    /// pool was terminated, broken, or stopped after `close` and `join`).
    pub(crate) fn push(&self, job: u64, tasks: impl IntoIterator<Item = Task>) -> Result<()> {
        let mut state = self.lock();
        if state.lifecycle == Lifecycle::Terminated && state.broken.is_none() {
            // Work submitted before the terminate (a map still reading its input): it fails
            // as every pending result of a terminated pool does.
            return Err(terminated());
        }
        let known = state.jobs.contains_key(&job) || state.delivering.contains(&job);
        if !known && !state.forgotten.contains(&job) {
            // Delivered and removed, or failed: say why the pool cannot take more. A lazy
            // map's job failed by the driver as it stopped (see `finish`) is told why.
            let stopped = state.lifecycle == Lifecycle::Stopped && state.broken.is_none();
            let refused = if stopped {
                Some(joined())
            } else {
                Self::refusal(&state)
            };
            let err = refused.unwrap_or_else(|| {
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
        self.nudge();
        Ok(())
    }

    /// Drops a job (an `imap` iterator dropped early, or a `map` whose chunk did not encode):
    /// its queued tasks are discarded and results still in flight are ignored.
    pub(crate) fn forget(&self, job: u64) {
        let mut state = self.lock();
        state.queue.retain(|t| t.job != job);
        // And those queued in a worker's ring, unless the worker claimed them already: a
        // dropped executor `map` cancels the tasks not yet started.
        state
            .prefetched
            .retain(|p| !(p.job == job && p.link.rings.revoke(p.slot, p.ticket)));
        state.lazy.remove(&job);
        if state.jobs.remove(&job).is_none() {
            state.forgotten.insert(job);
        }
        drop(state);
        self.wake();
    }

    /// Cancels a job: its queued tasks are dropped (the driver never sees them), its sink fails
    /// with an [`ErrorKind::Cancelled`] error, and results of its chunks still running go
    /// nowhere; with `kill`, the workers running them are killed (and replaced). With
    /// `only_if_queued` (the executor's `cancel`, for jobs of one task), only a job whose task
    /// is still queued is cancelled. Returns whether it was; `false` when the job is done.
    pub(crate) fn cancel(&self, job: u64, kill: bool, only_if_queued: bool) -> bool {
        let mut state = self.lock();
        // Its tasks queued in a ring are revoked (they will not run) unless a worker claimed
        // them first.
        let mut revoked = false;
        state.prefetched.retain(|p| {
            let gone = p.job == job && p.link.rings.revoke(p.slot, p.ticket);
            revoked |= gone;
            !gone
        });
        if only_if_queued && !revoked && !state.queue.iter().any(|t| t.job == job) {
            return false;
        }
        // Run by a waiting thread on a borrowed worker: failed when it ends (at once, with
        // `kill`: its worker is killed).
        if let Some((link, cancelled)) = state.borrowed.get_mut(&job) {
            if !*cancelled {
                if kill {
                    let _ = sys::pidfd_send_signal(link.pidfd.as_fd(), libc::SIGKILL);
                } else {
                    // The borrower, woken, leaves the task to the driver and fails at once.
                    sys::eventfd_signal(link.rings.parent_bell());
                }
            }
            *cancelled = true;
            return true;
        }
        let sink = state.jobs.remove(&job);
        if sink.is_none() && !state.delivering.contains(&job) {
            return false;
        }
        state.queue.retain(|t| t.job != job);
        state.lazy.remove(&job);
        if kill {
            state.kills.insert(job);
            self.kills_pending.store(true, Ordering::Release);
        }
        let Some(mut sink) = sink else {
            // Out for delivery: failed when it comes back (see `deliver`).
            state.cancelling.insert(job);
            return true;
        };
        drop(state);
        if kill {
            self.wake();
        }
        threads::user_code(|| {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| sink.fail(&cancelled())));
            drop(sink);
        });
        true
    }

    /// Cancels every job that still has a task in the queue (the executor's
    /// `shutdown(cancel_futures)`); returns how many.
    pub(crate) fn cancel_queued(&self) -> usize {
        let jobs: HashSet<u64> = {
            let state = self.lock();
            let prefetched = state.prefetched.iter().filter(|p| p.unclaimed());
            (state.queue.iter().map(|t| t.job))
                .chain(prefetched.map(|p| p.job))
                .collect()
        };
        jobs.into_iter()
            .filter(|&job| self.cancel(job, false, false))
            .count()
    }

    /// Whether a task of `job` waits in the queue (no worker has it yet).
    pub(crate) fn is_queued(&self, job: u64) -> bool {
        let state = self.lock();
        state.queue.iter().any(|t| t.job == job)
            || state
                .prefetched
                .iter()
                .any(|p| p.job == job && p.unclaimed())
    }

    /// The task of `ticket` left a worker's ring (it ran, or goes back to the queue).
    pub(super) fn unprefetch(&self, ticket: u64) {
        let mut state = self.lock();
        state.prefetched.retain(|p| p.ticket != ticket);
    }

    /// The jobs whose running chunks' workers must be killed (`cancel` with `kill`), for the
    /// driver; empty, without a lock, when there are none.
    pub(super) fn take_kills(&self) -> HashSet<u64> {
        if !self.kills_pending.swap(false, Ordering::AcqRel) {
            return HashSet::new();
        }
        std::mem::take(&mut self.lock().kills)
    }

    pub(super) fn deliver(&self, job: u64, chunk: u32, result: Result<Encoded>) {
        let Some(mut sink) = self.take_for_delivery(job) else {
            return;
        };
        // Outside the lock: decoding and callbacks run here, as user code (see
        // `threads::user_code`). It may panic: that fails this job, not the driver.
        let complete = threads::user_code(|| {
            match panic::catch_unwind(AssertUnwindSafe(|| sink.deliver(chunk, result))) {
                Ok(complete) => complete,
                Err(payload) => {
                    let err = reply::decoding_panicked(&*payload);
                    let _ = panic::catch_unwind(AssertUnwindSafe(|| sink.fail(&err)));
                    true
                }
            }
        });
        let mut state = self.lock();
        state.delivering.remove(&job);
        if state.cancelling.remove(&job) {
            state.forgotten.remove(&job);
            drop(state);
            threads::user_code(|| {
                if !complete {
                    let _ = panic::catch_unwind(AssertUnwindSafe(|| sink.fail(&cancelled())));
                }
                drop(sink);
            });
            return;
        }
        if state.forgotten.remove(&job) || complete {
            state.lazy.remove(&job);
            drop(state);
            // What it holds is the user's (values, callbacks not called).
            threads::user_code(|| drop(sink));
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
            state.prefetched.clear();
            state.lazy.clear();
            state.jobs.drain().map(|(_, sink)| sink).collect()
        };
        threads::user_code(|| {
            for mut sink in jobs {
                let _ = panic::catch_unwind(AssertUnwindSafe(|| sink.fail(err)));
            }
        });
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
                Lifecycle::Terminated => terminated(),
                _ => joined(),
            };
            if state.lifecycle != Lifecycle::Terminated {
                state.lifecycle = Lifecycle::Stopped;
            }
            err
        };
        self.fail_all(&err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a test sink was given.
    #[derive(Default)]
    struct Log {
        delivered: Vec<(u32, std::result::Result<(), ErrorKind>)>,
        failed: Vec<ErrorKind>,
        dropped: bool,
    }

    /// A sink that records what it gets and is complete after `chunks` chunks.
    struct TestSink {
        log: Arc<Mutex<Log>>,
        chunks: usize,
        /// Called in `deliver`, outside the job table's lock (as user code runs).
        during: Option<Box<dyn FnMut() + Send>>,
        panics: bool,
    }

    impl Sink for TestSink {
        fn deliver(&mut self, chunk: u32, result: Result<Encoded>) -> bool {
            if let Some(during) = &mut self.during {
                during();
            }
            if self.panics {
                panic!("deliberate panic: a test sink panics");
            }
            let mut log = self.log.lock().unwrap();
            log.delivered
                .push((chunk, result.map(|_| ()).map_err(|e| e.kind())));
            log.delivered.len() >= self.chunks
        }

        fn fail(&mut self, err: &Error) {
            self.log.lock().unwrap().failed.push(err.kind());
        }
    }

    impl Drop for TestSink {
        fn drop(&mut self) {
            self.log.lock().unwrap().dropped = true;
        }
    }

    fn sink(chunks: usize) -> (Box<TestSink>, Arc<Mutex<Log>>) {
        let log = Arc::new(Mutex::new(Log::default()));
        let sink = TestSink {
            log: log.clone(),
            chunks,
            during: None,
            panics: false,
        };
        (Box::new(sink), log)
    }

    fn task(job: u64, chunk: u32) -> Task {
        Task {
            job,
            chunk,
            entry: "test::entry",
            payload: Encoded::default(),
            queued: Instant::now(),
        }
    }

    fn queued(shared: &Shared) -> Vec<(u64, u32)> {
        shared
            .lock()
            .queue
            .iter()
            .map(|t| (t.job, t.chunk))
            .collect()
    }

    fn delivered(log: &Mutex<Log>) -> Vec<(u32, std::result::Result<(), ErrorKind>)> {
        log.lock().unwrap().delivered.clone()
    }

    #[test]
    fn submit_numbers_jobs_and_queues_their_tasks() {
        let shared = Shared::new().unwrap();
        let (first, _) = sink(1);
        let (second, _) = sink(2);
        let a = shared
            .submit(first, |job| vec![task(job, 0)], false)
            .unwrap();
        let b = shared
            .submit(second, |job| vec![task(job, 0), task(job, 1)], false)
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(queued(&shared), [(a, 0), (b, 0), (b, 1)]);
        assert!(shared.lock().waiting());
    }

    #[test]
    fn a_pool_that_takes_no_work_fails_the_sink_at_submit() {
        for (lifecycle, broken) in [
            (Lifecycle::Closed, false),
            (Lifecycle::Terminated, false),
            (Lifecycle::Stopped, false),
            (Lifecycle::Running, true),
        ] {
            let shared = Shared::new().unwrap();
            shared.lock().lifecycle = lifecycle;
            if broken {
                shared.lock().broken = Some(Error::new(ErrorKind::InitializerFailed, "broken"));
            }
            let (sink, log) = sink(1);
            let err = shared
                .submit(sink, |job| vec![task(job, 0)], false)
                .unwrap_err();
            let expected = if broken {
                ErrorKind::InitializerFailed
            } else {
                ErrorKind::NotRunning
            };
            assert_eq!(err.kind(), expected, "{lifecycle:?}");
            assert_eq!(log.lock().unwrap().failed, [expected]);
            assert!(queued(&shared).is_empty());
            assert!(!shared.lock().waiting());
        }
    }

    #[test]
    fn push_queues_more_tasks_of_a_known_job_only() {
        let shared = Shared::new().unwrap();
        let (sink, _) = sink(2);
        let job = shared.submit(sink, |_| Vec::new(), false).unwrap();
        shared.push(job, [task(job, 0)]).unwrap();
        // A closed pool still runs a job registered before `close`.
        shared.lock().lifecycle = Lifecycle::Closed;
        shared.push(job, [task(job, 1)]).unwrap();
        assert_eq!(queued(&shared), [(job, 0), (job, 1)]);
        let err = shared.push(job + 1, [task(job + 1, 0)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotRunning);
        // A terminated pool fails the rest of a job registered before, as it fails the job.
        shared.lock().lifecycle = Lifecycle::Terminated;
        let err = shared.push(job, [task(job, 2)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Terminated);
        assert!(err.to_string().contains("terminated"), "{err}");
    }

    #[test]
    fn deliver_hands_each_chunk_to_its_sink_until_it_is_complete() {
        let shared = Shared::new().unwrap();
        let (sink, log) = sink(2);
        let job = shared
            .submit(sink, |job| vec![task(job, 0), task(job, 1)], false)
            .unwrap();
        shared.deliver(job, 1, Ok(Encoded::default()));
        assert!(!log.lock().unwrap().dropped);
        assert!(shared.lock().waiting());
        shared.deliver(job, 0, Err(Error::new(ErrorKind::Died, "died")));
        assert_eq!(delivered(&log), [(1, Ok(())), (0, Err(ErrorKind::Died))]);
        // Complete: dropped, no longer waited for, and a late chunk goes nowhere.
        assert!(log.lock().unwrap().dropped);
        assert!(!shared.lock().waiting());
        shared.deliver(job, 1, Ok(Encoded::default()));
        assert_eq!(delivered(&log).len(), 2);
        let err = shared.push(job, [task(job, 2)]).unwrap_err();
        assert!(err.to_string().contains("already failed"), "{err}");
    }

    #[test]
    fn a_panicking_sink_fails_its_job_not_the_table() {
        let shared = Shared::new().unwrap();
        let (mut panicking, log) = sink(2);
        panicking.panics = true;
        let job = shared.submit(panicking, |_| Vec::new(), false).unwrap();
        let (other, other_log) = sink(1);
        let other_job = shared.submit(other, |_| Vec::new(), false).unwrap();
        shared.deliver(job, 0, Ok(Encoded::default()));
        assert_eq!(log.lock().unwrap().failed, [ErrorKind::Panicked]);
        assert!(log.lock().unwrap().dropped);
        shared.deliver(other_job, 0, Ok(Encoded::default()));
        assert_eq!(delivered(&other_log), [(0, Ok(()))]);
    }

    #[test]
    fn forget_drops_queued_tasks_and_later_results() {
        let shared = Shared::new().unwrap();
        let (kept, _) = sink(1);
        let kept = shared
            .submit(kept, |job| vec![task(job, 0)], false)
            .unwrap();
        let (forgotten, log) = sink(3);
        let job = shared
            .submit(forgotten, |job| vec![task(job, 0), task(job, 1)], true)
            .unwrap();
        shared.forget(job);
        assert_eq!(queued(&shared), [(kept, 0)]);
        assert!(log.lock().unwrap().dropped);
        shared.deliver(job, 0, Ok(Encoded::default()));
        assert!(delivered(&log).is_empty());
        assert!(log.lock().unwrap().failed.is_empty());
    }

    #[test]
    fn a_job_forgotten_while_a_chunk_is_delivered_is_dropped_after_it() {
        let shared = Shared::new().unwrap();
        let (mut forgets, log) = sink(3);
        let job_of = Arc::new(Mutex::new(None::<u64>));
        let (weak, job_of_) = (Arc::downgrade(&shared), job_of.clone());
        forgets.during = Some(Box::new(move || {
            let job = job_of_.lock().unwrap().unwrap();
            let shared = weak.upgrade().unwrap();
            shared.forget(job);
            // Known still (its sink is out for delivery): more tasks are taken; their results
            // will go nowhere.
            shared.push(job, [task(job, 9)]).unwrap();
        }));
        let job = shared.submit(forgets, |_| Vec::new(), false).unwrap();
        *job_of.lock().unwrap() = Some(job);
        shared.deliver(job, 0, Ok(Encoded::default()));
        assert_eq!(delivered(&log), [(0, Ok(()))]);
        assert!(log.lock().unwrap().dropped);
        assert!(!shared.lock().waiting());
        shared.deliver(job, 1, Ok(Encoded::default()));
        assert_eq!(delivered(&log).len(), 1);
    }

    #[test]
    fn cancel_drops_queued_tasks_fails_the_sink_and_ignores_later_results() {
        let shared = Shared::new().unwrap();
        let (kept, kept_log) = sink(1);
        let kept = shared
            .submit(kept, |job| vec![task(job, 0)], false)
            .unwrap();
        let (cancelled, log) = sink(3);
        let job = shared
            .submit(cancelled, |job| vec![task(job, 0), task(job, 1)], false)
            .unwrap();
        shared.push(kept, [task(kept, 1)]).unwrap();
        assert!(shared.take_kills().is_empty());
        assert!(shared.cancel(job, true, false));
        // The other job's tasks stay, in order; the cancelled job's are gone.
        assert_eq!(queued(&shared), [(kept, 0), (kept, 1)]);
        assert_eq!(log.lock().unwrap().failed, [ErrorKind::Cancelled]);
        assert!(log.lock().unwrap().dropped);
        // Its running chunks' workers are to be killed, once.
        assert_eq!(shared.take_kills(), HashSet::from([job]));
        assert!(shared.take_kills().is_empty());
        // A result of a chunk that was running goes nowhere; a second cancel does nothing.
        shared.deliver(job, 0, Ok(Encoded::default()));
        assert!(delivered(&log).is_empty());
        assert!(!shared.cancel(job, false, false));
        shared.deliver(kept, 0, Ok(Encoded::default()));
        assert_eq!(delivered(&kept_log), [(0, Ok(()))]);
    }

    #[test]
    fn cancel_if_queued_spares_a_job_a_worker_has() {
        let shared = Shared::new().unwrap();
        let (running, log) = sink(1);
        let job = shared
            .submit(running, |job| vec![task(job, 0)], false)
            .unwrap();
        assert!(shared.is_queued(job));
        // The driver takes it.
        shared.lock().queue.pop_front();
        assert!(!shared.is_queued(job));
        assert!(!shared.cancel(job, false, true));
        assert!(log.lock().unwrap().failed.is_empty());
        shared.deliver(job, 0, Ok(Encoded::default()));
        assert_eq!(delivered(&log), [(0, Ok(()))]);
        // Queued ones are cancelled, every one of them by `cancel_queued`.
        let (a, log_a) = sink(1);
        let (b, log_b) = sink(1);
        let a = shared.submit(a, |job| vec![task(job, 0)], false).unwrap();
        shared.submit(b, |job| vec![task(job, 0)], false).unwrap();
        assert!(shared.cancel(a, false, true));
        assert_eq!(log_a.lock().unwrap().failed, [ErrorKind::Cancelled]);
        assert_eq!(shared.cancel_queued(), 1);
        assert_eq!(log_b.lock().unwrap().failed, [ErrorKind::Cancelled]);
        assert!(queued(&shared).is_empty());
        assert!(!shared.lock().waiting());
    }

    #[test]
    fn a_job_cancelled_while_a_chunk_is_delivered_fails_after_it() {
        let shared = Shared::new().unwrap();
        let (mut cancels, log) = sink(3);
        let job_of = Arc::new(Mutex::new(None::<u64>));
        let (weak, job_of_) = (Arc::downgrade(&shared), job_of.clone());
        cancels.during = Some(Box::new(move || {
            let job = job_of_.lock().unwrap().unwrap();
            assert!(weak.upgrade().unwrap().cancel(job, false, false));
        }));
        let job = shared.submit(cancels, |_| Vec::new(), false).unwrap();
        *job_of.lock().unwrap() = Some(job);
        shared.deliver(job, 0, Ok(Encoded::default()));
        assert_eq!(delivered(&log), [(0, Ok(()))]);
        assert_eq!(log.lock().unwrap().failed, [ErrorKind::Cancelled]);
        assert!(log.lock().unwrap().dropped);
        assert!(!shared.lock().waiting());
    }

    #[test]
    fn lazy_jobs_keep_a_closed_pool_waiting_until_join() {
        let shared = Shared::new().unwrap();
        let (lazy, _) = sink(5);
        let job = shared.submit(lazy, |_| Vec::new(), true).unwrap();
        shared.lock().lifecycle = Lifecycle::Closed;
        assert!(shared.lock().waiting());
        shared.joining();
        assert!(!shared.lock().waiting());
        // An eager job still waits.
        shared.lock().lifecycle = Lifecycle::Running;
        let (eager, _) = sink(1);
        shared.submit(eager, |_| Vec::new(), false).unwrap();
        assert!(shared.lock().waiting());
        // The lazy one is still known: it can push until the driver stops.
        shared.push(job, [task(job, 0)]).unwrap();
    }

    #[test]
    fn fail_all_fails_every_job_and_clears_the_queue() {
        let shared = Shared::new().unwrap();
        let (a, log_a) = sink(1);
        let (b, log_b) = sink(1);
        shared.submit(a, |job| vec![task(job, 0)], false).unwrap();
        shared.submit(b, |job| vec![task(job, 0)], true).unwrap();
        shared.fail_all(&Error::new(ErrorKind::Terminated, "terminated"));
        assert!(queued(&shared).is_empty());
        assert!(!shared.lock().waiting());
        for log in [log_a, log_b] {
            let log = log.lock().unwrap();
            assert_eq!(log.failed, [ErrorKind::Terminated]);
            assert!(log.dropped);
        }
    }

    #[test]
    fn a_broken_pool_fails_what_waits_and_refuses_more() {
        let shared = Shared::new().unwrap();
        let (waiting, log) = sink(1);
        let job = shared.submit(waiting, |_| Vec::new(), false).unwrap();
        shared.mark_broken(Error::new(ErrorKind::InitializerFailed, "first"));
        // The first reason stays.
        shared.mark_broken(Error::new(ErrorKind::Bootstrap, "second"));
        assert_eq!(log.lock().unwrap().failed, [ErrorKind::InitializerFailed]);
        let err = shared.push(job, [task(job, 0)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InitializerFailed);
        let (late, _) = sink(1);
        let err = shared.submit(late, |_| Vec::new(), false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InitializerFailed);
    }

    #[test]
    fn finish_fails_what_waits_and_stops_a_closed_pool() {
        for (lifecycle, kind, after) in [
            (Lifecycle::Closed, ErrorKind::NotRunning, Lifecycle::Stopped),
            (
                Lifecycle::Terminated,
                ErrorKind::Terminated,
                Lifecycle::Terminated,
            ),
        ] {
            let shared = Shared::new().unwrap();
            let (waiting, log) = sink(1);
            shared.submit(waiting, |_| Vec::new(), true).unwrap();
            shared.lock().lifecycle = lifecycle;
            shared.finish();
            assert_eq!(log.lock().unwrap().failed, [kind]);
            assert_eq!(shared.lock().lifecycle, after);
        }
    }
}
