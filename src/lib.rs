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
//! #[multiproc::main] // or `multiproc::init()` as the first line of main
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
//! # Daemons and orphans
//!
//! A daemonic process ([`Process::set_daemon`]) cannot start children, is terminated when
//! `main` returns (the others are joined, as in Python), and, unlike in Python, dies with its
//! parent even when the parent is killed with SIGKILL: it watches its control socket.
//!
//! # Serialization
//!
//! Arguments, results and subclass-style values are plain serde data, encoded with bincode
//! (in one module, `codec`). Nothing received can run code. bincode is compact and fast but not
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
//! and result (under `Process`, every `Pool` call, a pool initializer, and every start method)
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
//! carriers below, and applies to `#[process]` functions, not to process types.
//!
//! Byte vectors: serde encodes a `Vec<u8>` one element at a time (~150 MB/s). An argument or a
//! result **written `Vec<u8>`** in a `#[process]` function's signature is recognized and
//! travels as one run of bytes instead; in a pool task or result, one of 16 KiB or more is not
//! even encoded: it is sent from the vector itself and received into the vector the other side
//! gets (GB/s, as fast as the socket). A `Vec<u8>` anywhere else (a field of your struct, an
//! `Option<Vec<u8>>`, a type alias) still goes element by element: mark such fields
//! `#[serde(with = "serde_bytes")]` (or any `serialize_bytes` / `deserialize_byte_buf` pair)
//! for one run of bytes, or pass a [`SharedMemory`] for zero copies.
//!
//! Numbers: when the one argument or the result is **written as a primitive number** (`u8`
//! to `u64`, `i8` to `i64`, `usize`, `isize`, `f32`, `f64`), a chunk of them in a pool task
//! or result travels as the bytes of the numbers in memory: one copy each way, not a serde call
//! per value, and every bit pattern (a NaN's payload, `-0.0`) comes back as it was. An alias,
//! a tuple of numbers or a `bool` is encoded with serde, as anything else.
//!
//! # Testing your own code
//!
//! `spawn` and `forkserver` re-execute the binary, which must call [`init`] first in `main`.
//! libtest's harness owns `main`, so put process tests in a target with `harness = false`:
//!
//! ```toml
//! [[test]]
//! name = "workers"
//! harness = false
//! ```
//!
//! and call `multiproc::init()` first in that file's `main` (libtest-mimic gives you the usual
//! test output; run trials on one thread so `fork` stays allowed). This crate's own
//! `tests/process.rs` is an example.
//!
//! # Platforms
//!
//! Linux 5.3 or later (pidfds). The fork server and spawn rely on `/proc/self/exe`.

pub use multiproc_macros::{main, process};
pub use multiproc_runtime::*;
