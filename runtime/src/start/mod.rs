//! Start methods: how a child process comes to life.
//!
//! - [`StartMethod::Fork`]: `fork(2)`; the child is a copy of the parent and runs the target at
//!   once, then ends with `_exit`. The fastest, and the only one that never needs `init()`
//!   (the others need it only without glibc: see `startup`). Unsafe in a multi-threaded
//!   parent: see [`ForkPolicy`].
//! - [`StartMethod::Spawn`]: fork + exec of `/proc/self/exe` (the running binary, even if the
//!   file on disk was replaced). The child finds its entry point by registered name; the
//!   bootstrap data travels on an inherited socket, never in argv, and the child accepts it
//!   only from the library of its own parent running the same code (`child::authenticate`).
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
use std::sync::{Arc, OnceLock, PoisonError};
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
#[non_exhaustive]
pub enum StartMethod {
    /// `fork(2)` and run the target in the copy.
    ///
    /// A [`Pool`](crate::Pool) with this method forks a zygote of the process when it is built,
    /// and the zygote a spare copy of itself; workers, replacements included, are forked from
    /// the zygote, or from its spare once the zygote has died, and so see the process's memory
    /// as it was at build time. Only if both die is a new zygote forked from the process as it
    /// is then, if the [`ForkPolicy`] allows it (see
    /// [`PoolBuilder::start_method`](crate::PoolBuilder::start_method)).
    Fork,
    /// Re-execute the current binary and find the target by name.
    Spawn,
    /// Ask a clean, single-threaded server process to fork the child.
    ///
    /// If the server dies, its children run on; a new server is started for the next child.
    /// A child whose server died still reports its exit code when it ends by returning,
    /// failing, panicking or `std::process::exit` (on glibc); a death by signal then reads 255.
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
///
/// # In tests
///
/// libtest (`cargo test` with the default harness) runs every test on a thread of its own,
/// beside its main thread, so under the default `Refuse` a `fork` in a `#[test]` fails with
/// [`ErrorKind::ForkUnsafe`], whose message says so; `ForkServer` (the default method) and
/// `Spawn` work in every test. To test the `fork` method itself, use a `harness = false`
/// target whose `main` runs its trials on the main thread (this crate's `tests/process.rs`
/// does, with libtest-mimic), where nothing else runs beside the fork. `Warn` or `Allow` in a
/// libtest binary is at your own risk: the other tests' threads keep running across the fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ForkPolicy {
    /// Fail `start` with [`ErrorKind::ForkUnsafe`] (the default).
    #[default]
    Refuse,
    /// Log a warning (once, through the [`log`](https://docs.rs/log) crate, target
    /// `multiproc`) and fork anyway, as CPython 3.12 warns. Install a logger (`env_logger`,
    /// `tracing-subscriber` with its `log` bridge, ...) to see it.
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
    /// Whether the child sends the entry's result back ([`ChildMessage::Returned`]): for a
    /// [`JoinHandle`](crate::JoinHandle), not for a Python-style `Process` or a pool worker.
    pub returns: bool,
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

/// The first frame on the control socket of a spawned child, parent to child: the name of the
/// parent's launch key, a descriptor that the parent holds open until the child has answered.
/// The child finds the key in its parent's descriptor table (`/proc/<ppid>/fd/<fd>`), which
/// only its parent can fill: see `child::authenticate` for what this proves, and what not.
///
/// Encoded in 16 bytes, like the [`BuildId`] that was the first frame before launch keys: a
/// child of an older build reads it as a build identity that is not its own, and says so.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Credential {
    /// The key's descriptor number in the parent.
    pub fd: u32,
    /// The random part of the key's name: 96 bits.
    pub key: [u8; 12],
}

impl Credential {
    /// The target that `/proc/<parent>/fd/<fd>` must name: the parent's key, a memory file.
    pub(crate) fn link_target(&self) -> String {
        format!("/memfd:multiproc:{}", Self::key_name(&self.key))
    }

    fn key_name(key: &[u8; 12]) -> String {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        format!("launch-{hex}")
    }
}

/// A parent's proof, for one spawned child, that the child's bootstrap comes from it: a memory
/// file whose name holds 96 random bits, open (close-on-exec) in the parent until the child has
/// answered its bootstrap.
pub(crate) struct LaunchKey {
    /// Always `Some` outside `drop`.
    file: Option<OwnedFd>,
    key: [u8; 12],
    /// The binary the child runs, which the parent names in its errors (the child never says).
    pub executable: std::path::PathBuf,
}

impl LaunchKey {
    /// A new key. Registered as it is made: a fork in another thread meanwhile closes it in its
    /// child.
    pub(crate) fn new(executable: std::path::PathBuf) -> Result<LaunchKey> {
        let mut key = [0u8; 12];
        sys::random_bytes(&mut key)
            .map_err(|err| Error::io("cannot read random bytes for a launch key", err))?;
        let file = current::registered(
            || sys::sealed_memfd(&Credential::key_name(&key), &[]),
            |file| vec![file.as_raw_fd()],
        )
        .map_err(|err| Error::io("cannot create a launch key", err))?;
        Ok(LaunchKey {
            file: Some(file),
            key,
            executable,
        })
    }

    fn credential(&self) -> Credential {
        Credential {
            fd: self
                .file
                .as_ref()
                .map_or(u32::MAX, |file| file.as_raw_fd() as u32),
            key: self.key,
        }
    }
}

impl Drop for LaunchKey {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            current::close_registered(file);
        }
    }
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
    /// The target returned (sent only when [`Launch::returns`]): its result, encoded with the
    /// target's result carrier, followed on the socket by `fds` descriptors (the memory file
    /// of a [`ReturnedBytes::File`] first, then those the value carries).
    Returned { value: ReturnedBytes, fds: u32 },
}

/// Where the encoded result of [`ChildMessage::Returned`] is.
///
/// A child sends its result before it exits, and its parent reads the control socket only
/// once it has exited: so the message must fit in the socket's buffer, or the child would wait
/// for a reader that waits for it. A small result travels inline; a larger one in a sealed
/// memory file whose descriptor travels instead, so that the message stays small whatever the
/// size of the value.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ReturnedBytes {
    /// The encoded bytes themselves.
    Inline(Vec<u8>),
    /// The first `len` bytes of the sealed memory file that is the first descriptor.
    File { len: u64 },
}

impl ReturnedBytes {
    /// Results up to this size travel inline: far below a socket buffer's few hundred KiB.
    pub(crate) const INLINE_MAX: usize = 8 << 10;
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum FailKind {
    UnknownEntry,
    BuildMismatch,
    Bootstrap,
    Codec,
    /// The child could not send its result back.
    Io,
}

// The largest frames the bootstrap allows (see `wire::Frame`): a declared length above them
// is a corrupt stream, refused before anything is allocated.

/// A role carries the target's encoded arguments (or the preload calls'): 4 GiB, the largest
/// input the codec decodes with its lengths checked. Larger arguments are refused when sent.
/// A credential is 16 bytes, like the build identity it comes before: 4 KiB is a corrupt
/// stream.
impl wire::Frame for Credential {
    const MAX_LEN: u64 = 4 << 10;
}

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
            FailKind::Io => ErrorKind::Io,
        }
    }
}

/// How long a parent waits for a spawned child to acknowledge its bootstrap.
pub(crate) const BOOTSTRAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Exit code of a child whose bootstrap failed (EX_SOFTWARE).
pub(crate) const EXIT_BOOTSTRAP_FAILED: i32 = 70;

/// Exit code reported for a fork-server child whose server died before it could say (as
/// CPython): a death by signal, since a child reports its own exit code (see `forkserver`).
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
    /// A spawned child's launch key, until its bootstrap is over.
    key: std::sync::Mutex<Option<LaunchKey>>,
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
            key: std::sync::Mutex::new(None),
        })
    }

    /// The handle on a spawned child, whose bootstrap is proven with `key`.
    pub(crate) fn with_key(self, key: LaunchKey) -> Popen {
        *self.key.lock().unwrap_or_else(PoisonError::into_inner) = Some(key);
        self
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
            key: std::sync::Mutex::new(None),
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
                // It has ended: it wrote its code itself as it exited (see `forkserver`),
                // or the server reaps it and writes the code at once, unless the server died
                // first (end of file): then the code is lost, as in CPython.
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

    /// Reads the messages the child left on the control socket, without blocking, each with
    /// the descriptors that came with it (those of a [`ChildMessage::Returned`]); and the error
    /// that stopped the reading if the child wrote something that is no message (a message cut
    /// short by the child's death is not reported).
    pub(crate) fn drain_messages(&self) -> (Vec<(ChildMessage, Vec<OwnedFd>)>, Option<Error>) {
        let mut out = Vec::new();
        loop {
            let msg = match wire::recv::<ChildMessage>(&self.control, Some(Instant::now())) {
                Ok(Some(msg)) => msg,
                Err(err) if err.kind() == ErrorKind::Codec => return (out, Some(err)),
                Ok(None) | Err(_) => return (out, None),
            };
            let fds = match &msg {
                ChildMessage::Returned { fds: 0, .. } => Vec::new(),
                ChildMessage::Returned { fds, .. } => {
                    // The child sent them right after the frame, before it exited: they are
                    // there now, or were never sent (it was killed in between), and then no
                    // read waits for them.
                    let there =
                        sys::poll_one(self.control.as_fd(), sys::READABLE, Some(Instant::now()));
                    match there
                        .ok()
                        .filter(|&ready| ready != 0)
                        .map(|_| wire::recv_fds(&self.control, *fds))
                    {
                        Some(Ok(fds)) => fds,
                        _ => return (out, None),
                    }
                }
                _ => Vec::new(),
            };
            out.push((msg, fds));
        }
    }

    /// Parent side of the bootstrap handshake (spawn, forkserver): sends the build identity and
    /// the role, waits for `Ready`. On failure the child is reaped and the error says what the
    /// child said.
    pub(crate) fn handshake(&self, build: &BuildId, role: &Role, fds: &[RawFd]) -> Result<()> {
        // Bounded as a whole: a child that stops reading (or answering) fails its start
        // instead of holding the parent, or the pool's thread, for good.
        let deadline = sys::deadline_after(BOOTSTRAP_TIMEOUT);
        // Held until the child has answered: it looks for the key while it checks the
        // bootstrap.
        let key = self
            .key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let sent = key
            .as_ref()
            .map_or(Ok(()), |key| {
                wire::send_until(&self.control, &key.credential(), deadline)
            })
            .and_then(|()| wire::send_until(&self.control, build, deadline))
            .and_then(|()| wire::send_until(&self.control, role, deadline))
            .and_then(|()| wire::send_fds_until(&self.control, fds, deadline));
        let reply = wire::recv::<ChildMessage>(&self.control, deadline);
        let failure = match (sent, reply) {
            (Ok(()), Ok(Some(ChildMessage::Ready))) => return Ok(()),
            (_, Ok(Some(ChildMessage::Failed {
                kind: FailKind::BuildMismatch,
                message,
            }))) => {
                // The child says no more than that; the parent knows which binary it ran.
                let exe = key
                    .as_ref()
                    .map(|key| format!(" (the binary {})", key.executable.display()))
                    .unwrap_or_default();
                Error::new(ErrorKind::BuildMismatch, format!("{message}{exe}"))
            }
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
                "the child exited during its bootstrap (was `multiproc::init()` called first in main? \
                 did the child refuse its parent? it then says why on its standard error)",
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
