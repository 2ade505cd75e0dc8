//! `SharedMemory`: a segment of bytes shared by processes, anonymous or named.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::handle::SharedFd;
use crate::shm::{self, Region};

/// A block of bytes shared by processes: Python's `multiprocessing.shared_memory.SharedMemory`.
///
/// [`new`](Self::new) makes an **anonymous** segment (a `memfd`): it has no name, appears
/// nowhere in `/dev/shm`, and is freed when its last handle (in any process) is dropped, so
/// it cannot leak. Send it to other processes as an argument of a `Process` or pool task, or
/// return it from a task: the receiver maps the same pages (zero copy). For processes that
/// are not related, [`create_named`](Self::create_named) /
/// [`open_named`](Self::open_named) / [`unlink`](Self::unlink) use a POSIX named segment,
/// which lives until unlinked (nothing unlinks it for you, unlike Python's resource tracker).
/// An anonymous segment is sealed at its size; a named one cannot be: any process allowed to
/// open it can shrink it (`ftruncate`), and then every process that maps it dies of SIGBUS at
/// its next access past the new end, as in Python.
///
/// [`read_at`](Self::read_at) and [`write_at`](Self::write_at) are safe byte copies (atomic,
/// a word at a time): bytes that another process writes meanwhile may be old or new. For
/// zero-copy access there are [`as_slice`](Self::as_slice) and
/// [`as_mut_slice`](Self::as_mut_slice), which are `unsafe`: coordinate writers yourself (a
/// [`Lock`](crate::Lock), a [`Barrier`](crate::Barrier), or a hand-off through a queue).
///
/// ```no_run
/// use multiproc::{process, Pool, SharedMemory};
///
/// #[process]
/// fn fill(len: usize) -> SharedMemory {
///     let shm = SharedMemory::new(len).unwrap();
///     shm.write_at(0, &vec![7u8; len]).unwrap();
///     shm // back to the parent as a descriptor: the bytes are not copied
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let pool = Pool::new(2)?;
///     let shm = pool.apply(fill, 1 << 20)?;
///     let mut last = [0u8];
///     shm.read_at(shm.len() - 1, &mut last)?;
///     assert_eq!(last, [7]);
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    region: Arc<Region>,
    name: Option<Arc<str>>,
}

impl SharedMemory {
    /// A new anonymous segment of `len` zero bytes; `len` must not be 0 (Python's
    /// `SharedMemory(create=True, size=len)`, without a name to clean up).
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::new(4096)?;
    /// assert_eq!(shm.len(), 4096);
    /// assert!(shm.name().is_none());
    /// assert!(multiproc::SharedMemory::new(0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(len: usize) -> Result<SharedMemory> {
        check_len(len)?;
        Ok(SharedMemory {
            region: Arc::new(Region::new("shared-memory", len)?),
            name: None,
        })
    }

    /// Creates the named segment `name` (`/dev/shm/<name>`, mode 0600) of `len` zero bytes;
    /// an error when it exists already (`O_EXCL`). It outlives every handle until
    /// [`unlink`](Self::unlink)ed.
    ///
    /// ```
    /// let name = format!("multiproc-doc-create-{}", std::process::id());
    /// let shm = multiproc::SharedMemory::create_named(&name, 10)?;
    /// assert!(multiproc::SharedMemory::create_named(&name, 10).is_err()); // exists
    /// shm.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_named(name: &str, len: usize) -> Result<SharedMemory> {
        check_len(len)?;
        Ok(SharedMemory {
            region: Arc::new(Region::create_named(name, len)?),
            name: Some(name.into()),
        })
    }

    /// Opens the existing named segment `name`, whole (Python's `SharedMemory(name)`).
    ///
    /// ```
    /// let name = format!("multiproc-doc-open-{}", std::process::id());
    /// let created = multiproc::SharedMemory::create_named(&name, 3)?;
    /// created.write_at(0, b"abc")?;
    /// let opened = multiproc::SharedMemory::open_named(&name)?;
    /// let mut buf = [0u8; 3];
    /// opened.read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"abc");
    /// opened.unlink()?;
    /// assert!(multiproc::SharedMemory::open_named(&name).is_err()); // gone
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_named(name: &str) -> Result<SharedMemory> {
        Ok(SharedMemory {
            region: Arc::new(Region::open_named(name)?),
            name: Some(name.into()),
        })
    }

    /// Removes the segment's name: nobody can open it any more, and it is freed once every
    /// handle is dropped. Mappings stay valid. An [`ErrorKind::InvalidInput`] error for an
    /// anonymous segment (nothing to unlink), an I/O error when the name is already gone.
    ///
    /// ```
    /// let name = format!("multiproc-doc-unlink-{}", std::process::id());
    /// let shm = multiproc::SharedMemory::create_named(&name, 1)?;
    /// shm.unlink()?;
    /// shm.write_at(0, &[1])?; // still mapped
    /// assert!(shm.unlink().is_err()); // already unlinked
    /// assert!(multiproc::SharedMemory::new(1)?.unlink().is_err()); // anonymous
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unlink(&self) -> Result<()> {
        match &self.name {
            Some(name) => shm::unlink_named(name),
            None => Err(Error::new(
                ErrorKind::InvalidInput,
                "an anonymous shared memory segment has no name to unlink: it is freed with its last handle",
            )),
        }
    }

    /// The name of a named segment; `None` for an anonymous one.
    ///
    /// ```
    /// assert_eq!(multiproc::SharedMemory::new(1)?.name(), None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The size in bytes (Python's `size`).
    ///
    /// ```
    /// assert_eq!(multiproc::SharedMemory::new(100)?.len(), 100);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.region.len()
    }

    /// Whether the segment has no bytes (never, for a segment made here).
    ///
    /// ```
    /// assert!(!multiproc::SharedMemory::new(1)?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.region.len() == 0
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`; an
    /// [`ErrorKind::InvalidInput`] error when they are not all inside the segment.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::new(8)?;
    /// let mut buf = [1u8; 4];
    /// shm.read_at(4, &mut buf)?;
    /// assert_eq!(buf, [0; 4]);
    /// assert!(shm.read_at(5, &mut buf).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.region.read_bytes(offset, buf)
    }

    /// Copies `data` into the segment at `offset`; an [`ErrorKind::InvalidInput`] error
    /// when it does not fit.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::new(8)?;
    /// shm.write_at(6, b"hi")?;
    /// assert!(shm.write_at(7, b"hi").is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.region.write_bytes(offset, data)
    }

    /// The start of the mapping, valid for [`len`](Self::len) bytes while this handle lives.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::new(1)?;
    /// assert!(!shm.as_ptr().is_null());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.region.as_ptr()
    }

    /// The whole segment as a byte slice, without copying.
    ///
    /// # Safety
    ///
    /// While the slice lives, nothing may write the segment: no thread of this process
    /// (through another handle, [`write_at`](Self::write_at) or
    /// [`as_mut_slice`](Self::as_mut_slice)), and no other process. Rust assumes the bytes
    /// behind a `&[u8]` do not change.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::new(3)?;
    /// shm.write_at(0, b"abc")?;
    /// // SAFETY: no other process has this segment, and nothing writes it below.
    /// let bytes = unsafe { shm.as_slice() };
    /// assert_eq!(bytes, b"abc");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes, alive as long as `self`; the caller promises that
        // nothing writes it while the slice lives.
        unsafe { std::slice::from_raw_parts(self.region.as_ptr(), self.region.len()) }
    }

    /// The whole segment as a mutable byte slice, without copying.
    ///
    /// # Safety
    ///
    /// While the slice lives, nothing else may read or write the segment: no other slice
    /// from any handle of it, no [`read_at`](Self::read_at) / [`write_at`](Self::write_at)
    /// in another thread, and no other process (hand the segment over with a lock, a barrier
    /// or a queue message).
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::new(4)?;
    /// // SAFETY: no other process has this segment, and this is the only access to it.
    /// let bytes = unsafe { shm.as_mut_slice() };
    /// bytes.copy_from_slice(b"wxyz");
    /// let mut check = [0u8; 4];
    /// shm.read_at(0, &mut check)?;
    /// assert_eq!(&check, b"wxyz");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[allow(clippy::mut_from_ref)] // shared memory: exclusivity is the caller's promise
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, alive as long as `self`; the caller promises that
        // nothing else accesses it while the slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.region.as_ptr(), self.region.len()) }
    }
}

fn check_len(len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "a shared memory segment needs at least one byte",
        ));
    }
    Ok(())
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("len", &self.region.len())
            .finish()
    }
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        (&*self.region, self.name.as_deref()).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let (fd, name) = <(SharedFd, Option<String>)>::deserialize(deserializer)?;
        // A named segment cannot be sealed: it is mapped as `open_named` maps it.
        let region = match name {
            Some(_) => Region::from_named_fd(fd),
            None => Region::from_fd(fd),
        }
        .map_err(crate::error::de_error)?;
        Ok(SharedMemory {
            region: Arc::new(region),
            name: name.map(Into::into),
        })
    }
}
