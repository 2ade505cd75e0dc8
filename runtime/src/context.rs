//! Choosing the start method: globally ([`set_start_method`], once), per context
//! ([`get_context`]) or per process ([`Process::with_start_method`](crate::Process::with_start_method)).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// How child processes are started.
///
/// - `Fork`: `fork(2)`; the child is a copy of the parent and runs the target at once. The
///   fastest; refused in a multi-threaded process unless a [`ForkPolicy`](crate::ForkPolicy)
///   allows it.
/// - `Spawn`: fork + exec of `/proc/self/exe`; the child finds its entry point by registered
///   name, the bootstrap data travels on an inherited socket.
/// - `ForkServer` (the default, as CPython 3.14): a single-threaded server process forks each
///   child on request; descriptors travel with `SCM_RIGHTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StartMethod {
    /// `fork(2)` and run the target in the copy.
    ///
    /// A [`Pool`](crate::Pool) with this method forks a zygote of the process when it is built,
    /// and the zygote a spare copy of itself; workers, replacements included, are forked from
    /// the zygote, or from its spare once the zygote has died, and so see the process's memory
    /// as it was at build time. Only if both die is a new zygote forked from the process as it
    /// is then, if the [`ForkPolicy`](crate::ForkPolicy) allows it (see
    /// [`PoolBuilder::start_method`](crate::PoolBuilder::start_method)).
    Fork,
    /// Re-execute the current binary and find the target by name.
    Spawn,
    /// Ask a clean, single-threaded server process to fork the child.
    ///
    /// If the server dies, its children run on; a new server is started for the next child.
    /// A child whose server died still reports its exit code when it ends by returning,
    /// failing, panicking or `std::process::exit` (on glibc); a death by signal then reads 255.
    ForkServer,
}

impl StartMethod {
    /// Python's name for the method: `"fork"`, `"spawn"`, `"forkserver"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        }
    }

    /// All methods, the default first (Python's `get_all_start_methods()`).
    pub fn all() -> [StartMethod; 3] {
        [
            StartMethod::ForkServer,
            StartMethod::Fork,
            StartMethod::Spawn,
        ]
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StartMethod {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fork" => Ok(StartMethod::Fork),
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::ForkServer),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "cannot find context for {s:?}: expected \"fork\", \"spawn\" or \"forkserver\""
                ),
            )),
        }
    }
}

/// 0: not fixed yet; else 1 + the method's index.
static DEFAULT: AtomicU8 = AtomicU8::new(0);

fn encode(method: StartMethod) -> u8 {
    match method {
        StartMethod::Fork => 1,
        StartMethod::Spawn => 2,
        StartMethod::ForkServer => 3,
    }
}

fn decode(value: u8) -> Option<StartMethod> {
    match value {
        1 => Some(StartMethod::Fork),
        2 => Some(StartMethod::Spawn),
        3 => Some(StartMethod::ForkServer),
        _ => None,
    }
}

/// The method used when the default is asked for and none was set: `ForkServer`, as CPython
/// 3.14 on Linux.
pub const DEFAULT_START_METHOD: StartMethod = StartMethod::ForkServer;

/// Sets the start method of every process that does not choose its own. Once only, like
/// Python: a second call (or a call after the default was used) fails with
/// [`ErrorKind::ContextAlreadySet`].
///
/// ```
/// use multiproc::{set_start_method, ErrorKind, StartMethod};
/// set_start_method(StartMethod::Spawn).unwrap();
/// let err = set_start_method(StartMethod::Fork).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::ContextAlreadySet);
/// ```
pub fn set_start_method(method: StartMethod) -> Result<()> {
    DEFAULT
        .compare_exchange(0, encode(method), Ordering::SeqCst, Ordering::SeqCst)
        .map(drop)
        .map_err(|old| {
            Error::new(
                ErrorKind::ContextAlreadySet,
                format!(
                    "context has already been set (to {}); use force_start_method to change it",
                    decode(old).map_or("?", StartMethod::as_str)
                ),
            )
        })
}

/// Sets (or with `None`, resets) the global start method even when it was set before
/// (Python's `set_start_method(method, force=True)`).
pub fn force_start_method(method: Option<StartMethod>) {
    DEFAULT.store(method.map_or(0, encode), Ordering::SeqCst);
}

/// The global start method; asking fixes the default, as in Python.
pub fn get_start_method() -> StartMethod {
    let _ = DEFAULT.compare_exchange(
        0,
        encode(DEFAULT_START_METHOD),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    decode(DEFAULT.load(Ordering::SeqCst)).unwrap_or(DEFAULT_START_METHOD)
}

/// A context: processes made from it use `method` (Python's `get_context("spawn")`).
///
/// ```
/// use multiproc::{get_context, StartMethod};
/// let ctx = get_context(StartMethod::Fork);
/// assert_eq!(ctx.start_method(), StartMethod::Fork);
/// ```
pub fn get_context(method: StartMethod) -> Context {
    Context { method }
}

/// Processes (and later pools) that use one start method. See [`get_context`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

impl Context {
    /// This context's start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    // `process` and `process_from` are in `process`, which builds on this module.
}
