//! `Pipe`: two connected ends, each message one record of a `SOCK_SEQPACKET` socket pair.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::record::{self, Endpoint, Incoming, Ready};
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// Python's `multiprocessing.Pipe()`: creates two connected ends.
///
/// `Pipe` is only a namespace: [`Pipe::duplex`] makes two [`Connection`]s that both send and
/// receive (`Pipe()` in Python), [`Pipe::simplex`] a [`Receiver`] and a [`Sender`]
/// (`Pipe(duplex=False)`, in Python's order: reader first). The types are checked at compile
/// time: `Pipe::<S, R>::duplex()` gives an end that sends `S` and receives `R`, and its
/// peer, which sends `R` and receives `S`.
///
/// Each message is encoded with serde and travels as one record of a Unix `SOCK_SEQPACKET`
/// socket pair; messages larger than 64 KiB wait in an anonymous memory file whose
/// descriptor travels with the record, so a large `send` does not wait for its reader.
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
        let (a, b) = Endpoint::pair()?;
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
        let (a, b) = Endpoint::pair()?;
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
/// Every method takes `&self`, and every message is one atomic record, so an end can be
/// shared between threads (`Arc<Connection<..>>`), or between processes
/// ([`try_clone`](Connection::try_clone) and pass the clone), without corrupting the stream
/// as it can in Python: each message goes whole to one reader. Dropping the end closes it
/// (there is also [`close`](Connection::close), for symmetry with Python).
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
    end: Endpoint,
    _types: PhantomData<fn(S) -> R>,
}

impl<S, R> Connection<S, R> {
    fn new(end: Endpoint) -> Self {
        Connection {
            end,
            _types: PhantomData,
        }
    }

    /// Sends `value` (or a reference to it) to the other end. Waits while the kernel buffer
    /// is full (the peer does not read); fails with [`ErrorKind::Disconnected`] when every
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
        let record = self.end.prepare(value.borrow())?;
        self.end.send(&record, false).map(drop)
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
        recv(&self.end, None)
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
        recv(
            &self.end,
            Some(Wait::Deadline(sys::deadline_after(timeout))),
        )
    }

    /// Receives a message only if one is waiting: [`ErrorKind::Empty`] otherwise.
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
        recv(&self.end, Some(Wait::No))
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
        poll(&self.end, timeout)
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
        Ok(Connection::new(self.end.try_clone()?))
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
            .field("end", &self.end)
            .finish()
    }
}

impl<S, R> Serialize for Connection<S, R> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> std::result::Result<Z::Ok, Z::Error> {
        self.end.serialize(serializer)
    }
}

impl<'de, S, R> Deserialize<'de> for Connection<S, R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Endpoint::deserialize(deserializer).map(Connection::new)
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
            .field("end", &self.end.end)
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
            .field("end", &self.end.end)
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

/// How long a receive may wait.
#[derive(Clone, Copy)]
enum Wait {
    /// Not at all.
    No,
    /// Until the deadline (`None`: forever).
    Deadline(Option<std::time::Instant>),
}

/// Receives one message from `end`; `wait == None` blocks in the kernel.
fn recv<R: DeserializeOwned>(end: &Endpoint, wait: Option<Wait>) -> Result<R> {
    let Some(wait) = wait else {
        return match end.recv(false)? {
            Incoming::Record(record) => record::decode(record),
            Incoming::Lost(err) => Err(err),
            Incoming::Eof | Incoming::Nothing => Err(disconnected()),
        };
    };
    loop {
        match end.recv(true)? {
            Incoming::Record(record) => return record::decode(record),
            Incoming::Lost(err) => return Err(err),
            Incoming::Eof => return Err(disconnected()),
            Incoming::Nothing => {}
        }
        let deadline = match wait {
            Wait::No => {
                return Err(Error::new(
                    ErrorKind::Empty,
                    "no message is waiting on the pipe",
                ))
            }
            Wait::Deadline(deadline) => deadline,
        };
        // Another reader of the same end may take the record first: then wait again.
        if end.wait(sys::READABLE, None, deadline)? == Ready::Timeout {
            return Err(Error::timeout(
                "timed out waiting for a message on the pipe",
            ));
        }
    }
}

fn poll(end: &Endpoint, timeout: Duration) -> Result<bool> {
    if timeout.is_zero() {
        return end.readable_now();
    }
    Ok(end.wait(sys::READABLE, None, sys::deadline_after(timeout))? != Ready::Timeout)
}

fn disconnected() -> Error {
    Error::new(
        ErrorKind::Disconnected,
        "the other end of the pipe is closed",
    )
}
