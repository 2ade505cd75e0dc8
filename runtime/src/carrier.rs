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
//! [`Raw`] is chosen when the one argument or the result is written as a primitive number
//! (`u8` to `u64`, `i8` to `i64`, `usize`, `isize`, `f32`, `f64`): a chunk of them travels as
//! their bytes in memory, one copy each way instead of a serde call per value. It is chosen
//! too when the arguments are two to four such numbers (`starmap` over pairs, say), or the
//! result is written as a tuple of two to four of them: each value then travels as its
//! numbers' bytes, one after the other.
//!
//! Those carriers are chosen from the types as written. Around them, [`Chosen`] asks the type
//! checker, through aliases and any path the user wrote ([`pod`] says how): a worker's
//! arguments or result that are a `Vec` of [`bytemuck::Pod`] values, or such a value itself,
//! travel as their bytes whatever `#[process]` saw, and the carrier chosen from the syntax is
//! used otherwise. Two or more arguments (other than two to four numbers) take [`Split`]:
//! each argument that the type checker finds a vector of plain old data travels as its bytes
//! (a large byte vector as a block), the rest of the tuple through serde. A `Vec<u8>` inside
//! another type (a field of a struct, an `Option<Vec<u8>>`) still encodes element by element:
//! give such fields `#[serde(with = "serde_bytes")]` or an equivalent `serialize_bytes` /
//! `deserialize_byte_buf` pair to make them one run of bytes.
//!
//! [`Plain`] and [`Packed`] take the serde format as a parameter ([`codec::Format`]): bincode by
//! default, [`SelfDescribing`](codec::SelfDescribing) for a worker marked
//! `#[process(codec = "msgpack")]`. The carriers are part of the registry's fingerprint, and
//! with them the codec. The functions at the end that take a [`Worker`] explain an error with
//! the worker's name and the user's type ([`codec::explain`]).

use std::marker::PhantomData;

use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::Block;
use crate::codec::{self, Compact, Format};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{self, Encoded};
use crate::spare;

mod pod;

#[cfg(feature = "fuzzing")]
pub(crate) use pod::{decode_items_into, decode_vecs_into, encode_items, encode_vecs};

pub use pod::{
    Arg, ArgsSide, Choice, Chosen, OutputSide, PodItemWay, PodVecWay, Probe, SerdeWay, Split, Way,
};

/// Byte vectors (and vectors of plain old data) at least this long travel as blocks of a pool
/// message.
pub(crate) const BLOCK_MIN: usize = 16 << 10;

/// The blocks of a message being encoded. Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Stash {
    /// `None`: everything inline.
    blocks: Option<Vec<Block>>,
}

impl Stash {
    pub(crate) fn new(blocks: bool) -> Stash {
        Stash {
            blocks: blocks.then(Vec::new),
        }
    }
}

/// The blocks of a message being decoded. Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Taken {
    blocks: Vec<Option<Block>>,
}

/// How the values of one type are encoded; chosen by `#[process]`. Not public API.
#[doc(hidden)]
pub trait Carrier<T> {
    /// The serde format of the values (of one value, when [`in_place`](Self::in_place)).
    type Format: Format;

    /// Whether a slice of values can be encoded in place
    /// ([`encode_slice`](Self::encode_slice)): they move no byte vector into blocks.
    fn in_place() -> bool;

    /// Encodes `values`, moving byte vectors into `stash` when it takes blocks.
    fn encode(values: Vec<T>, stash: &mut Stash) -> Result<Vec<u8>>
    where
        T: Serialize;

    /// Encodes a slice of values in place, as [`encode`](Self::encode) would encode them
    /// (without blocks). Called only when [`in_place`](Self::in_place).
    fn encode_slice(values: &[T]) -> Result<Vec<u8>>
    where
        T: Serialize;

    /// Decodes what [`encode`](Self::encode) made, taking byte vectors from `blocks`.
    fn decode(bytes: &[u8], blocks: Vec<Block>) -> Result<Vec<T>>
    where
        T: DeserializeOwned;

    /// Decodes like [`decode`](Self::decode), onto the end of `out`; on error `out` is left
    /// as it was.
    fn decode_into(bytes: &[u8], blocks: Vec<Block>, out: &mut Vec<T>) -> Result<()>
    where
        T: DeserializeOwned,
    {
        let mut values = Self::decode(bytes, blocks)?;
        if out.is_empty() && out.capacity() <= values.capacity() {
            *out = values;
        } else {
            out.append(&mut values);
        }
        Ok(())
    }

    /// [`decode_into`](Self::decode_into) of a pool's chunk of results, of which the caller
    /// knows there are `items` (and checks it): a payload that says it holds more is refused
    /// before its values are decoded where its length does not bound that work (serde
    /// values that take no bytes; plain old data is counted by its bytes).
    fn decode_chunk_into(
        bytes: &[u8],
        blocks: Vec<Block>,
        out: &mut Vec<T>,
        _items: usize,
    ) -> Result<()>
    where
        T: DeserializeOwned,
    {
        Self::decode_into(bytes, blocks, out)
    }

    /// Decodes what [`encode`](Self::encode) made, handing each value to `each` in order;
    /// `each` is called only once the whole payload is known to decode (none is called when a
    /// value does not).
    fn decode_each(bytes: &[u8], blocks: Vec<Block>, each: impl FnMut(T)) -> Result<()>
    where
        T: DeserializeOwned,
    {
        Self::decode(bytes, blocks)?.into_iter().for_each(each);
        Ok(())
    }

    /// [`decode_each`](Self::decode_each) with `state` handed to `each` beside each value
    /// (whose loop can then keep the state's fields in registers).
    fn decode_fold<S>(
        bytes: &[u8],
        blocks: Vec<Block>,
        state: &mut S,
        mut each: impl FnMut(&mut S, T),
    ) -> Result<()>
    where
        T: DeserializeOwned,
    {
        Self::decode_each(bytes, blocks, |value| each(state, value))
    }

    /// Whether [`decode_each`](Self::decode_each) reads the values one at a time out of the
    /// payload (plain old data), rather than decoding a list of them first.
    fn reads_each() -> bool {
        false
    }

    /// Whether values can be encoded one at a time ([`push`](Self::push)) into a payload that
    /// [`encode_slice`](Self::encode_slice) of them would make: [`start`](Self::start), a
    /// `push` for each value, then [`end`](Self::end). No byte vector becomes a block.
    fn streams() -> bool {
        false
    }

    /// Begins a payload at the end of `buf` (called only when [`streams`](Self::streams)).
    fn start(_buf: &mut Vec<u8>) {}

    /// Appends one value to the payload begun in `buf` (called only when
    /// [`streams`](Self::streams)).
    fn push(_value: &T, _buf: &mut Vec<u8>) -> Result<()>
    where
        T: Serialize,
    {
        Err(Error::new(
            ErrorKind::Codec,
            "these values are not encoded one at a time",
        ))
    }

    /// Ends the payload of `count` values begun at `start` in `buf`.
    fn end(_buf: &mut [u8], _start: usize, _count: usize) {}

    /// Encodes one value with everything inline (a process's arguments, say).
    fn encode_one(value: T) -> Result<Vec<u8>>
    where
        T: Serialize,
    {
        Self::encode(vec![value], &mut Stash::new(false))
    }

    /// Decodes what [`encode_one`](Self::encode_one) made: exactly one value.
    fn decode_one(bytes: &[u8]) -> Result<T>
    where
        T: DeserializeOwned,
    {
        one(Self::decode(bytes, Vec::new())?)
    }
}

/// The one value of `values`, or an error that says how many there were.
fn one<T>(mut values: Vec<T>) -> Result<T> {
    match (values.pop(), values.is_empty()) {
        (Some(value), true) => Ok(value),
        (None, _) => Err(Error::new(ErrorKind::Codec, "an encoded value is missing")),
        (Some(_), false) => Err(Error::new(
            ErrorKind::Codec,
            format!("{} encoded values where one belongs", values.len() + 1),
        )),
    }
}

/// Values as they are, in format `F`. Not public API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Plain<F = Compact>(PhantomData<F>);

impl<T, F: Format> Carrier<T> for Plain<F> {
    type Format = F;

    fn in_place() -> bool {
        true
    }

    fn encode(values: Vec<T>, _stash: &mut Stash) -> Result<Vec<u8>>
    where
        T: Serialize,
    {
        // As a slice (the same encoding as the `Vec`): the format sizes its buffer from it.
        F::encode_seq(values.as_slice())
    }

    fn encode_slice(values: &[T]) -> Result<Vec<u8>>
    where
        T: Serialize,
    {
        F::encode_seq(values)
    }

    fn decode(bytes: &[u8], _blocks: Vec<Block>) -> Result<Vec<T>>
    where
        T: DeserializeOwned,
    {
        let mut out = Vec::new();
        F::decode_seq_into(bytes, &mut out)?;
        Ok(out)
    }

    fn decode_into(bytes: &[u8], _blocks: Vec<Block>, out: &mut Vec<T>) -> Result<()>
    where
        T: DeserializeOwned,
    {
        F::decode_seq_into(bytes, out)
    }

    fn decode_chunk_into(
        bytes: &[u8],
        _blocks: Vec<Block>,
        out: &mut Vec<T>,
        items: usize,
    ) -> Result<()>
    where
        T: DeserializeOwned,
    {
        F::decode_chunk_into(bytes, out, items)
    }

    fn decode_each(bytes: &[u8], _blocks: Vec<Block>, mut each: impl FnMut(T)) -> Result<()>
    where
        T: DeserializeOwned,
    {
        F::decode_seq_each(bytes, &mut (), |_, value| each(value))
    }

    fn decode_fold<S>(
        bytes: &[u8],
        _blocks: Vec<Block>,
        state: &mut S,
        each: impl FnMut(&mut S, T),
    ) -> Result<()>
    where
        T: DeserializeOwned,
    {
        F::decode_seq_each(bytes, state, each)
    }

    fn streams() -> bool {
        F::streams()
    }

    #[inline]
    fn start(buf: &mut Vec<u8>) {
        F::seq_start(buf)
    }

    #[inline]
    fn push(value: &T, buf: &mut Vec<u8>) -> Result<()>
    where
        T: Serialize,
    {
        F::seq_push(value, buf)
    }

    #[inline]
    fn end(buf: &mut [u8], start: usize, count: usize) {
        F::seq_end(buf, start, count)
    }

    fn encode_one(value: T) -> Result<Vec<u8>>
    where
        T: Serialize,
    {
        F::encode(&value)
    }

    fn decode_one(bytes: &[u8]) -> Result<T>
    where
        T: DeserializeOwned,
    {
        F::decode(bytes)
    }
}

/// Primitive numbers, as their bytes in memory. Not public API.
///
/// The bytes are in native order, with no length: both ends of a pool run the same build on
/// the same machine (the bootstrap checks it), and the length of the payload counts the
/// values. `bool` and `char` are not numbers here: not every byte pattern is one.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Raw;

/// A type whose every byte pattern is a value, carried by [`Raw`]. Not public API.
#[doc(hidden)]
pub trait Number: bytemuck::Pod + Serialize + DeserializeOwned {}

macro_rules! numbers {
    ($($t:ty)*) => { $(impl Number for $t {})* };
}

numbers!(u8 u16 u32 u64 i8 i16 i32 i64 usize isize f32 f64);

impl<T: Number> Carrier<T> for Raw {
    type Format = Compact;

    fn in_place() -> bool {
        true
    }

    fn encode(values: Vec<T>, _stash: &mut Stash) -> Result<Vec<u8>> {
        Self::encode_slice(&values)
    }

    fn encode_slice(values: &[T]) -> Result<Vec<u8>> {
        let bytes: &[u8] = bytemuck::cast_slice(values);
        let mut buffer = spare::take_or_new(bytes.len());
        buffer.extend_from_slice(bytes);
        Ok(buffer)
    }

    fn decode(bytes: &[u8], blocks: Vec<Block>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        Self::decode_into(bytes, blocks, &mut out)?;
        Ok(out)
    }

    fn decode_into(bytes: &[u8], blocks: Vec<Block>, out: &mut Vec<T>) -> Result<()> {
        pod::decode_items_into(bytes, blocks, out)
    }

    fn decode_each(bytes: &[u8], blocks: Vec<Block>, each: impl FnMut(T)) -> Result<()> {
        pod::decode_items_each(bytes, blocks, each)
    }

    fn reads_each() -> bool {
        true
    }

    fn streams() -> bool {
        true
    }

    #[inline]
    fn push(value: &T, buf: &mut Vec<u8>) -> Result<()> {
        buf.extend_from_slice(bytemuck::bytes_of(value));
        Ok(())
    }
}

/// Tuples of two to four primitive numbers (a `#[process]` function's arguments, or a result
/// written as such a tuple): each value as its numbers' bytes one after the other, without
/// the padding the tuple may have in memory. A loop over the values, without a serde call.
macro_rules! raw_tuples {
    ($(($($t:ident $i:tt),+))*) => {$(
        impl<$($t: Number),+> Carrier<($($t,)+)> for Raw {
            type Format = Compact;

            fn in_place() -> bool {
                true
            }

            fn encode(values: Vec<($($t,)+)>, _stash: &mut Stash) -> Result<Vec<u8>> {
                Self::encode_slice(&values)
            }

            fn encode_slice(values: &[($($t,)+)]) -> Result<Vec<u8>> {
                let size = 0 $(+ std::mem::size_of::<$t>())+;
                let mut buffer = spare::take_or_new(values.len() * size);
                for value in values {
                    $(buffer.extend_from_slice(bytemuck::bytes_of(&value.$i));)+
                }
                Ok(buffer)
            }

            fn decode(bytes: &[u8], blocks: Vec<Block>) -> Result<Vec<($($t,)+)>> {
                let mut out = Vec::new();
                Self::decode_into(bytes, blocks, &mut out)?;
                Ok(out)
            }

            fn decode_into(
                bytes: &[u8],
                blocks: Vec<Block>,
                out: &mut Vec<($($t,)+)>,
            ) -> Result<()> {
                let size = 0 $(+ std::mem::size_of::<$t>())+;
                reserve_raw(out, bytes.len(), size, &blocks)?;
                out.extend(bytes.chunks_exact(size).map(|mut value| {
                    ($({
                        let (number, rest) = value.split_at(std::mem::size_of::<$t>());
                        value = rest;
                        bytemuck::pod_read_unaligned::<$t>(number)
                    },)+)
                }));
                Ok(())
            }

            fn decode_each(
                bytes: &[u8],
                blocks: Vec<Block>,
                each: impl FnMut(($($t,)+)),
            ) -> Result<()> {
                let size = 0 $(+ std::mem::size_of::<$t>())+;
                check_raw::<($($t,)+)>(bytes.len(), size, &blocks)?;
                bytes.chunks_exact(size).map(|mut value| {
                    ($({
                        let (number, rest) = value.split_at(std::mem::size_of::<$t>());
                        value = rest;
                        bytemuck::pod_read_unaligned::<$t>(number)
                    },)+)
                }).for_each(each);
                Ok(())
            }

            fn reads_each() -> bool {
                true
            }

            fn streams() -> bool {
                true
            }

            #[inline]
            fn push(value: &($($t,)+), buf: &mut Vec<u8>) -> Result<()> {
                $(buf.extend_from_slice(bytemuck::bytes_of(&value.$i));)+
                Ok(())
            }
        }
    )*};
}

raw_tuples! {
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
}

/// Makes room in `out` for the values of `size` bytes that a run of `len` bytes holds: an
/// error when the run comes with blocks or is cut short.
pub(crate) fn reserve_raw<T>(
    out: &mut Vec<T>,
    len: usize,
    size: usize,
    blocks: &[Block],
) -> Result<()> {
    let count = check_raw::<T>(len, size, blocks)?;
    out.try_reserve(count).map_err(|_| {
        Error::new(
            ErrorKind::Codec,
            format!(
                "cannot make room for {count} `{}`s",
                std::any::type_name::<T>()
            ),
        )
    })
}

/// The count of values of `size` bytes that a run of `len` bytes holds: an error when the run
/// comes with blocks or is cut short.
pub(crate) fn check_raw<T>(len: usize, size: usize, blocks: &[Block]) -> Result<usize> {
    let name = std::any::type_name::<T>();
    if !blocks.is_empty() {
        return Err(Error::new(
            ErrorKind::Codec,
            format!("a run of `{name}`s came with {} byte blocks", blocks.len()),
        ));
    }
    if !len.is_multiple_of(size) {
        return Err(Error::new(
            ErrorKind::Codec,
            format!("cannot decode a run of `{name}`s from {len} bytes: not a multiple of {size}"),
        ));
    }
    Ok(len / size)
}

/// Values packed into `P`, whose byte vectors are [`Bytes`], in format `F`. Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Packed<P, F = Compact>(PhantomData<(P, F)>);

impl<T, P: Part<T>, F: Format> Carrier<T> for Packed<P, F> {
    type Format = F;

    fn in_place() -> bool {
        false
    }

    fn encode(values: Vec<T>, stash: &mut Stash) -> Result<Vec<u8>> {
        let packed: Vec<P> = values.into_iter().map(|v| P::pack(v, stash)).collect();
        F::encode_seq(&packed)
    }

    fn encode_slice(_values: &[T]) -> Result<Vec<u8>> {
        // Packing moves byte vectors out of the values: it needs them owned.
        Err(Error::new(
            ErrorKind::Codec,
            "values with byte vectors are encoded from a `Vec`, not in place",
        ))
    }

    fn decode(bytes: &[u8], blocks: Vec<Block>) -> Result<Vec<T>> {
        // A chunk, as `encode_seq` wrote it (its sequence counts no level of nesting).
        let mut packed: Vec<P> = Vec::new();
        F::decode_seq_into(bytes, &mut packed)?;
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
                blocks.push(Block::from(value));
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
                // A block made for wider values (not by this carrier): its bytes, copied.
                .map(|block| {
                    block
                        .into_vec::<u8>()
                        .unwrap_or_else(|block| block.to_vec())
                })
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

/// Encodes a chunk of values for a pool message: byte vectors (and vectors of plain old data)
/// of [`BLOCK_MIN`] bytes or more become its blocks.
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
    if C::in_place() {
        for (index, chunk) in values.chunks(size).enumerate() {
            each(
                index as u32,
                handle::encode_with(|| C::encode_slice(chunk))?,
            )?;
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
#[cfg(test)]
pub(crate) fn decode_chunk<T: DeserializeOwned, C: Carrier<T>>(encoded: Encoded) -> Result<Vec<T>> {
    let Encoded { bytes, fds, blocks } = encoded;
    let decoded = handle::with_incoming(fds, || C::decode(&bytes, blocks));
    spare::give(bytes);
    decoded
}

/// Decodes a chunk of results of `items` items like [`decode_chunk`], onto the end of `out`
/// (left as it was on error); one that says it holds more is refused before its values are
/// decoded.
pub(crate) fn decode_chunk_into<T: DeserializeOwned, C: Carrier<T>>(
    encoded: Encoded,
    out: &mut Vec<T>,
    items: usize,
) -> Result<()> {
    let Encoded { bytes, fds, blocks } = encoded;
    let decoded = handle::with_incoming(fds, || C::decode_chunk_into(&bytes, blocks, out, items));
    spare::give(bytes);
    decoded
}

// ---------------------------------------------------------------------------------------------
// What the runtime calls for a worker: the same, with errors that name it

/// A worker as its carriers see it: its registered name, its types and how they travel. Every
/// [`Target`](crate::Target) is one.
/// What the carriers need to know of a process type (a `#[process]` impl block): its name and
/// its format. Implemented for every `Runnable` by the registry, so that this module does not
/// depend on it.
pub(crate) trait ProcessType: Serialize + DeserializeOwned {
    /// The registered name.
    const NAME: &'static str;
    /// How the value is encoded.
    type Format: codec::Format;
}

pub(crate) trait Worker {
    /// The registered name.
    const NAME: &'static str;
    /// The argument, or the tuple of them.
    type Args: Serialize + DeserializeOwned;
    /// The result.
    type Output: Serialize + DeserializeOwned;
    /// How `Args` travel.
    type ArgsCarrier: Carrier<Self::Args>;
    /// How `Output` travels.
    type OutputCarrier: Carrier<Self::Output>;
}

/// Which part of a worker's values an error is about.
#[derive(Clone, Copy)]
enum Side {
    Args,
    Output,
}

/// An error of encoding (`encode`) or decoding a worker's arguments or result, told about the
/// worker and the user's type.
fn explained<W: Worker>(encode: bool, side: Side) -> impl FnOnce(Error) -> Error {
    move |err| {
        let verb = if encode { "encode" } else { "decode" };
        let (what, ty) = match side {
            Side::Args => ("the arguments", std::any::type_name::<W::Args>()),
            Side::Output => ("the result", std::any::type_name::<W::Output>()),
        };
        codec::explain(
            err,
            format_args!("cannot {verb} {what} of worker `{}`, a `{ty}`", W::NAME),
        )
    }
}

/// The arguments of a process, an initializer or a barrier action: everything inline.
pub(crate) fn encode_args<W: Worker>(args: W::Args) -> Result<Encoded> {
    encode_one::<W::Args, W::ArgsCarrier>(args).map_err(explained::<W>(true, Side::Args))
}

/// Decodes what [`encode_args`] made.
pub(crate) fn decode_args<W: Worker>(bytes: &[u8]) -> Result<W::Args> {
    decode_one::<W::Args, W::ArgsCarrier>(bytes).map_err(explained::<W>(false, Side::Args))
}

/// The result of a process's or an initializer's call: everything inline.
pub(crate) fn encode_output<W: Worker>(output: W::Output) -> Result<Encoded> {
    encode_one::<W::Output, W::OutputCarrier>(output).map_err(explained::<W>(true, Side::Output))
}

/// An error of encoding or decoding the value of a process type, told about the type.
fn explained_runnable<R: ProcessType>(encode: bool) -> impl FnOnce(Error) -> Error {
    move |err| {
        let verb = if encode { "encode" } else { "decode" };
        let ty = std::any::type_name::<R>();
        if R::NAME == ty {
            codec::explain(
                err,
                format_args!("cannot {verb} the value of process type `{ty}`"),
            )
        } else {
            // Registered under `name = "..."`: both.
            codec::explain(
                err,
                format_args!(
                    "cannot {verb} the value of process type `{}`, a `{ty}`",
                    R::NAME
                ),
            )
        }
    }
}

/// The value of a process type (its fields), in its format, for `Process::from`.
pub(crate) fn encode_runnable<R: ProcessType>(value: &R) -> Result<Encoded> {
    handle::encode_with(|| R::Format::encode(value)).map_err(explained_runnable::<R>(true))
}

/// Decodes what [`encode_runnable`] made, in the child.
pub(crate) fn decode_runnable<R: ProcessType>(bytes: &[u8]) -> Result<R> {
    R::Format::decode(bytes).map_err(explained_runnable::<R>(false))
}

/// A chunk of a worker's arguments for a pool message.
pub(crate) fn encode_args_chunk<W: Worker>(args: Vec<W::Args>) -> Result<Encoded> {
    encode_chunk::<W::Args, W::ArgsCarrier>(args).map_err(explained::<W>(true, Side::Args))
}

/// [`encode_chunks`] of a worker's arguments; an error of `each` is passed on as it is.
pub(crate) fn encode_args_chunks<W: Worker>(
    args: Vec<W::Args>,
    size: usize,
    mut each: impl FnMut(u32, Encoded) -> Result<()>,
) -> Result<()> {
    let mut refused = None;
    let encoded = encode_chunks::<W::Args, W::ArgsCarrier>(args, size, |index, payload| {
        each(index, payload).map_err(|err| {
            // Stops the encoding; `err` itself is returned below.
            let stop = Error::new(err.kind(), "refused");
            refused = Some(err);
            stop
        })
    });
    match refused {
        Some(err) => Err(err),
        None => encoded.map_err(explained::<W>(true, Side::Args)),
    }
}

/// The items of an input in a list, without trusting what it says it holds (its own word,
/// which may be wrong: a claim of 2^40 items made `collect` abort on its reservation): room is
/// reserved for the fewest it claims only when memory can hold them, and the list grows as
/// items come past that.
pub(crate) fn collect<T>(mut items: impl Iterator<Item = T>) -> Vec<T> {
    let mut list = Vec::new();
    let _ = list.try_reserve(items.size_hint().0);
    // Into the room reserved first (`extend` keeps the standard library's fast paths), then
    // one by one (`extend` would reserve what the input says it still holds).
    let room = list.capacity();
    list.extend(items.by_ref().take(room));
    for item in items {
        list.push(item);
    }
    list
}

/// The most room a chunk of arguments reserves up front, from the number of items it should
/// take (an input's own word, which may be wrong: `0..u64::MAX` says it holds 2^64 items);
/// a larger chunk's buffer grows as it is encoded.
const ROOM_UP_FRONT: usize = 64 << 20;

/// Encodes a worker's arguments from `items` in at most `chunks` chunks for pool messages,
/// and hands each to `each(index, items in it, whether it is the last, encoded)` as soon as it
/// is encoded; returns how many items there were. Every chunk but the last takes `size` items;
/// the last takes all that are left. When `items` ends early, the chunk that comes short (or
/// empty) is the last: no chunk follows it. The items are encoded as they come, one at a time,
/// into the chunk's buffer when the carrier can (no list of them); collected chunk by chunk
/// otherwise. An error of `each` is passed on as it is.
pub(crate) fn encode_args_iter<W: Worker>(
    mut items: impl Iterator<Item = W::Args>,
    chunks: usize,
    size: usize,
    mut each: impl FnMut(u32, usize, bool, Encoded) -> Result<()>,
) -> Result<usize> {
    let mut total = 0;
    for index in 0..chunks {
        let take = if index + 1 == chunks {
            usize::MAX
        } else {
            size
        };
        let encoded: (usize, Encoded) = if W::ArgsCarrier::streams() {
            let room = room::<W::Args, W::ArgsCarrier>(size).min(ROOM_UP_FRONT);
            let mut count = 0;
            let encoded = handle::encode_with(|| {
                let mut buf = spare::take_or_new(room);
                W::ArgsCarrier::start(&mut buf);
                count = push_all::<W::Args, W::ArgsCarrier>(items.by_ref().take(take), &mut buf)?;
                W::ArgsCarrier::end(&mut buf, 0, count);
                Ok(buf)
            })
            .map_err(explained::<W>(true, Side::Args))?;
            total += count;
            (count, encoded)
        } else {
            let chunk = collect(items.by_ref().take(take));
            total += chunk.len();
            (chunk.len(), encode_args_chunk::<W>(chunk)?)
        };
        let last = index + 1 == chunks || encoded.0 < size;
        each(index as u32, encoded.0, last, encoded.1)?;
        if last {
            break;
        }
    }
    Ok(total)
}

/// Pushes each of `items` onto the payload begun in `buf` ([`Carrier::push`]); returns how
/// many. Not inlined: `buf` is then a `&mut` argument, which the compiler knows no byte written
/// into the buffer can change, so it keeps its length in a register for the whole loop instead
/// of storing it and reading it back after every number.
#[inline(never)]
fn push_all<T: Serialize, C: Carrier<T>>(
    items: impl Iterator<Item = T>,
    buf: &mut Vec<u8>,
) -> Result<usize> {
    let mut count = 0;
    for item in items {
        C::push(&item, buf)?;
        count += 1;
    }
    Ok(count)
}

/// The room a payload of `count` values of `T` streamed by `C` takes when each takes its size
/// in memory (plain old data does, and small serde structs of numbers): exactly that, so that
/// a spare buffer of a payload of the same size serves it.
fn room<T, C: Carrier<T>>(count: usize) -> usize {
    let mut head = Vec::new();
    C::start(&mut head);
    count
        .saturating_mul(std::mem::size_of::<T>())
        .saturating_add(head.len())
}

/// Runs a chunk of worker `W`'s tasks in a pool worker: decodes the arguments, calls `call` on
/// each, encodes the results. When the result's carrier encodes one value at a time, each
/// result is encoded as soon as it is made, into one buffer sized from the payload: no list of
/// results. The arguments come one at a time too when they are plain old data (read out of
/// the payload) or serde values that own nothing on the heap (decoded twice, see
/// [`Format::decode_seq_each`](codec::Format::decode_seq_each)); from a list otherwise.
/// `call` runs only once the whole payload is known to decode (for values decoded twice: once
/// the first pass has decoded them all).
pub(crate) fn run_chunk<W: Worker>(
    payload: &[u8],
    blocks: Vec<Block>,
    mut call: impl FnMut(W::Args) -> W::Output,
) -> Result<Encoded> {
    if !W::OutputCarrier::streams() {
        // A list of arguments (serde decodes them first anyway): the results take its place
        // when they have the same size (`collect` reuses the allocation).
        let args = decode_args_chunk::<W>(payload, blocks)?;
        let results: Vec<W::Output> = args.into_iter().map(call).collect();
        return encode_outputs::<W>(results);
    }
    // Room for a result of its size in memory for each argument the payload can hold: as many
    // as it holds when the arguments are plain old data. Serde arguments may encode to less
    // than their size (then the buffer grows) or to more (a vector): their guess is held to
    // twice the payload, so that a few large arguments do not reserve room for many results.
    let count = payload.len() / std::mem::size_of::<W::Args>().max(1);
    let mut room = room::<W::Output, W::OutputCarrier>(count);
    if !W::ArgsCarrier::reads_each() {
        room = room.min(payload.len().saturating_mul(2).saturating_add(64));
    }
    let mut decoded = Ok(());
    let mut failed = None;
    let encoded = handle::encode_with(|| {
        // The buffer, the count of results in it and the first error, handed to each call
        // beside its arguments.
        let mut out = (spare::take_or_new(room), 0usize, None);
        W::OutputCarrier::start(&mut out.0);
        decoded = W::ArgsCarrier::decode_fold(payload, blocks, &mut out, |out, args| {
            if out.2.is_none() {
                match W::OutputCarrier::push(&call(args), &mut out.0) {
                    Ok(()) => out.1 += 1,
                    Err(err) => out.2 = Some(err),
                }
            }
        });
        let (mut buf, count, error) = out;
        failed = error;
        W::OutputCarrier::end(&mut buf, 0, count);
        Ok(buf)
    })?;
    decoded.map_err(explained::<W>(false, Side::Args))?;
    match failed {
        Some(err) => Err(explained::<W>(true, Side::Output)(err)),
        None => Ok(encoded),
    }
}

/// Decodes a chunk of a worker's arguments in a pool worker.
pub(crate) fn decode_args_chunk<W: Worker>(
    bytes: &[u8],
    blocks: Vec<Block>,
) -> Result<Vec<W::Args>> {
    W::ArgsCarrier::decode(bytes, blocks).map_err(explained::<W>(false, Side::Args))
}

/// Encodes a chunk of a worker's results in a pool worker.
pub(crate) fn encode_outputs<W: Worker>(outputs: Vec<W::Output>) -> Result<Encoded> {
    encode_chunk::<W::Output, W::OutputCarrier>(outputs).map_err(explained::<W>(true, Side::Output))
}

/// Decodes a chunk of a worker's results for `items` items: a [`ChunkDecoder`].
pub(crate) fn decode_outputs<W: Worker>(encoded: Encoded, items: usize) -> Result<Vec<W::Output>> {
    let mut out = Vec::new();
    decode_chunk_into::<W::Output, W::OutputCarrier>(encoded, &mut out, items)
        .map_err(explained::<W>(false, Side::Output))?;
    Ok(out)
}

/// Decodes a chunk of a worker's results onto a list: a [`ChunkAppender`].
pub(crate) fn decode_outputs_into<W: Worker>(
    encoded: Encoded,
    out: &mut Vec<W::Output>,
    items: usize,
) -> Result<()> {
    decode_chunk_into::<W::Output, W::OutputCarrier>(encoded, out, items)
        .map_err(explained::<W>(false, Side::Output))
}

/// How a pool result sink decodes its chunks (of at most so many items).
pub(crate) type ChunkDecoder<T> = fn(Encoded, usize) -> Result<Vec<T>>;

/// How the sink of `map` decodes its chunks (of so many items): onto the end of the whole
/// list.
pub(crate) type ChunkAppender<T> = fn(Encoded, &mut Vec<T>, usize) -> Result<()>;

/// Encodes one value with everything inline (a process's bootstrap has no blocks).
pub(crate) fn encode_one<T: Serialize, C: Carrier<T>>(value: T) -> Result<Encoded> {
    handle::encode_with(|| C::encode_one(value))
}

/// Decodes what [`encode_one`] made (descriptors are the caller's `with_incoming`).
pub(crate) fn decode_one<T: DeserializeOwned, C: Carrier<T>>(bytes: &[u8]) -> Result<T> {
    C::decode_one(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Mixed = Packed<(Held<u32>, Bytes, Held<String>)>;

    #[test]
    fn a_chunk_takes_values_as_deep_as_one_value_alone() {
        // A chain of variants, a level each: the deepest one the encoder takes alone goes
        // through a chunk too, as its decoder takes it (the chunk's own sequence counts no
        // level); one level more is refused.
        #[derive(Debug, Serialize, Deserialize)]
        enum Chain {
            End,
            Link(Box<Chain>),
        }
        let chain = |links: usize| (0..links).fold(Chain::End, |c, _| Chain::Link(Box::new(c)));
        let alone = |c: &Chain| codec::encode(c).is_ok();
        let deepest = (0..2000).take_while(|&n| alone(&chain(n))).last().unwrap();
        assert!(deepest > 500, "{deepest}");
        let bytes =
            <Plain<Compact> as Carrier<Chain>>::encode_slice(&[chain(deepest), chain(3)]).unwrap();
        let back: Vec<Chain> = Plain::<Compact>::decode(&bytes, Vec::new()).unwrap();
        assert_eq!(back.len(), 2);
        let bytes = Plain::<Compact>::encode(vec![chain(deepest)], &mut Stash::new(false));
        assert!(bytes.is_ok(), "{bytes:?}");
        assert!(<Plain<Compact> as Carrier<Chain>>::encode_slice(&[chain(deepest + 1)]).is_err());
    }

    #[test]
    fn the_format_is_part_of_the_carrier_and_of_one_value() {
        use crate::codec::SelfDescribing;
        // The registry fingerprints the carriers' type names: the codec changes them.
        assert_ne!(
            std::any::type_name::<Plain>(),
            std::any::type_name::<Plain<SelfDescribing>>()
        );
        assert_ne!(
            std::any::type_name::<Packed<Bytes>>(),
            std::any::type_name::<Packed<Bytes, SelfDescribing>>()
        );
        // One value (a process's arguments) and a chunk both use the carrier's format.
        let value = (1u32, "x".to_string());
        let one = encode_one::<_, Plain<SelfDescribing>>(value.clone()).unwrap();
        assert_eq!(one.bytes, SelfDescribing::encode(&value).unwrap());
        assert_ne!(one.bytes, codec::encode(&value).unwrap());
        assert_eq!(
            decode_one::<(u32, String), Plain<SelfDescribing>>(&one.bytes).unwrap(),
            value
        );
        type Mixed = Packed<(Held<u32>, Bytes), SelfDescribing>;
        let values = vec![(1u32, vec![9u8; BLOCK_MIN]), (2, vec![1, 2])];
        let encoded = encode_chunk::<_, Mixed>(values.clone()).unwrap();
        assert_eq!(encoded.blocks.len(), 1);
        assert_eq!(decode_chunk::<_, Mixed>(encoded).unwrap(), values);
    }

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
    fn tuples_of_numbers_travel_as_their_bytes_without_padding() {
        // (u8, u64) has 7 bytes of padding in memory; on the wire each pair takes 9 bytes.
        let pairs = vec![(0u8, 0u64), (u8::MAX, u64::MAX), (7, 1 << 40)];
        let encoded = encode_chunk::<_, Raw>(pairs.clone()).unwrap();
        assert!(encoded.blocks.is_empty());
        assert_eq!(encoded.bytes.len(), 3 * 9);
        assert_eq!(encoded.bytes[9], u8::MAX);
        assert_eq!(&encoded.bytes[10..18], &u64::MAX.to_ne_bytes());
        assert_eq!(decode_chunk::<(u8, u64), Raw>(encoded).unwrap(), pairs);

        let triples = vec![(-1i16, 2.5f32, usize::MAX), (i16::MIN, -0.0, 0)];
        let back = decode_chunk::<(i16, f32, usize), Raw>(
            encode_chunk::<_, Raw>(triples.clone()).unwrap(),
        );
        assert_eq!(back.unwrap(), triples);

        let quads = vec![(1u32, 2i64, 3u8, 4.0f64); 1000];
        let mut out = vec![(9, 9, 9, 9.0)];
        // A buffer that is not aligned for any of them: the values are read unaligned.
        let mut shifted = vec![0u8];
        shifted.extend(Raw::encode_slice(&quads).unwrap());
        Raw::decode_into(&shifted[1..], Vec::new(), &mut out).unwrap();
        assert_eq!(out.len(), 1001);
        assert_eq!(&out[1..], &quads[..]);

        // Cut short, or with blocks: a Codec error, and `out` as it was.
        let mut out: Vec<(u8, u64)> = Vec::new();
        let err = Raw::decode_into(&[0u8; 10], Vec::new(), &mut out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(err.to_string().contains("not a multiple of 9"), "{err}");
        let err = Raw::decode_into(&[0u8; 9], vec![Block::from(vec![1u8])], &mut out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(out.is_empty());

        let one = encode_one::<_, Raw>((3u16, -4i32)).unwrap();
        assert_eq!(one.bytes.len(), 6);
        assert_eq!(decode_one::<(u16, i32), Raw>(&one.bytes).unwrap(), (3, -4));
    }

    #[test]
    fn numbers_travel_as_their_bytes() {
        let values = vec![0u64, 1, u64::MAX, 1 << 63];
        let encoded = encode_chunk::<_, Raw>(values.clone()).unwrap();
        assert!(encoded.blocks.is_empty());
        assert_eq!(encoded.bytes.len(), 4 * 8);
        assert_eq!(&encoded.bytes[16..24], &u64::MAX.to_ne_bytes());
        assert_eq!(decode_chunk::<u64, Raw>(encoded).unwrap(), values);

        let floats = vec![-0.0f64, f64::NAN, f64::from_bits(0x7ff0_0000_0000_0001)];
        let back = decode_chunk::<f64, Raw>(encode_chunk::<_, Raw>(floats.clone()).unwrap());
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.unwrap()), bits(&floats));

        let signed = vec![i8::MIN, -1, 0, i8::MAX];
        let back = decode_chunk::<i8, Raw>(encode_chunk::<_, Raw>(signed.clone()).unwrap());
        assert_eq!(back.unwrap(), signed);
        assert!(decode_chunk::<u32, Raw>(Encoded::default())
            .unwrap()
            .is_empty());

        // One value, as a process or an initializer gets it.
        let one = encode_one::<_, Raw>(i64::MIN).unwrap();
        assert_eq!(decode_one::<i64, Raw>(&one.bytes).unwrap(), i64::MIN);
    }

    #[test]
    fn numbers_decode_from_any_alignment_onto_a_list() {
        let values: Vec<u32> = (0..100).map(|i| i * 0x0101_0101).collect();
        let bytes = Raw::encode_slice(&values).unwrap();
        // The same bytes one past an aligned address: decoded value by value.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        let mut out = vec![7u32];
        Raw::decode_into(&shifted[1..], Vec::new(), &mut out).unwrap();
        assert_eq!(out.len(), 101);
        assert_eq!(out[0], 7);
        assert_eq!(&out[1..], &values[..]);
        let mut out = Vec::new();
        decode_chunk_into::<u32, Raw>(
            Encoded {
                bytes,
                ..Encoded::default()
            },
            &mut out,
            values.len(),
        )
        .unwrap();
        assert_eq!(out, values);
    }

    #[test]
    fn a_corrupt_run_of_numbers_is_a_codec_error() {
        let mut out = vec![1u64, 2];
        // Truncated: not a whole number of values.
        for len in [1, 7, 9, 15] {
            let err = Raw::decode_into(&vec![0u8; len], Vec::new(), &mut out).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Codec);
            assert!(err.to_string().contains("not a multiple of 8"), "{err}");
        }
        // Blocks where none belong.
        let err = Raw::decode_into(&[0u8; 8], vec![Block::from(vec![1u8])], &mut out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert_eq!(out, [1, 2], "a failed decoding leaves the list as it was");
        let err = decode_chunk::<f32, Raw>(Encoded {
            bytes: vec![1, 2, 3],
            ..Encoded::default()
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(decode_one::<u16, Raw>(&[1, 2, 3]).is_err());
        assert!(decode_one::<u16, Raw>(&[]).is_err());
    }

    /// Encodes `values` one at a time as `C` streams them.
    fn streamed<T: Serialize, C: Carrier<T>>(values: &[T]) -> Vec<u8> {
        assert!(C::streams());
        let mut buf = vec![0xaa];
        C::start(&mut buf);
        for value in values {
            C::push(value, &mut buf).unwrap();
        }
        C::end(&mut buf, 1, values.len());
        assert_eq!(buf[0], 0xaa, "appended after what was there");
        buf.split_off(1)
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Record {
        id: u64,
        name: String,
        tags: Vec<u16>,
        score: Option<f64>,
    }

    fn record(i: u64) -> Record {
        Record {
            id: i << 33,
            name: "x".repeat(i as usize % 4),
            tags: (0..i as u16 % 3).collect(),
            score: i.is_multiple_of(2).then_some(i as f64 / 2.0),
        }
    }

    #[test]
    fn values_stream_as_a_slice_of_them_encodes() {
        for n in [0u64, 1, 2, 7, 1000] {
            let records: Vec<Record> = (0..n).map(record).collect();
            assert_eq!(
                streamed::<_, Plain>(&records),
                Plain::<Compact>::encode_slice(&records).unwrap()
            );
            let numbers: Vec<u32> = (0..n as u32).collect();
            assert_eq!(
                streamed::<_, Raw>(&numbers),
                Raw::encode_slice(&numbers).unwrap()
            );
            let pairs: Vec<(u8, f64)> = (0..n).map(|i| (i as u8, i as f64)).collect();
            assert_eq!(
                streamed::<_, Raw>(&pairs),
                Raw::encode_slice(&pairs).unwrap()
            );
        }
        // What does not stream: byte vectors that may become blocks, and msgpack.
        assert!(!<Packed<Bytes> as Carrier<Vec<u8>>>::streams());
        assert!(!<Plain<codec::SelfDescribing> as Carrier<u64>>::streams());
        // An encoding error of one value is the format's, explained.
        #[derive(Serialize)]
        struct Sparse {
            #[serde(skip_serializing_if = "Option::is_none")]
            a: Option<u8>,
        }
        let mut buf = Vec::new();
        <Plain as Carrier<Sparse>>::start(&mut buf);
        let err = <Plain as Carrier<Sparse>>::push(&Sparse { a: None }, &mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        let err = codec::explain(err, format_args!("cannot encode x"));
        assert!(err.to_string().contains("skip_serializing_if"), "{err}");
    }

    /// A worker of `Record`s to `(u64, u64)`s, and one of numbers, as `#[process]` makes them.
    struct Names;

    impl Worker for Names {
        const NAME: &'static str = "test::names";
        type Args = Record;
        type Output = (u64, usize);
        type ArgsCarrier = Plain;
        type OutputCarrier = Raw;
    }

    struct Squares;

    impl Worker for Squares {
        const NAME: &'static str = "test::squares";
        type Args = u64;
        type Output = Record;
        type ArgsCarrier = Raw;
        type OutputCarrier = Plain;
    }

    struct Lists;

    impl Worker for Lists {
        const NAME: &'static str = "test::lists";
        type Args = Vec<u8>;
        type Output = Vec<u8>;
        type ArgsCarrier = Packed<Bytes>;
        type OutputCarrier = Packed<Bytes>;
    }

    #[test]
    fn a_chunk_runs_value_by_value_into_one_buffer() {
        let records: Vec<Record> = (0..500).map(record).collect();
        let payload = Plain::<Compact>::encode_slice(&records).unwrap();
        let mut calls = 0;
        let out = run_chunk::<Names>(&payload, Vec::new(), |r| {
            calls += 1;
            (r.id, r.name.len())
        })
        .unwrap();
        assert_eq!(calls, 500);
        let back = decode_chunk::<(u64, usize), Raw>(out).unwrap();
        let expected: Vec<_> = records.iter().map(|r| (r.id, r.name.len())).collect();
        assert_eq!(back, expected);

        let numbers: Vec<u64> = (0..300).collect();
        let payload = Raw::encode_slice(&numbers).unwrap();
        let out = run_chunk::<Squares>(&payload, Vec::new(), record).unwrap();
        let back = decode_chunk::<Record, Plain>(out).unwrap();
        assert_eq!(back, numbers.iter().map(|&i| record(i)).collect::<Vec<_>>());

        // An empty chunk, and a carrier that does not stream (byte vectors as blocks).
        let out = run_chunk::<Squares>(&[], Vec::new(), record).unwrap();
        assert!(decode_chunk::<Record, Plain>(out).unwrap().is_empty());
        let lists = vec![vec![1u8; BLOCK_MIN], vec![2, 3]];
        let Encoded { bytes, blocks, .. } = encode_chunk::<_, Packed<Bytes>>(lists).unwrap();
        let out = run_chunk::<Lists>(&bytes, blocks, |mut v| {
            v.push(9);
            v
        })
        .unwrap();
        assert_eq!(out.blocks.len(), 1);
        let back = decode_chunk::<Vec<u8>, Packed<Bytes>>(out).unwrap();
        let mut big = vec![1u8; BLOCK_MIN];
        big.push(9);
        assert_eq!(back, [big, vec![2, 3, 9]]);
    }

    /// A serde struct that owns nothing on the heap: its arguments are decoded one at a time.
    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: u64,
        flag: bool,
        y: Option<i32>,
    }

    fn point(i: u64) -> Point {
        Point {
            x: i * 3,
            flag: i.is_multiple_of(3),
            y: i.is_multiple_of(2).then_some(-(i as i32)),
        }
    }

    struct Points;

    impl Worker for Points {
        const NAME: &'static str = "test::points";
        type Args = Point;
        type Output = Point;
        type ArgsCarrier = Plain;
        type OutputCarrier = Plain;
    }

    #[test]
    fn serde_values_without_heap_run_one_at_a_time() {
        assert!(!std::mem::needs_drop::<Point>());
        for n in [0u64, 1, 2, 1000] {
            let points: Vec<Point> = (0..n).map(point).collect();
            let payload = Plain::<Compact>::encode_slice(&points).unwrap();
            let mut calls = 0;
            let flip = |p: Point| Point {
                x: p.x + 1,
                flag: !p.flag,
                y: p.y.map(|y| y * 2),
            };
            let out = run_chunk::<Points>(&payload, Vec::new(), |p| {
                calls += 1;
                flip(p)
            })
            .unwrap();
            assert_eq!(calls, n);
            let expected: Vec<Point> = points.iter().copied().map(flip).collect();
            // The results as a slice of them encodes, and back.
            assert_eq!(
                out.bytes,
                Plain::<Compact>::encode_slice(&expected).unwrap()
            );
            assert_eq!(decode_chunk::<Point, Plain>(out).unwrap(), expected);
            let mut got: Vec<Point> = Vec::new();
            Plain::<Compact>::decode_each(&payload, Vec::new(), |p| got.push(p)).unwrap();
            assert_eq!(got, points);
        }
    }

    #[test]
    fn a_corrupt_chunk_of_serde_values_without_heap_calls_nothing() {
        let points: Vec<Point> = (0..50).map(point).collect();
        let payload = Plain::<Compact>::encode_slice(&points).unwrap();
        // Each point: x (8 bytes), flag (1), the option's tag (1) and maybe its i32 (4).
        let mut bad_flag = payload.clone();
        bad_flag[8 + 8] = 2;
        let mut last_flag = payload.clone();
        let len = last_flag.len();
        last_flag[len - 2] = 7; // the last point (49) has no `y`: ... flag, tag
        let mut more = payload.clone();
        more[..8].copy_from_slice(&51u64.to_le_bytes());
        let mut fewer = payload.clone();
        fewer[..8].copy_from_slice(&49u64.to_le_bytes());
        let cases: [&[u8]; 7] = [
            &payload[..payload.len() - 1],
            &payload[..3],
            &bad_flag,
            &last_flag,
            &more,
            &fewer,
            &[payload.as_slice(), &[0]].concat(),
        ];
        for (i, bytes) in cases.into_iter().enumerate() {
            let mut calls = 0;
            let err = run_chunk::<Points>(bytes, Vec::new(), |p| {
                calls += 1;
                p
            })
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Codec, "case {i}");
            assert!(
                err.to_string()
                    .starts_with("cannot decode the arguments of worker `test::points`"),
                "case {i}: {err}"
            );
            assert_eq!(
                calls, 0,
                "case {i}: a call before the chunk was known whole"
            );
            let mut seen = 0;
            let err = Plain::<Compact>::decode_each(bytes, Vec::new(), |_: Point| seen += 1);
            assert_eq!(err.unwrap_err().kind(), ErrorKind::Codec, "case {i}");
            assert_eq!(seen, 0, "case {i}");
        }
    }

    /// A value that decodes the first time and fails every later time: one that reads global
    /// state, as no derived `Deserialize` does.
    #[derive(Debug, Serialize)]
    struct Once(u8);

    thread_local! {
        static DECODED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    impl<'de> Deserialize<'de> for Once {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Once, D::Error> {
            let v = u8::deserialize(d)?;
            let n = DECODED.with(|c| c.replace(c.get() + 1));
            if n > 0 {
                return Err(serde::de::Error::custom("decoded twice"));
            }
            Ok(Once(v))
        }
    }

    #[test]
    fn a_value_that_decodes_only_once_is_an_error_not_a_panic() {
        assert!(!std::mem::needs_drop::<Once>());
        let payload = Plain::<Compact>::encode_slice(&[Once(1)]).unwrap();
        DECODED.with(|c| c.set(0));
        let err = Plain::<Compact>::decode_each(&payload, Vec::new(), |_: Once| {}).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(err.chain().to_string().contains("decoded twice"), "{err:?}");
    }

    #[test]
    fn a_corrupt_chunk_is_a_codec_error_before_any_call() {
        let records: Vec<Record> = (0..50).map(record).collect();
        let payload = Plain::<Compact>::encode_slice(&records).unwrap();
        let numbers = Raw::encode_slice(&(0..50u64).collect::<Vec<_>>()).unwrap();
        let mut bad_tail = payload.clone();
        *bad_tail.last_mut().unwrap() = 7;
        let cases: [(&[u8], bool); 6] = [
            (&payload[..payload.len() - 1], true),
            (&payload[..3], true),
            (&bad_tail, true),
            (&[payload.as_slice(), &[0]].concat(), true),
            (&numbers[..numbers.len() - 1], false),
            (&numbers[..5], false),
        ];
        for (bytes, records) in cases {
            let mut calls = 0;
            let err = if records {
                run_chunk::<Names>(bytes, Vec::new(), |_| {
                    calls += 1;
                    (0, 0)
                })
            } else {
                run_chunk::<Squares>(bytes, Vec::new(), |i| {
                    calls += 1;
                    record(i)
                })
            }
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Codec);
            assert!(err
                .to_string()
                .starts_with("cannot decode the arguments of worker `test::"));
            assert_eq!(calls, 0, "a call before the chunk was known whole");
        }
        // Blocks where none belong.
        let err = run_chunk::<Squares>(&numbers, vec![Block::from(vec![1])], record).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
    }

    #[test]
    fn an_input_is_chunked_as_it_is_read_whatever_it_claims() {
        for (real, chunks, size) in [(10u64, 4, 3), (10, 2, 3), (3, 4, 3), (0, 2, 5), (1, 1, 1)] {
            for streamed in [true, false] {
                let mut got = Vec::new();
                let mut lasts = Vec::new();
                let each = |index, count, last, encoded: Encoded| {
                    got.push((index, count, encoded));
                    lasts.push(last);
                    Ok(())
                };
                let total = if streamed {
                    encode_args_iter::<Squares>(0..real, chunks, size, each)
                } else {
                    encode_args_iter::<Lists>((0..real).map(|i| vec![i as u8]), chunks, size, each)
                }
                .unwrap();
                assert_eq!(total, real as usize);
                // As many chunks as said, in order, unless the input ends before: then the
                // chunk that comes short (or empty) is the last. Every one but the last holds
                // `size`.
                let sent = chunks.min(real as usize / size + 1);
                assert_eq!(
                    got.iter().map(|c| c.0).collect::<Vec<_>>(),
                    (0..sent as u32).collect::<Vec<_>>()
                );
                assert_eq!(lasts.iter().filter(|&&l| l).count(), 1, "{lasts:?}");
                assert_eq!(lasts.last(), Some(&true));
                let counts: Vec<usize> = got.iter().map(|c| c.1).collect();
                let lens: Vec<usize> = got
                    .into_iter()
                    .map(|(_, _, e)| {
                        if streamed {
                            decode_chunk::<u64, Raw>(e).unwrap().len()
                        } else {
                            decode_chunk::<Vec<u8>, Packed<Bytes>>(e).unwrap().len()
                        }
                    })
                    .collect();
                assert_eq!(lens.iter().sum::<usize>(), real as usize);
                // Each chunk's count is what it holds.
                assert_eq!(counts, lens);
                assert!(lens[..sent - 1].iter().all(|&n| n == size), "{lens:?}");
            }
        }
        // A chunk refused by `each`: that error, as it is.
        let err = encode_args_iter::<Squares>(0..10, 2, 5, |_, _, _, _| {
            Err(Error::new(ErrorKind::NotRunning, "closed"))
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotRunning);
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
