//! Start methods: how a child process comes to life.
//!
//! - [`StartMethod::Fork`](crate::context::StartMethod::Fork): `fork(2)`; the child is a copy of the parent and runs the target at
//!   once, then ends with `_exit`. The fastest, and the only one that never needs `init()`
//!   (the others need it only without glibc: see `startup`). Unsafe in a multi-threaded
//!   parent: see [`ForkPolicy`].
//! - [`StartMethod::Spawn`](crate::context::StartMethod::Spawn): fork + exec of `/proc/self/exe` (the running binary, even if the
//!   file on disk was replaced). The child finds its entry point by registered name; the
//!   bootstrap data travels on an inherited socket, never in argv, and the child accepts it
//!   only from the library of its own parent running the same code (`bootstrap::authenticate`).
//! - [`StartMethod::ForkServer`](crate::context::StartMethod::ForkServer) (the default, as in CPython 3.14): a single-threaded server
//!   process, spawned on first use, forks children on request. Their descriptors travel over a
//!   private socketpair with `SCM_RIGHTS`; the server relays each child's pid and exit status.
//!
//! Every method gives the parent the same handle ([`Popen`]): a pid, a control socket (bootstrap,
//! acknowledgement, panic report; its hang-up tells the child that the parent died) and a
//! descriptor that becomes readable when the child exits.

pub(crate) mod fork;
pub(crate) mod forkserver;
pub(crate) mod spawn;

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::bootstrap::{self, ChildMessage, Credential, Role, EXIT_SERVER_DIED};
use crate::error::{Error, ErrorKind, Result};
use crate::fd::{self, LibraryFd};
use crate::registry::BuildId;
use crate::{sys, wire};

/// The fork server of this process, once started. A fork holds this lock across the fork (see
/// `fork::fork_child`), so that its child never finds it taken by a thread it does not have.
static GLOBAL: Mutex<Option<forkserver::ForkServer>> = Mutex::new(None);

pub(crate) fn lock_client() -> MutexGuard<'static, Option<forkserver::ForkServer>> {
    GLOBAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The executable set with [`set_executable`](spawn::set_executable); a fork holds this lock
/// across the fork, so that its child never finds it taken by a thread it does not have.
static EXECUTABLE: Mutex<Option<PathBuf>> = Mutex::new(None);

pub(crate) fn lock_executable() -> MutexGuard<'static, Option<PathBuf>> {
    EXECUTABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What [`StartMethod::Fork`](crate::context::StartMethod::Fork) does when this process has more than one thread.
///
/// A forked child holds a copy of every lock as it was at the moment of the fork: a lock that
/// another thread held (stdout, a `Mutex` of yours, a runtime's) stays locked forever in the
/// child, which then deadlocks. CPython 3.12 only warns; multiproc refuses by default and tells
/// you to use `ForkServer` or `Spawn`, which are safe in any program. `Warn` and `Allow` are set
/// through [`set_fork_policy`](fork::set_fork_policy), an `unsafe fn`: the check they turn off
/// is what keeps a fork in a multi-threaded process sound, and the caller takes it over.
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

/// A parent's proof, for one spawned child, that the child's bootstrap comes from it: a memory
/// file whose name holds 96 random bits, open (close-on-exec) in the parent until the child has
/// answered its bootstrap.
pub(crate) struct LaunchKey {
    file: LibraryFd,
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
        let file = fd::made(|fds| {
            Ok::<_, std::io::Error>(fds.own(sys::sealed_memfd(&Credential::key_name(&key), &[])?))
        })
        .map_err(|err| Error::io("cannot create a launch key", err))?;
        Ok(LaunchKey {
            file,
            key,
            executable,
        })
    }

    fn credential(&self) -> Credential {
        Credential {
            fd: self.file.as_raw_fd() as u32,
            key: self.key,
        }
    }
}

/// `waitpid` of our own child `pid`: its exit code, `None` while it runs (with `nohang`).
///
/// A child that is no longer ours to wait for (`ECHILD`: the kernel reaped it as it ended,
/// SIGCHLD being ignored, or code outside the library waited for it) has ended, its code lost:
/// it is [`EXIT_SERVER_DIED`], as for a fork-server child whose server died (CPython's 255),
/// and the child is reaped for the library (it used to be an error on every join, and the
/// child stayed listed as running, with its descriptors, for good).
fn wait_own(pid: i32, nohang: bool) -> Result<Option<i32>> {
    match sys::wait_child(pid, nohang) {
        Err(err) if err.raw_os_error() == Some(libc::ECHILD) => Ok(Some(EXIT_SERVER_DIED)),
        waited => waited.map_err(|err| Error::io(format!("waitpid({pid})"), err)),
    }
}

/// How long the fork server has to report the exit code of a child seen to have ended.
const STATUS_WAIT: Duration = Duration::from_secs(5);

/// The parent's handle on a started child.
pub(crate) struct Popen {
    pub pid: i32,
    /// Closed with its registration when the handle goes: the child's hang-up detection
    /// depends on it.
    pub control: LibraryFd<UnixStream>,
    waiter: Waiter,
    /// The exit code once reaped: a pid is waited for exactly once.
    exitcode: OnceLock<i32>,
    /// A spawned child's launch key, until its bootstrap is over.
    key: std::sync::Mutex<Option<LaunchKey>>,
}

enum Waiter {
    /// Our own spawned child: a pidfd, and `waitpid` reaps it.
    Direct { pidfd: Arc<LibraryFd> },
    /// Our own child of the fork start method (or the fork server, which `fork::fork_child`
    /// starts the same way). Its pidfd costs a start a `pidfd_open(2)` and
    /// a `close(2)` (6 us together on a virtual machine, where a bare fork and `waitpid` take
    /// about 100 us), so it is opened only when something asks for it (a join with a timeout,
    /// a sentinel); a plain join waits with `waitid(WNOWAIT)` instead
    /// ([`pid_to_wait`](Popen::pid_to_wait)), and a signal goes by pid. A pid names the child
    /// only until it is reaped: `reaping` is held by every reap (until the exit code is
    /// recorded), by the lazy open and by every signal.
    Forked {
        pidfd: OnceLock<Arc<LibraryFd>>,
        reaping: Mutex<()>,
    },
    /// A fork-server child: `pidfd` (from the server) says when it has ended, whether or not
    /// the server still runs, and lets us signal it without racing pid reuse; the server then
    /// writes its exit code on `status`.
    Server {
        status: LibraryFd,
        pidfd: Arc<LibraryFd>,
    },
}

impl Popen {
    /// The handle on our own child `pid`. If the kernel cannot give a pidfd, the child is
    /// killed and reaped: a child we cannot wait for without racing is not kept.
    pub(crate) fn direct(pid: i32, control: LibraryFd<UnixStream>) -> Result<Popen> {
        let pidfd = match fd::made(|fds| Ok::<_, std::io::Error>(fds.own(sys::pidfd_open(pid)?))) {
            Ok(pidfd) => pidfd,
            Err(err) => {
                drop(control);
                // SAFETY: `pid` is our unreaped child, so the pid cannot have been recycled.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = sys::wait_child(pid, false);
                return Err(Error::io(format!("pidfd_open({pid})"), err));
            }
        };
        Ok(Popen {
            pid,
            control,
            waiter: Waiter::Direct {
                pidfd: Arc::new(pidfd),
            },
            exitcode: OnceLock::new(),
            key: std::sync::Mutex::new(None),
        })
    }

    /// The handle on our own child `pid` of the fork start method, whose pidfd is opened only
    /// if asked for (see [`Waiter::Forked`]).
    pub(crate) fn forked(pid: i32, control: LibraryFd<UnixStream>) -> Popen {
        Popen {
            pid,
            control,
            waiter: Waiter::Forked {
                pidfd: OnceLock::new(),
                reaping: Mutex::new(()),
            },
            exitcode: OnceLock::new(),
            key: std::sync::Mutex::new(None),
        }
    }

    /// The handle on a spawned child, whose bootstrap is proven with `key`.
    pub(crate) fn with_key(self, key: LaunchKey) -> Popen {
        *self.key.lock().unwrap_or_else(PoisonError::into_inner) = Some(key);
        self
    }

    /// The handle on a child of the fork server.
    pub(crate) fn served(
        pid: i32,
        control: LibraryFd<UnixStream>,
        status: LibraryFd,
        pidfd: LibraryFd,
    ) -> Popen {
        Popen {
            pid,
            control,
            waiter: Waiter::Server {
                status,
                pidfd: Arc::new(pidfd),
            },
            exitcode: OnceLock::new(),
            key: std::sync::Mutex::new(None),
        }
    }

    /// The descriptor that becomes readable when the child has exited: its pidfd (opened now
    /// for a child of the fork start method, if it was not yet). Fails only for such a child
    /// once reaped, or if the pidfd cannot be opened.
    pub(crate) fn exit_fd(&self) -> Result<Arc<LibraryFd>> {
        let (pidfd, reaping) = match &self.waiter {
            Waiter::Direct { pidfd } | Waiter::Server { pidfd, .. } => return Ok(pidfd.clone()),
            Waiter::Forked { pidfd, reaping } => (pidfd, reaping),
        };
        if let Some(pidfd) = pidfd.get() {
            return Ok(pidfd.clone());
        }
        let _reaping = reaping.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pidfd) = pidfd.get() {
            return Ok(pidfd.clone());
        }
        let opened = match self.exitcode.get() {
            // Reaped: the pid may be another process's by now.
            Some(_) => Err(std::io::Error::from_raw_os_error(libc::ESRCH)),
            None => fd::made(|fds| Ok::<_, std::io::Error>(fds.own(sys::pidfd_open(self.pid)?))),
        }
        .map_err(|err| Error::io(format!("pidfd_open({})", self.pid), err))?;
        Ok(pidfd.get_or_init(|| Arc::new(opened)).clone())
    }

    /// Whether the child is the fork server's (it ends for us through a pidfd the server
    /// gave, not as our own child).
    pub(crate) fn is_served(&self) -> bool {
        matches!(self.waiter, Waiter::Server { .. })
    }

    /// For a plain join of a child of the fork start method: its pid, to wait for without a
    /// descriptor and without reaping it ([`sys::wait_exited`], then
    /// [`reap_if`](Self::reap_if)); `None` for the other kinds of child, which are waited for
    /// on [`exit_fd`](Self::exit_fd), and once reaped.
    ///
    /// The wait goes without the caller's lock, so that signals and other reaps go on
    /// meanwhile. A child that another thread reaps meanwhile ends it at once (`ECHILD`),
    /// unless its pid has been given to a new child of this process in between, which takes
    /// the kernel going round all the pids (`pid_max`) first: then it lasts until that child
    /// has ended too (as long as it lives: a pool's fork server lives as long as its pool),
    /// and the join still reports this child's exit code.
    pub(crate) fn pid_to_wait(&self) -> Option<i32> {
        match self.waiter {
            Waiter::Forked { .. } if self.exitcode.get().is_none() => Some(self.pid),
            _ => None,
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
        if let Waiter::Forked { reaping, .. } = &self.waiter {
            // One `waitpid` that never blocks, whether or not the child was seen to end.
            let _reaping = reaping.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(code) = self.exitcode.get() {
                return Ok(Some(*code));
            }
            let code = wait_own(self.pid, true)?;
            if let Some(code) = code {
                let _ = self.exitcode.set(code);
            }
            return Ok(code);
        }
        if !exited {
            let fd = self.exit_fd()?;
            let ready = sys::poll_one(fd.as_fd(), sys::READABLE, Some(Instant::now()))
                .map_err(|err| Error::io("cannot poll a child's exit descriptor", err))?;
            if ready == 0 {
                return Ok(None);
            }
        }
        let code = match &self.waiter {
            Waiter::Direct { .. } | Waiter::Forked { .. } => wait_own(self.pid, false)?,
            Waiter::Server { status, .. } => {
                // It has ended: it wrote its code itself as it exited (see `forkserver`),
                // or the server reaps it and writes the code at once, unless the server died
                // first (end of file): then the code is lost, as in CPython. The pipe does
                // not block (the server makes it so): a code already there (the usual case)
                // is read without a `poll(2)` first.
                let mut code = [0u8; 4];
                let mut read = sys::read_full(status.as_fd(), &mut code);
                if matches!(&read, Err(err) if err.kind() == std::io::ErrorKind::WouldBlock) {
                    let said = sys::poll_one(
                        status.as_fd(),
                        sys::READABLE,
                        sys::deadline_after(STATUS_WAIT),
                    )
                    .unwrap_or(0);
                    read = match said {
                        0 => Ok(0),
                        _ => sys::read_full(status.as_fd(), &mut code),
                    };
                }
                match read {
                    Ok(4) => Some(i32::from_le_bytes(code)),
                    _ => Some(EXIT_SERVER_DIED),
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
        self.exit_fd()?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|err| Error::io("cannot duplicate a pidfd", err))
    }

    /// Sends `signal` to the child; a child that already exited is not an error.
    pub(crate) fn signal(&self, signal: i32) -> Result<()> {
        let sent = match &self.waiter {
            Waiter::Direct { pidfd } | Waiter::Server { pidfd, .. } => {
                sys::pidfd_send_signal(pidfd.as_fd(), signal)
            }
            Waiter::Forked { pidfd, reaping } => {
                // Not reaped while this is held: the pid is still the child's.
                let _reaping = reaping.lock().unwrap_or_else(PoisonError::into_inner);
                match (self.exitcode.get(), pidfd.get()) {
                    (Some(_), _) => Ok(()),
                    (None, Some(pidfd)) => sys::pidfd_send_signal(pidfd.as_fd(), signal),
                    (None, None) => sys::signal_child(self.pid, signal),
                }
            }
        };
        sent.map_err(|err| {
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
        let deadline = sys::deadline_after(bootstrap::BOOTSTRAP_TIMEOUT);
        // Held until the child has answered: it looks for the key while it checks the
        // bootstrap.
        let key = self
            .key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let said = bootstrap::handshake(
            &self.control,
            self.pid,
            key.as_ref()
                .map(|key| (key.credential(), key.executable.as_path())),
            build,
            role,
            fds,
            deadline,
            || {
                let _ = self.signal(libc::SIGKILL);
            },
        );
        said.map_err(|failure| self.fail_and_reap(failure))
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
        let Ok(exit) = self.exit_fd() else {
            // Ended and reaped, or a child of the fork start method whose pidfd cannot be
            // opened now (no descriptor left): nothing to wait on until the deadline, so it is
            // killed at once and waited for, so that it is not left running or a zombie.
            if let Some(code) = self.try_reap().ok().flatten() {
                return Some(code);
            }
            let _ = self.signal(libc::SIGKILL);
            if let Some(pid) = self.pid_to_wait() {
                let _ = sys::wait_exited(pid);
            }
            return self.try_reap().ok().flatten();
        };
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
