//! The pool's driver thread: it owns the workers, dispatches queued tasks to idle ones, reads
//! their replies, notices their deaths, enforces task timeouts, and replaces workers.
//!
//! Every dispatched task ends in exactly one delivery: its result, or an error saying why not
//! (the worker died, the task timed out, the pool was terminated). That is what makes a pool
//! that never hangs: CPython loses the task of a dead worker (gh-66587).
//!
//! The driver thread never waits on another process: starting a worker (a fork-server request,
//! a bootstrap handshake) and reading a dead worker's exit code (which a fork server may be slow
//! to give) are done by two helper threads, which hand their results back with a wake-up (see
//! [`Helpers`]). So task timeouts, `terminate` and drop stay prompt whatever a fork server does.
//! A start that fails is retried with backoff while tasks wait; only when no worker could be
//! started for [`START_RETRY_LIMIT`] (or the pool's own limit) do the waiting tasks fail.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::jobs::{Lifecycle, Prefetched, Shared, Task, ASLEEP, AWAKE, NAP, NAPPING};
use super::launcher::{
    dispose, let_finish, Corpse, Helpers, Launcher, Order, Reapable, HELPER_GRACE,
};
use super::link::{Link, DRIVER, IDLE, LENT};
use super::manage::Managed;
use super::reply::{self, Expected, REPLY_STALL};
use super::rings::{self, Rings};
use super::worker::{Reply, RingsHeader, TaskHeader, WorkerConfig, WorkerMain};
use crate::bootstrap::Launch;
use crate::codec;
use crate::context::StartMethod;
use crate::current::{self, current_process};
use crate::error::{Error, ErrorKind, Result};
use crate::fd;
use crate::handle::{self, Encoded};
use crate::registry::Target;
use crate::start::Popen;
use crate::{spare, sys, wire};

struct Busy {
    job: u64,
    chunk: u32,
    /// What the reply must carry back (see [`Shared::ticket`]).
    ticket: u64,
    deadline: Option<Instant>,
    /// Whether it went in the worker's ring (a task may be queued behind it there).
    in_ring: bool,
    /// Its claim word, when it was put in the ring behind another task (0: none; see
    /// `rings`), and the task itself, given to another worker if this one dies before it
    /// claims it.
    slot: u8,
    task: Option<Task>,
    /// Revoked from this worker and given to an idle one: answered unrun, and not delivered.
    stolen: bool,
    /// Handed straight to an idle worker: its timeout is the task's, claimed or not (a large
    /// one may take longer to hand over than the timeout); a death before it claims it gives
    /// it to another worker.
    handed: bool,
}

/// Puts the next queued task in `worker`'s ring behind the one it runs, when both go there:
/// the worker starts it as soon as it is done with the first, without waiting for the driver.
/// It runs only once the worker claims it (see `rings`): until then a `cancel` revokes it, and
/// if the worker dies or is killed it goes to another worker.
fn queue_behind(worker: &mut Worker, shared: &Shared) {
    let Some(front) = &worker.task else {
        return;
    };
    if !front.in_ring || worker.queued.is_some() || worker.sending.is_some() || !worker.open {
        return;
    }
    let slot = if front.slot == 1 { 2 } else { 1 };
    let mut state = shared.lock();
    let Some(task) = state.queue.pop_front() else {
        return;
    };
    let ticket = shared.ticket();
    let header = TaskHeader {
        job: task.job,
        chunk: task.chunk,
        ticket,
        entry: task.entry.to_string(),
        claim: slot,
    };
    let link = worker.link.clone();
    link.rings.offer(slot, ticket);
    let unfilled = link
        .rings
        .put_task_unfilled(&header, &task.payload)
        .ok()
        .flatten();
    if unfilled.is_none() {
        drop(unfilled);
        // Too large for the ring (or carries descriptors): it waits for an idle worker.
        state.queue.push_front(task);
        return;
    }
    state.prefetched.push(Prefetched {
        job: task.job,
        ticket,
        slot,
        link: worker.link.clone(),
    });
    drop(state);
    // A large task's body is copied into its slot now, without the job table's lock (64 MiB
    // take about 6 ms, which every caller that submits or waits would wait out).
    drop(unfilled);
    worker.queued = Some(Busy {
        job: task.job,
        chunk: task.chunk,
        ticket,
        // Timed from when the worker is seen to finish the task before it.
        deadline: None,
        in_ring: true,
        slot,
        task: Some(task),
        stolen: false,
        handed: false,
    });
}

/// A task could not be sent to `worker` (it is going away, or its stream is out of step after
/// a partial send): it is killed, and the task, which it did not run, goes to another.
fn abandon_send(worker: &mut Worker, task: Task, shared: &Shared) {
    worker.open = false;
    let _ = worker.popen.signal(libc::SIGKILL);
    // Idle but not ready: no caller of `apply` borrows the worker that was just killed.
    worker.link.ready.store(false, Ordering::Release);
    worker.link.state.store(IDLE, Ordering::Release);
    shared.lock().requeue(task);
}

struct Worker {
    popen: Popen,
    link: Arc<Link>,
    name: String,
    open: bool,
    /// The task it runs (or, once the reply before it is read, the one it is about to run).
    task: Option<Busy>,
    /// A task put in its ring behind `task` (see [`queue_behind`]).
    queued: Option<Busy>,
    /// The reply to `queued`, read from the socket before the reply to `task` was read from
    /// the ring: taken once that one is.
    early: Option<(Reply, Encoded)>,
    /// The task being sent, when the socket could not take it whole: the rest goes as the
    /// worker makes room (see `poll_once`), never waited for.
    sending: Option<Sending>,
    /// When the last bytes of a message not yet whole came (see [`REPLY_STALL`]).
    progress: Option<Instant>,
}

/// A task whose message is partly sent.
struct Sending {
    task: Task,
    unsent: wire::Unsent,
}

impl Reapable for Worker {
    fn popen(&self) -> &Popen {
        &self.popen
    }

    fn link(&self) -> &Link {
        &self.link
    }
}

impl Worker {
    fn ready(&self) -> bool {
        self.link.ready.load(Ordering::Acquire)
    }

    fn lent(&self) -> bool {
        self.link.state.load(Ordering::Acquire) == LENT
    }

    /// To be let go once idle (see [`Driver::manage`]).
    fn retiring(&self) -> bool {
        self.link.retire.load(Ordering::Acquire)
    }

    /// Whether its reply may come in its ring: it holds a task wholly sent.
    fn awaits_ring(&self) -> bool {
        self.open && self.task.is_some() && self.sending.is_none()
    }

    /// Whether its socket holds nothing now and no message is begun: one `FIONREAD`, where
    /// a `recvmsg` that finds nothing costs three times as much (a closed socket is quiet too).
    fn socket_quiet(&self) -> bool {
        let inbox = self
            .link
            .inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        !inbox.mid_message()
            && sys::unread_bytes(self.popen.control.as_fd()).is_ok_and(|unread| unread == 0)
    }

    /// What its socket holds now, without waiting, and whether a message is begun and not
    /// whole.
    fn try_receive(&self) -> (Result<wire::Received<Reply>>, bool) {
        let mut inbox = self
            .link
            .inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let received = inbox.try_recv::<Reply>(&self.popen.control);
        (received, inbox.mid_message())
    }
}

/// Naps, each of at most [`NAP`], after a wake-up, before a driver with nothing to do sleeps
/// until it is woken again: about a millisecond.
const NAPS: u32 = 20;

/// Rounds in a row the driver may take replies from the rings without polling (see
/// `Driver::poll_once`).
const UNPOLLED_ROUNDS: u32 = 16;

/// How long the driver may take replies from the rings without polling: rounds whose replies
/// are slow to take (large results, a slow `Deserialize`, callbacks) would otherwise keep it
/// from a worker's death, a socket, a new worker's `Ready` for `UNPOLLED_ROUNDS` of them (a
/// second and more, each round taking two replies of every worker).
const UNPOLLED_FOR: Duration = Duration::from_millis(1);

/// Workers that die before saying `Ready`, in a row, before the pool is declared broken.
const EARLY_DEATHS_LIMIT: u32 = 3;

/// How long a pool goes on trying to start workers, while it has none, before the tasks that
/// wait fail (the default of [`PoolBuilder::start_retry_limit`](super::PoolBuilder::start_retry_limit)).
/// The pool itself is not broken: it keeps trying, and serves again once a worker starts.
pub(crate) const START_RETRY_LIMIT: Duration = Duration::from_secs(30);

/// The first wait before a failed start is tried again; it doubles with each failure in a row,
/// up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Consecutive failed starts, and when to try again.
#[derive(Default)]
struct Retry {
    /// Failed starts in a row.
    failures: u32,
    /// When the first of them failed.
    since: Option<Instant>,
    /// No new start before this.
    not_before: Option<Instant>,
    /// The last failure.
    last: Option<Error>,
}

pub(crate) struct Driver {
    early_deaths: u32,
    /// Rounds in a row that took replies from the rings without a `poll` (see `poll_once`).
    unpolled: u32,
    /// When the driver last polled (see `poll_once`).
    polled_at: Instant,
    /// Naps left before the driver sleeps until woken (see `poll_once`).
    naps: u32,
    shared: Arc<Shared>,
    launcher: Arc<Launcher>,
    method: StartMethod,
    config: WorkerConfig,
    /// Descriptors in the initializer's arguments, passed to every worker.
    init_fds: Arc<Vec<OwnedFd>>,
    processes: usize,
    task_timeout: Option<Duration>,
    start_retry_limit: Duration,
    workers: Vec<Worker>,
    helpers: Helpers<Worker>,
    /// Starts ordered from the starter thread and not handed back yet.
    starting: usize,
    retry: Retry,
    /// Idle timeout, size, memory limit, soft timeout (see [`manage`](Self::manage)).
    managed: Managed,
}

impl Driver {
    /// Starts the first `processes` workers (in the caller's thread, so that errors surface
    /// from `Pool::new`), then the driver's helper threads.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        shared: Arc<Shared>,
        launcher: Launcher,
        method: StartMethod,
        config: WorkerConfig,
        init_fds: Vec<OwnedFd>,
        processes: usize,
        task_timeout: Option<Duration>,
        start_retry_limit: Duration,
        managed: Managed,
    ) -> Result<Driver> {
        shared.set_maxtasks(config.maxtasks);
        let mut driver = Driver {
            early_deaths: 0,
            unpolled: 0,
            polled_at: Instant::now(),
            naps: NAPS,
            shared,
            launcher: Arc::new(launcher),
            method,
            config,
            init_fds: Arc::new(init_fds),
            processes,
            task_timeout,
            start_retry_limit,
            workers: Vec::with_capacity(processes),
            helpers: Helpers::new(),
            starting: 0,
            retry: Retry::default(),
            managed,
        };
        for _ in 0..processes {
            let started = driver.order().and_then(|(name, launch)| {
                let fds: Vec<RawFd> = driver.init_fds.iter().map(AsRawFd::as_raw_fd).collect();
                let popen = driver.launcher.launch(launch, &fds)?;
                driver.adopt(name, popen)
            });
            // On error, the driver is dropped: the workers started are killed.
            started?;
        }
        let (launcher, init_fds) = (driver.launcher.clone(), driver.init_fds.clone());
        driver.helpers.start(launcher, init_fds, &driver.shared)?;
        Ok(driver)
    }

    /// What starts a new worker: its name and its launch.
    fn order(&self) -> Result<(String, Launch)> {
        let me = current_process();
        let prefix = match self.method {
            StartMethod::Fork => "ForkPoolWorker",
            StartMethod::Spawn => "SpawnPoolWorker",
            StartMethod::ForkServer => "ForkServerPoolWorker",
        };
        let (identity, name) = current::new_child_identity(&me, prefix);
        let launch = Launch {
            entry: WorkerMain::NAME.to_string(),
            payload: codec::encode(&self.config)?,
            name: name.clone(),
            identity,
            daemon: true,
            parent_name: me.name().to_string(),
            parent_pid: me.pid() as i32,
            start_method: self.method,
            fds: self.init_fds.len() as u32,
            returns: false,
        };
        Ok((name, launch))
    }

    /// Makes a started process one of the pool's workers. On failure (out of descriptors, say)
    /// the process is killed.
    fn adopt(&mut self, name: String, popen: Popen) -> Result<()> {
        // Closed in forked children, like the worker's other descriptors: a child that kept the
        // socket would keep the worker from seeing its parent die. Registered as they are made
        // (a caller's thread may fork meanwhile); unregistered and closed with the `Link`.
        // The pidfd opened first, if it is opened lazily (a forked child's): that takes the
        // registry's lock, which `made` holds.
        let handles = popen.exit_fd().and_then(|_| {
            fd::made(|fds| {
                let control = popen
                    .control
                    .try_clone()
                    .map_err(|err| Error::io("cannot duplicate a worker's socket", err))?;
                let pidfd = popen.signal_handle()?;
                Ok::<_, Error>((fds.own(control), fds.own(pidfd)))
            })
        });
        // The worker's rings, sent as its first message: its socket is empty, and takes it
        // whole (a send that does not is an error, never waited for).
        let rings = handles.and_then(|handles| {
            let rings = Rings::create()?;
            let setup = handle::encode(&rings.setup())?;
            match wire::try_send_message(&popen.control, &RingsHeader, &setup)? {
                None => Ok((handles, rings)),
                Some(_) => Err(Error::new(
                    ErrorKind::Io,
                    "cannot send a new pool worker its rings: its socket is full",
                )),
            }
        });
        let (((control, pidfd), rings), exit) =
            match rings.and_then(|made| Ok((made, popen.exit_fd()?))) {
                Ok(made) => made,
                Err(err) => {
                    self.bury_off(Corpse::Stray(popen));
                    return Err(err);
                }
            };
        let link = Arc::new(Link {
            control,
            exit,
            pidfd,
            name: name.clone(),
            pid: popen.pid,
            state: AtomicU8::new(IDLE),
            ready: AtomicBool::new(false),
            done: AtomicU64::new(0),
            exitcode: Mutex::new(None),
            buried: Condvar::new(),
            inbox: Mutex::new(wire::Reader::new()),
            rings,
            retire: AtomicBool::new(false),
        });
        self.shared
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(link.clone());
        self.workers.push(Worker {
            popen,
            link,
            name,
            open: true,
            task: None,
            queued: None,
            early: None,
            sending: None,
            progress: None,
        });
        Ok(())
    }

    /// Hands a dead worker, or a process the pool does not use, to the reaper thread; without
    /// one (at build time, in the caller's thread, or if it is gone) does its work here.
    fn bury_off(&mut self, corpse: Corpse<Worker>) {
        if let Corpse::Stray(popen) = &corpse {
            let _ = popen.signal(libc::SIGKILL);
        }
        let corpse = match &self.helpers.corpses {
            Some(corpses) => match corpses.send(corpse) {
                Ok(()) => return,
                Err(mpsc::SendError(corpse)) => corpse,
            },
            None => corpse,
        };
        match corpse {
            Corpse::Stray(popen) => dispose(popen),
            Corpse::Worker(worker) => {
                let code = worker.popen.try_reap().ok().flatten();
                self.buried(*worker, code);
            }
        }
    }

    /// The driver thread's body.
    pub(crate) fn run(mut self) {
        self.shared.set_driver_thread();
        loop {
            self.collect();
            self.take_orphans();
            self.kill_cancelled();
            self.manage();
            let (lifecycle, broken, queued, waiting) = {
                let state = self.shared.lock();
                (
                    state.lifecycle,
                    state.broken.is_some(),
                    !state.queue.is_empty(),
                    state.waiting(),
                )
            };
            if lifecycle == Lifecycle::Terminated {
                return;
            }
            if !broken && (lifecycle == Lifecycle::Running || queued || waiting) {
                self.maintain();
            }
            self.dispatch();
            if queued {
                self.fail_if_starved();
            }
            let busy = self
                .workers
                .iter()
                .any(|w| w.task.is_some() || w.queued.is_some() || w.lent());
            if lifecycle == Lifecycle::Closed && !busy && ((!queued && !waiting) || broken) {
                self.stop_all();
                return;
            }
            if let Err(err) = self.poll_once() {
                self.shared.mark_broken(err);
                return;
            }
        }
    }

    /// Orders the workers the pool lacks from the starter thread, unless a failed start asks
    /// to wait before the next.
    fn maintain(&mut self) {
        if let Some(at) = self.retry.not_before {
            if at > Instant::now() {
                return;
            }
            self.retry.not_before = None;
        }
        let live = self.workers.iter().filter(|w| w.open).count() + self.starting;
        for _ in live..self.wanted() {
            let Some(orders) = &self.helpers.orders else {
                return;
            };
            let sent = self.order().and_then(|(name, launch)| {
                orders
                    .send(Order { name, launch })
                    .map_err(|_| Error::new(ErrorKind::Io, "the pool's starter thread is gone"))
            });
            match sent {
                Ok(()) => self.starting += 1,
                Err(err) => {
                    self.shared.mark_broken(
                        Error::new(err.kind(), "cannot start a replacement pool worker")
                            .with_source(err),
                    );
                    return;
                }
            }
        }
    }

    /// Takes what the helper threads handed back: started workers, failed starts, dead
    /// workers with their exit codes.
    fn collect(&mut self) {
        let (started, reaped) = {
            let mut handed = self.helpers.handoff();
            (
                std::mem::take(&mut handed.started),
                std::mem::take(&mut handed.reaped),
            )
        };
        for (name, started) in started {
            self.starting = self.starting.saturating_sub(1);
            match started.and_then(|popen| self.adopt(name, popen)) {
                Ok(()) => self.retry = Retry::default(),
                Err(err) => self.start_failed(err),
            }
        }
        for (worker, code) in reaped {
            self.buried(worker, code);
        }
    }

    /// Takes back the workers whose borrowers left their task to the driver (its job was
    /// cancelled): busy with it until its reply, which goes nowhere.
    fn take_orphans(&mut self) {
        let orphans = {
            let mut state = self.shared.lock();
            if state.orphans.is_empty() {
                return;
            }
            std::mem::take(&mut state.orphans)
        };
        for orphan in orphans {
            let Some(worker) = self
                .workers
                .iter_mut()
                .find(|w| Arc::ptr_eq(&w.link, &orphan.link))
            else {
                // Buried already.
                continue;
            };
            worker.task = Some(Busy {
                job: orphan.job,
                chunk: orphan.chunk,
                ticket: orphan.ticket,
                deadline: self.task_timeout.and_then(sys::deadline_after),
                in_ring: orphan.in_ring,
                slot: 0,
                task: None,
                stolen: true,
                handed: false,
            });
        }
    }

    /// A start failed (out of descriptors or processes, a fork server that did not answer, a
    /// child that failed its bootstrap): tried again after a wait that doubles with each
    /// failure in a row.
    fn start_failed(&mut self, err: Error) {
        let now = Instant::now();
        let retry = &mut self.retry;
        retry.failures = retry.failures.saturating_add(1);
        retry.since.get_or_insert(now);
        let wait = RETRY_FIRST
            .saturating_mul(1 << retry.failures.saturating_sub(1).min(16))
            .min(RETRY_MAX);
        retry.not_before = Some(now + wait);
        retry.last = Some(err);
    }

    /// When no worker runs, the tasks that waited for one the whole of the start retry limit
    /// while every start failed fail (the pool keeps trying: it serves again once a worker
    /// starts).
    fn fail_if_starved(&mut self) {
        let Some(since) = self.retry.since else {
            return;
        };
        if self.workers.iter().any(|w| w.open) {
            return;
        }
        let limit = self.start_retry_limit;
        let now = Instant::now();
        let overdue = |task: &Task| task.queued.max(since) + limit <= now;
        let failed: VecDeque<Task> = {
            let mut state = self.shared.lock();
            if !state.queue.iter().any(overdue) {
                return;
            }
            let (failed, kept) = std::mem::take(&mut state.queue)
                .into_iter()
                .partition(overdue);
            state.queue = kept;
            failed
        };
        let last = self.retry.last.as_ref();
        let err = Error::new(
            last.map_or(ErrorKind::Bootstrap, Error::kind),
            format!(
                "no pool worker could be started for {limit:?} ({} attempts; the pool keeps trying): {}",
                self.retry.failures,
                last.map(|err| err.chain().to_string()).unwrap_or_default()
            ),
        );
        for task in failed {
            self.shared
                .deliver(task.job, task.chunk, Err(err.duplicate()));
        }
    }

    /// When the driver must look again without an event: the next start to try, and the end of
    /// the wait of queued tasks while no worker can be started.
    fn retry_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        // (The wait of the oldest queued task, or of the first failure, ends first.)
        let starved = self
            .retry
            .since
            .and_then(|since| {
                let oldest = self.shared.lock().queue.iter().map(|t| t.queued).min()?;
                Some(since.max(oldest) + self.start_retry_limit)
            })
            .filter(|&at| at > now);
        match (self.retry.not_before, starved) {
            (Some(retry), Some(starved)) => Some(retry.min(starved)),
            (retry, starved) => retry.or(starved),
        }
    }

    fn dispatch(&mut self) {
        // Terminated: nothing more goes out. The driver takes the replies of the tasks its
        // workers already have (one running, one queued behind) before it looks at the
        // pool's state again, and each of them used to hand its worker the next task.
        if self.shared.lock().lifecycle == Lifecycle::Terminated {
            return;
        }
        self.dispatch_idle();
        // Every idle worker has a task, and more wait: a second one goes behind each running
        // task (not with `maxtasksperchild`, whose workers exit after their last task, nor
        // with a memory limit or a soft timeout, which judge a worker after each task, nor
        // behind a worker being let go). A worker left idle takes a task queued behind
        // another's instead.
        let limits = &self.managed.limits;
        if self.config.maxtasks.is_none()
            && limits.max_memory.is_none()
            && limits.soft_timeout.is_none()
        {
            if self.steal() {
                self.dispatch_idle();
            }
            for worker in &mut self.workers {
                if worker.ready() && !worker.retiring() {
                    queue_behind(worker, &self.shared);
                }
            }
        }
    }

    /// Tasks queued behind running ones, while the pool's queue is empty and workers idle:
    /// revoked (when their workers did not claim them yet) and queued again, for the idle
    /// workers. A task never waits behind another (which may run long) while a worker idles.
    fn steal(&mut self) -> bool {
        let idle = self
            .workers
            .iter()
            .filter(|w| {
                w.ready()
                    && w.open
                    && w.task.is_none()
                    && w.link.state.load(Ordering::Acquire) == IDLE
            })
            .count();
        let behind = |w: &Worker| w.queued.as_ref().is_some_and(|q| !q.stolen);
        if idle == 0 || !self.workers.iter().any(behind) {
            return false;
        }
        let mut state = self.shared.lock();
        if !state.queue.is_empty() {
            return false;
        }
        let mut stolen = 0;
        for worker in &mut self.workers {
            if stolen == idle {
                break;
            }
            let rings = &worker.link.rings;
            let Some(queued) = &mut worker.queued else {
                continue;
            };
            if queued.stolen || !rings.revoke(queued.slot, queued.ticket) {
                continue;
            }
            queued.stolen = true;
            if let Some(task) = queued.task.take() {
                let ticket = queued.ticket;
                state.prefetched.retain(|p| p.ticket != ticket);
                // Revoked by a cancel first (`revoke` says "will not run here" either way):
                // then it is not wanted any more, and not queued again.
                if state.wants(task.job) {
                    state.queue.push_back(task);
                    stolen += 1;
                }
            }
        }
        stolen > 0
    }

    /// Hands queued tasks to idle workers.
    fn dispatch_idle(&mut self) {
        for worker in &mut self.workers {
            if !worker.ready() || !worker.open || worker.task.is_some() || worker.retiring() {
                continue;
            }
            let done = worker.link.done.load(Ordering::Acquire);
            if self.config.maxtasks.is_some_and(|max| done >= max) {
                continue;
            }
            // A caller may have borrowed it: the driver takes only idle workers.
            if worker
                .link
                .state
                .compare_exchange(IDLE, DRIVER, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            let Some(task) = self.shared.lock().queue.pop_front() else {
                worker.link.state.store(IDLE, Ordering::Release);
                return;
            };
            // In the ring, with a claim word and the task kept until its reply: a worker that
            // died after its last reply, before the driver saw it die, never takes it, and
            // its burial gives it to another (word 1; a task queued behind takes the other).
            const FRONT: u8 = 1;
            let mut header = TaskHeader {
                job: task.job,
                chunk: task.chunk,
                ticket: self.shared.ticket(),
                entry: task.entry.to_string(),
                claim: FRONT,
            };
            let mut busy = Busy {
                job: task.job,
                chunk: task.chunk,
                ticket: header.ticket,
                deadline: self.task_timeout.and_then(sys::deadline_after),
                in_ring: true,
                slot: FRONT,
                task: None,
                stolen: false,
                handed: true,
            };
            let rings = &worker.link.rings;
            rings.offer(FRONT, header.ticket);
            // In the ring when it goes there (the socket takes the rest, and a ring that
            // refuses it).
            if rings.put_task(&header, &task.payload).unwrap_or(false) {
                busy.task = Some(task);
                worker.task = Some(busy);
                continue;
            }
            // On the socket: a worker that reads it runs it (its death is the task's).
            rings.offer(FRONT, 0);
            header.claim = 0;
            busy.slot = 0;
            busy.in_ring = false;
            // Without waiting: a worker that stops reading must not stop the driver.
            let sent = wire::try_send_message(&worker.popen.control, &header, &task.payload);
            match sent {
                Ok(unsent) => {
                    worker.task = Some(busy);
                    match unsent {
                        // Sent: its buffer can receive a reply or encode a next task.
                        None => spare::give(task.payload.bytes),
                        Some(unsent) => worker.sending = Some(Sending { task, unsent }),
                    }
                }
                Err(err) if err.kind() == ErrorKind::Codec => {
                    // Refused before a byte was sent (more descriptors or blocks than a
                    // message can carry): the task fails, the worker is fine and takes the
                    // next one at the next round.
                    worker.link.state.store(IDLE, Ordering::Release);
                    self.shared.deliver(task.job, task.chunk, Err(err));
                    self.shared.wake();
                }
                Err(_) => abandon_send(worker, task, &self.shared),
            }
        }
    }

    /// Sends more of the task worker `i` is receiving, as much as its socket takes now.
    fn send_more(&mut self, i: usize) {
        let worker = &mut self.workers[i];
        let Some(sending) = &mut worker.sending else {
            return;
        };
        match sending
            .unsent
            .resume(&worker.popen.control, &sending.task.payload)
        {
            Ok(false) => {}
            Ok(true) => {
                if let Some(sent) = worker.sending.take() {
                    spare::give(sent.task.payload.bytes);
                }
            }
            Err(_) => {
                if let Some(sending) = worker.sending.take() {
                    worker.task = None;
                    abandon_send(worker, sending.task, &self.shared);
                }
            }
        }
    }

    fn poll_once(&mut self) -> Result<()> {
        // Replies waiting in rings are taken without a `poll` (a system call, and the
        // building of its descriptor list): while short tasks stream back, a round costs
        // none. Every few rounds, and a millisecond after the last poll, the driver polls
        // all the same, for exits, sockets and wake-ups.
        if self.unpolled < UNPOLLED_ROUNDS && self.polled_at.elapsed() < UNPOLLED_FOR {
            let mut took = false;
            for i in 0..self.workers.len() {
                let worker = &self.workers[i];
                if worker.awaits_ring() && worker.link.rings.reply_waiting() {
                    self.take_ring_replies(i);
                    took = true;
                }
            }
            if took {
                self.unpolled += 1;
                self.enforce_timeouts();
                return Ok(());
            }
        }
        self.unpolled = 0;
        // A driver woken a moment ago (by a submit, mostly) naps: tasks queued meanwhile wait
        // for the nap's end, not for a wake-up (a system call for their caller, and a thread
        // to schedule on a small machine). Once it has napped `NAPS` times with nothing to do,
        // it sleeps. Replies do not make it nap: workers computing keep their cores.
        let napping = self.naps > 0;
        // Tasks queued from now on wake the driver, if it sleeps; those queued before are
        // dispatched here.
        self.shared.sleeps(if napping { NAPPING } else { ASLEEP });
        self.dispatch();
        let mut fds = vec![libc::pollfd {
            fd: self.shared.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let exit_fds: Vec<_> = self
            .workers
            .iter()
            .map(|w| w.popen.exit_fd())
            .collect::<Result<_>>()?;
        // A message already read ahead into a worker's inbox does not show in a poll: one
        // there makes this poll return at once, and is read below.
        let mut buffered = vec![false; self.workers.len()];
        // The workers whose reply may come in their ring: told that the driver sleeps, then
        // looked at once more (see `rings`).
        let ringing: Vec<bool> = self.workers.iter().map(Worker::awaits_ring).collect();
        // A short task's reply comes within a few microseconds: looked for awake (no system
        // call, no wake-up by the worker's doorbell) before the driver sleeps.
        if ringing.contains(&true) {
            let workers = &self.workers;
            rings::spin(|| {
                workers
                    .iter()
                    .zip(&ringing)
                    .any(|(w, &r)| r && w.link.rings.reply_waiting())
            });
        }
        let mut in_ring = false;
        for (worker, &ringing) in self.workers.iter().zip(&ringing) {
            if ringing {
                worker.link.rings.parent_sleeps(true);
                in_ring |= worker.link.rings.reply_waiting();
            }
        }
        for (i, (worker, exit)) in self.workers.iter().zip(&exit_fds).enumerate() {
            // The driver reads a worker's socket only while it expects a message there: its
            // `Ready`, or the reply to a task it dispatched. An idle worker's socket may be in
            // a caller's hands (`apply`), and its exit shows on the exit descriptor anyway.
            let expecting = worker.open && (worker.task.is_some() || !worker.ready());
            if expecting {
                buffered[i] = worker
                    .link
                    .inbox
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .buffered();
            }
            let control = if expecting {
                worker.popen.control.as_raw_fd()
            } else {
                -1
            };
            let events = if worker.sending.is_some() {
                libc::POLLIN | libc::POLLOUT
            } else {
                libc::POLLIN
            };
            fds.push(libc::pollfd {
                fd: control,
                events,
                revents: 0,
            });
            fds.push(libc::pollfd {
                fd: exit.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            fds.push(libc::pollfd {
                fd: if ringing[i] {
                    worker.link.rings.parent_bell().as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let busy = in_ring || buffered.contains(&true);
        let deadline = if busy {
            Some(Instant::now())
        } else {
            self.workers
                .iter()
                .filter_map(|w| w.task.as_ref()?.deadline)
                .chain(
                    self.workers
                        .iter()
                        .filter(|w| w.open)
                        .filter_map(|w| Some(w.progress? + REPLY_STALL)),
                )
                .chain(self.retry_deadline())
                .chain(self.manage_deadline())
                .chain(napping.then(|| Instant::now() + NAP))
                .min()
        };
        let polled = sys::poll_many(&mut fds, deadline);
        self.polled_at = Instant::now();
        self.shared.sleeps(AWAKE);
        if napping && matches!(polled, Ok(0)) && !busy {
            self.naps -= 1;
        }
        for (worker, &ringing) in self.workers.iter().zip(&ringing) {
            if ringing {
                worker.link.rings.parent_sleeps(false);
            }
        }
        polled.map_err(|err| Error::io("the pool cannot poll its workers", err))?;
        if fds[0].revents != 0 {
            // Woken, mostly by a submit: more may follow, which a nap catches without waking.
            self.naps = NAPS;
            sys::eventfd_drain(self.shared.wake.as_fd());
            self.shared.free_discarded();
        }
        let mut exited = Vec::new();
        for (i, trio) in fds[1..].chunks(3).enumerate() {
            // Room to send (or an error, which the send reports) for a task being sent.
            if trio[0].revents != 0 && self.workers[i].sending.is_some() {
                self.send_more(i);
            }
            if trio[2].revents != 0 {
                sys::eventfd_drain(self.workers[i].link.rings.parent_bell());
            }
            // A look at the ring costs no system call: every worker that may have replied
            // there, rung or not.
            if ringing[i] {
                self.take_ring_replies(i);
            }
            if trio[0].revents & !libc::POLLOUT != 0 || buffered[i] {
                self.read_reply(i);
            }
            if trio[1].revents != 0 {
                exited.push(i);
            }
        }
        for &i in exited.iter().rev() {
            self.bury(i);
        }
        self.enforce_timeouts();
        Ok(())
    }

    /// Reads what worker `i` sent, without waiting: `true` when that completed a reply. A reply
    /// that arrives in parts (a large result, or a worker that stops in the middle) is read
    /// part by part as they come, between the driver's other work: one worker never holds up
    /// the others, the task timeouts or `terminate`.
    fn read_reply(&mut self, i: usize) -> bool {
        let worker = &mut self.workers[i];
        let (received, mid_message) = worker.try_receive();
        let (reply, body) = match received {
            Ok(wire::Received::Message(reply, body)) => {
                worker.progress = None;
                (reply, body)
            }
            Ok(wire::Received::Partial) => {
                // Read when bytes came (the poll said so, or some were buffered).
                worker.progress = mid_message.then(Instant::now);
                return false;
            }
            Ok(wire::Received::Closed) => {
                worker.open = false;
                return false;
            }
            Err(err) if err.kind() == ErrorKind::Codec => {
                self.out_of_protocol(i, ErrorKind::Codec, &reply::bad_reply(&err));
                return false;
            }
            Err(err) => {
                // A reply cut short (or a task sent to a worker that had just died): the
                // worker is gone or going.
                worker.open = false;
                let _ = worker.popen.signal(libc::SIGKILL);
                // Its task fails here: the burial must not requeue a part still unsent.
                worker.sending = None;
                if let Some(busy) = worker.task.take() {
                    let when = format!("in the middle of its reply ({})", err.chain());
                    let err = reply::died(&worker.link, None, &when);
                    self.shared.deliver(busy.job, busy.chunk, Err(err));
                }
                return false;
            }
        };
        self.take_reply(i, reply, body)
    }

    /// Takes the replies waiting in worker `i`'s ring, at most as many as it can have in
    /// flight (the task it runs and the one queued behind): each hands it its next task, and a
    /// worker whose replies came faster than the driver took them kept it from the other
    /// workers, the timeouts and the pool's state for as long as the queue lasted.
    fn take_ring_replies(&mut self, i: usize) {
        for _ in 0..2 {
            if !self.take_ring_reply(i) {
                return;
            }
        }
    }

    /// Takes the reply worker `i` put in its ring, if it did: `true` when that completed a
    /// reply. Only while it holds a task wholly sent.
    fn take_ring_reply(&mut self, i: usize) -> bool {
        let worker = &self.workers[i];
        if !worker.awaits_ring() {
            return false;
        }
        // With a task queued behind the first, replies may come both ways: the socket is
        // looked at first (see `socket_first`).
        let pipelined = worker.queued.is_some();
        if pipelined {
            if !worker.link.rings.reply_waiting() {
                return false;
            }
            if let Some(done) = self.socket_first(i) {
                return done;
            }
        }
        let worker = &self.workers[i];
        match worker.link.rings.take_reply::<Reply>() {
            Ok(None) => false,
            Ok(Some((reply, body))) => {
                let beside = if pipelined {
                    None
                } else {
                    reply::written_beside(&worker.link)
                };
                if let Some(what) = beside {
                    self.out_of_protocol(i, ErrorKind::Codec, &what);
                    return false;
                }
                self.workers[i].progress = None;
                self.take_reply(i, reply, body)
            }
            Err(err) => {
                self.out_of_protocol(i, ErrorKind::Codec, &reply::bad_reply(&err));
                false
            }
        }
    }

    /// Worker `i` holds a task queued behind the one it runs, and a reply waits in its ring:
    /// the reply to the first may be on the socket (a large result), and then comes before the
    /// ring's; or the reply to the first is in the ring, and the one to the task behind may be
    /// on the socket, whole (kept until the first's is read, see `take_reply`) or still
    /// coming. A worker writes the whole of a reply before it takes its next task, so a
    /// message begun on the socket and not whole is out of protocol unless the worker claimed
    /// the task behind. `Some(done)`: what [`take_ring_reply`](Self::take_ring_reply) returns;
    /// `None`: the ring's reply is next.
    fn socket_first(&mut self, i: usize) -> Option<bool> {
        let worker = &mut self.workers[i];
        if worker.socket_quiet() {
            return None;
        }
        let (received, mid_message) = worker.try_receive();
        match received {
            Ok(wire::Received::Message(reply, body)) => {
                worker.progress = None;
                Some(self.take_reply(i, reply, body))
            }
            Ok(wire::Received::Partial)
                if mid_message
                    && !worker
                        .queued
                        .as_ref()
                        .is_some_and(|q| worker.link.rings.claimed(q.slot, q.ticket)) =>
            {
                let what = "a reply in the ring in the middle of a message on the socket";
                self.out_of_protocol(i, ErrorKind::Codec, what);
                Some(false)
            }
            Err(err) if err.kind() == ErrorKind::Codec => {
                self.out_of_protocol(i, ErrorKind::Codec, &reply::bad_reply(&err));
                Some(false)
            }
            // Nothing, or a worker gone after its replies: the ring's reply is next.
            _ => None,
        }
    }

    /// A whole message from worker `i` (from its socket or its ring): `true` when it was one
    /// the worker may send.
    fn take_reply(&mut self, i: usize, reply: Reply, body: Encoded) -> bool {
        let worker = &mut self.workers[i];
        match reply {
            Reply::Ready if !worker.ready() => worker.link.ready.store(true, Ordering::Release),
            Reply::InitFailed(message) if !worker.ready() => {
                // Before `Ready`: its initializer failed, and would fail in every worker.
                worker.open = false;
                self.shared
                    .mark_broken(Error::new(ErrorKind::InitializerFailed, message));
            }
            reply => {
                if let Reply::Done { ticket, .. } | Reply::DoneMeasured { ticket, .. } = &reply {
                    let behind = worker.queued.as_ref().is_some_and(|q| q.ticket == *ticket);
                    if behind
                        && worker.early.is_none()
                        && worker.task.as_ref().is_some_and(|b| b.ticket != *ticket)
                    {
                        // The reply to the task queued behind, read from the socket before
                        // the reply to the first was read from the ring: taken after it.
                        worker.early = Some((reply, body));
                        return true;
                    }
                }
                let resident = reply::resident(&reply);
                // The reply to the task it holds, once wholly sent, and only that.
                let expected = match (&worker.task, &worker.sending) {
                    (Some(busy), None) => Some(Expected {
                        job: busy.job,
                        chunk: busy.chunk,
                        ticket: busy.ticket,
                    }),
                    _ => None,
                };
                let result = match reply::answer(reply, body, expected.as_ref()) {
                    Ok(result) => result,
                    Err(what) => {
                        self.out_of_protocol(i, ErrorKind::Codec, &what);
                        return false;
                    }
                };
                let Some(mut busy) = worker.task.take() else {
                    return false;
                };
                // Kept in case it was never taken: its buffer serves the next message.
                if let Some(task) = busy.task.take() {
                    spare::give(task.payload.bytes);
                }
                worker
                    .link
                    .note_resident(resident, self.managed.limits.max_memory);
                worker.link.done.fetch_add(1, Ordering::AcqRel);
                match worker.queued.take() {
                    // The task queued behind it is the worker's now: timed from here.
                    Some(mut next) => {
                        next.deadline = self.task_timeout.and_then(sys::deadline_after);
                        worker.task = Some(next);
                    }
                    None => worker.link.state.store(IDLE, Ordering::Release),
                }
                // Only a task queued behind was listed (a handed one has its word, no listing:
                // no lock of the job table for its reply).
                if busy.slot != 0 && !busy.handed {
                    self.shared.unprefetch(busy.ticket);
                }
                // The worker gets its next task before this result is decoded: decoding
                // (and callbacks) then overlap with the worker's computing.
                self.dispatch();
                if !busy.stolen {
                    self.shared.deliver(busy.job, busy.chunk, result);
                }
                if let Some((reply, body)) = self.workers[i].early.take() {
                    return self.take_reply(i, reply, body);
                }
            }
        }
        true
    }

    /// Worker `i` sent something out of protocol: it is killed (and replaced), and the task it
    /// holds, only that one, fails with an error that names it.
    fn out_of_protocol(&mut self, i: usize, kind: ErrorKind, what: &str) {
        let worker = &mut self.workers[i];
        worker.open = false;
        worker.progress = None;
        let _ = worker.popen.signal(libc::SIGKILL);
        // Its task fails here: the burial must not requeue a part still unsent.
        worker.sending = None;
        if let Some(busy) = worker.task.take() {
            let err = reply::out_of_protocol(&worker.link, kind, what);
            self.shared.deliver(busy.job, busy.chunk, Err(err));
        }
    }

    /// Worker `i` exited: read what it left; the reaper thread reads its exit code, then
    /// [`buried`](Self::buried) fails the task it held.
    fn bury(&mut self, i: usize) {
        // What a worker lent to a caller left on its socket or in its ring is the caller's to
        // read.
        while self.workers[i].open
            && !self.workers[i].lent()
            && (self.take_ring_reply(i) || self.read_reply(i))
        {}
        let mut worker = self.workers.swap_remove(i);
        self.shared
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|l| !Arc::ptr_eq(l, &worker.link));
        if let Some(sending) = worker.sending.take() {
            // It died before it had its whole task, which it did not run: another takes it.
            worker.task = None;
            self.shared.lock().requeue(sending.task);
            self.shared.wake();
        }
        // Tasks in its ring that it never claimed did not run: other workers take them. One it
        // claimed ran, and fails as the task of a dead worker.
        let rings = &worker.link.rings;
        let mut unrun = Vec::new();
        if let Some(queued) = worker.queued.take() {
            if rings.revoke(queued.slot, queued.ticket) {
                unrun.push(queued);
            } else if worker.task.is_none() {
                worker.task = Some(queued);
            } else {
                // Claimed, so the task before it was done, but its reply was not read (the
                // worker was already deemed out of protocol): both fail.
                let err = reply::died(&worker.link, None, "after its reply was cut short");
                self.shared.deliver(queued.job, queued.chunk, Err(err));
            }
        }
        if worker
            .task
            .as_ref()
            .is_some_and(|b| b.slot != 0 && rings.revoke(b.slot, b.ticket))
        {
            unrun.extend(worker.task.take());
        }
        if !unrun.is_empty() {
            let mut state = self.shared.lock();
            for busy in unrun.into_iter().rev() {
                state.prefetched.retain(|p| p.ticket != busy.ticket);
                if let Some(task) = busy.task {
                    state.requeue(task);
                }
            }
            drop(state);
            self.shared.wake();
        }
        if let Some(busy) = &worker.task {
            if busy.slot != 0 {
                self.shared.unprefetch(busy.ticket);
            }
        }
        self.bury_off(Corpse::Worker(Box::new(worker)));
    }

    /// A dead worker's exit code is known (if it could be): whoever waits for it is told, and
    /// the task it held fails.
    fn buried(&mut self, worker: Worker, code: Option<i32>) {
        worker.link.mark_buried(code);
        if worker.ready() {
            self.early_deaths = 0;
        } else {
            // Dead before it could serve: an initializer that exits or crashes, or a worker
            // that cannot start. Replacing it forever would hang every caller (gh-87472).
            self.early_deaths += 1;
            let how = reply::describe_exit(code);
            if self.config.initializer.is_some() {
                self.shared.mark_broken(Error::new(
                    ErrorKind::InitializerFailed,
                    format!(
                        "pool worker {} (pid {}) {how} before its initializer finished",
                        worker.name, worker.popen.pid
                    ),
                ));
            } else if self.early_deaths >= EARLY_DEATHS_LIMIT {
                self.shared.mark_broken(Error::new(
                    ErrorKind::Bootstrap,
                    format!(
                        "{EARLY_DEATHS_LIMIT} pool workers in a row died before they were ready; the last, {} (pid {}), {how}",
                        worker.name, worker.popen.pid
                    ),
                ));
            }
        }
        if let Some(busy) = worker.task {
            let when = format!("while running chunk {} of this task", busy.chunk);
            let err = reply::died(&worker.link, code, &when);
            self.shared.deliver(busy.job, busy.chunk, Err(err));
        }
    }

    /// Kills the workers running a chunk of a job cancelled with `cancel_and_kill` (its
    /// result would go nowhere); they are buried and replaced as any dead worker.
    fn kill_cancelled(&mut self) {
        let jobs = self.shared.take_kills();
        if jobs.is_empty() {
            return;
        }
        for i in 0..self.workers.len() {
            // Its task queued behind, if it claimed it, is the one it runs: the cancel revoked
            // it otherwise.
            if !self.read_through(i) {
                continue;
            }
            let worker = &self.workers[i];
            let Some(busy) = &worker.task else {
                continue;
            };
            let rings = &worker.link.rings;
            // Not the cancelled job's, or never to run (the cancel revoked it before the
            // worker claimed it: the worker answers it unrun, in its turn).
            if !worker.open
                || !jobs.contains(&busy.job)
                || (busy.slot != 0 && rings.revoke(busy.slot, busy.ticket))
            {
                continue;
            }
            // The task behind it must not run (another worker takes it at the burial);
            // claimed just now, the cancelled one is done.
            if worker
                .queued
                .as_ref()
                .is_some_and(|q| !rings.revoke(q.slot, q.ticket))
            {
                continue;
            }
            let worker = &mut self.workers[i];
            worker.task = None;
            worker.sending = None;
            worker.open = false;
            let _ = worker.popen.signal(libc::SIGKILL);
        }
    }

    /// When worker `i` claimed the task queued behind the one it held first, the first is
    /// done and its reply here whole (a worker writes it before it takes the next): read it.
    /// `false`: the worker sent none, and was killed as out of protocol.
    fn read_through(&mut self, i: usize) -> bool {
        let claimed = |worker: &Worker| {
            worker.open
                && worker
                    .queued
                    .as_ref()
                    .is_some_and(|q| worker.link.rings.claimed(q.slot, q.ticket))
        };
        if !claimed(&self.workers[i]) {
            return true;
        }
        let ticket = self.workers[i].queued.as_ref().map(|q| q.ticket);
        let behind = |worker: &Worker| worker.queued.as_ref().map(|q| q.ticket) == ticket;
        while self.workers[i].open
            && behind(&self.workers[i])
            && (self.take_ring_reply(i) || self.read_reply(i))
        {}
        if self.workers[i].open && behind(&self.workers[i]) {
            let what = "a task claimed before the reply to the task before it";
            self.out_of_protocol(i, ErrorKind::Codec, what);
            return false;
        }
        true
    }

    fn enforce_timeouts(&mut self) {
        let now = Instant::now();
        for i in 0..self.workers.len() {
            let worker = &self.workers[i];
            if worker.open && worker.progress.is_some_and(|at| at + REPLY_STALL <= now) {
                self.out_of_protocol(i, ErrorKind::Codec, &reply::stalled());
            }
        }
        for i in 0..self.workers.len() {
            let overdue = |worker: &Worker| {
                worker
                    .task
                    .as_ref()
                    .and_then(|b| b.deadline)
                    .is_some_and(|d| d <= now)
            };
            if !overdue(&self.workers[i]) {
                continue;
            }
            // Only the task it runs times out: the one queued behind it, if claimed, is the
            // one it runs (the first is done: its reply is read here, and the one behind is
            // timed from then); if not, it never runs, and goes to another worker at the
            // burial.
            if !self.read_through(i) || !overdue(&self.workers[i]) {
                continue;
            }
            let worker = &mut self.workers[i];
            // A worker that hung up (its socket at end of file) but lives on with its task is
            // killed as any other: only a live link has tasks to revoke in its ring.
            if worker.open {
                let rings = &worker.link.rings;
                if worker
                    .queued
                    .as_ref()
                    .is_some_and(|q| !rings.revoke(q.slot, q.ticket))
                {
                    // Claimed just now: the first is done, its reply read next round.
                    continue;
                }
                // A task queued behind that it had not claimed yet (a stopped worker) did not
                // start: another takes it at the burial. One handed to it when idle times out
                // as it is.
                let unclaimed = worker.task.as_ref().is_some_and(|b| {
                    b.slot != 0 && !b.handed && worker.link.rings.revoke(b.slot, b.ticket)
                });
                if unclaimed {
                    if let Some(busy) = &mut worker.task {
                        busy.deadline = None;
                    }
                    worker.sending = None;
                    let _ = worker.popen.signal(libc::SIGKILL);
                    worker.open = false;
                    continue;
                }
            }
            let Some(busy) = worker.task.take() else {
                continue;
            };
            // A task still being sent times out too (a worker that stopped reading).
            worker.sending = None;
            let _ = worker.popen.signal(libc::SIGKILL);
            worker.open = false;
            let err = reply::timed_out(&worker.link, self.task_timeout);
            self.shared.deliver(busy.job, busy.chunk, Err(err));
        }
    }

    /// `close` then all work done: workers see end of file and exit; reaped, bounded.
    fn stop_all(&mut self) {
        for worker in &self.workers {
            let _ = worker.popen.control.shutdown(std::net::Shutdown::Write);
        }
        self.reap_all(Duration::from_secs(5));
    }

    /// `terminate`, `Drop`, or a broken pool: SIGTERM, then SIGKILL, then reap.
    fn kill_all(&mut self) {
        for worker in &self.workers {
            let _ = worker.popen.signal(libc::SIGTERM);
        }
        self.reap_all(Duration::from_secs(1));
    }

    /// Waits until `grace` for the workers to exit, kills those that did not, and hands them
    /// to the reaper thread. Only the kernel is waited for here (the exit of a killed process),
    /// never another process's answer.
    fn reap_all(&mut self, grace: Duration) {
        if self.workers.is_empty() {
            return;
        }
        let deadline = sys::deadline_after(grace);
        let mut killed = None;
        for worker in std::mem::take(&mut self.workers) {
            let Ok(exit) = worker.popen.exit_fd() else {
                // A worker's exit descriptor is made with it: this does not happen. Were it
                // to, the worker is killed and handed to the reaper all the same.
                let _ = worker.popen.signal(libc::SIGKILL);
                self.bury_off(Corpse::Worker(Box::new(worker)));
                continue;
            };
            let mut gone = sys::poll_one(exit.as_fd(), sys::READABLE, deadline).unwrap_or(0) > 0;
            if !gone {
                let _ = worker.popen.signal(libc::SIGKILL);
                let deadline =
                    *killed.get_or_insert_with(|| sys::deadline_after(Duration::from_secs(5)));
                gone = sys::poll_one(exit.as_fd(), sys::READABLE, deadline).unwrap_or(0) > 0;
            }
            if !gone {
                // Beyond a SIGKILL (a process stuck in the kernel): not waited for again.
                worker.link.mark_buried(None);
                continue;
            }
            self.bury_off(Corpse::Worker(Box::new(worker)));
        }
        self.shared
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The driver exits: its workers are killed, starts in progress are abandoned (their
    /// processes killed as they come), and the helper threads get a short time to finish.
    fn shut_down(&mut self) {
        // The starter takes no new order, and ends when it is done with the one it has.
        self.helpers.orders = None;
        self.kill_all();
        let_finish(self.helpers.starter.take(), HELPER_GRACE);
        let (started, reaped) = {
            let mut handed = self.helpers.handoff();
            handed.closed = true;
            (
                std::mem::take(&mut handed.started),
                std::mem::take(&mut handed.reaped),
            )
        };
        for (_, started) in started {
            if let Ok(popen) = started {
                self.bury_off(Corpse::Stray(popen));
            }
        }
        for (worker, code) in reaped {
            worker.link.mark_buried(code);
        }
        self.helpers.corpses = None;
        let_finish(self.helpers.reaper.take(), HELPER_GRACE);
    }
}

/// Self-management: the idle timeout, `resize`, the memory limit and the soft task timeout.
/// Kept apart from the dispatch: a worker to be let go is marked ([`Link::retire`]), is
/// given no more tasks (nor lent), and once idle is let go as a closed pool lets its workers
/// go, by the end of its socket; it exits, and is buried as any worker that exits. Running
/// tasks are never cut short here.
impl Driver {
    fn manage(&mut self) {
        self.processes = self.managed.size.load(Ordering::Acquire).max(1);
        let limits = &self.managed.limits;
        let (soft, idle) = (limits.soft_timeout.is_some(), limits.idle_timeout.is_some());
        let kept = self
            .workers
            .iter()
            .filter(|w| w.open && !w.retiring())
            .count();
        // Without these settings, and at its size, a pool costs this look and no more.
        if soft || idle || kept > self.processes {
            let now = Instant::now();
            self.ask_soft_stops(now);
            if self.shared.lock().lifecycle == Lifecycle::Running {
                self.mark_surplus();
                self.mark_idle(now);
            }
        }
        self.retire_marked();
    }

    /// How many workers to have: the pool's size, or with an idle timeout, no more than the
    /// work at hand needs (started on demand).
    fn wanted(&self) -> usize {
        if self.managed.limits.idle_timeout.is_none() {
            return self.processes;
        }
        let busy = self
            .workers
            .iter()
            .filter(|w| w.open && (w.task.is_some() || w.lent()))
            .count();
        let queued = self.shared.lock().queue.len();
        self.processes.min(busy.saturating_add(queued))
    }

    /// Workers beyond the pool's size (after `resize`) are marked: idle ones first, then
    /// those still starting, then busy ones (let go after their task).
    fn mark_surplus(&mut self) {
        let mut kept: Vec<&Worker> = self
            .workers
            .iter()
            .filter(|w| w.open && !w.retiring())
            .collect();
        let surplus = kept.len().saturating_sub(self.processes);
        if surplus == 0 {
            return;
        }
        kept.sort_by_key(|w| match (w.ready(), w.task.is_some() || w.lent()) {
            (true, false) => 0,
            (false, _) => 1,
            (true, true) => 2,
        });
        for worker in kept.into_iter().take(surplus) {
            worker.link.retire.store(true, Ordering::Release);
        }
    }

    /// With an idle timeout, workers idle that long (no task, not lent, no queued work) are
    /// marked.
    fn mark_idle(&mut self, now: Instant) {
        let Some(timeout) = self.managed.limits.idle_timeout else {
            return;
        };
        let queued = !self.shared.lock().queue.is_empty();
        let idle = &mut self.managed.idle;
        idle.retain(|pid, _| self.workers.iter().any(|w| w.popen.pid == *pid));
        for worker in &self.workers {
            let waiting = worker.open
                && worker.ready()
                && worker.task.is_none()
                && !worker.lent()
                && !worker.retiring();
            if !waiting || queued {
                idle.remove(&worker.popen.pid);
                continue;
            }
            let done = worker.link.done.load(Ordering::Acquire);
            match idle.get(&worker.popen.pid) {
                Some(&(since, then)) if then == done => {
                    if since + timeout <= now {
                        worker.link.retire.store(true, Ordering::Release);
                        idle.remove(&worker.popen.pid);
                    }
                }
                _ => {
                    idle.insert(worker.popen.pid, (now, done));
                }
            }
        }
    }

    /// Lets the marked workers that are idle go: taken from the callers of `apply`, then their
    /// socket is shut for writing, which ends their task loop.
    fn retire_marked(&mut self) {
        for worker in &mut self.workers {
            let idle = worker.open
                && worker.ready()
                && worker.task.is_none()
                && worker.sending.is_none()
                && worker.retiring();
            if !idle
                || worker
                    .link
                    .state
                    .compare_exchange(IDLE, DRIVER, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                continue;
            }
            worker.open = false;
            if worker
                .popen
                .control
                .shutdown(std::net::Shutdown::Write)
                .is_err()
            {
                let _ = worker.popen.signal(libc::SIGKILL);
            }
        }
    }

    /// With a soft task timeout, a worker whose task has run that long is sent
    /// [`SOFT_TIMEOUT_SIGNAL`](super::soft::SOFT_TIMEOUT_SIGNAL), once per task.
    fn ask_soft_stops(&mut self, now: Instant) {
        let Some(soft) = self.managed.limits.soft_timeout else {
            return;
        };
        let asked = &mut self.managed.soft;
        asked.retain(|pid, _| {
            self.workers
                .iter()
                .any(|w| w.popen.pid == *pid && w.task.is_some())
        });
        for worker in &self.workers {
            let Some(busy) = &worker.task else {
                continue;
            };
            let entry = asked
                .entry(worker.popen.pid)
                .or_insert((busy.ticket, now + soft, false));
            if entry.0 != busy.ticket {
                *entry = (busy.ticket, now + soft, false);
            }
            // Once per task; a worker already going (killed, out of protocol) is not asked,
            // and its deadline is not looked at again.
            if !entry.2 && entry.1 <= now {
                if worker.open {
                    let _ = worker.popen.signal(super::soft::SOFT_TIMEOUT_SIGNAL);
                }
                entry.2 = true;
            }
        }
    }

    /// When [`manage`](Self::manage) has something to do without an event: a worker's idle
    /// timeout or a task's soft timeout comes, or (with an idle timeout) a look at the workers
    /// lent to callers, which the driver does not see come back.
    fn manage_deadline(&self) -> Option<Instant> {
        let managed = &self.managed;
        let idle = managed.limits.idle_timeout.and_then(|timeout| {
            managed
                .idle
                .values()
                .map(|&(since, _)| since + timeout)
                .min()
        });
        let lent = managed
            .limits
            .idle_timeout
            .filter(|_| self.workers.iter().any(Worker::lent))
            .map(|timeout| Instant::now() + timeout);
        let soft = managed
            .soft
            .values()
            .filter(|&&(_, _, signalled)| !signalled)
            .map(|&(_, at, _)| at)
            .min();
        // A task dispatched since the last look has no soft timeout yet: look again at once
        // (once per task), which gives it one.
        let unwatched = managed.limits.soft_timeout.is_some()
            && self.workers.iter().any(|w| {
                w.task.as_ref().is_some_and(|busy| {
                    managed
                        .soft
                        .get(&w.popen.pid)
                        .is_none_or(|&(ticket, _, _)| ticket != busy.ticket)
                })
            });
        let now = unwatched.then(Instant::now);
        [idle, lent, soft, now].into_iter().flatten().min()
    }
}

impl Drop for Driver {
    /// However the driver ends (normally, on an error, by a panic, or never started), its
    /// workers are reaped and whatever still waits fails with a clear error.
    fn drop(&mut self) {
        // Terminated: what waits fails before the workers are killed and reaped (a second's
        // grace for each that ignores SIGTERM, longer on a loaded machine), since its results
        // can never come. `join` waits for the workers.
        if self.shared.lock().lifecycle == Lifecycle::Terminated {
            self.shared.finish();
        }
        self.shut_down();
        self.shared.finish();
    }
}
