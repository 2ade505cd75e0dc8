//! Start methods: how a child process comes to life.
//!
//! - [`StartMethod::Fork`]: `fork(2)`; the child is a copy of the parent and runs the target at
//!   once, then ends with `_exit`. The fastest, and the only one that needs no `init()`. Unsafe
//!   in a multi-threaded parent: see [`ForkPolicy`].
//! - [`StartMethod::Spawn`]: fork + exec of `/proc/self/exe` (the running binary, even if the
//!   file on disk was replaced). The child finds its entry point by registered name; the
//!   bootstrap data travels on an inherited socket, never in argv.
//! - [`StartMethod::ForkServer`] (the default, as in CPython 3.14): a single-threaded server
//!   process, spawned on first use, forks children on request. Their descriptors travel over a
//!   private socketpair with `SCM_RIGHTS`; the server relays each child's pid and exit status.
//!
//! Every method gives the parent the same handle ([`Popen`]): a pid, a control socket (bootstrap,
//! acknowledgement, panic report; its hang-up tells the child that the parent died) and a
//! descriptor that becomes readable when the child exits.

pub(crate) mod fork;
pub(crate) mod forkserver;
pub(crate) mod spawn;

use std::fmt;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::current::SharedRegistered;
use crate::error::{Error, ErrorKind, RemotePanic, Result};
use crate::registry::BuildId;
use crate::{current, sys, wire};

/// How child processes are started.
///
/// - `Fork`: `fork(2)`; the child is a copy of the parent and runs the target at once. The
///   fastest; refused in a multi-threaded process unless a [`ForkPolicy`] allows it.
/// - `Spawn`: fork + exec of `/proc/self/exe`; the child finds its entry point by registered
///   name, the bootstrap data travels on an inherited socket.
/// - `ForkServer` (the default, as CPython 3.14): a single-threaded server process forks each
///   child on request; descriptors travel with `SCM_RIGHTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// `fork(2)` and run the target in the copy.
    Fork,
    /// Re-execute the current binary and find the target by name.
    Spawn,
    /// Ask a clean, single-threaded server process to fork the child.
    ForkServer,
}

impl StartMethod {
    /// Python's name for the method: `"fork"`, `"spawn"`, `"forkserver"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        }
    }

    /// All methods, the default first (Python's `get_all_start_methods()`).
    pub fn all() -> [StartMethod; 3] {
        [
            StartMethod::ForkServer,
            StartMethod::Fork,
            StartMethod::Spawn,
        ]
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StartMethod {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fork" => Ok(StartMethod::Fork),
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::ForkServer),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "cannot find context for {s:?}: expected \"fork\", \"spawn\" or \"forkserver\""
                ),
            )),
        }
    }
}

/// What [`StartMethod::Fork`] does when this process has more than one thread.
///
/// A forked child holds a copy of every lock as it was at the moment of the fork: a lock that
/// another thread held (stdout, a `Mutex` of yours, a runtime's) stays locked forever in the
/// child, which then deadlocks. CPython 3.12 only warns; multiproc refuses by default and tells
/// you to use `ForkServer` or `Spawn`, which are safe in any program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForkPolicy {
    /// Fail `start` with [`ErrorKind::ForkUnsafe`] (the default).
    #[default]
    Refuse,
    /// Print a warning to stderr (once) and fork anyway, as CPython 3.12 does.
    Warn,
    /// Fork silently: you have checked that no other thread holds a lock the child needs.
    Allow,
}

/// What a child needs to run: its entry point, its arguments and who it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Launch {
    pub entry: String,
    pub payload: Vec<u8>,
    pub name: String,
    pub identity: Vec<u32>,
    pub daemon: bool,
    pub parent_name: String,
    pub parent_pid: i32,
    pub start_method: StartMethod,
    /// How many descriptors the payload carries: they follow the bootstrap frames in one
    /// `SCM_RIGHTS` message (spawn, forkserver), or are inherited (fork).
    pub fds: u32,
}

/// The second frame on a control socket, parent to child (spawn and forkserver); the first is
/// the parent's [`BuildId`], so that a child of another build can say so before decoding more.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Role {
    /// Run an entry point.
    Run(Launch),
    /// Become the fork server of the parent, after making these calls once.
    ForkServer {
        preload: Vec<forkserver::PreloadCall>,
    },
}

/// Frames from child to parent on the control socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ChildMessage {
    /// The bootstrap was accepted; the entry point is about to run.
    Ready,
    /// The bootstrap was refused.
    Failed { kind: FailKind, message: String },
    /// The target panicked.
    Panicked(RemotePanic),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum FailKind {
    UnknownEntry,
    BuildMismatch,
    Bootstrap,
    Codec,
}

// The largest frames the bootstrap allows (see `wire::Frame`): a declared length above them
// is a corrupt stream, refused before anything is allocated.

/// A role carries the target's encoded arguments (or the preload calls'): 4 GiB, the largest
/// input the codec decodes with its lengths checked. Larger arguments are refused when sent.
impl wire::Frame for Role {
    const MAX_LEN: u64 = 4 << 30;
}

/// A child's messages are small but for a failure's or a panic's text: 64 MiB, as much as the
/// header of a pool's reply, which carries the same reports.
impl wire::Frame for ChildMessage {
    const MAX_LEN: u64 = 64 << 20;
}

impl From<FailKind> for ErrorKind {
    fn from(kind: FailKind) -> Self {
        match kind {
            FailKind::UnknownEntry => ErrorKind::UnknownEntry,
            FailKind::BuildMismatch => ErrorKind::BuildMismatch,
            FailKind::Bootstrap => ErrorKind::Bootstrap,
            FailKind::Codec => ErrorKind::Codec,
        }
    }
}

/// How long a parent waits for a spawned child to acknowledge its bootstrap.
pub(crate) const BOOTSTRAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Exit code of a child whose bootstrap failed (EX_SOFTWARE).
pub(crate) const EXIT_BOOTSTRAP_FAILED: i32 = 70;

/// Exit code reported for a fork-server child whose server died before it could say (as CPython).
pub(crate) const EXIT_SERVER_DIED: i32 = 255;

/// How long the fork server has to report the exit code of a child seen to have ended.
const STATUS_WAIT: Duration = Duration::from_secs(5);

/// The parent's handle on a started child.
pub(crate) struct Popen {
    pub pid: i32,
    /// Dropped by hand, with its registration (see `Drop`).
    pub control: ManuallyDrop<UnixStream>,
    waiter: Waiter,
    /// The exit code once reaped: a pid is waited for exactly once.
    exitcode: OnceLock<i32>,
}

enum Waiter {
    /// Our own child (fork, spawn): a pidfd, and `waitpid` reaps it.
    Direct { pidfd: Arc<SharedRegistered> },
    /// A fork-server child: `pidfd` (from the server) says when it has ended, whether or not
    /// the server still runs, and lets us signal it without racing pid reuse; the server then
    /// writes its exit code on `status`.
    Server {
        status: SharedRegistered,
        pidfd: Arc<SharedRegistered>,
    },
}

impl Popen {
    /// The handle on our own child `pid`. If the kernel cannot give a pidfd, the child is
    /// killed and reaped: a child we cannot wait for without racing is not kept.
    pub(crate) fn direct(pid: i32, control: UnixStream) -> Result<Popen> {
        let pidfd = match current::registered(
            || sys::pidfd_open(pid),
            |pidfd| vec![pidfd.as_raw_fd(), control.as_raw_fd()],
        ) {
            Ok(pidfd) => pidfd,
            Err(err) => {
                // Registered where it was made, perhaps.
                current::unregister_fd(&control);
                // SAFETY: `pid` is our unreaped child, so the pid cannot have been recycled.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = sys::wait_child(pid, false);
                return Err(Error::io(format!("pidfd_open({pid})"), err));
            }
        };
        Ok(Popen {
            pid,
            control: ManuallyDrop::new(control),
            waiter: Waiter::Direct {
                pidfd: Arc::new(SharedRegistered::new(pidfd)),
            },
            exitcode: OnceLock::new(),
        })
    }

    /// The handle on a child of the fork server.
    pub(crate) fn served(pid: i32, control: UnixStream, status: OwnedFd, pidfd: OwnedFd) -> Popen {
        current::register_fd(&control);
        current::register_fd(&status);
        current::register_fd(&pidfd);
        Popen {
            pid,
            control: ManuallyDrop::new(control),
            waiter: Waiter::Server {
                status: SharedRegistered::new(status),
                pidfd: Arc::new(SharedRegistered::new(pidfd)),
            },
            exitcode: OnceLock::new(),
        }
    }

    /// The descriptor that becomes readable when the child has exited: its pidfd.
    pub(crate) fn exit_fd(&self) -> Arc<SharedRegistered> {
        match &self.waiter {
            Waiter::Direct { pidfd } | Waiter::Server { pidfd, .. } => pidfd.clone(),
        }
    }

    /// The exit code if the child has exited; never blocks for long (a child whose exit
    /// descriptor is readable is already dead).
    pub(crate) fn try_reap(&self) -> Result<Option<i32>> {
        self.reap_if(false)
    }

    /// [`try_reap`](Self::try_reap); `exited` says that the exit descriptor was just seen
    /// readable, which spares a `poll(2)`.
    pub(crate) fn reap_if(&self, exited: bool) -> Result<Option<i32>> {
        if let Some(code) = self.exitcode.get() {
            return Ok(Some(*code));
        }
        if !exited {
            let fd = self.exit_fd();
            let ready = sys::poll_one(fd.as_fd(), sys::READABLE, Some(Instant::now()))
                .map_err(|err| Error::io("cannot poll a child's exit descriptor", err))?;
            if ready == 0 {
                return Ok(None);
            }
        }
        let code = match &self.waiter {
            Waiter::Direct { .. } => sys::wait_child(self.pid, false)
                .map_err(|err| Error::io(format!("waitpid({})", self.pid), err))?,
            Waiter::Server { status, .. } => {
                // It has ended; the server reaps it and writes the code at once, unless the
                // server died first (end of file): then the code is lost, as in CPython.
                let said = sys::poll_one(
                    status.as_fd(),
                    sys::READABLE,
                    sys::deadline_after(STATUS_WAIT),
                )
                .unwrap_or(0);
                let mut code = [0u8; 4];
                match said {
                    0 => Some(EXIT_SERVER_DIED),
                    _ => match sys::read_full(status.as_fd(), &mut code) {
                        Ok(4) => Some(i32::from_le_bytes(code)),
                        _ => Some(EXIT_SERVER_DIED),
                    },
                }
            }
        };
        if let Some(code) = code {
            let _ = self.exitcode.set(code);
        }
        Ok(code)
    }

    /// A duplicate of the descriptor through which the child is signalled (its pidfd).
    pub(crate) fn signal_handle(&self) -> Result<OwnedFd> {
        let pidfd = match &self.waiter {
            Waiter::Direct { pidfd } => pidfd.as_fd(),
            Waiter::Server { pidfd, .. } => pidfd.as_fd(),
        };
        pidfd
            .try_clone_to_owned()
            .map_err(|err| Error::io("cannot duplicate a pidfd", err))
    }

    /// Sends `signal` to the child; a child that already exited is not an error.
    pub(crate) fn signal(&self, signal: i32) -> Result<()> {
        let pidfd = match &self.waiter {
            Waiter::Direct { pidfd } => pidfd.as_fd(),
            Waiter::Server { pidfd, .. } => pidfd.as_fd(),
        };
        sys::pidfd_send_signal(pidfd, signal).map_err(|err| {
            Error::io(
                format!("cannot send signal {signal} to pid {}", self.pid),
                err,
            )
        })
    }

    /// Reads the messages the child left on the control socket, without blocking; and the
    /// error that stopped the reading if the child wrote something that is no message (a
    /// message cut short by the child's death is not reported).
    pub(crate) fn drain_messages(&self) -> (Vec<ChildMessage>, Option<Error>) {
        let mut out = Vec::new();
        loop {
            match wire::recv::<ChildMessage>(&self.control, Some(Instant::now())) {
                Ok(Some(msg)) => out.push(msg),
                Err(err) if err.kind() == ErrorKind::Codec => return (out, Some(err)),
                Ok(None) | Err(_) => return (out, None),
            }
        }
    }

    /// Parent side of the bootstrap handshake (spawn, forkserver): sends the build identity and
    /// the role, waits for `Ready`. On failure the child is reaped and the error says what the
    /// child said.
    pub(crate) fn handshake(&self, build: &BuildId, role: &Role, fds: &[RawFd]) -> Result<()> {
        // Bounded as a whole: a child that stops reading (or answering) fails its start
        // instead of holding the parent, or the pool's thread, for good.
        let deadline = sys::deadline_after(BOOTSTRAP_TIMEOUT);
        let sent = wire::send_until(&self.control, build, deadline)
            .and_then(|()| wire::send_until(&self.control, role, deadline))
            .and_then(|()| wire::send_fds_until(&self.control, fds, deadline));
        let reply = wire::recv::<ChildMessage>(&self.control, deadline);
        let failure = match (sent, reply) {
            (Ok(()), Ok(Some(ChildMessage::Ready))) => return Ok(()),
            (_, Ok(Some(ChildMessage::Failed { kind, message }))) => Error::new(kind.into(), message),
            (_, Err(err)) if err.kind() == ErrorKind::Timeout => {
                let _ = self.signal(libc::SIGKILL);
                Error::new(
                    ErrorKind::Bootstrap,
                    format!("the child (pid {}) did not answer its bootstrap within {BOOTSTRAP_TIMEOUT:?}", self.pid),
                )
            }
            (Err(err), _) => err,
            (Ok(()), Ok(Some(other))) => {
                Error::new(ErrorKind::Bootstrap, format!("unexpected bootstrap reply {other:?}"))
            }
            (Ok(()), Ok(None)) => Error::new(
                ErrorKind::Bootstrap,
                "the child exited during its bootstrap (was `multiproc::init()` called first in main?)",
            ),
            (Ok(()), Err(err)) => err,
        };
        Err(self.fail_and_reap(failure))
    }

    /// Reaps a child whose start failed and adds its exit code to `err`.
    pub(crate) fn fail_and_reap(&self, err: Error) -> Error {
        match self.reap_by(sys::deadline_after(Duration::from_secs(5))) {
            Some(code) => Error::new(
                err.kind(),
                format!(
                    "{} (child pid {} exited with code {code})",
                    err.message(),
                    self.pid
                ),
            ),
            None => err,
        }
    }

    /// Waits for the child to exit until `deadline`, then kills it (SIGKILL) and waits a few
    /// more seconds; reaps it. Returns its exit code, `None` if it could not be reaped.
    pub(crate) fn reap_by(&self, deadline: Option<Instant>) -> Option<i32> {
        let exit = self.exit_fd();
        if sys::poll_one(exit.as_fd(), sys::READABLE, deadline).unwrap_or(0) == 0 {
            let _ = self.signal(libc::SIGKILL);
            let _ = sys::poll_one(
                exit.as_fd(),
                sys::READABLE,
                sys::deadline_after(Duration::from_secs(5)),
            );
        }
        self.try_reap().ok().flatten()
    }
}

impl Drop for Popen {
    fn drop(&mut self) {
        // The control socket is closed with its registration, at once (see
        // `current::close_registered`): the child's hang-up detection depends on it.
        // SAFETY: `control` is never used again: this is the drop of its owner.
        let control = unsafe { ManuallyDrop::take(&mut self.control) };
        current::close_registered(control);
        // The pidfd (with its last handle) and the status pipe go with their registrations
        // too (`SharedRegistered`).
    }
}
