//! `Pipe`: two connected ends. Each direction is a shared-memory ring (`ring`); the two
//! rings share one region. A `SOCK_SEQPACKET` socket pair carries the messages that hold
//! descriptors or are spilled to a `memfd`, and tells each end when the other is gone: a
//! closed socket end is closed in every process, killed or not, and its peer sees a hang-up.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::core::Wait;
use super::record::Endpoint;
use super::ring::{self, Outbound, Ring};
use crate::error::{Error, ErrorKind, Result};
use crate::shm::Region;
use crate::sys;

/// Data bytes of each direction's ring: 16 384 `u64` messages, 256 messages of 1 KiB.
const RING_BYTES: usize = 256 << 10;

/// Python's `multiprocessing.Pipe()`: creates two connected ends.
///
/// `Pipe` is only a namespace: [`Pipe::duplex`] makes two [`Connection`]s that both send and
/// receive (`Pipe()` in Python), [`Pipe::simplex`] a [`Receiver`] and a [`Sender`]
/// (`Pipe(duplex=False)`, in Python's order: reader first). The types are checked at compile
/// time: `Pipe::<S, R>::duplex()` gives an end that sends `S` and receives `R`, and its
/// peer, which sends `R` and receives `S`.
///
/// Each message is encoded with serde and copied into a ring buffer in shared memory (256 KiB
/// each way, in one anonymous `memfd` both ends map); the reader copies it out. The writer
/// makes one cheap system call per message (is the reader still there?), the reader none
/// while it is awake: a reader that finds nothing spins a few microseconds, then sleeps on a
/// futex, and the writer makes the wake-up call only then. Messages larger
/// than 64 KiB wait in an anonymous memory file whose descriptor travels on a Unix
/// `SOCK_SEQPACKET` socket pair beside the rings, so a large `send` does not wait for its
/// reader; the socket also tells each end when every copy of the other is closed.
/// Values that contain descriptors (a pipe end, a queue, a [`SharedFd`](crate::SharedFd))
/// can be sent too: their descriptors travel with `SCM_RIGHTS`.
///
/// An end is passed to a child as an argument of [`Process::new`](crate::Process::new) (or
/// of a pool task or initializer): the child gets its own duplicate. Moving the end into the
/// arguments closes the parent's copy, which is exactly what Python code has to do by hand
/// (`child_conn.close()`) so that the reader sees end of file. When every copy of one end is
/// closed, the other end's `recv` fails with [`ErrorKind::Disconnected`] (after the messages
/// already sent), and its `send` too: a dead peer is never a hang.
///
/// ```
/// use multiproc::Pipe;
///
/// # fn main() -> multiproc::Result<()> {
/// let (parent, child) = Pipe::<String, usize>::duplex()?;
/// parent.send("hello".to_string())?;
/// let text = child.recv()?;               // a String
/// child.send(text.len())?;
/// assert_eq!(parent.recv()?, 5);          // a usize
///
/// let (reader, writer) = Pipe::<Vec<u8>>::simplex()?;
/// writer.send(vec![1, 2, 3])?;
/// assert_eq!(reader.recv()?, [1, 2, 3]);
/// drop(writer);
/// assert_eq!(reader.recv().unwrap_err().kind(), multiproc::ErrorKind::Disconnected);
/// # Ok(())
/// # }
/// ```
///
/// With a child process:
///
/// ```no_run
/// use multiproc::{process, Connection, Pipe, Process};
///
/// #[process]
/// fn upper(conn: Connection<String, String>) {
///     while let Ok(text) = conn.recv() {        // ends when the parent drops its end
///         let _ = conn.send(text.to_uppercase());
///     }
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let (mine, theirs) = Pipe::<String, String>::duplex()?;
///     let p = Process::new(upper, theirs);
///     p.start()?;
///     mine.send("hello".to_string())?;
///     assert_eq!(mine.recv()?, "HELLO");
///     drop(mine);                              // the child's recv fails: it returns
///     p.join()?;
///     Ok(())
/// }
/// ```
pub struct Pipe<S, R = S> {
    _types: PhantomData<fn(S) -> R>,
}

impl<S, R> Pipe<S, R> {
    /// Two connected ends that both send and receive: the first sends `S` and receives `R`,
    /// the second the opposite. Python's `Pipe()` / `Pipe(duplex=True)`.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (a, b) = multiproc::Pipe::<u32, String>::duplex()?;
    /// a.send(7)?;
    /// b.send(format!("got {}", b.recv()?))?;
    /// assert_eq!(a.recv()?, "got 7");
    /// # Ok(())
    /// # }
    /// ```
    pub fn duplex() -> Result<(Connection<S, R>, Connection<R, S>)> {
        let (a, b) = Link::pair()?;
        Ok((Connection::new(a), Connection::new(b)))
    }
}

impl<T> Pipe<T, T> {
    /// A one-way pipe: `(reader, writer)`, in Python's order (`Pipe(duplex=False)`).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (rx, tx) = multiproc::Pipe::<String>::simplex()?;
    /// tx.send("one way".to_string())?;
    /// assert_eq!(rx.recv()?, "one way");
    /// # Ok(())
    /// # }
    /// ```
    pub fn simplex() -> Result<(Receiver<T>, Sender<T>)> {
        let (a, b) = Link::pair()?;
        Ok((
            Receiver {
                end: Connection::new(a),
            },
            Sender {
                end: Connection::new(b),
            },
        ))
    }
}

impl<S, R> fmt::Debug for Pipe<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pipe")
    }
}

/// One end of a duplex [`Pipe`]: sends `S`, receives `R`. Python's `Connection`.
///
/// Every method takes `&self`, and every message is put and taken whole under a lock, so an
/// end can be shared between threads (`Arc<Connection<..>>`), or between processes
/// ([`try_clone`](Connection::try_clone) and pass the clone), without corrupting the stream
/// as it can in Python: each message goes whole to one reader. A `try_recv` does not wait
/// for that lock (while another reader is in the middle of a `recv`, it says
/// [`ErrorKind::Empty`]), and a `recv_timeout` waits for it within its timeout. Dropping
/// the end closes it (there is also [`close`](Connection::close), for symmetry with Python).
///
/// ```
/// use std::time::Duration;
/// use multiproc::{ErrorKind, Pipe};
///
/// # fn main() -> multiproc::Result<()> {
/// let (a, b) = Pipe::<i32, i32>::duplex()?;
/// assert!(!b.poll(Duration::ZERO)?);
/// assert_eq!(b.recv_timeout(Duration::from_millis(10)).unwrap_err().kind(), ErrorKind::Timeout);
/// a.send(1)?;
/// assert!(b.poll(Duration::from_secs(1))?);
/// assert_eq!(b.recv()?, 1);
/// # Ok(())
/// # }
/// ```
pub struct Connection<S, R> {
    link: Link,
    _types: PhantomData<fn(S) -> R>,
}

impl<S, R> Connection<S, R> {
    fn new(link: Link) -> Self {
        Connection {
            link,
            _types: PhantomData,
        }
    }

    /// Sends `value` (or a reference to it) to the other end. Waits while the ring is full
    /// (the peer does not read); fails with [`ErrorKind::Disconnected`] when every
    /// copy of the other end is closed, and with [`ErrorKind::Codec`] when `value` cannot be
    /// encoded (nothing is sent then).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (a, b) = multiproc::Pipe::<Vec<u64>, ()>::duplex()?;
    /// let big = vec![7u64; 1 << 20];
    /// a.send(&big)?;                         // by reference, or by value
    /// assert_eq!(b.recv()?, big);
    /// drop(b);
    /// assert_eq!(a.send(big).unwrap_err().kind(), multiproc::ErrorKind::Disconnected);
    /// # Ok(())
    /// # }
    /// ```
    pub fn send(&self, value: impl Borrow<S>) -> Result<()>
    where
        S: Serialize,
    {
        self.link.send(value.borrow())
    }

    /// Receives the next message, waiting for it. When every copy of the other end is closed
    /// and no message is left: [`ErrorKind::Disconnected`] (Python's `EOFError`).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (a, b) = multiproc::Pipe::<(), String>::duplex()?;
    /// b.send("last words".to_string())?;
    /// drop(b);
    /// assert_eq!(a.recv()?, "last words");
    /// assert_eq!(a.recv().unwrap_err().kind(), multiproc::ErrorKind::Disconnected);
    /// # Ok(())
    /// # }
    /// ```
    pub fn recv(&self) -> Result<R>
    where
        R: DeserializeOwned,
    {
        self.link.recv(Wait::Until(None))
    }

    /// Like [`recv`](Self::recv), but fails with [`ErrorKind::Timeout`] when no message
    /// arrives within `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> multiproc::Result<()> {
    /// let (a, b) = multiproc::Pipe::<u8, u8>::duplex()?;
    /// let err = a.recv_timeout(Duration::from_millis(20)).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::Timeout);
    /// b.send(3)?;
    /// assert_eq!(a.recv_timeout(Duration::from_millis(20))?, 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<R>
    where
        R: DeserializeOwned,
    {
        self.link.recv(Wait::Until(sys::deadline_after(timeout)))
    }

    /// Receives a message only if one is waiting and no other reader of this end is in the
    /// middle of a `recv` (see [`Connection`]): [`ErrorKind::Empty`] otherwise.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (a, b) = multiproc::Pipe::<u8, u8>::duplex()?;
    /// assert_eq!(a.try_recv().unwrap_err().kind(), multiproc::ErrorKind::Empty);
    /// b.send(1)?;
    /// assert_eq!(a.try_recv()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_recv(&self) -> Result<R>
    where
        R: DeserializeOwned,
    {
        self.link.recv(Wait::No)
    }

    /// Whether a `recv` would return at once, waiting up to `timeout` (`Duration::ZERO`:
    /// do not wait). As in Python, a closed peer counts as ready: `recv` then fails at once
    /// with [`ErrorKind::Disconnected`].
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> multiproc::Result<()> {
    /// let (a, b) = multiproc::Pipe::<u8, u8>::duplex()?;
    /// assert!(!a.poll(Duration::from_millis(10))?);
    /// b.send(1)?;
    /// assert!(a.poll(Duration::ZERO)?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn poll(&self, timeout: Duration) -> Result<bool> {
        self.link.poll(timeout)
    }

    /// A second handle on the same end (a duplicated descriptor): the peer sees end of file
    /// only when both are closed.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (a, b) = multiproc::Pipe::<u8, u8>::duplex()?;
    /// let a2 = a.try_clone()?;
    /// a2.send(9)?;
    /// assert_eq!(b.recv()?, 9);
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Connection::new(self.link.try_clone()?))
    }

    /// Closes this end (the same as dropping it).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (a, b) = multiproc::Pipe::<u8, u8>::duplex()?;
    /// b.close();
    /// assert_eq!(a.recv().unwrap_err().kind(), multiproc::ErrorKind::Disconnected);
    /// # Ok(())
    /// # }
    /// ```
    pub fn close(self) {}
}

impl<S, R> fmt::Debug for Connection<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("end", &self.link.end)
            .finish()
    }
}

impl<S, R> Serialize for Connection<S, R> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> std::result::Result<Z::Ok, Z::Error> {
        self.link.serialize(serializer)
    }
}

impl<'de, S, R> Deserialize<'de> for Connection<S, R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Link::deserialize(deserializer).map(Connection::new)
    }
}

/// The reading end of a simplex [`Pipe`]. Python's `Connection` with `writable == False`.
///
/// ```
/// # fn main() -> multiproc::Result<()> {
/// let (rx, tx) = multiproc::Pipe::<u32>::simplex()?;
/// tx.send(1)?;
/// tx.send(2)?;
/// assert_eq!((rx.recv()?, rx.recv()?), (1, 2));
/// # Ok(())
/// # }
/// ```
pub struct Receiver<T> {
    end: Connection<(), T>,
}

impl<T> Receiver<T> {
    /// Receives the next message; see [`Connection::recv`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (rx, tx) = multiproc::Pipe::<String>::simplex()?;
    /// tx.send("hi".to_string())?;
    /// assert_eq!(rx.recv()?, "hi");
    /// # Ok(())
    /// # }
    /// ```
    pub fn recv(&self) -> Result<T>
    where
        T: DeserializeOwned,
    {
        self.end.recv()
    }

    /// Receives with a time limit; see [`Connection::recv_timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> multiproc::Result<()> {
    /// let (rx, _tx) = multiproc::Pipe::<u8>::simplex()?;
    /// let err = rx.recv_timeout(Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::Timeout);
    /// # Ok(())
    /// # }
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T>
    where
        T: DeserializeOwned,
    {
        self.end.recv_timeout(timeout)
    }

    /// Receives only if a message is waiting; see [`Connection::try_recv`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (rx, _tx) = multiproc::Pipe::<u8>::simplex()?;
    /// assert_eq!(rx.try_recv().unwrap_err().kind(), multiproc::ErrorKind::Empty);
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_recv(&self) -> Result<T>
    where
        T: DeserializeOwned,
    {
        self.end.try_recv()
    }

    /// Whether a `recv` would return at once; see [`Connection::poll`].
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> multiproc::Result<()> {
    /// let (rx, tx) = multiproc::Pipe::<u8>::simplex()?;
    /// assert!(!rx.poll(Duration::ZERO)?);
    /// drop(tx);
    /// assert!(rx.poll(Duration::ZERO)?); // end of file is ready too
    /// # Ok(())
    /// # }
    /// ```
    pub fn poll(&self, timeout: Duration) -> Result<bool> {
        self.end.poll(timeout)
    }

    /// A second handle on this end; see [`Connection::try_clone`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (rx, tx) = multiproc::Pipe::<u8>::simplex()?;
    /// let rx2 = rx.try_clone()?;
    /// tx.send(5)?;
    /// assert_eq!(rx2.recv()?, 5);
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Receiver {
            end: self.end.try_clone()?,
        })
    }

    /// Closes this end (the same as dropping it): the writer's `send` then fails with
    /// [`ErrorKind::Disconnected`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (rx, tx) = multiproc::Pipe::<u8>::simplex()?;
    /// rx.close();
    /// assert_eq!(tx.send(1).unwrap_err().kind(), multiproc::ErrorKind::Disconnected);
    /// # Ok(())
    /// # }
    /// ```
    pub fn close(self) {}
}

impl<T> Iterator for Receiver<T>
where
    T: DeserializeOwned,
{
    type Item = Result<T>;

    /// The next message, `None` once the writer is gone and every message was read.
    fn next(&mut self) -> Option<Result<T>> {
        match self.end.recv() {
            Err(err) if err.kind() == ErrorKind::Disconnected => None,
            other => Some(other),
        }
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("end", &self.end.link.end)
            .finish()
    }
}

impl<T> Serialize for Receiver<T> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> std::result::Result<Z::Ok, Z::Error> {
        self.end.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Receiver<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Connection::deserialize(deserializer).map(|end| Receiver { end })
    }
}

/// The writing end of a simplex [`Pipe`]. Python's `Connection` with `readable == False`.
///
/// ```
/// # fn main() -> multiproc::Result<()> {
/// let (rx, tx) = multiproc::Pipe::<u32>::simplex()?;
/// tx.send(10)?;
/// assert_eq!(rx.recv()?, 10);
/// # Ok(())
/// # }
/// ```
pub struct Sender<T> {
    end: Connection<T, ()>,
}

impl<T> Sender<T> {
    /// Sends a message; see [`Connection::send`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (rx, tx) = multiproc::Pipe::<String>::simplex()?;
    /// tx.send("by value".to_string())?;
    /// let s = "by reference".to_string();
    /// tx.send(&s)?;
    /// assert_eq!(rx.recv()?, "by value");
    /// assert_eq!(rx.recv()?, s);
    /// # Ok(())
    /// # }
    /// ```
    pub fn send(&self, value: impl Borrow<T>) -> Result<()>
    where
        T: Serialize,
    {
        self.end.send(value)
    }

    /// A second handle on this end; see [`Connection::try_clone`].
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (rx, tx) = multiproc::Pipe::<u8>::simplex()?;
    /// let tx2 = tx.try_clone()?;
    /// drop(tx);
    /// tx2.send(1)?;                      // still open: one handle is left
    /// assert_eq!(rx.recv()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Sender {
            end: self.end.try_clone()?,
        })
    }

    /// Closes this end (the same as dropping it): the reader's `recv` fails with
    /// [`ErrorKind::Disconnected`] once it has read every message.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (rx, tx) = multiproc::Pipe::<u8>::simplex()?;
    /// tx.send(1)?;
    /// tx.close();
    /// assert_eq!(rx.recv()?, 1);
    /// assert_eq!(rx.recv().unwrap_err().kind(), multiproc::ErrorKind::Disconnected);
    /// # Ok(())
    /// # }
    /// ```
    pub fn close(self) {}
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("end", &self.end.link.end)
            .finish()
    }
}

impl<T> Serialize for Sender<T> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> std::result::Result<Z::Ok, Z::Error> {
        self.end.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Connection::deserialize(deserializer).map(|end| Sender { end })
    }
}

/// One end of a pipe: its socket end, the ring it sends on and the ring it receives from.
struct Link {
    /// `None` only while dropping.
    end: Option<Endpoint>,
    tx: Ring,
    rx: Ring,
}

impl Link {
    fn pair() -> Result<(Link, Link)> {
        let (a, b) = Endpoint::pair()?;
        let size = Ring::size(RING_BYTES);
        let region = Arc::new(Region::new("pipe", 2 * size)?);
        let first = Ring::create(&region, 0, RING_BYTES, None)?;
        let second = Ring::create(&region, size, RING_BYTES, None)?;
        Ok((
            Link {
                end: Some(a),
                tx: first.clone(),
                rx: second.clone(),
            },
            Link {
                end: Some(b),
                tx: second,
                rx: first,
            },
        ))
    }

    /// The socket end (an error in a forked child's copy of its parent's end).
    fn end(&self) -> Result<&Endpoint> {
        let end = self
            .end
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Io, "the pipe end is being dropped"))?;
        end.fd()?;
        Ok(end)
    }

    /// Whether every copy of the other end is closed (a hang-up on the socket).
    fn peer_gone(&self) -> Result<bool> {
        let seen = sys::poll_one(self.end()?.fd()?, sys::PEER_CLOSED, Some(Instant::now()))
            .map_err(|err| Error::io("cannot poll a pipe", err))?;
        Ok(seen & (sys::PEER_CLOSED | libc::POLLERR) != 0)
    }

    fn send<S: Serialize + ?Sized>(&self, value: &S) -> Result<()> {
        let end = self.end()?;
        let connected = || {
            if self.peer_gone()? {
                return Err(disconnected());
            }
            Ok(())
        };
        let item = Outbound::new(value, end)?;
        self.tx
            .push(&item, end, Wait::Until(None), true, "pipe", connected)?;
        // The hang-up is looked for after the item is committed, not before: the peer (woken
        // by the commit if it slept) is already at work meanwhile. An item committed for a
        // peer that is gone is never read (every copy of its end is closed, for good), and
        // the send reports `Disconnected` as it would have before.
        connected()
    }

    fn recv<R: DeserializeOwned>(&self, wait: Wait) -> Result<R> {
        let end = self.end()?;
        // Messages sent before the peer closed come first: look at the ring again after the
        // hang-up (the peer commits its last message before it closes, so once the hang-up
        // shows, so does that message; the other order could miss it).
        let taken = self.rx.pop(end, wait, true, "pipe", || {
            if self.peer_gone()? && !self.rx.has_records() {
                return Err(disconnected());
            }
            Ok(())
        })?;
        ring::decode(taken?)
    }

    fn poll(&self, timeout: Duration) -> Result<bool> {
        self.end()?;
        let deadline = sys::deadline_after(timeout);
        loop {
            if self.rx.has_records() || self.peer_gone()? {
                return Ok(true);
            }
            if timeout.is_zero() || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            self.rx
                .wait_readable(deadline, true, || self.peer_gone().unwrap_or(true))?;
        }
    }

    fn try_clone(&self) -> Result<Link> {
        Ok(Link {
            end: Some(self.end()?.try_clone()?),
            tx: self.tx.clone(),
            rx: self.rx.clone(),
        })
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Close first, then wake the peer's waiters (in any process): they look for the
        // hang-up, which is there if this was the last copy of this end.
        drop(self.end.take());
        self.tx.wake_all();
        self.rx.wake_all();
    }
}

impl Serialize for Link {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> std::result::Result<Z::Ok, Z::Error> {
        let end = self.end().map_err(crate::error::ser_error)?;
        (
            end,
            &**self.tx.region(),
            self.tx.base() as u64,
            self.rx.base() as u64,
        )
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Link {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let (end, region, tx, rx) = <(Endpoint, Region, u64, u64)>::deserialize(deserializer)?;
        let region = Arc::new(region);
        let ring = |base: u64| {
            usize::try_from(base)
                .map_err(|_| Error::new(ErrorKind::Codec, "a pipe ring offset is too large"))
                .and_then(|base| Ring::open(&region, base))
                .map_err(crate::error::de_error)
        };
        Ok(Link {
            end: Some(end),
            tx: ring(tx)?,
            rx: ring(rx)?,
        })
    }
}

fn disconnected() -> Error {
    Error::new(
        ErrorKind::Disconnected,
        "the other end of the pipe is closed",
    )
}
