//! multiproc: Python's `multiprocessing`, in Rust.
pub use multiproc_macros::{main, process};
pub use multiproc_runtime::*;
