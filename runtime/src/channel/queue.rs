//! `Queue`: Python's `multiprocessing.Queue`, many producers and consumers across processes.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::core::{Core, Wait};
use super::ring;
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
/// A ring buffer of 1 MiB in an anonymous shared memory segment (a `memfd`) that every
/// process holding the queue maps, plus one Unix `SOCK_SEQPACKET` socket pair whose two ends
/// every holder keeps. `put` encodes the item and copies it into the ring; `get` copies it
/// out: no system call on either side while the other is awake. A consumer that finds the
/// ring empty spins for a few microseconds, then sleeps on a futex, and a producer makes the
/// wake-up call only when somebody sleeps (and the other way round for a full ring).
/// Producers share one robust lock, consumers another, so a producer and a consumer never
/// wait for each other. Items from one producer arrive in the order it put them.
///
/// The lock of its side is waited for as the call allows: [`try_get`](Queue::try_get) and
/// [`try_put`](Queue::try_put) never wait for it (a consumer or producer in the middle of
/// its own call holds it: they fail with [`ErrorKind::Empty`] / [`ErrorKind::Full`], as
/// CPython's `get_nowait` raises `Empty` when its reader lock is busy),
/// [`get_timeout`](Queue::get_timeout) and [`put_timeout`](Queue::put_timeout) wait for it
/// within their timeout, and only `get` and `put` wait as long as it takes: behind a
/// process stopped (SIGSTOP, a debugger) while it holds the lock, until it goes on.
///
/// Items whose encoding exceeds 64 KiB travel in an anonymous `memfd`, sealed and attached
/// to a socket record with `SCM_RIGHTS`, and items that contain descriptors (a pipe end,
/// another queue, a [`SharedFd`](crate::SharedFd)) carry them on a socket record; a ring
/// entry keeps their place in the order. The consumer maps a spilled item and decodes it in
/// place.
///
/// The ring counts the items: [`qsize`](Queue::qsize) reads the count, and a bounded queue
/// refuses a `put` while it holds `maxsize` items.
///
/// # A consumer that dies
///
/// A consumer killed **between** two `get`s takes nothing with it: every item stays in the
/// queue and is delivered, once, to another consumer. A consumer killed inside `get` after
/// it took its item off the ring, or at any time after `get` returned, **takes that one
/// item with it**: items are never redelivered, so never duplicated, and what another
/// consumer gets is always whole. How long that window inside `get` is depends on the item:
/// an item in the ring is copied out before it is taken off, so the window is its decoding;
/// an item that travels through the socket (spilled, or with descriptors) is taken off the
/// ring first, then received, mapped and decoded, so the window spans all of that, most of
/// its `get`: a consumer killed while it takes large items most likely loses the one it was
/// taking. A process killed while it holds the ring's lock (inside `put` or `get`)
/// wedges nobody: the lock is robust, and every step before the one store that commits an
/// operation is invisible to the others, so the next process simply takes the lock (a
/// producer killed there did not put its item, or did). The count stays exact: a dead
/// consumer's item frees its place in a bounded queue. A
/// [`JoinableQueue`](crate::JoinableQueue) item taken by a consumer that dies is never marked
/// done.
///
/// # Unbounded put: no feeder thread
///
/// CPython's `put` appends to a buffer that a feeder thread flushes into a pipe, and a
/// process cannot exit until its buffer is flushed: joining a producer before reading its
/// items deadlocks ("joining processes that use queues"). Here `put` copies the item into
/// the shared ring itself: when it returns, the item is in memory that every other holder
/// maps. The producer may exit, be joined or be killed at once; nothing is flushed at exit,
/// and there is no `join_thread` / `cancel_join_thread`.
///
/// The ring is finite, though: an unbounded `put` **waits when the ring is full**, until
/// consumers read. An unread item costs it its encoded size rounded up to 8 bytes, plus 8
/// (16 bytes for a `u64`: 65 536 of them; about 1000 items of 1 KiB); an item that travels
/// through the socket costs the ring 16 bytes and the socket's buffer about 800 bytes. The
/// wait happens in `put`, where you see it, never at exit; [`try_put`](Queue::try_put) fails
/// with [`ErrorKind::Full`] and [`put_timeout`](Queue::put_timeout) with
/// [`ErrorKind::Timeout`] instead of waiting.
///
/// # Closing
///
/// [`close`](Queue::close) closes the queue **in this process**: later calls here fail with
/// [`ErrorKind::Closed`], and threads of this process waiting in `get` or `put` return with
/// it. Other processes and the items are not affected. The descriptors and the mapping are
/// released when the last clone in this process is dropped; dropping never blocks.
///
/// # Limits
///
/// - An item carries at most 252 descriptors.
/// - Spilled items and items with descriptors count, while unread, against the
///   `RLIMIT_NOFILE` of the user that sent them (descriptors in flight): past it, `put`
///   fails with an [`ErrorKind::Io`] error that says so.
/// - A process that sleeps in `get` or `put` and is killed leaves a waiter count behind:
///   later operations then make one needless wake-up call each.
/// - A child started with `fork` gets the queues passed as its arguments; the copies of the
///   parent's queues in its inherited memory (a `static`, say) refuse to work
///   ([`ErrorKind::InvalidInput`]): their descriptors are closed in the child.
pub struct Queue<T> {
    pub(super) core: Arc<Core>,
    _items: PhantomData<fn(T) -> T>,
}

/// The largest bound of a bounded queue.
const MAX_BOUND: usize = i32::MAX as usize;

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
        Queue::with_bound(None)
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
        if maxsize > MAX_BOUND {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("a bounded queue holds at most {MAX_BOUND} items"),
            ));
        }
        Queue::with_bound(Some(maxsize as u32))
    }

    fn with_bound(bound: Option<u32>) -> Result<Self> {
        Ok(Queue {
            core: Arc::new(Core::new(bound)?),
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
        self.core.maxsize()
    }

    /// Puts `item` (or a reference to it) at the end of the queue, waiting while a bounded
    /// queue is full (or while its ring is: see [`Queue`]). Fails with
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
    /// within `timeout` (waiting for another producer to finish its put counts, see
    /// [Transport](Queue#transport)). Python's `put(item, timeout=t)`.
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

    /// Puts only if there is room now and no other producer is in the middle of a put (see
    /// [Transport](Queue#transport)): [`ErrorKind::Full`] otherwise. Python's
    /// `put_nowait(item)`, which never fails for another producer's put: where producers
    /// share a queue and an item must not be dropped for that, use
    /// [`put_timeout`](Self::put_timeout) with a short timeout, which waits for it.
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
        // Encode first: an item that cannot be encoded never waits, nor changes the queue.
        let item = self.core.prepare(item)?;
        self.core.put(&item, wait)
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
    /// within `timeout` (waiting for another consumer to finish its get counts, see
    /// [Transport](Queue#transport)). Python's `get(timeout=t)` (which raises `queue.Empty`).
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

    /// Takes an item only if one is waiting and no other consumer is in the middle of a get
    /// (see [Transport](Queue#transport)): [`ErrorKind::Empty`] otherwise. Python's
    /// `get_nowait()`, which raises `Empty` in both cases too.
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
        let taken = self.core.recv_record(wait)?;
        Ok(taken.and_then(ring::decode))
    }

    /// The number of items in the queue: approximate, since other processes put and get
    /// concurrently (and exact when nobody does). Python's `qsize()`.
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
        self.core.len()
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
        self.core.is_empty()
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
        self.core.is_full()
    }

    /// Closes the queue in this process (every clone here): later calls here fail with
    /// [`ErrorKind::Closed`], and threads of this process waiting in `get` or `put` return
    /// with it. Other processes, and the items in the queue, are not affected. Python's
    /// `close()`, without a feeder thread to flush.
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
        self.core.close();
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
        self.core.is_closed()
    }
}

impl<T> Clone for Queue<T> {
    /// Another handle on the same queue (no system call).
    fn clone(&self) -> Self {
        Queue {
            core: self.core.clone(),
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
        self.core.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(Queue {
            core: Arc::new(Core::deserialize(deserializer)?),
            _items: PhantomData,
        })
    }
}
