//! The `fork` start method.
//!
//! The child is a copy of the parent: it runs the target at once from memory (nothing is
//! encoded for it to decode, though the arguments were encoded by `Process::new` like for every
//! method) and ends with `_exit`, never by returning into the parent's `main`.
//!
//! Before forking, the library's own locks are taken, so that the child gets them in a known,
//! unlocked state; the child then closes every descriptor the library holds for other children
//! and for the fork server. A multi-threaded parent is refused unless the [`ForkPolicy`] allows
//! it: any lock another thread held at the moment of the fork would stay locked in the child.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::unistd::{fork, ForkResult};

use super::{lock_client, lock_executable, ForkPolicy, Popen};
use crate::bootstrap::{Launch, EXIT_BOOTSTRAP_FAILED};
use crate::child::{self, ForChild};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::Entry;
use crate::{current, fd, handle, sys};

static POLICY: AtomicU8 = AtomicU8::new(0);

/// Threads of the library itself (pool drivers) that hold no lock a forked child needs: the
/// fork path takes the library's own locks first, and these threads touch nothing else a child
/// uses. They do not count as "other threads" for the [`ForkPolicy`].
///
/// The low 32 bits count them; the high 32 bits count the changes, so that a count of the
/// process's threads can be matched with the number of fork-safe ones it includes (see
/// [`other_threads`]).
static FORK_SAFE_THREADS: AtomicU64 = AtomicU64::new(0);

/// One more fork-safe thread, and one more change.
const FORK_SAFE_ARRIVES: u64 = (1 << 32) + 1;
/// One fewer fork-safe thread (the count is at least one then: no borrow), and one more change.
const FORK_SAFE_LEAVES: u64 = (1 << 32) - 1;

/// Marks the calling thread as one of the library's fork-safe threads while the guard lives.
pub(crate) fn fork_safe_thread() -> impl Drop {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            FORK_SAFE_THREADS.fetch_add(FORK_SAFE_LEAVES, Ordering::SeqCst);
        }
    }
    FORK_SAFE_THREADS.fetch_add(FORK_SAFE_ARRIVES, Ordering::SeqCst);
    Guard
}

/// The fork gate: held by [`fork_child`] from just before it counts the threads
/// ([`check_threads`]) until the fork is done, and by a fork-safe thread while it stops
/// counting itself as such ([`fork_gate`], from `pool::threads::user_code`, before it runs
/// user code).
///
/// The thread check and the fork are not one instant: a fork whose check counted a pool's
/// driver as the library's own could otherwise go ahead while that driver, uncounted a moment
/// later, runs a callback that holds a lock of the user's. With the gate, a thread stops being
/// fork-safe either before a fork's check (which then counts it as a thread of the user's) or
/// after that fork is done. It waits for the gate while still counted as fork-safe: a fork
/// whose check waits for it to count itself again (see [`check_threads`]) is not kept waiting
/// for a thread that waits for that fork. A forked child gets the gate held by the thread it
/// is a copy of, and lets it go.
static FORK_GATE: Mutex<()> = Mutex::new(());

/// Takes the fork gate (see [`FORK_GATE`]): a fork-safe thread holds it while it stops counting
/// itself as such, so that no fork is between its thread check and its `fork` meanwhile.
pub(crate) fn fork_gate() -> MutexGuard<'static, ()> {
    FORK_GATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets what [`StartMethod::Fork`](crate::context::StartMethod::Fork) does in a multi-threaded process.
///
/// ```
/// use multiproc::{fork_policy, set_fork_policy, ForkPolicy};
///
/// // SAFETY: this doctest starts no thread that takes a lock.
/// unsafe { set_fork_policy(ForkPolicy::Warn) };
/// assert_eq!(fork_policy(), ForkPolicy::Warn);
/// // SAFETY: refusing promises nothing.
/// unsafe { set_fork_policy(ForkPolicy::Refuse) };
/// ```
///
/// # Safety
///
/// [`ForkPolicy::Warn`] and [`ForkPolicy::Allow`] turn off the check that keeps `fork` safe:
/// with either, until the policy is set back to [`ForkPolicy::Refuse`], every fork start made
/// while this process has other threads must be one where no other thread holds a lock (or is
/// in the middle of any other state) that the child uses: the allocator's, standard output's,
/// a `Mutex` of yours or of a library's (a pool's result callbacks and your `Deserialize` impls
/// count as other threads while they run). The child would keep such a lock held for good.
/// (The warning `Warn` logs reports the fork; it does not make it safe.)
///
/// Setting [`ForkPolicy::Refuse`] asks nothing of the caller.
pub unsafe fn set_fork_policy(policy: ForkPolicy) {
    let value = match policy {
        ForkPolicy::Refuse => 0,
        ForkPolicy::Warn => 1,
        ForkPolicy::Allow => 2,
    };
    POLICY.store(value, Ordering::Relaxed);
}

/// The current [`ForkPolicy`].
pub fn fork_policy() -> ForkPolicy {
    match POLICY.load(Ordering::Relaxed) {
        0 => ForkPolicy::Refuse,
        1 => ForkPolicy::Warn,
        _ => ForkPolicy::Allow,
    }
}

/// How many of this process's threads are not the library's fork-safe ones.
///
/// The threads are counted between two readings of the fork-safe count; a fork-safe thread
/// that arrived or left meanwhile (a pool's helper thread ending just then) could be counted
/// in one and not the other, and make the user's threads look fewer than they are. So a
/// count is used only when no fork-safe thread came or went during it; if they never hold
/// still, none is subtracted (the answer errs toward refusing).
fn other_threads() -> Result<usize> {
    const TRIES: usize = 64;
    let mut attempt = 0;
    loop {
        let before = FORK_SAFE_THREADS.load(Ordering::SeqCst);
        let mut threads = sys::thread_count()
            .map_err(|err| Error::io("cannot count this process's threads", err))?;
        let safe = if attempt == TRIES {
            0
        } else {
            (before & u64::from(u32::MAX)) as usize
        };
        if threads.saturating_sub(safe) > 1 {
            // The count includes threads that have ended for user space but that the kernel
            // has not released yet: see them one by one.
            threads = threads_not_exiting()
                .map_err(|err| Error::io("cannot list this process's threads", err))?;
        }
        if attempt == TRIES || FORK_SAFE_THREADS.load(Ordering::SeqCst) == before {
            return Ok(threads.saturating_sub(safe));
        }
        attempt += 1;
    }
}

fn check_threads() -> Result<()> {
    let policy = fork_policy();
    if policy == ForkPolicy::Allow || sys::known_single_threaded() {
        return Ok(());
    }
    let others = other_threads;
    let mut threads = others()?;
    // A pool's driver thread stops counting itself as fork-safe a moment before it exits:
    // look again for up to a millisecond before refusing.
    let deadline = Instant::now() + Duration::from_millis(1);
    while threads > 1 && Instant::now() < deadline {
        std::thread::yield_now();
        threads = others()?;
    }
    if threads <= 1 {
        return Ok(());
    }
    // SAFETY: gettid takes no arguments and cannot fail.
    let in_main_thread = unsafe { libc::gettid() } as u32 == std::process::id();
    let in_tests = if in_main_thread {
        ""
    } else {
        " (under cargo test, libtest runs every test on a thread of its own: fork there only from \
         a harness = false test target that runs its trials on the main thread)"
    };
    let message = format!(
        "this process (pid {}) is multi-threaded ({threads} threads): a forked child could deadlock on a lock another thread holds; \
         use StartMethod::ForkServer or StartMethod::Spawn, or set_fork_policy(ForkPolicy::Allow) if you are sure{in_tests}",
        std::process::id()
    );
    if policy == ForkPolicy::Refuse {
        return Err(Error::new(ErrorKind::ForkUnsafe, message));
    }
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        log::warn!(target: "multiproc", "{message}");
    }
    Ok(())
}

/// The number of this process's threads that have not begun to exit.
///
/// The kernel goes on counting a thread (in `/proc/self/task` and its link count) after it has
/// ended for user space, until it has released it: a thread just joined is counted for a few
/// microseconds more, for milliseconds on a loaded machine (hence a single-threaded program
/// refused now and then as multi-threaded right after a pool's `join`). A thread is marked
/// exiting (`PF_EXITING`, in the flags field of its `stat`) before it lets a joiner go, and
/// from then on runs no code of the program: it holds no lock that a child could need.
fn threads_not_exiting() -> std::io::Result<usize> {
    Ok(live_threads()?.len())
}

/// The ids of this process's threads that have not begun to exit (see
/// [`threads_not_exiting`]).
fn live_threads() -> std::io::Result<Vec<u32>> {
    /// `PF_EXITING` in `include/linux/sched.h`.
    const PF_EXITING: u64 = 0x4;
    let mut threads = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read(entry.path().join("stat")) else {
            // Gone meanwhile.
            continue;
        };
        // The command name, in parentheses, may hold any character: the fields are those
        // after the last ')': state, ppid, pgrp, session, tty_nr, tpgid, flags.
        let fields = stat
            .iter()
            .rposition(|&b| b == b')')
            .map(|at| &stat[at + 1..])
            .and_then(|rest| std::str::from_utf8(rest).ok())
            .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default();
        let ended = matches!(fields.first(), Some(&("Z" | "X")));
        let exiting = fields
            .get(6)
            .and_then(|flags| flags.parse::<u64>().ok())
            .is_some_and(|flags| flags & PF_EXITING != 0);
        if !(ended || exiting) {
            threads.push(tid);
        }
    }
    Ok(threads)
}

/// Forks a child that runs `entry` with `launch`.
pub(crate) fn launch(launch: Launch, entry: &'static Entry, fds: &[RawFd]) -> Result<Popen> {
    let fds = fds.to_vec();
    fork_child(
        // Made here, in the parent, so that the child does not allocate (see `child::Setup`).
        |control| child::Setup::for_fork(control, launch),
        move |setup| {
            // None is the usual case: no call into the collecting code (a forked child pays a
            // page fault for each window of code it runs first).
            let fds = if fds.is_empty() {
                Vec::new()
            } else {
                // SAFETY: the child inherited these descriptors (duplicates the parent made
                // for it) and is now their only owner in this process.
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
                    .collect()
            };
            child::run(setup, entry, fds)
        },
    )
}

/// Completes, before a fork, every one-time initialisation that a forked child may need: the
/// build identity (and the registry under it), which the children of a pool's zygote read in
/// their bootstrap and a forked child when it starts children of its own; the probe of the C
/// library's thread flag; the fork hook (`fd`) that descriptors and locks install on first use.
///
/// Each is a `OnceLock` or a `Once`: a child forked while another thread was initialising one
/// inherits it half-made and marked as in progress, and waits for good for a thread that does
/// not exist in the child. Completed here, in the forking thread (which waits for another
/// thread's initialisation to end, if one is under way), they are complete in every copy.
/// After the first fork each is one atomic load.
fn settle_one_time_state() {
    let _ = crate::registry::BuildId::current();
    let _ = sys::known_single_threaded();
    fd::settle_before_fork();
}

/// Forks a child that runs `body`, which must not return (if it does, the child exits).
/// `prepare` runs in the parent before the fork, with the child's end of a new control
/// socket; what it makes is moved into the child for `body`, and dropped in the parent.
pub(crate) fn fork_child<P: ForChild>(
    prepare: impl FnOnce(UnixStream) -> P,
    body: impl FnOnce(P),
) -> Result<Popen> {
    settle_one_time_state();
    // Held until the fork is done: a fork-safe thread that stops counting itself as such
    // waits for it (see FORK_GATE).
    let gate = fork_gate();
    check_threads()?;
    // Both ends registered as they are made: a fork in another thread meanwhile (under a
    // permissive ForkPolicy) closes them in its child. What this child keeps (its end, and
    // whatever `prepare` handed over: `fd::Registering::hand_over`) is unregistered again in
    // the parent under the lock this fork holds, just after it forks, and the parent closes
    // its copies before it lets go of that lock; the child keeps it registered if it keeps it
    // for life (`ForChild::kept_registered`).
    let (parent_end, child_end) = fd::made(|fds| {
        let (parent_end, child_end) = UnixStream::pair()?;
        fds.hand_over(&child_end);
        Ok::<_, std::io::Error>((fds.own(parent_end), child_end))
    })
    .map_err(|err| Error::io("cannot create a control socket", err))?;
    let prepared = prepare(child_end);
    let kept = prepared.kept_fd();
    handle::prepare_fork();
    // Standard output and error locked across the fork, and flushed: the child must not find
    // them locked by a thread it does not have (the pool's driver thread runs callbacks that
    // print), and output buffered now would be written twice, once by each process. A child
    // unlocks its copies: it is the thread that locked them.
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let _ = stdout.flush();
    let _ = stderr.flush();

    // The library's locks, held across the fork: the child's copies are then consistent.
    // In the library's lock order, written in one place: the module docs of `fd`.
    let hook = child::lock_panic_hook();
    let mut server = lock_client();
    let me = current::lock_me();
    let mut children = current::lock_children();
    let mut fds = fd::lock_registry();
    let executable = lock_executable();
    // What the child keeps first in the list, the others after: the child closes the others
    // and shortens the list, which writes none of the list's buffer (a page it would have to
    // copy first). The parent takes them out after the fork, before it closes its copies.
    let mut keep = 0;
    for i in 0..fds.len() {
        if fds[i] == kept {
            fds.swap(keep, i);
            keep += 1;
        }
    }
    let kept_registered = prepared.kept_registered();

    // SAFETY: the child only closes descriptors, resets the library state it holds the locks
    // of, and runs the target; when the parent is multi-threaded this is allowed only by an
    // explicit ForkPolicy (see check_threads), as CPython allows it with a warning.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(gate);
            prepared.in_child();
            for &fd in fds[keep..].iter() {
                // SAFETY: these descriptors belong to the library's handles on other children
                // and on the fork server, which this child must not keep open; `parent_end`
                // is one of them.
                unsafe { libc::close(fd) };
            }
            std::mem::forget(parent_end);
            // The copies of the parent's handles refer to closed descriptors: forget them
            // without running their destructors. What the child keeps stays registered if it
            // says so.
            fds.truncate(if kept_registered { keep } else { 0 });
            std::mem::forget(std::mem::take(&mut *children));
            std::mem::forget(server.take());
            drop((executable, server, fds, children, me, hook));
            drop((stdout, stderr));
            // Nothing unwinds out of the child: it would run its copy of the parent's code on
            // (its `main`, a test harness that catches the panic). Its payload is not dropped
            // either (its `Drop` may panic again).
            if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| body(prepared))) {
                std::mem::forget(payload);
            }
            sys::exit_now(EXIT_BOOTSTRAP_FAILED)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(gate);
            // The parent's copies of what the child keeps (its end of the control socket...),
            // unregistered and closed before another thread may fork.
            fds.drain(..keep);
            drop(prepared);
            drop((executable, server, fds, children, me, hook));
            drop((stdout, stderr));
            if sys::children_reaped_unasked() {
                // The kernel reaps it as it ends: its pid is safe only through a pidfd, opened
                // now.
                return Popen::direct(child.as_raw(), parent_end);
            }
            Ok(Popen::forked(child.as_raw(), parent_end))
        }
        Err(err) => {
            fds.drain(..keep);
            drop(prepared);
            drop((executable, server, fds, children, me, hook));
            drop(parent_end);
            Err(Error::io("fork failed", err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joined_thread_is_not_counted() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel::<u32>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid takes no arguments and cannot fail.
            let _ = tid_tx.send(unsafe { libc::gettid() } as u32);
            let _ = rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        assert!(live_threads().unwrap().contains(&tid), "a running thread");
        drop(tx);
        thread.join().unwrap();
        // Released by the kernel or not yet, it is not among the live threads once joined.
        assert!(!live_threads().unwrap().contains(&tid), "a joined thread");
        assert!(threads_not_exiting().unwrap() >= 1);
    }
}
