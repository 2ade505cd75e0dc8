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

fn config() -> impl bincode::config::Config {
    // Fixed-width integers: a `u64` is 8 bytes copied as is, which encodes and decodes several
    // times faster than varints for the bulk data of pool chunks.
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

/// Encodes `value` into a new buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, config()).map_err(|err| {
        Error::new(
            ErrorKind::Codec,
            format!("cannot encode a `{}`", std::any::type_name::<T>()),
        )
        .with_source(err)
    })
}

/// Encodes `value` at the end of `buf`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
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
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config()).map_err(|err| {
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
}
