//! Who this process is: `current_process()`, `parent_process()`, `cpu_count()`, and the
//! per-process state every other module reads (identity counter, descriptors to close in
//! forked children, whether `init()` ran or a child is entered before `main`).

use std::any::Any;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use crate::bootstrap::Launch;
use crate::context::StartMethod;
use crate::error::Result;
use crate::sys;

/// This process as seen by multiproc. Returned by [`current_process`].
#[derive(Debug, Clone)]
pub struct CurrentProcess {
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    start_method: Option<StartMethod>,
}

impl CurrentProcess {
    /// `"MainProcess"` in the main process, the `Process`'s name in a child.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating system's pid of this process.
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Whether this process is daemonic (a daemonic process cannot start children).
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The position in the process tree: `[]` for the main process, `[2]` for `Process-2`,
    /// `[2, 1]` for its first child.
    pub fn identity(&self) -> &[u32] {
        &self.identity
    }

    /// The start method this process was started with (`None` in the main process).
    pub fn start_method(&self) -> Option<StartMethod> {
        self.start_method
    }
}

/// The process that started this one. Returned by [`parent_process`].
#[derive(Debug, Clone)]
pub struct ParentProcess {
    name: String,
    pid: i32,
    control: Arc<UnixStream>,
}

impl ParentProcess {
    /// The parent's name (`"MainProcess"`, `"Process-1"`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parent's pid.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Whether the parent is still alive: its end of our control socket is still open.
    pub fn is_alive(&self) -> bool {
        matches!(
            sys::poll_one(
                self.control.as_fd(),
                sys::PEER_CLOSED,
                Some(std::time::Instant::now())
            ),
            Ok(0)
        )
    }

    /// Waits until the parent has died, at most `timeout`; returns whether it did.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        let seen = sys::poll_one(
            self.control.as_fd(),
            sys::PEER_CLOSED,
            sys::deadline_after(timeout),
        )
        .map_err(|err| crate::Error::io("cannot wait for the parent process", err))?;
        Ok(seen != 0)
    }
}

pub(crate) struct Me {
    pub process: CurrentProcess,
    pub parent: Option<ParentProcess>,
}

fn me_cell() -> &'static Mutex<Me> {
    static ME: Mutex<Me> = Mutex::new(Me {
        process: CurrentProcess {
            name: String::new(),
            identity: Vec::new(),
            daemon: false,
            start_method: None,
        },
        parent: None,
    });
    &ME
}

pub(crate) fn lock_me() -> MutexGuard<'static, Me> {
    let mut me = me_cell().lock().unwrap_or_else(PoisonError::into_inner);
    if me.process.name.is_empty() {
        me.process.name = "MainProcess".to_string();
    }
    me
}

/// This process: its name, pid and daemon flag.
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.pid(), std::process::id());
/// ```
pub fn current_process() -> CurrentProcess {
    lock_me().process.clone()
}

/// The parent of this process, `None` in the main process.
///
/// ```
/// assert!(multiproc::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    lock_me().parent.clone()
}

/// The number of CPUs this process may run on (its affinity mask), at least 1: Python's
/// `os.process_cpu_count()`.
///
/// ```
/// assert!(multiproc::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Who the child described by `launch` is, and its parent, reached through `control`.
pub(crate) fn child_identity(
    launch: &Launch,
    control: Arc<UnixStream>,
) -> (CurrentProcess, ParentProcess) {
    let process = CurrentProcess {
        name: launch.name.clone(),
        identity: launch.identity.clone(),
        daemon: launch.daemon,
        start_method: Some(launch.start_method),
    };
    let parent = ParentProcess {
        name: launch.parent_name.clone(),
        pid: launch.parent_pid,
        control,
    };
    (process, parent)
}

/// Sets who this process is, in a freshly started child; never allocates nor frees.
pub(crate) fn become_child(process: CurrentProcess, parent: ParentProcess) {
    let mut me = lock_me();
    // The values replaced are the parent's, copied by fork (or a fresh process's defaults):
    // forgotten rather than freed. The child ends with `_exit`; freeing them would only write
    // to pages of the allocator that a forked child has to copy first.
    std::mem::forget(std::mem::replace(&mut me.process, process));
    std::mem::forget(me.parent.replace(parent));
    COUNTER.store(1, Ordering::Relaxed);
}

/// A child this process started and has not reaped: a `process::Inner`, which `process`
/// keeps here as `Any` so that the fork path (`start::fork`), below `process`, can hold the
/// list's lock across a fork.
pub(crate) type Child = Arc<dyn Any + Send + Sync>;

static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// Locks the list of started, unreaped children. Never taken while a process's own state lock
/// is held.
pub(crate) fn lock_children() -> MutexGuard<'static, Vec<Child>> {
    CHILDREN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A step of what a child does as it ends (Python's `_exit_function`), in this order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ExitStep {
    /// Terminate the daemonic children, join the others (`process`).
    Children = 0,
    /// Stop the fork server (`start::forkserver`).
    Server = 1,
}

/// The exit steps, each set by the module above this one that has something to end, the
/// first time it has: a child runs them as it ends ([`run_exit_steps`]), without naming the
/// modules that set them. Each is set under a lock that a fork holds (the children's, the fork
/// server client's), so that no fork copies one half set.
static EXIT_STEPS: [OnceLock<fn()>; 2] = [OnceLock::new(), OnceLock::new()];

/// Sets `step` to `f`, if it was not set.
pub(crate) fn on_exit(step: ExitStep, f: fn()) {
    let _ = EXIT_STEPS[step as usize].set(f);
}

/// Runs the exit steps that were set, in order.
pub(crate) fn run_exit_steps() {
    for step in &EXIT_STEPS {
        if let Some(f) = step.get() {
            f();
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(1);

/// The next child number of this process (Python's `_process_counter`), consumed even when the
/// child gets an explicit name.
pub(crate) fn next_child_number() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// The identity and default name of a new child of this process: `Prefix-N`, or
/// `Prefix-1:N` in a child (Python's naming).
pub(crate) fn new_child_identity(me: &CurrentProcess, prefix: &str) -> (Vec<u32>, String) {
    let mut identity = me.identity().to_vec();
    identity.push(next_child_number());
    let suffix: Vec<String> = identity.iter().map(u32::to_string).collect();
    let name = format!("{prefix}-{}", suffix.join(":"));
    (identity, name)
}

/// `spawn` and `forkserver` re-execute this binary, whose child must reach its entry point:
/// before `main` (see `startup`), or in `init()`, which `main` must then call first.
pub(crate) fn require_init(method: StartMethod) -> crate::Result<()> {
    if method == StartMethod::Fork
        || initialized()
        || CHILDREN_ENTER_BEFORE_MAIN.load(Ordering::Relaxed)
    {
        return Ok(());
    }
    Err(crate::Error::new(
        crate::ErrorKind::Bootstrap,
        format!(
            "the {method} start method re-executes this binary, whose children can reach their entry point \
             only through multiproc::init() on this target: call it first in main (or annotate main with \
             #[multiproc::main]); in tests use a harness = false test target"
        ),
    ))
}

static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// Whether a spawned child of this binary reaches its entry point before `main`, with no
/// `init()`: set by the constructor in `startup`.
pub(crate) static CHILDREN_ENTER_BEFORE_MAIN: AtomicBool = AtomicBool::new(false);

#[cfg_attr(not(target_env = "gnu"), allow(dead_code))]
pub(crate) fn set_children_enter_before_main(yes: bool) {
    CHILDREN_ENTER_BEFORE_MAIN.store(yes, Ordering::Relaxed);
}

pub(crate) fn mark_initialized() -> bool {
    INITIALIZED.swap(true, Ordering::SeqCst)
}

pub(crate) fn initialized() -> bool {
    INITIALIZED.load(Ordering::SeqCst)
}

/// Descriptors the library holds for its children and servers. A forked child closes them all
/// at once, so that it never keeps another child's control socket (or the fork server's) open.
///
/// A fork holds this lock while it forks. Descriptors made by a thread that may run beside a
/// fork (the pool's driver thread, and any thread under a permissive `ForkPolicy`) are made
/// and registered under it too ([`registered`]): a child forked meanwhile then either
/// predates them or closes them all. Registering is idempotent (a number is held by one open
/// descriptor at a time), so that a descriptor registered when it was made may be registered
/// again by the handle that takes it over.
static LIBRARY_FDS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

pub(crate) fn lock_library_fds() -> MutexGuard<'static, Vec<RawFd>> {
    LIBRARY_FDS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn add(fds: &mut Vec<RawFd>, raw: RawFd) {
    if !fds.contains(&raw) {
        fds.push(raw);
    }
}

pub(crate) fn register_fd(fd: &impl AsRawFd) {
    add(&mut lock_library_fds(), fd.as_raw_fd());
}

pub(crate) fn unregister_fd(fd: &impl AsRawFd) {
    let raw = fd.as_raw_fd();
    let mut fds = lock_library_fds();
    if let Some(i) = fds.iter().position(|&f| f == raw) {
        fds.swap_remove(i);
    }
}

/// Unregisters `fd` and closes it, under the lock a fork holds while it forks: no fork in
/// another thread sees it unregistered but open (its child would keep it open, and with it a
/// channel's peer or a child's parent alive).
pub(crate) fn close_registered(fd: impl AsRawFd) {
    let mut fds = lock_library_fds();
    let raw = fd.as_raw_fd();
    if let Some(i) = fds.iter().position(|&f| f == raw) {
        fds.swap_remove(i);
    }
    drop(fd);
}

/// A registered descriptor, alone or shared by several handles behind an `Arc` (a child's
/// pidfd): unregistered and closed at once when it goes (see [`close_registered`]).
#[derive(Debug)]
pub(crate) struct SharedRegistered(std::mem::ManuallyDrop<std::os::fd::OwnedFd>);

impl SharedRegistered {
    /// Takes `fd`, which must be registered already (it is made by [`registered`]).
    pub(crate) fn new(fd: std::os::fd::OwnedFd) -> Self {
        SharedRegistered(std::mem::ManuallyDrop::new(fd))
    }
}

impl std::os::fd::AsFd for SharedRegistered {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for SharedRegistered {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Drop for SharedRegistered {
    fn drop(&mut self) {
        // SAFETY: the descriptor is not used again: this is the drop of its owner.
        close_registered(unsafe { std::mem::ManuallyDrop::take(&mut self.0) });
    }
}

/// Runs `make` under the lock a fork holds while it forks, and registers the descriptors
/// `fds_of` names in what it made: no fork in another thread sees them made but unregistered
/// (its child would keep them open, and with them a worker or a channel peer alive). `make`
/// must not take the library's other locks, nor register descriptors itself.
pub(crate) fn registered<T, E>(
    make: impl FnOnce() -> std::result::Result<T, E>,
    fds_of: impl FnOnce(&T) -> Vec<RawFd>,
) -> std::result::Result<T, E> {
    let mut fds = lock_library_fds();
    let made = make()?;
    for raw in fds_of(&made) {
        add(&mut fds, raw);
    }
    Ok(made)
}

/// In a child: the control socket to the parent (pool workers read their tasks from it).
pub(crate) fn parent_control() -> Option<Arc<UnixStream>> {
    lock_me().parent.as_ref().map(|p| p.control.clone())
}
