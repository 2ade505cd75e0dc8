//! Shared state: Python's `multiprocessing.sharedctypes` and `multiprocessing.shared_memory`.
//!
//! | Python | multiproc |
//! |---|---|
//! | `Value('q', 0)` | [`Value::new(0i64)`](Value::new): its own lock; `*v.lock()? += 1` |
//! | `Value('q', 0, lock=False)`, `RawValue('q', 0)` | [`Value::raw(0i64)`](Value::raw): a [`RawValue`], `load()` / `store()`, no lock |
//! | `Array('d', 10)`, `Array('d', [1.0, 2.0])` | [`Array::new(10)`](Array::new), [`Array::from_slice`]: a lock; the guard derefs to `[T]` |
//! | `RawArray('d', 10)` | [`Array::raw(10)`](Array::raw): a [`RawArray`] |
//! | `v.get_lock()` | [`Value::get_lock`], [`Array::get_lock`] (share it with a [`Condition`](crate::Condition)) |
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
//! Like the [`sync`](crate::sync) primitives, every type here is a cheap-to-clone handle that
//! is `Send + Sync + Serialize + Deserialize`: an argument of a `Process` or a pool task, or a
//! task's result, maps the same memory in the other process (zero copy). A process that dies
//! holding the lock of a [`Value`] or [`Array`] makes the next `lock()` return
//! [`ErrorKind::OwnerDied`](crate::ErrorKind::OwnerDied) (see [`sync`](crate::sync)).
//!
//! The lock protects the data against code that takes it: in this crate, a guard is the only
//! way to the data of a [`Value`] or [`Array`]. The raw kinds copy data in and out with atomic
//! loads and stores instead: sound under concurrent writers, but a value larger than 8 bytes
//! can be read half old, half new (as in Python).

mod array;
mod block;
mod memory;
mod value;

pub use array::{Array, ArrayGuard, RawArray};
pub use memory::SharedMemory;
pub use value::{RawValue, Value, ValueGuard};
