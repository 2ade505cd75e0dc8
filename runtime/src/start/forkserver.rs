//! The `forkserver` start method.
//!
//! On first use the parent spawns the server: a fresh exec of this binary that does nothing but
//! serve, so it is single-threaded and forking it is always safe. The server is private to its
//! parent: the only way to reach it is the socketpair the parent created (no listener on the
//! file system or in the abstract namespace), and it exits when the parent's end closes, i.e.
//! when the parent exits or dies.
//!
//! To start a child, the parent creates a control socketpair and sends one end to the server
//! with `SCM_RIGHTS`. The server forks; the child runs the bootstrap on that socket, talking to
//! the parent directly. The server answers with the child's pid, and with two descriptors: a
//! status pipe on which it writes the child's exit code when it reaps it, and a pidfd through
//! which the parent signals the child without racing pid reuse and sees it end. If the server
//! dies, its children run on and are seen running (CPython reports them ended, with code 255,
//! at once); when one ends, its code is lost (255), and the next start brings up a new server.
//!
//! [`set_forkserver_preload`] names `#[process]` functions that a new server calls once before
//! it serves, so that every child it forks starts warm (CPython's preload of modules).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::unistd::{fork, ForkResult};
use serde::{Deserialize, Serialize};

use super::{fork, spawn, Launch, Popen, Role};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::{BuildId, Target};
use crate::{carrier, child, current, sys};

/// A call for the fork server to make once, before it forks any child: see
/// [`set_forkserver_preload`].
#[derive(Debug, Clone)]
pub struct Preload {
    call: std::result::Result<PreloadCall, String>,
}

/// A [`Preload`] as it travels to the server: the entry point's name and its encoded arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PreloadCall {
    pub entry: String,
    pub payload: Vec<u8>,
}

impl Preload {
    /// `function(args)`, to run in the fork server. Its result is dropped.
    ///
    /// The arguments are encoded now; they cannot carry descriptors (a `Queue`, a `Lock`, a
    /// `SharedMemory` ...): [`set_forkserver_preload`] refuses those.
    pub fn new<F: Target>(_function: F, args: F::Args) -> Preload {
        let call = match carrier::encode_one::<F::Args, F::ArgsCarrier>(args) {
            Ok(encoded) if encoded.fds.is_empty() => Ok(PreloadCall {
                entry: F::NAME.to_string(),
                payload: encoded.bytes,
            }),
            Ok(_) => Err(format!(
                "the preload of `{}` carries descriptors, which the fork server cannot keep",
                F::NAME
            )),
            Err(err) => Err(format!(
                "cannot encode the arguments of the preload `{}`: {err}",
                F::NAME
            )),
        };
        Preload { call }
    }
}

static PRELOAD: Mutex<Vec<PreloadCall>> = Mutex::new(Vec::new());

/// Names the calls a new fork server makes once, in order, before it forks any child (Python's
/// `set_forkserver_preload`): load a model, read a large table, warm a cache, and every
/// `forkserver` child starts with it in memory (shared copy-on-write), instead of each doing
/// the work again.
///
/// Set it before the first `forkserver` start: while this process's fork server runs, the call
/// fails with [`ErrorKind::AlreadyStarted`] (the server could not take it back). A preload that
/// panics, fails, or leaves a thread running (the server must stay single-threaded to fork
/// safely) makes the start of the server, and so every `forkserver` start, fail with an
/// [`ErrorKind::ForkServer`] error that says why. Pools with the `fork` start method and
/// `fork` children do not use the fork server.
///
/// ```
/// use multiproc::{process, Preload, Process, StartMethod};
///
/// #[process]
/// fn warm(rows: u32) {
///     // Build whatever every child should inherit, e.g. into a `static OnceLock`.
///     let _ = rows;
/// }
///
/// #[process]
/// fn work() {}
///
/// # fn main() -> multiproc::Result<()> {
/// # multiproc::init();
/// multiproc::set_forkserver_preload([Preload::new(warm, 1_000)])?;
/// let p = Process::new(work, ()).with_start_method(StartMethod::ForkServer);
/// p.start()?;
/// assert_eq!(p.join()?, 0);
/// # Ok(())
/// # }
/// ```
pub fn set_forkserver_preload(calls: impl IntoIterator<Item = Preload>) -> Result<()> {
    let calls = calls
        .into_iter()
        .map(|p| p.call)
        .collect::<std::result::Result<Vec<_>, String>>()
        .map_err(|message| Error::new(ErrorKind::InvalidInput, message))?;
    let client = lock_client();
    if client.is_some() {
        return Err(Error::new(
            ErrorKind::AlreadyStarted,
            "the fork server is already running: set its preload before the first forkserver start",
        ));
    }
    *PRELOAD.lock().unwrap_or_else(PoisonError::into_inner) = calls;
    Ok(())
}

/// A connection to a fork server: the default one of this process (spawned), or a pool's
/// zygote (forked from the process when the pool was made, for the `fork` method).
pub(crate) struct ForkServer {
    server: Popen,
    build: BuildId,
}

static GLOBAL: Mutex<Option<ForkServer>> = Mutex::new(None);

pub(crate) fn lock_client() -> MutexGuard<'static, Option<ForkServer>> {
    GLOBAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long the parent waits for the server to answer a fork request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const OP_FORK: u8 = b'F';

/// Starts a child through this process's fork server, starting (or restarting) it if needed.
pub(crate) fn launch(launch: Launch, fds: &[RawFd]) -> Result<Popen> {
    let (popen, build) = {
        let mut client = lock_client();
        let mut restarted = false;
        loop {
            if client
                .as_ref()
                .map(ForkServer::is_dead)
                .transpose()?
                .unwrap_or(false)
            {
                client.take();
            }
            let server = match client.as_mut() {
                Some(server) => server,
                None => client.insert(ForkServer::spawn()?),
            };
            match server.request() {
                Ok(popen) => break (popen, server.build),
                Err(err) if !restarted && err.kind() == ErrorKind::Disconnected => {
                    // The server died: bring up a new one and try once more.
                    client.take();
                    restarted = true;
                }
                Err(err) => return Err(err),
            }
        }
    };
    popen.handshake(&build, &Role::Run(launch), fds)?;
    Ok(popen)
}

impl ForkServer {
    /// Spawns a fresh server: an exec of this binary, single-threaded.
    pub(crate) fn spawn() -> Result<ForkServer> {
        let (server, build) = spawn::exec_child()?;
        let preload = PRELOAD
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        server
            .handshake(&build, &Role::ForkServer { preload }, &[])
            .map_err(|err| {
                Error::new(
                    ErrorKind::ForkServer,
                    format!("cannot start the fork server: {err}"),
                )
            })?;
        Ok(ForkServer { server, build })
    }

    /// Forks a server from this process: its children see this process's memory as it is now.
    pub(crate) fn fork_zygote() -> Result<ForkServer> {
        let server = fork::fork_child(|control| control, |control| serve(control))?;
        Ok(ForkServer {
            server,
            build: BuildId::current(),
        })
    }

    /// Whether the server has exited (it is then reaped).
    pub(crate) fn is_dead(&self) -> Result<bool> {
        Ok(self.server.try_reap()?.is_some())
    }

    /// Starts a child and completes its bootstrap.
    pub(crate) fn launch(&self, launch: Launch, fds: &[RawFd]) -> Result<Popen> {
        let popen = self.request()?;
        popen.handshake(&self.build, &Role::Run(launch), fds)?;
        Ok(popen)
    }

    /// Asks the server to fork a child; the caller does the bootstrap.
    fn request(&self) -> Result<Popen> {
        // Made, and the server's answer received, under the lock a fork holds (see
        // `current::registered`): the pool's driver thread asks for workers beside the
        // caller's forks, whose children must not keep these descriptors. Registered, they
        // are unregistered before they are closed, on every path.
        let (parent_end, child_end) = current::registered(UnixStream::pair, |(a, b)| {
            vec![a.as_raw_fd(), b.as_raw_fd()]
        })
        .map_err(|err| Error::io("cannot create a control socket", err))?;
        let answer = self.answer(&child_end);
        current::unregister_fd(&child_end);
        drop(child_end);
        match answer {
            Ok((pid, status, pidfd)) => Ok(Popen::served(pid, parent_end, status, pidfd)),
            Err(err) => {
                current::unregister_fd(&parent_end);
                Err(err)
            }
        }
    }

    /// Sends the server `child_end`, and reads its answer: the child's pid, status pipe and
    /// pidfd.
    fn answer(&self, child_end: &UnixStream) -> Result<(i32, OwnedFd, OwnedFd)> {
        let sock = self.server.control.as_fd();
        sys::send_with_fds(sock, &[OP_FORK], &[child_end.as_raw_fd()])
            .map_err(|err| Error::io("cannot reach the fork server", err))?;
        let ready = sys::poll_one(sock, sys::READABLE, sys::deadline_after(REQUEST_TIMEOUT))
            .map_err(|err| Error::io("cannot wait for the fork server", err))?;
        if ready == 0 {
            let _ = self.server.signal(libc::SIGKILL);
            return Err(Error::new(
                ErrorKind::ForkServer,
                format!("the fork server did not answer within {REQUEST_TIMEOUT:?}; it was killed"),
            ));
        }
        let mut reply = [0u8; 4];
        let fds = current::registered(
            || sys::recv_with_fds(sock, &mut reply, 2),
            |fds| fds.iter().flatten().map(AsRawFd::as_raw_fd).collect(),
        )
        .map_err(|err| Error::io("cannot read the fork server's answer", err))?
        .ok_or_else(|| Error::new(ErrorKind::Disconnected, "the fork server closed its socket"))?;
        let pid = i32::from_le_bytes(reply);
        let fail = |fds: Vec<OwnedFd>, err: Error| {
            for fd in &fds {
                current::unregister_fd(fd);
            }
            Err(err)
        };
        if pid <= 0 {
            return fail(
                fds,
                Error::new(ErrorKind::ForkServer, "the fork server could not fork")
                    .with_source(std::io::Error::from_raw_os_error(-pid)),
            );
        }
        match <[OwnedFd; 2]>::try_from(fds) {
            Ok([status, pidfd]) => Ok((pid, status, pidfd)),
            Err(fds) => fail(
                fds,
                Error::new(
                    ErrorKind::ForkServer,
                    "the fork server's answer lacks its descriptors",
                ),
            ),
        }
    }
}

impl Drop for ForkServer {
    /// Closes the connection; the server exits on end of file. Waits a bounded time for it.
    fn drop(&mut self) {
        let _ = self.server.control.shutdown(std::net::Shutdown::Both);
        self.server
            .reap_by(sys::deadline_after(Duration::from_secs(2)));
    }
}

/// Stops this process's fork server, if it has one (at exit).
pub(crate) fn shutdown() {
    let server = lock_client().take();
    drop(server);
}

struct Kid {
    pid: i32,
    status: OwnedFd,
    pidfd: OwnedFd,
}

/// The server's loop. Never returns: exits when the parent's end of `control` closes.
pub(crate) fn serve(control: UnixStream) -> ! {
    sys::ignore_signal(libc::SIGINT);
    let mut kids: Vec<Kid> = Vec::new();
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(control.as_raw_fd())
            .chain(kids.iter().map(|k| k.pidfd.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if sys::poll_many(&mut fds, None).is_err() {
            sys::exit_now(1);
        }
        let exited: Vec<i32> = kids
            .iter()
            .zip(&fds[1..])
            .filter(|(_, p)| p.revents != 0)
            .map(|(k, _)| k.pid)
            .collect();
        for pid in exited {
            if let Some(i) = kids.iter().position(|k| k.pid == pid) {
                let kid = kids.swap_remove(i);
                let code = sys::wait_child(kid.pid, false)
                    .ok()
                    .flatten()
                    .unwrap_or(super::EXIT_SERVER_DIED);
                let _ = sys::write_full(kid.status.as_fd(), &code.to_le_bytes());
            }
        }
        if fds[0].revents == 0 {
            continue;
        }
        let mut op = [0u8; 1];
        let received = match sys::recv_with_fds(control.as_fd(), &mut op, 1) {
            Ok(Some(received)) => received,
            Ok(None) | Err(_) => sys::exit_now(0),
        };
        let mut received = received.into_iter();
        let (Some(child_control), None, OP_FORK) = (received.next(), received.next(), op[0]) else {
            let _ = sys::send_with_fds(control.as_fd(), &(-libc::EINVAL).to_le_bytes(), &[]);
            continue;
        };
        let (status_r, status_w) = match sys::pipe() {
            Ok(pipe) => pipe,
            Err(err) => {
                let errno = err.raw_os_error().unwrap_or(libc::EIO);
                let _ = sys::send_with_fds(control.as_fd(), &(-errno).to_le_bytes(), &[]);
                continue;
            }
        };
        // SAFETY: the server is single-threaded (it was exec'd to do nothing but this loop).
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop((kids, control, status_r, status_w));
                sys::default_signal(libc::SIGINT);
                child::serve(UnixStream::from(child_control))
            }
            Ok(ForkResult::Parent { child }) => {
                let pid = child.as_raw();
                drop(child_control);
                match sys::pidfd_open(pid) {
                    Ok(pidfd) => {
                        let fds = [status_r.as_raw_fd(), pidfd.as_raw_fd()];
                        let _ = sys::send_with_fds(control.as_fd(), &pid.to_le_bytes(), &fds);
                        kids.push(Kid {
                            pid,
                            status: status_w,
                            pidfd,
                        });
                    }
                    Err(err) => {
                        // SAFETY: `pid` is our unreaped child.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        let _ = sys::wait_child(pid, false);
                        let errno = err.raw_os_error().unwrap_or(libc::EIO);
                        let _ = sys::send_with_fds(control.as_fd(), &(-errno).to_le_bytes(), &[]);
                    }
                }
            }
            Err(err) => {
                let _ = sys::send_with_fds(control.as_fd(), &(-(err as i32)).to_le_bytes(), &[]);
            }
        }
    }
}
