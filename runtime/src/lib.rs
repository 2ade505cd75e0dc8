//! Runtime of [multiproc](https://docs.rs/multiproc): use the `multiproc` facade crate instead.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// Everything below rests on Linux: children are watched and killed through pidfds
// (`pidfd_open`, `pidfd_send_signal`), sealed memory files are `memfd_create`, descriptors
// travel with `SCM_RIGHTS` over Unix sockets, and the fork start method and the fork server
// rely on Linux's `fork` semantics. Say so once, instead of a page of errors.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "multiproc is Linux-only: it watches and kills child processes through pidfds \
     (pidfd_open, pidfd_send_signal), hands data over in sealed memfd_create files, passes \
     descriptors with SCM_RIGHTS over Unix sockets, and relies on Linux's fork \
     semantics for the fork start method and the fork server; this target is not Linux"
);

mod block;
mod bootstrap;
mod carrier;
mod channel;
mod child;
mod codec;
mod context;
mod current;
mod error;
pub mod executor;
mod fd;
mod handle;
mod join;
mod pool;
mod process;
#[cfg(feature = "progress")]
pub mod progress;
mod registry;
mod shared;
mod shm;
mod spare;
mod start;
mod startup;
mod sync;
mod sys;
mod wire;

/// The crate that defines [`Pod`], the bound of [`Value`] and [`Array`]: derive
/// it for your own types with `#[bytemuck(crate = "multiproc::bytemuck")]`.
pub use bytemuck;
/// Plain old data (the trait and its derive, from [`bytemuck`]): vectors and values of such
/// types travel between processes as their bytes.
pub use bytemuck::{Pod, Zeroable};
pub use channel::{Connection, JoinableQueue, Pipe, Queue, Receiver, Sender, SimpleQueue};
pub use context::{
    force_start_method, get_context, get_start_method, set_start_method, Context, StartMethod,
    DEFAULT_START_METHOD,
};
pub use current::{cpu_count, current_process, parent_process, CurrentProcess, ParentProcess};
pub use error::{Error, ErrorKind, RemotePanic, Result};
pub use executor::{Executor, ExecutorBuilder, TaskFuture};
pub use handle::SharedFd;
pub use join::{spawn, JoinHandle, ProcessBuilder};
pub use pool::{
    check_soft_timeout, soft_timeout_expired, AsyncResult, Imap, ImapStream, Pool, PoolBuilder,
    Progress,
};
pub use process::{active_children, wait, Process};
pub use registry::{Runnable, Target};
pub use shared::{Array, ArrayGuard, RawArray, RawValue, SharedMemory, Value, ValueGuard};
pub use start::fork::{fork_policy, set_fork_policy};
pub use start::forkserver::{set_forkserver_preload, Preload};
pub use start::spawn::set_executable;
pub use start::ForkPolicy;
pub use sync::{
    Barrier, BarrierBuilder, BoundedSemaphore, Condition, Event, Lock, LockGuard, RLock,
    RLockGuard, Semaphore, SemaphoreGuard, WaitGuard, SEM_VALUE_MAX,
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
    pub use crate::carrier::{
        Arg, ArgsSide, Bytes, Choice, Chosen, Held, OutputSide, Packed, Plain, PodItemWay,
        PodVecWay, Probe, Raw, SerdeWay, Split, Way,
    };
    pub use crate::codec::{Compact, SelfDescribing};
    pub use crate::registry::sealed::{SealedRunnable, SealedTarget};
    pub use crate::registry::Entry;
    pub use inventory;
    pub use serde;

    /// Compile-time check that an argument or result type can cross a process boundary.
    pub const fn assert_data<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static>() {
    }

    /// The wire codec and this build's identity, for the tests that forge a bootstrap by hand
    /// (`tests/bootstrap.rs`) to check that a child refuses it.
    pub mod forge {
        pub use crate::registry::BuildId;

        /// Encodes `value` as the library encodes every frame.
        pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> crate::Result<Vec<u8>> {
            crate::codec::encode(value)
        }
    }

    /// The constructor that enters a spawned child before `main`, for the test that calls it
    /// before every registration (`tests/constructor_order.rs`) to check that a child still
    /// finds every worker.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub use crate::startup::constructor::construct as child_constructor;
}

/// Prepares this process for multiproc, if it was not already: call it first in `main`, or
/// annotate `main` with `#[multiproc::main]`, which does it for you. On glibc (the usual
/// `x86_64-unknown-linux-gnu` and `aarch64-unknown-linux-gnu` targets) it is optional: a
/// constructor does the same before `main`, so a plain binary, the user of a library that uses
/// multiproc inside, and a `cargo test` binary need not mention multiproc in `main`.
///
/// In a child started by the `spawn` or `forkserver` method (the same binary, re-executed),
/// the child's entry point runs (before `main`, or in `init()`) and never returns, so the rest
/// of `main` runs only in the parent. In the parent it registers the exit function (Python's):
/// when `main` returns, daemonic children are terminated and the others joined. Calling it
/// again does nothing.
pub fn init() {
    startup::init();
}
