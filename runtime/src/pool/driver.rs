//! The pool's driver thread: it owns the workers, dispatches queued tasks to idle ones, reads
//! their replies, notices their deaths, enforces task timeouts, and replaces workers.
//!
//! Every dispatched task ends in exactly one delivery: its result, or an error saying why not
//! (the worker died, the task timed out, the pool was terminated). That is what makes a pool
//! that never hangs: CPython loses the task of a dead worker (gh-66587).

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::result::Sink;
use super::worker::{Reply, TaskHeader, TaskOutcome, WorkerConfig, WorkerMain};
use crate::codec;
use crate::current::{self, current_process};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::Target;
use crate::start::forkserver::{self, ForkServer};
use crate::start::{spawn, Launch, Popen, StartMethod};
use crate::{sys, wire};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    Running,
    Closed,
    Terminated,
}

/// One chunk of work: encoded arguments for a registered function.
pub(crate) struct Task {
    pub job: u64,
    pub chunk: u32,
    pub entry: &'static str,
    pub payload: Vec<u8>,
}

pub(crate) struct State {
    pub lifecycle: Lifecycle,
    pub queue: VecDeque<Task>,
    jobs: HashMap<u64, Box<dyn Sink>>,
    forgotten: HashSet<u64>,
    broken: Option<Error>,
    next_job: u64,
}

/// What the pool's handle and its driver share.
pub(crate) struct Shared {
    state: Mutex<State>,
    wake: OwnedFd,
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
                forgotten: HashSet::new(),
                broken: None,
                next_job: 0,
            }),
            wake,
        }))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn wake(&self) {
        sys::eventfd_signal(self.wake.as_fd());
    }

    /// Registers a job; fails its sink and returns the error when the pool takes no work.
    pub(crate) fn register(&self, mut sink: Box<dyn Sink>) -> Result<u64> {
        let mut state = self.lock();
        if let Some(err) = &state.broken {
            let err = err.duplicate();
            drop(state);
            sink.fail(&err);
            return Err(err);
        }
        if state.lifecycle != Lifecycle::Running {
            drop(state);
            let err = Error::new(
                ErrorKind::NotRunning,
                "pool not running (it was closed or terminated)",
            );
            sink.fail(&err);
            return Err(err);
        }
        let job = state.next_job;
        state.next_job += 1;
        state.jobs.insert(job, sink);
        Ok(job)
    }

    /// Queues tasks of a registered job and wakes the driver.
    pub(crate) fn push(&self, tasks: impl IntoIterator<Item = Task>) {
        self.lock().queue.extend(tasks);
        self.wake();
    }

    /// Drops a job (an `imap` iterator dropped early): its queued tasks are discarded and
    /// results still in flight are ignored.
    pub(crate) fn forget(&self, job: u64) {
        let mut state = self.lock();
        state.queue.retain(|t| t.job != job);
        if state.jobs.remove(&job).is_none() {
            state.forgotten.insert(job);
        }
    }

    fn deliver(&self, job: u64, chunk: u32, result: Result<Vec<u8>>) {
        let Some(mut sink) = self.lock().jobs.remove(&job) else {
            return;
        };
        // Outside the lock: decoding and callbacks run here, and a callback may use the pool.
        let complete = sink.deliver(chunk, result);
        let mut state = self.lock();
        if state.forgotten.remove(&job) || complete {
            return;
        }
        state.jobs.insert(job, sink);
    }

    /// Fails every job, queued or running, with `err`.
    fn fail_all(&self, err: &Error) {
        let jobs: Vec<Box<dyn Sink>> = {
            let mut state = self.lock();
            state.queue.clear();
            state.jobs.drain().map(|(_, sink)| sink).collect()
        };
        for mut sink in jobs {
            sink.fail(err);
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

    fn launch(&self, launch: Launch) -> Result<Popen> {
        match self {
            Launcher::Zygote(zygote) => zygote.launch(launch),
            Launcher::ForkServer => forkserver::launch(launch),
            Launcher::Spawn => spawn::launch(launch),
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

pub(crate) struct Driver {
    shared: Arc<Shared>,
    launcher: Launcher,
    method: StartMethod,
    config: WorkerConfig,
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
        processes: usize,
        task_timeout: Option<Duration>,
    ) -> Result<Driver> {
        let mut driver = Driver {
            shared,
            launcher,
            method,
            config,
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
        };
        let popen = self.launcher.launch(launch)?;
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
        loop {
            let (lifecycle, broken, queued) = {
                let state = self.shared.lock();
                (
                    state.lifecycle,
                    state.broken.is_some(),
                    !state.queue.is_empty(),
                )
            };
            if lifecycle == Lifecycle::Terminated {
                self.kill_all();
                self.shared.fail_all(&Error::new(
                    ErrorKind::Terminated,
                    "the pool was terminated",
                ));
                return;
            }
            if !broken && (lifecycle == Lifecycle::Running || queued) {
                self.maintain();
            }
            self.dispatch();
            let busy = self.workers.iter().any(|w| w.task.is_some());
            if lifecycle == Lifecycle::Closed && !busy && (!queued || broken) {
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
                len: task.payload.len() as u64,
            };
            match wire::send_with_payload(&worker.popen.control, &header, &task.payload) {
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
            } => {
                let result = match outcome {
                    TaskOutcome::Ok => wire::recv_payload(&worker.popen.control, len, None),
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
        let deadline = sys::deadline_after(grace);
        for worker in &self.workers {
            worker.popen.reap_by(deadline);
        }
        self.workers.clear();
    }
}
