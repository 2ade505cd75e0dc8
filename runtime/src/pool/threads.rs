//! The pool's own threads (its driver and the driver's helpers), which count themselves as the
//! library's fork-safe threads, except while one runs user code.
//!
//! The fork policy (`ForkPolicy::Refuse` by default) does not count the library's own threads:
//! they hold none of the user's locks. But the driver thread also runs user code: result
//! callbacks, the user's `Deserialize` impls as results are decoded, the drop of the user's
//! values. A fork meanwhile could leave the child with a lock of the user's held by a thread it
//! does not have. So such code runs through [`user_code`], which counts the thread as one of
//! the user's while it runs.

use std::any::Any;
use std::cell::RefCell;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::start::fork::{fork_gate, fork_safe_thread};

thread_local! {
    /// This thread's mark as one of the library's fork-safe threads (the guard of
    /// `fork::fork_safe_thread`), while it has one.
    static FORK_SAFE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// The stack of the library's threads: a main thread's (std gives others 2 MiB). A pool's
/// driver decodes results, whose `Deserialize` recurses once a level, up to the codec's
/// 1024 (`codec::fixed::MAX_DEPTH`), with the frames an unoptimized build makes of it. Only
/// the pages used are ever backed by memory.
const STACK: usize = 8 << 20;

/// Spawns a thread of the library that counts itself as fork-safe (see
/// `fork::fork_safe_thread`), and returns once it has: a fork right after must not take it for
/// a thread of the user's, nor may a thread of the user's pass for it before it exists.
pub(super) fn spawn_counted(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let (counted, is_counted) = mpsc::sync_channel::<()>(1);
    let handle = std::thread::Builder::new()
        .name(name.into())
        .stack_size(STACK)
        .spawn(move || {
            mark(true);
            let _ = counted.send(());
            body();
            // Not counted from here on (nor later, when the thread's locals are destroyed).
            mark(false);
        })?;
    // An error only if the thread ended without counting itself (it could not).
    let _ = is_counted.recv();
    Ok(handle)
}

/// Marks the calling thread as fork-safe, or takes its mark off; returns whether it had one.
fn mark(safe: bool) -> bool {
    FORK_SAFE.with(|mark| {
        let mut mark = mark.borrow_mut();
        let had = mark.take().is_some();
        if safe {
            *mark = Some(Box::new(fork_safe_thread()));
        }
        had
    })
}

/// Runs `f`, which runs user code (a callback, a `Deserialize`, the drop of a user's value),
/// with the calling thread counted as a thread of the user's for the fork policy; a fork
/// meanwhile is refused (or warned about) as beside any thread of the user's. On a thread that
/// is not one of the pool's (a caller's), or already in such a call, `f` just runs.
///
/// The thread stops counting itself under the fork gate: a fork that counted it as the
/// library's own, and is still on its way to `fork`, is over before `f` starts (see
/// `fork::FORK_GATE`).
pub(super) fn user_code<R>(f: impl FnOnce() -> R) -> R {
    /// Marks the thread again however `f` ends (it may unwind).
    struct Remark;
    impl Drop for Remark {
        fn drop(&mut self) {
            mark(true);
        }
    }
    let counted = FORK_SAFE.with(|mark| mark.borrow().is_some());
    let _remark = counted.then(|| {
        let _gate = fork_gate();
        mark(false);
        Remark
    });
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_thread_is_uncounted_while_it_runs_user_code() {
        let (report, reports) = mpsc::channel();
        let handle = spawn_counted("multiproc-test-counted", move || {
            let marked = || FORK_SAFE.with(|mark| mark.borrow().is_some());
            let before = marked();
            let during = user_code(|| (marked(), user_code(marked)));
            let unwound = std::panic::catch_unwind(|| {
                user_code(|| panic!("deliberate panic: user code that unwinds"))
            })
            .is_err();
            let _ = report.send((before, during, unwound, marked()));
        })
        .unwrap();
        handle.join().unwrap();
        assert_eq!(reports.recv().unwrap(), (true, (false, false), true, true));
        // A thread of the caller's is never marked.
        assert!(!user_code(|| FORK_SAFE.with(|mark| mark.borrow().is_some())));
    }
}
