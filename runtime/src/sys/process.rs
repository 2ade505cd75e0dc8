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

/// Waits until our own child `pid` has ended, without reaping it (`waitid` with `WNOWAIT`): a
/// `waitpid` then reaps it at once. Returns at once if it has ended already, or if it is no
/// child of ours any more (reaped meanwhile: `ECHILD` is not an error here).
pub(crate) fn wait_exited(pid: i32) -> io::Result<()> {
    loop {
        // SAFETY: `siginfo_t` is plain old data, for which all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out pointer; `WNOWAIT` leaves the child unreaped, and we
        // only ever wait for a pid we forked.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(()),
            _ => return Err(err),
        }
    }
}

/// Whether this process's children are reaped as they end without a `wait` (SIGCHLD ignored,
/// or `SA_NOCLDWAIT`): then a child's pid may name another process as soon as it ends, and
/// only a pidfd opened at once names it safely. `true` too if that cannot be known.
pub(crate) fn children_reaped_unasked() -> bool {
    // SAFETY: an all-zero `sigaction` is a valid out-value; with a null new action,
    // `sigaction` only reads the current one into it.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: see above: `action` is a valid, writable `sigaction`.
    if unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut action) } != 0 {
        return true;
    }
    action.sa_sigaction == libc::SIG_IGN || action.sa_flags & libc::SA_NOCLDWAIT != 0
}

/// Sends `signal` to our own child `pid`, which the caller keeps from being reaped meanwhile
/// (so that the pid cannot belong to another process); a child that has ended (a zombie) is
/// not an error.
pub(crate) fn signal_child(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) has no memory arguments; `pid` is a positive pid of our unreaped child.
    if unsafe { libc::kill(pid, signal) } < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    Ok(())
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

/// Starts `program` with `argv` (and this process's environment) through `posix_spawn(3)`,
/// whose child shares the parent's memory until it executes (`CLONE_VM | CLONE_VFORK` in
/// glibc): no page tables are copied and the parent writes nothing copy-on-write afterwards,
/// where a `fork` before the `exec` paid both (about a fork's cost, 100 us or more, on every
/// spawn start). The child gets `/dev/null` as its standard input, the signal mask emptied and
/// `SIGPIPE` set back to its default (as `std::process::Command` does), and `keep`, which stays
/// close-on-exec here, open across the exec under the same number: a duplication of a
/// descriptor onto itself clears its close-on-exec flag in the child only (POSIX 2024; glibc
/// since 2.29).
///
/// `None` when this C library may not clear that flag (not glibc, or a glibc before 2.29), or
/// `keep` is a standard stream's number: the caller then starts the child another way.
pub(crate) fn spawn_keeping(
    program: &std::ffi::CStr,
    argv: &[&std::ffi::CStr],
    keep: BorrowedFd<'_>,
) -> Option<io::Result<i32>> {
    let fd = keep.as_raw_fd();
    #[cfg(target_env = "gnu")]
    if fd > 2 && spawn_keeps_descriptors() {
        return Some(posix_spawn(program, argv, fd));
    }
    let _ = (program, argv, fd);
    None
}

/// Whether `posix_spawn_file_actions_adddup2(fd, fd)` clears close-on-exec in the child:
/// glibc 2.29 and later.
#[cfg(target_env = "gnu")]
fn spawn_keeps_descriptors() -> bool {
    // SAFETY: returns a pointer to a static NUL-terminated string ("2.36").
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    let mut parts = version
        .to_str()
        .unwrap_or("")
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 29)
}

/// `posix_spawn(3)` of `program` (see [`spawn_keeping`]).
#[cfg(target_env = "gnu")]
fn posix_spawn(program: &std::ffi::CStr, argv: &[&std::ffi::CStr], keep: RawFd) -> io::Result<i32> {
    use std::mem::MaybeUninit;
    /// The spawn's file actions and attributes, destroyed however the spawn ends.
    struct Spawn {
        actions: MaybeUninit<libc::posix_spawn_file_actions_t>,
        attr: MaybeUninit<libc::posix_spawnattr_t>,
        inited: (bool, bool),
    }
    impl Drop for Spawn {
        fn drop(&mut self) {
            if self.inited.0 {
                // SAFETY: initialised by posix_spawn_file_actions_init, destroyed once.
                unsafe { libc::posix_spawn_file_actions_destroy(self.actions.as_mut_ptr()) };
            }
            if self.inited.1 {
                // SAFETY: initialised by posix_spawnattr_init, destroyed once.
                unsafe { libc::posix_spawnattr_destroy(self.attr.as_mut_ptr()) };
            }
        }
    }
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    };
    let mut spawn = Spawn {
        actions: MaybeUninit::uninit(),
        attr: MaybeUninit::uninit(),
        inited: (false, false),
    };
    // SAFETY: initialises the object in place; on success it must be destroyed (by `Spawn`).
    check(unsafe { libc::posix_spawn_file_actions_init(spawn.actions.as_mut_ptr()) })?;
    spawn.inited.0 = true;
    // SAFETY: initialises the object in place; on success it must be destroyed (by `Spawn`).
    check(unsafe { libc::posix_spawnattr_init(spawn.attr.as_mut_ptr()) })?;
    spawn.inited.1 = true;
    let actions = spawn.actions.as_mut_ptr();
    let attr = spawn.attr.as_mut_ptr();
    // SAFETY: `actions` is initialised; the path is NUL-terminated and static; `keep` is an
    // open descriptor of this process, duplicated onto itself in the child only.
    check(unsafe { libc::posix_spawn_file_actions_adddup2(actions, keep, keep) })?;
    // SAFETY: as above; the child opens /dev/null as its descriptor 0.
    check(unsafe {
        libc::posix_spawn_file_actions_addopen(actions, 0, c"/dev/null".as_ptr(), libc::O_RDONLY, 0)
    })?;
    // SAFETY: `sigset_t` is plain old data; sigemptyset and sigaddset fill it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t and `attr` is initialised.
    unsafe {
        libc::sigemptyset(&mut set);
        check(libc::posix_spawnattr_setsigmask(attr, &set))?;
        libc::sigaddset(&mut set, libc::SIGPIPE);
        check(libc::posix_spawnattr_setsigdefault(attr, &set))?;
        check(libc::posix_spawnattr_setflags(
            attr,
            (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
        ))?;
    }
    let mut args: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    args.push(std::ptr::null_mut());
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: a NUL-terminated path, initialised actions
    // and attributes, a null-terminated argv of NUL-terminated strings that outlive the call,
    // and the process's environment (read as `std::process::Command` reads it).
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            actions,
            attr,
            args.as_ptr(),
            libc::environ.cast_const(),
        )
    })?;
    Ok(pid)
}

/// `/dev/null` opened for reading, close-on-exec, above the standard streams' numbers: what a
/// child's standard input becomes.
pub(crate) fn open_devnull() -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated path; the result is a new descriptor or -1.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let null = unsafe { OwnedFd::from_raw_fd(fd) };
    if fd > 2 {
        return Ok(null);
    }
    // A standard stream was closed and this took its number: move it above them (std
    // duplicates from 3 up), and leave the stream closed.
    null.try_clone()
}

/// Makes `null` (from [`open_devnull`]) the standard input of this process, as CPython does in
/// every child. `null` stays open.
pub(crate) fn stdin_from(null: BorrowedFd<'_>) {
    // SAFETY: dup2 onto fd 0 of a descriptor open in this process (above 2, see
    // `open_devnull`); fd 0 is replaced atomically, and inherits no close-on-exec flag.
    unsafe { libc::dup2(null.as_raw_fd(), 0) };
}

/// Sets the disposition of `signal` to its default.
pub(crate) fn default_signal(signal: i32) {
    // SAFETY: SIG_DFL is always a valid disposition.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}

/// Blocks `signal` in the calling thread; returns whether it was blocked already.
pub(crate) fn block_signal(signal: i32) -> bool {
    change_mask(libc::SIG_BLOCK, signal)
}

/// A set of one signal, made once, to unblock where little code should run (a fork server's
/// child: see [`unblock`](Self::unblock)).
pub(crate) struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// The set holding `signal` alone.
    pub(crate) fn of(signal: i32) -> SignalSet {
        // SAFETY: `sigset_t` is plain old data; sigemptyset and sigaddset fill it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            SignalSet(set)
        }
    }

    /// Unblocks the set's signal in the calling thread (one that is pending is delivered
    /// now), without building the set there: its C library calls are so many more windows
    /// of code that a fork server's child would fault in.
    pub(crate) fn unblock(&self) {
        // SAFETY: a valid, initialised set; the old mask is not asked for (null).
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.0, std::ptr::null_mut()) };
    }
}

/// `pthread_sigmask(how, {signal})`; returns whether `signal` was blocked before.
fn change_mask(how: i32, signal: i32) -> bool {
    // SAFETY: `sigset_t` is plain old data; sigemptyset and sigaddset fill it, and
    // pthread_sigmask reads one valid set and writes the other.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(how, &set, &mut old);
        libc::sigismember(&old, signal) == 1
    }
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
    hook_exit_report();
}

/// Registers (once) the `exit(3)` handler of [`report_exit_on`], which reports nothing until a
/// process asks it to: the fork server registers it before it serves, so that its children
/// inherit it instead of each registering its own.
pub(crate) fn hook_exit_report() {
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

/// Writes `text` and a newline on standard error, ignoring a failure: what `eprintln!` does,
/// except that `eprintln!` panics when the write fails (a standard error whose reader is
/// gone), and the library's child code runs where a panic must not happen (in the panic
/// hook, where it aborts the child, or after the target, where it would unwind out of it).
///
/// Written on descriptor 2 directly, as std's default panic hook writes, without standard
/// error's lock: another thread of the child may hold it for good, and a child that panics or
/// fails would wait for it as long.
pub(crate) fn to_stderr(text: std::fmt::Arguments<'_>) {
    let line = format!("{text}\n");
    // SAFETY: descriptor 2, borrowed for this write and never closed here (`ManuallyDrop`);
    // a closed or invalid descriptor 2 only makes the write fail, which is ignored.
    let mut stderr = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(2) });
    let _ = io::Write::write_all(&mut *stderr, line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_bytes_counts_touched_memory_while_it_is_held() {
        // The process's other test threads free memory meanwhile (it failed once in CI,
        // 250 MB then 252 MB): a few tries, one of which must see the block counted.
        let mut seen = Vec::new();
        for _ in 0..5 {
            let before = resident_bytes().expect("statm");
            let block = vec![1u8; 32 << 20];
            let held = resident_bytes().expect("statm");
            drop(block);
            if held >= before + (24 << 20) {
                return;
            }
            seen.push((before, held));
        }
        panic!("a touched 32 MiB block was never counted: {seen:?}");
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
