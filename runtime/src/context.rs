//! Choosing the start method: globally ([`set_start_method`], once), per context
//! ([`get_context`]) or per process ([`Process::with_start_method`]).

use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::{Error, ErrorKind, Result};
use crate::process::Process;
use crate::registry::{Runnable, Target};
use crate::start::StartMethod;

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

    /// A process that runs `target(args)` with this context's start method.
    pub fn process<T: Target>(&self, target: T, args: T::Args) -> Process {
        Process::new(target, args).with_start_method(self.method)
    }

    /// A subclass-style process with this context's start method.
    pub fn process_from<R: Runnable>(&self, runnable: R) -> Process {
        Process::from(runnable).with_start_method(self.method)
    }
}
