//! `JoinableQueue`: a [`Queue`] that counts unfinished tasks, Python's
//! `multiprocessing.JoinableQueue`.

use std::borrow::Borrow;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::core::Wait;
use super::queue::Queue;
use super::ring::SLICE;
use crate::error::{Error, ErrorKind, Result};
use crate::shm::{Region, Shareable, Shared};
use crate::sync::raw::{futex_wait, futex_wake, Deadline};
use crate::sync::Semaphore;
use crate::sys;

/// Python's `multiprocessing.JoinableQueue`: a [`Queue`] whose consumers call
/// [`task_done`](Self::task_done) for every item they finish, so that a producer can
/// [`join`](Self::join) until all of them are.
///
/// It has every [`Queue`] method; its `put` family also counts each item as unfinished. The
/// count is a process-shared [`Semaphore`](crate::Semaphore), and `join` sleeps on a word in
/// shared memory that is bumped whenever the count reaches zero; both travel with the queue
/// to other processes. No lock is involved (unlike CPython's, whose `task_done` and `join`
/// share a condition's lock): a consumer stopped (SIGSTOP, a debugger) or killed inside
/// `task_done` never holds up `join_timeout`, which returns by its deadline.
///
/// **A consumer that dies** holding an item never marks it done: `join` then waits for it
/// forever, as in Python. When consumers may die, use [`join_timeout`](Self::join_timeout).
/// A producer that dies inside `put` (waiting for room, say) counted its item only if it put
/// it: the item is counted once there is room, under the ring's lock, one store before it is
/// committed (only a death between those two instructions leaves a count without an item).
///
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use std::time::Duration;
///
/// let q = multiproc::JoinableQueue::<u32>::new()?;
/// q.put(1)?;
/// assert!(!q.join_timeout(Duration::from_millis(10))?); // one unfinished task
/// let n = q.get()?;
/// q.task_done()?;
/// q.join()?;                                              // returns at once now
/// assert_eq!(n, 1);
/// # Ok(())
/// # }
/// ```
///
/// With consumer processes:
///
/// ```no_run
/// use multiproc::{process, JoinableQueue, Process};
///
/// #[process]
/// fn worker(q: JoinableQueue<u64>) {
///     while let Ok(n) = q.get() {
///         println!("{n} squared is {}", n * n);
///         q.task_done().expect("task_done");
///     }
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let q = JoinableQueue::new()?;
///     for _ in 0..3 {
///         Process::new(worker, q.clone()).with_daemon(true).start()?;
///     }
///     for n in 0..10 {
///         q.put(n)?;
///     }
///     q.join()?; // every item was taken and marked done
///     Ok(())
/// }
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
    tasks: Tasks,
}

/// The unfinished-task count, and the word `join` sleeps on.
#[derive(Clone, Serialize, Deserialize)]
struct Tasks {
    unfinished: Semaphore,
    zero: Shared<ZeroState>,
}

const ZERO_TAG: u64 = u64::from_le_bytes(*b"mp:tasks");

/// What `join` sleeps on.
#[repr(C)]
struct ZeroState {
    tag: AtomicU64,
    /// The futex word: bumped every time the count reaches zero.
    seq: AtomicU32,
    /// Joiners asleep on `seq` (one killed asleep leaves its count behind: later wake-up
    /// calls are needless, nothing worse).
    joiners: AtomicU32,
}

// SAFETY: atomics only: any bytes are valid, no drop, all mutation atomic.
unsafe impl Shareable for ZeroState {
    const WHAT: &'static str = "a joinable queue's task count";
    fn is_valid(&self) -> bool {
        self.tag.load(Ordering::Relaxed) == ZERO_TAG
    }
}

impl Tasks {
    fn new() -> Result<Tasks> {
        let region = Arc::new(Region::new("joinable", std::mem::size_of::<ZeroState>())?);
        let zero = Shared::<ZeroState>::at(region, 0)?;
        zero.tag.store(ZERO_TAG, Ordering::Release);
        Ok(Tasks {
            unfinished: Semaphore::new(0)?,
            zero,
        })
    }

    /// Counts one task done, waking the joiners if it was the last: `false` when no task is
    /// unfinished.
    fn done_one(&self) -> bool {
        let Some(unit) = self.unfinished.try_acquire() else {
            return false;
        };
        unit.forget();
        if self.unfinished.get_value() == 0 {
            let zero = &*self.zero;
            zero.seq.fetch_add(1, Ordering::SeqCst);
            if zero.joiners.load(Ordering::SeqCst) != 0 {
                futex_wake(&zero.seq, u32::MAX);
            }
        }
        true
    }

    /// Waits until no task is unfinished (`true`) or `deadline` passes (`false`).
    ///
    /// Why no condition variable, as CPython has: a condition's wait must take its lock back
    /// before it returns, and a lock held by a process that is stopped (not dead: never taken
    /// over) would hold a timed join past its deadline, for as long as the process is
    /// stopped. The lock is not needed: the count is a semaphore, consistent on its own. So a
    /// joiner reads `seq`, then the count, and sleeps while `seq` is unchanged: a `task_done`
    /// that brings the count to zero after the joiner read it bumps `seq` after that too, so
    /// the sleep returns at once or is woken (the joiner registers in `joiners` before the
    /// kernel compares `seq`; the `task_done` looks at `joiners` after its bump). The sleep
    /// lasts at most a [`SLICE`]: a process killed between counting the last task done and
    /// its wake-up call costs the joiners that much, never a hang.
    ///
    /// As Python's join, it returns once the count has reached zero since it began, even if a
    /// `put` raised it again before the joiner ran: `seq` moved.
    fn join_until(&self, deadline: Option<Instant>) -> Result<bool> {
        let zero = &*self.zero;
        let began = zero.seq.load(Ordering::SeqCst);
        loop {
            let seen = zero.seq.load(Ordering::SeqCst);
            if seen != began || self.unfinished.get_value() == 0 {
                return Ok(true);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            let until = deadline.map_or(now + SLICE, |d| d.min(now + SLICE));
            zero.joiners.fetch_add(1, Ordering::SeqCst);
            let slept = futex_wait(
                &zero.seq,
                seen,
                Deadline::after(until.saturating_duration_since(Instant::now())),
            );
            zero.joiners.fetch_sub(1, Ordering::SeqCst);
            slept.map_err(|err| Error::io("cannot wait on a joinable queue", err))?;
        }
    }
}

impl<T> JoinableQueue<T> {
    /// A new unbounded queue. Python's `JoinableQueue()`.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<String>::new()?;
    /// assert_eq!(q.maxsize(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new() -> Result<Self> {
        JoinableQueue::with_queue(Queue::new()?)
    }

    /// A new queue of at most `maxsize` items (see [`Queue::bounded`]).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::bounded(1)?;
    /// q.put(1)?;
    /// assert_eq!(q.try_put(2).unwrap_err().kind(), multiproc::ErrorKind::Full);
    /// # Ok(())
    /// # }
    /// ```
    pub fn bounded(maxsize: usize) -> Result<Self> {
        JoinableQueue::with_queue(Queue::bounded(maxsize)?)
    }

    fn with_queue(queue: Queue<T>) -> Result<Self> {
        Ok(JoinableQueue {
            queue,
            tasks: Tasks::new()?,
        })
    }

    /// Puts `item` and counts it as unfinished; see [`Queue::put`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.put(7)?;
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn put(&self, item: impl Borrow<T>) -> Result<()>
    where
        T: Serialize,
    {
        self.put_with(item.borrow(), Wait::Until(None))
    }

    /// Puts `item`, waiting at most `timeout` for room; see [`Queue::put_timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::bounded(1)?;
    /// q.put_timeout(1, Duration::from_millis(10))?;
    /// let err = q.put_timeout(2, Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::Timeout);
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn put_timeout(&self, item: impl Borrow<T>, timeout: Duration) -> Result<()>
    where
        T: Serialize,
    {
        self.put_with(item.borrow(), Wait::Until(sys::deadline_after(timeout)))
    }

    /// Puts `item` only if there is room now; see [`Queue::try_put`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::bounded(1)?;
    /// q.try_put(1)?;
    /// assert_eq!(q.try_put(2).unwrap_err().kind(), multiproc::ErrorKind::Full);
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_put(&self, item: impl Borrow<T>) -> Result<()>
    where
        T: Serialize,
    {
        self.put_with(item.borrow(), Wait::No)
    }

    fn put_with(&self, item: &T, wait: Wait) -> Result<()>
    where
        T: Serialize,
    {
        let core = &self.queue.core;
        let item = core.prepare(item)?;
        // Counted once there is room, right before the item is committed: before it can be
        // taken (a consumer's task_done never comes first), and after every wait (a producer
        // killed or stopped while it waits for room has counted nothing, as in CPython, whose
        // put counts an item once there is room for it).
        core.put_counted(&item, wait, &|| self.tasks.unfinished.release())
    }

    /// Marks one item taken with `get` as done. When the count of unfinished items reaches
    /// zero, every `join` returns. Called more times than items were put:
    /// [`ErrorKind::InvalidInput`] (Python's `ValueError`).
    ///
    /// It takes no lock: a process stopped or killed inside `task_done` holds up nobody (one
    /// killed between counting the last task done and waking the joiners costs them up to
    /// 50 ms: they look at the count that often).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.put(1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// assert_eq!(q.task_done().unwrap_err().kind(), multiproc::ErrorKind::InvalidInput);
    /// # Ok(())
    /// # }
    /// ```
    pub fn task_done(&self) -> Result<()> {
        if !self.tasks.done_one() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "task_done() called more times than there were items",
            ));
        }
        Ok(())
    }

    /// Waits until every item put so far has been taken and marked done with
    /// [`task_done`](Self::task_done). Python's `join()`: it returns once the count of
    /// unfinished items has reached zero, even if a `put` raised it again before this thread
    /// ran.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.join()?; // nothing unfinished: returns at once
    /// # Ok(())
    /// # }
    /// ```
    pub fn join(&self) -> Result<()> {
        self.tasks.join_until(None).map(drop)
    }

    /// Like [`join`](Self::join), for at most `timeout`: `Ok(false)` when items are still
    /// unfinished then. It returns by its deadline whatever other processes do (stopped
    /// inside `task_done`, say).
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// assert!(q.join_timeout(Duration::ZERO)?);
    /// q.put(1)?;
    /// assert!(!q.join_timeout(Duration::from_millis(10))?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.tasks.join_until(sys::deadline_after(timeout))
    }

    /// Takes the next item, waiting for one; see [`Queue::get`]. Call
    /// [`task_done`](Self::task_done) when you are done with it.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.put(1)?;
    /// assert_eq!(q.get()?, 1);
    /// q.task_done()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn get(&self) -> Result<T>
    where
        T: DeserializeOwned,
    {
        self.take(Wait::Until(None))
    }

    /// Takes the next item, waiting at most `timeout`; see [`Queue::get_timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// let err = q.get_timeout(Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::Timeout);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T>
    where
        T: DeserializeOwned,
    {
        self.take(Wait::Until(sys::deadline_after(timeout)))
    }

    /// Takes an item only if one is waiting; see [`Queue::try_get`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// assert_eq!(q.try_get().unwrap_err().kind(), multiproc::ErrorKind::Empty);
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_get(&self) -> Result<T>
    where
        T: DeserializeOwned,
    {
        self.take(Wait::No)
    }

    /// An item taken but unusable (lost on the way, or failing to decode) is counted done at
    /// once: nobody can process it, and `join` must not wait for it forever.
    fn take(&self, wait: Wait) -> Result<T>
    where
        T: DeserializeOwned,
    {
        match self.queue.take_with(wait)? {
            Ok(item) => Ok(item),
            Err(err) => {
                let _ = self.task_done();
                Err(err)
            }
        }
    }

    /// The number of items in the queue (taken items are not counted, done or not); see
    /// [`Queue::qsize`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.put(1)?;
    /// assert_eq!(q.qsize(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn qsize(&self) -> usize {
        self.queue.qsize()
    }

    /// Whether no item is waiting right now; see [`Queue::is_empty`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// assert!(q.is_empty()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        self.queue.is_empty()
    }

    /// Whether a bounded queue is full; see [`Queue::is_full`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::bounded(1)?;
    /// q.put(1)?;
    /// assert!(q.is_full());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_full(&self) -> bool {
        self.queue.is_full()
    }

    /// The bound, `None` when unbounded; see [`Queue::maxsize`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// assert_eq!(multiproc::JoinableQueue::<u8>::bounded(3)?.maxsize(), Some(3));
    /// # Ok(())
    /// # }
    /// ```
    pub fn maxsize(&self) -> Option<usize> {
        self.queue.maxsize()
    }

    /// Closes the queue in this process; see [`Queue::close`]. `task_done` and `join` still
    /// work (they do not use the socket).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.close();
    /// assert_eq!(q.put(1).unwrap_err().kind(), multiproc::ErrorKind::Closed);
    /// q.join()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn close(&self) {
        self.queue.close();
    }

    /// Whether [`close`](Self::close) was called in this process.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// assert!(!q.is_closed());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Items put and not yet marked done (approximate while others put and finish).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// q.get()?;
    /// assert_eq!(q.unfinished_tasks(), 2); // taken is not done
    /// # Ok(())
    /// # }
    /// ```
    pub fn unfinished_tasks(&self) -> usize {
        self.tasks.unfinished.get_value() as usize
    }
}

impl<T> Clone for JoinableQueue<T> {
    /// Another handle on the same queue.
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
            tasks: self.tasks.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("maxsize", &self.maxsize())
            .field("qsize", &self.qsize())
            .field("unfinished_tasks", &self.unfinished_tasks())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        (&self.queue, &self.tasks).serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let (queue, tasks) = <(Queue<T>, Tasks)>::deserialize(deserializer)?;
        Ok(JoinableQueue { queue, tasks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_returns_when_the_count_reaches_zero() {
        let q = JoinableQueue::<u8>::new().unwrap();
        q.put(1).unwrap();
        q.put(2).unwrap();
        std::thread::scope(|s| {
            let joiner = s.spawn(|| q.join_timeout(Duration::from_secs(10)).unwrap());
            std::thread::sleep(Duration::from_millis(20));
            q.get().unwrap();
            q.task_done().unwrap();
            assert!(!joiner.is_finished());
            q.get().unwrap();
            q.task_done().unwrap();
            assert!(joiner.join().unwrap());
        });
    }

    #[test]
    fn a_process_killed_before_its_wake_up_call_leaves_nobody_asleep() {
        let q = JoinableQueue::<u8>::new().unwrap();
        q.put(1).unwrap();
        q.get().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let joiner = q.clone();
        // Not joined on failure: the test fails instead of hanging with it.
        std::thread::spawn(move || tx.send(joiner.join().map_err(|e| e.kind())));
        std::thread::sleep(Duration::from_millis(20));
        // A task_done that counted the last task done and died before its wake-up call.
        q.tasks.unfinished.try_acquire().unwrap().forget();
        let joined = rx.recv_timeout(Duration::from_secs(5));
        assert_eq!(joined, Ok(Ok(())), "join slept on with nothing unfinished");
    }

    /// Python's join returns once the count has reached zero, even if a `put` raised it
    /// again before the joiner ran: the work it waited for is done.
    #[test]
    fn join_returns_after_a_zero_that_a_put_ended_at_once() {
        let q = JoinableQueue::<u8>::new().unwrap();
        q.put(1).unwrap();
        std::thread::scope(|s| {
            let joiner = s.spawn(|| q.join_timeout(Duration::from_secs(10)).unwrap());
            // The joiner asleep on the count's word.
            let asleep = Instant::now() + Duration::from_secs(10);
            while q.tasks.zero.joiners.load(Ordering::SeqCst) == 0 && Instant::now() < asleep {
                std::thread::sleep(Duration::from_millis(1));
            }
            q.get().unwrap();
            q.task_done().unwrap();
            q.put(2).unwrap();
            assert!(
                joiner.join().unwrap(),
                "join missed the moment nothing was unfinished"
            );
            assert_eq!(q.unfinished_tasks(), 1);
        });
    }
}
