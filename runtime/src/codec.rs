//! The wire codec: the only module that names bincode.
//!
//! The format is bincode 2's (little-endian, fixed-width integers, lengths as `u64`); its
//! encoder ([`write`]) and decoder ([`fixed`]) are this module's own, because bincode's
//! spends most of a small value's time in its per-number plumbing, allocates a string's
//! claimed length before reading its bytes, and limits neither the nesting of values nor the
//! count of values that take no bytes. bincode itself is a dev-dependency: the tests check
//! that both read and write its bytes.
//!
//! Every value that crosses a process boundary (bootstrap data, arguments, results, panics) is
//! plain data encoded here with serde. Nothing decoded can run code: a decoder builds values, it
//! never looks up functions. bincode is not self-describing, so serde attributes that need a
//! self-describing format (`#[serde(flatten)]`, untagged enums, `deserialize_any`,
//! `skip_serializing_if`) are not supported; they fail with an [`ErrorKind::Codec`] error that
//! says why, never silently. `explain` turns such an error into one that names the worker and
//! the user's type, with a hint when the worker's types need a self-describing format.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::ser::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::spare;

mod fixed;
mod msgpack;
mod write;

pub use msgpack::SelfDescribing;

#[cfg(test)]
type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::NoLimit,
>;

#[cfg(test)]
fn config() -> Config {
    // Fixed-width integers: a `u64` is 8 bytes copied as is, which encodes and decodes several
    // times faster than varints for the bulk data of pool chunks.
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

/// Encodes `value` into a new buffer.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    encode_into(value, &mut buf)?;
    Ok(buf)
}

/// Encodes `value` at the end of `buf` (with [`write`]'s encoder of bincode's format, which
/// refuses a skipped struct field and values nested deeper than the decoder takes); on error
/// `buf` is left as it was.
pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
    let start = buf.len();
    write::encode_into(value, buf)
        .map_err(written::<T>)
        .inspect_err(|_| buf.truncate(start))
}

/// Decodes a whole buffer; trailing bytes are an error.
///
/// With [`fixed`]'s decoder of bincode's format (which also decodes workers' values): a
/// corrupt length is an error, never an abort nor a long loop. Nothing is allocated from a
/// length before the bytes it counts were found in the input, and a forged count of values
/// that take no bytes is refused (see [`fixed::FREE_WORK`]). bincode's own decoder allocates
/// a string's length before it reads its bytes, and makes a forged 2^62 unit values one at a
/// time.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    fixed_outcome::<T, T>(bytes.len(), fixed::decode(bytes))
}

/// [`decode`] with an allowance of `free` bytes for values that take no bytes (see
/// [`fixed::FREE_WORK`]), for the fuzz harness.
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_allowing<T: DeserializeOwned>(bytes: &[u8], free: usize) -> Result<T> {
    fixed_outcome::<T, T>(bytes.len(), fixed::decode_allowing(bytes, free))
}

/// bincode's own decoder of a whole buffer (trailing bytes refused), for the tests that check
/// that [`fixed`] decodes what it decodes and fails where it fails. Lengths are claimed against
/// 64 KiB (the inputs of those tests are smaller): a corrupt one is an error, not an abort.
#[cfg(test)]
pub(crate) fn decode_by_bincode<T: DeserializeOwned>(
    bytes: &[u8],
) -> std::result::Result<T, String> {
    let config = config().with_limit::<{ 1 << 16 }>();
    match bincode::serde::decode_from_slice(bytes, config) {
        Ok((value, read)) if read == bytes.len() => Ok(value),
        Ok((_, read)) => Err(format!("{} trailing bytes", bytes.len() - read)),
        Err(err) => Err(err.to_string()),
    }
}

/// A serde format for the arguments and results of workers, chosen per worker with
/// `#[process(codec = "...")]`. Not public API.
#[doc(hidden)]
pub trait Format {
    /// Encodes `value` into a new buffer.
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>>;
    /// Decodes a whole buffer; trailing bytes are an error.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T>;

    /// Decodes a whole buffer that holds a sequence of `T`s (as [`encode`](Self::encode) of a
    /// slice makes it) onto the end of `out`; on error `out` is left as it was.
    fn decode_seq_into<T: DeserializeOwned>(bytes: &[u8], out: &mut Vec<T>) -> Result<()> {
        let mut values: Vec<T> = Self::decode(bytes)?;
        if out.is_empty() && out.capacity() <= values.capacity() {
            *out = values;
        } else {
            out.append(&mut values);
        }
        Ok(())
    }

    /// [`decode_seq_into`](Self::decode_seq_into) of a pool's chunk of results, of which the
    /// caller knows there are `items` (and checks it): a format whose lengths do not bound the
    /// work of decoding refuses a longer sequence before it decodes any value. This one's
    /// values each take a byte at least, so it needs no bound.
    fn decode_chunk_into<T: DeserializeOwned>(
        bytes: &[u8],
        out: &mut Vec<T>,
        _items: usize,
    ) -> Result<()> {
        Self::decode_seq_into(bytes, out)
    }

    /// Decodes a whole buffer that holds a sequence of `T`s like
    /// [`decode_seq_into`](Self::decode_seq_into), handing each value to `each` in order,
    /// with `state`; `each` is called only once the whole buffer is known to decode.
    fn decode_seq_each<T: DeserializeOwned, S>(
        bytes: &[u8],
        state: &mut S,
        mut each: impl FnMut(&mut S, T),
    ) -> Result<()> {
        let mut values = Vec::new();
        Self::decode_seq_into(bytes, &mut values)?;
        values.into_iter().for_each(|value| each(state, value));
        Ok(())
    }

    /// Encodes a chunk of values into a new buffer, as [`encode`](Self::encode) of the slice,
    /// each value allowed as deep a nesting as [`decode_seq_into`](Self::decode_seq_into)
    /// takes (a format that limits it counts no level for the sequence).
    fn encode_seq<T: Serialize>(values: &[T]) -> Result<Vec<u8>> {
        Self::encode(values)
    }

    /// Whether a sequence can be encoded one value at a time, as [`encode`](Self::encode) of
    /// the slice of them would encode it: [`seq_start`](Self::seq_start), then
    /// [`seq_push`](Self::seq_push) for each value, then [`seq_end`](Self::seq_end).
    fn streams() -> bool {
        false
    }

    /// Begins a sequence at the end of `buf`.
    fn seq_start(_buf: &mut Vec<u8>) {}

    /// Appends one value of the sequence begun in `buf`.
    fn seq_push<T: Serialize>(_value: &T, _buf: &mut Vec<u8>) -> Result<()> {
        Err(Error::new(
            ErrorKind::Codec,
            "this format does not encode a sequence one value at a time",
        ))
    }

    /// Ends the sequence of `count` values begun at `start` in `buf`.
    fn seq_end(_buf: &mut [u8], _start: usize, _count: usize) {}
}

/// bincode, the default (`codec = "bincode"`): compact and fast, not self-describing.
/// Not public API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Compact;

impl Format for Compact {
    /// Into a buffer with room for the value's bytes in memory and a length (a spare one when
    /// large): a chunk of fixed-size values encodes in one pass, without growing it. With
    /// [`write`]'s encoder of the same format, several times faster than bincode's.
    #[inline]
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
        let mut buf = spare::take_or_new(std::mem::size_of_val(value) + 8);
        write::encode_into(value, &mut buf).map_err(written::<T>)?;
        Ok(buf)
    }

    #[inline]
    fn encode_seq<T: Serialize>(values: &[T]) -> Result<Vec<u8>> {
        let mut buf = spare::take_or_new(std::mem::size_of_val(values) + 8);
        write::encode_seq_into(values, &mut buf).map_err(written::<[T]>)?;
        Ok(buf)
    }

    fn streams() -> bool {
        true
    }

    /// The length first, as a `u64`: written by [`seq_end`](Self::seq_end).
    #[inline]
    fn seq_start(buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[0; 8]);
    }

    #[inline]
    fn seq_push<T: Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
        write::encode_into(value, buf).map_err(written::<T>)
    }

    #[inline]
    fn seq_end(buf: &mut [u8], start: usize, count: usize) {
        if let Some(len) = buf.get_mut(start..start + 8) {
            len.copy_from_slice(&(count as u64).to_le_bytes());
        }
    }

    /// Values that own nothing on the heap (numbers, and structs, tuples, arrays, options and
    /// enums of them) are decoded twice, one at a time: once to check the whole buffer, then
    /// each handed on as it is decoded again, without a list of them (decoding them allocates
    /// nothing and costs less than writing and reading back the list). Any other value is
    /// decoded once, onto a list. "Owns nothing on the heap" is read as "has no drop glue",
    /// so a `Deserialize` of such a type must give the same value both times and have no
    /// other effect (serde's derives do); one that fails or panics only the second time does
    /// so after the calls before it ran (a failure is then the chunk's error, as any other).
    fn decode_seq_each<T: DeserializeOwned, S>(
        bytes: &[u8],
        state: &mut S,
        mut each: impl FnMut(&mut S, T),
    ) -> Result<()> {
        if std::mem::needs_drop::<T>() {
            let mut values = Vec::new();
            Self::decode_seq_into(bytes, &mut values)?;
            values.into_iter().for_each(|value| each(state, value));
            return Ok(());
        }
        let checked = fixed::decode_seq_each::<T, ()>(bytes, &mut (), |_, value| drop(value));
        fixed_outcome::<Vec<T>, ()>(bytes.len(), checked)?;
        // A `Deserialize` that decodes the same bytes differently the second time (one that
        // reads global state) may fail now, after values were handed on: still an error.
        fixed_outcome::<Vec<T>, ()>(bytes.len(), fixed::decode_seq_each(bytes, state, each))
    }

    /// With [`fixed`]'s decoder of the same format, several times faster than bincode's.
    #[inline]
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
        fixed_outcome::<T, T>(bytes.len(), fixed::decode(bytes))
    }

    /// In one pass, each value pushed onto `out` as it is decoded: no list of the chunk's own.
    #[inline]
    fn decode_seq_into<T: DeserializeOwned>(bytes: &[u8], out: &mut Vec<T>) -> Result<()> {
        seq_into(bytes, out, None)
    }

    /// Refused before anything is decoded when the chunk says it holds more than `items`;
    /// its values are not counted as values that take no bytes (see [`fixed::FREE_WORK`]).
    #[inline]
    fn decode_chunk_into<T: DeserializeOwned>(
        bytes: &[u8],
        out: &mut Vec<T>,
        items: usize,
    ) -> Result<()> {
        seq_into(bytes, out, Some(items))
    }
}

/// [`fixed::decode_seq_into`] of a whole buffer onto `out`, left as it was on error.
#[inline]
fn seq_into<T: DeserializeOwned>(
    bytes: &[u8],
    out: &mut Vec<T>,
    items: Option<usize>,
) -> Result<()> {
    let start = out.len();
    let decoded = fixed::decode_seq_into(bytes, out, items);
    fixed_outcome::<Vec<T>, ()>(bytes.len(), decoded).inspect_err(|_| out.truncate(start))
}

/// An error of [`write`]'s encoder of a `T`, explained as bincode's would be.
#[cold]
fn written<T: ?Sized>(err: write::Wrong) -> Error {
    let why = match err {
        write::Wrong::LengthUnknown => Why::LengthUnknown,
        write::Wrong::Skipped => Why::SkippedField,
        _ => Why::Other,
    };
    failed::<T>("encode", Failure::new(why, err))
}

/// What [`fixed`] decoded (a `T`) from `len` bytes, or why it did not: trailing bytes are an
/// error.
fn fixed_outcome<T: ?Sized, V>(
    len: usize,
    decoded: std::result::Result<(V, usize), fixed::Wrong>,
) -> Result<V> {
    let (value, read) = decoded.map_err(|err| {
        let why = match err {
            fixed::Wrong::NotSelfDescribing(_) => Why::NotSelfDescribing,
            _ => Why::Other,
        };
        failed::<T>("decode", Failure::new(why, err))
    })?;
    if read != len {
        return Err(failed::<T>(
            "decode",
            Failure {
                why: Why::Trailing(len - read),
                source: None,
            },
        ));
    }
    Ok(value)
}

fn failed<T: ?Sized>(verb: &str, failure: Failure) -> Error {
    Error::new(
        ErrorKind::Codec,
        format!("cannot {verb} a `{}`", std::any::type_name::<T>()),
    )
    .with_source(failure)
}

/// Why a value did not encode or decode: the format's own error, explained where the cause
/// is known.
#[derive(Debug)]
pub(crate) struct Failure {
    why: Why,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A `Deserialize` asked what comes next (`deserialize_any`, `deserialize_ignored_any`,
    /// `deserialize_identifier`).
    NotSelfDescribing,
    /// A sequence or map without a length up front.
    LengthUnknown,
    /// A struct field left out by `skip_serializing_if` (or `SerializeStruct::skip_field`).
    SkippedField,
    /// Bytes left after the value.
    Trailing(usize),
    /// Anything else: the format's error says it (a custom `Serialize` error, say).
    Other,
}

impl Failure {
    /// A failure of another format, whose own error says why.
    fn other(err: impl std::error::Error + Send + Sync + 'static) -> Failure {
        Failure::new(Why::Other, err)
    }

    fn new(why: Why, err: impl std::error::Error + Send + Sync + 'static) -> Failure {
        Failure {
            why,
            source: Some(Box::new(err)),
        }
    }

    /// Whether a self-describing format would have carried the value.
    fn needs_self_describing(&self) -> bool {
        matches!(
            self.why,
            Why::NotSelfDescribing | Why::LengthUnknown | Why::SkippedField
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.why, &self.source) {
            (Why::NotSelfDescribing, _) => f.write_str(
                "bincode is not self-describing, and the type asks the format what comes next \
                 (`deserialize_any`), as `serde_json::Value`, untagged and internally tagged \
                 enums and `#[serde(flatten)]` do",
            ),
            (Why::LengthUnknown, _) => f.write_str(
                "bincode writes the length of every sequence and map first, and the type \
                 serializes one whose length is not known in advance, as \
                 `#[serde(flatten)]` does",
            ),
            (Why::SkippedField, _) => f.write_str(
                "bincode writes no field names, and the type skipped a struct field \
                 (`#[serde(skip_serializing_if = ...)]`), so the next field would be read in \
                 its place",
            ),
            (Why::Trailing(n), _) => write!(f, "{n} trailing bytes"),
            (Why::Other, Some(source)) => fmt::Display::fmt(source, f),
            (Why::Other, None) => f.write_str("the format failed"),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.why {
            // The message says it all; the format's own error is reached below it.
            Why::Other => self.source.as_deref()?.source(),
            _ => self
                .source
                .as_deref()
                .map(|s| s as &(dyn std::error::Error + 'static)),
        }
    }
}

/// An encoding or decoding error of a worker's arguments or result, told about the worker:
/// `what` says which ("cannot decode the arguments of worker `app::f`, a `app::Shape`"), the
/// rest says why, and a hint follows when a self-describing codec would carry the type.
/// Errors that did not come from a format (a missing byte block, say) keep their message.
pub(crate) fn explain(mut err: Error, what: fmt::Arguments<'_>) -> Error {
    match err.take_source().map(|source| source.downcast::<Failure>()) {
        Some(Ok(failure)) if failure.needs_self_describing() => Error::new(
            ErrorKind::Codec,
            format!(
                "{what}: {failure}; give the worker `#[process(codec = \"msgpack\")]`, a \
                 self-describing encoding that carries such types"
            ),
        ),
        // "{what}: {the format's error}", the format's error below.
        Some(Ok(failure)) => Error::new(ErrorKind::Codec, what.to_string()).with_source(*failure),
        Some(Err(source)) => Error::new(ErrorKind::Codec, format!("{what}: {}", err.message()))
            .with_boxed_source(source),
        None => Error::new(ErrorKind::Codec, format!("{what}: {}", err.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_travels_as_its_variant_index() {
        // An error kind travels between processes (a failure's kind, `error.rs`). Appending a
        // kind leaves these alone; reordering or removing one breaks this test.
        for (kind, index) in [
            (ErrorKind::AlreadyStarted, 0u32),
            (ErrorKind::UnknownEntry, 8),
            (ErrorKind::BuildMismatch, 9),
            (ErrorKind::Bootstrap, 10),
            (ErrorKind::Codec, 12),
            (ErrorKind::Io, 21),
            (ErrorKind::BrokenBarrier, 25),
        ] {
            let bytes = encode(&kind).unwrap();
            assert_eq!(bytes, encode(&index).unwrap(), "{kind:?}");
            assert_eq!(decode::<ErrorKind>(&bytes).unwrap(), kind);
        }
    }

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
        assert!(err.chain().to_string().contains("trailing"), "{err:?}");
    }

    #[test]
    fn a_skipped_field_or_an_unknown_length_is_an_error_that_says_so() {
        #[derive(serde::Serialize)]
        struct Sparse {
            a: u8,
            #[serde(skip_serializing_if = "Option::is_none")]
            b: Option<u8>,
            c: u8,
        }
        // Nested: the check reaches fields inside sequences and options.
        let err = encode(&vec![Some(Sparse {
            a: 1,
            b: None,
            c: 2,
        })])
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(
            err.chain().to_string().contains("skip_serializing_if"),
            "{err:?}"
        );
        let failure = std::error::Error::source(&err).unwrap();
        assert!(failure
            .downcast_ref::<Failure>()
            .unwrap()
            .needs_self_describing());
        // A field that is not skipped encodes as before.
        let full = Sparse {
            a: 1,
            b: Some(3),
            c: 2,
        };
        assert_eq!(encode(&full).unwrap(), [1, 1, 3, 2]);

        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.collect_seq((0..3u8).filter(|_| true))
            }
        }
        let err = encode(&Unsized).unwrap_err();
        assert!(
            err.chain().to_string().contains("not known in advance"),
            "{err:?}"
        );

        // Explained for a worker: its name and type, why, the hint; no chunk's `Vec`.
        let err = explain(
            err,
            format_args!("cannot encode the result of worker `w`, a `T`"),
        );
        let text = err.to_string();
        assert!(
            text.starts_with(
                "cannot encode the result of worker `w`, a `T`: bincode writes the length"
            ),
            "{text}"
        );
        assert!(text.contains("codec = \"msgpack\""), "{text}");
        // Any other error keeps its own words, without the hint.
        let err = explain(
            decode::<String>(&[200, 1, 2]).unwrap_err(),
            format_args!("cannot decode the arguments of worker `w`, a `String`"),
        );
        assert!(!err.to_string().contains("msgpack"), "{err}");
        assert!(!err.to_string().contains("a `alloc"), "{err}");
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
        // Valid input decodes whatever its size (bincode's decoder, used before, claimed
        // lengths against limits of 64 KiB and 16 MiB: around each).
        for len in [(1 << 16) - 8, (1 << 16) + 1, (1 << 24) - 8, (1 << 24) + 1] {
            let s = "x".repeat(len);
            assert_eq!(decode::<String>(&encode(&s).unwrap()).unwrap().len(), len);
        }
    }

    /// A byte buffer that deserializes with `deserialize_byte_buf`, as `serde_bytes` does.
    mod serde_bytes_like {
        #[derive(Debug)]
        pub(super) struct ByteBuf(#[allow(dead_code)] pub Vec<u8>);
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
