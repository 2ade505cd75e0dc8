//! Runtime of [multiproc](https://docs.rs/multiproc): use the `multiproc` facade crate instead.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod carrier;
mod channel;
mod child;
pub mod codec;
mod context;
mod current;
mod error;
mod handle;
mod pool;
mod process;
mod registry;
pub mod shared;
mod shm;
mod spare;
mod start;
pub mod sync;
mod sys;
mod wire;

/// The crate that defines [`Pod`](bytemuck::Pod), the bound of [`Value`] and [`Array`]: derive
/// it for your own types with `#[bytemuck(crate = "multiproc::bytemuck")]`.
pub use bytemuck;
pub use channel::{Connection, JoinableQueue, Pipe, Queue, Receiver, Sender, SimpleQueue};
pub use context::{
    force_start_method, get_context, get_start_method, set_start_method, Context,
    DEFAULT_START_METHOD,
};
pub use current::{cpu_count, current_process, parent_process, CurrentProcess, ParentProcess};
pub use error::{Error, ErrorKind, RemotePanic, Result};
pub use handle::SharedFd;
pub use pool::{AsyncResult, Imap, Pool, PoolBuilder};
pub use process::{active_children, wait, Process};
pub use registry::{BuildId, Runnable, Target};
pub use shared::{Array, ArrayGuard, RawArray, RawValue, SharedMemory, Value, ValueGuard};
pub use start::fork::{fork_policy, set_fork_policy};
pub use start::forkserver::{set_forkserver_preload, Preload};
pub use start::spawn::set_executable;
pub use start::{ForkPolicy, StartMethod};
pub use sync::{
    Barrier, BarrierBuilder, BoundedSemaphore, Condition, Event, Lock, LockGuard, RLock,
    RLockGuard, Semaphore, SemaphoreGuard, WaitGuard,
};

/// Not public API. The decoders of what other processes send, for the fuzz harness in
/// `fuzz/` (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "fuzz.rs"]
pub mod __fuzz;

/// Not public API. Used by generated code.
#[doc(hidden)]
pub mod __private {
    pub use crate::carrier::{Bytes, Held, Packed, Plain, Raw};
    pub use crate::registry::Entry;
    pub use inventory;
    pub use serde;

    /// Compile-time check that an argument or result type can cross a process boundary.
    pub const fn assert_data<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static>() {
    }
}

/// Prepares this process for multiproc. Call it first in `main`, or annotate `main` with
/// `#[multiproc::main]`, which does it for you.
///
/// In a child started by the `spawn` or `forkserver` method (the same binary, re-executed),
/// `init()` runs the child's entry point and never returns, so the rest of `main` runs only in
/// the parent. In the parent it registers the exit function (Python's): when `main` returns,
/// daemonic children are terminated and the others joined. Calling it again does nothing.
pub fn init() {
    if current::mark_initialized() {
        return;
    }
    child::enter_if_child();
    // SAFETY: `at_exit` is an `extern "C" fn()` that never unwinds.
    unsafe { libc::atexit(at_exit) };
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(process::shutdown_children);
}
