//! One MPI message of a task or a result: the same header and encoded chunk as the local
//! pool's, laid end to end in one buffer.
//!
//! `[u32 little-endian: header length][header, in the library's codec][bytes][block 0]...`,
//! where the header gives the length of the bytes and of every block.

use serde::{Deserialize, Serialize};

use super::super::worker::TaskOutcome;
use crate::block::Block;
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;
use crate::spare;

/// A task (rank 0 to a rank, `outcome` none) or its result (a rank to rank 0).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Header {
    pub job: u64,
    pub chunk: u32,
    /// Echoed in the result: a result that does not carry it back answers no task.
    pub ticket: u64,
    /// The registered name of the function (tasks only).
    pub entry: String,
    pub outcome: Option<TaskOutcome>,
    bytes: u64,
    blocks: Vec<u64>,
}

impl Header {
    pub(super) fn new(job: u64, chunk: u32, ticket: u64, entry: String) -> Header {
        Header {
            job,
            chunk,
            ticket,
            entry,
            outcome: None,
            bytes: 0,
            blocks: Vec::new(),
        }
    }
}

/// Lays `header` and `body` end to end. Descriptors cannot cross machines: a body that carries
/// some is refused.
pub(super) fn pack(mut header: Header, body: &Encoded) -> Result<Vec<u8>> {
    if !body.fds.is_empty() {
        return Err(Error::new(
            ErrorKind::Codec,
            "descriptors (a SharedFd, a Queue, a Lock...) cannot travel to another MPI rank",
        ));
    }
    header.bytes = body.bytes.len() as u64;
    header.blocks = body.blocks.iter().map(|b| b.len() as u64).collect();
    let head = codec::encode(&header)?;
    let total =
        4 + head.len() + body.bytes.len() + body.blocks.iter().map(|b| b.len()).sum::<usize>();
    // Refused here, not by the send: a rank whose result cannot be sent stopped serving, and
    // rank 0 waited for that task forever; now the task fails, on either side.
    if i32::try_from(total).is_err() {
        return Err(Error::new(
            ErrorKind::Codec,
            format!("a message of {total} bytes cannot travel over MPI (2 GiB at most)"),
        ));
    }
    let mut out = spare::take_or_new(total);
    let head_len = u32::try_from(head.len())
        .map_err(|_| Error::new(ErrorKind::Codec, "a task header too large for MPI"))?;
    out.extend_from_slice(&head_len.to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&body.bytes);
    for block in &body.blocks {
        out.extend_from_slice(block);
    }
    Ok(out)
}

/// Splits a message into its header and body (its large parts in reused buffers).
pub(super) fn unpack(message: &[u8]) -> Result<(Header, Encoded)> {
    let bad = |what: &str| Error::new(ErrorKind::Codec, format!("bad MPI message: {what}"));
    let (len, rest) = message
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("shorter than its header's length"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(bad("shorter than its header"));
    }
    let (head, mut rest) = rest.split_at(len);
    let header: Header = codec::decode(head)?;
    let mut take = |n: u64| -> Result<Vec<u8>> {
        let n = usize::try_from(n).map_err(|_| bad("a length beyond memory"))?;
        if rest.len() < n {
            return Err(bad("shorter than its header says"));
        }
        let (part, after) = rest.split_at(n);
        rest = after;
        let mut owned = spare::take_or_new(n);
        owned.extend_from_slice(part);
        Ok(owned)
    };
    let bytes = take(header.bytes)?;
    let blocks = header
        .blocks
        .iter()
        .map(|&n| take(n))
        .collect::<Result<Vec<_>>>()?;
    if !rest.is_empty() {
        return Err(bad("longer than its header says"));
    }
    Ok((
        header,
        Encoded {
            bytes,
            fds: Vec::new(),
            blocks: blocks.into_iter().map(Block::from).collect(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_unpacks_as_it_was_packed() {
        let body = Encoded {
            bytes: vec![1, 2, 3],
            fds: Vec::new(),
            blocks: vec![Block::from(vec![9; 20_000]), Block::from(vec![])],
        };
        let packed = pack(Header::new(7, 3, 99, "a::b".to_string()), &body).unwrap();
        let (header, out) = unpack(&packed).unwrap();
        assert_eq!((header.job, header.chunk, header.ticket), (7, 3, 99));
        assert_eq!(header.entry, "a::b");
        assert_eq!(out.bytes, body.bytes);
        assert_eq!(out.blocks, body.blocks);
        for cut in [0, 3, packed.len() - 1] {
            assert_eq!(unpack(&packed[..cut]).unwrap_err().kind(), ErrorKind::Codec);
        }
        let mut longer = packed.clone();
        longer.push(0);
        assert_eq!(unpack(&longer).unwrap_err().kind(), ErrorKind::Codec);
    }

    #[test]
    fn a_frame_too_large_for_one_mpi_message_is_refused() {
        // Zeroes from the allocator: no page is touched unless the frame is copied.
        let body = Encoded {
            bytes: Vec::new(),
            fds: Vec::new(),
            blocks: vec![Block::from(vec![0u8; 1 << 31])],
        };
        let err = pack(Header::new(1, 0, 1, String::new()), &body).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(err.to_string().contains("2 GiB"), "{err}");
    }

    #[test]
    fn garbage_and_forged_lengths_are_errors() {
        let packed = pack(
            Header::new(7, 3, 99, "a::b".to_string()),
            &Encoded::default(),
        )
        .unwrap();
        // A header length past the end, and one of the body's lengths forged.
        let mut forged = packed.clone();
        forged[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(unpack(&forged).unwrap_err().kind(), ErrorKind::Codec);
        for garbage in [
            &[0xffu8; 64][..],
            &[4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            &[0; 4],
        ] {
            assert!(unpack(garbage).is_err());
        }
        let mut header = Header::new(1, 0, 1, String::new());
        header.bytes = u64::MAX;
        header.blocks = vec![u64::MAX; 3];
        let head = codec::encode(&header).unwrap();
        let mut message = (head.len() as u32).to_le_bytes().to_vec();
        message.extend_from_slice(&head);
        assert_eq!(unpack(&message).unwrap_err().kind(), ErrorKind::Codec);
    }
}
