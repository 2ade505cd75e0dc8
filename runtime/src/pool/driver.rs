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

use std::collections::{HashMap, HashSet, VecDeque};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{JoinHandle, ThreadId};
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
    /// When it was submitted: it fails if no worker could be started for the pool's start
    /// retry limit since then (see [`Driver::fail_if_starved`]).
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
    /// reply to its own (see [`Reply::Done`]).
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
    Zygote(Box<Zygotes>),
    /// `forkserver`: the process's fork server.
    ForkServer,
    /// `spawn`: an exec of the binary each.
    Spawn,
}

impl Launcher {
    pub(crate) fn new(method: StartMethod) -> Result<Launcher> {
        Ok(match method {
            StartMethod::Fork => Launcher::Zygote(Box::new(Zygotes::fork()?)),
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
    /// What the reply must carry back (see [`Shared::ticket`]).
    ticket: u64,
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
    /// When the last bytes of a message not yet whole came (see [`REPLY_STALL`]).
    progress: Option<Instant>,
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

/// How long a pool goes on trying to start workers, while it has none, before the tasks that
/// wait fail (the default of [`PoolBuilder::start_retry_limit`](super::PoolBuilder::start_retry_limit)).
/// The pool itself is not broken: it keeps trying, and serves again once a worker starts.
pub(crate) const START_RETRY_LIMIT: Duration = Duration::from_secs(30);

/// The first wait before a failed start is tried again; it doubles with each failure in a row,
/// up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// How long a reply, once begun, may go without a byte before the worker that sends it is
/// killed as out of protocol. A worker writes its reply in one go; one that stops in the middle
/// is stopped or hung, or its task wrote the start of a message on the socket, which then
/// swallows the real reply and would wait for ever, without a task timeout, for bytes that
/// never come.
pub(crate) const REPLY_STALL: Duration = Duration::from_secs(10);

/// How long the driver, as it exits, waits for each helper thread to finish what it is doing
/// (a start held up by a stalled fork server, say); past that, the helper finishes alone and
/// disposes of what it gets (see [`Helpers`]).
const HELPER_GRACE: Duration = Duration::from_millis(500);

/// What the driver's helper threads hand back to it.
#[derive(Default)]
struct Handoff {
    /// The driver has exited: a helper disposes of what it would hand back.
    closed: bool,
    /// Finished starts: the worker's name, and its process or why it could not start.
    started: Vec<(String, Result<Popen>)>,
    /// Dead workers and their exit codes.
    reaped: Vec<(Worker, Option<i32>)>,
}

/// A worker the driver asks its starter thread for.
struct Order {
    name: String,
    launch: Launch,
}

/// What the reaper thread is given.
enum Corpse {
    /// A worker of the pool that exited: its exit code is read and it goes back to the driver,
    /// which fails its task with that code.
    Worker(Box<Worker>),
    /// A started process the pool does not use: killed and reaped.
    Stray(Popen),
}

/// The driver's two helper threads. The starter starts workers: a fork-server request and a
/// bootstrap handshake wait on other processes (for up to 30 and 60 seconds). The reaper reads
/// the exit codes of dead workers (a fork-server child's comes from the server, which may be
/// slow to give it). What they get comes back through `handoff`, with a wake-up of the driver.
struct Helpers {
    handoff: Arc<Mutex<Handoff>>,
    orders: Option<mpsc::Sender<Order>>,
    corpses: Option<mpsc::Sender<Corpse>>,
    /// Each thread's handle, and a channel that disconnects when it has done its work.
    starter: Option<(JoinHandle<()>, mpsc::Receiver<()>)>,
    reaper: Option<(JoinHandle<()>, mpsc::Receiver<()>)>,
}

impl Helpers {
    fn handoff(&self) -> MutexGuard<'_, Handoff> {
        self.handoff.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Waits at most `grace` for a helper thread to finish, and joins it if it did; otherwise it
/// goes on alone (it holds what it needs, and disposes of what it gets).
fn let_finish(helper: Option<(JoinHandle<()>, mpsc::Receiver<()>)>, grace: Duration) {
    let Some((handle, ended)) = helper else {
        return;
    };
    if let Err(mpsc::RecvTimeoutError::Disconnected) = ended.recv_timeout(grace) {
        // It has done its work and is returning: a short join.
        let _ = handle.join();
    }
}

/// Spawns a thread of the library that counts itself as fork-safe (see
/// `fork::fork_safe_thread`), and returns once it has: a fork right after must not take it for
/// a thread of the user's, nor may a thread of the user's pass for it before it exists.
pub(crate) fn spawn_counted(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let (counted, is_counted) = mpsc::sync_channel::<()>(1);
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _fork_safe = crate::start::fork::fork_safe_thread();
            let _ = counted.send(());
            body()
        })?;
    // An error only if the thread ended without counting itself (it could not).
    let _ = is_counted.recv();
    Ok(handle)
}

/// The starter thread's body: starts the workers it is asked for, one at a time.
fn starter(
    launcher: Arc<Launcher>,
    init_fds: Arc<Vec<OwnedFd>>,
    orders: mpsc::Receiver<Order>,
    handoff: Arc<Mutex<Handoff>>,
    shared: Arc<Shared>,
) {
    let fds: Vec<RawFd> = init_fds.iter().map(AsRawFd::as_raw_fd).collect();
    while let Ok(order) = orders.recv() {
        if handoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed
        {
            break;
        }
        let started = panic::catch_unwind(AssertUnwindSafe(|| launcher.launch(order.launch, &fds)))
            .unwrap_or_else(|payload| {
                Err(Error::new(
                    ErrorKind::Panicked,
                    format!(
                        "starting a worker panicked: {}",
                        crate::child::panic_message(&*payload)
                    ),
                ))
            });
        let mut handed = handoff.lock().unwrap_or_else(PoisonError::into_inner);
        if handed.closed {
            drop(handed);
            if let Ok(popen) = started {
                dispose(popen);
            }
            break;
        }
        handed.started.push((order.name, started));
        drop(handed);
        shared.wake();
    }
}

/// The reaper thread's body: reads the exit code of each dead worker it is given.
fn reaper(corpses: mpsc::Receiver<Corpse>, handoff: Arc<Mutex<Handoff>>, shared: Arc<Shared>) {
    while let Ok(corpse) = corpses.recv() {
        let worker = match corpse {
            Corpse::Stray(popen) => {
                dispose(popen);
                continue;
            }
            Corpse::Worker(worker) => *worker,
        };
        let code = worker.popen.try_reap().ok().flatten();
        let mut handed = handoff.lock().unwrap_or_else(PoisonError::into_inner);
        if handed.closed {
            drop(handed);
            worker.link.mark_buried(code);
            continue;
        }
        handed.reaped.push((worker, code));
        drop(handed);
        shared.wake();
    }
}

/// Kills a started process the pool does not use, and reaps it (on a helper thread: the
/// exit code of a fork-server child may be slow to come).
fn dispose(popen: Popen) {
    let _ = popen.signal(libc::SIGKILL);
    let _ = popen.reap_by(sys::deadline_after(Duration::from_secs(5)));
}

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
    helpers: Helpers,
    /// Starts ordered from the starter thread and not handed back yet.
    starting: usize,
    retry: Retry,
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
    ) -> Result<Driver> {
        let _ = shared.maxtasks.set(config.maxtasks);
        let mut driver = Driver {
            early_deaths: 0,
            shared,
            launcher: Arc::new(launcher),
            method,
            config,
            init_fds: Arc::new(init_fds),
            processes,
            task_timeout,
            start_retry_limit,
            workers: Vec::with_capacity(processes),
            helpers: Helpers {
                handoff: Arc::new(Mutex::new(Handoff::default())),
                orders: None,
                corpses: None,
                starter: None,
                reaper: None,
            },
            starting: 0,
            retry: Retry::default(),
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
        driver.start_helpers()?;
        Ok(driver)
    }

    fn start_helpers(&mut self) -> Result<()> {
        let cannot = |err| Error::io("cannot start the pool's helper threads", err);
        let (orders, incoming) = mpsc::channel();
        let (ended, starter_ended) = mpsc::channel::<()>();
        let (launcher, init_fds) = (self.launcher.clone(), self.init_fds.clone());
        let (handoff, shared) = (self.helpers.handoff.clone(), self.shared.clone());
        let handle = spawn_counted("multiproc-pool-start", move || {
            let _ended = ended;
            starter(launcher, init_fds, incoming, handoff, shared);
        })
        .map_err(cannot)?;
        self.helpers.orders = Some(orders);
        self.helpers.starter = Some((handle, starter_ended));
        let (corpses, incoming) = mpsc::channel();
        let (ended, reaper_ended) = mpsc::channel::<()>();
        let (handoff, shared) = (self.helpers.handoff.clone(), self.shared.clone());
        let handle = spawn_counted("multiproc-pool-reap", move || {
            let _ended = ended;
            reaper(incoming, handoff, shared);
        })
        .map_err(cannot)?;
        self.helpers.corpses = Some(corpses);
        self.helpers.reaper = Some((handle, reaper_ended));
        Ok(())
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
        // (a caller's thread may fork meanwhile); `Link`'s drop unregisters them.
        let handles = current::registered(
            || {
                let control = popen
                    .control
                    .try_clone()
                    .map_err(|err| Error::io("cannot duplicate a worker's socket", err))?;
                Ok::<_, Error>((control, popen.signal_handle()?))
            },
            |(control, pidfd)| vec![control.as_raw_fd(), pidfd.as_raw_fd()],
        );
        let (control, pidfd) = match handles {
            Ok(handles) => handles,
            Err(err) => {
                self.bury_off(Corpse::Stray(popen));
                return Err(err);
            }
        };
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
            progress: None,
        });
        Ok(())
    }

    /// Hands a dead worker, or a process the pool does not use, to the reaper thread; without
    /// one (at build time, in the caller's thread, or if it is gone) does its work here.
    fn bury_off(&mut self, corpse: Corpse) {
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
        let _ = self.shared.driver_thread.set(std::thread::current().id());
        loop {
            self.collect();
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
                return;
            }
            if !broken && (lifecycle == Lifecycle::Running || queued || waiting) {
                self.maintain();
            }
            self.dispatch();
            if queued {
                self.fail_if_starved();
            }
            let busy = self.workers.iter().any(|w| w.task.is_some() || w.lent());
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
        for _ in live..self.processes {
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
                    self.shared.mark_broken(Error::new(
                        err.kind(),
                        format!("cannot start a replacement pool worker: {err}"),
                    ));
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
                last.map(Error::to_string).unwrap_or_default()
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
                ticket: self.shared.ticket(),
                entry: task.entry.to_string(),
            };
            // Without waiting: a worker that stops reading must not stop the driver.
            let sent = wire::try_send_message(&worker.popen.control, &header, &task.payload);
            match sent {
                Ok(unsent) => {
                    worker.task = Some(Busy {
                        job: task.job,
                        chunk: task.chunk,
                        ticket: header.ticket,
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
                .chain(
                    self.workers
                        .iter()
                        .filter(|w| w.open)
                        .filter_map(|w| Some(w.progress? + REPLY_STALL)),
                )
                .chain(self.retry_deadline())
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
        let (received, mid_message) = {
            let mut inbox = worker
                .link
                .inbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let received = inbox.try_recv::<Reply>(&worker.popen.control);
            (received, inbox.mid_message())
        };
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
                self.out_of_protocol(i, ErrorKind::Codec, format!("bad reply: {err}"));
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
                    let err = Error::new(
                        ErrorKind::Died,
                        format!(
                            "pool worker {} (pid {}) went away in the middle of its reply, and is replaced: {err}",
                            worker.name, worker.popen.pid
                        ),
                    );
                    self.shared.deliver(busy.job, busy.chunk, Err(err));
                }
                return false;
            }
        };
        match reply {
            Reply::Ready if !worker.ready() => worker.link.ready.store(true, Ordering::Release),
            Reply::InitFailed(message) if !worker.ready() => {
                // Before `Ready`: its initializer failed, and would fail in every worker.
                worker.open = false;
                self.shared
                    .mark_broken(Error::new(ErrorKind::InitializerFailed, message));
            }
            Reply::Done {
                job,
                chunk,
                ticket,
                outcome,
            } if worker.sending.is_none()
                && worker
                    .task
                    .as_ref()
                    .is_some_and(|b| b.job == job && b.chunk == chunk && b.ticket == ticket) =>
            {
                let result = match outcome {
                    TaskOutcome::Ok => Ok(body),
                    TaskOutcome::Panicked(panic) => Err(Error::panicked(panic)),
                    TaskOutcome::Failed { codec, message } => {
                        Err(Error::new(TaskOutcome::kind(codec), message))
                    }
                };
                worker.task = None;
                worker.link.done.fetch_add(1, Ordering::AcqRel);
                worker.link.state.store(IDLE, Ordering::Release);
                // The worker gets its next task before this result is decoded: decoding
                // (and callbacks) then overlap with the worker's computing.
                self.dispatch();
                self.shared.deliver(job, chunk, result);
            }
            // A second `Ready`, an `InitFailed` after `Ready` (a task can write anything on its
            // worker's socket), a reply to a task the worker does not hold, or one before it
            // has its whole task.
            other => {
                let what = match other {
                    Reply::Ready => "a second `Ready`".to_string(),
                    Reply::InitFailed(_) => "an initializer failure after `Ready`".to_string(),
                    Reply::Done { job, chunk, .. } => {
                        format!("a reply that does not match its task (job {job}, chunk {chunk})")
                    }
                };
                self.out_of_protocol(i, ErrorKind::Codec, what);
                return false;
            }
        }
        true
    }

    /// Worker `i` sent something out of protocol: it is killed (and replaced), and the task it
    /// holds, only that one, fails with an error that names it.
    fn out_of_protocol(&mut self, i: usize, kind: ErrorKind, what: String) {
        let worker = &mut self.workers[i];
        worker.open = false;
        worker.progress = None;
        let _ = worker.popen.signal(libc::SIGKILL);
        // Its task fails here: the burial must not requeue a part still unsent.
        worker.sending = None;
        if let Some(busy) = worker.task.take() {
            let err = Error::new(
                kind,
                format!(
                    "pool worker {} (pid {}) sent a message out of protocol, and was killed and is replaced: {what}",
                    worker.name, worker.popen.pid
                ),
            );
            self.shared.deliver(busy.job, busy.chunk, Err(err));
        }
    }

    /// Worker `i` exited: read what it left; the reaper thread reads its exit code, then
    /// [`buried`](Self::buried) fails the task it held.
    fn bury(&mut self, i: usize) {
        // What a worker lent to a caller left on its socket is the caller's to read.
        while self.workers[i].open && !self.workers[i].lent() && self.read_reply(i) {}
        let mut worker = self.workers.swap_remove(i);
        self.shared
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|l| !Arc::ptr_eq(l, &worker.link));
        if let Some(sending) = worker.sending.take() {
            // It died before it had its whole task, which it did not run: another takes it.
            worker.task = None;
            self.shared.lock().queue.push_front(sending.task);
            self.shared.wake();
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
        for i in 0..self.workers.len() {
            let worker = &self.workers[i];
            if worker.open && worker.progress.is_some_and(|at| at + REPLY_STALL <= now) {
                self.out_of_protocol(
                    i,
                    ErrorKind::Codec,
                    format!("the start of a message, and nothing more for {REPLY_STALL:?}"),
                );
            }
        }
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
            let exit = worker.popen.exit_fd();
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

impl Drop for Driver {
    /// However the driver ends (normally, on an error, by a panic, or never started), its
    /// workers are reaped and whatever still waits fails with a clear error.
    fn drop(&mut self) {
        self.shut_down();
        self.shared.finish();
    }
}
