//! Thin safe wrappers over the system calls that need `unsafe`, or that std does not offer.
//!
//! Everything here returns `std::io::Result` and retries `EINTR`. Waits take an optional
//! deadline and block in `poll(2)`: no sleep loops anywhere.

mod fd;
mod memory;
mod poll;
mod process;
mod socket;

pub(crate) use fd::*;
pub(crate) use memory::*;
pub(crate) use poll::*;
pub(crate) use process::*;
pub(crate) use socket::*;
