//! The transport every queue shares: a shared-memory ring (`ring`) in a region every
//! holder maps, and one `SOCK_SEQPACKET` socket pair, both ends held by every process that
//! has the queue, for the items that carry descriptors or are spilled to a `memfd`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::record::Endpoint;
/// How long an operation may wait: defined by the ring, which waits; named here too, for the
/// queues built on this core.
pub(crate) use super::ring::Wait;
use super::ring::{self, Outbound, Ring, Taken};
use crate::error::{Error, ErrorKind, Result};
use crate::shm::Region;

/// Data bytes of a queue's ring: 65 536 `u64` items, 1000 items of 1 KiB.
const RING_BYTES: usize = 1 << 20;

/// The shared ring and socket pair of a queue, and this process's `close` state.
#[derive(Debug)]
pub(crate) struct Core {
    /// `put` sends socket items here.
    tx: Endpoint,
    /// `get` receives them here.
    rx: Endpoint,
    ring: Ring,
    closed: AtomicBool,
}

impl Core {
    /// A new, empty queue of at most `bound` items (`None`: as many as the ring holds).
    pub(crate) fn new(bound: Option<u32>) -> Result<Core> {
        let (tx, rx) = Endpoint::pair()?;
        let region = Arc::new(Region::new("queue", Ring::size(RING_BYTES))?);
        let ring = Ring::create(&region, 0, RING_BYTES, bound)?;
        Ok(Core {
            tx,
            rx,
            ring,
            closed: AtomicBool::new(false),
        })
    }

    /// An error unless the queue is open in this process (not closed, and not a forked
    /// child's copy of its parent's queue).
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Closed,
                "the queue is closed in this process",
            ));
        }
        self.tx.fd().map(drop)
    }

    /// Encodes `value` (no waiting, and nothing put yet).
    pub(crate) fn prepare<T: Serialize + ?Sized>(&self, value: &T) -> Result<Outbound> {
        self.check_open()?;
        Outbound::new(value, &self.tx)
    }

    /// Puts a prepared item, waiting for room as `wait` allows.
    pub(crate) fn put(&self, item: &Outbound, wait: Wait) -> Result<()> {
        self.put_counted(item, wait, &|| Ok(()))
    }

    /// [`put`](Self::put), which runs `counted` right before the item is committed, once
    /// there is room (see `Ring::push_counted`): its error puts nothing.
    pub(crate) fn put_counted(
        &self,
        item: &Outbound,
        wait: Wait,
        counted: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        self.check_open()?;
        self.ring.push_counted(
            item,
            &self.tx,
            wait,
            true,
            "queue",
            || self.check_open(),
            counted,
        )
    }

    /// Takes one item, waiting as `wait` allows, and decodes it.
    pub(crate) fn recv<T: DeserializeOwned>(&self, wait: Wait) -> Result<T> {
        ring::decode(self.recv_record(wait)??)
    }

    /// Takes one item, waiting as `wait` allows. Concurrent readers, in this process or
    /// others, each get whole, distinct items. An outer error means nothing was taken; an
    /// inner one, that an item was taken but is lost (see `record::Incoming::Lost`).
    pub(crate) fn recv_record(&self, wait: Wait) -> Result<Result<Taken>> {
        self.check_open()?;
        self.ring
            .pop(&self.rx, wait, true, "queue", || self.check_open())
    }

    /// Whether no item is waiting right now (a snapshot: other processes put and get).
    pub(crate) fn is_empty(&self) -> Result<bool> {
        self.check_open()?;
        Ok(!self.ring.has_records())
    }

    /// The number of items in the queue (a snapshot).
    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }

    /// The bound of a bounded queue.
    pub(crate) fn maxsize(&self) -> Option<usize> {
        self.ring.bound()
    }

    /// Whether a bounded queue holds its bound of items (a snapshot).
    pub(crate) fn is_full(&self) -> bool {
        self.ring.is_full()
    }

    /// Closes the queue in this process: later `put` and `get` here fail with
    /// [`ErrorKind::Closed`], and those waiting now return with it.
    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            // Wakes the waiters of every process: the others look, and sleep again.
            self.ring.wake_all();
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
        (
            &self.tx,
            &self.rx,
            &**self.ring.region(),
            self.ring.base() as u64,
        )
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Core {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let (tx, rx, region, base) =
            <(Endpoint, Endpoint, Region, u64)>::deserialize(deserializer)?;
        let base = usize::try_from(base).map_err(serde::de::Error::custom)?;
        let ring = Ring::open(&Arc::new(region), base).map_err(crate::error::de_error)?;
        Ok(Core {
            tx,
            rx,
            ring,
            closed: AtomicBool::new(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn put_get_empty_full_closed() {
        let core = Core::new(None).unwrap();
        assert!(core.is_empty().unwrap());
        assert_eq!(
            core.recv::<u32>(Wait::No).unwrap_err().kind(),
            ErrorKind::Empty
        );
        let t = Instant::now();
        let deadline = crate::sys::deadline_after(Duration::from_millis(30));
        assert_eq!(
            core.recv::<u32>(Wait::Until(deadline)).unwrap_err().kind(),
            ErrorKind::Timeout
        );
        assert!(t.elapsed() >= Duration::from_millis(30));
        core.put(&core.prepare(&5u32).unwrap(), Wait::No).unwrap();
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
        let core = std::sync::Arc::new(Core::new(None).unwrap());
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
    fn an_unbounded_queue_fills_its_ring_then_reports_full() {
        let core = Core::new(None).unwrap();
        let mut n = 0u32;
        loop {
            match core.put(&core.prepare(&n).unwrap(), Wait::No) {
                Ok(()) => n += 1,
                Err(err) => {
                    assert_eq!(err.kind(), ErrorKind::Full);
                    break;
                }
            }
        }
        assert_eq!(n as usize, RING_BYTES / 16);
        assert_eq!(core.len(), n as usize);
        for i in 0..n {
            assert_eq!(core.recv::<u32>(Wait::No).unwrap(), i);
        }
    }
}
