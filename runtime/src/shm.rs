//! Shared memory regions: anonymous `memfd` segments mapped `MAP_SHARED`, freed with their last
//! descriptor and mapping (no `/dev/shm` entry to leak, unlike CPython's named segments,
//! gh-82300). A region travels to another process as its descriptor (see [`handle`]), and the
//! receiver maps the same pages.
//!
//! On top of a [`Region`]: [`Shared<T>`], a typed view of an object that lives in a region (the
//! state of a lock, a semaphore, a value), which is what the synchronization primitives and
//! shared values hold; POSIX named segments (`shm_open`) for unrelated processes; and byte
//! copies that stay sound while other processes write the same memory.
//!
//! [`handle`]: crate::handle

use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::handle::SharedFd;

/// A mapped shared memory segment. Not public API: the building block of the shared types.
pub(crate) struct Region {
    fd: SharedFd,
    ptr: NonNull<u8>,
    len: usize,
    /// Device and inode of the segment: the same in every process and every mapping.
    id: (u64, u64),
}

// SAFETY: the mapping is plain memory shared with other processes; the types built on a
// Region decide how it is accessed (atomics, process-shared mutexes), and Region itself only
// reads and writes it with atomic operations (`read_bytes`, `write_bytes`).
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` hands out the pointer and atomic byte copies.
unsafe impl Sync for Region {}

fn last_os_error(context: impl std::fmt::Display) -> Error {
    Error::io(context, std::io::Error::last_os_error())
}

impl Region {
    /// A new zero-filled region of `len` bytes (at least 1). `name` shows in
    /// `/proc/<pid>/maps` and `/proc/<pid>/fd`, for debugging. The segment is sealed at that
    /// size: nobody who receives the descriptor can shrink it under another process's feet
    /// (which would make that process's next access a SIGBUS).
    pub(crate) fn new(name: &str, len: usize) -> Result<Region> {
        let len = len.max(1);
        let cname = std::ffi::CString::new(format!("multiproc:{name}"))
            .map_err(|_| Error::new(ErrorKind::InvalidInput, "a region name cannot contain NUL"))?;
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new
        // descriptor or -1.
        let fd = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(last_os_error("memfd_create"));
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        set_len(&fd, len)?;
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on our own memfd, created with MFD_ALLOW_SEALING.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(last_os_error("cannot seal a shared memory region"));
        }
        Region::map(SharedFd::new(fd), len)
    }

    /// Creates the POSIX shared memory object `name` (`/dev/shm/<name>`) of `len` bytes, mode
    /// 0600; an error of kind `Io` (`AlreadyExists` source) when it exists.
    pub(crate) fn create_named(name: &str, len: usize) -> Result<Region> {
        let cname = shm_name(name)?;
        // SAFETY: shm_open takes a NUL-terminated name, flags and a mode; it returns a new
        // descriptor or -1.
        let fd = unsafe {
            libc::shm_open(
                cname.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            return Err(last_os_error(format!(
                "cannot create the shared memory segment {name:?}"
            )));
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mapped = set_len(&fd, len).and_then(|()| Region::map(SharedFd::new(fd), len));
        if mapped.is_err() {
            let _ = unlink_named(name);
        }
        mapped
    }

    /// Opens and maps the existing POSIX shared memory object `name`, whole.
    pub(crate) fn open_named(name: &str) -> Result<Region> {
        let cname = shm_name(name)?;
        // SAFETY: shm_open takes a NUL-terminated name, flags and a mode (unused without
        // O_CREAT); it returns a new descriptor or -1.
        let fd = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
        if fd < 0 {
            return Err(last_os_error(format!(
                "cannot open the shared memory segment {name:?}"
            )));
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Region::from_named_fd(SharedFd::new(fd))
    }

    /// Maps an anonymous region received from another process, whole.
    ///
    /// The segment must be sealed against shrinking, as [`Region::new`] seals it: a mapping
    /// past the end of its file faults (SIGBUS) on access, so a segment that a peer could
    /// `ftruncate` would let that peer kill every process that maps it. Without the seal it is
    /// refused with an [`ErrorKind::InvalidInput`] error.
    pub(crate) fn from_fd(fd: SharedFd) -> Result<Region> {
        // SAFETY: F_GET_SEALS only reads the seals of an open descriptor; -1 (EINVAL) for a
        // file that supports none.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a shared memory segment not sealed against shrinking cannot be mapped: \
                 whoever holds it could shrink it, and every process that maps it would crash \
                 (SIGBUS) on its next access",
            ));
        }
        Region::from_named_fd(fd)
    }

    /// Maps a POSIX named segment, whole, without a seal: such a segment cannot be sealed, and
    /// any process allowed to open it can shrink it (then the next access past its new end is
    /// a SIGBUS), as with Python's `SharedMemory(name)`.
    pub(crate) fn from_named_fd(fd: SharedFd) -> Result<Region> {
        let (size, _) = fstat(&fd)?;
        let len = usize::try_from(size).map_err(|_| {
            Error::new(ErrorKind::InvalidInput, "region too large for this process")
        })?;
        if len == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "an empty shared memory segment cannot be mapped",
            ));
        }
        Region::map(fd, len)
    }

    fn map(fd: SharedFd, len: usize) -> Result<Region> {
        let (_, id) = fstat(&fd)?;
        // SAFETY: a new shared mapping of the whole file; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_os_error(format!(
                "cannot map a shared memory region of {len} bytes"
            )));
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| Error::new(ErrorKind::Io, "mmap returned a null mapping"))?;
        Ok(Region { fd, ptr, len, id })
    }

    /// The start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `self` and `other` map the same segment (in this process, or received from
    /// different messages: each decoding maps it anew).
    pub(crate) fn same_segment(&self, other: &Region) -> bool {
        self.id == other.id
    }

    /// The descriptor of the segment.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn fd(&self) -> &SharedFd {
        &self.fd
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        if offset.checked_add(len).is_some_and(|end| end <= self.len) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "bytes {offset}..{} are out of a segment of {} bytes",
                    offset.saturating_add(len),
                    self.len
                ),
            ))
        }
    }

    /// Copies `out.len()` bytes at `offset` out of the region, one atomic load (relaxed) of
    /// `unit` bytes at a time: sound even while other threads or processes write the same
    /// bytes, which can then be a mix of old and new units. Every raw access to a given piece
    /// of shared memory uses the same `unit` (mixed-size racing atomics are not allowed).
    pub(crate) fn read_units(&self, offset: usize, out: &mut [u8], unit: usize) -> Result<()> {
        let base = self.check_units(offset, out.len(), unit)?;
        for (i, chunk) in out.chunks_exact_mut(unit).enumerate() {
            let p = base.wrapping_add(i * unit);
            // Each arm's access is sound because `p..p + unit` is inside the live mapping and
            // `unit`-aligned (checked by `check_units`), and every raw access to this memory is
            // atomic with this same width, or excluded by a lock.
            match unit {
                1 => {
                    // SAFETY: `p` is a byte of the live mapping, only ever accessed as an
                    // `AtomicU8` (see above).
                    let cell = unsafe { AtomicU8::from_ptr(p) };
                    chunk[0] = cell.load(Ordering::Relaxed);
                }
                2 => {
                    // SAFETY: `p..p + 2` is in the live mapping, 2-aligned, and only ever
                    // accessed as an `AtomicU16` (see above).
                    let cell = unsafe { AtomicU16::from_ptr(p.cast()) };
                    chunk.copy_from_slice(&cell.load(Ordering::Relaxed).to_ne_bytes());
                }
                4 => {
                    // SAFETY: `p..p + 4` is in the live mapping, 4-aligned, and only ever
                    // accessed as an `AtomicU32` (see above).
                    let cell = unsafe { AtomicU32::from_ptr(p.cast()) };
                    chunk.copy_from_slice(&cell.load(Ordering::Relaxed).to_ne_bytes());
                }
                _ => {
                    // SAFETY: `p..p + 8` is in the live mapping, 8-aligned, and only ever
                    // accessed as an `AtomicU64` (see above).
                    let cell = unsafe { AtomicU64::from_ptr(p.cast()) };
                    chunk.copy_from_slice(&cell.load(Ordering::Relaxed).to_ne_bytes());
                }
            }
        }
        Ok(())
    }

    /// Copies `data` into the region at `offset`, one atomic store of `unit` bytes at a time
    /// (see [`read_units`](Self::read_units)).
    pub(crate) fn write_units(&self, offset: usize, data: &[u8], unit: usize) -> Result<()> {
        let base = self.check_units(offset, data.len(), unit)?;
        for (i, chunk) in data.chunks_exact(unit).enumerate() {
            let p = base.wrapping_add(i * unit);
            let mut word = [0u8; 8];
            word[..unit].copy_from_slice(chunk);
            // Each arm's access is sound for the reasons given in `read_units`.
            match unit {
                1 => {
                    // SAFETY: `p` is a byte of the live mapping, only ever accessed as an
                    // `AtomicU8` (as in `read_units`).
                    let cell = unsafe { AtomicU8::from_ptr(p) };
                    cell.store(word[0], Ordering::Relaxed);
                }
                2 => {
                    // SAFETY: `p..p + 2` is in the live mapping, 2-aligned, and only ever
                    // accessed as an `AtomicU16` (as in `read_units`).
                    let cell = unsafe { AtomicU16::from_ptr(p.cast()) };
                    cell.store(u16::from_ne_bytes([word[0], word[1]]), Ordering::Relaxed);
                }
                4 => {
                    // SAFETY: `p..p + 4` is in the live mapping, 4-aligned, and only ever
                    // accessed as an `AtomicU32` (as in `read_units`).
                    let cell = unsafe { AtomicU32::from_ptr(p.cast()) };
                    cell.store(
                        u32::from_ne_bytes([word[0], word[1], word[2], word[3]]),
                        Ordering::Relaxed,
                    );
                }
                _ => {
                    // SAFETY: `p..p + 8` is in the live mapping, 8-aligned, and only ever
                    // accessed as an `AtomicU64` (as in `read_units`).
                    let cell = unsafe { AtomicU64::from_ptr(p.cast()) };
                    cell.store(u64::from_ne_bytes(word), Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Byte-wise [`read_units`](Self::read_units), for raw byte access (`SharedMemory`).
    pub(crate) fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.read_units(offset, out, 1)
    }

    /// Byte-wise [`write_units`](Self::write_units).
    pub(crate) fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.write_units(offset, data, 1)
    }

    /// The `count` 8-byte words from `offset` on, as atomics: an error unless they are inside
    /// the mapping and `offset` is a multiple of 8. For structures that other processes read
    /// and write at the same time (a channel's ring): every access to these words is atomic.
    pub(crate) fn words(&self, offset: usize, count: usize) -> Result<&[AtomicU64]> {
        let len = count.checked_mul(8).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                "too many words for a shared region",
            )
        })?;
        let base = self.check_units(offset, len, 8)?;
        // SAFETY: `base..base + len` is inside the live mapping, which lives as long as `self`
        // (the borrow), and 8-aligned (checked by `check_units`); AtomicU64 has the size and
        // alignment of u64, and every access to this memory goes through atomics.
        Ok(unsafe { std::slice::from_raw_parts(base.cast::<AtomicU64>(), count) })
    }

    /// Checks that `len` bytes at `offset` are in the mapping, whole `unit`s, `unit`-aligned.
    fn check_units(&self, offset: usize, len: usize, unit: usize) -> Result<*mut u8> {
        self.check_range(offset, len)?;
        let base = self.as_ptr().wrapping_add(offset);
        if !matches!(unit, 1 | 2 | 4 | 8)
            || !len.is_multiple_of(unit)
            || !(base as usize).is_multiple_of(unit)
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at offset {offset} are not whole aligned units of {unit} bytes"
                ),
            ));
        }
        Ok(base)
    }
}

/// The width of the atomic accesses to values of `T` in shared memory: the same for every
/// raw access to them.
pub(crate) fn unit_of<T>() -> usize {
    std::mem::align_of::<T>().min(8)
}

/// The size, and the device and inode, of an open file.
fn fstat(fd: &SharedFd) -> Result<(u64, (u64, u64))> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `struct stat` into the storage it is given, or fails.
    if unsafe { libc::fstat(fd.as_raw_fd(), stat.as_mut_ptr()) } < 0 {
        return Err(last_os_error("cannot read a shared memory segment's size"));
    }
    // SAFETY: fstat succeeded, so it initialized the whole struct.
    let stat = unsafe { stat.assume_init() };
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    Ok((size, (stat.st_dev, stat.st_ino)))
}

/// Sizes a new shared memory object.
fn set_len(fd: &OwnedFd, len: usize) -> Result<()> {
    let size = libc::off_t::try_from(len).map_err(|_| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("a region of {len} bytes is too large"),
        )
    })?;
    // SAFETY: ftruncate on a descriptor this process owns.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } < 0 {
        return Err(last_os_error(format!(
            "cannot size a shared memory region to {len} bytes"
        )));
    }
    Ok(())
}

/// `name` as `shm_open` wants it: one leading slash, no other, at most 255 bytes.
fn shm_name(name: &str) -> Result<std::ffi::CString> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty()
        || bare.len() > 254
        || bare.contains(['/', '\0'])
        || bare == "."
        || bare == ".."
    {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{name:?} is not a shared memory name: 1 to 254 bytes, no '/' (but an optional leading one), no NUL"
            ),
        ));
    }
    std::ffi::CString::new(format!("/{bare}"))
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "a name cannot contain NUL"))
}

/// Removes the POSIX shared memory object `name`; mappings of it stay valid.
pub(crate) fn unlink_named(name: &str) -> Result<()> {
    let cname = shm_name(name)?;
    // SAFETY: shm_unlink takes a NUL-terminated name.
    if unsafe { libc::shm_unlink(cname.as_ptr()) } < 0 {
        return Err(last_os_error(format!(
            "cannot unlink the shared memory segment {name:?}"
        )));
    }
    Ok(())
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; nothing refers to it any more
        // (every user holds the Region, and it is being dropped).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("fd", &self.fd.as_raw_fd())
            .field("len", &self.len)
            .finish()
    }
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.fd.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let fd = SharedFd::deserialize(deserializer)?;
        Region::from_fd(fd).map_err(crate::error::de_error)
    }
}

/// A type whose values live in a shared [`Region`] and are used through `&T` by every process
/// that maps it.
///
/// # Safety
///
/// Every bit pattern is a valid `T` (another process may have written anything, and a new
/// region is all zeros), `T` needs no drop, and all mutation goes through interior mutability
/// that tolerates concurrent use from other processes (atomics, process-shared pthread
/// objects in `UnsafeCell`).
pub(crate) unsafe trait Shareable: Sync + 'static {
    /// What the object is, for messages: "a lock".
    const WHAT: &'static str;
    /// Whether a mapping received from another process holds one of these (a tag check).
    fn is_valid(&self) -> bool;
}

/// A `T` at a fixed offset of a shared region: a cheap-to-clone handle that keeps the mapping
/// alive, derefs to `&T`, and travels to another process as the region's descriptor and the
/// offset.
pub(crate) struct Shared<T> {
    region: Arc<Region>,
    offset: usize,
    _marker: PhantomData<T>,
}

impl<T: Shareable> Shared<T> {
    /// The `T` at `offset` of `region`: an error unless it fits there, aligned.
    pub(crate) fn at(region: Arc<Region>, offset: usize) -> Result<Shared<T>> {
        region.check_range(offset, std::mem::size_of::<T>())?;
        if !(region.as_ptr() as usize + offset).is_multiple_of(std::mem::align_of::<T>()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} at offset {offset} of a shared region is misaligned",
                    T::WHAT
                ),
            ));
        }
        Ok(Shared {
            region,
            offset,
            _marker: PhantomData,
        })
    }

    /// The region the value lives in.
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Whether `self` and `other` are the same object (same segment, same offset), even when
    /// they are two mappings of it.
    pub(crate) fn same_as<U>(&self, other: &Shared<U>) -> bool {
        self.region.same_segment(&other.region) && self.offset == other.offset
    }
}

impl<T: Shareable> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `at` checked that a `T` fits at this aligned offset of the mapping, which
        // lives as long as the Arc this handle holds; `T: Shareable` makes any content a valid
        // `T` used only through shared references.
        unsafe { &*self.region.as_ptr().add(self.offset).cast::<T>() }
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared {
            region: Arc::clone(&self.region),
            offset: self.offset,
            _marker: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("region", &self.region)
            .field("offset", &self.offset)
            .finish()
    }
}

impl<T> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        (&*self.region, self.offset as u64).serialize(serializer)
    }
}

impl<'de, T: Shareable> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let (region, offset) = <(Region, u64)>::deserialize(deserializer)?;
        let offset = usize::try_from(offset).map_err(serde::de::Error::custom)?;
        let shared = Shared::<T>::at(Arc::new(region), offset).map_err(crate::error::de_error)?;
        if !shared.is_valid() {
            return Err(serde::de::Error::custom(format!(
                "the shared memory received is not {}",
                T::WHAT
            )));
        }
        Ok(shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_maps_the_same_pages_twice() {
        let a = Region::new("test", 4096).unwrap();
        let b = Region::from_fd(a.fd().try_clone().unwrap()).unwrap();
        assert_eq!(b.len(), 4096);
        // SAFETY: both pointers map 4096 bytes of the same file; single-threaded test.
        unsafe {
            a.as_ptr().add(10).write(42);
            assert_eq!(b.as_ptr().add(10).read(), 42);
        }
    }

    #[test]
    fn a_region_is_sealed_at_its_size() {
        let a = Region::new("test", 100).unwrap();
        // SAFETY: ftruncate on a descriptor we own; it must be refused.
        let rc = unsafe { libc::ftruncate(a.fd().as_raw_fd(), 10) };
        assert_eq!(rc, -1);
    }

    /// A memfd of `len` bytes with `seals` added (none: 0), as a peer could send one.
    fn memfd(len: usize, seals: libc::c_int) -> SharedFd {
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new
        // descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"test-peer".as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        set_len(&fd, len).unwrap();
        // SAFETY: F_ADD_SEALS on our own memfd.
        let sealed = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
        assert_eq!(sealed, 0);
        SharedFd::new(fd)
    }

    #[test]
    fn a_segment_that_can_shrink_is_refused() {
        for seals in [0, libc::F_SEAL_GROW] {
            let err = Region::from_fd(memfd(4096, seals)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(
                err.to_string().contains("not sealed against shrinking"),
                "{err}"
            );
        }
        let received = Region::from_fd(memfd(4096, libc::F_SEAL_SHRINK)).unwrap();
        assert_eq!(received.len(), 4096);
        // SAFETY: ftruncate on a descriptor we own; the seal must refuse it.
        let rc = unsafe { libc::ftruncate(received.fd().as_raw_fd(), 10) };
        assert_eq!(rc, -1);
    }

    #[test]
    fn byte_copies_check_bounds_and_round_trip() {
        let a = Region::new("test", 64).unwrap();
        let data: Vec<u8> = (0..61).collect();
        a.write_bytes(3, &data).unwrap();
        let mut out = vec![0u8; 61];
        a.read_bytes(3, &mut out).unwrap();
        assert_eq!(out, data);
        assert!(a.write_bytes(4, &data).is_err());
        assert!(a.read_bytes(usize::MAX, &mut [0u8; 2]).is_err());
    }

    #[test]
    fn shared_memory_names() {
        assert!(shm_name("ok-name").is_ok());
        assert!(shm_name("/ok-name").is_ok());
        for bad in ["", "/", "a/b", "..", "a\0b"] {
            assert!(shm_name(bad).is_err(), "{bad:?}");
        }
    }
}
