//! The pool's driver thread: it owns the workers, dispatches queued tasks to idle ones, reads
//! their replies, notices their deaths, enforces task timeouts, and replaces workers.
//!
//! Every dispatched task ends in exactly one delivery: its result, or an error saying why not
//! (the worker died, the task timed out, the pool was terminated). That is what makes a pool
//! that never hangs: CPython loses the task of a dead worker (gh-66587).

use std::collections::{HashMap, HashSet, VecDeque};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::result::Sink;
use super::worker::{Reply, TaskHeader, TaskOutcome, WorkerConfig, WorkerMain};
use crate::codec;
use crate::current::{self, current_process};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;
use crate::registry::Target;
use crate::start::forkserver::{self, Zygotes};
use crate::start::{spawn, Launch, Popen, StartMethod};
use crate::{spare, sys, wire};

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
    broken: Option<Error>,
    joining: bool,
    next_job: u64,
}

/// What the pool's handle and its driver share.
pub(crate) struct Shared {
    state: Mutex<State>,
    wake: OwnedFd,
    driver_thread: OnceLock<ThreadId>,
    links: Mutex<Vec<Arc<Link>>>,
    maxtasks: OnceLock<Option<u64>>,
    /// Large buffers a caller of `apply` is done with, for the driver to free.
    discarded: Mutex<Vec<Vec<u8>>>,
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
        }))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn wake(&self) {
        sys::eventfd_signal(self.wake.as_fd());
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

    fn free_discarded(&self) {
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

    fn deliver(&self, job: u64, chunk: u32, result: Result<Encoded>) {
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
    fn fail_all(&self, err: &Error) {
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

    fn mark_broken(&self, err: Error) {
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
    fn finish(&self) {
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

/// How the pool starts its workers. `Send + Sync`: [`launch`](Launcher::launch) may be called
/// from any thread.
pub(crate) enum Launcher {
    /// `fork`: a zygote forked from the process when the pool was made forks them (replaced by
    /// its spare if it dies: see [`Zygotes`]).
    Zygote(Zygotes),
    /// `forkserver`: the process's fork server.
    ForkServer,
    /// `spawn`: an exec of the binary each.
    Spawn,
}

impl Launcher {
    pub(crate) fn new(method: StartMethod) -> Result<Launcher> {
        Ok(match method {
            StartMethod::Fork => Launcher::Zygote(Zygotes::fork()?),
            StartMethod::ForkServer => Launcher::ForkServer,
            StartMethod::Spawn => Launcher::Spawn,
        })
    }

    fn launch(&self, launch: Launch, fds: &[RawFd]) -> Result<Popen> {
        match self {
            Launcher::Zygote(zygote) => zygote.launch(launch, fds),
            Launcher::ForkServer => forkserver::launch(launch, fds),
            Launcher::Spawn => spawn::launch(launch, fds),
        }
    }
}

const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Launcher>();
};

struct Busy {
    job: u64,
    chunk: u32,
    deadline: Option<Instant>,
}

/// A worker as seen from outside the driver thread: what a caller of `apply` needs to borrow an
/// idle worker and run its task itself (two hand-offs per call instead of four).
pub(crate) struct Link {
    /// A duplicate of the worker's control socket; closed with its registration (see `Drop`).
    pub control: ManuallyDrop<UnixStream>,
    /// Readable when the worker has exited.
    pub exit: Arc<crate::current::SharedRegistered>,
    /// A duplicate of the worker's pidfd, to kill it on a task timeout; closed with its
    /// registration.
    pub pidfd: ManuallyDrop<OwnedFd>,
    pub name: String,
    pub pid: i32,
    /// `IDLE`, `DRIVER` (running a task the driver dispatched), `LENT` (a caller runs one),
    /// `GONE` (exited, buried by the driver).
    pub state: AtomicU8,
    pub ready: AtomicBool,
    /// Tasks run, for `maxtasksperchild`.
    pub done: AtomicU64,
    /// The exit code, once the driver has buried the worker.
    pub exitcode: Mutex<Option<Option<i32>>>,
    pub buried: Condvar,
    /// Reads the worker's messages, for the driver and for a borrower alike (never both at
    /// once: the worker answers whoever gave it its task).
    pub inbox: Mutex<wire::Reader>,
}

pub(crate) const IDLE: u8 = 0;
pub(crate) const DRIVER: u8 = 1;
pub(crate) const LENT: u8 = 2;
pub(crate) const GONE: u8 = 3;

impl Drop for Link {
    fn drop(&mut self) {
        // Closed with their registrations, at once: a fork in another thread meanwhile never
        // sees them open and unregistered (see `current::close_registered`).
        // SAFETY: neither is used again: this is the drop of their owner.
        let (control, pidfd) = unsafe {
            (
                ManuallyDrop::take(&mut self.control),
                ManuallyDrop::take(&mut self.pidfd),
            )
        };
        current::close_registered(control);
        current::close_registered(pidfd);
    }
}

impl Link {
    /// The driver has reaped this worker (`code`: its exit code, if known): tells whoever waits.
    fn mark_buried(&self, code: Option<i32>) {
        self.state.store(GONE, Ordering::Release);
        *self.exitcode.lock().unwrap_or_else(PoisonError::into_inner) = Some(code);
        self.buried.notify_all();
    }

    /// Waits (bounded) for the driver to bury this worker; returns its exit code if known.
    pub(crate) fn wait_buried(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let mut code = self.exitcode.lock().unwrap_or_else(PoisonError::into_inner);
        while code.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            code = self
                .buried
                .wait_timeout(code, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        code.flatten()
    }
}

/// A task could not be sent to `worker` (it is going away, or its stream is out of step after
/// a partial send): it is killed, and the task, which it did not run, goes to another.
fn abandon_send(worker: &mut Worker, task: Task, shared: &Shared) {
    worker.open = false;
    let _ = worker.popen.signal(libc::SIGKILL);
    // Idle but not ready: no caller of `apply` borrows the worker that was just killed.
    worker.link.ready.store(false, Ordering::Release);
    worker.link.state.store(IDLE, Ordering::Release);
    shared.lock().queue.push_front(task);
}

/// How a worker ended, for error messages.
pub(crate) fn describe_exit(code: Option<i32>) -> String {
    match code {
        Some(n) if n < 0 => format!("was killed by {}", sys::signal_name(-n)),
        Some(n) => format!("exited with code {n}"),
        None => "went away".to_string(),
    }
}

struct Worker {
    popen: Popen,
    link: Arc<Link>,
    name: String,
    open: bool,
    task: Option<Busy>,
    /// The task being sent, when the socket could not take it whole: the rest goes as the
    /// worker makes room (see `poll_once`), never waited for.
    sending: Option<Sending>,
}

/// A task whose message is partly sent.
struct Sending {
    task: Task,
    unsent: wire::Unsent,
}

impl Worker {
    fn ready(&self) -> bool {
        self.link.ready.load(Ordering::Acquire)
    }

    fn lent(&self) -> bool {
        self.link.state.load(Ordering::Acquire) == LENT
    }
}

/// Workers that die before saying `Ready`, in a row, before the pool is declared broken.
const EARLY_DEATHS_LIMIT: u32 = 3;

pub(crate) struct Driver {
    early_deaths: u32,
    shared: Arc<Shared>,
    launcher: Launcher,
    method: StartMethod,
    config: WorkerConfig,
    /// Descriptors in the initializer's arguments, passed to every worker.
    init_fds: Vec<OwnedFd>,
    processes: usize,
    task_timeout: Option<Duration>,
    workers: Vec<Worker>,
}

impl Driver {
    /// Starts the first `processes` workers (in the caller's thread, so that errors surface
    /// from `Pool::new`).
    pub(crate) fn start(
        shared: Arc<Shared>,
        launcher: Launcher,
        method: StartMethod,
        config: WorkerConfig,
        init_fds: Vec<OwnedFd>,
        processes: usize,
        task_timeout: Option<Duration>,
    ) -> Result<Driver> {
        let _ = shared.maxtasks.set(config.maxtasks);
        let mut driver = Driver {
            early_deaths: 0,
            shared,
            launcher,
            method,
            config,
            init_fds,
            processes,
            task_timeout,
            workers: Vec::with_capacity(processes),
        };
        for _ in 0..processes {
            if let Err(err) = driver.start_worker() {
                driver.kill_all();
                return Err(err);
            }
        }
        Ok(driver)
    }

    fn start_worker(&mut self) -> Result<()> {
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
        let fds: Vec<RawFd> = self.init_fds.iter().map(AsRawFd::as_raw_fd).collect();
        let popen = self.launcher.launch(launch, &fds)?;
        // Closed in forked children, like the worker's other descriptors: a child that kept the
        // socket would keep the worker from seeing its parent die. Registered as they are made
        // (a caller's thread may fork meanwhile); `Link`'s drop unregisters them.
        let (control, pidfd) = current::registered(
            || {
                let control = popen
                    .control
                    .try_clone()
                    .map_err(|err| Error::io("cannot duplicate a worker's socket", err))?;
                Ok::<_, Error>((control, popen.signal_handle()?))
            },
            |(control, pidfd)| vec![control.as_raw_fd(), pidfd.as_raw_fd()],
        )?;
        let link = Arc::new(Link {
            control: ManuallyDrop::new(control),
            exit: popen.exit_fd(),
            pidfd: ManuallyDrop::new(pidfd),
            name: name.clone(),
            pid: popen.pid,
            state: AtomicU8::new(IDLE),
            ready: AtomicBool::new(false),
            done: AtomicU64::new(0),
            exitcode: Mutex::new(None),
            buried: Condvar::new(),
            inbox: Mutex::new(wire::Reader::new()),
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
            sending: None,
        });
        Ok(())
    }

    /// The driver thread's body.
    pub(crate) fn run(mut self) {
        let _ = self.shared.driver_thread.set(std::thread::current().id());
        loop {
            let (lifecycle, broken, queued, waiting) = {
                let state = self.shared.lock();
                // Jobs still expecting results keep a closed pool alive; lazy ones (imap) only
                // until `join` is called.
                let waiting = state
                    .jobs
                    .keys()
                    .any(|job| !(state.joining && state.lazy.contains(job)));
                (
                    state.lifecycle,
                    state.broken.is_some(),
                    !state.queue.is_empty(),
                    waiting,
                )
            };
            if lifecycle == Lifecycle::Terminated {
                self.kill_all();
                return;
            }
            if !broken && (lifecycle == Lifecycle::Running || queued || waiting) {
                self.maintain();
            }
            self.dispatch();
            let busy = self.workers.iter().any(|w| w.task.is_some() || w.lent());
            if lifecycle == Lifecycle::Closed && !busy && ((!queued && !waiting) || broken) {
                self.stop_all();
                return;
            }
            if let Err(err) = self.poll_once() {
                self.shared.mark_broken(err);
                self.kill_all();
                return;
            }
        }
    }

    fn maintain(&mut self) {
        let live = self.workers.iter().filter(|w| w.open).count();
        for _ in live..self.processes {
            if let Err(err) = self.start_worker() {
                self.shared.mark_broken(Error::new(
                    err.kind(),
                    format!("cannot start a replacement pool worker: {err}"),
                ));
                return;
            }
        }
    }

    fn dispatch(&mut self) {
        for worker in &mut self.workers {
            if !worker.ready() || !worker.open || worker.task.is_some() {
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
            let header = TaskHeader {
                job: task.job,
                chunk: task.chunk,
                entry: task.entry.to_string(),
            };
            // Without waiting: a worker that stops reading must not stop the driver.
            let sent = wire::try_send_message(&worker.popen.control, &header, &task.payload);
            match sent {
                Ok(unsent) => {
                    worker.task = Some(Busy {
                        job: task.job,
                        chunk: task.chunk,
                        deadline: self.task_timeout.and_then(sys::deadline_after),
                    });
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
        let mut fds = vec![libc::pollfd {
            fd: self.shared.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let exit_fds: Vec<_> = self.workers.iter().map(|w| w.popen.exit_fd()).collect();
        // A message already read ahead into a worker's inbox does not show in a poll: one
        // there makes this poll return at once, and is read below.
        let mut buffered = vec![false; self.workers.len()];
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
        }
        let deadline = if buffered.contains(&true) {
            Some(Instant::now())
        } else {
            self.workers
                .iter()
                .filter_map(|w| w.task.as_ref()?.deadline)
                .min()
        };
        sys::poll_many(&mut fds, deadline)
            .map_err(|err| Error::io("the pool cannot poll its workers", err))?;
        if fds[0].revents != 0 {
            sys::eventfd_drain(self.shared.wake.as_fd());
            self.shared.free_discarded();
        }
        let mut exited = Vec::new();
        for (i, pair) in fds[1..].chunks(2).enumerate() {
            // Room to send (or an error, which the send reports) for a task being sent.
            if pair[0].revents != 0 && self.workers[i].sending.is_some() {
                self.send_more(i);
            }
            if pair[0].revents & !libc::POLLOUT != 0 || buffered[i] {
                self.read_reply(i);
            }
            if pair[1].revents != 0 {
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
        let received = worker
            .link
            .inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_recv::<Reply>(&worker.popen.control);
        let (reply, body) = match received {
            Ok(wire::Received::Message(reply, body)) => (reply, body),
            Ok(wire::Received::Partial) => return false,
            Ok(wire::Received::Closed) => {
                worker.open = false;
                return false;
            }
            Err(err) => {
                worker.open = false;
                let _ = worker.popen.signal(libc::SIGKILL);
                // Its task fails here: the burial must not requeue a part still unsent.
                worker.sending = None;
                if let Some(busy) = worker.task.take() {
                    // A reply cut short is a worker that died mid-reply; anything else is a
                    // reply that makes no sense.
                    let kind = match err.kind() {
                        ErrorKind::Codec => ErrorKind::Codec,
                        _ => ErrorKind::Died,
                    };
                    let err = Error::new(
                        kind,
                        format!(
                            "bad reply from pool worker {} (pid {}), which was killed: {err}",
                            worker.name, worker.popen.pid
                        ),
                    );
                    self.shared.deliver(busy.job, busy.chunk, Err(err));
                }
                return false;
            }
        };
        match reply {
            Reply::Ready => worker.link.ready.store(true, Ordering::Release),
            Reply::InitFailed(message) => {
                worker.open = false;
                self.shared
                    .mark_broken(Error::new(ErrorKind::InitializerFailed, message));
            }
            Reply::Done {
                job,
                chunk,
                outcome,
            } => {
                let result = match outcome {
                    TaskOutcome::Ok => Ok(body),
                    TaskOutcome::Panicked(panic) => Err(Error::panicked(panic)),
                    TaskOutcome::Failed { codec, message } => {
                        Err(Error::new(TaskOutcome::kind(codec), message))
                    }
                };
                // (Not before the worker has its whole task: a reply then is no reply.)
                let owned = worker.sending.is_none()
                    && worker
                        .task
                        .as_ref()
                        .is_some_and(|b| b.job == job && b.chunk == chunk);
                if owned {
                    worker.task = None;
                    worker.link.done.fetch_add(1, Ordering::AcqRel);
                    worker.link.state.store(IDLE, Ordering::Release);
                    // The worker gets its next task before this result is decoded: decoding
                    // (and callbacks) then overlap with the worker's computing.
                    self.dispatch();
                    self.shared.deliver(job, chunk, result);
                }
            }
        }
        true
    }

    /// Worker `i` exited: read what it left, fail the task it held, reap it.
    fn bury(&mut self, i: usize) {
        // What a worker lent to a caller left on its socket is the caller's to read.
        while self.workers[i].open && !self.workers[i].lent() && self.read_reply(i) {}
        let mut worker = self.workers.swap_remove(i);
        let code = worker.popen.try_reap().ok().flatten();
        worker.link.mark_buried(code);
        self.shared
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|l| !Arc::ptr_eq(l, &worker.link));
        if worker.ready() {
            self.early_deaths = 0;
        } else {
            // Dead before it could serve: an initializer that exits or crashes, or a worker
            // that cannot start. Replacing it forever would hang every caller (gh-87472).
            self.early_deaths += 1;
            let how = describe_exit(code);
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
        if let Some(sending) = worker.sending.take() {
            // It died before it had its whole task, which it did not run: another takes it.
            worker.task = None;
            self.shared.lock().queue.push_front(sending.task);
            self.shared.wake();
        }
        if let Some(busy) = worker.task {
            let how = describe_exit(code);
            let err = Error::new(
                ErrorKind::Died,
                format!(
                    "pool worker {} (pid {}) {how} while running chunk {} of this task; the worker is replaced",
                    worker.name, worker.popen.pid, busy.chunk
                ),
            );
            self.shared.deliver(busy.job, busy.chunk, Err(err));
        }
    }

    fn enforce_timeouts(&mut self) {
        let now = Instant::now();
        for worker in &mut self.workers {
            let overdue = worker
                .task
                .as_ref()
                .and_then(|b| b.deadline)
                .is_some_and(|d| d <= now);
            if !overdue {
                continue;
            }
            let Some(busy) = worker.task.take() else {
                continue;
            };
            // A task still being sent times out too (a worker that stopped reading).
            worker.sending = None;
            let _ = worker.popen.signal(libc::SIGKILL);
            worker.open = false;
            let err = Error::timeout(format!(
                "the task ran longer than its timeout of {:?}; pool worker {} (pid {}) was killed and is replaced",
                self.task_timeout.unwrap_or_default(),
                worker.name,
                worker.popen.pid
            ));
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

    fn reap_all(&mut self, grace: Duration) {
        if self.workers.is_empty() {
            return;
        }
        let deadline = sys::deadline_after(grace);
        for worker in self.workers.drain(..) {
            // A caller that borrowed the worker learns at once that it is gone.
            worker.link.mark_buried(worker.popen.reap_by(deadline));
        }
        self.shared
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for Driver {
    /// However the driver ends (normally, on an error, by a panic, or never started), its
    /// workers are reaped and whatever still waits fails with a clear error.
    fn drop(&mut self) {
        self.kill_all();
        self.shared.finish();
    }
}
