//! Processes and threads: pidfds, reaping our own children, exit codes, ending at once (and
//! reporting the exit code first), counting threads, signal dispositions, fork hooks, a
//! child's standard input.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `pidfd_open(2)`: a descriptor that refers to process `pid` for its whole life; it becomes
/// readable when the process exits, and signals sent through it cannot reach a recycled pid.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOSYS) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "pidfd_open is not supported by this kernel (multiproc needs Linux 5.3 or later)",
            ));
        }
        return Err(err);
    }
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns (O_CLOEXEC is
    // implied for pidfds).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`. A process that already exited is not an error.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

/// `waitpid(pid)` for one of our own children: returns its exit code in Python's convention
/// (`n` for an exit, `-signal` for a death by signal), or `None` with `nohang` while it runs.
pub(crate) fn wait_child(pid: i32, nohang: bool) -> io::Result<Option<i32>> {
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out pointer; we only ever wait for a pid we forked.
        let rc = unsafe { libc::waitpid(pid, &mut status, flags) };
        if rc == 0 {
            return Ok(None);
        }
        if rc == pid {
            return Ok(Some(exitcode_from_status(status)));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Python's `os.waitstatus_to_exitcode`.
pub(crate) fn exitcode_from_status(status: i32) -> i32 {
    if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// Ends the calling process at once: no atexit handlers, no unwinding, no destructors.
pub(crate) fn exit_now(code: i32) -> ! {
    report_exit(code);
    // SAFETY: _exit is async-signal-safe and always sound to call.
    unsafe { libc::_exit(code) }
}

/// Whether the C library knows this process to have a single thread: glibc's
/// `__libc_single_threaded` (2.32 and later) is true until the first `pthread_create` (every
/// Rust thread is one) and stays false afterwards. `false` means "maybe several": count them.
/// Found with `dlsym` once, so that a C library without it (musl, an older glibc) only loses
/// the shortcut. About 5 ns, where counting takes a `stat(2)` in `/proc` (1 to 5 us).
pub(crate) fn known_single_threaded() -> bool {
    static FLAG: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let address = *FLAG.get_or_init(|| {
        // SAFETY: a lookup of a NUL-terminated symbol name in the global scope; it returns the
        // symbol's address or null.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) as usize }
    });
    if address == 0 {
        return false;
    }
    // SAFETY: the address of glibc's `char __libc_single_threaded`, which lives as long as the
    // process. Read atomically all the same: while it is true this thread is the only one and
    // nothing else writes it; once false it stays false.
    let flag = unsafe { &*(address as *const std::sync::atomic::AtomicU8) };
    flag.load(std::sync::atomic::Ordering::Acquire) != 0
}

/// Number of threads of this process.
///
/// One `stat(2)` of `/proc/self/task`, whose link count the kernel reports as the number of
/// threads plus two (`proc_task_getattr`, since Linux 2.6): a microsecond, where reading and
/// parsing `/proc/self/stat` takes nine system calls and the kernel's formatting of fifty
/// fields (8 to 25 us, on the path of every fork start). Falls back to `/proc/self/stat` if
/// the link count does not look like that.
pub(crate) fn thread_count() -> io::Result<usize> {
    // SAFETY: `libc::stat` is plain old data, for which all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path, and `st` is a valid out-pointer.
    let rc = unsafe { libc::stat(c"/proc/self/task".as_ptr(), &mut st) };
    if rc == 0 && st.st_nlink >= 3 {
        return Ok(st.st_nlink as usize - 2);
    }
    thread_count_from_stat()
}

/// Number of threads of this process, from `/proc/self/stat`.
fn thread_count_from_stat() -> io::Result<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    rest.split_whitespace()
        .nth(17)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("cannot read the thread count from /proc/self/stat"))
}

/// `/dev/null` opened for reading, close-on-exec: what a child's standard input becomes.
pub(crate) fn open_devnull() -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated path; the result is a new descriptor or -1.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `null` (from [`open_devnull`]) the standard input of this process, as CPython does in
/// every child.
pub(crate) fn stdin_from(null: OwnedFd) {
    if null.as_raw_fd() == 0 {
        // Standard input was closed and `/dev/null` took its place: keep it, across exec too.
        // SAFETY: F_SETFD on a descriptor we own, which then stays open as fd 0.
        unsafe { libc::fcntl(0, libc::F_SETFD, 0) };
        std::mem::forget(null);
    } else {
        // SAFETY: dup2 onto fd 0 of a descriptor we own (closed when `null` drops); fd 0 is
        // replaced atomically.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
}

/// Sets the disposition of `signal` to its default.
pub(crate) fn default_signal(signal: i32) {
    // SAFETY: SIG_DFL is always a valid disposition.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}

/// Ignores `signal`.
pub(crate) fn ignore_signal(signal: i32) {
    // SAFETY: SIG_IGN is always a valid disposition.
    unsafe { libc::signal(signal, libc::SIG_IGN) };
}

/// The name of a signal (`"SIGKILL"`), or its number.
pub(crate) fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

/// Registers `handler` to run in the child after every `fork(2)` of this process
/// (`pthread_atfork`). The handler runs where only async-signal-safe work is allowed.
pub(crate) fn at_fork_child(handler: extern "C" fn()) -> io::Result<()> {
    // SAFETY: registers a plain `extern "C" fn()` with no prepare or parent handler; the
    // handler is a static function that lives for the whole program.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(handler)) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Where this process reports its own exit code, `pid << 32 | fd`; 0 for nowhere. The pid is
/// the process that asked: a forked copy (another pid) inherits the word but does not report.
static EXIT_REPORT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes this process write its exit code (a little-endian `i32`, as `waitpid` will see it) on
/// `fd` just before it ends through [`exit_now`] or `exit(3)` (`std::process::exit`, glibc
/// only): a fork-server child's status pipe, so that its code survives the death of the
/// server that would otherwise report it. `fd` must stay open for the life of the process.
pub(crate) fn report_exit_on(fd: RawFd) {
    let pid = u64::from(std::process::id());
    let word = pid << 32 | u64::from(fd as u32);
    EXIT_REPORT.store(word, std::sync::atomic::Ordering::SeqCst);
    #[cfg(target_env = "gnu")]
    {
        extern "C" {
            // glibc's `on_exit(3)`: like `atexit`, but the handler is given the exit status.
            fn on_exit(
                handler: extern "C" fn(libc::c_int, *mut libc::c_void),
                arg: *mut libc::c_void,
            ) -> libc::c_int;
        }
        extern "C" fn on_exit_report(status: libc::c_int, _arg: *mut libc::c_void) {
            report_exit(status);
        }
        static HOOKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !HOOKED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: registers a static function that only reads an atomic and writes four
            // bytes; it ignores its argument, which is null.
            unsafe { on_exit(on_exit_report, std::ptr::null_mut()) };
        }
    }
}

/// Writes `code` where [`report_exit_on`] said, if this process asked. Async-signal-safe.
fn report_exit(code: i32) {
    let word = EXIT_REPORT.load(std::sync::atomic::Ordering::SeqCst);
    if word == 0 {
        return;
    }
    let (pid, fd) = ((word >> 32) as u32, word as u32 as RawFd);
    if pid != std::process::id() {
        return;
    }
    // What `waitpid` will read: the low byte.
    let bytes = (code & 0xff).to_le_bytes();
    // SAFETY: write(2) of a local buffer on the descriptor this process set aside for it; a
    // short or failed write leaves the code to the fork server, as before.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// Runs `handler` when `signal` arrives, with `SA_RESTART` (most interrupted calls resume).
/// The handler runs where only async-signal-safe work is allowed: storing to an atomic, say.
pub(crate) fn on_signal(signal: i32, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: an all-zero `sigaction` is a valid value (no flags, an empty mask).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa_mask` is a `sigset_t` we own; sigemptyset only writes it.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is initialised and names a plain `extern "C"` function that lives as
    // long as the program; the old action is not asked for (null).
    if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The resident size of this process now, in bytes: the second field of `/proc/self/statm`
/// (pages) times the page size.
pub(crate) fn resident_bytes() -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/self/statm"))?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages.saturating_mul(u64::try_from(page).unwrap_or(4096)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_bytes_counts_touched_memory_while_it_is_held() {
        let before = resident_bytes().expect("statm");
        let block = vec![1u8; 32 << 20];
        let held = resident_bytes().expect("statm");
        assert!(held >= before + (24 << 20), "{before} then {held}");
        drop(block);
    }

    #[test]
    fn a_process_with_threads_is_not_known_single_threaded() {
        // The test harness runs this on a thread of its own.
        assert!(!known_single_threaded());
        assert!(thread_count().unwrap() >= 2);
    }

    #[test]
    fn thread_count_agrees_with_proc_self_stat() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            ready_tx.send(()).unwrap();
            rx.recv().ok();
        });
        ready_rx.recv().unwrap();
        // Other tests come and go on their own threads: trust a reading taken between two
        // equal readings of `/proc/self/stat`.
        let agreed = (0..1000).find_map(|_| {
            let before = thread_count_from_stat().unwrap();
            let fast = thread_count().unwrap();
            let after = thread_count_from_stat().unwrap();
            (before == after).then_some((fast, before))
        });
        tx.send(()).unwrap();
        other.join().unwrap();
        let (fast, slow) = agreed.expect("the thread count never held still");
        assert_eq!(fast, slow);
        assert!(fast >= 2, "{fast}");
    }
}
