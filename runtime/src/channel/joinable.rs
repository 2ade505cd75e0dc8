//! `JoinableQueue`: a [`Queue`] that counts unfinished tasks, Python's
//! `multiprocessing.JoinableQueue`.

use std::borrow::Borrow;
use std::fmt;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::core::Wait;
use super::queue::Queue;
use crate::error::{Error, ErrorKind, Result};
use crate::sync::{Condition, LockGuard, Semaphore};
use crate::sys;

/// Python's `multiprocessing.JoinableQueue`: a [`Queue`] whose consumers call
/// [`task_done`](Self::task_done) for every item they finish, so that a producer can
/// [`join`](Self::join) until all of them are.
///
/// It has every [`Queue`] method; its `put` family also counts each item as unfinished. The count is a
/// process-shared semaphore and `join` waits on a process-shared condition (from
/// [`Semaphore`](crate::Semaphore) and [`Condition`](crate::Condition)), so they travel with
/// the queue to other processes.
///
/// **A consumer that dies** holding an item never marks it done: `join` then waits for it
/// forever, as in Python. When consumers may die, use [`join_timeout`](Self::join_timeout).
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

/// The unfinished-task count, and the condition `join` waits on.
#[derive(Clone, Serialize, Deserialize)]
struct Tasks {
    unfinished: Semaphore,
    all_done: Condition,
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
            tasks: Tasks {
                unfinished: Semaphore::new(0)?,
                all_done: Condition::new()?,
            },
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
        // Counted before it can be taken: a consumer's task_done never comes first.
        self.tasks.unfinished.release()?;
        if let Err(err) = core.put(&item, wait) {
            self.uncount();
            return Err(err);
        }
        Ok(())
    }

    /// Takes back the count of an item that was not sent, waking `join` if it was the last.
    fn uncount(&self) {
        let _guard = self.lock();
        if let Some(unit) = self.tasks.unfinished.try_acquire() {
            unit.forget();
        }
        if self.tasks.unfinished.get_value() == 0 {
            let _ = self.tasks.all_done.notify_all();
        }
    }

    /// Marks one item taken with `get` as done. When the count of unfinished items reaches
    /// zero, every `join` returns. Called more times than items were put:
    /// [`ErrorKind::InvalidInput`] (Python's `ValueError`).
    ///
    /// A process killed in the narrow window between counting the last task done and waking
    /// the joiners leaves them asleep although nothing is left: when processes may be killed,
    /// wait with [`join_timeout`](Self::join_timeout).
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
        let _guard = self.lock()?;
        let Some(unit) = self.tasks.unfinished.try_acquire() else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "task_done() called more times than there were items",
            ));
        };
        unit.forget();
        if self.tasks.unfinished.get_value() == 0 {
            self.tasks.all_done.notify_all()?;
        }
        Ok(())
    }

    /// Waits until every item put so far has been taken and marked done with
    /// [`task_done`](Self::task_done). Python's `join()`.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.join()?; // nothing unfinished: returns at once
    /// # Ok(())
    /// # }
    /// ```
    pub fn join(&self) -> Result<()> {
        self.join_until(None).map(drop)
    }

    /// Like [`join`](Self::join), for at most `timeout`: `Ok(false)` when items are still
    /// unfinished then.
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
        self.join_until(sys::deadline_after(timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> Result<bool> {
        let unfinished = &self.tasks.unfinished;
        let cond = &self.tasks.all_done;
        loop {
            let guard = self.lock()?;
            let waited = match deadline {
                None => cond
                    .wait_for(guard, |_| unfinished.get_value() == 0)
                    .map(|_| true),
                Some(deadline) => cond
                    .wait_for_timeout(
                        guard,
                        deadline.saturating_duration_since(Instant::now()),
                        |_| unfinished.get_value() == 0,
                    )
                    .map(|(_, done)| done),
            };
            match waited {
                // A process died holding the lock (inside task_done): the count is a
                // semaphore of its own, still right; wait again.
                Err(err) if err.kind() == ErrorKind::OwnerDied => continue,
                other => return other,
            }
        }
    }

    /// The condition's lock; a previous owner that died is not an error here (the count it
    /// protects lives in the semaphore, which is always consistent).
    fn lock(&self) -> Result<LockGuard<'_>> {
        loop {
            match self.tasks.all_done.acquire() {
                Err(err) if err.kind() == ErrorKind::OwnerDied => continue,
                other => return other,
            }
        }
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
