//! The counting side of a queue: its free slots when bounded, its item count for `qsize`.
//! Both are process-shared semaphores (`sync::Semaphore`), so they travel with the queue.

use serde::{Deserialize, Serialize};

use super::core::{Core, Wait};
use crate::error::{Error, Result};
use crate::sync::Semaphore;

/// The slots of a queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Slots {
    /// Unbounded: counts the items for `qsize` (a put adds one before it sends, a get takes
    /// one after it receives).
    Unbounded { items: Semaphore },
    /// Bounded: `free` counts free slots (a put takes one, a get gives it back); the item
    /// count is `maxsize - free`.
    Bounded { maxsize: usize, free: Semaphore },
}

/// A slot taken for one `put`: given back on drop unless [`Slot::commit`]ted.
pub(crate) struct Slot<'a> {
    slots: &'a Slots,
    sent: bool,
}

impl Slot<'_> {
    /// The item was sent: it holds the slot until a `get` takes it.
    pub(crate) fn commit(mut self) {
        self.sent = true;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.sent {
            // The item was not sent: undo what `acquire` did.
            self.slots.release();
        }
    }
}

impl Slots {
    pub(crate) fn unbounded() -> Result<Slots> {
        Ok(Slots::Unbounded {
            items: Semaphore::new(0)?,
        })
    }

    pub(crate) fn bounded(maxsize: usize) -> Result<Slots> {
        let units = u32::try_from(maxsize)
            .ok()
            .filter(|&n| n <= crate::sync::SEM_VALUE_MAX)
            .ok_or_else(|| {
                Error::new(
                    crate::ErrorKind::InvalidInput,
                    format!(
                        "a bounded queue holds at most {} items",
                        crate::sync::SEM_VALUE_MAX
                    ),
                )
            })?;
        Ok(Slots::Bounded {
            maxsize,
            free: Semaphore::new(units)?,
        })
    }

    pub(crate) fn maxsize(&self) -> Option<usize> {
        match self {
            Slots::Unbounded { .. } => None,
            Slots::Bounded { maxsize, .. } => Some(*maxsize),
        }
    }

    /// Takes a slot for one `put`, waiting as `wait` allows: [`ErrorKind::Full`] or
    /// [`ErrorKind::Timeout`] when there is none.
    ///
    /// A `put` waiting here for a slot is not woken by `close`: it sees the queue closed
    /// when it gets a slot (and gives the slot back).
    pub(crate) fn acquire<'a>(&'a self, core: &Core, wait: Wait) -> Result<Slot<'a>> {
        match self {
            Slots::Unbounded { items } => {
                items.release()?;
                Ok(Slot {
                    slots: self,
                    sent: false,
                })
            }
            Slots::Bounded { free, .. } => {
                let guard = match wait {
                    Wait::No => free.try_acquire(),
                    Wait::Until(None) => Some(free.acquire()?),
                    Wait::Until(Some(deadline)) => free.acquire_timeout(
                        deadline.saturating_duration_since(std::time::Instant::now()),
                    )?,
                };
                let guard = guard.ok_or_else(|| match wait {
                    Wait::No => Error::new(crate::ErrorKind::Full, "the queue is full"),
                    Wait::Until(_) => Error::timeout("timed out waiting for room in the queue"),
                })?;
                guard.forget();
                let slot = Slot {
                    slots: self,
                    sent: false,
                };
                core.check_open()?;
                Ok(slot)
            }
        }
    }

    /// A `get` took an item: its slot is free (bounded), or one item fewer (unbounded).
    pub(crate) fn release(&self) {
        match self {
            Slots::Unbounded { items } => {
                // Fails only when a process was killed between its count and its send.
                if let Some(unit) = items.try_acquire() {
                    unit.forget();
                }
            }
            Slots::Bounded { free, .. } => {
                // Cannot exceed the maximum unless a process died between taking a slot
                // and sending; nothing to do then.
                let _ = free.release();
            }
        }
    }

    /// The number of items (approximate while others put and get).
    pub(crate) fn count(&self) -> usize {
        match self {
            Slots::Unbounded { items } => items.get_value() as usize,
            Slots::Bounded { maxsize, free } => maxsize.saturating_sub(free.get_value() as usize),
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        match self {
            Slots::Unbounded { .. } => false,
            Slots::Bounded { free, .. } => free.get_value() == 0,
        }
    }
}
