//! `SimpleQueue`: Python's `multiprocessing.SimpleQueue`, the queue without timeouts.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::core::{Core, Wait};
use crate::error::Result;

/// Python's `multiprocessing.SimpleQueue`: `put`, `get`, `is_empty`, `close`; unbounded.
///
/// It is the same transport as [`Queue`](crate::Queue) (a shared-memory ring with robust
/// locks, so no lock to wedge and nothing lost when a reader dies between items), without
/// the timeouts and the bound. Clones share the queue; pass it to a child
/// as an argument of [`Process::new`](crate::Process::new) or a pool task.
///
/// ```
/// # fn main() -> multiproc::Result<()> {
/// let q = multiproc::SimpleQueue::<String>::new()?;
/// assert!(q.is_empty()?);
/// q.put("a".to_string())?;
/// assert!(!q.is_empty()?);
/// assert_eq!(q.get()?, "a");
/// q.close();
/// assert_eq!(q.put("b".to_string()).unwrap_err().kind(), multiproc::ErrorKind::Closed);
/// # Ok(())
/// # }
/// ```
pub struct SimpleQueue<T> {
    core: Arc<Core>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> SimpleQueue<T> {
    /// A new, empty queue.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::SimpleQueue::<u8>::new()?;
    /// assert!(q.is_empty()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new() -> Result<Self> {
        Ok(SimpleQueue {
            core: Arc::new(Core::new(None)?),
            _items: PhantomData,
        })
    }

    /// Puts `item` (or a reference to it) at the end of the queue. Waits only while the
    /// ring is full (see [`Queue::put`](crate::Queue::put)).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::SimpleQueue::<Vec<u8>>::new()?;
    /// let v = vec![1, 2];
    /// q.put(&v)?;
    /// q.put(v)?;
    /// assert_eq!(q.get()?, q.get()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn put(&self, item: impl Borrow<T>) -> Result<()>
    where
        T: Serialize,
    {
        let item = self.core.prepare(item.borrow())?;
        self.core.put(&item, Wait::Until(None))
    }

    /// Takes the next item, waiting for one.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::SimpleQueue::<u8>::new()?;
    /// q.put(4)?;
    /// assert_eq!(q.get()?, 4);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get(&self) -> Result<T>
    where
        T: DeserializeOwned,
    {
        self.core.recv(Wait::Until(None))
    }

    /// Whether no item is waiting right now (another process may put or take one at any
    /// moment). Python's `empty()`.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::SimpleQueue::<u8>::new()?;
    /// assert!(q.is_empty()?);
    /// q.put(1)?;
    /// assert!(!q.is_empty()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        self.core.is_empty()
    }

    /// Closes the queue in this process (every clone here): later calls here fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed), and threads waiting in `get` or `put`
    /// return with it. Other processes are not affected, nor the items in the queue.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::SimpleQueue::<u8>::new()?;
    /// q.close();
    /// assert_eq!(q.get().unwrap_err().kind(), multiproc::ErrorKind::Closed);
    /// # Ok(())
    /// # }
    /// ```
    pub fn close(&self) {
        self.core.close();
    }
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            core: self.core.clone(),
            _items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("closed", &self.core.is_closed())
            .finish()
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.core.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(SimpleQueue {
            core: Arc::new(Core::deserialize(deserializer)?),
            _items: PhantomData,
        })
    }
}
