//! Serde shapes that bincode cannot carry (`serde_json::Value`, `#[serde(flatten)]`, untagged
//! enums, `skip_serializing_if`): with the default codec, an error that names the worker and the
//! user's type and says why, with a hint at the self-describing codec; with
//! `#[process(codec = "msgpack")]`, the same shapes carried both ways, by `Process`, every way
//! of `Pool` and its initializer; and the same for the fields of a process type (an impl block
//! with `codec = "msgpack"`, started with `Process::from`). Plain old data (vectors of numbers
//! and of `#[derive(Pod)]` structs, and such values themselves) travels as its bytes, through
//! type aliases too: its `Serialize` is never called. Each under every start method.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use common::{finish_with, Outcome};
use multiproc::{process, ErrorKind, Pool, Process, StartMethod};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inner {
    x: u32,
    label: String,
}

/// A struct with a flattened field: serialized as a map of unknown length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flat {
    id: u64,
    #[serde(flatten)]
    inner: Inner,
    #[serde(flatten)]
    extra: BTreeMap<String, i64>,
}

/// An untagged enum: decoded by asking the format what comes next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Loose {
    Number(i64),
    Text(String),
    Pair { a: u8, b: Vec<u16> },
}

/// A struct whose fields may be left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sparse {
    a: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    note: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    tags: Vec<u8>,
    b: u64,
}

fn flat() -> Flat {
    Flat {
        id: 7,
        inner: Inner {
            x: 3,
            label: "three".into(),
        },
        extra: [("k".to_string(), -5)].into(),
    }
}

fn sparse() -> Sparse {
    Sparse {
        a: 1,
        note: None,
        tags: Vec::new(),
        b: 1 << 40,
    }
}

fn document() -> Value {
    json!({"name": "multiproc", "n": [1, -2, 3.5, u64::MAX, null, true], "nested": {"k": "v"}})
}

// ---------------------------------------------------------------------------------------------
// With the default codec (bincode): the errors

#[process]
fn json_keys(v: Value) -> usize {
    v.as_object().map_or(0, |o| o.len())
}

#[process]
fn flat_id(f: Flat) -> u64 {
    f.id
}

#[process]
fn loose_number(l: Loose) -> i64 {
    match l {
        Loose::Number(n) => n,
        _ => -1,
    }
}

#[process]
fn sparse_b(s: Sparse) -> u64 {
    s.b
}

#[process]
fn make_document(n: u64) -> Value {
    json!({ "n": n })
}

#[process]
fn make_flat(n: u64) -> Flat {
    Flat { id: n, ..flat() }
}

/// What every such error says: the kind, the worker, the type, why, and the way out.
fn check_error(err: &multiproc::Error, worker: &str, ty: &str, why: &str) -> Outcome {
    let text = common::chain(err);
    check_eq!(err.kind(), ErrorKind::Codec);
    check!(
        text.contains(&format!("worker `{worker}`")),
        "no worker in: {text}"
    );
    check!(text.contains(&format!("a `{ty}`")), "no type in: {text}");
    check!(text.contains(why), "no `{why}` in: {text}");
    check!(
        text.contains("#[process(codec = \"msgpack\")]"),
        "no hint in: {text}"
    );
    check!(!text.contains("Vec<"), "names the chunk's `Vec`: {text}");
    Ok(())
}

const NOT_SELF_DESCRIBING: &str = "not self-describing";
const LENGTH_UNKNOWN: &str = "not known in advance";
const SKIPPED: &str = "skip_serializing_if";

fn errors_with_the_pool(m: StartMethod) -> Outcome {
    let pool = Pool::builder().processes(1).start_method(m).build()?;
    let value = std::any::type_name::<Value>();
    // Decoded in the worker: the arguments do not decode there.
    let err = pool.apply(json_keys, document()).unwrap_err();
    check_error(&err, "codec::json_keys", value, NOT_SELF_DESCRIBING)?;
    check!(
        common::chain(&err).contains("cannot decode the arguments"),
        "{err}"
    );
    let err = pool
        .map(
            loose_number,
            vec![Loose::Number(1), Loose::Text("x".into())],
        )
        .unwrap_err();
    check_error(
        &err,
        "codec::loose_number",
        "codec::Loose",
        NOT_SELF_DESCRIBING,
    )?;
    // Encoded here: refused before anything is sent.
    let err = pool.apply(flat_id, flat()).unwrap_err();
    check_error(&err, "codec::flat_id", "codec::Flat", LENGTH_UNKNOWN)?;
    check!(
        common::chain(&err).contains("cannot encode the arguments"),
        "{err}"
    );
    let err = pool.map(sparse_b, vec![sparse(); 3]).unwrap_err();
    check_error(&err, "codec::sparse_b", "codec::Sparse", SKIPPED)?;
    let err = pool
        .imap(flat_id, vec![flat()])
        .next()
        .ok_or("imap gave nothing")?
        .unwrap_err();
    check_error(&err, "codec::flat_id", "codec::Flat", LENGTH_UNKNOWN)?;
    // A result that does not decode here.
    let err = pool.apply(make_document, 3).unwrap_err();
    check_error(&err, "codec::make_document", value, NOT_SELF_DESCRIBING)?;
    check!(
        common::chain(&err).contains("cannot decode the result"),
        "{err}"
    );
    // A result that does not encode in the worker.
    let err = pool.apply(make_flat, 2).unwrap_err();
    check_error(&err, "codec::make_flat", "codec::Flat", LENGTH_UNKNOWN)?;
    check!(
        common::chain(&err).contains("cannot encode the result"),
        "{err}"
    );
    // A field that is not skipped encodes: the same type works when it has every field.
    let full = Sparse {
        note: Some("n".into()),
        tags: vec![1],
        ..sparse()
    };
    check_eq!(pool.apply(sparse_b, full)?, 1 << 40);
    // An initializer whose arguments cannot be encoded: the pool says so.
    let err = Pool::builder()
        .processes(1)
        .start_method(m)
        .initializer(flat_id, flat())
        .build()
        .map(|_| ())
        .unwrap_err();
    check!(common::chain(&err).contains("codec::Flat"), "{err}");
    Ok(())
}

fn errors_with_a_process(m: StartMethod) -> Outcome {
    // Decoded in the child: it fails there, and `error()` says why.
    for (p, worker, ty) in [
        (
            Process::new(json_keys, document()),
            "codec::json_keys",
            std::any::type_name::<Value>(),
        ),
        (
            Process::new(loose_number, Loose::Pair { a: 1, b: vec![2] }),
            "codec::loose_number",
            "codec::Loose",
        ),
    ] {
        let p = p.with_start_method(m);
        p.start()?;
        finish_with(&p, 1)?;
        let err = p.error().ok_or("no error")?;
        check_error(&err, worker, ty, NOT_SELF_DESCRIBING)?;
    }
    // A result that would not encode: a `Process` drops its target's result without encoding
    // it, as Python's drops what `run` returns, so the child does not fail for it...
    let p = Process::new(make_flat, 2).with_start_method(m);
    p.start()?;
    finish_with(&p, 0)?;
    check!(p.error().is_none(), "{:?}", p.error());
    // ... while a handle that reads it back says why it cannot have it.
    let mut handle = multiproc::ProcessBuilder::new()
        .start_method(m)
        .spawn(make_flat, 2)?;
    let err = handle.join_timeout(Duration::from_secs(60)).unwrap_err();
    check_error(&err, "codec::make_flat", "codec::Flat", LENGTH_UNKNOWN)?;
    check!(
        common::chain(&err).contains("cannot encode the result"),
        "{err}"
    );
    // Encoded here: `start` fails.
    for (p, worker, ty, why) in [
        (
            Process::new(flat_id, flat()),
            "codec::flat_id",
            "codec::Flat",
            LENGTH_UNKNOWN,
        ),
        (
            Process::new(sparse_b, sparse()),
            "codec::sparse_b",
            "codec::Sparse",
            SKIPPED,
        ),
    ] {
        let err = p.with_start_method(m).start().unwrap_err();
        check_error(&err, worker, ty, why)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// With `codec = "msgpack"`: the same shapes, carried

#[process(codec = "msgpack")]
fn json_echo(v: Value) -> Value {
    json!({ "got": v })
}

#[process(codec = "msgpack")]
fn flat_next(f: Flat) -> Flat {
    Flat { id: f.id + 1, ..f }
}

/// Two arguments: `starmap` over pairs.
#[process(codec = "msgpack")]
fn loose_times(l: Loose, n: u8) -> Loose {
    match l {
        Loose::Number(k) => Loose::Number(k * i64::from(n)),
        Loose::Text(t) => Loose::Text(t.repeat(usize::from(n))),
        Loose::Pair { a, b } => Loose::Pair { a: a * n, b },
    }
}

/// A skipped field stays skipped on the way back.
#[process(codec = "msgpack")]
fn sparse_next(s: Sparse) -> Sparse {
    Sparse { b: s.b + 1, ..s }
}

/// What the initializer of this worker received.
static REMEMBERED: Mutex<Option<(Value, Flat)>> = Mutex::new(None);

#[process(codec = "msgpack")]
fn remember(v: Value, f: Flat) {
    *REMEMBERED.lock().unwrap_or_else(|e| e.into_inner()) = Some((v, f));
}

#[process(codec = "msgpack")]
fn remembered() -> Option<(Value, Flat)> {
    REMEMBERED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// In a `Process`: every shape arrives as it was sent (a mismatch panics, and the join says so).
#[process(codec = "msgpack")]
fn arrives_intact(v: Value, f: Flat, l: Vec<Loose>, s: Sparse) {
    assert_eq!(
        v,
        document(),
        "deliberate panic, when the trial sends a wrong document: it arrived changed"
    );
    assert_eq!(f, flat());
    assert_eq!(l, loose_values());
    assert_eq!(s, sparse());
}

fn loose_values() -> Vec<Loose> {
    vec![
        Loose::Number(-3),
        Loose::Text("ab".into()),
        Loose::Pair {
            a: 2,
            b: vec![1, 300],
        },
    ]
}

fn carried_by_the_pool(m: StartMethod) -> Outcome {
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .initializer(remember, (document(), flat()))
        .build()?;
    check_eq!(
        pool.apply(json_echo, document())?,
        json!({ "got": document() })
    );
    let flats: Vec<Flat> = (0..20).map(|i| Flat { id: i, ..flat() }).collect();
    let next: Vec<Flat> = flats
        .iter()
        .map(|f| Flat {
            id: f.id + 1,
            ..f.clone()
        })
        .collect();
    check_eq!(pool.map(flat_next, flats.clone())?, next);
    check_eq!(pool.map_chunked(flat_next, flats.clone(), 7)?, next);
    let pairs: Vec<(Loose, u8)> = loose_values().into_iter().map(|l| (l, 3)).collect();
    check_eq!(
        pool.starmap(loose_times, pairs)?,
        vec![
            Loose::Number(-9),
            Loose::Text("ababab".into()),
            Loose::Pair {
                a: 6,
                b: vec![1, 300]
            },
        ]
    );
    let sparse_in = vec![
        sparse(),
        Sparse {
            note: Some("n".into()),
            tags: vec![1, 2],
            ..sparse()
        },
    ];
    let sparse_out: Vec<Sparse> = pool
        .imap(sparse_next, sparse_in.clone())
        .collect::<Result<_, _>>()?;
    check_eq!(sparse_out.len(), 2);
    for (out, sent) in sparse_out.iter().zip(&sparse_in) {
        check_eq!(
            out,
            &Sparse {
                b: sent.b + 1,
                ..sent.clone()
            }
        );
    }
    let unordered: Vec<Flat> = pool
        .imap_unordered(flat_next, flats.clone())
        .chunksize(3)
        .collect::<Result<_, _>>()?;
    check_eq!(unordered.len(), next.len());
    for f in &next {
        check!(unordered.contains(f), "{f:?} missing");
    }
    check_eq!(
        pool.apply_async(json_echo, json!(null)).get()?,
        json!({ "got": null })
    );
    // The initializer's arguments, through the same codec, in every worker.
    for _ in 0..4 {
        check_eq!(pool.apply(remembered, ())?, Some((document(), flat())));
    }
    Ok(())
}

fn carried_by_a_process(m: StartMethod) -> Outcome {
    let p = Process::new(
        arrives_intact,
        (document(), flat(), loose_values(), sparse()),
    )
    .with_start_method(m);
    p.start()?;
    finish_with(&p, 0)?;
    // A wrong value is seen as wrong: the check in the child can fail.
    let p = Process::new(arrives_intact, (json!(1), flat(), loose_values(), sparse()))
        .with_start_method(m);
    p.start()?;
    finish_with(&p, 1)?;
    check_eq!(p.error().map(|e| e.kind()), Some(ErrorKind::Panicked));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Process types: the value (its fields) in the codec of the impl block

/// A process type with the default codec whose value does not encode: a flattened field.
#[derive(Debug, Serialize, Deserialize)]
pub struct FlatJob {
    id: u64,
    #[serde(flatten)]
    inner: Inner,
}

#[process]
impl FlatJob {
    fn run(&mut self) {}
}

/// A process type with the default codec whose value encodes but does not decode in the
/// child: a `serde_json::Value` and an untagged enum.
#[derive(Debug, Serialize, Deserialize)]
pub struct LooseJob {
    doc: Value,
    loose: Loose,
}

#[process]
impl LooseJob {
    fn run(&self) {}
}

/// The same shapes in one process type, with the self-describing codec: an untagged enum
/// field, a flattened field and a `serde_json::Value` field. The child checks them (a mismatch
/// panics, exit code 1) and writes what it got to `out`, for the parent to compare.
#[derive(Debug, Serialize, Deserialize)]
pub struct Shaped {
    doc: Value,
    loose: Vec<Loose>,
    #[serde(flatten)]
    inner: Inner,
    sparse: Sparse,
    out: PathBuf,
}

#[process(codec = "msgpack")]
impl Shaped {
    fn run(&mut self) {
        assert_eq!(
            self.doc,
            document(),
            "deliberate panic, when the trial sends a wrong document: it arrived changed"
        );
        assert_eq!(self.loose, loose_values());
        assert_eq!(self.inner, flat().inner);
        assert_eq!(self.sparse, sparse());
        let got = json!({
            "doc": self.doc,
            "loose": self.loose,
            "inner": self.inner,
            "sparse": self.sparse,
        });
        std::fs::write(self.out.join("arrived.json"), got.to_string())
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", self.out.display()));
    }
}

/// What a codec error of a process type says: the kind, the type, why, and the way out.
fn check_type_error(err: &multiproc::Error, ty: &str, why: &str) -> Outcome {
    let text = err.to_string();
    check_eq!(err.kind(), ErrorKind::Codec);
    check!(
        text.contains(&format!("process type `{ty}`")),
        "no type in: {text}"
    );
    check!(text.contains(why), "no `{why}` in: {text}");
    check!(
        text.contains("#[process(codec = \"msgpack\")]"),
        "no hint in: {text}"
    );
    Ok(())
}

fn errors_with_a_process_type(m: StartMethod) -> Outcome {
    // Encoded here: `start` fails.
    let p = Process::from(FlatJob {
        id: 1,
        inner: flat().inner,
    })
    .with_start_method(m);
    let err = p.start().unwrap_err();
    check_type_error(&err, "codec::FlatJob", LENGTH_UNKNOWN)?;
    check!(
        common::chain(&err).contains("cannot encode the value"),
        "{err}"
    );
    // Decoded in the child: it fails there, and `error()` says why.
    let p = Process::from(LooseJob {
        doc: document(),
        loose: Loose::Text("x".into()),
    })
    .with_start_method(m);
    p.start()?;
    finish_with(&p, 1)?;
    let err = p.error().ok_or("no error")?;
    check_type_error(&err, "codec::LooseJob", NOT_SELF_DESCRIBING)?;
    check!(
        common::chain(&err).contains("cannot decode the value"),
        "{err}"
    );
    Ok(())
}

fn carried_in_a_process_type(m: StartMethod) -> Outcome {
    let out = common::scratch("codec-process-type");
    let p = Process::from(Shaped {
        doc: document(),
        loose: loose_values(),
        inner: flat().inner,
        sparse: sparse(),
        out: out.clone(),
    })
    .with_start_method(m);
    p.start()?;
    finish_with(&p, 0)?;
    let got: Value = serde_json::from_str(&std::fs::read_to_string(out.join("arrived.json"))?)?;
    check_eq!(
        got,
        json!({
            "doc": document(),
            "loose": loose_values(),
            "inner": flat().inner,
            "sparse": sparse(),
        })
    );
    // A wrong value is seen as wrong: the check in the child can fail.
    let p = Process::from(Shaped {
        doc: json!(1),
        loose: loose_values(),
        inner: flat().inner,
        sparse: sparse(),
        out,
    })
    .with_start_method(m);
    p.start()?;
    finish_with(&p, 1)?;
    check_eq!(p.error().map(|e| e.kind()), Some(ErrorKind::Panicked));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Plain old data: as its bytes, whatever the alias

/// Plain old data whose serde impls fail: a value that arrives took the bytes' way.
#[derive(Debug, Clone, Copy, PartialEq, multiproc::Pod, multiproc::Zeroable)]
#[bytemuck(crate = "multiproc::bytemuck")]
#[repr(C)]
pub struct Particle {
    pos: [f32; 3],
    id: u32,
    mass: f64,
}

impl Serialize for Particle {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "serde was asked to encode a particle",
        ))
    }
}

impl<'de> Deserialize<'de> for Particle {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Particle, D::Error> {
        Err(serde::de::Error::custom(
            "serde was asked to decode a particle",
        ))
    }
}

fn particle(i: u32) -> Particle {
    Particle {
        pos: [i as f32, -(i as f32), 0.5],
        id: i,
        mass: f64::from(i) * 1.5,
    }
}

/// Aliases the macro cannot see through.
pub type Samples = Vec<f64>;
pub type Cloud = Vec<Particle>;
pub type Body = Particle;

#[process]
fn sum_samples(v: Samples) -> f64 {
    v.iter().sum()
}

#[process]
fn echo_samples(v: Samples) -> std::vec::Vec<f64> {
    v
}

/// Several arguments: each takes its own way (the vector as its bytes, the number through
/// serde).
#[process]
fn scaled(v: Vec<f64>, k: f64) -> Samples {
    v.into_iter().map(|x| x * k).collect()
}

#[process]
fn heaviest(cloud: Cloud) -> Body {
    cloud
        .into_iter()
        .fold(particle(0), |a, b| if b.mass > a.mass { b } else { a })
}

#[process]
fn moved(p: Body) -> Particle {
    Particle {
        pos: [p.pos[0] + 1.0, p.pos[1], p.pos[2]],
        ..p
    }
}

#[process]
fn weighed(cloud: Cloud, label: String, k: f64) -> (String, f64) {
    (label, cloud.iter().map(|p| p.mass * k).sum())
}

#[process]
fn corners(n: u32) -> Vec<[f32; 3]> {
    (0..n).map(|i| [i as f32; 3]).collect()
}

#[process]
fn check_cloud(cloud: Cloud) {
    assert_eq!(cloud.len(), 1000);
    assert_eq!(cloud[999], particle(999));
}

fn plain_old_data_by_the_pool(m: StartMethod) -> Outcome {
    let pool = Pool::builder().processes(2).start_method(m).build()?;
    // A vector of f64 through an alias: large (a megabyte) and empty.
    let samples: Samples = (0..1 << 17).map(f64::from).collect();
    check_eq!(
        pool.apply(sum_samples, samples.clone())?,
        samples.iter().sum::<f64>()
    );
    check_eq!(pool.apply(sum_samples, Vec::new())?, 0.0);
    // NaN and negative zero keep their bits.
    let odd = vec![f64::NAN, -0.0, f64::from_bits(0x7ff0_0000_0000_0001)];
    check_eq!(pool.apply(scaled, (vec![1.0, -2.0], 3.0))?, vec![3.0, -6.0]);
    // A vector of Pod structs beside other arguments: its bytes (its serde impls fail).
    let few: Cloud = (0..4).map(particle).collect();
    check_eq!(
        pool.apply(weighed, (few.clone(), "w".into(), 2.0))?,
        ("w".to_string(), 18.0)
    );
    let jobs: Vec<(Cloud, String, f64)> =
        (0..20).map(|i| (few.clone(), i.to_string(), 1.0)).collect();
    let totals = pool.starmap(weighed, jobs)?;
    check_eq!(totals.len(), 20);
    check_eq!(totals[19].clone(), ("19".to_string(), 9.0));
    let back = pool.apply(echo_samples, odd.clone())?;
    check_eq!(
        back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        odd.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    // Pod structs: a vector of them, and `map` over them, both ways.
    let cloud: Cloud = (0..5000).map(particle).collect();
    check_eq!(pool.apply(heaviest, cloud.clone())?, particle(4999));
    let expected: Vec<Particle> = cloud.iter().map(|p| moved(*p)).collect();
    check_eq!(pool.map(moved, cloud.clone())?, expected);
    check_eq!(pool.map_chunked(moved, cloud.clone(), 7)?, expected);
    let from_imap: Vec<Particle> = pool
        .imap(moved, cloud.clone())
        .chunksize(100)
        .collect::<Result<_, _>>()?;
    check_eq!(from_imap, expected);
    // Vectors of arrays, and a vector per item of `map`.
    check_eq!(pool.apply(corners, 3)?, vec![[0.0; 3], [1.0; 3], [2.0; 3]]);
    let lists: Vec<Samples> = (0..50).map(|n| vec![0.5; n]).collect();
    let sums: Vec<f64> = lists.iter().map(|l| l.iter().sum()).collect();
    check_eq!(pool.map(sum_samples, lists)?, sums);
    Ok(())
}

/// A serde struct with nested data, as `map` carries chunks of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    id: u64,
    name: String,
    tags: Vec<u16>,
    kind: Kind,
    score: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    A,
    B(i32),
    C { x: u8 },
}

fn record(i: u32) -> Record {
    Record {
        id: u64::from(i) << 20,
        name: "r".repeat(i as usize % 5),
        tags: (0..(i % 4) as u16).collect(),
        kind: match i % 3 {
            0 => Kind::A,
            1 => Kind::B(-(i as i32)),
            _ => Kind::C { x: i as u8 },
        },
        score: i.is_multiple_of(2).then_some(f64::from(i) / 4.0),
    }
}

pub type Entry = Record;

#[process]
fn renamed(r: Entry) -> Record {
    Record {
        name: format!("{}!", r.name),
        tags: r.tags.into_iter().rev().collect(),
        ..r
    }
}

/// Plain old data in, a serde struct out.
#[process]
fn record_of(p: Body) -> Record {
    record(p.id)
}

/// A serde struct in, plain old data out.
#[process]
fn particle_of(r: Record) -> Particle {
    particle((r.id >> 20) as u32)
}

/// An iterator that says it holds `claimed` items and holds `real`: `map` must not trust it.
struct Lying<T> {
    next: u32,
    real: u32,
    claimed: usize,
    make: fn(u32) -> T,
}

impl<T> Iterator for Lying<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        (self.next < self.real).then(|| {
            self.next += 1;
            (self.make)(self.next - 1)
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.claimed, Some(self.claimed))
    }
}

fn lying<T>(real: u32, claimed: usize, make: fn(u32) -> T) -> Lying<T> {
    Lying {
        next: 0,
        real,
        claimed,
        make,
    }
}

fn structs_by_map(m: StartMethod) -> Outcome {
    let pool = Pool::builder().processes(2).start_method(m).build()?;
    // Odd sizes and empty, from a list, a slice's iterator and a lazy range.
    for n in [0u32, 1, 2, 3, 7, 1000, 12_345] {
        let records: Vec<Record> = (0..n).map(record).collect();
        let expected: Vec<Record> = records.iter().cloned().map(*renamed).collect();
        check_eq!(pool.map(renamed, records.clone())?, expected);
        check_eq!(pool.map(renamed, records.iter().cloned())?, expected);
        check_eq!(pool.map(renamed, (0..n).map(record))?, expected);
        check_eq!(pool.map_chunked(renamed, (0..n).map(record), 3)?, expected);
        check_eq!(pool.map_async(renamed, records).get()?, expected);
        // Plain old data (through an alias) both ways, and each way with serde.
        let particles: Vec<Particle> = (0..n).map(particle).collect();
        let moved_back: Vec<Particle> = particles.iter().map(|p| moved(*p)).collect();
        check_eq!(pool.map(moved, particles.iter().copied())?, moved_back);
        let records: Vec<Record> = (0..n).map(record).collect();
        check_eq!(pool.map(record_of, particles.clone())?, records);
        check_eq!(pool.map(particle_of, records)?, particles);
    }
    // An input that ends before its word, or goes on after it: every item, in order, once.
    for (real, claimed) in [(37, 100), (95, 10), (5, 0), (0, 3), (1, 1000)] {
        let expected: Vec<Record> = (0..real).map(|i| renamed(record(i))).collect();
        check_eq!(pool.map(renamed, lying(real, claimed, record))?, expected);
        check_eq!(
            pool.map_chunked(renamed, lying(real, claimed, record), 4)?,
            expected
        );
        let expected: Vec<Particle> = (0..real).map(|i| moved(particle(i))).collect();
        check_eq!(pool.map(moved, lying(real, claimed, particle))?, expected);
    }
    Ok(())
}

fn plain_old_data_by_a_process(m: StartMethod) -> Outcome {
    let cloud: Cloud = (0..1000).map(particle).collect();
    let p = Process::new(check_cloud, cloud.clone()).with_start_method(m);
    p.start()?;
    finish_with(&p, 0)?;
    // A wrong value is seen as wrong: the check in the child can fail.
    let p = Process::new(check_cloud, cloud[1..].to_vec()).with_start_method(m);
    p.start()?;
    finish_with(&p, 1)?;
    // A result as its bytes, back from a process.
    let mut handle = multiproc::ProcessBuilder::new()
        .start_method(m)
        .spawn(heaviest, (0..10).map(particle).collect())?;
    check_eq!(handle.join_timeout(Duration::from_secs(60))?, particle(9));
    Ok(())
}

fn main() {
    multiproc::init();
    let trials = trials!(each_method:
        structs_by_map,
        plain_old_data_by_the_pool,
        plain_old_data_by_a_process,
        errors_with_the_pool,
        errors_with_a_process,
        carried_by_the_pool,
        carried_by_a_process,
        errors_with_a_process_type,
        carried_in_a_process_type,
    );
    common::run(trials);
}
