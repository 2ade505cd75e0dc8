//! The transport every queue shares: one `SOCK_SEQPACKET` socket pair, both ends held by
//! every process that has the queue; `put` sends a record into one end, `get` takes one from
//! the other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::local::LocalFd;
use super::record::{self, Endpoint, Incoming, Outgoing, Ready, Received};
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// How long an operation may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all (`try_*`): [`ErrorKind::Empty`] / [`ErrorKind::Full`].
    No,
    /// Until the deadline (`None`: forever); then [`ErrorKind::Timeout`].
    Until(Option<Instant>),
}

/// The shared socket pair of a queue, and this process's `close` state.
#[derive(Debug)]
pub(crate) struct Core {
    /// `put` writes here.
    tx: Endpoint,
    /// `get` reads here.
    rx: Endpoint,
    /// Signalled by `close`, to wake the threads of this process that wait on the queue.
    wake: Wake,
    closed: AtomicBool,
}

impl Core {
    /// A new, empty queue.
    pub(crate) fn new() -> Result<Core> {
        let (tx, rx) = Endpoint::pair()?;
        Core::from_ends(tx, rx)
    }

    fn from_ends(tx: Endpoint, rx: Endpoint) -> Result<Core> {
        Ok(Core {
            tx,
            rx,
            wake: Wake::new()?,
            closed: AtomicBool::new(false),
        })
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Closed,
                "the queue is closed in this process",
            ));
        }
        Ok(())
    }

    /// Encodes `value` as a record (no waiting, and nothing sent yet).
    pub(crate) fn prepare<T: Serialize + ?Sized>(&self, value: &T) -> Result<Outgoing> {
        self.check_open()?;
        self.tx.prepare(value)
    }

    /// Sends a prepared record, waiting for room in the kernel buffer as `wait` allows.
    pub(crate) fn send(&self, record: &Outgoing, wait: Wait) -> Result<()> {
        loop {
            self.check_open()?;
            if self.tx.send(record, true)? {
                return Ok(());
            }
            let deadline = match wait {
                Wait::No => return Err(Error::new(ErrorKind::Full, "the queue is full")),
                Wait::Until(deadline) => deadline,
            };
            match self
                .tx
                .wait(libc::POLLOUT, Some(self.wake.fd.get()?), deadline)?
            {
                Ready::Timeout => {
                    return Err(Error::timeout("timed out waiting for room in the queue"))
                }
                Ready::Socket | Ready::Woken => {}
            }
        }
    }

    /// Takes one item, waiting as `wait` allows, and decodes it.
    pub(crate) fn recv<T: DeserializeOwned>(&self, wait: Wait) -> Result<T> {
        record::decode(self.recv_record(wait)??)
    }

    /// Takes one record, waiting as `wait` allows. Concurrent readers, in this process or
    /// others, each get whole, distinct records. An outer error means nothing was taken; an
    /// inner one, that a record was taken but is lost (see [`Incoming::Lost`]).
    pub(crate) fn recv_record(&self, wait: Wait) -> Result<Result<Received>> {
        loop {
            self.check_open()?;
            match self.rx.recv(true)? {
                Incoming::Record(record) => return Ok(Ok(record)),
                Incoming::Lost(err) => return Ok(Err(err)),
                Incoming::Eof => {
                    // Cannot happen while this process holds the write end; say so if it does.
                    return Err(Error::new(
                        ErrorKind::Disconnected,
                        "the queue's socket was shut down",
                    ));
                }
                Incoming::Nothing => {}
            }
            let deadline = match wait {
                Wait::No => return Err(Error::new(ErrorKind::Empty, "the queue is empty")),
                Wait::Until(deadline) => deadline,
            };
            match self
                .rx
                .wait(sys::READABLE, Some(self.wake.fd.get()?), deadline)?
            {
                Ready::Timeout => {
                    return Err(Error::timeout(
                        "timed out waiting for an item from the queue",
                    ))
                }
                // Another reader may have taken the item first: try again.
                Ready::Socket | Ready::Woken => {}
            }
        }
    }

    /// Whether no item is waiting right now (a snapshot: other processes put and get).
    pub(crate) fn is_empty(&self) -> Result<bool> {
        self.check_open()?;
        Ok(!self.rx.readable_now()?)
    }

    /// Closes the queue in this process: later `put` and `get` here fail with
    /// [`ErrorKind::Closed`], and those waiting now return with it.
    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            if let Ok(fd) = self.wake.fd.get() {
                sys::eventfd_signal(fd);
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Serialize for Core {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        if self.is_closed() {
            return Err(serde::ser::Error::custom(
                "the queue is closed in this process: it cannot be sent",
            ));
        }
        (&self.tx, &self.rx).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Core {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let (tx, rx) = <(Endpoint, Endpoint)>::deserialize(deserializer)?;
        Core::from_ends(tx, rx).map_err(serde::de::Error::custom)
    }
}

/// This process's eventfd for `close` (a [`LocalFd`], like the socket ends).
#[derive(Debug)]
struct Wake {
    fd: LocalFd,
}

impl Wake {
    fn new() -> Result<Wake> {
        let fd = sys::eventfd().map_err(|err| Error::io("cannot create an eventfd", err))?;
        Ok(Wake {
            fd: LocalFd::new(fd),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn put_get_empty_full_closed() {
        let core = Core::new().unwrap();
        assert!(core.is_empty().unwrap());
        assert_eq!(
            core.recv::<u32>(Wait::No).unwrap_err().kind(),
            ErrorKind::Empty
        );
        let t = Instant::now();
        let deadline = sys::deadline_after(Duration::from_millis(30));
        assert_eq!(
            core.recv::<u32>(Wait::Until(deadline)).unwrap_err().kind(),
            ErrorKind::Timeout
        );
        assert!(t.elapsed() >= Duration::from_millis(30));
        core.send(&core.prepare(&5u32).unwrap(), Wait::No).unwrap();
        assert!(!core.is_empty().unwrap());
        assert_eq!(core.recv::<u32>(Wait::No).unwrap(), 5);
        core.close();
        assert_eq!(core.prepare(&1u32).err().unwrap().kind(), ErrorKind::Closed);
        assert_eq!(
            core.recv::<u32>(Wait::No).unwrap_err().kind(),
            ErrorKind::Closed
        );
    }

    #[test]
    fn close_wakes_a_waiting_thread() {
        let core = std::sync::Arc::new(Core::new().unwrap());
        let waiter = {
            let core = core.clone();
            std::thread::spawn(move || core.recv::<u32>(Wait::Until(None)))
        };
        std::thread::sleep(Duration::from_millis(30));
        core.close();
        assert_eq!(
            waiter.join().unwrap().unwrap_err().kind(),
            ErrorKind::Closed
        );
    }

    #[test]
    fn an_unbounded_queue_fills_the_kernel_buffer_then_reports_full() {
        let core = Core::new().unwrap();
        let mut n = 0u32;
        loop {
            match core.send(&core.prepare(&n).unwrap(), Wait::No) {
                Ok(()) => n += 1,
                Err(err) => {
                    assert_eq!(err.kind(), ErrorKind::Full);
                    break;
                }
            }
        }
        assert!(n > 100, "only {n} records fit");
        for i in 0..n {
            assert_eq!(core.recv::<u32>(Wait::No).unwrap(), i);
        }
    }
}
