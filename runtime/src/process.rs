//! `Process`: one child process running a `#[process]` function or a subclass-style type.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::bootstrap::{ChildMessage, Launch, ReturnedBytes};
use crate::carrier;
use crate::context::{self, Context, StartMethod};
use crate::current::{self, current_process};
use crate::error::{Error, ErrorKind, RemotePanic, Result};
use crate::handle::Encoded;
use crate::registry::{self, Runnable, Target};
use crate::start::{self, Popen};
use crate::sys;

/// A child process, as Python's `multiprocessing.Process`.
///
/// Made with [`Process::new`] from a `#[process]` function and its arguments, or with
/// [`Process::from`] from a value of a subclass-style type; started with
/// [`start`](Process::start), waited for with [`join`](Process::join).
///
/// ```
/// use multiproc::{process, Process, StartMethod};
///
/// #[process]
/// fn greet(name: String) {
///     println!("hello, {name}");
/// }
///
/// # fn main() -> multiproc::Result<()> {
/// let p = Process::new(greet, "world".to_string()).with_start_method(StartMethod::Fork);
/// p.start()?;
/// assert_eq!(p.join()?, 0);
/// # Ok(())
/// # }
/// ```
///
/// A `Process` keeps Python's semantics: [`join`](Process::join) returns the exit code, a
/// panic is `Ok(1)` (with the panic readable by [`error`](Process::error)), and the target's
/// return value is dropped. To get the value back, with every failure as an `Err`, use
/// [`spawn`](crate::spawn) and its [`JoinHandle`](crate::JoinHandle).
///
/// A `Process` is a handle: clones refer to the same child, and [`active_children`] returns
/// handles too. The builder methods (`with_*`) change only the value they return: called on a
/// process that has clones and has not started, they make it a process of its own. Dropping the last handle of a running child does not stop it (as in Python):
/// the child stays in [`active_children`], is reaped by the next `start` or
/// `active_children` call, and is joined (or terminated, if daemonic) when `main` returns.
#[derive(Clone)]
pub struct Process {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    creator: u32,
    state: Mutex<State>,
}

struct State {
    name: String,
    /// `Process` or the subclass-style type's name, the prefix of the default name.
    type_name: &'static str,
    /// Whether the name was set (else it is the default, `{type_name}-{identity}`).
    renamed: bool,
    identity: Vec<u32>,
    daemon: bool,
    method: Option<StartMethod>,
    entry: &'static str,
    /// The encoded arguments and the descriptors they carry, until `start` has used them;
    /// shared with the copies that builder methods make of a process that has other handles.
    payload: std::result::Result<Arc<Encoded>, String>,
    phase: Phase,
    panic: Option<RemotePanic>,
    failure: Option<(ErrorKind, String)>,
    /// Whether the child sends its target's result back (a [`JoinHandle`](crate::JoinHandle)'s
    /// process), and the result once it has: read when the child is reaped.
    returns: bool,
    returned: Option<Returned>,
}

/// A child's result as it came: the encoded value and the descriptors that came with it.
pub(crate) struct Returned {
    pub value: ReturnedBytes,
    pub fds: Vec<OwnedFd>,
}

enum Phase {
    Initial,
    Starting,
    Running(Popen),
    Stopped { pid: i32, exitcode: i32 },
    Closed,
}

impl Process {
    /// A process that will run `target(args)`: `args` is the argument of a one-argument
    /// function, the tuple of arguments of a function with several, `()` for none. Its name is
    /// `Process-N`; it is daemonic when the current process is.
    ///
    /// The arguments are encoded now; an argument that cannot be encoded makes `start` fail.
    pub fn new<T: Target>(_target: T, args: T::Args) -> Process {
        Process::build("Process", T::NAME, carrier::encode_args::<T>(args))
    }

    fn build(type_name: &'static str, entry: &'static str, payload: Result<Encoded>) -> Process {
        let me = current_process();
        let (identity, name) = current::new_child_identity(&me, type_name);
        Process {
            inner: Arc::new(Inner {
                creator: std::process::id(),
                state: Mutex::new(State {
                    name,
                    type_name,
                    renamed: false,
                    identity,
                    daemon: me.daemon(),
                    method: None,
                    entry,
                    payload: payload.map(Arc::new).map_err(|err| err.chain().to_string()),
                    phase: Phase::Initial,
                    panic: None,
                    failure: None,
                    returns: false,
                    returned: None,
                }),
            }),
        }
    }

    /// Makes the child send its target's result back (before `start`): the process of a
    /// [`JoinHandle`](crate::JoinHandle), which takes it with [`take_returned`](Self::take_returned).
    pub(crate) fn returning(self) -> Process {
        self.lock().returns = true;
        self
    }

    /// The result the child sent back, once it has been reaped; taken once.
    pub(crate) fn take_returned(&self) -> Option<Returned> {
        self.lock().returned.take()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// This handle as a value of its own, for a builder method.
    ///
    /// A builder method changes the value it builds, not other handles: when clones of a process
    /// that has not started exist, this handle becomes a copy of it (same target, arguments and
    /// settings; a new identity, and with it a new default name), which the clones do not see.
    /// A started process is one child whatever its handles, so it stays shared.
    fn detached(self) -> Process {
        if Arc::strong_count(&self.inner) == 1 {
            // No other handle exists, and none can appear: cloning needs this one.
            return self;
        }
        let state = {
            let state = self.lock();
            if !matches!(state.phase, Phase::Initial) {
                None
            } else {
                let (identity, default_name) =
                    current::new_child_identity(&current_process(), state.type_name);
                Some(State {
                    name: if state.renamed {
                        state.name.clone()
                    } else {
                        default_name
                    },
                    type_name: state.type_name,
                    renamed: state.renamed,
                    identity,
                    daemon: state.daemon,
                    method: state.method,
                    entry: state.entry,
                    payload: state.payload.clone(),
                    phase: Phase::Initial,
                    panic: None,
                    failure: None,
                    returns: state.returns,
                    returned: None,
                })
            }
        };
        match state {
            Some(state) => Process {
                inner: Arc::new(Inner {
                    creator: self.inner.creator,
                    state: Mutex::new(state),
                }),
            },
            None => self,
        }
    }

    /// Sets the name (builder style). Clones made before are not renamed (see
    /// [`set_name`](Self::set_name) for that).
    pub fn with_name(self, name: impl Into<String>) -> Process {
        let this = self.detached();
        {
            let mut state = this.lock();
            state.name = name.into();
            state.renamed = true;
        }
        this
    }

    /// Sets the daemon flag (builder style). See [`set_daemon`](Self::set_daemon). Clones made
    /// before keep theirs.
    pub fn with_daemon(self, daemon: bool) -> Process {
        let this = self.detached();
        this.lock().daemon = daemon;
        this
    }

    /// Sets the start method of this process (builder style); without it the global one
    /// ([`get_start_method`](crate::get_start_method)) is used at `start`. Clones made before
    /// keep theirs.
    pub fn with_start_method(self, method: StartMethod) -> Process {
        let this = self.detached();
        this.lock().method = Some(method);
        this
    }

    /// The name: `Process-N`, `TypeName-N`, `Process-1:2` in a child, or the one you set.
    pub fn name(&self) -> String {
        self.lock().name.clone()
    }

    /// Renames the process, for every handle; names need not be unique.
    pub fn set_name(&self, name: impl Into<String>) {
        let mut state = self.lock();
        state.name = name.into();
        state.renamed = true;
    }

    /// Whether the process is daemonic.
    pub fn daemon(&self) -> bool {
        self.lock().daemon
    }

    /// Makes the process daemonic (or not), before `start`. A daemonic process cannot start
    /// children, is terminated when `main` returns, and dies with its parent even when the
    /// parent is killed.
    pub fn set_daemon(&self, daemon: bool) -> Result<()> {
        let mut state = self.lock();
        if !matches!(state.phase, Phase::Initial) {
            return Err(Error::new(
                ErrorKind::AlreadyStarted,
                "process has already started",
            ));
        }
        state.daemon = daemon;
        Ok(())
    }

    /// The start method set for this process, if any.
    pub fn start_method(&self) -> Option<StartMethod> {
        self.lock().method
    }

    /// Starts the child. Once only: a second call fails with [`ErrorKind::AlreadyStarted`].
    ///
    /// Fails with [`ErrorKind::DaemonicChildren`] in a daemonic process, with
    /// [`ErrorKind::NotOwner`] in a process other than the creator, and with the child's own
    /// words when its bootstrap is refused (unknown entry, other build).
    pub fn start(&self) -> Result<()> {
        self.check_owner("can only start a process object created by current process")?;
        let (launch, method, fds) = {
            let mut state = self.lock();
            match state.phase {
                Phase::Initial => {}
                Phase::Closed => return Err(closed()),
                _ => {
                    return Err(Error::new(
                        ErrorKind::AlreadyStarted,
                        "cannot start a process twice",
                    ))
                }
            }
            let me = current_process();
            if me.daemon() {
                return Err(Error::new(
                    ErrorKind::DaemonicChildren,
                    "daemonic processes are not allowed to have children",
                ));
            }
            let (payload, fds) = match &state.payload {
                Ok(encoded) => (encoded.bytes.clone(), encoded.raw_fds()),
                Err(message) => {
                    return Err(Error::new(
                        ErrorKind::Codec,
                        format!("cannot encode the arguments of {}: {message}", state.name),
                    ))
                }
            };
            let method = state.method.unwrap_or_else(context::get_start_method);
            current::require_init(method)?;
            if method != StartMethod::Fork && fds.len() > sys::MAX_FDS {
                // They would travel in one message (a fork child inherits them).
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "the arguments of {} hold {} descriptors: a {method} child receives at \
                         most {}",
                        state.name,
                        fds.len(),
                        sys::MAX_FDS
                    ),
                ));
            }
            let launch = Launch {
                entry: state.entry.to_string(),
                payload,
                name: state.name.clone(),
                identity: state.identity.clone(),
                daemon: state.daemon,
                parent_name: me.name().to_string(),
                // This process's pid, which `check_owner` has just compared with `getpid`:
                // one system call less per start.
                parent_pid: self.inner.creator as i32,
                start_method: method,
                fds: fds.len() as u32,
                returns: state.returns,
            };
            state.phase = Phase::Starting;
            (launch, method, fds)
        };
        cleanup_finished();
        // The descriptors in `fds` stay open (owned by `payload`) until the launch is done.
        let result = match method {
            StartMethod::Fork => registry::lookup(&launch.entry)
                .and_then(|entry| start::fork::launch(launch, entry, &fds)),
            StartMethod::Spawn => start::spawn::launch(launch, &fds),
            StartMethod::ForkServer => start::forkserver::launch_process(launch, &fds),
        };
        match result {
            Ok(popen) => {
                // Listed before it is published as running, so that a reap by another handle
                // (which unlists it) cannot come first.
                let mut children = current::lock_children();
                // Set under the children's lock, which a fork holds (see `current`).
                current::on_exit(current::ExitStep::Children, end_children);
                children.push(self.inner.clone());
                drop(children);
                let mut state = self.lock();
                state.phase = Phase::Running(popen);
                // Python drops the target and arguments once started; so do we (and their
                // descriptors with them).
                state.payload = Err("the arguments were sent to the child".into());
                Ok(())
            }
            Err(err) => {
                self.lock().phase = Phase::Initial;
                Err(err)
            }
        }
    }

    /// Waits until the child exits and returns its exit code, as Python's `join` and
    /// [`exitcode`](Self::exitcode): `Ok(0)` for a normal return, `Ok(1)` for a panic, `Ok(n)`
    /// for `std::process::exit(n)`, `Ok(-N)` for a death by signal `N`. A failed child is not
    /// an `Err` here: read [`error`](Self::error) for why it failed. To get a function's
    /// return value back, with every failure as an `Err`, start it with
    /// [`spawn`](crate::spawn) instead.
    ///
    /// For a child of the `forkserver` start method, when more than one processor is
    /// available, the wait first looks for the child's end awake for up to about a quarter of
    /// a millisecond (yielding the processor between looks), and only then sleeps until the
    /// child ends: a short child joined at once is seen without the cost of waking an idle
    /// core.
    pub fn join(&self) -> Result<i32> {
        self.wait(None).map(|code| code.unwrap_or(-1))
    }

    /// Waits at most `timeout` for the child to exit: `Some(exitcode)` if it did, `None` if it
    /// still runs. Event-driven (the wait ends as soon as the child exits); for a fork
    /// server's child it looks awake first, as [`join`](Self::join) does, for no longer than
    /// `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<Option<i32>> {
        self.wait(Some(
            sys::deadline_after(timeout).unwrap_or_else(far_future),
        ))
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<Option<i32>> {
        self.check_owner("can only join a child process")?;
        let (exit_fd, pid, served) = {
            let state = self.lock();
            match &state.phase {
                Phase::Initial | Phase::Starting => {
                    return Err(Error::new(
                        ErrorKind::NotStarted,
                        "can only join a started process",
                    ))
                }
                Phase::Closed => return Err(closed()),
                Phase::Stopped { exitcode, .. } => return Ok(Some(*exitcode)),
                Phase::Running(popen) => match popen.pid_to_wait().filter(|_| deadline.is_none()) {
                    // A plain join of a forked child: by pid, without the lock (see
                    // `Popen::pid_to_wait`).
                    Some(pid) => (None, pid, false),
                    None => (Some(popen.exit_fd()?), popen.pid, popen.is_served()),
                },
            }
        };
        let Some(exit_fd) = exit_fd else {
            sys::wait_exited(pid).map_err(|err| Error::io("cannot wait for the child", err))?;
            return self.reap_if(true);
        };
        // The end of a fork server's child is looked for awake first (see `sys::LOOK_AWAKE`):
        // it made such a start and join a quarter faster on average. Our own children are
        // waited for asleep: looking awake made no fork start faster on average, it only moved
        // which ones were slow. An error ends the look; the wait reports it.
        if served {
            let look = deadline.map_or(sys::LOOK_AWAKE, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(sys::LOOK_AWAKE)
            });
            sys::look_awake(look, || {
                sys::ready_now(exit_fd.as_fd(), sys::READABLE).unwrap_or(true)
            });
        }
        let ready = sys::poll_one(exit_fd.as_fd(), sys::READABLE, deadline)
            .map_err(|err| Error::io("cannot wait for the child", err))?;
        if ready == 0 {
            return Ok(None);
        }
        self.reap_if(true)
    }

    /// Reaps the child if it has exited; never blocks.
    fn reap(&self) -> Result<Option<i32>> {
        self.reap_if(false)
    }

    /// [`reap`](Self::reap); `exited` says that the child's exit descriptor was just seen
    /// readable.
    fn reap_if(&self, exited: bool) -> Result<Option<i32>> {
        let mut state = self.lock();
        let code = match &state.phase {
            Phase::Running(popen) => match popen.reap_if(exited)? {
                Some(code) => code,
                None => return Ok(None),
            },
            Phase::Stopped { exitcode, .. } => return Ok(Some(*exitcode)),
            // Closed by another handle since the caller looked (a join that waited meanwhile):
            // no code to give, and none to make up (`join` made -1 of it, a SIGHUP).
            Phase::Closed => return Err(closed()),
            Phase::Initial | Phase::Starting => return Ok(None),
        };
        let Phase::Running(popen) = std::mem::replace(&mut state.phase, Phase::Initial) else {
            return Ok(None);
        };
        let (messages, corrupt) = popen.drain_messages();
        if let Some(err) = corrupt {
            state.failure = Some((
                ErrorKind::Codec,
                format!(
                    "the child broke the protocol of its control socket: {}",
                    err.chain()
                ),
            ));
        }
        for (message, fds) in messages {
            match message {
                ChildMessage::Panicked(panic) => state.panic = Some(panic),
                ChildMessage::Failed { kind, message } => state.failure = Some((kind, message)),
                ChildMessage::Returned { value, .. } if state.returns => {
                    state.returned = Some(Returned { value, fds })
                }
                ChildMessage::Returned { .. } | ChildMessage::Ready => {}
            }
        }
        state.phase = Phase::Stopped {
            pid: popen.pid,
            exitcode: code,
        };
        drop(popen);
        drop(state);
        current::lock_children()
            .retain(|c| !std::ptr::addr_eq(Arc::as_ptr(c), Arc::as_ptr(&self.inner)));
        Ok(Some(code))
    }

    /// Whether the child is running (reaps it if it has exited).
    pub fn is_alive(&self) -> bool {
        if std::process::id() != self.inner.creator {
            return false;
        }
        matches!(self.lock().phase, Phase::Running(_)) && matches!(self.reap(), Ok(None))
    }

    /// The child's pid once started.
    pub fn pid(&self) -> Option<u32> {
        match &self.lock().phase {
            Phase::Running(popen) => Some(popen.pid as u32),
            Phase::Stopped { pid, .. } => Some(*pid as u32),
            _ => None,
        }
    }

    /// `None` while the child runs (or before `start`); then `0` for a normal return, `1` for a
    /// panic, `n` for `std::process::exit(n)`, `-N` for a death by signal `N`.
    pub fn exitcode(&self) -> Option<i32> {
        if matches!(self.lock().phase, Phase::Running(_)) {
            self.reap().ok().flatten()
        } else if let Phase::Stopped { exitcode, .. } = self.lock().phase {
            Some(exitcode)
        } else {
            None
        }
    }

    /// The panic of the child, with its message and location, once it has been joined.
    pub fn remote_panic(&self) -> Option<RemotePanic> {
        self.lock().panic.clone()
    }

    /// Why the child failed, once joined: its panic, a refused bootstrap, an argument that did
    /// not decode, a non-zero exit code or a death by signal. `None` if it returned normally
    /// or has not finished.
    pub fn error(&self) -> Option<Error> {
        let state = self.lock();
        let Phase::Stopped { pid, exitcode } = state.phase else {
            return None;
        };
        if let Some(panic) = &state.panic {
            return Some(Error::panicked(panic.clone()));
        }
        if let Some((kind, message)) = &state.failure {
            return Some(Error::new(*kind, message.clone()));
        }
        match exitcode {
            0 => None,
            n if n < 0 => Some(Error::new(
                ErrorKind::Died,
                format!(
                    "process {} (pid {pid}) was killed by {}",
                    state.name,
                    sys::signal_name(-n)
                ),
            )),
            n => Some(Error::new(
                ErrorKind::Died,
                format!("process {} (pid {pid}) exited with code {n}", state.name),
            )),
        }
    }

    /// Sends SIGTERM. Exit handlers and `Drop`s of the child do not run; its own children are
    /// not terminated. A no-op once the child has exited.
    pub fn terminate(&self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL. A no-op once the child has exited.
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Sends SIGINT (Python 3.14's `interrupt`). A no-op once the child has exited.
    pub fn interrupt(&self) -> Result<()> {
        self.signal(libc::SIGINT)
    }

    fn signal(&self, signal: i32) -> Result<()> {
        self.check_owner("can only signal a child process")?;
        match &self.lock().phase {
            Phase::Running(popen) => popen.signal(signal),
            Phase::Stopped { .. } => Ok(()),
            Phase::Closed => Err(closed()),
            Phase::Initial | Phase::Starting => {
                Err(Error::new(ErrorKind::NotStarted, "process not started"))
            }
        }
    }

    /// Releases the process's resources. Fails with [`ErrorKind::StillRunning`] while the child
    /// runs; afterwards every method that returns a `Result` fails with [`ErrorKind::Closed`]
    /// (where Python raises `ValueError`), and those that cannot fail say the child is gone:
    /// [`is_alive`](Self::is_alive) `false`, [`pid`](Self::pid) and
    /// [`exitcode`](Self::exitcode) `None` (the name and daemon flag stay). Idempotent.
    pub fn close(&self) -> Result<()> {
        if matches!(self.lock().phase, Phase::Running(_)) && self.reap()?.is_none() {
            return Err(Error::new(
                ErrorKind::StillRunning,
                "cannot close a process while it is still running; call join() or terminate() first",
            ));
        }
        self.lock().phase = Phase::Closed;
        Ok(())
    }

    /// A descriptor that becomes readable when the child has exited (Python's
    /// `Process.sentinel`): to wait for several children at once, or for a child and anything
    /// else with a descriptor, with [`wait`] or with your own `poll`, `epoll` or async reactor
    /// (`tokio::io::unix::AsyncFd`, say).
    ///
    /// The descriptor is a duplicate that the caller owns. Only wait for it to become readable;
    /// never read from it (for a fork-server child it carries the exit code, which
    /// [`join`](Self::join) reads). A child that has already been reaped gives a descriptor
    /// that is readable at once. Errors: [`ErrorKind::NotStarted`] before `start`,
    /// [`ErrorKind::Closed`] after `close`, [`ErrorKind::NotOwner`] outside the process that
    /// started it.
    ///
    /// ```
    /// use multiproc::{process, Process, StartMethod};
    /// use std::time::Duration;
    ///
    /// #[process]
    /// fn nap(ms: u64) {
    ///     std::thread::sleep(Duration::from_millis(ms));
    /// }
    ///
    /// # fn main() -> multiproc::Result<()> {
    /// let slow = Process::new(nap, 5_000).with_start_method(StartMethod::Fork);
    /// let quick = Process::new(nap, 10).with_start_method(StartMethod::Fork);
    /// slow.start()?;
    /// quick.start()?;
    /// let sentinels = [slow.sentinel()?, quick.sentinel()?];
    /// // The first to end: the quick one.
    /// assert_eq!(multiproc::wait(&sentinels, Some(Duration::from_secs(5)))?, vec![1]);
    /// assert_eq!(quick.join()?, 0);
    /// slow.kill()?;
    /// assert_eq!(slow.join()?, -9);
    /// # Ok(())
    /// # }
    /// ```
    pub fn sentinel(&self) -> Result<OwnedFd> {
        self.check_owner("can only get the sentinel of a child process")?;
        let state = self.lock();
        match &state.phase {
            Phase::Initial | Phase::Starting => Err(Error::new(
                ErrorKind::NotStarted,
                "a process has no sentinel before it is started",
            )),
            Phase::Closed => Err(closed()),
            Phase::Running(popen) => popen
                .exit_fd()?
                .as_fd()
                .try_clone_to_owned()
                .map_err(|err| Error::io("cannot duplicate a child's exit descriptor", err)),
            Phase::Stopped { .. } => {
                // Reaped: a pipe whose write end is closed reads end-of-file, so it is
                // readable for good.
                let (read, write) =
                    sys::pipe().map_err(|err| Error::io("cannot make a sentinel", err))?;
                drop(write);
                Ok(read)
            }
        }
    }

    fn check_owner(&self, message: &str) -> Result<()> {
        if std::process::id() == self.inner.creator {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::NotOwner, message))
        }
    }
}

/// Waits until at least one of `objects` is readable, or `timeout` passes (Python's
/// `multiprocessing.connection.wait`): returns the indices of the readable ones, in order, or
/// none when the time ran out. `objects` are descriptors: [`Process::sentinel`]s, sockets,
/// pipes, anything [`AsFd`]; `timeout: None` waits as long as it takes.
///
/// A descriptor that has hung up or is invalid counts as ready (so that a wait on a dead peer
/// never hangs); a read on it then says why.
///
/// ```
/// use std::time::Duration;
///
/// let (read, write) = std::os::unix::net::UnixStream::pair().unwrap();
/// assert!(multiproc::wait(&[&read], Some(Duration::from_millis(10)))?.is_empty());
/// drop(write); // end of file: readable
/// assert_eq!(multiproc::wait(&[&read], None)?, vec![0]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn wait<F: AsFd>(objects: &[F], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let mut fds: Vec<libc::pollfd> = objects
        .iter()
        .map(|object| libc::pollfd {
            fd: object.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let deadline = timeout.map(|t| sys::deadline_after(t).unwrap_or_else(far_future));
    sys::poll_many(&mut fds, deadline).map_err(|err| Error::io("cannot wait", err))?;
    Ok(fds
        .iter()
        .enumerate()
        .filter(|(_, fd)| fd.revents != 0)
        .map(|(i, _)| i)
        .collect())
}

impl<R: Runnable> From<R> for Process {
    /// A subclass-style process: `value` is sent to the child, which calls its `run`. Its name
    /// is `TypeName-N`, as Python names subclass instances.
    fn from(value: R) -> Process {
        Process::build(R::TYPE_NAME, R::NAME, carrier::encode_runnable(&value))
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        let mut d = f.debug_struct("Process");
        d.field("name", &state.name).field("daemon", &state.daemon);
        match &state.phase {
            Phase::Initial | Phase::Starting => d.field("state", &"initial"),
            Phase::Running(popen) => d.field("state", &"started").field("pid", &popen.pid),
            Phase::Stopped { pid, exitcode } => d
                .field("state", &"stopped")
                .field("pid", pid)
                .field("exitcode", exitcode),
            Phase::Closed => d.field("state", &"closed"),
        };
        d.finish()
    }
}

/// The processes of a [`Context`]: here rather than beside it, since a process builds on the
/// context that chooses its start method.
impl Context {
    /// A process that runs `target(args)` with this context's start method.
    pub fn process<T: Target>(&self, target: T, args: T::Args) -> Process {
        Process::new(target, args).with_start_method(self.start_method())
    }

    /// A subclass-style process with this context's start method.
    pub fn process_from<R: Runnable>(&self, runnable: R) -> Process {
        Process::from(runnable).with_start_method(self.start_method())
    }
}

fn closed() -> Error {
    Error::new(ErrorKind::Closed, "process object is closed")
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(60 * 60 * 24 * 365)
}

fn snapshot() -> Vec<Process> {
    current::lock_children()
        .iter()
        // Every entry is a process's `Inner` (see `current::Child`).
        .filter_map(|child| child.clone().downcast::<Inner>().ok())
        .map(|inner| Process { inner })
        .collect()
}

fn is_running(process: &Process) -> bool {
    matches!(process.lock().phase, Phase::Running(_))
}

/// Reaps the children that have exited (Python's `_cleanup`).
fn cleanup_finished() {
    for process in snapshot() {
        let _ = process.reap();
    }
}

/// The children of this process that are still running (reaps the others first).
///
/// ```
/// assert!(multiproc::active_children().is_empty());
/// ```
pub fn active_children() -> Vec<Process> {
    cleanup_finished();
    snapshot().into_iter().filter(is_running).collect()
}

/// Python's exit function: terminates the daemonic children, joins the others, then stops the
/// fork server. Runs when `main` returns (registered before `main`, or by `init()`) and at the
/// end of every child.
pub(crate) fn shutdown_children() {
    end_children();
    start::forkserver::shutdown();
}

/// The children's part of [`shutdown_children`]: the exit step a child runs for its own
/// children as it ends (`current::run_exit_steps`).
fn end_children() {
    // A child that started no children of its own (the usual case) has nothing to end: no
    // list is built (a forked child, which runs this as it ends, would fault in the code that
    // builds it).
    if current::lock_children().is_empty() {
        return;
    }
    let children = snapshot();
    for process in children.iter().filter(|p| p.daemon()) {
        let _ = process.terminate();
    }
    for process in children.iter().filter(|p| !p.daemon()) {
        let _ = process.join();
    }
    for process in children.iter().filter(|p| p.daemon()) {
        if !matches!(process.join_timeout(Duration::from_secs(2)), Ok(Some(_))) {
            let _ = process.kill();
            let _ = process.join_timeout(Duration::from_secs(2));
        }
    }
}
