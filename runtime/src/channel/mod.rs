//! Channels between processes: [`Pipe`] ([`Connection`], [`Receiver`], [`Sender`]),
//! [`Queue`], [`JoinableQueue`] and [`SimpleQueue`].
//!
//! Every channel carries its items in shared-memory rings (`ring`): a queue has one, a pipe
//! one per direction, in a `memfd` region that travels with the channel like every shared
//! object. Beside the ring, each channel keeps a `SOCK_SEQPACKET` socket pair for what a
//! socket does well: items that carry descriptors, and items large enough to travel in a
//! sealed `memfd` (`record`), go through it, announced by a ring entry that keeps their place
//! in the order; and a pipe end learns from it that its peer is gone. A queue (`core`) is its
//! ring and its socket pair, whose two ends every holder keeps; a joinable queue adds
//! process-shared counters (`joinable`). The socket descriptors are `fd::LibraryFd`s:
//! closed in `fork` children, which get their own copies as arguments.
//!
//! The user-facing design notes (what a dead consumer loses, when an unbounded `put` waits,
//! closing, limits) are in the docs of [`Queue`]; keep them in step with the code.

mod core;
mod joinable;
mod pipe;
mod queue;
pub(crate) mod record;
pub(crate) mod ring;
mod simple;

pub use joinable::JoinableQueue;
pub use pipe::{Connection, Pipe, Receiver, Sender};
pub use queue::Queue;
pub use simple::SimpleQueue;
