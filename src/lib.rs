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
//! # Daemons and orphans
//!
//! A daemonic process ([`Process::set_daemon`]) cannot start children, is terminated when
//! `main` returns (the others are joined, as in Python), and, unlike in Python, dies with its
//! parent even when the parent is killed with SIGKILL: it watches its control socket.
//!
//! # Serialization
//!
//! Arguments, results and subclass-style values are plain serde data, encoded with bincode
//! (in one private module). Nothing received can run code. bincode is not self-describing:
//! `#[serde(flatten)]`, untagged enums and other attributes that need `deserialize_any` fail
//! with [`ErrorKind::Codec`].
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
