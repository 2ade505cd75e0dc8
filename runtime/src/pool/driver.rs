//! The pool's driver thread: it owns the workers, dispatches queued tasks to idle ones, reads
//! their replies, notices their deaths, enforces task timeouts, and replaces workers.
//!
//! Every dispatched task ends in exactly one delivery: its result, or an error saying why not
//! (the worker died, the task timed out, the pool was terminated). That is what makes a pool
//! that never hangs: CPython loses the task of a dead worker (gh-66587).

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::result::Sink;
use super::worker::{Reply, TaskHeader, TaskOutcome, WorkerConfig, WorkerMain};
use crate::codec;
use crate::current::{self, current_process};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;
use crate::registry::Target;
use crate::start::forkserver::{self, ForkServer};
use crate::start::{spawn, Launch, Popen, StartMethod};
use crate::{sys, wire};

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
}

impl Shared {
    pub(crate) fn new() -> Result<Arc<Shared>> {
        let wake =
            sys::eventfd().map_err(|err| Error::io("cannot create the pool's eventfd", err))?;
        current::register_fd(&wake);
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

/// How the pool starts its workers.
pub(crate) enum Launcher {
    /// `fork`: a zygote forked from the process when the pool was made forks them.
    Zygote(ForkServer),
    /// `forkserver`: the process's fork server.
    ForkServer,
    /// `spawn`: an exec of the binary each.
    Spawn,
}

impl Launcher {
    pub(crate) fn new(method: StartMethod) -> Result<Launcher> {
        Ok(match method {
            StartMethod::Fork => Launcher::Zygote(ForkServer::fork_zygote()?),
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

struct Busy {
    job: u64,
    chunk: u32,
    deadline: Option<Instant>,
}

struct Worker {
    popen: Popen,
    name: String,
    ready: bool,
    open: bool,
    task: Option<Busy>,
    done: u64,
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
        };
        let fds: Vec<RawFd> = self.init_fds.iter().map(AsRawFd::as_raw_fd).collect();
        let popen = self.launcher.launch(launch, &fds)?;
        self.workers.push(Worker {
            popen,
            name,
            ready: false,
            open: true,
            task: None,
            done: 0,
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
            let busy = self.workers.iter().any(|w| w.task.is_some());
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
            if !worker.ready || !worker.open || worker.task.is_some() {
                continue;
            }
            if self.config.maxtasks.is_some_and(|max| worker.done >= max) {
                continue;
            }
            let Some(task) = self.shared.lock().queue.pop_front() else {
                return;
            };
            let header = TaskHeader {
                job: task.job,
                chunk: task.chunk,
                entry: task.entry.to_string(),
                len: task.payload.bytes.len() as u64,
                fds: task.payload.fds.len() as u32,
            };
            let sent = wire::send_with_payload(&worker.popen.control, &header, &task.payload.bytes)
                .and_then(|()| wire::send_fds(&worker.popen.control, &task.payload.raw_fds()));
            match sent {
                Ok(()) => {
                    worker.task = Some(Busy {
                        job: task.job,
                        chunk: task.chunk,
                        deadline: self.task_timeout.and_then(sys::deadline_after),
                    });
                }
                Err(_) => {
                    // The worker is going away; the task was not run: give it to another.
                    worker.open = false;
                    self.shared.lock().queue.push_front(task);
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
        for (worker, exit) in self.workers.iter().zip(&exit_fds) {
            let control = if worker.open {
                worker.popen.control.as_raw_fd()
            } else {
                -1
            };
            fds.push(libc::pollfd {
                fd: control,
                events: libc::POLLIN,
                revents: 0,
            });
            fds.push(libc::pollfd {
                fd: exit.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let deadline = self
            .workers
            .iter()
            .filter_map(|w| w.task.as_ref()?.deadline)
            .min();
        sys::poll_many(&mut fds, deadline)
            .map_err(|err| Error::io("the pool cannot poll its workers", err))?;
        if fds[0].revents != 0 {
            sys::eventfd_drain(self.shared.wake.as_fd());
        }
        let mut exited = Vec::new();
        for (i, pair) in fds[1..].chunks(2).enumerate() {
            if pair[0].revents != 0 {
                self.read_reply(i, None);
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

    /// Reads one reply of worker `i` (waiting at most until `deadline` for it to begin).
    fn read_reply(&mut self, i: usize, deadline: Option<Instant>) -> bool {
        let worker = &mut self.workers[i];
        let reply = match wire::recv::<Reply>(&worker.popen.control, deadline) {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                worker.open = false;
                return false;
            }
            Err(err) if err.kind() == ErrorKind::Timeout => return false,
            Err(err) => {
                worker.open = false;
                let _ = worker.popen.signal(libc::SIGKILL);
                if let Some(busy) = worker.task.take() {
                    let err = Error::new(
                        err.kind(),
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
            Reply::Ready => worker.ready = true,
            Reply::InitFailed(message) => {
                worker.open = false;
                self.shared
                    .mark_broken(Error::new(ErrorKind::InitializerFailed, message));
            }
            Reply::Done {
                job,
                chunk,
                outcome,
                len,
                fds,
            } => {
                let result = match outcome {
                    TaskOutcome::Ok => wire::recv_payload(&worker.popen.control, len, None)
                        .and_then(|bytes| {
                            let fds = wire::recv_fds(&worker.popen.control, fds)?;
                            Ok(Encoded { bytes, fds })
                        }),
                    TaskOutcome::Panicked(panic) => Err(Error::panicked(panic)),
                    TaskOutcome::Failed { codec, message } => {
                        Err(Error::new(TaskOutcome::kind(codec), message))
                    }
                };
                if result
                    .as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::Disconnected)
                {
                    worker.open = false;
                }
                let owned = worker
                    .task
                    .as_ref()
                    .is_some_and(|b| b.job == job && b.chunk == chunk);
                if owned {
                    worker.task = None;
                    worker.done += 1;
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
        while self.workers[i].open && self.read_reply(i, Some(Instant::now())) {}
        let worker = self.workers.swap_remove(i);
        let code = worker.popen.try_reap().ok().flatten();
        if worker.ready {
            self.early_deaths = 0;
        } else {
            // Dead before it could serve: an initializer that exits or crashes, or a worker
            // that cannot start. Replacing it forever would hang every caller (gh-87472).
            self.early_deaths += 1;
            let how = match code {
                Some(n) if n < 0 => format!("was killed by {}", sys::signal_name(-n)),
                Some(n) => format!("exited with code {n}"),
                None => "went away".to_string(),
            };
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
            let how = match code {
                Some(n) if n < 0 => format!("was killed by {}", sys::signal_name(-n)),
                Some(n) => format!("exited with code {n}"),
                None => "went away".to_string(),
            };
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
        for worker in &self.workers {
            worker.popen.reap_by(deadline);
        }
        self.workers.clear();
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
