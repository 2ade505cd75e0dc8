//! Who this process is: `current_process()`, `parent_process()`, `cpu_count()`, and the
//! per-process state every other module reads (identity counter, whether `init()` ran or a
//! child is entered before `main`). The descriptors a forked child closes are `fd`'s.

use std::any::Any;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock, PoisonError};
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

/// Who the child described by `launch` is, and its parent, reached through `control`. The
/// identity and the parent's name are taken out of `launch` (nothing else reads them): two
/// allocations fewer, which a forking parent frees just after the fork (writes to the
/// allocator's pages, which the fork has just made copy-on-write).
pub(crate) fn child_identity(
    launch: &mut Launch,
    control: Arc<UnixStream>,
) -> (CurrentProcess, ParentProcess) {
    let process = CurrentProcess {
        name: launch.name.clone(),
        identity: std::mem::take(&mut launch.identity),
        daemon: launch.daemon,
        start_method: Some(launch.start_method),
    };
    let parent = ParentProcess {
        name: std::mem::take(&mut launch.parent_name),
        pid: launch.parent_pid,
        control,
    };
    (process, parent)
}

/// Sets who this process is, in a freshly started child; never allocates nor frees.
pub(crate) fn become_child(process: CurrentProcess, parent: ParentProcess) {
    // Not `lock_me`, which names a process that has no name yet (a fork server's child finds
    // none) "MainProcess": an allocation, and the allocator's pages to copy, for a name
    // replaced at once.
    let mut me = me_cell().lock().unwrap_or_else(PoisonError::into_inner);
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

/// In a child: the control socket to the parent (pool workers read their tasks from it).
pub(crate) fn parent_control() -> Option<Arc<UnixStream>> {
    lock_me().parent.as_ref().map(|p| p.control.clone())
}

/// Python's exit function: daemonic children terminated, the others joined
/// (`process::shutdown_children`), named by `startup` before any child code runs, so that the
/// code below `process` can register it.
static EXIT_FUNCTION: OnceLock<fn()> = OnceLock::new();

/// Names the exit function (see [`EXIT_FUNCTION`]); the first name stays.
pub(crate) fn set_exit_function(exit: fn()) {
    let _ = EXIT_FUNCTION.set(exit);
}

/// Registers the exit function with `atexit(3)` once: when `main` returns (or `exit` is
/// called), it runs. A spawned child and a fork server register it too (see
/// `child::exit_function_of`).
pub(crate) fn register_exit_function() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: `at_exit` is an `extern "C" fn()` that never unwinds.
        unsafe { libc::atexit(at_exit) };
    });
}

extern "C" fn at_exit() {
    if let Some(&exit) = EXIT_FUNCTION.get() {
        let _ = std::panic::catch_unwind(exit);
    }
}
