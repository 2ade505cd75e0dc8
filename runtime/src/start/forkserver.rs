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
//! status pipe on which it writes the child's exit code when it reaps it, and a pidfd so the
//! parent can signal the child without racing pid reuse. If the server dies, its children's
//! status pipes reach end of file (exit code 255, as in CPython) and the next start brings up a
//! new server.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::unistd::{fork, ForkResult};

use super::{fork, spawn, Launch, Popen, Role};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::BuildId;
use crate::{child, sys};

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
        server
            .handshake(&build, &Role::ForkServer, &[])
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
        let server = fork::fork_child(|control| serve(control))?;
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
        let sock = self.server.control.as_fd();
        let (parent_end, child_end) =
            UnixStream::pair().map_err(|err| Error::io("cannot create a control socket", err))?;
        sys::send_with_fds(sock, &[OP_FORK], &[child_end.as_raw_fd()])
            .map_err(|err| Error::io("cannot reach the fork server", err))?;
        drop(child_end);
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
        let fds = sys::recv_with_fds(sock, &mut reply, 2)
            .map_err(|err| Error::io("cannot read the fork server's answer", err))?
            .ok_or_else(|| {
                Error::new(ErrorKind::Disconnected, "the fork server closed its socket")
            })?;
        let pid = i32::from_le_bytes(reply);
        if pid <= 0 {
            return Err(
                Error::new(ErrorKind::ForkServer, "the fork server could not fork")
                    .with_source(std::io::Error::from_raw_os_error(-pid)),
            );
        }
        let mut fds = fds.into_iter();
        match (fds.next(), fds.next()) {
            (Some(status), Some(pidfd)) => Ok(Popen::served(pid, parent_end, status, pidfd)),
            _ => Err(Error::new(
                ErrorKind::ForkServer,
                "the fork server's answer lacks its descriptors",
            )),
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
