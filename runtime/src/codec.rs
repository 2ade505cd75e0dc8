//! The wire codec: the only module that names bincode.
//!
//! Every value that crosses a process boundary (bootstrap data, arguments, results, panics) is
//! plain data encoded here with serde. Nothing decoded can run code: a decoder builds values, it
//! never looks up functions. bincode is not self-describing, so serde attributes that need a
//! self-describing format (`#[serde(flatten)]`, untagged enums, `deserialize_any`) are not
//! supported; they fail with an [`ErrorKind::Codec`] error, never silently.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::NoLimit,
>;

fn config() -> Config {
    // Fixed-width integers: a `u64` is 8 bytes copied as is, which encodes and decodes several
    // times faster than varints for the bulk data of pool chunks.
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

/// Encodes `value` into a new buffer.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, config()).map_err(|err| {
        Error::new(
            ErrorKind::Codec,
            format!("cannot encode a `{}`", std::any::type_name::<T>()),
        )
        .with_source(err)
    })
}

/// Encodes `value` at the end of `buf`.
pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
    bincode::serde::encode_into_std_write(value, buf, config())
        .map(drop)
        .map_err(|err| {
            Error::new(
                ErrorKind::Codec,
                format!("cannot encode a `{}`", std::any::type_name::<T>()),
            )
            .with_source(err)
        })
}

/// Decodes a whole buffer; trailing bytes are an error.
///
/// A corrupt length is an error too, never an abort. bincode allocates a string or byte buffer
/// of the length it reads before it reads the bytes, and a failed allocation aborts the
/// process; so every such length is claimed against a limit, and the limit is the smallest of
/// 64 KiB, 16 MiB and 4 GiB that is not below the input's own length (the bytes of every
/// string and buffer are in the input, so no valid input reaches it). A corrupt length then
/// costs at most a lazily zeroed allocation of the limit.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    const KIB_64: usize = 1 << 16;
    const MIB_16: usize = 1 << 24;
    const GIB_4: usize = 1 << 32;
    let decoded = match bytes.len() {
        n if n <= KIB_64 => {
            bincode::serde::decode_from_slice(bytes, config().with_limit::<KIB_64>())
        }
        n if n <= MIB_16 => {
            bincode::serde::decode_from_slice(bytes, config().with_limit::<MIB_16>())
        }
        n if n <= GIB_4 => bincode::serde::decode_from_slice(bytes, config().with_limit::<GIB_4>()),
        _ => bincode::serde::decode_from_slice(bytes, config()),
    };
    let (value, read) = decoded.map_err(|err| {
        Error::new(
            ErrorKind::Codec,
            format!("cannot decode a `{}`", std::any::type_name::<T>()),
        )
        .with_source(err)
    })?;
    if read != bytes.len() {
        return Err(Error::new(
            ErrorKind::Codec,
            format!(
                "cannot decode a `{}`: {} trailing bytes",
                std::any::type_name::<T>(),
                bytes.len() - read
            ),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = (1u64, "two".to_string(), vec![3i8, -4]);
        let bytes = encode(&v).unwrap();
        assert_eq!(decode::<(u64, String, Vec<i8>)>(&bytes).unwrap(), v);
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let err = decode::<String>(&[200, 1, 2]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        let err = decode::<u8>(&[1, 2]).unwrap_err();
        assert!(err.to_string().contains("trailing"));
    }

    #[test]
    fn an_absurd_length_is_an_error_not_an_abort() {
        // A string, a byte buffer and a string in a struct that claim 2^62 bytes.
        let mut bytes = (1u64 << 62).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        assert_eq!(
            decode::<String>(&bytes).unwrap_err().kind(),
            ErrorKind::Codec
        );
        assert_eq!(
            decode::<serde_bytes_like::ByteBuf>(&bytes)
                .unwrap_err()
                .kind(),
            ErrorKind::Codec
        );
        let mut nested = 7u64.to_le_bytes().to_vec();
        nested.extend_from_slice(&bytes);
        assert_eq!(
            decode::<(u64, String)>(&nested).unwrap_err().kind(),
            ErrorKind::Codec
        );
        // Just below each limit and just above: valid input decodes whatever its size.
        for len in [(1 << 16) - 8, (1 << 16) + 1, (1 << 24) - 8, (1 << 24) + 1] {
            let s = "x".repeat(len);
            assert_eq!(decode::<String>(&encode(&s).unwrap()).unwrap().len(), len);
        }
    }

    /// A byte buffer that deserializes with `deserialize_byte_buf`, as `serde_bytes` does.
    mod serde_bytes_like {
        #[derive(Debug)]
        pub struct ByteBuf(#[allow(dead_code)] pub Vec<u8>);
        impl<'de> serde::Deserialize<'de> for ByteBuf {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = ByteBuf;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                        Ok(ByteBuf(v))
                    }
                }
                d.deserialize_byte_buf(V)
            }
        }
    }
}
