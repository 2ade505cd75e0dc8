//! Shared state: Python's `multiprocessing.sharedctypes` and `multiprocessing.shared_memory`.
//!
//! A private module: its types are re-exported at the crate's root, and documented (the table
//! of Python equivalents, plain old data, locking) in the facade's crate docs.

mod array;
mod block;
mod memory;
mod value;

pub use array::{Array, ArrayGuard, RawArray};
pub use memory::SharedMemory;
pub use value::{RawValue, Value, ValueGuard};
