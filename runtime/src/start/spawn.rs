//! The `spawn` start method: fork + exec of the running binary.
//!
//! The child is a fresh process running `/proc/self/exe` (the binary this process runs, even if
//! the file on disk was replaced or deleted since), or the executable set with
//! [`set_executable`]. Its argv is the parent's `argv[0]`, [`CHILD_FLAG`]
//! and the number of its control socket; everything else (build identity, entry name, encoded
//! arguments) travels on that socket. The socket is the only descriptor it inherits besides
//! stdio, and the child marks it close-on-exec at once, so nothing of the bootstrap reaches
//! grandchildren.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{lock_executable, LaunchKey, Popen};
use crate::bootstrap::{Launch, Role, CHILD_FLAG};
use crate::error::{Error, Result};
use crate::registry::BuildId;
use crate::{fd, sys};

/// Sets the binary that `spawn` and the fork server execute (Python's `set_executable`);
/// `None` restores the default, `/proc/self/exe`.
///
/// The binary must be this very build: the child compares it with its parent's executable
/// (the same file, or a file with the same bytes, such as a copy) and its registry of entry
/// points with the parent's, and refuses to run otherwise
/// ([`ErrorKind::BuildMismatch`](crate::ErrorKind::BuildMismatch) on both sides; the parent's
/// error names the binary). A copy is read whole, and compared byte for byte with the parent's
/// binary, by every child started from it (about a millisecond per 10 MB from the page cache);
/// the default binary costs no such read.
pub fn set_executable(path: Option<PathBuf>) {
    *lock_executable() = path;
}

fn executable() -> (PathBuf, BuildId) {
    let set = lock_executable().clone();
    match set {
        Some(path) => {
            let build = BuildId::with_executable(&path);
            (path, build)
        }
        None => (PathBuf::from("/proc/self/exe"), BuildId::current()),
    }
}

/// Spawns a child that runs `launch`, and completes its bootstrap.
pub(crate) fn launch(launch: Launch, fds: &[RawFd]) -> Result<Popen> {
    let (popen, build) = exec_child()?;
    popen.handshake(&build, &Role::Run(launch), fds)?;
    Ok(popen)
}

/// Starts the binary with a control socket; the caller does the handshake with the returned
/// build identity.
pub(crate) fn exec_child() -> Result<(Popen, BuildId)> {
    let (exe, build) = executable();
    let key = LaunchKey::new(exe.clone())?;
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| OsString::from("multiproc-child"));
    // The socket made and the binary started under the lock a fork holds: a child forked by
    // another thread meanwhile (the pool's driver thread starts workers beside the caller's
    // forks) would keep both ends of the control socket, and the write end of the pipe whose
    // end of file tells `spawn` that the exec went through, which would keep `spawn` waiting
    // for as long as that child lives.
    let (parent_end, pid) = fd::made(|fds| {
        let (parent_end, child_end) =
            UnixStream::pair().map_err(|err| Error::io("cannot create a control socket", err))?;
        let fd = child_end.as_raw_fd();
        // Without a fork where the C library allows (the child then holds the socket
        // across its exec, and no copy of it is left in this process).
        if let Some(spawned) = spawn_keeping(&exe, &argv0, child_end.as_fd()) {
            // Failed before anything is registered: a registered descriptor dropped here
            // would wait for the registry's lock, which this thread holds.
            let pid = spawned?;
            return Ok::<_, Error>((fds.own(parent_end), pid));
        }
        let mut command = Command::new(&exe);
        command
            .arg0(&argv0)
            .arg(CHILD_FLAG)
            .arg(fd.to_string())
            .stdin(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only calls fcntl,
        // which is async-signal-safe; it clears close-on-exec on the one descriptor the
        // child must inherit.
        unsafe {
            command.pre_exec(move || {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|err| Error::io(format!("cannot execute {}", exe.display()), err))?;
        // `child` holds no descriptor (stdin is /dev/null, stdout/stderr inherited); the
        // Popen waits for and reaps the process. Registered last, after what may fail.
        Ok::<_, Error>((fds.own(parent_end), child.id() as i32))
    })?;
    Ok((Popen::direct(pid, parent_end)?.with_key(key), build))
}

/// Starts `exe` as a spawned child whose control socket is `control`, through
/// `posix_spawn` (see `sys::spawn_keeping`); `None` where that cannot pass the socket, and
/// the caller forks and executes instead.
fn spawn_keeping(exe: &Path, argv0: &OsStr, control: BorrowedFd<'_>) -> Option<Result<i32>> {
    let c = |s: &OsStr| CString::new(s.as_bytes()).ok();
    let fd = control.as_raw_fd().to_string();
    let (Some(program), Some(argv0), Some(flag), Some(fd)) = (
        c(exe.as_os_str()),
        c(argv0),
        c(OsStr::new(CHILD_FLAG)),
        c(OsStr::new(&fd)),
    ) else {
        // A NUL in a path or in argv[0]: let `Command` say so.
        return None;
    };
    sys::spawn_keeping(&program, &[&argv0, &flag, &fd], control).map(|spawned| {
        spawned.map_err(|err| Error::io(format!("cannot execute {}", exe.display()), err))
    })
}
