//! The one public error type of multiproc.
//!
//! An [`Error`] has a [`kind`](Error::kind) to match on, a lowercase message that says what went
//! wrong and, where there is one, a [`source`](std::error::Error::source) (an I/O error, a codec
//! error). A panic in a child is data ([`RemotePanic`]), a timeout is distinct from a disconnect.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

/// `Result<T, multiproc::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is.
///
/// A kind travels between processes (a child's refused bootstrap, a pool task's failure) as
/// the index of its variant: variants are only ever appended at the end, never reordered nor
/// removed, so that an index keeps its meaning (a unit test pins a few).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `start` was called on a process that was already started.
    AlreadyStarted,
    /// The operation needs a started process (`join`, `terminate`, ...).
    NotStarted,
    /// The object was closed with `close`: a process handle, or a queue in this process
    /// (its `put` and `get` then fail here; other processes are not affected).
    Closed,
    /// `close` was called while the process is still running.
    StillRunning,
    /// A daemonic process tried to start a child process.
    DaemonicChildren,
    /// The operation is allowed only in the process that created the object.
    NotOwner,
    /// The global start method was already set.
    ContextAlreadySet,
    /// `fork` was refused because this process has other threads (see `ForkPolicy`).
    ForkUnsafe,
    /// The child does not know the entry point the parent asked for.
    UnknownEntry,
    /// The child binary is not the parent's build.
    BuildMismatch,
    /// The child could not be started, or its bootstrap failed.
    Bootstrap,
    /// The fork server failed or died.
    ForkServer,
    /// A value failed to encode or a frame failed to decode.
    Codec,
    /// The peer went away (end of file, broken pipe).
    Disconnected,
    /// A bounded wait ran out.
    Timeout,
    /// The code ran in a child and panicked.
    Panicked,
    /// The child process died (killed by a signal or exited) before it finished its work.
    Died,
    /// An argument was out of range, or a call came in the wrong state.
    InvalidInput,
    /// The pool is closed or terminated: it takes no new work.
    NotRunning,
    /// The pool was terminated while this work was pending.
    Terminated,
    /// The pool's initializer failed: the pool cannot run tasks.
    InitializerFailed,
    /// An operating system call failed.
    Io,
    /// A non-blocking receive found nothing to take: `Queue::try_get`, `Connection::try_recv`
    /// (Python's `queue.Empty`). A receive that waited in vain is a [`Timeout`](Self::Timeout).
    Empty,
    /// A non-blocking send found no room: `Queue::try_put` on a full queue (Python's
    /// `queue.Full`). A send that waited in vain is a [`Timeout`](Self::Timeout).
    Full,
    /// The process (or thread) that held a lock died holding it: the data the lock protected
    /// may be inconsistent. The lock was made consistent and released, so the next acquire
    /// succeeds (`Lock`, `RLock`, `Condition`, `Value`, `Array`; CPython would wait forever).
    OwnerDied,
    /// A `Barrier` is broken: it was aborted or reset while this party waited, a wait timed
    /// out, its action failed, or a process died inside it (Python's `BrokenBarrierError`).
    BrokenBarrier,
    /// The work was cancelled before it finished (`AsyncResult::cancel`, `Imap::cancel`, the
    /// executor's `cancel` and `shutdown(cancel_futures)`; Python's `CancelledError`).
    Cancelled,
    /// The task's soft time limit passed ([`PoolBuilder::soft_task_timeout`](crate::PoolBuilder::soft_task_timeout)):
    /// the error of [`check_soft_timeout`](crate::check_soft_timeout), which a task returns to
    /// stop early (billiard's `SoftTimeLimitExceeded`).
    SoftTimeout,
    // New kinds go here, after every other: see the enum's doc.
}

/// A panic that happened in another process, as data: message and location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RemotePanic {
    /// The panic payload when it was a string (`panic!("...")`), else `Box<dyn Any>`. A
    /// message longer than 32 KiB is cut there, with a note of how much was left out (the
    /// child's standard error has it whole).
    pub message: String,
    /// `file:line:column` of the panic, when known.
    pub location: Option<String>,
    /// Name of the process that panicked (`Process-1`, `MyProcess-2`, ...).
    pub process: String,
    /// Pid of the process that panicked.
    pub pid: i32,
}

impl fmt::Display for RemotePanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {} (pid {}) panicked", self.process, self.pid)?;
        if let Some(location) = &self.location {
            write!(f, " at {location}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The error type of every fallible multiproc operation.
pub struct Error {
    kind: ErrorKind,
    message: String,
    panic: Option<Box<RemotePanic>>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a lowercase message.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            panic: None,
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Attaches a cause already boxed.
    pub(crate) fn with_boxed_source(
        mut self,
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    ) -> Self {
        self.source = Some(source);
        self
    }

    /// Takes the cause out, to attach it to an error that explains this one.
    pub(crate) fn take_source(
        &mut self,
    ) -> Option<Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.source.take()
    }

    /// An error that carries a remote panic.
    pub(crate) fn panicked(panic: RemotePanic) -> Self {
        Error {
            kind: ErrorKind::Panicked,
            message: panic.to_string(),
            panic: Some(Box::new(panic)),
            source: None,
        }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The remote panic, when [`kind`](Self::kind) is [`ErrorKind::Panicked`].
    pub fn remote_panic(&self) -> Option<&RemotePanic> {
        self.panic.as_deref()
    }

    /// The message, without the source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// An I/O error with context: `"{context}: {err}"`.
    pub(crate) fn io(context: impl fmt::Display, err: impl Into<io::Error>) -> Self {
        let err = err.into();
        let kind = match err.kind() {
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::UnexpectedEof => ErrorKind::Disconnected,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        };
        Error::new(kind, context.to_string()).with_source(err)
    }

    /// This error's message followed by each of its sources', joined by `": "`: the whole
    /// story as one line, for where an error becomes text (a message to another process, a
    /// serde error, an error built from another's text).
    pub(crate) fn chain(&self) -> Chain<'_> {
        Chain(self)
    }

    /// A copy of this error for a second receiver (the source becomes part of the message).
    pub(crate) fn duplicate(&self) -> Self {
        Error {
            kind: self.kind,
            message: self.chain().to_string(),
            panic: self.panic.clone(),
            source: None,
        }
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Timeout, message)
    }
}

/// An [`Error`] as a serde deserializer's error, its sources included.
pub(crate) fn de_error<E: serde::de::Error>(err: Error) -> E {
    E::custom(err.chain())
}

/// An [`Error`] as a serde serializer's error, its sources included.
pub(crate) fn ser_error<E: serde::ser::Error>(err: Error) -> E {
    E::custom(err.chain())
}

/// The message alone: the source, if any, is [`source`](std::error::Error::source)'s to give
/// (a reporter that walks the chain would print it twice otherwise).
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An error and its sources as one line (see [`Error::chain`]).
pub(crate) struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(panic) = &self.panic {
            d.field("panic", panic);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_leaves_the_source_to_source() {
        let err = Error::io(
            "reading bootstrap",
            io::Error::from(io::ErrorKind::UnexpectedEof),
        );
        assert_eq!(err.kind(), ErrorKind::Disconnected);
        assert_eq!(err.to_string(), "reading bootstrap");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("unexpected end of file"));
        assert_eq!(
            err.chain().to_string(),
            "reading bootstrap: unexpected end of file"
        );
        // Wrapped in another error, as a source: every level once.
        let outer = Error::new(ErrorKind::Bootstrap, "cannot start").with_source(err);
        assert_eq!(outer.to_string(), "cannot start");
        assert_eq!(
            outer.chain().to_string(),
            "cannot start: reading bootstrap: unexpected end of file"
        );
        assert_eq!(outer.duplicate().to_string(), outer.chain().to_string());
    }

    #[test]
    fn remote_panic_is_data() {
        let err = Error::panicked(RemotePanic {
            message: "boom".into(),
            location: Some("src/main.rs:3:5".into()),
            process: "Process-1".into(),
            pid: 42,
        });
        assert_eq!(err.kind(), ErrorKind::Panicked);
        assert_eq!(
            err.to_string(),
            "process Process-1 (pid 42) panicked at src/main.rs:3:5: boom"
        );
        assert_eq!(err.remote_panic().unwrap().message, "boom");
    }
}
