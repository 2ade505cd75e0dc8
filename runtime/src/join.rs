//! [`spawn`], [`ProcessBuilder`] and [`JoinHandle`]: a child process whose function's return
//! value comes back to the parent, in the manner of `std::thread::spawn`.
//!
//! The child runs the `#[process]` function as a [`Process`] does; when the launch asks for it
//! (`Launch::returns`), it sends the result back on its control socket before it exits
//! (`ChildMessage::Returned`): encoded with the function's result carrier, as a pool task's
//! results are, with the descriptors it carries (a returned `Queue`, `SharedMemory`, ...). A
//! small result travels inline; a larger one in a sealed memory file, so that the message
//! always fits in the socket's buffer and the child never waits for its parent to read. The
//! parent reads it when it reaps the child, and [`JoinHandle::join`] decodes it.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::time::Duration;

use crate::bootstrap::ReturnedBytes;
use crate::carrier;
use crate::context::StartMethod;
use crate::error::{Error, ErrorKind, Result};
use crate::handle;
use crate::process::{Process, Returned};
use crate::registry::Target;
use crate::sys;

/// Starts `target(args)` in a child process and returns a handle whose
/// [`join`](JoinHandle::join) gives back the function's return value, as
/// `std::thread::spawn` does for a thread.
///
/// `args` is the argument of a one-argument function, the tuple of arguments of a function with
/// several, `()` for none. The process is named `Process-N` and uses the global start method
/// ([`get_start_method`](crate::get_start_method)); [`ProcessBuilder`] sets a name, a start
/// method or the daemon flag.
///
/// ```
/// use multiproc::{process, ErrorKind};
///
/// #[process]
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// #[process]
/// fn fail(why: String) -> u64 {
///     panic!("{why}");
/// }
///
/// # fn main() -> multiproc::Result<()> {
/// # multiproc::set_start_method(multiproc::StartMethod::Fork)?;
/// assert_eq!(multiproc::spawn(square, 7)?.join()?, 49);
///
/// let err = multiproc::spawn(fail, "no luck".to_string())?.join().unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Panicked);
/// assert_eq!(err.remote_panic().unwrap().message, "no luck");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// Those of [`Process::start`]: an argument that cannot be encoded, a start method that
/// cannot start a child here, a child that refuses its bootstrap.
pub fn spawn<T: Target>(target: T, args: T::Args) -> Result<JoinHandle<T::Output>> {
    ProcessBuilder::new().spawn(target, args)
}

/// Settings of a process started with [`spawn`](ProcessBuilder::spawn), in the style of
/// `std::thread::Builder`.
///
/// ```
/// use multiproc::{process, ProcessBuilder, StartMethod};
///
/// #[process]
/// fn greeting(name: String) -> String {
///     format!("hello, {name}, from {}", multiproc::current_process().name())
/// }
///
/// # fn main() -> multiproc::Result<()> {
/// let handle = ProcessBuilder::new()
///     .name("greeter")
///     .start_method(StartMethod::Fork)
///     .spawn(greeting, "world".to_string())?;
/// assert_eq!(handle.join()?, "hello, world, from greeter");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProcessBuilder {
    name: Option<String>,
    daemon: Option<bool>,
    method: Option<StartMethod>,
}

impl ProcessBuilder {
    /// The default settings: the name `Process-N`, daemonic when the current process is, the
    /// global start method.
    pub fn new() -> ProcessBuilder {
        ProcessBuilder::default()
    }

    /// The process's name (default `Process-N`), as [`Process::with_name`].
    pub fn name(mut self, name: impl Into<String>) -> ProcessBuilder {
        self.name = Some(name.into());
        self
    }

    /// Whether the process is daemonic (default: when the current process is), as
    /// [`Process::set_daemon`]: a daemonic process cannot start children, is terminated when
    /// `main` returns, and dies with its parent.
    pub fn daemon(mut self, daemon: bool) -> ProcessBuilder {
        self.daemon = Some(daemon);
        self
    }

    /// The start method (default: the global one, [`get_start_method`](crate::get_start_method)),
    /// as [`Process::with_start_method`].
    pub fn start_method(mut self, method: StartMethod) -> ProcessBuilder {
        self.method = Some(method);
        self
    }

    /// Starts `target(args)` in a child process with these settings (see [`spawn`]).
    pub fn spawn<T: Target>(self, target: T, args: T::Args) -> Result<JoinHandle<T::Output>> {
        let mut process = Process::new(target, args).returning();
        if let Some(name) = self.name {
            process = process.with_name(name);
        }
        if let Some(daemon) = self.daemon {
            process = process.with_daemon(daemon);
        }
        if let Some(method) = self.method {
            process = process.with_start_method(method);
        }
        process.start()?;
        Ok(JoinHandle {
            process,
            decode: decode::<T>,
            taken: false,
            _output: PhantomData,
        })
    }
}

/// A started child process that hands its function's return value back: made by [`spawn`] or
/// [`ProcessBuilder::spawn`].
///
/// [`join`](Self::join) waits for the child and returns `Ok(value)` when the function
/// returned, or an [`Error`] that says what happened instead:
///
/// | the child | `join()` |
/// |---|---|
/// | returned `value` | `Ok(value)` |
/// | panicked | [`ErrorKind::Panicked`], with the [`RemotePanic`](crate::RemotePanic) (message, location) |
/// | called `std::process::exit(n)`, or was killed by a signal | [`ErrorKind::Died`], naming the code or the signal (`SIGKILL`) |
/// | could not decode its arguments, or encode its result | [`ErrorKind::Codec`] |
///
/// A value that carries descriptors (a [`Queue`](crate::Queue), a
/// [`SharedMemory`](crate::SharedMemory), a [`Pipe`](crate::Pipe) end) comes back with them.
///
/// # `JoinHandle` or `Process`?
///
/// Use a `JoinHandle` when you want what the function computed, and any failure as an `Err`
/// (`spawn(f, x)?.join()?` is the whole error handling). Use a [`Process`] for Python's
/// semantics: [`Process::join`] returns the exit code (`Ok(1)` after a panic), the result of
/// the function is dropped, and subclass-style types can run. A handle's
/// [`process`](Self::process) is an ordinary `Process` for everything else (its pid, name,
/// [`kill`](Process::kill), [`sentinel`](Process::sentinel)).
///
/// # Dropping a handle
///
/// Dropping the handle does not stop the child, as dropping a `std::thread::JoinHandle` does
/// not stop the thread, and as Python does with a `Process` nobody joins: the child runs on
/// and its result is dropped when it ends. A child that has already ended is reaped at once;
/// one still running stays in [`active_children`](crate::active_children), is reaped by the
/// next start or `active_children` call, and is joined (terminated, if daemonic) when `main`
/// returns. No zombie is left behind, and nothing waits for the child in `drop`.
pub struct JoinHandle<R> {
    process: Process,
    decode: fn(Returned) -> Result<R>,
    /// `join_timeout` has returned the value.
    taken: bool,
    _output: PhantomData<fn() -> R>,
}

impl<R> JoinHandle<R> {
    /// Waits for the child to end and returns its function's return value, or the error that
    /// says why there is none (see [`JoinHandle`]).
    pub fn join(mut self) -> Result<R> {
        self.check_not_taken()?;
        self.process.join()?;
        self.outcome()
    }

    /// Waits at most `timeout` for the child to end, then as [`join`](Self::join). When the
    /// child still runs, the error is an [`ErrorKind::Timeout`] and the handle stays usable:
    /// wait again, or [`kill`](Process::kill) its [`process`](Self::process). The wait is
    /// event-driven: it ends as soon as the child does.
    ///
    /// Once the value has been returned, another call fails with [`ErrorKind::InvalidInput`].
    ///
    /// ```
    /// use multiproc::{process, ErrorKind, ProcessBuilder, StartMethod};
    /// use std::time::Duration;
    ///
    /// #[process]
    /// fn slow_square(n: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(300));
    ///     n * n
    /// }
    ///
    /// # fn main() -> multiproc::Result<()> {
    /// let mut handle = ProcessBuilder::new()
    ///     .start_method(StartMethod::Fork)
    ///     .spawn(slow_square, 3)?;
    /// let early = handle.join_timeout(Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(early.kind(), ErrorKind::Timeout);
    /// assert_eq!(handle.join_timeout(Duration::from_secs(30))?, 9);
    /// # Ok(())
    /// # }
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R> {
        self.check_not_taken()?;
        if self.process.join_timeout(timeout)?.is_none() {
            return Err(Error::timeout(format!(
                "process {} (pid {}) did not end within {timeout:?}",
                self.process.name(),
                self.pid()
            )));
        }
        let outcome = self.outcome();
        self.taken = outcome.is_ok();
        outcome
    }

    /// The child process: its pid, name, exit code, and [`kill`](Process::kill),
    /// [`terminate`](Process::terminate), [`sentinel`](Process::sentinel) and the rest.
    /// Joining it there returns the exit code, and leaves the value for this handle.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid().unwrap_or(0)
    }

    /// Whether the child has ended (without waiting; it is then reaped).
    pub fn is_finished(&self) -> bool {
        self.process.exitcode().is_some()
    }

    fn check_not_taken(&self) -> Result<()> {
        if self.taken {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the value of process {} was already returned by join_timeout",
                    self.process.name()
                ),
            ));
        }
        Ok(())
    }

    /// What the reaped child left: its value, else why there is none.
    fn outcome(&mut self) -> Result<R> {
        if let Some(returned) = self.process.take_returned() {
            return (self.decode)(returned);
        }
        if let Some(err) = self.process.error() {
            return Err(err);
        }
        Err(Error::new(
            ErrorKind::Died,
            format!(
                "process {} (pid {}) exited with code {} without returning a value",
                self.process.name(),
                self.pid(),
                self.process.exitcode().unwrap_or(0)
            ),
        ))
    }
}

impl<R> Drop for JoinHandle<R> {
    /// Reaps a child that has already ended; one that still runs is left to run (see
    /// [`JoinHandle`]). Never waits.
    fn drop(&mut self) {
        let _ = self.process.exitcode();
    }
}

impl<R> fmt::Debug for JoinHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("process", &self.process)
            .field("output", &std::any::type_name::<R>())
            .finish()
    }
}

/// Decodes the result a child of `T` sent back, with the descriptors it carries.
fn decode<T: Target>(returned: Returned) -> Result<T::Output> {
    let Returned { value, mut fds } = returned;
    match value {
        ReturnedBytes::Inline(bytes) => handle::with_incoming(fds, || {
            carrier::decode_one::<T::Output, T::OutputCarrier>(&bytes)
        }),
        ReturnedBytes::File { len } => {
            if fds.is_empty() {
                return Err(Error::new(
                    ErrorKind::Codec,
                    "the memory file of a result did not come with it",
                ));
            }
            let file = fds.remove(0);
            let len = usize::try_from(len).map_err(|_| {
                Error::new(
                    ErrorKind::Codec,
                    format!("a result of {len} bytes is too large"),
                )
            })?;
            let mapping = sys::SealedMapping::new(file.as_fd(), len)
                .map_err(|err| Error::io("cannot map the memory file of a result", err))?;
            handle::with_incoming(fds, || {
                carrier::decode_one::<T::Output, T::OutputCarrier>(mapping.bytes())
            })
        }
    }
}
