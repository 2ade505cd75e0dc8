//! `Queue`: Python's `multiprocessing.Queue`, many producers and consumers across processes.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::core::{Core, Wait};
use super::record;
use super::slots::Slots;
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// Python's `multiprocessing.Queue`: a FIFO that any number of processes put into and get
/// from, unbounded ([`Queue::new`]) or bounded ([`Queue::bounded`]).
///
/// Clones share the queue (in this process they are the same object, like Python's
/// references). Give a clone to another process as an argument of
/// [`Process::new`](crate::Process::new), of a pool task or of a pool initializer; items
/// are encoded with serde.
///
/// | Python | multiproc | when it cannot proceed |
/// |---|---|---|
/// | `q.put(x)` | [`q.put(x)?`](Queue::put) | waits |
/// | `q.put(x, timeout=t)` | [`q.put_timeout(x, t)?`](Queue::put_timeout) | [`ErrorKind::Timeout`] |
/// | `q.put_nowait(x)`, `q.put(x, False)` | [`q.try_put(x)?`](Queue::try_put) | [`ErrorKind::Full`] |
/// | `q.get()` | [`q.get()?`](Queue::get) | waits |
/// | `q.get(timeout=t)` | [`q.get_timeout(t)?`](Queue::get_timeout) | [`ErrorKind::Timeout`] |
/// | `q.get_nowait()`, `q.get(False)` | [`q.try_get()?`](Queue::try_get) | [`ErrorKind::Empty`] |
/// | `q.qsize()`, `q.empty()`, `q.full()` | [`qsize()`](Queue::qsize), [`is_empty()?`](Queue::is_empty), [`is_full()`](Queue::is_full) | |
/// | `q.close()` | [`q.close()`](Queue::close) | [`ErrorKind::Closed`] afterwards, here |
/// | `q.join_thread()`, `q.cancel_join_thread()` | not needed: there is no feeder thread | |
///
/// Python raises `queue.Full` / `queue.Empty` both for a failed non-blocking call and for a
/// timeout; here a timeout is [`ErrorKind::Timeout`], always.
///
/// The sections below say how it works: [transport](#transport), [what a consumer that
/// dies loses](#a-consumer-that-dies), [when an unbounded `put` waits](#unbounded-put-no-feeder-thread),
/// [closing](#closing) and [limits](#limits).
///
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{ErrorKind, Queue};
///
/// let q = Queue::<u32>::bounded(2)?;
/// q.put(1)?;
/// q.put(2)?;
/// assert_eq!(q.try_put(3).unwrap_err().kind(), ErrorKind::Full);
/// assert_eq!(q.get()?, 1);
/// assert_eq!(q.get()?, 2);
/// assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::Empty);
/// # Ok(())
/// # }
/// ```
///
/// Between processes:
///
/// ```no_run
/// use multiproc::{process, Process, Queue};
///
/// #[process]
/// fn producer(q: Queue<String>) {
///     q.put("hello".to_string()).expect("put");
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let q = Queue::new()?;
///     let p = Process::new(producer, q.clone());
///     p.start()?;
///     println!("{}", q.get()?);    // hello
///     p.join()?;
///     Ok(())
/// }
/// ```
///
/// # Transport
///
/// One Unix `SOCK_SEQPACKET` socket pair per queue; every process that has the queue holds
/// both ends. `put` encodes the item and sends it as **one record**; `get` takes one record.
/// The kernel hands each record whole to exactly one reader, so any number of consumers, in
/// any processes, share the queue without a lock (CPython's reader lock is what lets a
/// killed consumer wedge the others, gh-96062). Items from one producer arrive in the order
/// it put them.
///
/// Items whose encoding exceeds 64 KiB (less when the system's socket buffers are small)
/// travel in an anonymous `memfd`, sealed and attached to their record with `SCM_RIGHTS`; the
/// consumer maps it and decodes in place. Items that contain descriptors (a pipe end,
/// another queue, a [`SharedFd`](crate::SharedFd)) carry them on the same record.
///
/// A bounded queue adds a process-shared [`Semaphore`](crate::Semaphore) of `maxsize` free
/// slots: `put` takes one, `get` gives it back. An unbounded queue counts its items with
/// another, for [`qsize`](Queue::qsize).
///
/// # A consumer that dies
///
/// A consumer killed **between** two `get`s takes nothing with it: every item stays in the
/// queue and is delivered, once, to another consumer. A consumer killed inside `get` after
/// the kernel handed it a record (a window of a few instructions), or at any time after `get`
/// returned, **takes that one item with it**: items are never redelivered, so never
/// duplicated. With a bounded queue, such a consumer also keeps its item's slot for good, as
/// does a producer killed inside `put` between taking a slot and sending; and `qsize` may be
/// off by one for good. A [`JoinableQueue`](crate::JoinableQueue) item taken by a consumer
/// that dies is never marked done.
///
/// # Unbounded put: no feeder thread
///
/// CPython's `put` appends to a buffer that a feeder thread flushes into a pipe, and a
/// process cannot exit until its buffer is flushed: joining a producer before reading its
/// items deadlocks ("joining processes that use queues"). Here `put` sends the record
/// itself: when it returns, the item is held by the kernel, in a socket that every other
/// holder keeps open. The producer may exit, be joined or be killed at once; nothing is
/// flushed at exit, and there is no `join_thread` / `cancel_join_thread`.
///
/// The kernel buffer is finite, though: an unbounded `put` **waits when the queue's send
/// buffer is full**, until consumers read (it then waits for them to drain about three
/// quarters of it, the kernel's rule). The queue raises that buffer to the largest allowed
/// without privileges, `2 × net.core.wmem_max`. An unread item costs it about 800 bytes
/// plus its encoded size up to the inline limit (a larger item waits in its memfd and costs
/// the 800 bytes only), so with small items the limit is about `wmem_max / 400` items:
/// 10 000 with a 4 MiB `wmem_max`, 500 with the common 208 KiB default; with 64 KiB items,
/// about `wmem_max / 32 KiB`. The wait happens in `put`, where you see it, never at exit;
/// [`try_put`](Queue::try_put) fails with [`ErrorKind::Full`] and
/// [`put_timeout`](Queue::put_timeout) with [`ErrorKind::Timeout`] instead of waiting.
///
/// # Closing
///
/// [`close`](Queue::close) closes the queue **in this process**: later calls here fail with
/// [`ErrorKind::Closed`], and threads of this process waiting in `get` (or in a `put` waiting
/// for kernel buffer room) return with it. Other processes and the items are not affected.
/// The descriptors are released when the last clone in this process is dropped; dropping
/// never blocks.
///
/// # Limits
///
/// - An item carries at most 252 descriptors.
/// - Spilled items and items with descriptors count, while unread, against the
///   `RLIMIT_NOFILE` of the user that sent them (descriptors in flight): past it, `put`
///   fails with an [`ErrorKind::Io`] error that says so.
/// - A child started with `fork` gets the queues passed as its arguments; the copies of the
///   parent's queues in its inherited memory (a `static`, say) refuse to work
///   ([`ErrorKind::InvalidInput`]): their descriptors are closed in the child.
pub struct Queue<T> {
    pub(super) inner: Arc<Inner>,
    _items: PhantomData<fn(T) -> T>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) core: Core,
    pub(super) slots: Slots,
}

impl<T> Queue<T> {
    /// A new unbounded queue. Python's `Queue()`.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<String>::new()?;
    /// assert_eq!(q.maxsize(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new() -> Result<Self> {
        Queue::with_slots(Slots::unbounded()?)
    }

    /// A new queue that holds at most `maxsize` items: `put` waits while it is full.
    /// Python's `Queue(maxsize)`; `maxsize` must be at least 1 (Python's `maxsize <= 0`
    /// means unbounded: use [`Queue::new`]).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::bounded(1)?;
    /// assert_eq!(q.maxsize(), Some(1));
    /// q.put(1)?;
    /// assert!(q.is_full());
    /// let err = multiproc::Queue::<u8>::bounded(0).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::InvalidInput);
    /// # Ok(())
    /// # }
    /// ```
    pub fn bounded(maxsize: usize) -> Result<Self> {
        if maxsize == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a bounded queue holds at least one item (use Queue::new for an unbounded one)",
            ));
        }
        Queue::with_slots(Slots::bounded(maxsize)?)
    }

    fn with_slots(slots: Slots) -> Result<Self> {
        Ok(Queue {
            inner: Arc::new(Inner {
                core: Core::new()?,
                slots,
            }),
            _items: PhantomData,
        })
    }

    /// The bound given to [`Queue::bounded`], `None` for an unbounded queue.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// assert_eq!(multiproc::Queue::<u8>::bounded(6)?.maxsize(), Some(6));
    /// # Ok(())
    /// # }
    /// ```
    pub fn maxsize(&self) -> Option<usize> {
        self.inner.slots.maxsize()
    }

    /// Puts `item` (or a reference to it) at the end of the queue, waiting while a bounded
    /// queue is full (or, rarely, while the kernel buffer is: see [`Queue`]). Fails with
    /// [`ErrorKind::Codec`] when the item cannot be encoded (the queue is unchanged), and
    /// with [`ErrorKind::Closed`] after [`close`](Queue::close).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<String>::new()?;
    /// let s = "kept".to_string();
    /// q.put(&s)?;                  // by reference: `s` stays usable
    /// q.put(s)?;                   // or by value
    /// assert_eq!(q.get()?, q.get()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn put(&self, item: impl Borrow<T>) -> Result<()>
    where
        T: Serialize,
    {
        self.put_with(item.borrow(), Wait::Until(None))
    }

    /// Like [`put`](Queue::put), but fails with [`ErrorKind::Timeout`] when there is no room
    /// within `timeout`. Python's `put(item, timeout=t)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::bounded(1)?;
    /// q.put_timeout(1, Duration::from_millis(10))?;
    /// let err = q.put_timeout(2, Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::Timeout);
    /// # Ok(())
    /// # }
    /// ```
    pub fn put_timeout(&self, item: impl Borrow<T>, timeout: Duration) -> Result<()>
    where
        T: Serialize,
    {
        self.put_with(item.borrow(), Wait::Until(sys::deadline_after(timeout)))
    }

    /// Puts only if there is room now: [`ErrorKind::Full`] otherwise. Python's
    /// `put_nowait(item)`.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::bounded(1)?;
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

    pub(crate) fn put_with(&self, item: &T, wait: Wait) -> Result<()>
    where
        T: Serialize,
    {
        // Encode first: an item that cannot be encoded never takes a slot.
        let record = self.inner.core.prepare(item)?;
        let slot = self.inner.slots.acquire(&self.inner.core, wait)?;
        // On error, dropping the slot gives it back.
        self.inner.core.send(&record, wait)?;
        slot.commit();
        Ok(())
    }

    /// Takes the next item, waiting for one. Fails with [`ErrorKind::Closed`] after
    /// [`close`](Queue::close) (also when `close` is called while it waits).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::new()?;
    /// q.put(1)?;
    /// assert_eq!(q.get()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get(&self) -> Result<T>
    where
        T: DeserializeOwned,
    {
        self.get_with(Wait::Until(None))
    }

    /// Like [`get`](Queue::get), but fails with [`ErrorKind::Timeout`] when no item arrives
    /// within `timeout`. Python's `get(timeout=t)` (which raises `queue.Empty`).
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::new()?;
    /// let err = q.get_timeout(Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::Timeout);
    /// q.put(1)?;
    /// assert_eq!(q.get_timeout(Duration::from_millis(10))?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T>
    where
        T: DeserializeOwned,
    {
        self.get_with(Wait::Until(sys::deadline_after(timeout)))
    }

    /// Takes an item only if one is waiting: [`ErrorKind::Empty`] otherwise. Python's
    /// `get_nowait()`.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert_eq!(q.try_get().unwrap_err().kind(), multiproc::ErrorKind::Empty);
    /// q.put(1)?;
    /// assert_eq!(q.try_get()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_get(&self) -> Result<T>
    where
        T: DeserializeOwned,
    {
        self.get_with(Wait::No)
    }

    pub(crate) fn get_with(&self, wait: Wait) -> Result<T>
    where
        T: DeserializeOwned,
    {
        self.take_with(wait)?
    }

    /// Takes an item: the outer error means nothing was taken; the inner one, that an item
    /// was taken but could not be used (lost on the way, or it failed to decode).
    pub(crate) fn take_with(&self, wait: Wait) -> Result<Result<T>>
    where
        T: DeserializeOwned,
    {
        let taken = self.inner.core.recv_record(wait)?;
        // Taken: its slot is free, even if it is lost or fails to decode.
        self.inner.slots.release();
        Ok(taken.and_then(record::decode))
    }

    /// The number of items in the queue: approximate, since other processes put and get
    /// concurrently (and exact when nobody does). Python's `qsize()`.
    ///
    /// A process killed inside `put` or `get` can leave it off by one for good.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::new()?;
    /// q.put(1)?;
    /// q.put(5)?;
    /// assert_eq!(q.qsize(), 2);
    /// q.get()?;
    /// assert_eq!(q.qsize(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn qsize(&self) -> usize {
        self.inner.slots.count()
    }

    /// Whether no item is waiting right now (a snapshot). Python's `empty()`. Fails with
    /// [`ErrorKind::Closed`] after [`close`](Queue::close).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(q.is_empty()?);
    /// q.put(1)?;
    /// assert!(!q.is_empty()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        self.inner.core.is_empty()
    }

    /// Whether a bounded queue holds `maxsize` items (a snapshot); always `false` for an
    /// unbounded queue. Python's `full()`.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::bounded(1)?;
    /// assert!(!q.is_full());
    /// q.put(1)?;
    /// assert!(q.is_full());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_full(&self) -> bool {
        self.inner.slots.is_full()
    }

    /// Closes the queue in this process (every clone here): later calls here fail with
    /// [`ErrorKind::Closed`], and threads of this process waiting in `get`, or in a `put`
    /// waiting for kernel buffer room, return with it (a `put` waiting for a slot of a bounded
    /// queue fails when it gets one). Other processes, and the items in the queue, are not
    /// affected. Python's `close()`, without a feeder thread to flush.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::new()?;
    /// let clone = q.clone();
    /// q.put(1)?;
    /// q.close();
    /// assert!(clone.is_closed()); // every clone in this process
    /// assert_eq!(q.put(2).unwrap_err().kind(), multiproc::ErrorKind::Closed);
    /// assert_eq!(clone.get().unwrap_err().kind(), multiproc::ErrorKind::Closed);
    /// # Ok(())
    /// # }
    /// ```
    pub fn close(&self) {
        self.inner.core.close();
    }

    /// Whether [`close`](Queue::close) was called in this process.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(!q.is_closed());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.core.is_closed()
    }
}

impl<T> Clone for Queue<T> {
    /// Another handle on the same queue (no system call).
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
            _items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("maxsize", &self.maxsize())
            .field("qsize", &self.qsize())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.inner.core, &self.inner.slots).serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let (core, slots) = <(Core, Slots)>::deserialize(deserializer)?;
        Ok(Queue {
            inner: Arc::new(Inner { core, slots }),
            _items: PhantomData,
        })
    }
}
