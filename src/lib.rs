//! **multiproc**: Python's `multiprocessing`, in Rust. Typed, fast, and safe.
//!
//! ```no_run
//! use multiproc::{current_process, process, Process, StartMethod};
//!
//! #[process]
//! fn spawn_process(i: u32) {
//!     println!("This is process: {i}");
//! }
//!
//! #[process]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct MyProcess {
//!     id: u32,
//! }
//!
//! #[process] // the subclass style: a type with a `run` method
//! impl MyProcess {
//!     fn run(&mut self) {
//!         println!("called run method in process: {}", current_process().name());
//!     }
//! }
//!
//! #[multiproc::main] // optional with glibc (see "Testing your own code"), like `multiproc::init()`
//! fn main() -> multiproc::Result<()> {
//!     assert_eq!(add(2, 3), 5); // an annotated function stays callable
//!     let mut jobs = Vec::new();
//!     for i in 0..3 {
//!         let p = Process::new(spawn_process, i);
//!         p.start()?;
//!         jobs.push(p);
//!     }
//!     for p in jobs {
//!         p.join()?;
//!     }
//!     for id in 0..5 {
//!         let p = Process::from(MyProcess { id }); // named "MyProcess-N", as in Python
//!         p.start()?;
//!         p.join()?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Start methods
//!
//! | method | how | cost | caveats |
//! |---|---|---|---|
//! | [`StartMethod::ForkServer`] (default, as CPython 3.14) | a clean single-threaded server process forks each child | a fork of a small process, plus a round trip | none: safe in a multi-threaded program |
//! | [`StartMethod::Fork`] | `fork(2)` of the caller | the cheapest | refused in a multi-threaded process unless a [`ForkPolicy`] allows it |
//! | [`StartMethod::Spawn`] | fork + exec of `/proc/self/exe` | an exec and the program's start-up | none |
//!
//! Choose globally with [`set_start_method`] (once), per context with [`get_context`], or per
//! process with [`Process::with_start_method`]. A child uses its parent's method for its own
//! children unless told otherwise.
//!
//! # Registration: workers are found by name
//!
//! `#[process]` turns a function into a worker registered (with `inventory`) under the name
//! `module::path::function`, or `name = "..."` given to the attribute. A `spawn` or
//! `forkserver` child is the same binary, started anew: it looks its entry point up **by that
//! name**, never by a code address, so a message can at worst name a registered worker. Parent
//! and child compare a fingerprint of the registry and of the executable first: a child binary
//! that is not the parent's build is a clear [`ErrorKind::BuildMismatch`] in both processes.
//!
//! The code `#[process]` generates for `fn add(a: i64, b: i64) -> i64` is, in substance:
//!
//! ```ignore
//! #[allow(non_camel_case_types)]
//! #[derive(Clone, Copy)]
//! pub struct add;                      // a zero-sized worker value...
//! const _: () = {
//!     fn __multiproc_add(a: i64, b: i64) -> i64 { a + b }
//!     impl Deref for add {             // ...that still calls like the function: add(2, 3)
//!         type Target = fn(i64, i64) -> i64;
//!         fn deref(&self) -> &Self::Target { &(__multiproc_add as fn(i64, i64) -> i64) }
//!     }
//!     impl SealedTarget for add {}    // `Target` is sealed: only `#[process]` implements it
//!     impl multiproc::Target for add {
//!         type Args = (i64, i64);      // one argument: its type; none: ()
//!         type Output = i64;
//!         type ArgsCarrier = Plain;    // how they are encoded: see "Serialization" below
//!         type OutputCarrier = Plain;
//!         const NAME: &'static str = concat!(module_path!(), "::add");
//!         fn call((a, b): (i64, i64)) -> i64 { __multiproc_add(a, b) }
//!     }
//!     inventory::submit! { Entry::target::<add>() }
//! };
//! ```
//!
//! # Panics, exit codes and signals
//!
//! [`Process::exitcode`] follows Python: `0` for a normal return, `1` for a panic (the child
//! prints `Process <name>:` and the panic on its stderr), `n` for `std::process::exit(n)`, `-N`
//! for a death by signal `N`. The parent also reads the panic's message and location
//! ([`Process::remote_panic`]), and [`Process::error`] says in words why a child failed.
//!
//! # Values back
//!
//! [`spawn`] starts a `#[process]` function as `std::thread::spawn` starts a closure, and its
//! [`JoinHandle::join`] returns the function's value, or an [`Error`] that says why there is
//! none: [`ErrorKind::Panicked`] with the [`RemotePanic`], [`ErrorKind::Died`] naming the exit
//! code or the signal. [`ProcessBuilder`] sets the name, start method and daemon flag. Use it
//! when you want a result; use [`Process`] for Python's exit-code semantics.
//!
//! ```no_run
//! use multiproc::process;
//!
//! #[process]
//! fn square(n: u64) -> u64 {
//!     n * n
//! }
//!
//! #[multiproc::main]
//! fn main() -> multiproc::Result<()> {
//!     assert_eq!(multiproc::spawn(square, 7)?.join()?, 49);
//!     Ok(())
//! }
//! ```
//!
//! Built with `panic = "abort"`, a child's panic ends it with SIGABRT before any unwinding;
//! the library's panic hook then sends the message and location to the parent first, so the
//! error still says `panicked at file:line: message` (for a `Process`, a `JoinHandle` and a
//! pool task alike).
//!
//! # Daemons and orphans
//!
//! A daemonic process ([`Process::set_daemon`]) cannot start children, is terminated when
//! `main` returns (the others are joined, as in Python), and, unlike in Python, dies with its
//! parent even when the parent is killed with SIGKILL: it watches its control socket.
//!
//! # Serialization
//!
//! Arguments, results and subclass-style values are plain serde data, encoded with bincode
//! (in one private module). Nothing received can run code. bincode is compact and fast but not
//! self-describing: it writes no field names and no types, and the length of every sequence and
//! map first. So `serde_json::Value`, untagged and internally tagged enums (they ask the format
//! what comes next, `deserialize_any`), `#[serde(flatten)]` (a map whose length is not known in
//! advance) and `#[serde(skip_serializing_if = ...)]` (a field left out would be read as the
//! next one) fail with [`ErrorKind::Codec`], never silently. The error names the worker, your
//! type, and why:
//!
//! ```text
//! cannot decode the arguments of worker `app::summarize`, a `serde_json::value::Value`: bincode
//! is not self-describing, and the type asks the format what comes next (`deserialize_any`), ...;
//! give the worker `#[process(codec = "msgpack")]`, a self-describing encoding that carries such
//! types
//! ```
//!
//! The way out is per worker: `#[process(codec = "msgpack")]` encodes that worker's arguments
//! and result (under `Process`, every `Pool` call, a pool initializer, and every start method),
//! or on an impl block the process type's value (its fields, sent by `Process::from`),
//! as MessagePack with `rmp-serde`, which writes each value's type and each struct as a map of
//! field names, so all of the shapes above round-trip:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! #[serde(untagged)]
//! pub enum Reading {
//!     Number(f64),
//!     Text(String),
//! }
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! pub struct Sample {
//!     id: u32,
//!     #[serde(skip_serializing_if = "Option::is_none", default)]
//!     note: Option<String>,
//!     reading: Reading,
//! }
//!
//! #[multiproc::process(codec = "msgpack")]
//! fn describe(sample: Sample) -> String {
//!     match sample.reading {
//!         Reading::Number(x) => format!("{}: {x}", sample.id),
//!         Reading::Text(t) => format!("{}: {t}", sample.id),
//!     }
//! }
//!
//! # #[multiproc::main]
//! # fn main() -> multiproc::Result<()> {
//! let pool = multiproc::Pool::new(2)?;
//! let samples = vec![
//!     Sample { id: 1, note: None, reading: Reading::Number(2.5) },
//!     Sample { id: 2, note: Some("by hand".into()), reading: Reading::Text("high".into()) },
//! ];
//! assert_eq!(pool.map(describe, samples)?, ["1: 2.5", "2: high"]);
//! # Ok(())
//! # }
//! ```
//!
//! Why MessagePack: it is binary, so byte vectors stay one run of bytes and floats keep every
//! bit (JSON turns NaN into `null` and bytes into lists of numbers), its map keys can be any
//! value (JSON's are strings), and `rmp-serde` is maintained, small, and decodes untrusted
//! input without trusting its lengths. It costs bytes (field names) and time: keep bincode,
//! the default, for workers whose types it carries. No self-describing format tells `None`
//! from `Some(())` or `Some(None)`. `codec = "bincode"` names the default; any other name is a
//! compile error that lists these two. The codec is part of the build's fingerprint, like the
//! carriers below, and applies to `#[process]` functions and process types alike:
//!
//! ```
//! #[derive(serde::Serialize, serde::Deserialize)]
//! pub struct Report {
//!     doc: serde_json::Value,
//! }
//!
//! #[multiproc::process(codec = "msgpack")]
//! impl Report {
//!     fn run(&mut self) {
//!         assert_eq!(self.doc["n"], 3);
//!     }
//! }
//!
//! # #[multiproc::main]
//! # fn main() -> multiproc::Result<()> {
//! let p = multiproc::Process::from(Report { doc: serde_json::json!({ "n": 3 }) });
//! p.start()?;
//! assert_eq!(p.join()?, 0);
//! # Ok(())
//! # }
//! ```
//!
//! Plain old data: serde encodes a `Vec<f64>` or a `Vec<u8>` one element at a time (a few
//! hundred MB/s). When the one argument or the result of a `#[process]` function is a
//! **vector of plain old data** (`Vec<E>` where `E:` [`Pod`]: numbers, arrays of them, your
//! `#[derive(Pod)]` structs) it travels as its bytes instead, one copy each way; a `Vec<u8>`
//! (any element of alignment 1) of 16 KiB or more in a pool task or result is not even
//! copied: it is sent from the vector itself and received into the vector the other side
//! gets. When it **is plain old data** itself (`f64`, `[u16; 3]`, a `Pod` struct), a chunk of
//! `map` items or results travels as their bytes in memory. The type checker decides, not
//! the spelling: a type alias (`type Samples = Vec<f64>`) or a path (`std::vec::Vec`) takes
//! the same way, and every bit pattern (a NaN's payload, `-0.0`) comes back as it was; what
//! arrives is checked (lengths, blocks) and copied into a vector aligned for its type. A
//! tuple of several arguments, or a vector inside another type (a field of your struct, an
//! `Option<Vec<u8>>`), goes through serde: mark byte fields `#[serde(with = "serde_bytes")]`
//! for one run of bytes, or pass a [`SharedMemory`] for zero copies. Two to four primitive
//! numbers as arguments (`starmap` over pairs) or as a result tuple also travel as their
//! bytes.
//!
//! ```
//! use multiproc::{process, Pod, Pool, Zeroable};
//!
//! #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable, serde::Serialize, serde::Deserialize)]
//! #[bytemuck(crate = "multiproc::bytemuck")]
//! #[repr(C)]
//! struct Particle {
//!     pos: [f32; 3],
//!     mass: f32,
//! }
//!
//! type Samples = Vec<f64>;
//!
//! #[process]
//! fn mean(v: Samples) -> f64 {
//!     v.iter().sum::<f64>() / v.len() as f64
//! }
//!
//! #[process]
//! fn heavier(p: Particle) -> Particle {
//!     Particle { mass: p.mass * 2.0, ..p }
//! }
//!
//! # #[multiproc::main]
//! # fn main() -> multiproc::Result<()> {
//! let pool = Pool::new(2)?;
//! assert_eq!(pool.apply(mean, vec![1.0, 2.0, 6.0])?, 3.0);
//! let p = Particle { pos: [0.0; 3], mass: 1.5 };
//! assert_eq!(pool.map(heavier, vec![p; 4])?, vec![Particle { mass: 3.0, ..p }; 4]);
//! # Ok(())
//! # }
//! ```
//!
//! # Synchronization primitives
//!
//! Python's `multiprocessing.synchronize`, at the crate's root:
//!
//! | Python | multiproc | built on |
//! |---|---|---|
//! | `Lock()` | [`Lock`] | a robust mutex: a futex word that holds its owner's thread id |
//! | `RLock()` | [`RLock`] | the same, recursive |
//! | `Semaphore(n)` | [`Semaphore`] | a counter and a futex |
//! | `BoundedSemaphore(n)` | [`BoundedSemaphore`] | the same, with a maximum |
//! | `Event()` | [`Event`] | a flag and a futex |
//! | `Condition(lock)` | [`Condition`] | a [`Lock`], counters and a futex |
//! | `Barrier(parties, action, timeout)` | [`Barrier`] | Python's algorithm on a [`Lock`] and a [`Condition`] |
//!
//! Each object lives in a small anonymous shared memory segment (a `memfd`, freed with its
//! last handle: nothing to clean up in `/dev/shm`). A clone is a cheap handle to the same
//! object, and every type is `Send + Sync + Serialize + Deserialize`: pass it to
//! [`Process::new`](crate::Process::new), to a pool task or initializer, or return it from a
//! task, and the other process maps the same segment (the descriptor travels beside the
//! bytes). Outside such a message (say, encoded to JSON) serialization fails: a descriptor
//! number means nothing elsewhere.
//!
//! The cost: each object holds one descriptor and one mapping in each process that has it
//! (clones share them; every received copy has its own). Thousands of objects at once need a
//! higher `RLIMIT_NOFILE` than the usual 1024.
//!
//! ## When a process dies holding a lock
//!
//! CPython's locks are POSIX semaphores: when a process dies holding one, every other process
//! that wants it waits forever. Here the mutexes are *robust*: a mutex records its owner's
//! thread id, a waiter looks now and then (at least every 50 ms) whether that thread still
//! lives, and when it has ended (even as a zombie nobody reaped yet), the next acquire (of a
//! [`Lock`], [`RLock`], a [`Condition`]'s lock, a [`Value`] or
//! [`Array`]) returns promptly an error of kind [`ErrorKind::OwnerDied`]: "the
//! process that held this lock died; the data it protected may be inconsistent".
//!
//! The error carries no guard: the lock was **released**, so the next
//! acquire succeeds. Only the first acquirer after a death sees the error; repair the
//! protected data then (take the lock again, check, fix), or give up. A [`Barrier`] whose
//! lock owner died breaks ([`ErrorKind::BrokenBarrier`]).
//! Semaphores and events have no owner: a unit held by a dead process is lost, as in Python.
//!
//! The look is by thread id (`kill(tid, 0)` and `/proc/<tid>/stat`), so the processes that
//! share a lock must be in one pid namespace: a holder in another one is known by an id that
//! means another thread, or none, here, and may be taken for dead while it runs. And an owner
//! that died and whose thread id went to a new thread before anybody looked is waited for
//! like a live one (ids are handed out in turn up to `pid_max`).
//!
//! ```no_run
//! use multiproc::{process, ErrorKind, Process, Value};
//!
//! #[process]
//! fn die_holding(counter: Value<i64>) {
//!     let mut n = counter.lock().unwrap();
//!     *n += 1;
//!     std::process::abort(); // killed with the lock held
//! }
//!
//! #[multiproc::main]
//! fn main() -> multiproc::Result<()> {
//!     let counter = Value::new(0i64)?;
//!     let p = Process::new(die_holding, counter.clone());
//!     p.start()?;
//!     p.join()?;
//!     let err = counter.lock().unwrap_err(); // at once, not a hang
//!     assert_eq!(err.kind(), ErrorKind::OwnerDied);
//!     assert_eq!(*counter.lock()?, 1); // released: usable again
//!     Ok(())
//! }
//! ```
//!
//! ## Differences from Python
//!
//! - **Guards.** `acquire` returns a guard that releases on drop (`with lock:`); a timed or
//!   non-blocking acquire returns `Ok(None)` where Python returns `False`. Releasing a lock
//!   twice, or one this thread does not hold, cannot be written (Python raises).
//! - **Owner-bound locks.** A mutex is released by the thread that acquired it (it records its id): lock
//!   guards are not `Send`, and a lock cannot be released by another process. Python's `Lock`
//!   is a semaphore that anyone may release; use a [`Semaphore`] or [`BoundedSemaphore`] (whose
//!   guard has [`forget`](SemaphoreGuard::forget), and whose `release` anyone may call) for
//!   that hand-off.
//! - **Relocking a `Lock`** in the thread that holds it is an
//!   [`ErrorKind::InvalidInput`] error instead of a deadlock.
//! - **`Condition`** uses a [`Lock`] by default (Python: an `RLock`), its `wait` takes and
//!   gives back the guard (std-style), and `notify` may be called without the lock held (it
//!   takes it for the time of the call).
//! - **Owner death** is reported ([`ErrorKind::OwnerDied`]), see
//!   above; CPython hangs.
//! - **Timeouts** are [`Duration`](std::time::Duration)s measured on `CLOCK_MONOTONIC`
//!   (a wall-clock jump does not shorten or stretch them).
//!
//! # Shared state
//!
//! Python's `multiprocessing.sharedctypes` and `multiprocessing.shared_memory`, at the crate's root:
//!
//! | Python | multiproc |
//! |---|---|
//! | `Value('q', 0)` | [`Value::new(0i64)`](Value::new): its own lock; `*v.lock()? += 1` |
//! | `Value('q', 0, lock=False)`, `RawValue('q', 0)` | [`Value::raw(0i64)`](Value::raw): a [`RawValue`], `load()` / `store()`, no lock |
//! | `Array('d', 10)`, `Array('d', [1.0, 2.0])` | [`Array::new(10)`](Array::new), [`Array::from_slice`]: a lock; the guard derefs to `[T]` |
//! | `RawArray('d', 10)` | [`Array::raw(10)`](Array::raw): a [`RawArray`] |
//! | `v.get_lock()` | [`Value::get_lock`], [`Array::get_lock`] (share it with a [`Condition`]) |
//! | `SharedMemory(create=True, size=n)` | [`SharedMemory::new(n)`](SharedMemory::new): anonymous, freed with its last handle |
//! | `SharedMemory(name, create=True, size=n)`, `SharedMemory(name)`, `unlink()` | [`SharedMemory::create_named`], [`SharedMemory::open_named`], [`SharedMemory::unlink`] |
//!
//! Values and arrays hold plain old data ([`bytemuck::Pod`]: integers, floats, arrays of them,
//! `#[repr(C)]` structs of them), the Rust counterpart of ctypes: every bit pattern is valid,
//! so what another process writes can never be undefined behavior here. Derive it for your own
//! types through the re-exported crate:
//!
//! ```
//! use multiproc::bytemuck::{Pod, Zeroable};
//!
//! #[derive(Clone, Copy, Pod, Zeroable)]
//! #[bytemuck(crate = "multiproc::bytemuck")]
//! #[repr(C)]
//! struct Point {
//!     x: f64,
//!     y: f64,
//! }
//!
//! let p = multiproc::Value::new(Point { x: 1.0, y: 2.0 })?;
//! p.lock()?.x += 1.0;
//! assert_eq!(p.get()?.x, 2.0);
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! Like the [synchronization primitives](#synchronization-primitives), every type here is a
//! cheap-to-clone handle that is `Send + Sync + Serialize + Deserialize`: an argument of a
//! `Process` or a pool task, or a task's result, maps the same memory in the other process (zero
//! copy). A process that dies holding the lock of a [`Value`] or [`Array`] makes the next
//! `lock()` return [`ErrorKind::OwnerDied`] (see [above](#when-a-process-dies-holding-a-lock)).
//!
//! The lock protects the data against code that takes it: in this crate, a guard is the only
//! way to the data of a [`Value`] or [`Array`]. The raw kinds copy data in and out with atomic
//! loads and stores instead: sound under concurrent writers, but a value larger than 8 bytes
//! can be read half old, half new (as in Python).
//!
//! # Testing your own code
//!
//! Plain `#[test]`s work with the default harness: no [`init`] and no `#[multiproc::main]`
//! are needed. On glibc a constructor enters a `spawn` or fork-server child before `main`
//! (libtest's, in a test binary), so the child runs its worker and exits without running the
//! test suite; a library that uses a [`Pool`] inside likewise needs nothing from the binaries
//! that depend on it.
//!
//! ```
//! #[multiproc::process]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! # fn main() -> multiproc::Result<()> {
//! // in a #[test], as anywhere else
//! let pool = multiproc::Pool::new(2)?; // forkserver, the default
//! assert_eq!(pool.map(square, [1, 2, 3])?, vec![1, 4, 9]);
//! # Ok(())
//! # }
//! ```
//!
//! `fork` is the exception: libtest runs every test on a thread of its own, so the default
//! [`ForkPolicy::Refuse`] refuses it there with [`ErrorKind::ForkUnsafe`] (see
//! [`ForkPolicy`]). To test the `fork` method itself, use a target with `harness = false`:
//!
//! ```toml
//! [[test]]
//! name = "workers"
//! harness = false
//! ```
//!
//! and run its trials on the main thread (this crate's `tests/process.rs` does, with
//! libtest-mimic). Without glibc, call [`init`] first in `main` for `spawn` and `forkserver`.
//!
//! # Diagnostics
//!
//! What the library says on its own (the warning of `ForkPolicy::Warn`, a pool's zygote
//! forked again under `Warn`, a daemonic child that cannot watch its parent) goes through the
//! [`log`](https://docs.rs/log) crate with the target `multiproc`, so an application routes
//! or silences it like any other library's messages (`env_logger`, or `tracing-subscriber`
//! with its `log` bridge). Without a logger nothing is printed. Two kinds of output stay on
//! standard error, because no logger can exist there yet: a child's own report of a panic or a
//! failed target (`Process Process-1:` and the message, as CPython prints a child's
//! traceback), and a bootstrap refused before the child's entry could run.
//!
//! # Platforms
//!
//! Linux 5.3 or later (pidfds). The fork server and spawn rely on `/proc/self/exe`.

pub use multiproc_macros::{main, process};
pub use multiproc_runtime::*;
