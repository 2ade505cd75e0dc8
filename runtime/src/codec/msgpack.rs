//! The self-describing codec, MessagePack through `rmp-serde`: the only module that names it.
//!
//! A worker opts in with `#[process(codec = "msgpack")]`. Every value says what it is (a map,
//! a string, an integer of this width ...) and every struct is written as a map from field
//! names to values, so serde's shapes that need a self-describing format work:
//! `#[serde(flatten)]` (a map whose length is not known in advance: buffered, then written
//! with its length), untagged and internally tagged enums and `serde_json::Value`
//! (`deserialize_any`), and `skip_serializing_if` (a field that is not there is not read in
//! the next one's place).
//!
//! Why MessagePack and `rmp-serde`: it is binary (byte vectors are one run of bytes, floats
//! keep their bits, NaN included; JSON would turn NaN into `null` and bytes into lists of
//! numbers), its map keys may be any value (JSON's must be strings), and `rmp-serde` is
//! maintained, small (`rmp` and `serde`), decodes from a slice without trusting a length
//! beyond the input (strings and byte buffers are read as far as the input goes, sequences
//! reserve at most serde's cautious size hint), and limits nesting to a depth of 1024.
//!
//! What no self-describing format can tell apart: `Some(())` and `None`, or `Some(None)` and
//! `None` (an `Option<Option<T>>`), both written as nil.

use std::io::Cursor;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{failed, Failure, Format, Why};
use crate::error::Result;

/// MessagePack (`codec = "msgpack"`), structs as maps. Not public API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct SelfDescribing;

impl Format for SelfDescribing {
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let mut serializer = rmp_serde::Serializer::new(&mut buf).with_struct_map();
        value
            .serialize(&mut serializer)
            .map_err(|err| failed::<T>("encode", Failure::other(err)))?;
        Ok(buf)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
        let mut deserializer = rmp_serde::Deserializer::new(Cursor::new(bytes));
        let value = T::deserialize(&mut deserializer)
            .map_err(|err| failed::<T>("decode", Failure::other(err)))?;
        let read = deserializer.position();
        if read != bytes.len() as u64 {
            return Err(failed::<T>(
                "decode",
                Failure {
                    why: Why::Trailing(bytes.len() - read as usize),
                    source: None,
                },
            ));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::error::ErrorKind;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Inner {
        x: u32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Flat {
        id: u64,
        #[serde(flatten)]
        inner: Inner,
        #[serde(flatten)]
        extra: BTreeMap<String, i64>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Number(i64),
        Text(String),
        Pair { a: u8, b: Vec<u16> },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "t")]
    enum Tagged {
        A { x: u64 },
        B,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sparse {
        a: u32,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        note: Option<String>,
        b: f64,
    }

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let bytes = SelfDescribing::encode(&value).unwrap();
        assert_eq!(SelfDescribing::decode::<T>(&bytes).unwrap(), value);
    }

    #[test]
    fn the_shapes_bincode_cannot_carry() {
        round_trip(vec![Flat {
            id: 7,
            inner: Inner { x: 3 },
            extra: [("k".to_string(), -5)].into(),
        }]);
        round_trip(vec![
            Loose::Number(-3),
            Loose::Text("s".into()),
            Loose::Pair {
                a: 1,
                b: vec![1, 300],
            },
        ]);
        round_trip(vec![Tagged::A { x: u64::MAX }, Tagged::B]);
        round_trip(vec![
            Sparse {
                a: 1,
                note: None,
                b: 1.5,
            },
            Sparse {
                a: 2,
                note: Some("x".into()),
                b: -0.0,
            },
        ]);
        round_trip((u128::MAX, i128::MIN, 'x', vec![1u8, 2, 3], (), [1u8, 2]));
        let keys: BTreeMap<(u8, u8), String> = [((1, 2), "x".to_string())].into();
        round_trip(keys);
        let nan = SelfDescribing::decode::<f64>(&SelfDescribing::encode(&f64::NAN).unwrap());
        assert!(nan.unwrap().is_nan());
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let bytes = SelfDescribing::encode(&("abc", 5u32)).unwrap();
        for cut in 0..bytes.len() {
            let err = SelfDescribing::decode::<(String, u32)>(&bytes[..cut]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Codec);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let err = SelfDescribing::decode::<(String, u32)>(&longer).unwrap_err();
        assert!(
            err.chain().to_string().contains("1 trailing bytes"),
            "{err:?}"
        );
        // A string that claims 4 GiB: an error, not an allocation of it.
        let err = SelfDescribing::decode::<String>(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a']);
        assert_eq!(err.unwrap_err().kind(), ErrorKind::Codec);
        // An array that claims 4 billion elements.
        let err = SelfDescribing::decode::<Vec<u64>>(&[0xdd, 0xff, 0xff, 0xff, 0xff, 1]);
        assert_eq!(err.unwrap_err().kind(), ErrorKind::Codec);
    }
}
