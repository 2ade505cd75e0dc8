//! Channels between processes: [`Pipe`] ([`Connection`], [`Receiver`], [`Sender`]),
//! [`Queue`], [`JoinableQueue`] and [`SimpleQueue`].
//!
//! Every channel is a Unix `SOCK_SEQPACKET` socket pair, and every message one record
//! (`record`): the kernel hands a record whole to exactly one reader, so a queue needs no
//! reader lock, and a consumer that dies between two items takes nothing with it. Large
//! messages travel in a sealed `memfd` attached to their record. A queue (`core`) is one
//! socket pair whose two ends every holder keeps; a bounded or joinable queue adds
//! process-shared semaphores (`slots`, `joinable`). The descriptors are `LocalFd`s (`local`):
//! closed in `fork` children, which get their own copies as arguments.
//!
//! The user-facing design notes (what a dead consumer loses, when an unbounded `put` waits,
//! closing, limits) are in the docs of [`Queue`]; keep them in step with the code.

mod core;
mod joinable;
mod local;
mod pipe;
mod queue;
mod record;
mod simple;
mod slots;

pub use joinable::JoinableQueue;
pub use pipe::{Connection, Pipe, Receiver, Sender};
pub use queue::Queue;
pub use simple::SimpleQueue;
