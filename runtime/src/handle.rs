//! Descriptors inside values: how a pipe end, a queue or a shared segment travels to another
//! process inside the arguments of a `Process`, a pool task or initializer, or a task's result.
//!
//! While a value is encoded for another process, every [`SharedFd`] in it adds a duplicate of
//! its descriptor to a side list and encodes only its index in that list. The list travels
//! beside the bytes: inherited as is by a forked child, passed with `SCM_RIGHTS` on the
//! control socket otherwise. The receiver decodes with the received list, and each
//! `SharedFd` takes its descriptor back by index. Outside such an encoding (a `SharedFd` in a
//! value encoded to JSON, say) serialization fails with a clear error: a descriptor number
//! means nothing in another process.

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::Block;
use crate::codec;
use crate::error::Result;

thread_local! {
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Encoded bytes, the descriptors they refer to, and the byte blocks that travel beside them
/// (by index, like descriptors).
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    pub blocks: Vec<Block>,
}

impl Encoded {
    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        self.fds.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

/// Encodes `value` for another process, collecting the descriptors it carries.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Encoded> {
    encode_with(|| codec::encode(value))
}

/// Runs the encoding `f` for another process, collecting the descriptors it meets.
pub(crate) fn encode_with(f: impl FnOnce() -> Result<Vec<u8>>) -> Result<Encoded> {
    /// Restores the outer list even if a `Serialize` impl panics.
    struct Restore(Option<Option<Vec<OwnedFd>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                OUTGOING.with(|o| *o.borrow_mut() = previous);
            }
        }
    }
    let mut restore = Restore(Some(OUTGOING.with(|o| o.replace(Some(Vec::new())))));
    let bytes = f();
    let previous = restore.0.take().unwrap_or_default();
    let fds = OUTGOING.with(|o| o.replace(previous)).unwrap_or_default();
    Ok(Encoded {
        bytes: bytes?,
        fds,
        blocks: Vec::new(),
    })
}

/// Initialises this thread's list of incoming descriptors, if it was not: called before a
/// fork, so that the child, which uses the list at once, finds it ready. Registering a
/// thread-local destructor takes glibc's loader lock and runs loader code, pages that a fresh
/// child would have to fault in one by one; the parent does it once per thread.
pub(crate) fn prepare_fork() {
    INCOMING.with(|_| ());
}

/// Runs `f` with `fds` as the descriptors that `SharedFd`s decoded in it take back.
///
/// Inlined, so that a forked child runs it in the window of code of its caller (`child::run`)
/// instead of faulting in one more.
#[inline(always)]
pub(crate) fn with_incoming<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Vec<Option<OwnedFd>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            INCOMING.with(|i| *i.borrow_mut() = previous);
        }
    }
    // None is the usual case: no call into the collecting code (a forked child pays a page
    // fault for each window of code it runs first).
    let incoming = if fds.is_empty() {
        Vec::new()
    } else {
        fds.into_iter().map(Some).collect()
    };
    let _restore = Restore(INCOMING.with(|i| i.replace(Some(incoming))));
    f()
}

/// A descriptor that can be part of a value sent to another process (see the module docs).
#[derive(Debug)]
pub struct SharedFd(OwnedFd);

impl SharedFd {
    /// Wraps a descriptor this process owns.
    pub fn new(fd: OwnedFd) -> SharedFd {
        SharedFd(fd)
    }

    /// A duplicate referring to the same open file.
    pub fn try_clone(&self) -> std::io::Result<SharedFd> {
        self.0.try_clone().map(SharedFd)
    }

    /// The descriptor.
    pub fn into_inner(self) -> OwnedFd {
        self.0
    }
}

impl AsFd for SharedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Serialize for SharedFd {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let index = OUTGOING.with(|o| {
            let mut outgoing = o.borrow_mut();
            let list = outgoing.as_mut().ok_or(
                "a descriptor (pipe end, queue, lock, shared memory) can only be sent to a multiproc process: \
                 as an argument of Process::new, a pool task or initializer, or a task's result",
            )?;
            let dup = self.0.try_clone().map_err(|_| "cannot duplicate a descriptor to send it")?;
            list.push(dup);
            Ok::<u32, &str>((list.len() - 1) as u32)
        });
        match index {
            Ok(index) => serializer.serialize_u32(index),
            Err(message) => Err(serde::ser::Error::custom(message)),
        }
    }
}

impl<'de> Deserialize<'de> for SharedFd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let index = u32::deserialize(deserializer)? as usize;
        INCOMING
            .with(|i| {
                i.borrow_mut()
                    .as_mut()
                    .and_then(|list| list.get_mut(index))
                    .and_then(Option::take)
            })
            .map(SharedFd)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "descriptor #{index} did not come with the message (a value with descriptors can only come from a multiproc process)"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_travel_beside_the_bytes() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let value = (7u8, SharedFd::new(OwnedFd::from(a)), "x".to_string());
        let encoded = encode(&value).unwrap();
        assert_eq!(encoded.fds.len(), 1);
        let (n, fd, s): (u8, SharedFd, String) =
            with_incoming(encoded.fds, || codec::decode(&encoded.bytes)).unwrap();
        assert_eq!((n, s.as_str()), (7, "x"));
        assert!(fd.as_raw_fd() >= 0);
    }

    #[test]
    fn outside_a_process_message_it_is_an_error() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = codec::encode(&SharedFd::new(OwnedFd::from(a))).unwrap_err();
        assert!(
            err.chain()
                .to_string()
                .contains("can only be sent to a multiproc process"),
            "{err:?}"
        );
        let bytes = codec::encode(&0u32).unwrap();
        assert!(codec::decode::<SharedFd>(&bytes).is_err());
    }
}
