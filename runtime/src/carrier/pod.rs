//! Plain old data as its bytes, chosen by the type checker: through aliases and whatever path
//! the user wrote.
//!
//! `#[process]` sees only syntax, and a type alias (`type Samples = Vec<f64>`) hides what it
//! stands for. So besides the carrier it chooses from the types as written, it asks the type
//! checker: for each of a worker's two types it implements [`Choice`] on the worker's struct
//! with a body that calls `way()` on a [`Probe`] of the type through three references. Method
//! resolution takes the first of these that applies (autoref specialization), at a type the
//! impl names concretely, alias resolved:
//!
//! 1. [`PodVecWay`]: `Vec<E>` where `E: Pod` (numbers, arrays of them, `#[derive(Pod)]`
//!    structs): each vector travels as its length and its bytes, one copy each way, and as a
//!    block of the pool message, moved without a copy, when it is at least
//!    [`BLOCK_MIN`](super::BLOCK_MIN) bytes (whatever its elements' alignment: a block keeps
//!    it, see [`Block`]).
//! 2. [`PodItemWay`]: `T: Pod` itself (a number, an array, a `Pod` struct: `map` over such
//!    items): a chunk of them is their bytes in memory, one copy each way.
//! 3. [`SerdeWay`]: anything else; the worker's values travel through the carrier chosen from
//!    the syntax ([`Chosen`]'s `C`).
//!
//! Types without a size (`()`, `[u8; 0]`) take serde's way: a count of them is not in their
//! bytes.
//!
//! Decoding is of bytes another process sent: every length is checked against the bytes that
//! came, nothing is allocated beyond them, a vector is decoded into a fresh vector of its own
//! type (so aligned for it, whatever the alignment of the received bytes), and a length that
//! is not a whole number of values, a block that did not come, comes twice or has the wrong
//! length is a [`Codec`](ErrorKind::Codec) error. Both ends run the same build on the same
//! machine (the bootstrap checks it), so the bytes are in native order.

use std::marker::PhantomData;
use std::mem::size_of;

use bytemuck::Pod;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{check_raw, one, reserve_raw, Carrier, Stash, BLOCK_MIN};
use crate::block::Block;
use crate::error::{Error, ErrorKind, Result};
use crate::{spare, sys, wire};

/// The side of a worker a [`Choice`] is about: its arguments. Not public API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct ArgsSide;

/// The side of a worker a [`Choice`] is about: its result. Not public API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct OutputSide;

/// How a worker's values of type `T` on side `S` travel, as the type checker found out:
/// implemented by `#[process]` on the worker's struct with a [`Probe`]. Not public API.
#[doc(hidden)]
pub trait Choice<S, T> {
    /// The way found.
    fn way() -> Way<T>;
}

/// How values of type `T` travel: as plain old data, or through serde (`None`). Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Way<T>(Option<PodWay<T>>);

impl<T> Clone for Way<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Way<T> {}

/// The functions of one way of plain old data.
#[derive(Debug)]
struct PodWay<T> {
    /// Whether a slice of values encodes in place (the values are themselves plain old data).
    in_place: bool,
    encode: fn(Vec<T>, &mut Stash) -> Result<Vec<u8>>,
    encode_slice: fn(&[T]) -> Result<Vec<u8>>,
    decode_into: DecodeInto<T>,
    /// One value at a time, when the values are themselves plain old data.
    item: Option<Item<T>>,
    /// One vector of several arguments, when the values are vectors of plain old data.
    slot: Option<Slot<T>>,
}

/// A vector of plain old data that is one of several arguments ([`Split`]): moved out of its
/// place (an empty vector left there) as its head and bytes, and back.
#[derive(Debug)]
struct Slot<T> {
    take: fn(&mut T, &mut Stash, &mut Vec<u8>),
    put: PutVec<T>,
}

/// Puts the vector whose head begins a run of bytes in its place, taking its block from a
/// message's; returns the bytes it took.
type PutVec<T> = fn(&mut T, &[u8], &mut [Option<Block>]) -> Result<usize>;

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Slot<T> {}

/// One value that is plain old data: its size, and its bytes each way.
#[derive(Debug)]
struct Item<T> {
    size: usize,
    read: fn(&[u8]) -> T,
    push: fn(&T, &mut Vec<u8>),
}

impl<T> Clone for Item<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Item<T> {}

/// Decodes a payload and its blocks onto the end of a list.
type DecodeInto<T> = fn(&[u8], Vec<Block>, &mut Vec<T>) -> Result<()>;

impl<T> Clone for PodWay<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for PodWay<T> {}

/// The type a [`Choice`] is about, for autoref specialization (see the module docs). Not
/// public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Probe<T>(PhantomData<fn() -> T>);

impl<T> Probe<T> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Probe<T> {
        Probe(PhantomData)
    }
}

/// The first choice: vectors of plain old data. Not public API.
#[doc(hidden)]
pub trait PodVecWay {
    type Value;
    fn way(&self) -> Way<Self::Value>;
}

impl<E: Pod> PodVecWay for &&Probe<Vec<E>> {
    type Value = Vec<E>;

    fn way(&self) -> Way<Vec<E>> {
        if size_of::<E>() == 0 {
            return Way(None);
        }
        Way(Some(PodWay {
            in_place: false,
            encode: encode_vecs::<E>,
            encode_slice: |values| encode_vecs::<E>(values.to_vec(), &mut Stash::new(false)),
            decode_into: decode_vecs_into::<E>,
            item: None,
            slot: Some(Slot {
                take: |value, stash, out| put_vec(std::mem::take(value), stash, out),
                put: |value, bytes, blocks| {
                    let (vector, used) = next_vec::<E>(bytes, blocks)?;
                    *value = vector;
                    Ok(used)
                },
            }),
        }))
    }
}

/// The second choice: values that are plain old data. Not public API.
#[doc(hidden)]
pub trait PodItemWay {
    type Value;
    fn way(&self) -> Way<Self::Value>;
}

impl<T: Pod> PodItemWay for &Probe<T> {
    type Value = T;

    fn way(&self) -> Way<T> {
        if size_of::<T>() == 0 {
            return Way(None);
        }
        Way(Some(PodWay {
            in_place: true,
            encode: |values, _stash| encode_items(&values),
            encode_slice: encode_items::<T>,
            decode_into: decode_items_into::<T>,
            item: Some(Item {
                size: size_of::<T>(),
                read: bytemuck::pod_read_unaligned::<T>,
                push: |value, buf| buf.extend_from_slice(bytemuck::bytes_of(value)),
            }),
            slot: None,
        }))
    }
}

/// The last choice: serde. Not public API.
#[doc(hidden)]
pub trait SerdeWay {
    type Value;
    fn way(&self) -> Way<Self::Value>;
}

impl<T> SerdeWay for Probe<T> {
    type Value = T;

    fn way(&self) -> Way<T> {
        Way(None)
    }
}

/// The carrier `#[process]` gives a worker `W` for its side `S`: the [`Way`] its [`Choice`]
/// found for plain old data, or else `C`, the carrier chosen from the types as written.
/// Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Chosen<W, S, C>(PhantomData<(W, S, C)>);

impl<T, W: Choice<S, T>, S, C: Carrier<T>> Carrier<T> for Chosen<W, S, C> {
    type Format = C::Format;

    fn in_place() -> bool {
        match W::way().0 {
            Some(way) => way.in_place,
            None => C::in_place(),
        }
    }

    fn encode(values: Vec<T>, stash: &mut Stash) -> Result<Vec<u8>>
    where
        T: Serialize,
    {
        match W::way().0 {
            Some(way) => (way.encode)(values, stash),
            None => C::encode(values, stash),
        }
    }

    fn encode_slice(values: &[T]) -> Result<Vec<u8>>
    where
        T: Serialize,
    {
        match W::way().0 {
            Some(way) => (way.encode_slice)(values),
            None => C::encode_slice(values),
        }
    }

    fn decode(bytes: &[u8], blocks: Vec<Block>) -> Result<Vec<T>>
    where
        T: DeserializeOwned,
    {
        match W::way().0 {
            Some(way) => {
                let mut out = Vec::new();
                (way.decode_into)(bytes, blocks, &mut out)?;
                Ok(out)
            }
            None => C::decode(bytes, blocks),
        }
    }

    fn decode_into(bytes: &[u8], blocks: Vec<Block>, out: &mut Vec<T>) -> Result<()>
    where
        T: DeserializeOwned,
    {
        match W::way().0 {
            Some(way) => (way.decode_into)(bytes, blocks, out),
            None => C::decode_into(bytes, blocks, out),
        }
    }

    fn decode_chunk_into(
        bytes: &[u8],
        blocks: Vec<Block>,
        out: &mut Vec<T>,
        items: usize,
    ) -> Result<()>
    where
        T: DeserializeOwned,
    {
        match W::way().0 {
            // Counted by their bytes.
            Some(way) => (way.decode_into)(bytes, blocks, out),
            None => C::decode_chunk_into(bytes, blocks, out, items),
        }
    }

    fn decode_each(bytes: &[u8], blocks: Vec<Block>, each: impl FnMut(T)) -> Result<()>
    where
        T: DeserializeOwned,
    {
        match W::way().0 {
            Some(PodWay {
                item: Some(item), ..
            }) => {
                check_raw::<T>(bytes.len(), item.size, &blocks)?;
                bytes.chunks_exact(item.size).map(item.read).for_each(each);
                Ok(())
            }
            Some(way) => {
                let mut out = Vec::new();
                (way.decode_into)(bytes, blocks, &mut out)?;
                out.into_iter().for_each(each);
                Ok(())
            }
            None => C::decode_each(bytes, blocks, each),
        }
    }

    fn decode_fold<St>(
        bytes: &[u8],
        blocks: Vec<Block>,
        state: &mut St,
        mut each: impl FnMut(&mut St, T),
    ) -> Result<()>
    where
        T: DeserializeOwned,
    {
        match W::way().0 {
            Some(_) => Self::decode_each(bytes, blocks, |value| each(state, value)),
            None => C::decode_fold(bytes, blocks, state, each),
        }
    }

    fn reads_each() -> bool {
        match W::way().0 {
            Some(way) => way.item.is_some(),
            None => C::reads_each(),
        }
    }

    fn streams() -> bool {
        match W::way().0 {
            Some(way) => way.item.is_some(),
            None => C::streams(),
        }
    }

    #[inline]
    fn start(buf: &mut Vec<u8>) {
        if W::way().0.is_none() {
            C::start(buf);
        }
    }

    #[inline]
    fn push(value: &T, buf: &mut Vec<u8>) -> Result<()>
    where
        T: Serialize,
    {
        match W::way().0 {
            Some(PodWay {
                item: Some(item), ..
            }) => {
                (item.push)(value, buf);
                Ok(())
            }
            Some(_) => Err(Error::new(
                ErrorKind::Codec,
                "vectors of plain old data are not encoded one at a time",
            )),
            None => C::push(value, buf),
        }
    }

    #[inline]
    fn end(buf: &mut [u8], start: usize, count: usize) {
        if W::way().0.is_none() {
            C::end(buf, start, count);
        }
    }

    fn encode_one(value: T) -> Result<Vec<u8>>
    where
        T: Serialize,
    {
        match W::way().0 {
            Some(way) => (way.encode)(vec![value], &mut Stash::new(false)),
            None => C::encode_one(value),
        }
    }

    fn decode_one(bytes: &[u8]) -> Result<T>
    where
        T: DeserializeOwned,
    {
        match W::way().0 {
            Some(way) => {
                let mut out = Vec::with_capacity(1);
                (way.decode_into)(bytes, Vec::new(), &mut out)?;
                one(out)
            }
            None => C::decode_one(bytes),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Several arguments: their vectors of plain old data beside the rest

/// The side of a worker a [`Choice`] is about: its argument number `N` of several. Not public
/// API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Arg<const N: usize>;

/// The carrier of two or more arguments (a tuple of them) in format `F`, each argument that
/// the worker `W`'s [`Choice`] of side [`Arg<N>`] finds a vector of plain old data carried as
/// its bytes (a block when large bytes), the rest through serde. Not public API.
///
/// A payload is the serde encoding of the chunk's tuples with those vectors left empty (its
/// length first, as a `u64`; zeroes after it up to a multiple of 16 bytes), then each such
/// vector's head and bytes in turn ([`HEAD`]), tuple by tuple and argument by argument. Its
/// impls ask nothing of the arguments' types but the `Choice`s `#[process]` writes for them:
/// an argument that is not serde data is reported once, on the worker's `Args`.
#[doc(hidden)]
#[derive(Debug)]
pub struct Split<W, F = crate::codec::Compact>(PhantomData<(W, F)>);

/// The slot of argument `N` of type `T`, when it is a vector of plain old data.
#[inline]
fn slot<W: Choice<Arg<N>, T>, const N: usize, T>() -> Option<Slot<T>> {
    W::way().0.and_then(|way| way.slot)
}

macro_rules! split_tuples {
    ($(($($t:ident $i:tt),+))*) => {$(
        impl<W, F: crate::codec::Format, $($t),+> Carrier<($($t,)+)> for Split<W, F>
        where
            $(W: Choice<Arg<$i>, $t>,)+
        {
            type Format = F;

            fn in_place() -> bool {
                false
            }

            fn encode(mut values: Vec<($($t,)+)>, stash: &mut Stash) -> Result<Vec<u8>>
            where
                ($($t,)+): Serialize,
            {
                if true $(&& slot::<W, $i, $t>().is_none())+ {
                    return Ok(split_payload(F::encode_seq(values.as_slice())?, &[]));
                }
                let mut runs = Vec::new();
                for value in &mut values {
                    $(if let Some(slot) = slot::<W, $i, $t>() {
                        (slot.take)(&mut value.$i, stash, &mut runs);
                    })+
                }
                Ok(split_payload(F::encode_seq(values.as_slice())?, &runs))
            }

            fn encode_slice(_values: &[($($t,)+)]) -> Result<Vec<u8>>
            where
                ($($t,)+): Serialize,
            {
                Err(Error::new(
                    ErrorKind::Codec,
                    "several arguments are encoded from a `Vec`, not in place",
                ))
            }

            fn decode(bytes: &[u8], blocks: Vec<Block>) -> Result<Vec<($($t,)+)>>
            where
                ($($t,)+): serde::de::DeserializeOwned,
            {
                let (serde, runs) = split_parts(bytes)?;
                // A chunk, as `encode_seq` wrote it (its sequence counts no level).
                let mut values: Vec<($($t,)+)> = Vec::new();
                F::decode_seq_into(serde, &mut values)?;
                let count = blocks.len();
                let mut blocks: Vec<Option<Block>> = blocks.into_iter().map(Some).collect();
                let mut at = 0;
                for value in &mut values {
                    $(if let Some(slot) = slot::<W, $i, $t>() {
                        at += (slot.put)(&mut value.$i, &runs[at..], &mut blocks)?;
                    })+
                }
                if at != runs.len() {
                    return Err(Error::new(
                        ErrorKind::Codec,
                        format!("{} bytes after the vectors of the arguments", runs.len() - at),
                    ));
                }
                unused_blocks::<u8>(&blocks, count)?;
                Ok(values)
            }
        }
    )*};
}

split_tuples! {
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4)
    (A 0, B 1, C 2, D 3, E 4, G 5)
    (A 0, B 1, C 2, D 3, E 4, G 5, H 6)
    (A 0, B 1, C 2, D 3, E 4, G 5, H 6, I 7)
    (A 0, B 1, C 2, D 3, E 4, G 5, H 6, I 7, J 8)
    (A 0, B 1, C 2, D 3, E 4, G 5, H 6, I 7, J 8, K 9)
    (A 0, B 1, C 2, D 3, E 4, G 5, H 6, I 7, J 8, K 9, L 10)
    (A 0, B 1, C 2, D 3, E 4, G 5, H 6, I 7, J 8, K 9, L 10, M 11)
}

/// A [`Split`] payload: the length of `serde`, `serde`, zeroes up to a multiple of [`HEAD`],
/// then `runs`.
fn split_payload(serde: Vec<u8>, runs: &[u8]) -> Vec<u8> {
    let head = 8 + serde.len();
    let size = head + padding(head) + runs.len();
    let mut out = spare::take_or_new(size);
    out.extend_from_slice(&(serde.len() as u64).to_ne_bytes());
    out.extend_from_slice(&serde);
    out.extend_from_slice(&[0; HEAD][..padding(head)]);
    out.extend_from_slice(runs);
    spare::give(serde);
    out
}

/// The serde part and the runs of a [`Split`] payload.
fn split_parts(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let corrupt = |what: String| {
        Error::new(
            ErrorKind::Codec,
            format!("cannot decode several arguments: {what}"),
        )
    };
    let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(corrupt(format!(
            "{} bytes where a length belongs",
            bytes.len()
        )));
    };
    let len = u64::from_ne_bytes(*len);
    let serde = usize::try_from(len)
        .ok()
        .and_then(|len| rest.get(..len))
        .ok_or_else(|| {
            corrupt(format!(
                "a length of {len}, of which {} bytes came",
                rest.len()
            ))
        })?;
    let head = 8 + serde.len();
    let runs = bytes
        .get(head + padding(head)..)
        .ok_or_else(|| corrupt("the padding after the serde part is cut short".to_string()))?;
    Ok((serde, runs))
}

// ---------------------------------------------------------------------------------------------
// Values that are plain old data: their bytes, one after the other

/// A slice of values as their bytes in memory: one copy.
pub(crate) fn encode_items<T: Pod>(values: &[T]) -> Result<Vec<u8>> {
    let bytes: &[u8] = bytemuck::cast_slice(values);
    let mut buffer = spare::take_or_new(bytes.len());
    buffer.extend_from_slice(bytes);
    Ok(buffer)
}

/// Decodes what [`encode_items`] made onto the end of `out` (left as it was on error).
pub(crate) fn decode_items_into<T: Pod>(
    bytes: &[u8],
    blocks: Vec<Block>,
    out: &mut Vec<T>,
) -> Result<()> {
    reserve_raw(out, bytes.len(), size_of::<T>(), &blocks)?;
    match bytemuck::try_cast_slice::<u8, T>(bytes) {
        // A received buffer is aligned for most types (the allocator's alignment): one copy.
        Ok(values) => out.extend_from_slice(values),
        Err(_) => {
            // Room was made above: no allocation here. Zeroes first, then the bytes over
            // them (a copy from any alignment).
            let start = out.len();
            out.resize(start + bytes.len() / size_of::<T>(), T::zeroed());
            bytemuck::cast_slice_mut::<T, u8>(&mut out[start..]).copy_from_slice(bytes);
        }
    }
    Ok(())
}

/// Decodes what [`encode_items`] made, handing each value to `each` once the whole run is known
/// to be whole values.
pub(crate) fn decode_items_each<T: Pod>(
    bytes: &[u8],
    blocks: Vec<Block>,
    each: impl FnMut(T),
) -> Result<()> {
    check_raw::<T>(bytes.len(), size_of::<T>(), &blocks)?;
    bytes
        .chunks_exact(size_of::<T>())
        .map(bytemuck::pod_read_unaligned::<T>)
        .for_each(each);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Vectors of plain old data: a head and the bytes, or a block

/// Each vector's head: its length in bytes, then [`INLINE`] (its bytes follow, and zeroes up
/// to a multiple of [`HEAD`] bytes) or the index of the block that carries them. Both `u64`,
/// native order. A received payload is aligned for 16 bytes (the allocator's alignment), so
/// with the padding every inline run is too: it is copied into its vector in one `memcpy`.
const HEAD: usize = 16;

/// The zeroes after an inline run of `len` bytes.
fn padding(len: usize) -> usize {
    (HEAD - len % HEAD) % HEAD
}

/// The head's second word when the bytes follow it.
const INLINE: u64 = u64::MAX;

/// Whether a vector of `E`s of `len` bytes is moved into a block (without a copy, whatever
/// its alignment: see [`Block`]): when the stash takes them and it is large.
fn as_block<E: Pod>(len: usize, stash: &Stash) -> bool {
    size_of::<E>() != 0
        && len >= BLOCK_MIN
        && stash
            .blocks
            .as_ref()
            .is_some_and(|blocks| blocks.len() < u32::MAX as usize)
}

/// Encodes vectors of plain old data (see [`HEAD`]).
pub(crate) fn encode_vecs<E: Pod>(values: Vec<Vec<E>>, stash: &mut Stash) -> Result<Vec<u8>> {
    let size = values
        .iter()
        .map(|v| {
            let len = size_of::<E>() * v.len();
            HEAD + if as_block::<E>(len, stash) {
                0
            } else {
                len + padding(len)
            }
        })
        .sum();
    let mut out = spare::take_or_new(size);
    if size >= wire::HUGE_PAGES_FROM {
        sys::advise_huge_pages(out.spare_capacity_mut());
    }
    for value in values {
        put_vec(value, stash, &mut out);
    }
    Ok(out)
}

/// Appends one vector's head and bytes to `out`, or its head alone and the vector to the
/// stash's blocks.
fn put_vec<E: Pod>(mut value: Vec<E>, stash: &mut Stash, out: &mut Vec<u8>) {
    let len = size_of::<E>() * value.len();
    out.extend_from_slice(&(len as u64).to_ne_bytes());
    let block = as_block::<E>(len, stash);
    if let Some(blocks) = stash.blocks.as_mut().filter(|_| block) {
        match Block::from_vec(value) {
            Ok(moved) => {
                out.extend_from_slice(&(blocks.len() as u64).to_ne_bytes());
                blocks.push(moved);
                return;
            }
            // Elements without a size (not taken as blocks): inline.
            Err(back) => value = back,
        }
    }
    out.extend_from_slice(&INLINE.to_ne_bytes());
    out.extend_from_slice(bytemuck::cast_slice(&value));
    out.extend_from_slice(&[0; HEAD][..padding(len)]);
}

/// Decodes what [`encode_vecs`] made onto the end of `out` (left as it was on error): every
/// block must be taken, once.
pub(crate) fn decode_vecs_into<E: Pod>(
    bytes: &[u8],
    blocks: Vec<Block>,
    out: &mut Vec<Vec<E>>,
) -> Result<()> {
    let block_count = blocks.len();
    let mut blocks: Vec<Option<Block>> = blocks.into_iter().map(Some).collect();
    let mut values = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (value, used) = next_vec::<E>(rest, &mut blocks)?;
        values.push(value);
        rest = &rest[used..];
    }
    unused_blocks::<E>(&blocks, block_count)?;
    out.try_reserve(values.len())
        .map_err(|_| vecs_error::<E>(format!("no room for {} vectors", values.len())))?;
    out.append(&mut values);
    Ok(())
}

/// A decoding error of vectors of `E`s that says `what`.
#[cold]
fn vecs_error<E>(what: String) -> Error {
    let name = std::any::type_name::<E>();
    Error::new(
        ErrorKind::Codec,
        format!("cannot decode a `Vec<{name}>`: {what}"),
    )
}

/// An error when some of the `count` blocks that came were not taken.
fn unused_blocks<E>(blocks: &[Option<Block>], count: usize) -> Result<()> {
    match blocks.iter().filter(|b| b.is_some()).count() {
        0 => Ok(()),
        unused => Err(vecs_error::<E>(format!(
            "{unused} of the {count} byte blocks that came belong to no vector"
        ))),
    }
}

/// The vector whose head begins `bytes`, and the bytes it took there (its head, and its bytes
/// and their padding when inline); its block is taken from `blocks`.
fn next_vec<E: Pod>(bytes: &[u8], blocks: &mut [Option<Block>]) -> Result<(Vec<E>, usize)> {
    let corrupt = vecs_error::<E>;
    let Some((head, tail)) = bytes.split_first_chunk::<HEAD>() else {
        return Err(corrupt(format!(
            "{} bytes where a head of {HEAD} belongs",
            bytes.len()
        )));
    };
    let [len, at]: [u64; 2] = bytemuck::cast(*head);
    let Ok(len) = usize::try_from(len) else {
        return Err(corrupt(format!("a length of {len} bytes")));
    };
    if !len.is_multiple_of(size_of::<E>()) {
        return Err(corrupt(format!(
            "a length of {len} bytes, not a multiple of {}",
            size_of::<E>()
        )));
    }
    if at == INLINE {
        let padded = len.saturating_add(padding(len));
        let Some(run) = tail.get(..padded) else {
            return Err(corrupt(format!(
                "a length of {len} bytes (padded to {padded}), of which {} came",
                tail.len()
            )));
        };
        return Ok((copied::<E>(&run[..len])?, HEAD + padded));
    }
    let block = usize::try_from(at)
        .ok()
        .and_then(|at| blocks.get_mut(at))
        .and_then(Option::take)
        .ok_or_else(|| {
            corrupt(format!(
                "byte block #{at} did not come with the message, or came for two vectors"
            ))
        })?;
    if block.len() != len {
        return Err(corrupt(format!(
            "byte block #{at} has {} bytes, its head says {len}",
            block.len()
        )));
    }
    Ok((from_block::<E>(block)?, HEAD))
}

/// A fresh vector of `E`s (aligned for them) with a copy of `run`, whose length is a multiple
/// of their size: one `memcpy` when `run` is aligned for them, into huge pages when large.
fn copied<E: Pod>(run: &[u8]) -> Result<Vec<E>> {
    let count = run.len() / size_of::<E>();
    let mut values: Vec<E> = Vec::new();
    values.try_reserve_exact(count).map_err(|_| {
        Error::new(
            ErrorKind::Codec,
            format!(
                "cannot make room for {count} `{}`s",
                std::any::type_name::<E>()
            ),
        )
    })?;
    if run.len() >= wire::HUGE_PAGES_FROM {
        sys::advise_huge_pages(values.spare_capacity_mut());
    }
    match bytemuck::try_cast_slice::<u8, E>(run) {
        Ok(aligned) => values.extend_from_slice(aligned),
        Err(_) => {
            values.resize(count, E::zeroed());
            bytemuck::cast_slice_mut::<E, u8>(&mut values).copy_from_slice(run);
        }
    }
    Ok(values)
}

/// The vector a block carries: the block itself when it was made for `E`s (see
/// [`Block::into_vec`]), a copy otherwise.
fn from_block<E: Pod>(block: Block) -> Result<Vec<E>> {
    match block.into_vec::<E>() {
        Ok(values) => Ok(values),
        Err(block) => copied(&block),
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::*;
    use crate::carrier::{
        decode_chunk, decode_one, encode_chunk, encode_chunks, encode_one, Plain,
    };
    use crate::handle::Encoded;

    /// Plain old data whose serde impls fail: a value that arrives took the bytes' way.
    #[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Point {
        x: f64,
        y: u32,
        tag: [u8; 4],
    }

    impl Serialize for Point {
        fn serialize<S: Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("serde was asked"))
        }
    }

    impl<'de> Deserialize<'de> for Point {
        fn deserialize<D: Deserializer<'de>>(_: D) -> std::result::Result<Point, D::Error> {
            Err(serde::de::Error::custom("serde was asked"))
        }
    }

    fn point(i: u32) -> Point {
        Point {
            x: f64::from(i) * 0.5,
            y: i,
            tag: [i as u8; 4],
        }
    }

    type Points = Vec<Point>;

    /// What `#[process]` writes for a worker, here for one type at a time.
    struct Worker;

    macro_rules! choose {
        ($($t:ty),*) => {$(
            impl Choice<ArgsSide, $t> for Worker {
                fn way() -> Way<$t> {
                    #[allow(unused_imports)]
                    use super::{PodItemWay as _, PodVecWay as _, SerdeWay as _};
                    (&&&Probe::<$t>::new()).way()
                }
            }
        )*};
    }

    choose!(
        Four,
        Points,
        Point,
        Vec<f64>,
        Vec<u8>,
        Vec<[u8; 3]>,
        [u16; 3],
        String,
        (),
        Vec<()>
    );

    type Via<T> = Chosen<Worker, ArgsSide, T>;

    fn kind<T>() -> &'static str
    where
        Worker: Choice<ArgsSide, T>,
    {
        match <Worker as Choice<ArgsSide, T>>::way().0 {
            None => "serde",
            Some(way) if way.in_place => "items",
            Some(_) => "vectors",
        }
    }

    macro_rules! choose_arg {
        ($($n:literal $t:ty),*) => {$(
            impl Choice<Arg<$n>, $t> for Worker {
                fn way() -> Way<$t> {
                    #[allow(unused_imports)]
                    use super::{PodItemWay as _, PodVecWay as _, SerdeWay as _};
                    (&&&Probe::<$t>::new()).way()
                }
            }
        )*};
    }

    choose_arg!(0 Points, 1 u32, 2 Vec<u8>, 3 String);

    /// Four arguments, as `#[process]` carries them.
    type Four = (Points, u32, Vec<u8>, String);

    fn four(i: u32) -> Four {
        (
            (0..i * 10).map(point).collect(),
            i,
            vec![i as u8; if i % 2 == 1 { BLOCK_MIN } else { 3 }],
            i.to_string(),
        )
    }

    #[test]
    fn large_vectors_of_any_alignment_are_blocks_moved_both_ways() {
        let floats: Vec<f64> = (0..BLOCK_MIN).map(|i| i as f64).collect();
        let values = vec![floats.clone(), vec![1.5; 3]];
        let sent_at = values[0].as_ptr();
        let encoded = encode_chunk::<_, Via<Plain>>(values).unwrap();
        // The large one is a block (its own allocation, moved), the small one inline.
        assert_eq!(encoded.blocks.len(), 1);
        assert_eq!(encoded.blocks[0].as_ptr(), sent_at.cast::<u8>());
        assert_eq!(encoded.blocks[0].align(), 8);
        let back = decode_chunk::<Vec<f64>, Via<Plain>>(encoded).unwrap();
        assert_eq!(back, vec![floats, vec![1.5; 3]]);
        assert_eq!(back[0].as_ptr(), sent_at, "moved, not copied");
    }

    #[test]
    fn several_arguments_carry_their_vectors_of_plain_old_data_as_bytes() {
        type Carried = Chosen<Worker, ArgsSide, Split<Worker>>;
        let values: Vec<Four> = (0..4).map(four).collect();
        let encoded = encode_chunk::<_, Split<Worker>>(values.clone()).unwrap();
        // The points went without serde (their serde impls fail); the two large byte vectors
        // are blocks, moved.
        assert_eq!(encoded.blocks.len(), 2);
        let ptr = encoded.blocks[1].as_ptr();
        let back = decode_chunk::<Four, Split<Worker>>(encoded).unwrap();
        assert_eq!(back, values);
        assert_eq!(back[3].2.as_ptr(), ptr, "moved, not copied");
        // One value (a process's arguments): inline; and the same under `Chosen`, as the
        // macro writes it (a tuple is not plain old data itself).
        let one = encode_one::<_, Split<Worker>>(values[1].clone()).unwrap();
        assert!(one.blocks.is_empty());
        assert_eq!(decode_one::<Four, Carried>(&one.bytes).unwrap(), values[1]);
        // msgpack for the rest.
        let encoded =
            encode_chunk::<_, Split<Worker, crate::codec::SelfDescribing>>(values.clone()).unwrap();
        let back =
            decode_chunk::<Four, Split<Worker, crate::codec::SelfDescribing>>(encoded).unwrap();
        assert_eq!(back, values);
        // Empty.
        let encoded = encode_chunk::<Four, Split<Worker>>(Vec::new()).unwrap();
        assert!(decode_chunk::<Four, Split<Worker>>(encoded)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn corrupt_arguments_are_codec_errors() {
        let values: Vec<Four> = (0..3).map(four).collect();
        let Encoded { bytes, blocks, .. } =
            encode_chunk::<_, Split<Worker>>(values.clone()).unwrap();
        let decode = |bytes: &[u8], blocks: Vec<Block>| {
            Split::<Worker>::decode(bytes, blocks) as Result<Vec<Four>>
        };
        assert_eq!(decode(&bytes, blocks.clone()).unwrap(), values);
        // Every cut, with and without the blocks.
        for cut in 0..bytes.len() {
            let err = decode(&bytes[..cut], blocks.clone()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Codec, "cut at {cut}");
            assert!(decode(&bytes[..cut], Vec::new()).is_err());
        }
        // Trailing bytes, a missing block, a block too many, a length beyond the bytes.
        let err = decode(&[&bytes[..], &[0; 16]].concat(), blocks.clone()).unwrap_err();
        assert!(err.to_string().contains("16 bytes after"), "{err}");
        let err = decode(&bytes, Vec::new()).unwrap_err();
        assert!(err.to_string().contains("did not come"), "{err}");
        let mut more = blocks.clone();
        more.push(Block::from(vec![1]));
        let err = decode(&bytes, more).unwrap_err();
        assert!(err.to_string().contains("belong to no vector"), "{err}");
        let mut long = bytes.clone();
        long[..8].copy_from_slice(&u64::MAX.to_ne_bytes());
        let err = decode(&long, blocks.clone()).unwrap_err();
        assert!(
            err.to_string().contains("cannot decode several arguments"),
            "{err}"
        );
        // Any byte changed: decoded or an error, never a panic.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0xa5;
            let _ = decode(&bad, blocks.clone());
        }
    }

    #[test]
    fn the_type_checker_chooses_through_aliases() {
        assert_eq!(kind::<Points>(), "vectors");
        assert_eq!(kind::<Vec<f64>>(), "vectors");
        assert_eq!(kind::<Vec<[u8; 3]>>(), "vectors");
        assert_eq!(kind::<Point>(), "items");
        assert_eq!(kind::<[u16; 3]>(), "items");
        assert_eq!(kind::<String>(), "serde");
        // Nothing to count without a size: serde.
        assert_eq!(kind::<()>(), "serde");
        assert_eq!(kind::<Vec<()>>(), "serde");
    }

    #[test]
    fn pod_vectors_and_items_round_trip_without_serde() {
        let values: Vec<Points> = vec![(0..1000).map(point).collect(), Vec::new(), vec![point(7)]];
        let encoded = encode_chunk::<_, Via<Plain>>(values.clone()).unwrap();
        // A head each, and 16 bytes a point.
        assert_eq!(encoded.bytes.len(), 3 * HEAD + 1001 * size_of::<Point>());
        assert_eq!(decode_chunk::<Points, Via<Plain>>(encoded).unwrap(), values);

        let one = encode_one::<_, Via<Plain>>(values[0].clone()).unwrap();
        assert_eq!(
            decode_one::<Points, Via<Plain>>(&one.bytes).unwrap(),
            values[0]
        );

        let items: Vec<Point> = (0..100).map(point).collect();
        let mut chunks = Vec::new();
        encode_chunks::<_, Via<Plain>>(items.clone(), 30, |_, e| {
            chunks.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[0].bytes.len(), 30 * size_of::<Point>());
        let back: Vec<Point> = chunks
            .into_iter()
            .flat_map(|e| decode_chunk::<_, Via<Plain>>(e).unwrap())
            .collect();
        assert_eq!(back, items);

        let floats = vec![vec![-0.0, f64::NAN, f64::from_bits(0x7ff0_0000_0000_0001)]];
        let back = decode_chunk::<Vec<f64>, Via<Plain>>(
            encode_chunk::<_, Via<Plain>>(floats.clone()).unwrap(),
        )
        .unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back[0]), bits(&floats[0]));
    }

    #[test]
    fn unaligned_bytes_decode_into_an_aligned_vector() {
        let values = vec![vec![1.5f64, -2.25, 1e300]];
        let encoded = encode_chunk::<_, Via<Plain>>(values.clone()).unwrap();
        // The same bytes one past an aligned address.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&encoded.bytes);
        let mut out: Vec<Vec<f64>> = Vec::new();
        Via::<Plain>::decode_into(&shifted[1..], Vec::new(), &mut out).unwrap();
        assert_eq!(out, values);
        assert!(out[0].as_ptr().is_aligned());

        let items: Vec<Point> = (0..10).map(point).collect();
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(bytemuck::cast_slice(&items));
        let mut out = vec![point(99)];
        Via::<Plain>::decode_into(&shifted[1..], Vec::new(), &mut out).unwrap();
        assert_eq!(out[1..], items[..]);
    }

    #[test]
    fn large_vectors_of_bytes_move_into_blocks_and_back() {
        let big: Vec<[u8; 3]> = vec![[1, 2, 3]; BLOCK_MIN];
        let values = vec![big.clone(), vec![[9, 9, 9]]];
        let encoded = encode_chunk::<_, Via<Plain>>(values.clone()).unwrap();
        assert_eq!(encoded.blocks.len(), 1);
        // The inline triple, padded to 16 bytes.
        assert_eq!(encoded.bytes.len(), 3 * HEAD);
        let ptr = encoded.blocks[0].as_ptr();
        let back = decode_chunk::<Vec<[u8; 3]>, Via<Plain>>(encoded).unwrap();
        assert_eq!(back, values);
        assert_eq!(back[0].as_ptr().cast(), ptr, "moved, not copied");

        let bytes = vec![vec![5u8; 2 * BLOCK_MIN]];
        let encoded = encode_chunk::<_, Via<Plain>>(bytes.clone()).unwrap();
        assert_eq!(encoded.blocks.len(), 1);
        assert_eq!(decode_chunk::<Vec<u8>, Via<Plain>>(encoded).unwrap(), bytes);
        // One value (a process's argument): inline.
        let one = encode_one::<_, Via<Plain>>(bytes[0].clone()).unwrap();
        assert!(one.blocks.is_empty());
        assert_eq!(
            decode_one::<Vec<u8>, Via<Plain>>(&one.bytes).unwrap(),
            bytes[0]
        );
    }

    fn head(len: u64, at: u64) -> Vec<u8> {
        [len.to_ne_bytes(), at.to_ne_bytes()].concat()
    }

    fn decode_error(bytes: &[u8], blocks: Vec<Block>) -> String {
        let mut out = vec![vec![0.0f64]];
        let err = Via::<Plain>::decode_into(bytes, blocks, &mut out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert_eq!(
            out,
            [vec![0.0]],
            "a failed decoding leaves the list as it was"
        );
        err.to_string()
    }

    #[test]
    fn corrupt_or_short_payloads_are_codec_errors() {
        let good = encode_chunk::<_, Via<Plain>>(vec![vec![1.0f64, 2.0]])
            .unwrap()
            .bytes;
        // Every cut of a valid payload.
        for cut in 1..good.len() {
            let text = decode_error(&good[..cut], Vec::new());
            assert!(text.starts_with("cannot decode a `Vec<f64>`"), "{text}");
        }
        let text = decode_error(&[1, 2, 3], Vec::new());
        assert!(
            text.contains("3 bytes where a head of 16 belongs"),
            "{text}"
        );
        let text = decode_error(&head(12, INLINE), Vec::new());
        assert!(text.contains("not a multiple of 8"), "{text}");
        let text = decode_error(&head(1 << 62, INLINE), Vec::new());
        assert!(text.contains("of which 0 came"), "{text}");
        let text = decode_error(&head(u64::MAX - 7, INLINE), Vec::new());
        assert!(text.contains("came"), "{text}");
        // Blocks: missing, taken twice, of the wrong length, or left over.
        let text = decode_error(&head(8, 0), Vec::new());
        assert!(text.contains("byte block #0 did not come"), "{text}");
        let twice = [head(8, 0), head(8, 0)].concat();
        let text = decode_error(&twice, vec![Block::from(vec![0; 8])]);
        assert!(text.contains("came for two vectors"), "{text}");
        let text = decode_error(&head(16, 0), vec![Block::from(vec![0; 8])]);
        assert!(text.contains("has 8 bytes, its head says 16"), "{text}");
        let text = decode_error(&good, vec![Block::from(vec![0; 8])]);
        assert!(text.contains("1 of the 1 byte blocks"), "{text}");
        // Items: not a whole number of them; one value where there are two or none.
        let mut out: Vec<Point> = Vec::new();
        let err = Via::<Plain>::decode_into(&[0u8; 25], Vec::new(), &mut out).unwrap_err();
        assert!(err.to_string().contains("not a multiple of 16"), "{err}");
        assert!(out.is_empty());
        let err = decode_one::<Point, Via<Plain>>(&[0u8; 32]).unwrap_err();
        assert!(err.to_string().contains("2 encoded values"), "{err}");
        let err = decode_one::<Point, Via<Plain>>(&[]).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let err = decode_one::<Points, Via<Plain>>(&[]).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn any_bytes_decode_or_fail_without_a_panic() {
        // A cheap sweep of what the fuzz target (`carrier-pod`) explores further.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = (next() % 80) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 16 && next() % 2 == 0 {
                // A plausible head: a small length, inline or a block.
                let small = next() % 40;
                let at = if next() % 2 == 0 { INLINE } else { next() % 3 };
                bytes[..16].copy_from_slice(&head(small, at));
            }
            let blocks: Vec<Block> = (0..next() % 3)
                .map(|i| Block::from(vec![1; i as usize * 8]))
                .collect();
            let _ = Via::<Plain>::decode(&bytes, blocks.clone()) as Result<Vec<Vec<f64>>>;
            let _ = Via::<Plain>::decode(&bytes, blocks.clone()) as Result<Vec<Vec<[u8; 3]>>>;
            let _ = Via::<Plain>::decode(&bytes, blocks) as Result<Vec<Point>>;
            let _ = decode_one::<Vec<u8>, Via<Plain>>(&bytes);
        }
        let _ = decode_chunk::<Vec<f64>, Via<Plain>>(Encoded::default()).unwrap();
    }
}
