//! The pool's own threads (its driver and the driver's helpers), which count themselves as the
//! library's fork-safe threads.

use std::sync::mpsc;
use std::thread::JoinHandle;

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
        .spawn(move || {
            let _fork_safe = crate::start::fork::fork_safe_thread();
            let _ = counted.send(());
            body()
        })?;
    // An error only if the thread ended without counting itself (it could not).
    let _ = is_counted.recv();
    Ok(handle)
}
