//! A decoder of the default codec's format (bincode's: little-endian, fixed-width integers,
//! lengths as `u64`), over a slice: for the values of workers and every other message.
//!
//! bincode 2 reads each number through its `Decoder` (a reader, a limit claimed per read, an
//! error type of some 40 bytes returned by value), which profiling showed to be most of the
//! time of a `map` over serde structs: `Vec<T>`'s visitor spent it in `deserialize_u64`. This
//! decoder reads the same bytes with a slice split per value and a small error, and hands the
//! visitors what bincode hands them (`visit_string`, `visit_byte_buf`, `visit_u64` ...), so a
//! type decodes to the same value or fails. Nothing is allocated from a length before the
//! bytes it counts were found in the input (strings and byte buffers are copied out of it), so
//! a corrupt length is an error, never an abort.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};

/// Why a value did not decode (`fixed`) or encode (`write`).
#[derive(Debug)]
pub(crate) enum Wrong {
    /// The input ended where `need` more bytes belong.
    Short { need: usize, left: usize },
    /// A `bool` that is neither 0 nor 1.
    Bool(u8),
    /// An `Option`'s tag that is neither 0 nor 1.
    Option(u8),
    /// Bytes that are not a UTF-8 character or string.
    Utf8,
    /// A length beyond the address space.
    Length(u64),
    /// The values in one input that took no bytes went past [`FREE_WORK`]: a forged length
    /// of a sequence of them (which would take for ever to make).
    Free,
    /// A chunk of `len` values where `items` belong.
    Count { len: usize, items: usize },
    /// The type asked what comes next (`deserialize_any` and friends).
    NotSelfDescribing(&'static str),
    /// Encoding (`write`): a sequence or map without a length up front.
    LengthUnknown,
    /// Encoding (`write`): a struct field left out (`skip_serializing_if`).
    Skipped,
    /// Values nested deeper than [`MAX_DEPTH`].
    Deep,
    /// A `Serialize` or `Deserialize` impl's own error.
    Custom(String),
}

impl fmt::Display for Wrong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wrong::Short { need, left } => write!(
                f,
                "the input ends early: {need} more bytes belong here, {left} are left"
            ),
            Wrong::Bool(b) => write!(f, "{b} is not a bool (0 or 1)"),
            Wrong::Option(b) => write!(f, "{b} is not an option's tag (0 or 1)"),
            Wrong::Utf8 => f.write_str("the bytes of a string or char are not UTF-8"),
            Wrong::Length(n) => write!(f, "a length of {n} is beyond the address space"),
            Wrong::Free => write!(
                f,
                "more values that take no bytes than a message may hold ({} of a type without \
                 a size, {} MiB of others): a corrupt or forged length",
                FREE_WORK / 8,
                FREE_WORK >> 20
            ),
            Wrong::Count { len, items } => write!(f, "{len} values where {items} belong"),
            Wrong::NotSelfDescribing(what) => write!(f, "`{what}` is not supported"),
            Wrong::LengthUnknown => f.write_str("a sequence or map of unknown length"),
            Wrong::Skipped => f.write_str("a struct field was skipped"),
            Wrong::Deep => write!(
                f,
                "values nest more than {MAX_DEPTH} deep (each sequence, map, tuple, struct, \
                 enum variant and option is one level): a corrupt message, or a recursive \
                 value, a linked list say, too deep to be decoded without overflowing a stack"
            ),
            Wrong::Custom(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Wrong {}

impl de::Error for Wrong {
    fn custom<T: fmt::Display>(msg: T) -> Wrong {
        Wrong::Custom(msg.to_string())
    }
}

impl serde::ser::Error for Wrong {
    fn custom<T: fmt::Display>(msg: T) -> Wrong {
        Wrong::Custom(msg.to_string())
    }
}

type Result<T> = std::result::Result<T, Wrong>;

/// How much of the values in one input that take no bytes (`()`, a unit struct, a struct of
/// skipped fields) the decoder makes, in sequences and maps whose lengths are read from the
/// input: each costs its size in memory, 8 at least. Any other value takes at least one byte,
/// so the input's length bounds how many there are; these it does not, and a forged length of
/// 2^62 of them would keep the decoder making them for ever, or until memory runs out (a pool's
/// driver thread, say, with every caller waiting on it). Honest ones past it are refused as
/// well: 8M unit values nested in one message, or 64 MiB of structs whose fields are all
/// skipped. A pool's chunk of results, whose number the parent knows, is not counted (see
/// [`decode_seq_into`]).
pub(crate) const FREE_WORK: usize = 1 << 26;

/// How deep values may nest in one message, in levels: each sequence, map, tuple, struct,
/// enum variant and `Some` is one (a linked list of `Option<Box<Node>>`s takes two a node).
///
/// Decoding recurses once a level, in this decoder and in the value's `Deserialize`: a
/// forged message of a million levels (four bytes each) would overflow the receiver's stack
/// and kill it, and so would an honest value as deep (a long linked list), which its sender
/// encoded on a larger stack. Past this depth decoding is an error instead, and encoding
/// too ([`write`](super::write)), so that what is sent can be received. It is the limit of
/// the self-describing codec (`rmp-serde`'s); serde_json's is 128.
pub(crate) const MAX_DEPTH: u32 = 1024;

/// Decodes a `T` from the front of `input`; returns it and the bytes read.
pub(crate) fn decode<'de, T: de::Deserialize<'de>>(input: &'de [u8]) -> Result<(T, usize)> {
    let mut reader = Reader::new(input);
    let value = T::deserialize(&mut reader)?;
    Ok((value, input.len() - reader.input.len()))
}

/// [`decode`] with an allowance of `free` bytes for values that take no bytes instead of
/// [`FREE_WORK`]: for the fuzz harness, where nearly every random input forges a count of them
/// and would cost the whole allowance, some milliseconds each.
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_allowing<'de, T: de::Deserialize<'de>>(
    input: &'de [u8],
    free: usize,
) -> Result<(T, usize)> {
    let mut reader = Reader::new(input);
    reader.free = free;
    let value = T::deserialize(&mut reader)?;
    Ok((value, input.len() - reader.input.len()))
}

/// Decodes a sequence of `T`s (a length, then the values) from the front of `input`, each
/// pushed onto `out` as it is decoded; returns the bytes read. On error the values pushed stay:
/// the caller truncates.
///
/// With `items` (a pool's chunk of results, whose number the parent knows), a longer sequence
/// is refused before anything is decoded, and its own values are not counted against
/// [`FREE_WORK`]: a chunk of 25M `()` results decodes. Without, those past the bytes are.
pub(crate) fn decode_seq_into<T: de::DeserializeOwned>(
    input: &[u8],
    out: &mut Vec<T>,
    items: Option<usize>,
) -> Result<((), usize)> {
    let mut reader = Reader::new(input);
    let len = reader.len()?;
    if let Some(items) = items.filter(|&items| len > items) {
        return Err(Wrong::Count { len, items });
    }
    // Room for as many values as there could be bytes for (a value of a type with a size
    // takes at least one), never for what a corrupt length claims.
    if std::mem::size_of::<T>() > 0 {
        out.reserve(len.min(reader.input.len()));
    }
    // Into the room reserved, each value written in its place and the length set once: a
    // `push` per value stored the length and read it back each time, which cost a third of
    // the decoding of a small struct.
    let start = out.len();
    let mut written = 0;
    let mut failed = None;
    // No more than there are bytes left, for a type without a size too (whose room is
    // unbounded): the rest are counted below.
    let room = (out.capacity() - start).min(reader.input.len());
    for slot in &mut out.spare_capacity_mut()[..room.min(len)] {
        match T::deserialize(&mut reader) {
            Ok(value) => {
                slot.write(value);
                written += 1;
            }
            Err(err) => {
                failed = Some(err);
                break;
            }
        }
    }
    // SAFETY: the first `written` slots of the spare capacity (right after the `start` values)
    // were each written above with a value, in order. (A `Deserialize` that panics skips
    // this: the values written before it leak, and the length stays `start`.)
    unsafe { out.set_len(start + written) };
    if let Some(err) = failed {
        return Err(err);
    }
    // More values than the room reserved (values that encode to no bytes): one at a time,
    // counted unless the caller bounded their number.
    for _ in written..len {
        let value = match items {
            Some(_) => T::deserialize(&mut reader)?,
            None => reader.counted(|r| T::deserialize(r))?,
        };
        out.push(value);
    }
    Ok(((), input.len() - reader.input.len()))
}

/// Decodes a sequence of `T`s (a length, then the values) from the front of `input`, handing
/// each to `each` with `state` as it is decoded; returns the bytes read. On error some values
/// may have been handed on: the caller checks the whole input first (a pass with `drop`) when
/// that matters. Values of a type without a size are not counted against [`FREE_WORK`]: each
/// is a call of `each` (a worker's call of its function on a `()` argument), as many as the
/// chunk holds.
#[inline(never)]
pub(crate) fn decode_seq_each<T: de::DeserializeOwned, S>(
    input: &[u8],
    state: &mut S,
    mut each: impl FnMut(&mut S, T),
) -> Result<((), usize)> {
    let mut reader = Reader::new(input);
    let len = reader.len()?;
    // As many values as there are bytes left take no counting: the input bounds them.
    let bounded = if std::mem::size_of::<T>() == 0 {
        len
    } else {
        len.min(reader.input.len())
    };
    for _ in 0..bounded {
        each(state, T::deserialize(&mut reader)?);
    }
    for _ in bounded..len {
        each(state, reader.counted(|r| T::deserialize(r))?);
    }
    Ok(((), input.len() - reader.input.len()))
}

/// The rest of the input.
struct Reader<'de> {
    input: &'de [u8],
    /// How much more of values that take no bytes may be made (see [`FREE_WORK`]).
    free: usize,
    /// How many more levels values may nest (see [`MAX_DEPTH`]).
    depth: u32,
}

impl<'de> Reader<'de> {
    fn new(input: &'de [u8]) -> Reader<'de> {
        Reader {
            input,
            free: FREE_WORK,
            depth: MAX_DEPTH,
        }
    }

    /// Decodes one level deeper (see [`MAX_DEPTH`]).
    #[inline]
    fn nested<T>(&mut self, decode: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.depth = self.depth.checked_sub(1).ok_or(Wrong::Deep)?;
        let value = decode(self);
        self.depth += 1;
        value
    }

    /// Decodes one element of a sequence or map whose length came from the input, counting it
    /// against [`FREE_WORK`] if it took no bytes.
    #[inline]
    fn counted<T>(&mut self, decode: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let left = self.input.len();
        let value = decode(self)?;
        if self.input.len() == left {
            let cost = std::mem::size_of::<T>().max(8);
            self.free = self.free.checked_sub(cost).ok_or(Wrong::Free)?;
        }
        Ok(value)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        match self.input.split_at_checked(n) {
            Some((head, rest)) => {
                self.input = rest;
                Ok(head)
            }
            None => Err(Wrong::Short {
                need: n,
                left: self.input.len(),
            }),
        }
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        match self.input.split_first_chunk::<N>() {
            Some((head, rest)) => {
                self.input = rest;
                Ok(*head)
            }
            None => Err(Wrong::Short {
                need: N,
                left: self.input.len(),
            }),
        }
    }

    #[inline]
    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    #[inline]
    fn len(&mut self) -> Result<usize> {
        let n = u64::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| Wrong::Length(n))
    }

    /// A length, then as many bytes.
    fn bytes(&mut self) -> Result<&'de [u8]> {
        let len = self.len()?;
        self.take(len)
    }
}

macro_rules! numbers {
    ($($method:ident $visit:ident $t:ty;)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.$visit(<$t>::from_le_bytes(self.array()?))
        }
    )*};
}

impl<'de> Reader<'de> {
    /// The `len` fields of a tuple, struct or enum variant (at the level of their enum's
    /// variant, not one deeper: as [`write`](super::write) counts them).
    fn fields<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Elements {
            reader: self,
            len,
            // A tuple's or struct's length is its type's, but a `Deserialize` of its own may
            // ask for any: a long one is counted as a sequence is.
            counted: len > 64,
        })
    }
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = Wrong;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(Wrong::NotSelfDescribing("deserialize_any"))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.u8()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            b => Err(Wrong::Bool(b)),
        }
    }

    numbers! {
        deserialize_i8 visit_i8 i8;
        deserialize_i16 visit_i16 i16;
        deserialize_i32 visit_i32 i32;
        deserialize_i64 visit_i64 i64;
        deserialize_i128 visit_i128 i128;
        deserialize_u8 visit_u8 u8;
        deserialize_u16 visit_u16 u16;
        deserialize_u32 visit_u32 u32;
        deserialize_u64 visit_u64 u64;
        deserialize_u128 visit_u128 u128;
        deserialize_f32 visit_f32 f32;
        deserialize_f64 visit_f64 f64;
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        // UTF-8, one to four bytes: the first says how many.
        let first = *self
            .input
            .first()
            .ok_or(Wrong::Short { need: 1, left: 0 })?;
        let width = match first {
            0x00..=0x7f => 1,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return Err(Wrong::Utf8),
        };
        let bytes = self.take(width)?;
        let c = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.chars().next())
            .ok_or(Wrong::Utf8)?;
        visitor.visit_char(c)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let bytes = self.bytes()?;
        let s = std::str::from_utf8(bytes).map_err(|_| Wrong::Utf8)?;
        visitor.visit_string(s.to_owned())
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_byte_buf(self.bytes()?.to_vec())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.u8()? {
            0 => visitor.visit_none(),
            1 => self.nested(|r| visitor.visit_some(r)),
            b => Err(Wrong::Option(b)),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.nested(|r| visitor.visit_newtype_struct(r))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.len()?;
        self.nested(|reader| {
            visitor.visit_seq(Elements {
                reader,
                len,
                counted: true,
            })
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        self.nested(|reader| reader.fields(len, visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.len()?;
        self.nested(|reader| {
            visitor.visit_map(Elements {
                reader,
                len,
                counted: true,
            })
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.nested(|r| visitor.visit_enum(r))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(Wrong::NotSelfDescribing("deserialize_identifier"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(Wrong::NotSelfDescribing("deserialize_ignored_any"))
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The elements of a sequence, tuple or struct, or the entries of a map: `len` more.
struct Elements<'a, 'de> {
    reader: &'a mut Reader<'de>,
    len: usize,
    /// Whether `len` came from the input (a sequence or map, not a tuple or struct, whose
    /// length is its type's, unless it is long): then each element that takes no bytes is
    /// counted (see [`Reader::counted`]).
    counted: bool,
}

impl<'de> SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Wrong;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        if self.counted {
            return self.reader.counted(|r| seed.deserialize(r)).map(Some);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        // No more than there are bytes left (serde's own types preallocate at most a megabyte
        // from a hint, others may trust it): a corrupt length costs no more.
        Some(self.len.min(self.reader.input.len()))
    }
}

impl<'de> MapAccess<'de> for Elements<'_, 'de> {
    type Error = Wrong;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        // The entries of a map: each key counted (a key and its value that both take no
        // bytes, a key that does).
        self.reader.counted(|r| seed.deserialize(r)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.reader)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.len.min(self.reader.input.len()))
    }
}

impl<'de> EnumAccess<'de> for &mut Reader<'de> {
    type Error = Wrong;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let index = u32::from_le_bytes(self.array()?);
        let value = seed.deserialize(IntoDeserializer::<Wrong>::into_deserializer(index))?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for &mut Reader<'de> {
    type Error = Wrong;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        self.fields(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.fields(fields.len(), visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        New(i16),
        Tuple(u8, char),
        Struct { name: String, bytes: Vec<u8> },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Everything {
        b: (bool, bool),
        ints: (i8, i16, i32, i64, i128, isize),
        uints: (u8, u16, u32, u64, u128, usize),
        floats: (f32, f64),
        chars: Vec<char>,
        text: String,
        option: (Option<u32>, Option<String>),
        unit: (),
        shapes: Vec<Shape>,
        map: BTreeMap<String, Vec<u64>>,
        array: [u16; 3],
        nested: Vec<Vec<(u8, String)>>,
        #[serde(with = "run_bytes")]
        run: Vec<u8>,
    }

    fn everything() -> Everything {
        Everything {
            b: (true, false),
            ints: (-1, i16::MIN, -3, i64::MIN, i128::MIN, -5),
            uints: (1, u16::MAX, 3, u64::MAX, u128::MAX, 7),
            floats: (-0.0, f64::NAN),
            chars: vec!['a', 'é', '€', '😀', '\0'],
            text: "héllo".into(),
            option: (Some(9), None),
            unit: (),
            shapes: vec![
                Shape::Unit,
                Shape::New(-2),
                Shape::Tuple(3, 'x'),
                Shape::Struct {
                    name: "s".into(),
                    bytes: vec![1, 2],
                },
            ],
            map: [("k".to_string(), vec![1, 2]), (String::new(), Vec::new())].into(),
            array: [1, 2, 3],
            nested: vec![vec![(1, "a".into())], Vec::new()],
            run: vec![0, 255, 7],
        }
    }

    #[test]
    fn decodes_what_bincode_encodes_and_fails_where_it_fails() {
        let value = everything();
        let bytes = crate::codec::encode(&value).unwrap();
        let (back, read) = decode::<Everything>(&bytes).unwrap();
        assert_eq!(read, bytes.len());
        // NaN is not equal to itself: compare its bits, then the rest.
        assert!(back.floats.1.is_nan() && back.floats.0.is_sign_negative());
        let same = |e: &Everything| Everything {
            floats: (0.0, 0.0),
            ..e.clone()
        };
        assert_eq!(same(&back), same(&value));
        // Every cut is an error, for both decoders.
        for cut in 0..bytes.len() {
            assert!(decode::<Everything>(&bytes[..cut]).is_err(), "cut at {cut}");
            assert!(crate::codec::decode_by_bincode::<Everything>(&bytes[..cut]).is_err());
        }
        // Every single byte changed: both decode or both fail, to the same value.
        for i in 0..bytes.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                // Whole inputs: both read to the end or fail (trailing bytes are the
                // caller's error).
                let ours = decode::<Everything>(&bad)
                    .ok()
                    .filter(|(_, n)| *n == bad.len())
                    .map(|(v, _)| same(&v));
                let theirs = crate::codec::decode_by_bincode::<Everything>(&bad)
                    .ok()
                    .map(|v| same(&v));
                assert_eq!(ours, theirs, "byte {i} ^ {flip}");
            }
        }
    }

    #[test]
    fn corrupt_input_is_an_error_that_says_why() {
        let err = decode::<bool>(&[2]).unwrap_err();
        assert_eq!(err.to_string(), "2 is not a bool (0 or 1)");
        let err = decode::<Option<u8>>(&[3, 1]).unwrap_err();
        assert!(err.to_string().contains("option's tag"), "{err}");
        let err = decode::<u64>(&[1, 2, 3]).unwrap_err();
        assert!(err.to_string().contains("8 more bytes"), "{err}");
        let mut absurd = (1u64 << 62).to_le_bytes().to_vec();
        absurd.extend_from_slice(b"abc");
        assert!(decode::<String>(&absurd).is_err());
        assert!(decode::<Vec<u8>>(&absurd).is_err());
        assert!(decode::<char>(&[0xff]).is_err());
        assert!(decode::<char>(&[0xe2, 0x82]).is_err());
        let err = decode::<serde_json_like::Any>(&[0]).unwrap_err();
        assert!(matches!(err, Wrong::NotSelfDescribing(_)), "{err}");
    }

    #[test]
    fn a_chunk_decodes_onto_a_list_or_leaves_it_as_it_was() {
        use crate::codec::{Compact, Format};
        let chunk: Vec<(u64, String)> = (0..100).map(|i| (i, i.to_string())).collect();
        let bytes = Compact::encode(&chunk[..]).unwrap();
        let mut out = vec![(7, "seven".to_string())];
        Compact::decode_seq_into(&bytes, &mut out).unwrap();
        assert_eq!(out.len(), 101);
        assert_eq!(out[1..], chunk[..]);
        for cut in [0, 1, 8, 9, bytes.len() / 2, bytes.len() - 1] {
            let err = Compact::decode_seq_into(&bytes[..cut], &mut out).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Codec);
            assert_eq!(out.len(), 101, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let err = Compact::decode_seq_into(&longer, &mut out).unwrap_err();
        assert!(
            err.chain().to_string().contains("1 trailing bytes"),
            "{err:?}"
        );
        assert_eq!(out.len(), 101);
        // A length of 2^60 values with a few bytes behind it: an error, room for no more.
        let mut absurd = (1u64 << 60).to_le_bytes().to_vec();
        absurd.extend_from_slice(&[0; 24]);
        let mut out: Vec<u64> = Vec::new();
        assert!(Compact::decode_seq_into(&absurd, &mut out).is_err());
        assert!(out.is_empty() && out.capacity() <= 24);
    }

    #[test]
    fn a_chunk_decodes_into_the_room_reserved_and_beyond() {
        use crate::codec::{Compact, Format};
        // Values that encode to no bytes: more of them than the bytes can reserve room for.
        #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
        struct Skipped {
            #[serde(skip)]
            x: u64,
        }
        let bytes =
            Compact::encode(&(0..100).map(|_| Skipped::default()).collect::<Vec<_>>()).unwrap();
        assert_eq!(bytes.len(), 8);
        let mut out = vec![Skipped { x: 1 }];
        Compact::decode_seq_into(&bytes, &mut out).unwrap();
        assert_eq!(out.len(), 101);
        assert_eq!(out[0].x, 1);
        // Owned values, some already in the list and room for more: a value that fails in
        // the middle leaves the list as it was (the values decoded before it dropped once).
        let chunk: Vec<String> = (0..50).map(|i| "x".repeat(i)).collect();
        let bytes = Compact::encode(&chunk[..]).unwrap();
        let mut out = Vec::with_capacity(1000);
        out.push("first".to_string());
        let mut bad = bytes.clone();
        // The 11th string's first byte (strings 0..10 take 8 + i bytes each).
        bad[8 + (0..10).map(|i| 8 + i).sum::<usize>() + 8] = 0xff;
        assert!(Compact::decode_seq_into(&bad, &mut out).is_err());
        assert_eq!(out, ["first"]);
        Compact::decode_seq_into(&bytes, &mut out).unwrap();
        assert_eq!(out[1..], chunk[..]);
    }

    /// Runs `decode` on another thread: its outcome, or `None` if it still runs after a while
    /// (a decoder that loops for ever fails the test instead of hanging it).
    fn within_a_while<R: Send + 'static>(decode: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(decode());
        });
        rx.recv_timeout(std::time::Duration::from_secs(60)).ok()
    }

    /// A struct that takes no bytes but has a size: a vector of them costs memory.
    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Skipped {
        #[serde(skip)]
        x: u64,
    }

    /// The little-endian bytes of `words`.
    fn words(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|n| n.to_le_bytes()).collect()
    }

    #[test]
    fn a_forged_count_of_values_that_take_no_bytes_is_refused_at_once() {
        use crate::codec::{Compact, Format};
        // A count of 2^62 values that encode to nothing, in 8 bytes: each decoder used to
        // make them one at a time, for ever.
        let forged = words(&[1 << 62]);
        let nested = words(&[
            8,
            1 << 62,
            1 << 62,
            1 << 62,
            1 << 62,
            1 << 62,
            1 << 62,
            1 << 62,
            1 << 62,
        ]);
        // The allowance is the whole input's, not each sequence's: 16 lists of 2M units each
        // (8 units of allowance each, 2^24 a list) run out at the fifth; 3 of them do not.
        let sixteen = words(&[&[16u64][..], &[1 << 21; 16]].concat());
        let three = words(&[&[3u64][..], &[1 << 21; 3]].concat());
        let outcomes = within_a_while(move || {
            let mut skipped: Vec<Skipped> = Vec::new();
            let mut calls = 0u64;
            let refused = [
                decode::<Vec<()>>(&forged).map(drop),
                decode::<Vec<Vec<()>>>(&nested).map(drop),
                decode::<BTreeMap<(), ()>>(&forged).map(drop),
                decode::<Vec<Vec<()>>>(&sixteen).map(drop),
                decode_seq_into::<Skipped>(&forged, &mut skipped, None).map(drop),
                decode_seq_into::<()>(&forged, &mut Vec::new(), None).map(drop),
                decode_seq_each::<Skipped, _>(&forged, &mut calls, |n, _| *n += 1).map(drop),
            ]
            .map(|outcome| outcome.map_err(|err| err.to_string()))
            .into_iter()
            .chain([
                Compact::decode::<Vec<()>>(&forged)
                    .map(drop)
                    .map_err(|err| err.chain().to_string()),
                crate::codec::decode::<Vec<()>>(&forged)
                    .map(drop)
                    .map_err(|err| err.chain().to_string()),
            ])
            .collect::<Vec<_>>();
            let three = decode::<Vec<Vec<()>>>(&three).map(|(v, _)| v.len());
            // A chunk of results whose number the caller knows: more is refused at once.
            let mut units: Vec<()> = Vec::new();
            let units = decode_seq_into::<()>(&forged, &mut units, Some(25 << 20))
                .map(|_| units.len())
                .map_err(|err| err.to_string());
            (refused, three, units)
        })
        .expect("a decoder still runs after 60 s");
        let (refused, three, units) = outcomes;
        for outcome in refused {
            let err = outcome.unwrap_err();
            assert!(err.contains("take no bytes"), "{err}");
        }
        assert_eq!(three.unwrap(), 3);
        assert_eq!(
            units.unwrap_err(),
            format!("{} values where {} belong", 1u64 << 62, 25 << 20)
        );
    }

    /// A type whose `Deserialize` asks for a tuple of `usize::MAX` units and reads them all.
    struct EndlessTuple;
    impl<'de> Deserialize<'de> for EndlessTuple {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = EndlessTuple;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("units")
                }
                fn visit_seq<A: SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> std::result::Result<EndlessTuple, A::Error> {
                    while seq.next_element::<()>()?.is_some() {}
                    Ok(EndlessTuple)
                }
            }
            d.deserialize_tuple(usize::MAX, V)
        }
    }

    #[test]
    fn a_tuple_of_a_length_no_type_has_is_counted() {
        let outcome = within_a_while(|| {
            decode::<EndlessTuple>(&[])
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .expect("a decoder still runs after 60 s");
        assert!(outcome.unwrap_err().contains("take no bytes"));
    }

    #[test]
    fn honest_values_that_take_no_bytes_still_decode() {
        use crate::codec::{Compact, Format};
        let many = vec![(); 1 << 20];
        let bytes = crate::codec::encode(&many).unwrap();
        assert_eq!(decode::<Vec<()>>(&bytes).unwrap().0.len(), 1 << 20);
        assert_eq!(
            crate::codec::decode::<Vec<()>>(&bytes).unwrap().len(),
            1 << 20
        );
        // A chunk of `()` results (a function called for its effects) larger than any
        // allowance: a map of 100M items on one worker has chunks of 25M.
        let chunk = Compact::encode(&vec![(); 25 << 20][..]).unwrap();
        let mut out = vec![()];
        Compact::decode_chunk_into(&chunk, &mut out, 25 << 20).unwrap();
        assert_eq!(out.len(), (25 << 20) + 1);
        // Not as a chunk whose number is known: counted.
        assert!(Compact::decode_seq_into(&chunk, &mut out).is_err());
        assert_eq!(out.len(), (25 << 20) + 1);
        let mut calls = 0usize;
        Compact::decode_seq_each(&chunk, &mut calls, |n, ()| *n += 1).unwrap();
        assert_eq!(calls, 25 << 20);
        // A few of a type with a size, past the bytes (the room reserved from them).
        let skipped =
            Compact::encode(&(0..100).map(|_| Skipped::default()).collect::<Vec<_>>()).unwrap();
        let mut out = Vec::new();
        Compact::decode_seq_into::<Skipped>(&skipped, &mut out).unwrap();
        assert_eq!(out.len(), 100);
    }

    /// `serialize_bytes` and `deserialize_byte_buf`, as `serde_bytes` does.
    mod run_bytes {
        pub(super) fn serialize<S: serde::Serializer>(
            v: &[u8],
            s: S,
        ) -> std::result::Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }

        pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> std::result::Result<Vec<u8>, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> std::result::Result<Vec<u8>, E> {
                    Ok(v)
                }
            }
            d.deserialize_byte_buf(V)
        }
    }

    /// A linked list, as derived serde writes it: two levels a node (the struct, the `Some`).
    #[derive(Debug, Serialize, Deserialize)]
    struct Node {
        value: u32,
        next: Option<Box<Node>>,
    }

    fn list(nodes: u32) -> Option<Box<Node>> {
        (0..nodes).fold(None, |next, value| Some(Box::new(Node { value, next })))
    }

    fn length(mut list: Option<Box<Node>>) -> u32 {
        // Iterative: the derived drop of a long list recurses as its decoding does.
        let mut n = 0;
        while let Some(mut node) = list {
            list = node.next.take();
            n += 1;
        }
        n
    }

    /// Runs `f` on a thread with a stack of `bytes`: what a library thread or a small user
    /// thread has.
    fn on_a_stack_of<T: Send + 'static>(bytes: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(bytes)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn values_nested_deeper_than_the_limit_are_refused_not_overflowed() {
        // Forged: a million `Some` tags, each a level (and frames of the decoder and of the
        // derived visitor), then `None`, for a type that nests as deep as its input says.
        // Before the limit this overflowed the stack and killed the process.
        #[derive(Debug, Deserialize)]
        struct Chain(#[allow(dead_code)] Option<Box<Chain>>);
        let mut forged = vec![1u8; 1_000_000];
        forged.push(0);
        let chain = on_a_stack_of(1 << 20, move || {
            decode::<Chain>(&forged)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        let chain = chain.unwrap_err();
        assert!(chain.contains("nest more than 1024 deep"), "{chain}");

        // Honest and too deep: refused where it is encoded, with the same words.
        let mut out = Vec::new();
        let long = list(600);
        let refused = super::super::write::encode_into(&long, &mut out).unwrap_err();
        assert!(
            refused.to_string().contains("nest more than 1024 deep"),
            "{refused}"
        );
        assert_eq!(length(long), 600);
    }

    #[test]
    fn values_as_deep_as_the_limit_go_both_ways_on_a_small_stack() {
        // 511 nodes: 1022 levels, under the `Some` of the head (1023).
        let deepest = list(511);
        let mut bytes = Vec::new();
        super::super::write::encode_into(&deepest, &mut bytes).unwrap();
        assert_eq!(length(deepest), 511);
        // Decoded within 512 KiB of stack, a quarter of a library thread's (2 MiB), in an
        // unoptimized build too.
        let decoded = on_a_stack_of(512 << 10, move || {
            decode::<Option<Box<Node>>>(&bytes).map(|(list, _)| length(list))
        });
        assert_eq!(decoded.unwrap(), 511);
        // One node more is refused by the encoder, as the decoder would refuse it.
        let mut out = Vec::new();
        let over = list(513);
        assert!(super::super::write::encode_into(&over, &mut out).is_err());
        length(over);
    }

    #[test]
    fn the_encoder_never_lets_through_what_the_decoder_refuses() {
        // Every kind of level: for each shape, the deepest value the encoder takes decodes.
        #[derive(Debug, Serialize, Deserialize)]
        enum Shape {
            Unit,
            Newtype(Box<Shape>),
            Tuple(Box<Shape>, u8),
            Struct { inner: Box<Shape> },
            Seq(Vec<Shape>),
            Map(BTreeMap<u8, Shape>),
            Some(Option<Box<Shape>>),
            Wrapped(Wrapper),
            Pair((Box<Shape>, u8)),
        }
        #[derive(Debug, Serialize, Deserialize)]
        struct Wrapper(Box<Shape>);
        type Make = fn(Shape) -> Shape;
        let makers: [Make; 8] = [
            |s| Shape::Newtype(Box::new(s)),
            |s| Shape::Tuple(Box::new(s), 1),
            |s| Shape::Struct { inner: Box::new(s) },
            |s| Shape::Seq(vec![s]),
            |s| Shape::Map([(1, s)].into()),
            |s| Shape::Some(Some(Box::new(s))),
            |s| Shape::Wrapped(Wrapper(Box::new(s))),
            |s| Shape::Pair((Box::new(s), 2)),
        ];
        for (i, make) in makers.iter().enumerate() {
            let mut deepest = None;
            for depth in 0..=1100 {
                let value = (0..depth).fold(Shape::Unit, |s, _| make(s));
                let mut bytes = Vec::new();
                let written = super::super::write::encode_into(&value, &mut bytes);
                std::mem::forget(value);
                match written {
                    Ok(()) => deepest = Some(bytes),
                    Err(err) => {
                        assert!(matches!(err, Wrong::Deep), "shape {i}: {err}");
                        break;
                    }
                }
            }
            let bytes = deepest.expect("a unit variant encodes");
            let decoded = on_a_stack_of(8 << 20, move || {
                decode::<Shape>(&bytes)
                    .map(std::mem::forget)
                    .map_err(|e| e.to_string())
            });
            assert!(decoded.is_ok(), "shape {i}: {decoded:?}");
        }
    }

    /// A type that asks the format what comes next.
    mod serde_json_like {
        #[derive(Debug)]
        pub(super) struct Any;
        impl<'de> serde::Deserialize<'de> for Any {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(serde::de::IgnoredAny).map(|_| Any)
            }
        }
    }

    /// A value nested as deep as `depth` says, one kind of level at a time (with bincode's
    /// encoder, which has no limit, for bytes the writer may refuse).
    mod deep {
        use std::collections::BTreeMap;

        use serde::de::{MapAccess, Visitor};
        use serde::ser::SerializeMap;
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        #[derive(Debug, Serialize, Deserialize)]
        pub(super) enum Shape {
            Unit,
            Newtype(Box<Shape>),
            Tuple(Box<Shape>, u8),
            Struct { inner: Box<Shape> },
            Seq(Vec<Shape>),
            Map(BTreeMap<u8, Shape>),
            Key(KeyMap),
            Some(Option<Box<Shape>>),
            Wrapped(Wrapper),
            Pair((Box<Shape>, u8)),
            Plain(Plain),
            TupleStruct(TupleStruct),
            Array([Box<Shape>; 1]),
        }

        #[derive(Debug, Serialize, Deserialize)]
        pub(super) struct Wrapper(pub Box<Shape>);

        #[derive(Debug, Serialize, Deserialize)]
        pub(super) struct Plain {
            pub inner: Box<Shape>,
        }

        #[derive(Debug, Serialize, Deserialize)]
        pub(super) struct TupleStruct(pub Box<Shape>, pub u8);

        /// A map of one entry whose key is the nested value.
        #[derive(Debug)]
        pub(super) struct KeyMap(pub Box<Shape>);

        impl Serialize for KeyMap {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(&*self.0, &7u8)?;
                map.end()
            }
        }

        impl<'de> Deserialize<'de> for KeyMap {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = KeyMap;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a map of one entry")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyMap, A::Error> {
                        let (key, _) = map
                            .next_entry::<Shape, u8>()?
                            .ok_or_else(|| serde::de::Error::custom("no entry"))?;
                        Ok(KeyMap(Box::new(key)))
                    }
                }
                d.deserialize_map(V)
            }
        }

        /// Options alone, then `None`: one level a `Some`.
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        pub(super) struct Options(pub Option<Box<Options>>);

        /// Sequences alone, then an empty one: one level a sequence.
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        pub(super) struct Seqs(pub Vec<Seqs>);

        /// Maps alone (nested as values), then an empty one: one level a map.
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        pub(super) struct Maps(pub BTreeMap<u8, Maps>);

        /// Newtype structs alone, down to a `u8`: one level a newtype.
        #[derive(Debug, Serialize, Deserialize)]
        pub(super) enum Newtypes {
            Leaf(u8),
            Node(Box<Wrapped>),
        }

        #[derive(Debug, Serialize, Deserialize)]
        pub(super) struct Wrapped(pub Newtypes);
    }

    /// For values as deep as `depth` around the limit, made by `make`: the writer writes what
    /// bincode writes exactly when the reader reads it (no depth that one refuses and the
    /// other takes, either way), and both sides flip between the depths tried.
    fn agree_around_the_limit<T, F>(name: &str, depths: impl IntoIterator<Item = u32>, make: F)
    where
        T: Serialize + serde::de::DeserializeOwned + fmt::Debug,
        F: Fn(u32) -> T,
    {
        let (mut accepted, mut refused) = (false, false);
        for depth in depths {
            let value = make(depth);
            let theirs =
                bincode::serde::encode_to_vec(&value, crate::codec::config()).expect("bincode");
            let mut ours = Vec::new();
            let written = super::super::write::encode_into(&value, &mut ours);
            drop(value);
            let read = decode::<T>(&theirs).map(|(_, n)| n);
            match (&written, &read) {
                (Ok(()), Ok(n)) => {
                    assert_eq!(*n, theirs.len(), "{name} at {depth}");
                    assert_eq!(ours, theirs, "{name} at {depth}: not bincode's bytes");
                    accepted = true;
                }
                (Err(Wrong::Deep), Err(Wrong::Deep)) => refused = true,
                _ => panic!("{name} at {depth}: written {written:?}, read {read:?}"),
            }
        }
        assert!(
            accepted && refused,
            "{name}: no flip within the depths tried"
        );
    }

    #[test]
    fn writer_and_reader_agree_on_the_depth_of_every_nesting() {
        use deep::*;
        on_a_stack_of(512 << 20, || {
            type Make = fn(Shape) -> Shape;
            let makers: [(&str, Make); 12] = [
                ("newtype variant", |s| Shape::Newtype(Box::new(s))),
                ("tuple variant", |s| Shape::Tuple(Box::new(s), 1)),
                ("struct variant", |s| Shape::Struct { inner: Box::new(s) }),
                ("seq", |s| Shape::Seq(vec![s])),
                ("map value", |s| Shape::Map([(1, s)].into())),
                ("map key", |s| Shape::Key(KeyMap(Box::new(s)))),
                ("option", |s| Shape::Some(Some(Box::new(s)))),
                ("newtype struct", |s| Shape::Wrapped(Wrapper(Box::new(s)))),
                ("tuple", |s| Shape::Pair((Box::new(s), 2))),
                ("struct", |s| Shape::Plain(Plain { inner: Box::new(s) })),
                ("tuple struct", |s| {
                    Shape::TupleStruct(TupleStruct(Box::new(s), 3))
                }),
                ("array", |s| Shape::Array([Box::new(s)])),
            ];
            for (name, make) in makers {
                // One or two levels a step, and one for the unit variant at the bottom.
                agree_around_the_limit(name, (505..=515).chain(1018..=1030), |depth| {
                    (0..depth).fold(Shape::Unit, |s, _| make(s))
                });
            }
            agree_around_the_limit("options", 1020..=1030, |depth| {
                (0..depth).fold(Options(None), |o, _| Options(Some(Box::new(o))))
            });
            agree_around_the_limit("seqs", 1020..=1030, |depth| {
                (0..depth).fold(Seqs(Vec::new()), |s, _| Seqs(vec![s]))
            });
            agree_around_the_limit("maps", 1020..=1030, |depth| {
                (0..depth).fold(Maps(BTreeMap::new()), |m, _| Maps([(0, m)].into()))
            });
            agree_around_the_limit("newtypes", 505..=520, |depth| {
                (0..depth).fold(Newtypes::Leaf(9), |n, _| {
                    Newtypes::Node(Box::new(Wrapped(n)))
                })
            });
        });
    }

    /// `value` written by the writer as bincode writes it, and read back by the reader (from
    /// either's bytes) to what `same` says is the same.
    fn both_ways<T>(value: &T, same: impl Fn(&T, &T) -> bool)
    where
        T: Serialize + serde::de::DeserializeOwned + fmt::Debug,
    {
        let mut ours = Vec::new();
        super::super::write::encode_into(value, &mut ours)
            .unwrap_or_else(|err| panic!("{value:?}: {err}"));
        let theirs = bincode::serde::encode_to_vec(value, crate::codec::config()).unwrap();
        assert_eq!(ours, theirs, "{value:?}: not bincode's bytes");
        let (back, read) = decode::<T>(&ours).unwrap_or_else(|err| panic!("{value:?}: {err}"));
        assert_eq!(read, ours.len(), "{value:?}");
        assert!(same(value, &back), "{value:?} came back as {back:?}");
    }

    macro_rules! round_trip {
        ($($value:expr),* $(,)?) => {$(both_ways(&$value, |a, b| a == b);)*};
    }

    #[test]
    fn every_type_of_the_data_model_goes_both_ways_as_bincode_writes_it() {
        use std::borrow::Cow;
        use std::collections::{BTreeSet, HashMap, VecDeque};
        use std::ffi::{CString, OsString};
        use std::marker::PhantomData;
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
        use std::num::{NonZeroU32, Wrapping};
        use std::ops::Bound;
        use std::path::PathBuf;
        use std::time::{Duration, SystemTime};

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Unit;
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct New(u32);
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Tup(u8, i128);
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        enum E {
            U,
            N(u128),
            T(char, f32),
            S { a: Option<Option<u8>>, b: Vec<u8> },
            Empty {},
            Nothing(),
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Skips {
            a: u8,
            #[serde(skip)]
            b: u64,
            c: String,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(transparent)]
        struct Transparent {
            inner: Vec<u16>,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Bytes(#[serde(with = "run_bytes")] Vec<u8>);

        round_trip![true, false, (), Unit, New(7), Tup(1, i128::MIN)];
        round_trip![i8::MIN, i16::MIN, i32::MIN, i64::MIN, i128::MIN, isize::MIN];
        round_trip![i8::MAX, i16::MAX, i32::MAX, i64::MAX, i128::MAX, isize::MAX];
        round_trip![u8::MAX, u16::MAX, u32::MAX, u64::MAX, u128::MAX, usize::MAX];
        round_trip![
            0.5f32,
            f32::INFINITY,
            -0.0f64,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE
        ];
        for c in [
            '\0', '\u{7f}', '\u{80}', '\u{7ff}', '\u{800}', '\u{d7ff}', '\u{e000}',
        ] {
            round_trip![c];
        }
        for c in ['\u{ffff}', '\u{10000}', '\u{10ffff}'] {
            round_trip![c];
        }
        both_ways(&f32::NAN, |a, b| a.to_bits() == b.to_bits());
        both_ways(&f64::NAN, |a, b| a.to_bits() == b.to_bits());
        round_trip![String::new(), "héllo".to_string(), Box::<str>::from("b")];
        round_trip![Cow::<'static, str>::Owned("cow".into())];
        round_trip![Bytes(Vec::new()), Bytes(vec![0, 255])];
        round_trip![None::<u8>, Some(3u8), Some(None::<u8>), Some(Some(()))];
        round_trip![E::U, E::N(u128::MAX), E::T('é', -1.5)];
        round_trip![
            E::S {
                a: Some(None),
                b: vec![1]
            },
            E::Empty {},
            E::Nothing()
        ];
        round_trip![
            Vec::<u8>::new(),
            vec![vec![1u8], Vec::new()],
            VecDeque::from([1u64])
        ];
        round_trip![
            BTreeSet::from([3u8, 1]),
            BTreeMap::from([(1u8, "a".to_string())])
        ];
        round_trip![HashMap::from([("k".to_string(), vec![(); 3])])];
        round_trip![(1u8, (2i16, ()), [0u8; 0], [1u16, 2, 3]), ((),)];
        round_trip![
            Skips {
                a: 1,
                b: 0,
                c: "c".into()
            },
            Transparent { inner: vec![9] }
        ];
        round_trip![
            PhantomData::<String>,
            Wrapping(5u8),
            NonZeroU32::new(9).unwrap()
        ];
        round_trip![
            std::cmp::Reverse(4i8),
            Ok::<u8, String>(1),
            Err::<u8, String>("e".into())
        ];
        round_trip![
            Duration::new(5, 7),
            SystemTime::UNIX_EPOCH + Duration::from_nanos(9)
        ];
        round_trip![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        ];
        round_trip!["[::1]:80".parse::<SocketAddr>().unwrap()];
        round_trip![
            PathBuf::from("/a/b"),
            CString::new("c").unwrap(),
            OsString::from("os")
        ];
        round_trip![
            1u32..5,
            1u32..=5,
            Bound::Included(3u8),
            Bound::<u8>::Unbounded
        ];
        round_trip![..3u8, 2u8..];
    }

    /// What a format without field names or tags cannot carry fails where it is made (a
    /// skipped field, a flattened struct) or where it is read (the attributes whose
    /// `Deserialize` asks what comes next), never as another value.
    #[test]
    fn what_the_format_cannot_carry_fails_on_one_side() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "t", content = "c")]
        enum Adjacent {
            A(u8),
            B,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "t")]
        enum Internal {
            A { x: u8 },
            B,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(untagged)]
        enum Untagged {
            A(u8),
            B(String),
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Inner {
            y: u8,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Flat {
            x: u8,
            #[serde(flatten)]
            inner: Inner,
        }
        fn read_refused<T: Serialize + serde::de::DeserializeOwned + fmt::Debug>(value: T) {
            let mut bytes = Vec::new();
            super::super::write::encode_into(&value, &mut bytes).unwrap();
            let err = decode::<T>(&bytes).map(|(v, _)| v).unwrap_err();
            assert!(
                matches!(err, Wrong::NotSelfDescribing(_)),
                "{value:?}: {err}"
            );
        }
        read_refused(Adjacent::A(1));
        read_refused(Adjacent::B);
        read_refused(Internal::A { x: 1 });
        read_refused(Internal::B);
        read_refused(Untagged::A(1));
        read_refused(Untagged::B("b".into()));
        let err = super::super::write::encode_into(
            &Flat {
                x: 1,
                inner: Inner { y: 2 },
            },
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, Wrong::LengthUnknown), "{err}");
    }
}
