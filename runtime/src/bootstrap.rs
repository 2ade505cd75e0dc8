//! The bootstrap protocol between a parent and a child it starts: what travels on the child's
//! control socket until the child runs its entry point, and both sides of that handshake.
//!
//! 1. A spawned child finds its control socket in its argv ([`CHILD_FLAG`]); the parent
//!    writes, as [`wire`] frames: a [`Credential`] (spawned children only), the parent's
//!    [`BuildId`], the [`Role`] (run a [`Launch`], or become a fork server after some
//!    [`PreloadCall`]s), then the launch's descriptors in one `SCM_RIGHTS` message.
//! 2. The child ([`authenticate`], [`receive`]) checks where the bootstrap comes from and that
//!    it is its parent's build, and answers a [`ChildMessage`]: `Ready`, or `Failed` with a
//!    [`ErrorKind`] before it exits with [`EXIT_BOOTSTRAP_FAILED`] ([`refuse`]).
//! 3. The parent ([`handshake`]) waits for that answer, at most [`BOOTSTRAP_TIMEOUT`]; later
//!    the child may send a panic report or its returned value ([`ReturnedBytes`]).
//!
//! The start methods (`start`), the child's side (`child`) and the pool depend on this module;
//! it depends on none of them.

use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::context::StartMethod;
use crate::error::{Error, ErrorKind, RemotePanic, Result};
use crate::registry::{self, BuildId};
use crate::{sys, wire};

/// `argv[1]` of a spawned child; `argv[2]` is the number of its control socket. The bootstrap data
/// itself travels on that socket, never in argv.
pub(crate) const CHILD_FLAG: &str = "--multiproc-child";

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
    ForkServer { preload: Vec<PreloadCall> },
    /// Run an entry point without answering `Ready` (a refusal is still answered): the parent
    /// does not wait for it (a `Process` started through the fork server).
    RunUnacknowledged(Launch),
}

/// The first frame on the control socket of a spawned child, parent to child: the name of the
/// parent's launch key, a descriptor that the parent holds open until the child has answered.
/// The child finds the key in its parent's descriptor table (`/proc/<ppid>/fd/<fd>`), which
/// only its parent can fill: see [`authenticate`] for what this proves, and what not.
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

    pub(crate) fn key_name(key: &[u8; 12]) -> String {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        format!("launch-{hex}")
    }
}

/// A [`Preload`](crate::Preload) as it travels to the server: the entry point's name and its
/// encoded arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PreloadCall {
    pub entry: String,
    pub payload: Vec<u8>,
}

/// Frames from child to parent on the control socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ChildMessage {
    /// The bootstrap was accepted; the entry point is about to run.
    Ready,
    /// The bootstrap was refused.
    Failed { kind: ErrorKind, message: String },
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

/// How long a parent waits for a spawned child to acknowledge its bootstrap.
pub(crate) const BOOTSTRAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Exit code of a child whose bootstrap failed (EX_SOFTWARE).
pub(crate) const EXIT_BOOTSTRAP_FAILED: i32 = 70;

/// Exit code reported for a fork-server child whose server died before it could say (as
/// CPython): a death by signal, since a child reports its own exit code (see `forkserver`).
pub(crate) const EXIT_SERVER_DIED: i32 = 255;

/// The parent's half of the bootstrap, without waiting for the answer: the credential (a
/// spawned child's), the build identity, the role and the descriptors, all before `deadline`.
/// Returns how many bytes of frames it wrote (the descriptors' message not counted).
pub(crate) fn send(
    control: &UnixStream,
    credential: Option<&Credential>,
    build: &BuildId,
    role: &Role,
    fds: &[RawFd],
    deadline: Option<Instant>,
) -> Result<usize> {
    // The frames in one write; the descriptors after them, in a message of their own.
    let mut frames = wire::Frames::default();
    if let Some(credential) = credential {
        frames.push(credential)?;
    }
    frames.push(build)?;
    frames.push(role)?;
    frames.send_until(control, deadline)?;
    wire::send_fds_until(control, fds, deadline)?;
    Ok(frames.len())
}

/// Parent side of the handshake (spawn, forkserver): sends the credential (a spawned child's),
/// the build identity, the role and the descriptors, then waits for `Ready`, all before
/// `deadline`. `key` is the credential and the binary the child runs, which the parent names
/// when the child says it is another build; `kill` kills the child that did not answer in
/// time. The error says what the child said, or why it said nothing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn handshake(
    control: &UnixStream,
    pid: i32,
    key: Option<(Credential, &Path)>,
    build: &BuildId,
    role: &Role,
    fds: &[RawFd],
    deadline: Option<Instant>,
    kill: impl FnOnce(),
) -> Result<()> {
    let sent = send(
        control,
        key.as_ref().map(|(credential, _)| credential),
        build,
        role,
        fds,
        deadline,
    )
    .map(drop);
    let reply = wire::recv::<ChildMessage>(control, deadline);
    let failure = match (sent, reply) {
        (Ok(()), Ok(Some(ChildMessage::Ready))) => return Ok(()),
        (
            _,
            Ok(Some(ChildMessage::Failed {
                kind: ErrorKind::BuildMismatch,
                message,
            })),
        ) => {
            // The child says no more than that; the parent knows which binary it ran.
            let exe = key
                .as_ref()
                .map(|(_, executable)| format!(" (the binary {})", executable.display()))
                .unwrap_or_default();
            Error::new(ErrorKind::BuildMismatch, format!("{message}{exe}"))
        }
        (_, Ok(Some(ChildMessage::Failed { kind, message }))) => Error::new(kind, message),
        (_, Err(err)) if err.kind() == ErrorKind::Timeout => {
            kill();
            Error::new(
                ErrorKind::Bootstrap,
                format!("the child (pid {pid}) did not answer its bootstrap within {BOOTSTRAP_TIMEOUT:?}"),
            )
        }
        // Hung up without a word: an end of file, or a reset when it left the frames unread
        // (a program that is not multiproc's exits without reading them), whatever became of
        // the frames sent (a pipe broken under them, if it ended first).
        (_, Ok(None)) => exited_during_bootstrap(key.as_ref().map(|(_, exe)| *exe)),
        (_, Err(err)) if err.kind() == ErrorKind::Disconnected => {
            exited_during_bootstrap(key.as_ref().map(|(_, exe)| *exe))
        }
        (Err(err), _) => err,
        (Ok(()), Ok(Some(other))) => Error::new(
            ErrorKind::Bootstrap,
            format!("unexpected bootstrap reply {other:?}"),
        ),
        (Ok(()), Err(err)) => err,
    };
    Err(failure)
}

/// The error of a child that ended during its bootstrap without answering, run from
/// `executable` (a spawned child's binary: named when `set_executable` chose it).
fn exited_during_bootstrap(executable: Option<&Path>) -> Error {
    match executable.filter(|exe| *exe != Path::new("/proc/self/exe")) {
        Some(exe) => Error::new(
            ErrorKind::Bootstrap,
            format!(
                "the child exited during its bootstrap without answering: is {} a multiproc \
                 program of this build, set with `set_executable`? (a child that refused its \
                 parent says why on its standard error)",
                exe.display()
            ),
        ),
        None => Error::new(
            ErrorKind::Bootstrap,
            "the child exited during its bootstrap without answering (was `multiproc::init()` \
             called first in main? did the child refuse its parent? it then says why on its \
             standard error)",
        ),
    }
}

/// What a child says when it is not its parent's build: never which build either one is.
pub(crate) const NOT_THE_PARENTS_BUILD: &str =
    "the child binary is not the parent's build; rebuild and start again";

/// Why a spawned child refuses its bootstrap before reading any of it.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The bootstrap does not come from the multiproc library of this process's parent:
    /// nothing is answered.
    Foreign(String),
    /// It does, but the parent runs other code: the parent is told so.
    OtherBuild,
}

/// Checks that the bootstrap on `control` comes from the multiproc library of this process's
/// parent, running this same code, before a byte of the bootstrap itself is read.
///
/// # Threat model
///
/// `--multiproc-child N` is on the command line of every spawned child, so anyone who can run
/// the binary can start it that way, with a socket of their own on descriptor `N` and frames of
/// their choice; without this check such a process could run any registered entry point with
/// any arguments, including the library's own (a pool worker, the fork server). The child
/// accepts the bootstrap only when:
///
/// 1. the peer of its control socket (`SO_PEERCRED`, the process that made the socket pair) is
///    its parent (`getppid()`), with this process's effective user and group: a process that is
///    not our parent cannot drive us through a socket it hands over, and another user cannot
///    drive a set-user-ID or set-group-ID build;
/// 2. the parent holds open the launch key that the first frame names: a memory file whose
///    name holds 96 random bits (`/proc/<ppid>/fd/<fd>`). Only the parent's library makes
///    and names it, per launch, and closes it once the child has answered, so a program that
///    merely runs the binary as its child, with made-up or replayed frames, is refused — even
///    when that program is this very binary;
/// 3. the parent runs the same code: its executable is the same file (device and inode of
///    `/proc/<ppid>/exe` and `/proc/self/exe`), or has the same bytes when `set_executable`
///    named another file. This one is answered ([`ErrorKind::BuildMismatch`]), without
///    saying which build either side is.
///
/// The parent is checked again to be our parent after the key was read, so that its pid
/// cannot have been recycled meanwhile. A foreign parent is never answered: the child says
/// why on its standard error, without identifying data, and exits with
/// [`EXIT_BOOTSTRAP_FAILED`].
///
/// What it cannot stop: a process that can already act as this user against the parent or
/// the child. Anything that can `ptrace` either (or write their memory, or take their
/// descriptors with `pidfd_getfd`) can make them do anything, this check included; and a
/// process of the same user can create a key itself and then `exec` this binary, which makes
/// it a parent that passes every check (same file, key in its descriptor table) while a
/// sibling it forked before the `exec` writes the frames. Such a process gains nothing it
/// could not do by running the binary itself — except under file capabilities, which a
/// `spawn` or `forkserver` child of such a binary must not be trusted with. Children of the
/// fork server (forks of the server, authenticated when it was spawned, that receive their
/// bootstrap from the original parent over a socket it made) and `fork` children are not
/// checked: nothing outside the library can reach them.
///
/// The parent's key and executable are read through `/proc/<ppid>`, which needs the right to
/// read the parent's state (`PTRACE_MODE_READ`); a parent that is not dumpable (it gained
/// privileges by its `exec`) and a child without `CAP_SYS_PTRACE` fail the check.
pub(crate) fn authenticate(
    control: &UnixStream,
    deadline: Option<std::time::Instant>,
) -> Result<(), Refusal> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    use nix::unistd::{getegid, geteuid, getppid};
    let foreign = |why: &str| Refusal::Foreign(why.to_string());
    let peer = getsockopt(control, PeerCredentials).map_err(|err| {
        Refusal::Foreign(format!("cannot read the credentials of its peer: {err}"))
    })?;
    let parent = getppid().as_raw();
    if peer.pid() != parent {
        return Err(foreign(
            "the control socket was not made by this process's parent",
        ));
    }
    if peer.uid() != geteuid().as_raw() || peer.gid() != getegid().as_raw() {
        return Err(foreign("the parent runs as another user or group"));
    }
    let credential = match wire::recv::<Credential>(control, deadline) {
        Ok(Some(credential)) => credential,
        Ok(None) => return Err(foreign("the parent closed the control socket")),
        Err(_) => return Err(foreign("no launch key in the first frame")),
    };
    let named = std::fs::read_link(format!("/proc/{parent}/fd/{}", credential.fd))
        .ok()
        .and_then(|target| target.to_str().map(str::to_string));
    let held = named.is_some_and(|target| {
        target
            .strip_prefix(&credential.link_target())
            .is_some_and(|rest| rest.is_empty() || rest == " (deleted)")
    });
    if !held {
        return Err(foreign("the parent holds no such launch key"));
    }
    let same = registry::same_code(
        std::path::Path::new(&format!("/proc/{parent}/exe")),
        std::path::Path::new("/proc/self/exe"),
    );
    // Still our parent: the pid read above was not recycled by another process meanwhile.
    if getppid().as_raw() != parent {
        return Err(foreign("the parent exited during the bootstrap"));
    }
    match same {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal::OtherBuild),
        Err(_) => Err(foreign("cannot read the parent's executable")),
    }
}

/// Child side of the handshake, after [`authenticate`] for a spawned child: reads the build
/// identity and the role. A bootstrap of another build, or one that cannot be read, is refused
/// ([`refuse`]); a parent that hangs up first is left without a word.
pub(crate) fn receive(control: &UnixStream, deadline: Option<Instant>) -> Role {
    match try_receive(control, deadline) {
        Ok(role) => role,
        Err(None) => sys::exit_now(EXIT_BOOTSTRAP_FAILED),
        Err(Some((kind, message))) => refuse(control, kind, message),
    }
}

/// [`receive`], for a caller that must go on whatever the bootstrap holds (a fork server that
/// reads its child's bootstrap before it forks the child): the role, or what the child is to
/// refuse with (`Some`), or nothing to say when the parent hung up first (`None`).
pub(crate) fn try_receive(
    control: &UnixStream,
    deadline: Option<Instant>,
) -> std::result::Result<Role, Option<(ErrorKind, String)>> {
    let unreadable = |err: Error| {
        Some((
            ErrorKind::Bootstrap,
            format!("cannot read the bootstrap: {}", err.chain()),
        ))
    };
    let build = match wire::recv::<BuildId>(control, deadline) {
        Ok(Some(build)) => build,
        Ok(None) => return Err(None),
        Err(err) => return Err(unreadable(err)),
    };
    if build != BuildId::current() {
        return Err(Some((
            ErrorKind::BuildMismatch,
            NOT_THE_PARENTS_BUILD.to_string(),
        )));
    }
    match wire::recv::<Role>(control, deadline) {
        Ok(Some(role)) => Ok(role),
        Ok(None) => Err(None),
        Err(err) => Err(unreadable(err)),
    }
}

/// Says why the bootstrap is refused, on both sides, and exits.
pub(crate) fn refuse(control: &UnixStream, kind: ErrorKind, message: String) -> ! {
    sys::to_stderr(format_args!("multiproc: {message}"));
    let _ = wire::send(control, &ChildMessage::Failed { kind, message });
    sys::exit_now(EXIT_BOOTSTRAP_FAILED)
}
