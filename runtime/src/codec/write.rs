//! An encoder of the default codec's format (bincode's: little-endian, fixed-width integers,
//! lengths as `u64`, variant indexes as `u32`), straight into a `Vec<u8>`: the other half of
//! [`fixed`](super::fixed), and the encoder of every value the default codec sends.
//!
//! bincode 2 writes each number through its `Encoder` and `Writer` (a `Result` per write, a
//! length check); for a chunk of small structs that was as much time as moving their bytes.
//! This serializer writes the same bytes with one `extend_from_slice` per number into a
//! buffer the caller sized, and refuses what the format cannot carry or the decoder would
//! refuse: a skipped struct field (a format without field names would decode the next field
//! in its place), a sequence or map whose length is not known up front (every length is
//! written first), and values nested deeper than [`MAX_DEPTH`]. So a chunk can also be encoded
//! one value at a time ([`Compact`](super::Compact)'s `seq_push`), without a list of its own.

use serde::ser::{self, Serialize};

pub(crate) use super::fixed::Wrong;
use super::fixed::MAX_DEPTH;

type Result<T> = std::result::Result<T, Wrong>;

/// Appends the encoding of `value` to `out`.
#[inline]
pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    value.serialize(&mut Writer {
        out,
        depth: MAX_DEPTH,
    })
}

/// Appends the encoding of the sequence `values` (as [`encode_into`] of the slice), each value
/// allowed [`MAX_DEPTH`] levels of its own: the decoder of a chunk (`decode_seq_into`) counts
/// no level for the sequence around them.
#[inline]
pub(crate) fn encode_seq_into<T: Serialize>(values: &[T], out: &mut Vec<u8>) -> Result<()> {
    let mut writer = Writer {
        out,
        depth: MAX_DEPTH,
    };
    writer.len(values.len());
    values
        .iter()
        .try_for_each(|value| value.serialize(&mut writer))
}

/// The buffer written to.
pub(crate) struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// How many more levels values may nest: no deeper than the decoder takes them (see
    /// [`MAX_DEPTH`]), so that what is sent can be received.
    depth: u32,
}

impl Writer<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    #[inline]
    fn len(&mut self, len: usize) {
        self.put(&(len as u64).to_le_bytes());
    }

    #[inline]
    fn variant(&mut self, index: u32) {
        self.put(&index.to_le_bytes());
    }

    /// One level deeper, until the compound's `end` ([`leave`](Self::leave)).
    #[inline]
    fn enter(&mut self) -> Result<()> {
        self.depth = self.depth.checked_sub(1).ok_or(Wrong::Deep)?;
        Ok(())
    }

    #[inline]
    fn leave(&mut self) {
        self.depth += 1;
    }

    /// `value`, one level deeper.
    #[inline]
    fn nested<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.enter()?;
        value.serialize(&mut *self)?;
        self.leave();
        Ok(())
    }
}

macro_rules! numbers {
    ($($method:ident $t:ty;)*) => {$(
        #[inline]
        fn $method(self, v: $t) -> Result<()> {
            self.put(&v.to_le_bytes());
            Ok(())
        }
    )*};
}

impl<'a> ser::Serializer for &mut Writer<'a> {
    type Ok = ();
    type Error = Wrong;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<()> {
        self.put(&[u8::from(v)]);
        Ok(())
    }

    numbers! {
        serialize_i8 i8;
        serialize_i16 i16;
        serialize_i32 i32;
        serialize_i64 i64;
        serialize_i128 i128;
        serialize_u8 u8;
        serialize_u16 u16;
        serialize_u32 u32;
        serialize_u64 u64;
        serialize_u128 u128;
        serialize_f32 f32;
        serialize_f64 f64;
    }

    #[inline]
    fn serialize_char(self, v: char) -> Result<()> {
        // UTF-8, one to four bytes, as bincode writes it.
        self.put(v.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<()> {
        self.serialize_bytes(v.as_bytes())
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.len(v.len());
        self.put(v);
        Ok(())
    }

    #[inline]
    fn serialize_none(self) -> Result<()> {
        self.put(&[0]);
        Ok(())
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        self.put(&[1]);
        self.nested(value)
    }

    #[inline]
    fn serialize_unit(self) -> Result<()> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        _: &'static str,
    ) -> Result<()> {
        // A level, as the decoder counts every enum.
        self.enter()?;
        self.leave();
        self.variant(index);
        Ok(())
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<()> {
        self.nested(value)
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.variant(index);
        self.nested(value)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self> {
        self.len(len.ok_or(Wrong::LengthUnknown)?);
        self.enter()?;
        Ok(self)
    }

    #[inline]
    fn serialize_tuple(self, _len: usize) -> Result<Self> {
        self.enter()?;
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        self.enter()?;
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self> {
        self.variant(index);
        self.enter()?;
        Ok(self)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self> {
        self.len(len.ok_or(Wrong::LengthUnknown)?);
        self.enter()?;
        Ok(self)
    }

    #[inline]
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        self.enter()?;
        Ok(self)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self> {
        self.variant(index);
        self.enter()?;
        Ok(self)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

macro_rules! compound {
    ($($trait:ident $method:ident;)*) => {$(
        impl ser::$trait for &mut Writer<'_> {
            type Ok = ();
            type Error = Wrong;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
                value.serialize(&mut **self)
            }

            #[inline]
            fn end(self) -> Result<()> {
                self.leave();
                Ok(())
            }
        }
    )*};
}

compound! {
    SerializeSeq serialize_element;
    SerializeTuple serialize_element;
    SerializeTupleStruct serialize_field;
    SerializeTupleVariant serialize_field;
}

impl ser::SerializeMap for &mut Writer<'_> {
    type Ok = ();
    type Error = Wrong;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        key.serialize(&mut **self)
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }

    #[inline]
    fn end(self) -> Result<()> {
        self.leave();
        Ok(())
    }
}

macro_rules! fields {
    ($($trait:ident;)*) => {$(
        impl ser::$trait for &mut Writer<'_> {
            type Ok = ();
            type Error = Wrong;

            #[inline]
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _key: &'static str,
                value: &T,
            ) -> Result<()> {
                value.serialize(&mut **self)
            }

            fn skip_field(&mut self, _key: &'static str) -> Result<()> {
                Err(Wrong::Skipped)
            }

            #[inline]
            fn end(self) -> Result<()> {
                self.leave();
                Ok(())
            }
        }
    )*};
}

fields! {
    SerializeStruct;
    SerializeStructVariant;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    enum Shape {
        Unit,
        New(i16),
        Tuple(u8, char),
        Struct { name: String, bytes: Vec<u8> },
    }

    #[derive(Serialize)]
    struct Unit;

    #[derive(Serialize)]
    struct Wrapper(u32);

    #[derive(Serialize)]
    struct Everything {
        b: (bool, bool),
        ints: (i8, i16, i32, i64, i128, isize),
        uints: (u8, u16, u32, u64, u128, usize),
        floats: (f32, f64),
        chars: Vec<char>,
        text: String,
        option: (Option<u32>, Option<String>, Option<Option<()>>),
        unit: ((), Unit, Wrapper),
        shapes: Vec<Shape>,
        map: BTreeMap<String, Vec<u64>>,
        array: [u16; 3],
        nested: Vec<Vec<(u8, String)>>,
        #[serde(with = "serde_bytes_like")]
        run: Vec<u8>,
    }

    mod serde_bytes_like {
        pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }

    #[test]
    fn writes_what_bincode_writes() {
        let value = Everything {
            b: (true, false),
            ints: (-1, i16::MIN, -3, i64::MIN, i128::MIN, -5),
            uints: (1, u16::MAX, 3, u64::MAX, u128::MAX, 7),
            floats: (-0.0, f64::NAN),
            chars: vec!['a', 'é', '€', '😀', '\0'],
            text: "héllo".into(),
            option: (Some(9), None, Some(None)),
            unit: ((), Unit, Wrapper(77)),
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
        };
        let mut ours = vec![9u8];
        encode_into(&value, &mut ours).unwrap();
        assert_eq!(ours[0], 9, "appended, not overwritten");
        let theirs = bincode::serde::encode_to_vec(&value, super::super::config()).unwrap();
        assert_eq!(ours[1..], theirs[..]);
    }

    #[test]
    fn refuses_what_bincode_cannot_read_back() {
        #[derive(Serialize)]
        struct Sparse {
            a: u8,
            #[serde(skip_serializing_if = "Option::is_none")]
            b: Option<u8>,
        }
        let mut out = Vec::new();
        let err = encode_into(&vec![Sparse { a: 1, b: None }], &mut out).unwrap_err();
        assert!(matches!(err, Wrong::Skipped), "{err}");

        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_seq((0..3u8).filter(|_| true))
            }
        }
        let err = encode_into(&Unsized, &mut out).unwrap_err();
        assert!(matches!(err, Wrong::LengthUnknown), "{err}");
    }
}
