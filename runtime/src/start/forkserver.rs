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
//! which the parent signals the child without racing pid reuse and sees it end.
//!
//! # Framing
//!
//! Requests and answers are frames of fixed length, little-endian, one request at a time:
//!
//! - request, 16 bytes and one descriptor: magic `MPfq`, op (`F`: fork a child that runs the
//!   bootstrap on the descriptor; `R`: the same, but the bootstrap waits in full on the
//!   descriptor already, and the server reads and checks it before it forks, so that the
//!   child does not (see `child::Served`); `C`: fork a copy of the server that serves on it),
//!   three zero bytes, request id (a `u64` counted from 1 per server);
//! - answer, 20 bytes: magic `MPfa`, the id it answers, the child's pid (or `-errno` when the
//!   server could not fork), and the number of descriptors attached: 2 (status pipe, pidfd)
//!   with a pid, 0 with an error.
//!
//! The parent checks every answer against the request it just made: the magic, the id, the
//! declared and received descriptor counts. Anything else (another request's answer, a short
//! or malformed frame, a descriptor too many or too few, a stream that breaks) means the stream
//! is out of step, and nothing read after it could be trusted to begin where a frame does: the
//! parent kills the server, closes what it received, and brings up a new server (the start in
//! progress is tried once more on it). The server, given a malformed request (bad magic,
//! unknown op, not exactly one descriptor, a short frame), forks nothing and exits; the parent
//! sees the end of file and replaces it the same way. Children started before keep their pid,
//! pidfd and status pipe, which do not depend on the stream.
//!
//! # When the server dies
//!
//! Its children run on and are seen running (CPython reports them ended, with code 255, at
//! once), and the next start brings up a new server. A child writes its own exit code on its
//! status pipe just before it ends through the library's exit path (its target returned,
//! failed or panicked, a bootstrap failure) or through `exit(3)` (`std::process::exit`; glibc
//! only, through `on_exit`): that code survives the server. A child that dies of a signal (or
//! calls `_exit` itself, or exits through `exit(3)` under another C library) can only be
//! reported by the server that reaps it: if the server is dead by then, its code is lost
//! and reads 255, as in CPython. A child killed between writing its code and its `_exit`
//! reports the code it was exiting with.
//!
//! # A fork pool's zygote
//!
//! A pool with the `fork` start method forks its zygote from the process when it is built:
//! a server that forks the workers from the process's memory as it was then. The zygote at
//! once forks a copy of itself (op `C`), the spare, identical to it. A zygote found dead, or
//! out of step, is replaced by its spare, which forks a new spare of itself: workers started
//! after any number of zygote deaths see the memory of the pool's build time. Only when the
//! zygote and its spare are both gone is a new zygote forked from the process as it is then
//! (its memory now, not at build time), and only if the [`ForkPolicy`](super::ForkPolicy) allows
//! it: the process runs the pool's thread by then, so under the default `Refuse` the start of
//! a replacement worker fails with [`ErrorKind::ForkUnsafe`].
//!
//! [`set_forkserver_preload`] names `#[process]` functions that a new server calls once before
//! it serves, so that every child it forks starts warm (CPython's preload of modules).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::unistd::{fork, ForkResult};

use super::{fork, lock_client, spawn, Popen};
use crate::bootstrap::{Launch, PreloadCall, Role};
use crate::error::{Error, ErrorKind, Result};
use crate::fd::{self, LibraryFd};
use crate::registry::{BuildId, Target};
use crate::{carrier, child, current, handle, sys};

/// A call for the fork server to make once, before it forks any child: see
/// [`set_forkserver_preload`].
#[derive(Debug, Clone)]
pub struct Preload {
    call: std::result::Result<PreloadCall, String>,
}

impl Preload {
    /// `function(args)`, to run in the fork server. Its result is dropped.
    ///
    /// The arguments are encoded now; they cannot carry descriptors (a `Queue`, a `Lock`, a
    /// `SharedMemory` ...): [`set_forkserver_preload`] refuses those.
    pub fn new<F: Target>(_function: F, args: F::Args) -> Preload {
        let call = match carrier::encode_args::<F>(args) {
            Ok(encoded) if encoded.fds.is_empty() => Ok(PreloadCall {
                entry: F::NAME.to_string(),
                payload: encoded.bytes,
            }),
            Ok(_) => Err(format!(
                "the preload of `{}` carries descriptors, which the fork server cannot keep",
                F::NAME
            )),
            Err(err) => Err(format!(
                "cannot encode the arguments of the preload `{}`: {}",
                F::NAME,
                err.chain()
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
/// zygote (forked from the process when the pool was made, for the `fork` method), or the
/// zygote's spare (forked from the zygote).
pub(crate) struct ForkServer {
    server: Popen,
    build: BuildId,
    /// The id of the last request; each request takes the next one.
    last_id: AtomicU64,
}

/// How long the parent waits for the server to answer a fork request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Fork a child that runs the bootstrap on the descriptor sent.
const OP_FORK: u8 = b'F';
/// Fork a child whose bootstrap waits in full on the descriptor sent: the server reads it
/// first (see `child::Served`).
const OP_FORK_READY: u8 = b'R';
/// Fork a copy of the server that serves on the descriptor sent.
const OP_CLONE: u8 = b'C';

const REQUEST_MAGIC: [u8; 4] = *b"MPfq";
const REPLY_MAGIC: [u8; 4] = *b"MPfa";
/// magic (4), op (1), zero (3), request id (8, little-endian); one descriptor attached.
const REQUEST_LEN: usize = 16;
/// magic (4), request id (8), pid or `-errno` (4), number of descriptors attached (4); all
/// little-endian.
const REPLY_LEN: usize = 20;

fn request_frame(op: u8, id: u64) -> [u8; REQUEST_LEN] {
    let mut frame = [0u8; REQUEST_LEN];
    frame[..4].copy_from_slice(&REQUEST_MAGIC);
    frame[4] = op;
    frame[8..].copy_from_slice(&id.to_le_bytes());
    frame
}

/// The op and id of a well-formed request, `None` for anything else.
fn parse_request(frame: &[u8; REQUEST_LEN]) -> Option<(u8, u64)> {
    let (magic, rest) = frame.split_first_chunk::<4>()?;
    let (&[op, 0, 0, 0], id) = rest.split_first_chunk::<4>()? else {
        return None;
    };
    let id = u64::from_le_bytes(id.try_into().ok()?);
    (*magic == REQUEST_MAGIC && matches!(op, OP_FORK | OP_FORK_READY | OP_CLONE) && id != 0)
        .then_some((op, id))
}

fn reply_frame(id: u64, value: i32, fds: u32) -> [u8; REPLY_LEN] {
    let mut frame = [0u8; REPLY_LEN];
    frame[..4].copy_from_slice(&REPLY_MAGIC);
    frame[4..12].copy_from_slice(&id.to_le_bytes());
    frame[12..16].copy_from_slice(&value.to_le_bytes());
    frame[16..].copy_from_slice(&fds.to_le_bytes());
    frame
}

/// magic, id, value, descriptor count of a reply.
fn parse_reply(frame: &[u8; REPLY_LEN]) -> ([u8; 4], u64, i32, u32) {
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&frame[..4]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&frame[4..12]);
    let mut value = [0u8; 4];
    value.copy_from_slice(&frame[12..16]);
    let mut fds = [0u8; 4];
    fds.copy_from_slice(&frame[16..]);
    (
        magic,
        u64::from_le_bytes(id),
        i32::from_le_bytes(value),
        u32::from_le_bytes(fds),
    )
}

/// Starts a child through this process's fork server, starting (or restarting) it if needed.
pub(crate) fn launch(launch: Launch, fds: &[RawFd]) -> Result<Popen> {
    let (popen, build) = {
        let mut client = lock_client();
        let mut restarted = false;
        loop {
            let server = live_server(&mut client)?;
            match server.request(OP_FORK) {
                Ok(popen) => break (popen, server.build),
                Err(err) if !restarted && err.kind() == ErrorKind::Disconnected => {
                    // The server died, or was killed for an answer out of step: bring up a
                    // new one and try once more.
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

/// A bootstrap up to this size (the launch's own bytes: arguments, names) is written on the
/// child's control socket before the child exists: far below what an empty socket buffer
/// takes (200 KiB and more), so that the write never waits for a reader.
const EARLY_BOOTSTRAP: usize = 16 << 10;

/// Starts a `Process` through this process's fork server (see [`launch`]), without waiting
/// for the child to acknowledge its bootstrap.
///
/// What the child could refuse is checked here first: the server runs this very build, whose
/// registry is this process's (a launch of another build cannot happen: the server was
/// checked to be this build when it was spawned). A small bootstrap is written on the
/// control socket before the server is asked for the child, so that the child finds it there
/// and runs at once; the parent returns once the server has given the pid, with one round
/// trip fewer (the child does not send `Ready`: see [`Role::RunUnacknowledged`]). A child
/// that fails its bootstrap all the same (it cannot take the descriptors, say) exits with
/// code 70, and says why in [`Process::error`](crate::Process::error).
///
/// The pool's workers use [`launch`]: the pool reads their control socket from the start.
pub(crate) fn launch_process(launch: Launch, fds: &[RawFd]) -> Result<Popen> {
    child::entry_of(&launch)?;
    let early = launch.payload.len()
        + launch.entry.len()
        + launch.name.len()
        + launch.parent_name.len()
        + 8 * launch.identity.len()
        <= EARLY_BOOTSTRAP;
    let deadline = sys::deadline_after(crate::bootstrap::BOOTSTRAP_TIMEOUT);
    let role = Role::RunUnacknowledged(launch);
    let (popen, build) = {
        let mut client = lock_client();
        let mut restarted = false;
        loop {
            let server = live_server(&mut client)?;
            let build = server.build;
            // A bootstrap written in full before the request, with no descriptors to follow,
            // is read by the server before it forks (see `child::Served`).
            let op = if early && fds.is_empty() {
                OP_FORK_READY
            } else {
                OP_FORK
            };
            let sent = server.request_with(op, |control| {
                if early {
                    crate::bootstrap::send(control, None, &build, &role, fds, deadline)
                } else {
                    Ok(0)
                }
            });
            match sent {
                Ok(popen) => break (popen, build),
                // A child forked with its bootstrap waiting runs without the parent: a
                // request the server may have had is never asked again (two children would
                // run for one start), unless no child can run it: its bootstrap, taken back
                // whole, was read by none (a server that died of garbage on its stream, or
                // was killed for an answer out of step, before it came to the request).
                Err(failed) if early && failed.delivered => {
                    client.take();
                    if op == OP_FORK_READY && !restarted && failed.take_back() {
                        restarted = true;
                        continue;
                    }
                    return Err(Error::new(
                        ErrorKind::ForkServer,
                        "the fork server failed after it was asked for the child, which may \
                         have started; it was not asked again",
                    )
                    .with_source(failed.err));
                }
                Err(failed) if !restarted && failed.err.kind() == ErrorKind::Disconnected => {
                    client.take();
                    restarted = true;
                }
                Err(failed) => return Err(failed.err),
            }
        }
    };
    if !early {
        if let Err(err) = crate::bootstrap::send(&popen.control, None, &build, &role, fds, deadline)
        {
            let _ = popen.signal(libc::SIGKILL);
            return Err(popen.fail_and_reap(err));
        }
    }
    Ok(popen)
}

/// This process's fork server, started if there is none.
///
/// A server that has died is not looked for here (a `poll(2)` per start): the request to it
/// fails with an [`ErrorKind::Disconnected`] error (its socket is closed: the send fails, or
/// the answer is an end of file), on which the callers drop it and ask a new server once.
fn live_server(client: &mut Option<ForkServer>) -> Result<&mut ForkServer> {
    match client {
        Some(server) => Ok(server),
        None => {
            let server = ForkServer::spawn()?;
            // Set under the client's lock, which a fork holds (see `current`).
            current::on_exit(current::ExitStep::Server, shutdown);
            Ok(client.insert(server))
        }
    }
}

impl ForkServer {
    fn new(server: Popen, build: BuildId) -> ForkServer {
        ForkServer {
            server,
            build,
            last_id: AtomicU64::new(0),
        }
    }

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
                Error::new(ErrorKind::ForkServer, "cannot start the fork server").with_source(err)
            })?;
        Ok(ForkServer::new(server, build))
    }

    /// Forks a server from this process: its children see this process's memory as it is now.
    pub(crate) fn fork_zygote() -> Result<ForkServer> {
        let server = fork::fork_child(|control| control, |control| serve(control))?;
        Ok(ForkServer::new(server, BuildId::current()))
    }

    /// Asks the server for a copy of itself: a child of the server that serves as it does, with
    /// the server's memory as it is (a zygote's spare: the zygote's memory is that of the
    /// process when the pool was built).
    fn clone_server(&self) -> Result<ForkServer> {
        let server = self.request(OP_CLONE)?;
        Ok(ForkServer::new(server, self.build))
    }

    /// Whether the server has exited (it is then reaped).
    pub(crate) fn is_dead(&self) -> Result<bool> {
        Ok(self.server.try_reap()?.is_some())
    }

    /// Asks the server to fork a child (`OP_FORK`: the caller does the bootstrap) or a copy of
    /// itself (`OP_CLONE`).
    fn request(&self, op: u8) -> Result<Popen> {
        self.request_with(op, |_| Ok(0))
            .map_err(|failed| failed.err)
    }

    /// [`request`](Self::request), with `prepare` called on the parent's end of the child's
    /// control socket before the request goes: what it writes there (it returns how many
    /// bytes) is waiting for the child when it starts.
    fn request_with(
        &self,
        op: u8,
        prepare: impl FnOnce(&UnixStream) -> Result<usize>,
    ) -> std::result::Result<Popen, Failed> {
        let before = |err: Error| Failed {
            err,
            delivered: false,
            waiting: None,
        };
        // Made, and the server's answer received, under the lock a fork holds (see
        // `fd::made`): the pool's driver thread asks for workers beside the caller's forks,
        // whose children must not keep these descriptors. They are `LibraryFd`s, closed with
        // their registrations on every path.
        let (parent_end, child_end) = fd::made(|fds| {
            let (a, b) = UnixStream::pair()?;
            Ok::<_, std::io::Error>((fds.own(a), fds.own(b)))
        })
        .map_err(|err| before(Error::io("cannot create a control socket", err)))?;
        // Room for the answer's two descriptors, made now and let go just before it is read:
        // a table too full for them fails here, before the server forks anything, not after
        // (when the child may run and the parent could not hold it).
        let room = fd::made(|fds| {
            // Duplicates (close-on-exec) that hold two places in the table.
            let room = [
                parent_end.as_fd().try_clone_to_owned()?,
                parent_end.as_fd().try_clone_to_owned()?,
            ];
            Ok::<_, std::io::Error>(room.map(|fd| fds.own(fd)))
        })
        .map_err(|err| {
            before(Error::io(
                "cannot make room for the descriptors of a child of the fork server",
                err,
            ))
        })?;
        // What waits for the child: the bootstrap `prepare` wrote, if any.
        let queued = prepare(&parent_end).map_err(before)?;
        let mut delivered = false;
        match self.answer(op, &child_end, room, &mut delivered) {
            Ok((pid, status, pidfd)) => {
                drop(child_end);
                Ok(Popen::served(pid, parent_end, status, pidfd))
            }
            Err(err) => Err(Failed {
                err,
                delivered,
                waiting: (delivered && queued > 0).then_some((child_end, queued)),
            }),
        }
    }

    /// Kills a server whose stream cannot be trusted any more, and says so: a
    /// [`ErrorKind::Disconnected`] error, so that the caller replaces the server.
    fn out_of_step(&self, what: String) -> Error {
        let _ = self.server.signal(libc::SIGKILL);
        Error::new(
            ErrorKind::Disconnected,
            format!("the fork server's stream is out of step ({what}); the server was killed"),
        )
    }

    /// Sends the server `child_end` in a request `op`, and reads its answer to that request:
    /// the child's pid, status pipe and pidfd. Any answer that is not that (another request's
    /// id, a malformed frame, a descriptor too many or too few), or a stream that breaks,
    /// kills the server.
    ///
    /// `room` holds two descriptors, closed just before the answer is read, so that its two
    /// fit; `delivered` is set once the request is sent (the server may then fork the child).
    fn answer(
        &self,
        op: u8,
        child_end: &UnixStream,
        room: [LibraryFd; 2],
        delivered: &mut bool,
    ) -> Result<(i32, LibraryFd, LibraryFd)> {
        let id = self.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        let sock = self.server.control.as_fd();
        if let Err(err) = sys::send_with_fds(sock, &request_frame(op, id), &[child_end.as_raw_fd()])
        {
            let _ = self.server.signal(libc::SIGKILL);
            return Err(Error::new(
                ErrorKind::Disconnected,
                "cannot reach the fork server; it was killed",
            )
            .with_source(err));
        }
        *delivered = true;
        // The server answers as soon as it has forked: looked for awake first (see
        // `sys::LOOK_AWAKE`); an error ends the look, and the wait reports it.
        sys::look_awake(sys::LOOK_AWAKE, || {
            sys::ready_now(sock, sys::READABLE).unwrap_or(true)
        });
        let ready = sys::poll_one(sock, sys::READABLE, sys::deadline_after(REQUEST_TIMEOUT))
            .map_err(|err| Error::io("cannot wait for the fork server", err))?;
        if ready == 0 {
            let _ = self.server.signal(libc::SIGKILL);
            return Err(Error::new(
                ErrorKind::ForkServer,
                format!("the fork server did not answer within {REQUEST_TIMEOUT:?}; it was killed"),
            ));
        }
        let mut reply = [0u8; REPLY_LEN];
        drop(room);
        let fds = match fd::made(|fds| {
            Ok::<_, std::io::Error>(
                sys::recv_with_fds(sock, &mut reply, 2)?
                    .map(|got| got.into_iter().map(|fd| fds.own(fd)).collect::<Vec<_>>()),
            )
        }) {
            Ok(Some(fds)) => fds,
            Ok(None) => {
                let _ = self.server.signal(libc::SIGKILL);
                return Err(Error::new(
                    ErrorKind::Disconnected,
                    "the fork server closed its socket",
                ));
            }
            Err(err) => return Err(self.out_of_step(format!("unreadable answer: {err}"))),
        };
        // The descriptors received go with their registrations.
        let fail = |fds: Vec<LibraryFd>, err: Error| {
            drop(fds);
            Err(err)
        };
        let (magic, answered, value, count) = parse_reply(&reply);
        if magic != REPLY_MAGIC {
            return fail(fds, self.out_of_step("not an answer".into()));
        }
        if answered != id {
            return fail(
                fds,
                self.out_of_step(format!("answer to request {answered}, not {id}")),
            );
        }
        let expected = if value > 0 { 2 } else { 0 };
        let received = fds.len();
        if value == 0 || count != expected || received != expected as usize {
            return fail(
                fds,
                self.out_of_step(format!(
                    "pid {value}, {received} descriptors received, {count} declared, {expected} expected"
                )),
            );
        }
        if value <= 0 {
            return fail(
                fds,
                Error::new(ErrorKind::ForkServer, "the fork server could not fork")
                    .with_source(std::io::Error::from_raw_os_error(value.saturating_neg())),
            );
        }
        match <[LibraryFd; 2]>::try_from(fds) {
            Ok([status, pidfd]) => Ok((value, status, pidfd)),
            Err(fds) => fail(fds, self.out_of_step("descriptors missing".into())),
        }
    }
}

/// Why a request to a fork server failed, and whether the server had it (and so may have
/// forked the child).
struct Failed {
    err: Error,
    delivered: bool,
    /// A delivered request's copy of the child's end of its control socket, and how many
    /// bootstrap bytes waited on it when the request went.
    waiting: Option<(LibraryFd<UnixStream>, usize)>,
}

impl Failed {
    /// Takes back the bootstrap that waited for the child of a delivered request: whether
    /// every byte of it was still there. A byte is read once, so then no process read any of
    /// it (not the server, which reads it before it forks, nor a child forked for a request
    /// that garbage before it made the server misread), and none can any more: no child runs
    /// it, and one forked for it finds its socket empty, and ends when the parent's end closes.
    fn take_back(&self) -> bool {
        let Some((end, queued)) = &self.waiting else {
            return false;
        };
        let mut bytes = vec![0u8; *queued];
        let mut taken = 0;
        while taken < *queued {
            match sys::recv_now(end.as_fd(), &mut bytes[taken..]) {
                Ok(0) => break,
                Ok(n) => taken += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        taken == *queued
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

/// The fork servers of a `fork` pool: its zygote, forked from the process when the pool is
/// built, and the zygote's spare, a copy the zygote forks of itself at once (and so a copy of
/// the process as it was when the pool was built). Either may be killed or die, or have its
/// stream broken: a dead zygote is replaced by its spare, which is asked for a new spare;
/// only when both are gone is a new zygote forked from the process, as it is then (see
/// [`Zygotes::launch`]).
pub(crate) struct Zygotes {
    servers: Mutex<ZygoteState>,
}

struct ZygoteState {
    /// Dropped first: the zygote reaps it.
    spare: Option<ForkServer>,
    zygote: Option<ForkServer>,
}

impl Zygotes {
    /// Forks the zygote from this process, and its spare from the zygote. A spare that cannot
    /// be made is not an error: the zygote serves alone, and is replaced from the process if
    /// it dies.
    pub(crate) fn fork() -> Result<Zygotes> {
        let zygote = ForkServer::fork_zygote()?;
        let spare = zygote.clone_server().ok();
        Ok(Zygotes {
            servers: Mutex::new(ZygoteState {
                spare,
                zygote: Some(zygote),
            }),
        })
    }

    /// Starts a child through the zygote and completes its bootstrap.
    ///
    /// A zygote that is dead, or dies or breaks its stream during the request, is replaced by
    /// its spare (a copy of the zygote, so of the process as it was when the pool was built),
    /// which forks a new spare of itself. When the spare is gone too, a new zygote is forked
    /// from this process as it is now (not as it was when the pool was built), subject to the
    /// [`ForkPolicy`](super::ForkPolicy): this process has the pool's thread now, so under
    /// `Refuse` it fails with [`ErrorKind::ForkUnsafe`].
    pub(crate) fn launch(&self, launch: Launch, fds: &[RawFd]) -> Result<Popen> {
        let (popen, build) = {
            let mut state = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
            let mut replaced = 0;
            loop {
                let zygote = state.live_zygote()?;
                match zygote.request(OP_FORK) {
                    Ok(popen) => break (popen, zygote.build),
                    Err(err) if replaced < 2 && err.kind() == ErrorKind::Disconnected => {
                        state.zygote = None;
                        replaced += 1;
                    }
                    Err(err) => return Err(err),
                }
            }
        };
        popen.handshake(&build, &Role::Run(launch), fds)?;
        Ok(popen)
    }
}

impl ZygoteState {
    /// The zygote, replaced if it is dead; with a spare, made again if it is dead.
    fn live_zygote(&mut self) -> Result<&ForkServer> {
        if let Some(zygote) = &self.zygote {
            if zygote.is_dead()? {
                self.zygote = None;
            }
        }
        if let Some(spare) = &self.spare {
            if spare.is_dead()? {
                self.spare = None;
            }
        }
        if self.zygote.is_none() {
            self.zygote = Some(match self.spare.take() {
                Some(spare) => spare,
                None => fork_zygote_again()?,
            });
        }
        let zygote = self
            .zygote
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::ForkServer, "the pool's zygote is missing"))?;
        if self.spare.is_none() {
            // Best effort: without a spare, the next death forks a zygote from the process.
            self.spare = zygote.clone_server().ok();
        }
        Ok(zygote)
    }
}

/// A pool's zygote and its spare are both gone: forks a new zygote from this process as it is
/// now. This process has other threads now (the pool's own, at least, and this call may run
/// on it), so the [`ForkPolicy`](super::ForkPolicy) decides, whatever the thread count says.
fn fork_zygote_again() -> Result<ForkServer> {
    let message = "the pool's zygote and its spare are dead, and a new zygote would be forked from this process as it is now, with other threads running: \
                   use StartMethod::ForkServer or StartMethod::Spawn, or set_fork_policy(ForkPolicy::Allow) if you are sure";
    match fork::fork_policy() {
        super::ForkPolicy::Refuse => {
            return Err(Error::new(ErrorKind::ForkUnsafe, message));
        }
        super::ForkPolicy::Warn => {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                log::warn!(target: "multiproc", "{message}");
            }
        }
        super::ForkPolicy::Allow => {}
    }
    ForkServer::fork_zygote().map_err(|err| {
        Error::new(
            err.kind(),
            "the pool's zygote and its spare are dead, and a new one cannot be forked",
        )
        .with_source(err)
    })
}

/// Whether SIGINT was blocked when this process (or the server it is a copy of) began to
/// serve: 0 before, 1 no, 2 yes.
static SIGINT_BLOCKED_BEFORE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

struct Kid {
    pid: i32,
    status: OwnedFd,
    pidfd: OwnedFd,
}

/// Closes, in a new child of the server, the descriptors of the server's other children,
/// without freeing their list: the free would write the allocator's pages, each one more
/// copy-on-write fault for the child (which ends with `_exit`, so nothing else is lost).
fn close_in_child(kids: Vec<Kid>) {
    let kids = std::mem::ManuallyDrop::new(kids);
    for kid in kids.iter() {
        // SAFETY: the server's descriptors, copies of which this child must not keep; closed
        // here once, and never again, since the list is never dropped.
        unsafe {
            libc::close(kid.status.as_raw_fd());
            libc::close(kid.pidfd.as_raw_fd());
        }
    }
}

/// The server's loop. Never returns: exits when the parent's end of `control` closes, or when
/// a request is malformed (the stream is then out of step; the parent sees the end of file
/// and replaces the server).
pub(crate) fn serve(control: UnixStream) -> ! {
    // Blocked, so that a Ctrl-C to the terminal's process group does not end the server (a
    // blocked signal stays pending, and a process's pending signals are not its children's);
    // and set to its default once here, so that the children, which inherit it, need not
    // set it back (a system call and two windows of code each): a SIGINT sent to a child
    // before it unblocks it stays pending, and ends the child when it does (its parent does
    // not wait for the child to be set up: see `launch_process`). Unblocked in a child only
    // if it was not blocked when the first server of this line began to serve (a copy of a
    // server serves too: it keeps what its original found).
    let was_blocked = sys::block_signal(libc::SIGINT);
    sys::default_signal(libc::SIGINT);
    let sigint = sys::SignalSet::of(libc::SIGINT);
    // The one-time set-up every child would otherwise do again on its own copy of the server,
    // and pay in page faults and lazy symbol binding (about ten faults per child): the fork
    // hook, the thread-local destructors of the incoming and outgoing descriptors (an empty
    // encoding makes the latter), the exit report's `exit(3)` handler.
    fd::settle_before_fork();
    handle::prepare_fork();
    let _ = handle::encode_with(|| Ok(Vec::new()));
    sys::hook_exit_report();
    // The exit function, for a child that ends with `exit(3)`: its children are joined first,
    // as in `main`. Registered after the exit report's handler, so that it runs before it
    // (`exit(3)` runs them in reverse): a child killed while it joins is reported killed, not
    // with the code it was ending with. (A zygote has its parent's, from before.)
    crate::current::register_exit_function();
    // The library's panic hook, which every child has (see `child::Setup::in_server`).
    child::install_panic_hook();
    // Standard output made (a buffer, behind a `OnceLock`) once here, not in every child that
    // flushes it as it ends: an allocation and a run of `Once` code a child faults in.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // The children's standard input, opened once (as `child::shared_dev_null` does), and not
    // registered: a child closes its copy itself, without writing to the registry.
    let null = sys::open_devnull().ok();
    let _ = SIGINT_BLOCKED_BEFORE.compare_exchange(
        0,
        if was_blocked { 2 } else { 1 },
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut kids: Vec<Kid> = Vec::new();
    // The status pipe of the next child, made while the server has nothing else to do rather
    // than between a request and its fork.
    let mut next_pipe = sys::pipe_nonblocking().ok();
    /// Children watched with a list of descriptors on the stack, not allocated: the server
    /// waits while its last child runs, and each page of the allocator it wrote meanwhile would
    /// be a copy-on-write copy.
    const ON_STACK: usize = 32;
    let watch = |fd: RawFd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let mut on_stack = [watch(-1); ON_STACK];
        let mut on_heap = Vec::new();
        let fds: &mut [libc::pollfd] = if kids.len() < ON_STACK {
            &mut on_stack[..kids.len() + 1]
        } else {
            on_heap.resize(kids.len() + 1, watch(-1));
            &mut on_heap
        };
        for (slot, fd) in fds.iter_mut().zip(
            std::iter::once(control.as_raw_fd()).chain(kids.iter().map(|k| k.pidfd.as_raw_fd())),
        ) {
            *slot = watch(fd);
        }
        if sys::poll_many(fds, None).is_err() {
            sys::exit_now(1);
        }
        // From the last: `swap_remove` moves into place a child already seen.
        for i in (0..kids.len()).rev() {
            if fds[i + 1].revents == 0 {
                continue;
            }
            let kid = kids.swap_remove(i);
            let code = sys::wait_child(kid.pid, false)
                .ok()
                .flatten()
                .unwrap_or(super::EXIT_SERVER_DIED);
            let _ = sys::write_full(kid.status.as_fd(), &code.to_le_bytes());
        }
        if fds[0].revents == 0 {
            continue;
        }
        let mut frame = [0u8; REQUEST_LEN];
        let received = match sys::recv_with_fds(control.as_fd(), &mut frame, 1) {
            Ok(Some(received)) => received,
            // End of file, or a short frame: out of step.
            Ok(None) | Err(_) => sys::exit_now(0),
        };
        let (Some((op, id)), Ok([sent])) =
            (parse_request(&frame), <[OwnedFd; 1]>::try_from(received))
        else {
            // Out of step: nothing after this can be trusted to start where a request does.
            sys::exit_now(1)
        };
        let refuse = |errno: i32| {
            let _ = sys::send_with_fds(control.as_fd(), &reply_frame(id, -errno, 0), &[]);
        };
        let (status_r, status_w) = match next_pipe.take().map_or_else(sys::pipe_nonblocking, Ok) {
            Ok(pipe) => pipe,
            Err(err) => {
                refuse(err.raw_os_error().unwrap_or(libc::EIO));
                continue;
            }
        };
        // Read and checked here, where that code is at hand, not in the child (see
        // `child::Served`).
        let (sent, served) = if op == OP_FORK_READY {
            (None, Some(child::prepare_served(UnixStream::from(sent))))
        } else {
            (Some(sent), None)
        };
        // Registered for the fork, so that the child finds registered already what it keeps
        // for life (its status pipe, its control socket) and writes nothing to the registry's
        // list (a page it would have to copy first); unregistered again in the server as
        // soon as it has forked. A copy of the server keeps neither.
        let for_child: Vec<RawFd> = if op == OP_CLONE {
            Vec::new()
        } else {
            let control = match (&sent, &served) {
                (_, Some(served)) => served.control_fd(),
                (Some(sent), None) => Some(sent.as_raw_fd()),
                (None, None) => None,
            };
            std::iter::once(status_w.as_raw_fd())
                .chain(control)
                .collect()
        };
        for &raw in &for_child {
            fd::register_for_life(raw);
        }
        // SAFETY: the server has one thread, as this loop starts none: the fork server was
        // exec'd to run nothing else; a pool's zygote was forked from the process (and a spare
        // from a zygote), and a forked child has only the thread that forked it. A lock that
        // another thread of the process held at the zygote's fork stays held here: that fork
        // was allowed by `fork::check_threads` (the process was single-threaded, or its
        // `ForkPolicy` said to fork anyway), and this fork copies nothing that one did not.
        let forked = unsafe { fork() };
        // In the server, once the parent has its answer (or at once, without a child): the
        // parent waits for the answer, not for this.
        let unregister = || {
            for &raw in &for_child {
                fd::unregister(raw);
            }
        };
        if forked.is_err() {
            unregister();
        }
        match forked {
            Ok(ForkResult::Child) if op == OP_CLONE => {
                // The copy opens its own `/dev/null`.
                drop((kids, control, status_r, status_w, next_pipe, null));
                match sent {
                    Some(sent) => serve(UnixStream::from(sent)),
                    None => sys::exit_now(1),
                }
            }
            Ok(ForkResult::Child) => {
                close_in_child(kids);
                drop((control, status_r, next_pipe));
                if let Some(null) = null.or_else(|| sys::open_devnull().ok()) {
                    sys::stdin_from(null.as_fd());
                }
                if SIGINT_BLOCKED_BEFORE.load(Ordering::Relaxed) != 2 {
                    sigint.unblock();
                }
                // The child writes its own exit code when it ends through the library (or
                // `exit(3)`): the code then survives this server. Registered, the pipe is
                // closed in the children it forks (the server registered it for this fork).
                let status_w = std::os::fd::IntoRawFd::into_raw_fd(status_w);
                fd::register_for_life(status_w);
                sys::report_exit_on(status_w);
                match (sent, served) {
                    (_, Some(served)) => child::run_served(served),
                    (Some(sent), None) => child::serve(UnixStream::from(sent)),
                    (None, None) => sys::exit_now(crate::bootstrap::EXIT_BOOTSTRAP_FAILED),
                }
            }
            Ok(ForkResult::Parent { child }) => {
                let pid = child.as_raw();
                let answered = match sys::pidfd_open(pid) {
                    Ok(pidfd) => {
                        let fds = [status_r.as_raw_fd(), pidfd.as_raw_fd()];
                        let _ = sys::send_with_fds(control.as_fd(), &reply_frame(id, pid, 2), &fds);
                        Some(pidfd)
                    }
                    Err(err) => {
                        // SAFETY: `pid` is our unreaped child.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        let _ = sys::wait_child(pid, false);
                        refuse(err.raw_os_error().unwrap_or(libc::EIO));
                        None
                    }
                };
                unregister();
                drop((sent, served));
                if let Some(pidfd) = answered {
                    kids.push(Kid {
                        pid,
                        status: status_w,
                        pidfd,
                    });
                    if next_pipe.is_none() {
                        next_pipe = sys::pipe_nonblocking().ok();
                    }
                }
            }
            Err(err) => refuse(err as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_frame_reads_back() {
        for op in [OP_FORK, OP_FORK_READY, OP_CLONE] {
            let frame = request_frame(op, 0x0102_0304_0506_0708);
            assert_eq!(parse_request(&frame), Some((op, 0x0102_0304_0506_0708)));
        }
    }

    #[test]
    fn a_malformed_request_is_refused() {
        let good = request_frame(OP_FORK, 7);
        // One stray byte before it: every field shifts.
        let mut shifted = [b'!'; REQUEST_LEN];
        shifted[1..].copy_from_slice(&good[..REQUEST_LEN - 1]);
        assert_eq!(parse_request(&shifted), None);
        let mut bad_magic = good;
        bad_magic[0] ^= 1;
        assert_eq!(parse_request(&bad_magic), None);
        assert_eq!(parse_request(&request_frame(b'X', 7)), None);
        let mut padded = good;
        padded[6] = 1;
        assert_eq!(parse_request(&padded), None);
        assert_eq!(parse_request(&request_frame(OP_FORK, 0)), None);
    }

    /// A client of a fake server: a `sleep` of ours stands for the server's process, and the
    /// other end of its socket (returned) for its stream; with the write end of its status
    /// pipe.
    fn fake_server() -> (std::process::Child, ForkServer, UnixStream, OwnedFd) {
        let sleeper = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = sleeper.id() as i32;
        let pidfd = sys::pidfd_open(pid).unwrap();
        let (status_r, status_w) = sys::pipe().unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let server = ForkServer::new(
            Popen::served(
                pid,
                LibraryFd::new(ours),
                LibraryFd::new(status_r),
                LibraryFd::new(pidfd),
            ),
            BuildId::current(),
        );
        (sleeper, server, theirs, status_w)
    }

    /// A fake server on a socketpair, answering one request wrongly: the client must refuse
    /// the answer and kill the "server" (a `sleep` of ours stands for it).
    #[test]
    fn an_answer_out_of_step_kills_the_server() {
        use std::os::unix::process::ExitStatusExt;
        for case in 0..4 {
            let (mut sleeper, server, theirs, status_w) = fake_server();
            let fake = std::thread::spawn(move || {
                let mut frame = [0u8; REQUEST_LEN];
                let fds = sys::recv_with_fds(theirs.as_fd(), &mut frame, 1)
                    .unwrap()
                    .unwrap();
                let (op, id) = parse_request(&frame).unwrap();
                assert_eq!((op, fds.len()), (OP_FORK, 1));
                let (a, b) = sys::pipe().unwrap();
                let two = [a.as_raw_fd(), b.as_raw_fd()];
                let (reply, fds) = match case {
                    // The answer to another request.
                    0 => (reply_frame(id + 1, 4242, 2), &two[..]),
                    // A descriptor short.
                    1 => (reply_frame(id, 4242, 2), &two[..1]),
                    // Not an answer.
                    2 => {
                        let mut reply = reply_frame(id, 4242, 2);
                        reply[0] = b'!';
                        (reply, &two[..])
                    }
                    // An error with descriptors.
                    _ => (reply_frame(id, -libc::EAGAIN, 2), &two[..]),
                };
                sys::send_with_fds(theirs.as_fd(), &reply, fds).unwrap();
                theirs
            });
            let err = server
                .request(OP_FORK)
                .err()
                .expect("an answer out of step");
            assert_eq!(err.kind(), ErrorKind::Disconnected, "case {case}: {err}");
            assert!(err.to_string().contains("out of step"), "{err}");
            let _theirs = fake.join().unwrap();
            assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGKILL));
            drop(status_w);
            drop(server);
        }
    }

    /// `live_server` no longer looks for a dead server before a request: the request itself
    /// must fail with `Disconnected` (on which the caller replaces the server), whether the
    /// dead server's socket refuses the request or reads as an end of file.
    #[test]
    fn a_request_to_a_dead_server_is_disconnected() {
        for closed_before_request in [true, false] {
            let (mut sleeper, server, theirs, status_w) = fake_server();
            // A dead server: its end is closed, before the request or once it has read it.
            let fake = std::thread::spawn(move || {
                if !closed_before_request {
                    let mut frame = [0u8; REQUEST_LEN];
                    let _ = sys::recv_with_fds(theirs.as_fd(), &mut frame, 1);
                }
                drop(theirs);
            });
            let fake = if closed_before_request {
                fake.join().unwrap();
                None
            } else {
                Some(fake)
            };
            let err = server.request(OP_FORK).err().expect("no server to answer");
            assert_eq!(
                err.kind(),
                ErrorKind::Disconnected,
                "closed before: {closed_before_request}: {err}"
            );
            if let Some(fake) = fake {
                fake.join().unwrap();
            }
            let _ = sleeper.kill();
            let _ = sleeper.wait();
            drop(status_w);
            drop(server);
        }
    }

    #[test]
    fn a_reply_frame_reads_back() {
        let frame = reply_frame(9, 1234, 2);
        assert_eq!(parse_reply(&frame), (REPLY_MAGIC, 9, 1234, 2));
        let frame = reply_frame(10, -libc::EAGAIN, 0);
        assert_eq!(parse_reply(&frame), (REPLY_MAGIC, 10, -libc::EAGAIN, 0));
    }
}
