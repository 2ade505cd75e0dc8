//! Not public API: every decoder of what another process sends, as named targets for the fuzz
//! harness in `fuzz/` (feature `fuzzing`).
//!
//! A target takes arbitrary bytes, hands them to the decoder as the other process would (on a
//! socket whose writer then closed, so no read ever waits), and throws away the outcome: an
//! error is the expected answer to garbage; a panic, a hang or an allocation beyond the
//! harness's bound is a bug. A new target is one entry in [`TARGETS`](crate::__fuzz::TARGETS).
//!
//! The fork server's requests and replies are left out while their protocol is rewritten.
//! Records read from shared memory (a pool worker's rings) are fed the same way: written where
//! a committed record lies.

use std::io::{IoSlice, Read};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::block::Block;
use crate::bootstrap::{ChildMessage, Credential, Launch, Role};
use crate::carrier::Carrier;
use crate::channel::record::{self, Endpoint, Incoming};
use crate::context::StartMethod;
use crate::error::{ErrorKind, RemotePanic, Result};
use crate::handle::{self, Encoded};
use crate::pool::rings;
use crate::pool::worker::{Reply, TaskHeader, TaskOutcome};
use crate::registry::BuildId;
use crate::{carrier, codec, sys, wire};

/// A decoder under test.
#[derive(Debug)]
pub struct Target {
    /// Its name, which is also the folder of its corpus (`fuzz/corpus/<name>`).
    pub name: &'static str,
    /// Feeds it these bytes; never panics, never waits.
    pub run: fn(&[u8]),
    /// Valid inputs, for the harness to mutate.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "bootstrap-child",
        run: bootstrap_child,
        seeds: bootstrap_child_seeds,
    },
    Target {
        name: "bootstrap-parent",
        run: bootstrap_parent,
        seeds: bootstrap_parent_seeds,
    },
    Target {
        name: "pool-task",
        run: pool_task,
        seeds: pool_task_seeds,
    },
    Target {
        name: "pool-reply",
        run: pool_reply,
        seeds: pool_reply_seeds,
    },
    Target {
        name: "pool-ring",
        run: pool_ring,
        seeds: pool_ring_seeds,
    },
    Target {
        name: "channel-record",
        run: channel_record,
        seeds: channel_record_seeds,
    },
    Target {
        name: "codec",
        run: codec_values,
        seeds: codec_seeds,
    },
    Target {
        name: "carrier-pod",
        run: carrier_pod,
        seeds: carrier_pod_seeds,
    },
];

/// The most address space a decoder may reserve ahead of the bytes of one declared part (see
/// `wire`): the harness's bound on a single allocation is stated from it.
pub const AHEAD: usize = wire::AHEAD;

/// The reading end of a socket that holds `input` and whose writer is closed. Inputs of the
/// harness fit a socket's buffer; the writer stops at what it does not take.
fn stream_with(input: &[u8]) -> Option<UnixStream> {
    let (a, b) = UnixStream::pair().ok()?;
    let mut sent = 0;
    while sent < input.len() {
        match sys::send_now_with_fds(a.as_fd(), &mut [IoSlice::new(&input[sent..])], &[]) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
    }
    drop(a);
    Some(b)
}

fn now() -> Option<Instant> {
    Some(Instant::now())
}

/// A child's bootstrap: the parent's build, its role, the descriptors a launch announces.
fn bootstrap_child(input: &[u8]) {
    let Some(control) = stream_with(input) else {
        return;
    };
    let _ = (|| -> Result<()> {
        if wire::recv::<Credential>(&control, now())?.is_none() {
            return Ok(());
        }
        if wire::recv::<BuildId>(&control, now())?.is_none() {
            return Ok(());
        }
        if let Some(Role::Run(launch)) = wire::recv::<Role>(&control, now())? {
            wire::recv_fds(&control, launch.fds)?;
        }
        Ok(())
    })();
}

/// What a parent reads from its child: the bootstrap's answer, then failures and panics.
fn bootstrap_parent(input: &[u8]) {
    let Some(control) = stream_with(input) else {
        return;
    };
    while let Ok(Some(_)) = wire::recv::<ChildMessage>(&control, now()) {}
}

/// What a pool worker reads: tasks, their arguments decoded.
fn pool_task(input: &[u8]) {
    let Some(control) = stream_with(input) else {
        return;
    };
    let mut inbox = wire::Reader::new();
    while let Ok(Some((_, task))) = inbox.recv::<TaskHeader>(&control, now()) {
        let Encoded { bytes, fds, .. } = task;
        let _ = handle::with_incoming(fds, || {
            use codec::Format;
            codec::Compact::decode::<(u64, String, Vec<u32>)>(&bytes)
        });
    }
}

/// What the pool's driver reads from a worker, without waiting.
fn pool_reply(input: &[u8]) {
    let Some(control) = stream_with(input) else {
        return;
    };
    let mut inbox = wire::Reader::new();
    while let Ok(wire::Received::Message(..)) = inbox.try_recv::<Reply>(&control) {}
}

/// What the pool reads from a worker's rings, which the other process writes: a record's
/// framing in the ring, then the reply or the task (and its arguments) it holds.
fn pool_ring(input: &[u8]) {
    rings::read_forged::<Reply, TaskHeader>(input);
}

thread_local! {
    /// A channel's socket pair, made once: records are whole, so one leaves nothing behind.
    static CHANNEL: Option<(Endpoint, Endpoint)> = Endpoint::pair().ok();
}

/// A record of a queue or pipe, as one `SOCK_SEQPACKET` record, decoded as an item.
fn channel_record(input: &[u8]) {
    CHANNEL.with(|channel| {
        let Some((writer, reader)) = channel else {
            return;
        };
        let Ok(fd) = writer.fd() else { return };
        if sys::send_record(fd, &[IoSlice::new(input)], &[], true).is_err() {
            return;
        }
        if let Ok(Incoming::Record(received)) = reader.recv(true) {
            let _ = record::decode::<(String, Vec<u64>, Option<u8>)>(received);
        }
    });
}

/// A struct that takes no bytes.
#[derive(serde::Deserialize)]
struct Empty {}

/// Values decoded by the codec from bytes another process wrote (a ring's inline items, a
/// task's arguments, a result).
fn codec_values(input: &[u8]) {
    let _ = codec::decode::<Launch>(input);
    let _ = codec::decode::<Vec<String>>(input);
    let _ = codec::decode::<(Vec<Vec<u8>>, Option<u64>)>(input);
    let _ = codec::decode::<RemotePanic>(input);
    // Sequences of values that take no bytes, against a small allowance (nearly every random
    // input forges a count of them, which would take the whole of the usual one, some
    // milliseconds): no decoded value holds more of them than the allowance pays for, 8 bytes
    // each at least (a sequence's length takes 8 bytes: only the units are free).
    const FREE: usize = 1 << 12;
    if let Ok(nested) = codec::decode_allowing::<Vec<Vec<()>>>(input, FREE) {
        let units: usize = nested.iter().map(Vec::len).sum();
        assert!(
            units <= FREE / 8,
            "{units} units decoded on an allowance of {FREE} bytes"
        );
    }
    if let Ok((units, map)) =
        codec::decode_allowing::<(Vec<Empty>, std::collections::BTreeMap<u8, ()>)>(input, FREE)
    {
        assert!(
            units.len() + map.len() <= FREE / 8 + 256,
            "{} values decoded on an allowance of {FREE} bytes",
            units.len() + map.len()
        );
    }
    // Chunks decoded onto a list, as a pool's results are.
    use codec::Format;
    let _ = codec::Compact::decode_seq_into::<String>(input, &mut Vec::new());
    let _ = codec::Compact::decode_seq_into::<(char, bool, f32)>(input, &mut Vec::new());
    // A worker's arguments that own nothing on the heap: checked, then handed on one at a time.
    let mut count = 0usize;
    let _ = codec::Compact::decode_seq_each::<(char, bool, Option<f32>), _>(
        input,
        &mut count,
        |count, _| *count += 1,
    );
}

/// Plain old data from a pool message (`carrier::pod`): vectors of `f64` (copied into aligned
/// vectors), of byte triples (blocks taken without a copy), and values of 12 bytes. The first
/// byte of `input` says how many blocks come (0 to 3), the next ones their lengths in
/// triples; the rest is the payload.
fn carrier_pod(input: &[u8]) {
    let (blocks, payload) = match input.split_first() {
        Some((count, rest)) => {
            let (lens, payload) = rest.split_at(usize::from(count % 4).min(rest.len()));
            let blocks: Vec<Block> = lens
                .iter()
                .map(|&l| Block::from(vec![7; usize::from(l) * 3]))
                .collect();
            (blocks, payload)
        }
        None => (Vec::new(), input),
    };
    let _ = carrier::decode_vecs_into::<f64>(payload, blocks.clone(), &mut Vec::new());
    let _ = carrier::decode_vecs_into::<[u8; 3]>(payload, blocks.clone(), &mut Vec::new());
    let _ = carrier::decode_items_into::<[u32; 3]>(payload, blocks.clone(), &mut Vec::new());
    let _ = <carrier::Split<Three> as Carrier<ThreeArgs>>::decode(payload, blocks);
}

/// A worker of three arguments with the `Choice`s `#[process]` writes for them: two vectors
/// of plain old data (carried as their bytes by `Split`) beside a string.
struct Three;

type ThreeArgs = (Vec<f64>, String, Vec<u8>);

macro_rules! arg_choices {
    ($($n:literal $t:ty),*) => {$(
        impl carrier::Choice<carrier::Arg<$n>, $t> for Three {
            fn way() -> carrier::Way<$t> {
                #[allow(unused_imports)]
                use carrier::{PodItemWay as _, PodVecWay as _, SerdeWay as _};
                (&&&carrier::Probe::<$t>::new()).way()
            }
        }
    )*};
}

arg_choices!(0 Vec<f64>, 1 String, 2 Vec<u8>);

fn carrier_pod_seeds() -> Vec<Vec<u8>> {
    let mut inline = carrier::Stash::new(false);
    let vectors = carrier::encode_vecs(vec![vec![1.5f64, -2.0], Vec::new()], &mut inline);
    let triples = carrier::encode_vecs(vec![vec![[9u8, 8, 7]; 5]], &mut inline);
    let items = carrier::encode_items(&[[1u32, 2, 3], [4, 5, 6]]);
    // A vector of two triples in block #0 (6 bytes: one block, two triples long), beside an
    // inline one.
    let head = |len: u64, at: u64| [len.to_ne_bytes(), at.to_ne_bytes()].concat();
    let in_block = [&[1u8, 2][..], &head(6, 0), &head(3, u64::MAX), &[1, 2, 3]].concat();
    let mut seeds = vec![in_block];
    let three: Vec<ThreeArgs> = vec![
        (vec![0.5, -1.0], "abc".to_string(), vec![1, 2, 3]),
        (Vec::new(), String::new(), Vec::new()),
    ];
    let split = <carrier::Split<Three> as Carrier<ThreeArgs>>::encode(three, &mut inline);
    for encoded in [vectors, triples, items, split].into_iter().flatten() {
        seeds.push([&[0u8][..], &encoded].concat());
    }
    seeds
}

/// The bytes `send` writes on a socket.
fn written(send: impl FnOnce(&UnixStream) -> Result<()>) -> Vec<u8> {
    let Ok((a, mut b)) = UnixStream::pair() else {
        return Vec::new();
    };
    if send(&a).is_err() {
        return Vec::new();
    }
    drop(a);
    let mut out = Vec::new();
    let _ = b.read_to_end(&mut out);
    out
}

fn launch(fds: u32) -> Launch {
    Launch {
        entry: "tests::process::worker".into(),
        payload: codec::encode(&(7u64, "argument".to_string())).unwrap_or_default(),
        name: "Process-1".into(),
        identity: vec![1],
        daemon: false,
        parent_name: "MainProcess".into(),
        parent_pid: 4242,
        start_method: StartMethod::Spawn,
        fds,
        returns: true,
    }
}

fn bootstrap_child_seeds() -> Vec<Vec<u8>> {
    let build = BuildId::current();
    let credential = Credential {
        fd: 7,
        key: [0x5e; 12],
    };
    let run = written(|s| {
        wire::send(s, &credential)?;
        wire::send(s, &build)?;
        wire::send(s, &Role::Run(launch(0)))
    });
    // Two descriptors announced (a harness cannot send them: their absence is an error).
    let with_fds = written(|s| {
        wire::send(s, &credential)?;
        wire::send(s, &build)?;
        wire::send(s, &Role::Run(launch(2)))
    });
    let server = written(|s| {
        wire::send(s, &credential)?;
        wire::send(s, &build)?;
        wire::send(s, &Role::ForkServer { preload: vec![] })
    });
    vec![run, with_fds, server]
}

fn panic_report() -> RemotePanic {
    RemotePanic {
        message: "boom".into(),
        location: Some("src/main.rs:1:2".into()),
        process: "Process-1".into(),
        pid: 4242,
    }
}

fn bootstrap_parent_seeds() -> Vec<Vec<u8>> {
    vec![written(|s| {
        wire::send(s, &ChildMessage::Ready)?;
        wire::send(
            s,
            &ChildMessage::Failed {
                kind: ErrorKind::Bootstrap,
                message: "no".into(),
            },
        )?;
        wire::send(s, &ChildMessage::Panicked(panic_report()))
    })]
}

fn body(bytes: Vec<u8>, blocks: Vec<Vec<u8>>) -> Encoded {
    Encoded {
        bytes,
        fds: Vec::new(),
        blocks: blocks.into_iter().map(Block::from).collect(),
    }
}

fn pool_task_seeds() -> Vec<Vec<u8>> {
    let header = TaskHeader {
        job: 3,
        chunk: 1,
        entry: "tests::pool::square".into(),
        ticket: 0x5eed,
        claim: 0,
    };
    let args = codec::encode(&(7u64, "x".to_string(), vec![1u32, 2])).unwrap_or_default();
    vec![
        written(|s| wire::send_message(s, &header, &body(args.clone(), Vec::new()))),
        written(|s| {
            wire::send_message(s, &header, &body(args, vec![vec![1; 40], Vec::new()]))?;
            wire::send_message(s, &header, &Encoded::default())
        }),
    ]
}

fn pool_reply_seeds() -> Vec<Vec<u8>> {
    vec![written(|s| {
        wire::send_message(s, &Reply::Ready, &Encoded::default())?;
        let done = Reply::Done {
            job: 1,
            chunk: 0,
            ticket: 0x5eed,
            outcome: TaskOutcome::Ok,
        };
        wire::send_message(s, &done, &body(vec![9; 24], vec![vec![5; 16]]))?;
        let panicked = Reply::Done {
            job: 2,
            chunk: 1,
            ticket: 0x5eed,
            outcome: TaskOutcome::Panicked(panic_report()),
        };
        wire::send_message(s, &panicked, &Encoded::default())?;
        wire::send_message(s, &Reply::InitFailed("no".into()), &Encoded::default())
    })]
}

fn pool_ring_seeds() -> Vec<Vec<u8>> {
    let done = Reply::Done {
        job: 1,
        chunk: 0,
        ticket: 0x5eed,
        outcome: TaskOutcome::Panicked(panic_report()),
    };
    let task = TaskHeader {
        job: 3,
        chunk: 1,
        entry: "tests::pool::square".into(),
        ticket: 0x5eed,
        claim: 1,
    };
    let args = codec::encode(&(7u64, "x".to_string(), vec![1u32, 2])).unwrap_or_default();
    vec![
        rings::forged_seed(&done, &[9; 24]),
        rings::forged_seed(&task, &args),
        rings::forged_bulk_seed(&done, 2, 24, 100),
        rings::forged_bulk_seed(&task, 0, 4000, 0),
    ]
}

fn channel_record_seeds() -> Vec<Vec<u8>> {
    let Ok((a, b)) = Endpoint::pair() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let item = ("item".to_string(), vec![1u64, 2, 3], Some(4u8));
    for seq in [0, 7] {
        let sent = handle::encode(&item)
            .and_then(|encoded| a.outgoing(encoded))
            .and_then(|outgoing| a.send(&outgoing, seq, false));
        let Ok(b_fd) = b.fd() else { break };
        if sent.is_err() {
            break;
        }
        let mut buf = vec![0u8; 1 << 17];
        if let Ok(got) = sys::recv_record(b_fd, &mut buf, 0, true) {
            buf.truncate(got.len);
            out.push(buf);
        }
    }
    out
}

fn codec_seeds() -> Vec<Vec<u8>> {
    [
        codec::encode(&launch(1)),
        codec::encode(&vec!["a".to_string(), "bc".to_string()]),
        codec::encode(&vec![('é', true, -0.5f32), ('😀', false, f32::NAN)]),
        codec::encode(&(vec![vec![1u8, 2], Vec::new()], Some(5u64))),
        codec::encode(&panic_report()),
        // Units: 500 of them in two sequences, at the edge of the small allowance.
        codec::encode(&vec![vec![(); 300], vec![(); 200]]),
    ]
    .into_iter()
    .flatten()
    .collect()
}
