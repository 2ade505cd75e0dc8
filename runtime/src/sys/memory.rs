//! Memory: sealed memory files, their read-only mappings, and huge-page advice.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Asks the kernel to back the whole 2 MiB pages inside `buf` (memory this process is about
/// to fill, such as a large vector's spare capacity) with transparent huge pages: one page
/// fault per 2 MiB instead of 512, and a cheaper unmap. Only a hint: without THP it does
/// nothing.
pub(crate) fn advise_huge_pages<T>(buf: &mut [std::mem::MaybeUninit<T>]) {
    const HUGE: usize = 2 << 20;
    let start = buf.as_mut_ptr() as usize;
    let first = start.next_multiple_of(HUGE);
    let last = (start + std::mem::size_of_val(buf)) / HUGE * HUGE;
    if first < last {
        // SAFETY: `first..last` lies inside `buf`, which the caller owns exclusively; the
        // advice changes how the range is backed, never what it holds.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            )
        };
    }
}

/// A new anonymous, close-on-exec memory file (`memfd_create(2)`) that holds `bytes` and is
/// sealed against any change (write, grow, shrink, further seals): whoever receives it can map
/// it and read it as plain immutable memory. `name` shows in `/proc/<pid>/fd`.
pub(crate) fn sealed_memfd(name: &str, bytes: &[u8]) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(format!("multiproc:{name}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))?;
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new descriptor
    // or -1.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    io::Write::write_all(&mut file, bytes)?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on our own memfd, which nobody has mapped.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// A read-only mapping of a memory file sealed by [`sealed_memfd`] (or by anyone, as long as
/// it is sealed against writes and shrinking): its bytes cannot change while mapped.
pub(crate) struct SealedMapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl SealedMapping {
    /// Maps the first `len` bytes of `fd`; an error unless the file is sealed against writes
    /// and shrinking and holds at least `len` bytes.
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<SealedMapping> {
        // SAFETY: F_GET_SEALS only reads the seals of a borrowed, open descriptor.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        let needed = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK;
        if seals < 0 || seals & needed != needed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the memory file is not sealed against changes",
            ));
        }
        let size = std::fs::File::from(fd.try_clone_to_owned()?)
            .metadata()?
            .len();
        if size < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the memory file holds {size} bytes, not {len}"),
            ));
        }
        if len == 0 {
            return Ok(SealedMapping {
                ptr: std::ptr::NonNull::dangling(),
                len,
            });
        }
        // SAFETY: a new private read-only mapping of `len` bytes of the file, which holds at
        // least that many and cannot shrink; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(SealedMapping { ptr, len })
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes (or is dangling with `len == 0`) for as long
        // as `self` lives; the file is sealed against writes and shrinking, so no process can
        // change or remove them while they are borrowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SealedMapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps exactly the mapping made in `new`, whose bytes are no longer
            // borrowed (`bytes` borrows `self`).
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

// SAFETY: the mapping is immutable memory; sharing or sending a read-only view is sound.
unsafe impl Send for SealedMapping {}
// SAFETY: the mapping is immutable memory: shared references from several threads only
// read it.
unsafe impl Sync for SealedMapping {}
