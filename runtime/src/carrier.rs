//! How the arguments and results of `#[process]` functions are encoded: as they are, or with
//! their byte vectors carried as blocks.
//!
//! serde has no specialization: it encodes a `Vec<u8>` one element at a time, and bincode then
//! moves ~150 MB/s. So `#[process]` gives every function a carrier for its arguments and one
//! for its result ([`Target::ArgsCarrier`](crate::Target), hidden). [`Plain`] encodes values as
//! they are. [`Packed`] is chosen when an argument or the result is written literally
//! `Vec<u8>`: each such vector becomes a [`Bytes`], which a pool message carries as a block
//! beside the encoded bytes (sent from the vector itself, received into the vector that the
//! function gets: no copy besides the kernel's) when it is at least [`BLOCK_MIN`] bytes long,
//! and otherwise encodes inline as one run of bytes (one copy, no per-element work). The
//! arguments of a `Process`, a pool initializer and a barrier action are always inline.
//!
//! A `Vec<u8>` inside another type (a field of a struct, an `Option<Vec<u8>>`, a type alias)
//! still encodes element by element: give such fields `#[serde(with = "serde_bytes")]` or an
//! equivalent `serialize_bytes` / `deserialize_byte_buf` pair to make them one run of bytes.

use std::marker::PhantomData;

use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{self, Encoded};

/// Byte vectors at least this long travel as blocks of a pool message.
pub(crate) const BLOCK_MIN: usize = 16 << 10;

/// The blocks of a message being encoded. Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Stash {
    /// `None`: everything inline.
    blocks: Option<Vec<Vec<u8>>>,
}

impl Stash {
    fn new(blocks: bool) -> Stash {
        Stash {
            blocks: blocks.then(Vec::new),
        }
    }
}

/// The blocks of a message being decoded. Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Taken {
    blocks: Vec<Option<Vec<u8>>>,
}

/// How the values of one type are encoded; chosen by `#[process]`. Not public API.
#[doc(hidden)]
pub trait Carrier<T> {
    /// Values encode as they are: a slice of them can be encoded in place.
    const PLAIN: bool;

    /// Encodes `values`, moving byte vectors into `stash` when it takes blocks.
    fn encode(values: Vec<T>, stash: &mut Stash) -> Result<Vec<u8>>
    where
        T: Serialize;

    /// Decodes what [`encode`](Self::encode) made, taking byte vectors from `blocks`.
    fn decode(bytes: &[u8], blocks: Vec<Vec<u8>>) -> Result<Vec<T>>
    where
        T: DeserializeOwned;
}

/// Values as they are. Not public API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl<T> Carrier<T> for Plain {
    const PLAIN: bool = true;

    fn encode(values: Vec<T>, _stash: &mut Stash) -> Result<Vec<u8>>
    where
        T: Serialize,
    {
        codec::encode(&values)
    }

    fn decode(bytes: &[u8], _blocks: Vec<Vec<u8>>) -> Result<Vec<T>>
    where
        T: DeserializeOwned,
    {
        codec::decode(bytes)
    }
}

/// Values packed into `P`, whose byte vectors are [`Bytes`]. Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Packed<P>(PhantomData<P>);

impl<T, P: Part<T>> Carrier<T> for Packed<P> {
    const PLAIN: bool = false;

    fn encode(values: Vec<T>, stash: &mut Stash) -> Result<Vec<u8>> {
        let packed: Vec<P> = values.into_iter().map(|v| P::pack(v, stash)).collect();
        codec::encode(&packed)
    }

    fn decode(bytes: &[u8], blocks: Vec<Vec<u8>>) -> Result<Vec<T>> {
        let packed: Vec<P> = codec::decode(bytes)?;
        let mut taken = Taken {
            blocks: blocks.into_iter().map(Some).collect(),
        };
        packed.into_iter().map(|p| p.unpack(&mut taken)).collect()
    }
}

/// One value of a [`Packed`] carrier. Not public API.
#[doc(hidden)]
pub trait Part<T>: Serialize + DeserializeOwned {
    fn pack(value: T, stash: &mut Stash) -> Self;
    fn unpack(self, taken: &mut Taken) -> Result<T>;
}

/// A value beside a [`Bytes`] in a tuple of arguments, as it is. Not public API.
#[doc(hidden)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Held<T>(T);

impl<T: Serialize + DeserializeOwned> Part<T> for Held<T> {
    fn pack(value: T, _stash: &mut Stash) -> Self {
        Held(value)
    }

    fn unpack(self, _taken: &mut Taken) -> Result<T> {
        Ok(self.0)
    }
}

/// A `Vec<u8>` on the wire: one run of bytes, or the index of a block of its message.
/// Not public API.
#[doc(hidden)]
#[derive(Debug, Serialize, Deserialize)]
pub enum Bytes {
    Inline(#[serde(with = "run_of_bytes")] Vec<u8>),
    Block(u32),
}

impl Part<Vec<u8>> for Bytes {
    fn pack(value: Vec<u8>, stash: &mut Stash) -> Self {
        match &mut stash.blocks {
            Some(blocks) if value.len() >= BLOCK_MIN && blocks.len() < u32::MAX as usize => {
                blocks.push(value);
                Bytes::Block((blocks.len() - 1) as u32)
            }
            _ => Bytes::Inline(value),
        }
    }

    fn unpack(self, taken: &mut Taken) -> Result<Vec<u8>> {
        match self {
            Bytes::Inline(bytes) => Ok(bytes),
            Bytes::Block(index) => taken
                .blocks
                .get_mut(index as usize)
                .and_then(Option::take)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Codec,
                        format!("byte block #{index} did not come with the message"),
                    )
                }),
        }
    }
}

/// `serialize_bytes` and `deserialize_byte_buf`: a `Vec<u8>` as one length and one copy.
mod run_of_bytes {
    use super::*;

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(ByteBuf)
    }

    struct ByteBuf;

    impl<'de> Visitor<'de> for ByteBuf {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}

macro_rules! tuple_part {
    ($($t:ident $p:ident $i:tt),+) => {
        impl<$($t, $p: Part<$t>),+> Part<($($t,)+)> for ($($p,)+) {
            fn pack(value: ($($t,)+), stash: &mut Stash) -> Self {
                ($($p::pack(value.$i, stash),)+)
            }

            fn unpack(self, taken: &mut Taken) -> Result<($($t,)+)> {
                Ok(($(self.$i.unpack(taken)?,)+))
            }
        }
    };
}

tuple_part!(T0 P0 0, T1 P1 1);
tuple_part!(T0 P0 0, T1 P1 1, T2 P2 2);
tuple_part!(T0 P0 0, T1 P1 1, T2 P2 2, T3 P3 3);
tuple_part!(T0 P0 0, T1 P1 1, T2 P2 2, T3 P3 3, T4 P4 4);
tuple_part!(T0 P0 0, T1 P1 1, T2 P2 2, T3 P3 3, T4 P4 4, T5 P5 5);
tuple_part!(T0 P0 0, T1 P1 1, T2 P2 2, T3 P3 3, T4 P4 4, T5 P5 5, T6 P6 6);
tuple_part!(T0 P0 0, T1 P1 1, T2 P2 2, T3 P3 3, T4 P4 4, T5 P5 5, T6 P6 6, T7 P7 7);
tuple_part!(T0 P0 0, T1 P1 1, T2 P2 2, T3 P3 3, T4 P4 4, T5 P5 5, T6 P6 6, T7 P7 7, T8 P8 8);
tuple_part!(T0 P0 0, T1 P1 1, T2 P2 2, T3 P3 3, T4 P4 4, T5 P5 5, T6 P6 6, T7 P7 7, T8 P8 8, T9 P9 9);
tuple_part!(T0 P0 0, T1 P1 1, T2 P2 2, T3 P3 3, T4 P4 4, T5 P5 5, T6 P6 6, T7 P7 7, T8 P8 8, T9 P9 9, T10 P10 10);
tuple_part!(T0 P0 0, T1 P1 1, T2 P2 2, T3 P3 3, T4 P4 4, T5 P5 5, T6 P6 6, T7 P7 7, T8 P8 8, T9 P9 9, T10 P10 10, T11 P11 11);

// ---------------------------------------------------------------------------------------------
// What the runtime calls

/// Encodes a chunk of values for a pool message: byte vectors of [`BLOCK_MIN`] bytes or more
/// become its blocks.
pub(crate) fn encode_chunk<T: Serialize, C: Carrier<T>>(values: Vec<T>) -> Result<Encoded> {
    let mut stash = Stash::new(true);
    let mut encoded = handle::encode_with(|| C::encode(values, &mut stash))?;
    encoded.blocks = stash.blocks.unwrap_or_default();
    Ok(encoded)
}

/// Encodes `values` in chunks of `size` for pool messages, and hands each to `each` as soon as
/// it is encoded; stops at the first error. Plain values are encoded in place.
pub(crate) fn encode_chunks<T: Serialize, C: Carrier<T>>(
    values: Vec<T>,
    size: usize,
    mut each: impl FnMut(u32, Encoded) -> Result<()>,
) -> Result<()> {
    if C::PLAIN {
        for (index, chunk) in values.chunks(size).enumerate() {
            each(index as u32, handle::encode(chunk)?)?;
        }
        return Ok(());
    }
    let mut values = values.into_iter();
    for index in 0.. {
        let chunk: Vec<T> = values.by_ref().take(size).collect();
        if chunk.is_empty() {
            break;
        }
        each(index, encode_chunk::<T, C>(chunk)?)?;
    }
    Ok(())
}

/// Decodes a chunk received in a pool message (its descriptors and blocks included).
pub(crate) fn decode_chunk<T: DeserializeOwned, C: Carrier<T>>(encoded: Encoded) -> Result<Vec<T>> {
    let Encoded { bytes, fds, blocks } = encoded;
    handle::with_incoming(fds, || C::decode(&bytes, blocks))
}

/// How a pool result sink decodes its chunks.
pub(crate) type ChunkDecoder<T> = fn(Encoded) -> Result<Vec<T>>;

/// Encodes one value with everything inline (a process's bootstrap has no blocks).
pub(crate) fn encode_one<T: Serialize, C: Carrier<T>>(value: T) -> Result<Encoded> {
    if C::PLAIN {
        return handle::encode(&value);
    }
    handle::encode_with(|| C::encode(vec![value], &mut Stash::new(false)))
}

/// Decodes what [`encode_one`] made (descriptors are the caller's `with_incoming`).
pub(crate) fn decode_one<T: DeserializeOwned, C: Carrier<T>>(bytes: &[u8]) -> Result<T> {
    if C::PLAIN {
        return codec::decode(bytes);
    }
    C::decode(bytes, Vec::new())?
        .pop()
        .ok_or_else(|| Error::new(ErrorKind::Codec, "an encoded value is missing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Mixed = Packed<(Held<u32>, Bytes, Held<String>)>;

    #[test]
    fn plain_values_encode_as_they_are() {
        let values = vec![(1u64, "a".to_string()), (2, "b".to_string())];
        let encoded = encode_chunk::<_, Plain>(values.clone()).unwrap();
        assert!(encoded.blocks.is_empty());
        assert_eq!(encoded.bytes, codec::encode(&values).unwrap());
        assert_eq!(
            decode_chunk::<(u64, String), Plain>(encoded).unwrap(),
            values
        );
    }

    #[test]
    fn large_byte_vectors_become_blocks_and_come_back_moved() {
        let big = vec![7u8; BLOCK_MIN];
        let small = vec![1u8, 2, 3];
        let values = vec![big.clone(), small.clone(), Vec::new(), big.clone()];
        let encoded = encode_chunk::<_, Packed<Bytes>>(values.clone()).unwrap();
        assert_eq!(encoded.blocks.len(), 2);
        // Lengths and indexes only: the bytes of the blocks are not in the encoding.
        assert!(encoded.bytes.len() < 64, "{}", encoded.bytes.len());
        let ptr = encoded.blocks[1].as_ptr();
        let back = decode_chunk::<_, Packed<Bytes>>(encoded).unwrap();
        assert_eq!(back, values);
        assert_eq!(
            back[3].as_ptr(),
            ptr,
            "a block is moved into the value, not copied"
        );
    }

    #[test]
    fn inline_byte_vectors_are_one_run_of_bytes() {
        let value = vec![5u8; 3 * BLOCK_MIN];
        let encoded = encode_one::<_, Packed<Bytes>>(value.clone()).unwrap();
        assert!(encoded.blocks.is_empty());
        // Variant, length, bytes, plus the length of the one-element list.
        assert_eq!(encoded.bytes.len(), 8 + 4 + 8 + value.len());
        assert_eq!(
            decode_one::<Vec<u8>, Packed<Bytes>>(&encoded.bytes).unwrap(),
            value
        );
    }

    #[test]
    fn byte_vectors_beside_other_arguments() {
        let values = vec![
            (1u32, vec![9u8; BLOCK_MIN + 1], "x".to_string()),
            (2, vec![8u8; 10], "y".to_string()),
        ];
        let encoded = encode_chunk::<_, Mixed>(values.clone()).unwrap();
        assert_eq!(encoded.blocks.len(), 1);
        assert_eq!(decode_chunk::<_, Mixed>(encoded).unwrap(), values);
        let one = encode_one::<_, Mixed>(values[0].clone()).unwrap();
        assert_eq!(
            decode_one::<(u32, Vec<u8>, String), Mixed>(&one.bytes).unwrap(),
            values[0]
        );
    }

    #[test]
    fn a_missing_block_is_an_error() {
        let mut encoded = encode_chunk::<_, Packed<Bytes>>(vec![vec![0u8; BLOCK_MIN]]).unwrap();
        encoded.blocks.clear();
        let err = decode_chunk::<Vec<u8>, Packed<Bytes>>(encoded).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(err.to_string().contains("block #0"), "{err}");
        // Inline decoding never takes blocks.
        let bytes = codec::encode(&vec![Bytes::Block(0)]).unwrap();
        assert!(decode_one::<Vec<u8>, Packed<Bytes>>(&bytes).is_err());
    }

    #[test]
    fn chunks_are_encoded_one_by_one() {
        for plain in [true, false] {
            let values: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; i as usize * 4000]).collect();
            let mut chunks = Vec::new();
            let collect = |i, e| {
                chunks.push((i, e));
                Ok(())
            };
            if plain {
                encode_chunks::<_, Plain>(values.clone(), 3, collect).unwrap();
            } else {
                encode_chunks::<_, Packed<Bytes>>(values.clone(), 3, collect).unwrap();
            }
            assert_eq!(chunks.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
            let back: Vec<Vec<u8>> = chunks
                .into_iter()
                .flat_map(|(_, e)| {
                    if plain {
                        decode_chunk::<_, Plain>(e).unwrap()
                    } else {
                        decode_chunk::<_, Packed<Bytes>>(e).unwrap()
                    }
                })
                .collect();
            assert_eq!(back, values);
        }
    }
}
