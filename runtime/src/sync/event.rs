//! `Event`: a flag in shared memory and a futex to sleep on while it is clear.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::raw::{futex_wait, futex_wake, Deadline, Wake};
use crate::error::{Error, Result};
use crate::shm::{Region, Shareable, Shared};

const EVENT_TAG: u64 = u64::from_le_bytes(*b"mp:event");

#[repr(C)]
pub(crate) struct EventState {
    tag: AtomicU64,
    /// The futex word: bit 0 is the flag; the other bits count the `set`s that changed it, so
    /// a waiter woken by a `set` returns even if a `clear` came before it looked.
    word: AtomicU32,
}

const SET: u32 = 1;

// SAFETY: atomics only: any bytes are valid, no drop, all mutation atomic.
unsafe impl Shareable for EventState {
    const WHAT: &'static str = "an event";
    fn is_valid(&self) -> bool {
        self.tag.load(Ordering::Relaxed) == EVENT_TAG
    }
}

/// A flag shared by processes that they can wait for: Python's `multiprocessing.Event`.
///
/// [`set`](Self::set) wakes every waiter (a waiter that a `set` woke returns even when a
/// [`clear`](Self::clear) came right after), `clear` resets the flag, and
/// [`wait`](Self::wait) returns at once while it is set. No lock is involved (a futex on the
/// flag), so a process that dies in any of these leaves the event usable. Clones are handles to
/// the same event; it can be sent to another process like a [`Lock`](crate::Lock).
///
/// ```
/// use std::time::Duration;
///
/// let event = multiproc::Event::new()?;
/// assert!(!event.wait_timeout(Duration::from_millis(10))?);
/// event.set();
/// assert!(event.is_set());
/// event.wait()?; // returns at once
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Event {
    state: Shared<EventState>,
}

impl Event {
    /// A new event, clear.
    ///
    /// ```
    /// assert!(!multiproc::Event::new()?.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Event> {
        let region = Arc::new(Region::new("event", std::mem::size_of::<EventState>())?);
        let state = Shared::<EventState>::at(region, 0)?;
        state.tag.store(EVENT_TAG, Ordering::Release);
        Ok(Event { state })
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// let event = multiproc::Event::new()?;
    /// event.set();
    /// assert!(event.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_set(&self) -> bool {
        self.state.word.load(Ordering::SeqCst) & SET != 0
    }

    /// Sets the flag and wakes every waiter, in every process.
    ///
    /// ```
    /// let event = multiproc::Event::new()?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| event.wait().unwrap());
    ///     event.set();
    /// });
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self) {
        let word = &self.state.word;
        let mut now = word.load(Ordering::SeqCst);
        while now & SET == 0 {
            match word.compare_exchange_weak(
                now,
                now.wrapping_add(2) | SET,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    futex_wake(word, u32::MAX);
                    return;
                }
                Err(seen) => now = seen,
            }
        }
    }

    /// Clears the flag: waits block again until the next `set`.
    ///
    /// ```
    /// let event = multiproc::Event::new()?;
    /// event.set();
    /// event.clear();
    /// assert!(!event.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn clear(&self) {
        self.state.word.fetch_and(!SET, Ordering::SeqCst);
    }

    /// Waits for the flag, or for a `set` after the wait began (even one cleared since).
    fn wait_by(&self, deadline: Deadline) -> Result<bool> {
        let word = &self.state.word;
        let start = word.load(Ordering::SeqCst);
        let mut now = start;
        loop {
            if now & SET != 0 || now >> 1 != start >> 1 {
                return Ok(true);
            }
            match futex_wait(word, now, deadline)
                .map_err(|err| Error::io("cannot wait on an event", err))?
            {
                Wake::Maybe => now = word.load(Ordering::SeqCst),
                Wake::TimedOut => {
                    let now = word.load(Ordering::SeqCst);
                    return Ok(now & SET != 0 || now >> 1 != start >> 1);
                }
            }
        }
    }

    /// Waits until the flag is set.
    ///
    /// ```
    /// let event = multiproc::Event::new()?;
    /// event.set();
    /// event.wait()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.wait_by(Deadline::NEVER).map(drop)
    }

    /// Waits at most `timeout` for the flag: whether it was set (Python's `wait(timeout)`).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let event = multiproc::Event::new()?;
    /// assert!(!event.wait_timeout(Duration::ZERO)?);
    /// event.set();
    /// assert!(event.wait_timeout(Duration::from_secs(1))?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_by(Deadline::after(timeout))
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}
