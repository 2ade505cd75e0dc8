//! Pipes and queues under every start method: ports of CPython's `_TestQueue`,
//! `_TestConnection`, `_TestPoll` and `test_task_done`, many producers and consumers (every
//! item exactly once), a consumer SIGKILLed mid-stream, a producer SIGKILLed mid-put, a pipe
//! peer killed or dropped while the other end waits, items with descriptors and spilled
//! items in order among small ones, 100 MiB messages, channels as pool task and initializer
//! arguments, and no leaked descriptor.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{linked, unlinked, ClaimsDepth, Node, Outcome, LONG};
use libtest_mimic::Failed;
use multiproc::{
    process, Connection, ErrorKind, Event, JoinableQueue, Pipe, Pool, Process, Queue, Receiver,
    Sender, SimpleQueue, StartMethod,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Short waits of CPython's tests (`TIMEOUT1`, ...): long enough to measure, short enough
/// to keep the suite fast.
const SHORT: Duration = Duration::from_millis(100);

fn start(p: &Process) -> Outcome {
    p.start()
        .map_err(|err| format!("start failed: {err}").into())
}

fn joined(p: &Process) -> Outcome {
    match p.join_timeout(LONG)? {
        Some(0) => Ok(()),
        other => Err(format!(
            "{} ended with {other:?}: {:?}",
            p.name(),
            p.error().map(|e| common::chain(&e))
        )
        .into()),
    }
}

/// Elapsed time of `f`, with its result.
fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

fn kind<T: std::fmt::Debug>(r: multiproc::Result<T>) -> Result<ErrorKind, Failed> {
    match r {
        Ok(v) => Err(format!("expected an error, got {v:?}").into()),
        Err(err) => Ok(err.kind()),
    }
}

/// Bytes encoded as one byte string (fast to encode, unlike a `Vec<u8>` element by element).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// `len` bytes of `seed`, with a marker every 4 KiB (cheap to build and compare, even in a
/// debug build, and different for every seed and length).
fn blob(len: usize, seed: u8) -> Blob {
    let mut v = vec![seed; len];
    for (n, i) in (0..len).step_by(4096).enumerate() {
        v[i] = seed.wrapping_add(n as u8);
    }
    Blob(v)
}

// ---------------------------------------------------------------------------------------
// Pipes
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Seq(Vec<f64>),
    Text(String),
    Big(Blob),
    Nothing,
}

/// CPython's `_echo`: sends back every message until the other end is closed.
#[process]
fn echo(conn: Connection<Msg, Msg>) {
    while let Ok(msg) = conn.recv() {
        if conn.send(msg).is_err() {
            break;
        }
    }
}

/// `_TestConnection.test_connection`.
fn pipe_duplex(m: StartMethod) -> Outcome {
    let (conn, child) = Pipe::<Msg, Msg>::duplex()?;
    let p = Process::new(echo, child).with_start_method(m);
    start(&p)?;
    let seq = Msg::Seq(vec![1.0, 2.25, -0.5]);
    conn.send(&seq)?;
    check_eq!(conn.recv()?, seq);
    let text = Msg::Text("hello world".repeat(10));
    conn.send(&text)?;
    check_eq!(conn.recv()?, text);

    let (ready, elapsed) = timed(|| conn.poll(Duration::ZERO));
    check!(!ready?, "nothing to read yet");
    check!(elapsed < SHORT, "poll(0) returned at once ({elapsed:?})");
    let (ready, elapsed) = timed(|| conn.poll(SHORT));
    check!(!ready?, "still nothing to read");
    check!(elapsed >= SHORT, "poll waited its timeout ({elapsed:?})");

    conn.send(Msg::Nothing)?;
    check!(conn.poll(LONG)?, "the echo arrives");
    let (ready, elapsed) = timed(|| conn.poll(SHORT));
    check!(ready?, "still ready before recv");
    check!(
        elapsed < SHORT,
        "poll returned at once when ready ({elapsed:?})"
    );
    check_eq!(conn.recv()?, Msg::Nothing);

    let big = Msg::Big(blob(16 << 20, 1));
    conn.send(&big)?;
    check_eq!(conn.recv()?, big);

    drop(conn); // the child's recv fails with Disconnected: it returns
    joined(&p)
}

#[process]
fn write_numbers(tx: Sender<u32>, n: u32) {
    for i in 0..n {
        tx.send(i).expect("send");
    }
}

/// `test_duplex_false`, and a reader that ends when the writer is gone.
fn pipe_simplex(m: StartMethod) -> Outcome {
    let (rx, tx) = Pipe::<u32>::simplex()?;
    let p = Process::new(write_numbers, (tx, 500)).with_start_method(m);
    start(&p)?;
    let got: Vec<u32> = rx.collect::<multiproc::Result<_>>()?;
    check_eq!(got, (0..500).collect::<Vec<_>>());
    joined(&p)
}

#[process]
fn send_after(tx: Sender<String>, millis: u64) {
    std::thread::sleep(Duration::from_millis(millis));
    tx.send("late".to_string()).expect("send");
    // Keep the end open until the parent has read, so that poll sees the message, not EOF.
    std::thread::sleep(Duration::from_millis(millis));
}

/// `recv_timeout`, `try_recv` and `poll` with a message that arrives later.
fn pipe_poll_timeout(m: StartMethod) -> Outcome {
    let (rx, tx) = Pipe::<String>::simplex()?;
    let p = Process::new(send_after, (tx, 300)).with_start_method(m);
    start(&p)?;
    check_eq!(kind(rx.try_recv())?, ErrorKind::Empty);
    let (r, elapsed) = timed(|| rx.recv_timeout(SHORT));
    check_eq!(kind(r)?, ErrorKind::Timeout);
    check!(elapsed >= SHORT, "recv_timeout waited ({elapsed:?})");
    check!(rx.poll(LONG)?, "the message arrives");
    check_eq!(rx.recv_timeout(SHORT)?, "late");
    joined(&p)
}

#[process]
fn close_at_once(_conn: Connection<u8, u8>) {}

/// Exits with 0 if its `recv` sees the parent's end closed, 3 otherwise.
#[process]
fn expect_disconnected(conn: Connection<u8, u8>) {
    match conn.recv() {
        Err(err) if err.kind() == ErrorKind::Disconnected => {}
        other => {
            eprintln!("expected Disconnected, got {other:?}");
            std::process::exit(3)
        }
    }
    match conn.send(1) {
        Err(err) if err.kind() == ErrorKind::Disconnected => {}
        other => {
            eprintln!("expected Disconnected, got {other:?}");
            std::process::exit(4)
        }
    }
}

/// A closed peer is `Disconnected` on both sides, never a hang: the child's end closed by
/// its exit, and the parent's end dropped (a fork child closes its inherited copy).
fn pipe_peer_closed(m: StartMethod) -> Outcome {
    let (conn, child) = Pipe::<u8, u8>::duplex()?;
    let p = Process::new(close_at_once, child).with_start_method(m);
    start(&p)?;
    check_eq!(kind(conn.recv_timeout(LONG))?, ErrorKind::Disconnected);
    check_eq!(kind(conn.recv())?, ErrorKind::Disconnected);
    check!(conn.poll(Duration::ZERO)?, "end of file counts as ready");
    check_eq!(kind(conn.send(1))?, ErrorKind::Disconnected);
    joined(&p)?;

    let (conn, child) = Pipe::<u8, u8>::duplex()?;
    let p = Process::new(expect_disconnected, child).with_start_method(m);
    start(&p)?;
    drop(conn);
    joined(&p)
}

/// Receives a blob, says whether it is `blob(len, 3)`, and sends `blob(len, 7)` back.
#[process]
fn big_echo(conn: Connection<(u64, bool, Blob), Blob>) {
    let b = conn.recv().expect("recv");
    let intact = b == blob(b.0.len(), 3);
    let reply = blob(b.0.len(), 7);
    conn.send((b.0.len() as u64, intact, reply)).expect("send");
}

/// A 100 MiB message each way.
fn pipe_100_mib(m: StartMethod) -> Outcome {
    const LEN: usize = 100 << 20;
    let (conn, child) = Pipe::<Blob, (u64, bool, Blob)>::duplex()?;
    let p = Process::new(big_echo, child).with_start_method(m);
    start(&p)?;
    conn.send(blob(LEN, 3))?;
    let (len, intact, reply) = conn.recv_timeout(LONG)?;
    check_eq!(len, LEN as u64);
    check!(intact, "the 100 MiB message arrived intact");
    check!(reply == blob(LEN, 7), "the 100 MiB reply arrived intact");
    joined(&p)
}

#[process]
fn answer_on_received_end(conn: Connection<(), Connection<String, String>>) {
    let end = conn.recv().expect("recv an end");
    end.send("through a passed end".to_string()).expect("send");
}

/// A pipe end sent through another pipe (CPython's `_TestPicklingConnections`).
fn pipe_carries_a_pipe_end(m: StartMethod) -> Outcome {
    let (mine, theirs) = Pipe::<Connection<String, String>, ()>::duplex()?;
    let (x, y) = Pipe::<String, String>::duplex()?;
    let p = Process::new(answer_on_received_end, theirs).with_start_method(m);
    start(&p)?;
    mine.send(y)?;
    check_eq!(x.recv_timeout(LONG)?, "through a passed end");
    joined(&p)?;
    check_eq!(kind(x.recv())?, ErrorKind::Disconnected);
    Ok(())
}

#[process]
fn dont_merge(conn: Connection<String, ()>) {
    for s in ["a", "", "b", "cd"] {
        conn.send(s.to_string()).expect("send");
    }
}

/// `_TestPoll.test_dont_merge` / `test_strings`: message boundaries survive.
fn pipe_boundaries(m: StartMethod) -> Outcome {
    let (a, b) = Pipe::<(), String>::duplex()?;
    check!(!a.poll(Duration::ZERO)?, "empty");
    let p = Process::new(dont_merge, b).with_start_method(m);
    start(&p)?;
    for s in ["a", "", "b", "cd"] {
        check!(a.poll(LONG)?, "ready");
        check!(a.poll(LONG)?, "still ready");
        check_eq!(a.recv()?, s);
    }
    joined(&p)
}

#[process]
fn hold_end(conn: Connection<u8, u8>, ready: Event) {
    ready.set();
    std::thread::sleep(Duration::from_secs(60));
    drop(conn);
}

/// Kills `pid` after `after`, from another thread.
fn kill_later(pid: u32, after: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        // SAFETY: kill(2) takes a pid and a signal; the pid is our child's, not yet reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    })
}

/// A peer SIGKILLed while this end waits: `recv` fails with Disconnected soon after (the
/// ring's sleeper looks at the socket between bounded sleeps), and so does a `send` that
/// waits for room in a full ring.
fn pipe_peer_killed_while_waiting(m: StartMethod) -> Outcome {
    for sender in [false, true] {
        let (conn, child) = Pipe::<u8, u8>::duplex()?;
        let ready = Event::new()?;
        let p = Process::new(hold_end, (child, ready.clone())).with_start_method(m);
        start(&p)?;
        check!(ready.wait_timeout(LONG)?, "the child holds its end");
        let killer = kill_later(p.pid().ok_or("pid")?, SHORT * 3);
        let t = Instant::now();
        let outcome = if sender {
            // Never read: the ring fills, and the last send waits until the kill.
            loop {
                if let Err(err) = conn.send(7) {
                    break err.kind();
                }
                check!(t.elapsed() < LONG, "send never failed");
            }
        } else {
            kind(conn.recv_timeout(LONG))?
        };
        let elapsed = t.elapsed();
        killer.join().map_err(|_| "killer thread")?;
        check_eq!(outcome, ErrorKind::Disconnected);
        check!(
            elapsed >= SHORT * 3 && elapsed < Duration::from_secs(2),
            "noticed the death promptly ({elapsed:?})"
        );
        check_eq!(p.join_timeout(LONG)?, Some(-libc::SIGKILL));
    }
    Ok(())
}

#[process]
fn wait_for_disconnect(conn: Connection<u8, u8>, waiting: Event) {
    waiting.set();
    match conn.recv() {
        Err(err) if err.kind() == ErrorKind::Disconnected => {}
        other => {
            eprintln!("expected Disconnected, got {other:?}");
            std::process::exit(3)
        }
    }
}

/// The parent drops its end while the child sleeps in `recv`: the child wakes at once.
fn pipe_peer_dropped_while_waiting(m: StartMethod) -> Outcome {
    let (conn, child) = Pipe::<u8, u8>::duplex()?;
    let waiting = Event::new()?;
    let p = Process::new(wait_for_disconnect, (child, waiting.clone())).with_start_method(m);
    start(&p)?;
    check!(waiting.wait_timeout(LONG)?, "the child waits");
    std::thread::sleep(SHORT); // asleep on the ring by now
    let t = Instant::now();
    drop(conn);
    joined(&p)?;
    let elapsed = t.elapsed();
    check!(
        elapsed < Duration::from_secs(2),
        "the child saw the drop promptly ({elapsed:?})"
    );
    Ok(())
}

/// Items of every kind of transport at once: inline in the ring, spilled to a memfd, and
/// carrying a descriptor.
#[derive(Debug, Serialize, Deserialize)]
enum Mixed {
    Small(u32),
    Big(u32, Blob),
    End(u32, Sender<u32>),
}

/// 40 items, the kinds interleaved, and the readers of the ends they carry.
fn mixed_items() -> multiproc::Result<(Vec<Mixed>, Vec<Receiver<u32>>)> {
    let (mut items, mut readers) = (Vec::new(), Vec::new());
    for i in 0..40u32 {
        items.push(match i % 5 {
            1 => Mixed::Big(i, blob(100_000 + i as usize, i as u8)),
            3 => {
                let (rx, tx) = Pipe::<u32>::simplex()?;
                readers.push(rx);
                Mixed::End(i, tx)
            }
            _ => Mixed::Small(i),
        });
    }
    Ok((items, readers))
}

/// The tag of a mixed item, after checking it (and answering on a carried end).
fn tag_of(item: Mixed) -> u32 {
    match item {
        Mixed::Small(i) => i,
        Mixed::Big(i, b) => {
            assert!(
                b == blob(100_000 + i as usize, i as u8),
                "big item {i} intact"
            );
            i
        }
        Mixed::End(i, tx) => {
            tx.send(i).expect("send on a carried end");
            i
        }
    }
}

/// Checks the tags came in order and every carried end answered.
fn check_mixed(tags: Vec<u32>, readers: Vec<Receiver<u32>>) -> Outcome {
    check_eq!(tags, (0..40).collect::<Vec<_>>());
    for (rx, i) in readers.iter().zip((0..40).filter(|i| i % 5 == 3)) {
        check_eq!(rx.recv_timeout(LONG)?, i);
    }
    Ok(())
}

#[process]
fn tag_mixed_pipe(conn: Connection<u32, Mixed>) {
    for _ in 0..40 {
        let item = conn.recv().expect("recv");
        conn.send(tag_of(item)).expect("send");
    }
}

/// Messages with descriptors and spilled messages (through the socket) keep their place
/// among the small ones (through the ring).
fn pipe_mixed_order(m: StartMethod) -> Outcome {
    let (conn, child) = Pipe::<Mixed, u32>::duplex()?;
    let (items, readers) = mixed_items()?;
    for item in &items[..20] {
        conn.send(item)?; // before the child exists
    }
    let p = Process::new(tag_mixed_pipe, child).with_start_method(m);
    start(&p)?;
    for item in &items[20..] {
        conn.send(item)?;
    }
    drop(items);
    let tags = (0..40)
        .map(|_| conn.recv_timeout(LONG))
        .collect::<multiproc::Result<Vec<_>>>()?;
    check_mixed(tags, readers)?;
    joined(&p)
}

// ---------------------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------------------

#[process]
fn tag_mixed_queue(q: Queue<Mixed>, tags: Queue<u32>) {
    for _ in 0..40 {
        tags.put(tag_of(q.get().expect("get"))).expect("put");
    }
}

/// Items with descriptors and spilled items keep their place among the small ones.
fn queue_mixed_order(m: StartMethod) -> Outcome {
    let q = Queue::<Mixed>::new()?;
    let tags = Queue::<u32>::new()?;
    let (items, readers) = mixed_items()?;
    for item in &items[..20] {
        q.put(item)?;
    }
    let p = Process::new(tag_mixed_queue, (q.clone(), tags.clone())).with_start_method(m);
    start(&p)?;
    for item in &items[20..] {
        q.put(item)?;
    }
    drop(items);
    let got = (0..40)
        .map(|_| tags.get_timeout(LONG))
        .collect::<multiproc::Result<Vec<_>>>()?;
    check_mixed(got, readers)?;
    joined(&p)
}

/// Puts `(n, blob(n))` for n = 0, 1, ... until killed; every few items, one with a
/// descriptor or a spilled one.
#[process]
fn put_until_killed(q: Queue<(u64, Blob, Option<Sender<u8>>)>) {
    for n in 0.. {
        let (len, end) = match n % 7 {
            3 => (200_000, None),
            5 => (30_000, Some(Pipe::<u8>::simplex().expect("pipe").1)),
            _ => (30_000, None),
        };
        q.put((n, blob(len, n as u8), end)).expect("put");
    }
}

/// A producer SIGKILLed at random moments of a stream of large items (much of its time is
/// spent copying under the ring's lock): the queue is never wedged, every item that arrived
/// is whole, and they are exactly 0, 1, ..., k in order (a put is done or not done).
fn queue_producer_killed_mid_put(m: StartMethod) -> Outcome {
    let q = Queue::<(u64, Blob, Option<Sender<u8>>)>::new()?;
    let mut seed = Instant::now().elapsed().subsec_nanos() as u64 | 1;
    for _round in 0..6 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let run_for = Duration::from_millis(20 + (seed >> 33) % 60);
        let p = Process::new(put_until_killed, q.clone()).with_start_method(m);
        start(&p)?;
        let mut got = Vec::new();
        let t = Instant::now();
        while t.elapsed() < run_for {
            got.push(q.get_timeout(LONG)?);
        }
        p.kill()?;
        check_eq!(p.join_timeout(LONG)?, Some(-libc::SIGKILL));
        loop {
            match q.try_get() {
                Ok(item) => got.push(item),
                Err(err) if err.kind() == ErrorKind::Empty => break,
                Err(err) => return Err(err.into()),
            }
        }
        for (i, (n, b, end)) in got.iter().enumerate() {
            check_eq!(*n, i as u64);
            let len = if n % 7 == 3 { 200_000 } else { 30_000 };
            check!(*b == blob(len, *n as u8), "item {n} is whole");
            check_eq!(end.is_some(), n % 7 == 5);
        }
        // Not wedged: both locks are free for the next round and for this check.
        q.put_timeout((0, blob(10, 0), None), LONG)?;
        check_eq!(q.get_timeout(LONG)?.0, 0);
    }
    Ok(())
}

#[process]
fn put_2_to_5(q: Queue<u32>, done: Event) {
    for i in 2..=5 {
        q.put(i).expect("put");
    }
    done.set();
}

/// `_TestQueue.test_get`.
fn queue_get(m: StartMethod) -> Outcome {
    let q = Queue::<u32>::new()?;
    let done = Event::new()?;
    check!(q.is_empty()?, "empty at first");
    let p = Process::new(put_2_to_5, (q.clone(), done.clone())).with_start_method(m);
    start(&p)?;
    check!(done.wait_timeout(LONG)?, "the child put its items");
    check!(!q.is_empty()?, "not empty");
    check_eq!(q.get()?, 2);
    check_eq!(q.get_timeout(LONG)?, 3);
    check_eq!(q.get_timeout(Duration::from_secs(1))?, 4);
    check_eq!(q.try_get()?, 5);
    check!(q.is_empty()?, "empty again");

    let (r, elapsed) = timed(|| q.try_get());
    check_eq!(kind(r)?, ErrorKind::Empty);
    check!(elapsed < SHORT, "try_get returns at once ({elapsed:?})");
    let (r, elapsed) = timed(|| q.get_timeout(SHORT));
    check_eq!(kind(r)?, ErrorKind::Timeout);
    check!(elapsed >= SHORT, "get_timeout waited ({elapsed:?})");
    let (r, elapsed) = timed(|| q.get_timeout(Duration::ZERO));
    check_eq!(kind(r)?, ErrorKind::Timeout);
    check!(
        elapsed < SHORT,
        "a zero timeout returns at once ({elapsed:?})"
    );
    joined(&p)
}

#[process]
fn take_6(q: Queue<u32>, can_start: Event, done: Event) {
    assert!(
        can_start.wait_timeout(LONG).expect("wait"),
        "parent never said go"
    );
    for _ in 0..6 {
        q.get().expect("get");
    }
    done.set();
}

/// `_TestQueue.test_put`: a bounded queue, `Full`, and put timeouts.
fn queue_put_bounded(m: StartMethod) -> Outcome {
    const MAXSIZE: usize = 6;
    let q = Queue::<u32>::bounded(MAXSIZE)?;
    let (can_start, done) = (Event::new()?, Event::new()?);
    let p = Process::new(take_6, (q.clone(), can_start.clone(), done.clone()))
        .with_start_method(m)
        .with_daemon(true);
    start(&p)?;
    check!(q.is_empty()?, "empty");
    check!(!q.is_full(), "not full");
    q.put(1)?;
    q.put(2)?;
    q.put_timeout(3, LONG)?;
    q.try_put(4)?;
    q.put(5)?;
    q.try_put(6)?;
    check!(!q.is_empty()?, "not empty");
    check!(q.is_full(), "full");
    check_eq!(q.qsize(), MAXSIZE);

    let (r, elapsed) = timed(|| q.try_put(7));
    check_eq!(kind(r)?, ErrorKind::Full);
    check!(elapsed < SHORT, "try_put returns at once ({elapsed:?})");
    let (r, elapsed) = timed(|| q.put_timeout(7, SHORT));
    check_eq!(kind(r)?, ErrorKind::Timeout);
    check!(elapsed >= SHORT, "put_timeout waited ({elapsed:?})");
    check_eq!(q.qsize(), MAXSIZE);

    can_start.set();
    check!(done.wait_timeout(LONG)?, "the child took 6 items");
    check!(q.is_empty()?, "empty at the end");
    check!(!q.is_full(), "not full at the end");
    check_eq!(q.qsize(), 0);
    joined(&p)
}

#[process]
fn put_10_to_20(q: Queue<u32>) {
    for i in 10..20 {
        q.put(i).expect("put");
    }
}

/// `_TestQueue.test_fork`: items of the parent, then of a child, in order; and the child
/// may exit before anything is read (no feeder thread to flush).
fn queue_fork(m: StartMethod) -> Outcome {
    let q = Queue::<u32>::new()?;
    for i in 0..10 {
        q.put(i)?;
    }
    let p = Process::new(put_10_to_20, q.clone()).with_start_method(m);
    start(&p)?;
    joined(&p)?; // before reading: CPython's "joining processes that use queues" pitfall
    for i in 0..20 {
        check_eq!(q.get_timeout(LONG)?, i);
    }
    check_eq!(kind(q.try_get())?, ErrorKind::Empty);
    Ok(())
}

#[process]
fn put_many_and_exit(q: Queue<Blob>, small: u32, large: u32) {
    for i in 0..small {
        q.put(blob(1000, i as u8)).expect("put small");
    }
    for i in 0..large {
        q.put(blob(4 << 20, i as u8)).expect("put large");
    }
}

/// A producer that put many items (some spilled, 4 MiB each) exits at once, and is joined
/// before anybody reads: nothing waits for a feeder thread.
fn queue_join_before_drain(m: StartMethod) -> Outcome {
    let q = Queue::<Blob>::new()?;
    let p = Process::new(put_many_and_exit, (q.clone(), 200, 5)).with_start_method(m);
    start(&p)?;
    joined(&p)?;
    for i in 0..200 {
        check!(
            q.get_timeout(LONG)? == blob(1000, i as u8),
            "small item {i}"
        );
    }
    for i in 0..5 {
        check!(
            q.get_timeout(LONG)? == blob(4 << 20, i as u8),
            "large item {i}"
        );
    }
    check_eq!(kind(q.try_get())?, ErrorKind::Empty);
    Ok(())
}

/// `_TestQueue.test_qsize`.
fn queue_qsize() -> Outcome {
    let q = Queue::<u32>::new()?;
    check_eq!(q.qsize(), 0);
    q.put(1)?;
    check_eq!(q.qsize(), 1);
    q.put(5)?;
    check_eq!(q.qsize(), 2);
    q.get()?;
    check_eq!(q.qsize(), 1);
    q.get()?;
    check_eq!(q.qsize(), 0);
    Ok(())
}

/// An item that refuses to be encoded.
#[derive(Debug)]
enum Item {
    Fine(u32),
    Refuses,
}

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Item::Fine(n) => s.serialize_u32(*n),
            Item::Refuses => Err(serde::ser::Error::custom("refuses to be encoded")),
        }
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(Item::Fine)
    }
}

/// bpo-30414 / bpo-33078 (`test_queue_feeder_donot_stop_onexc`): an item that cannot be
/// encoded is an error for its `put` alone; the queue, and a bounded queue's size, are fine.
fn queue_unencodable_item() -> Outcome {
    for q in [Queue::<Item>::new()?, Queue::<Item>::bounded(1)?] {
        check_eq!(kind(q.put(Item::Refuses))?, ErrorKind::Codec);
        q.put(Item::Fine(1))?;
        check_eq!(q.qsize(), 1);
        check!(
            matches!(q.get_timeout(LONG)?, Item::Fine(1)),
            "the good item"
        );
        check!(q.is_empty()?, "empty");
        check_eq!(q.qsize(), 0);
    }
    Ok(())
}

#[process]
fn report_deep_items(
    forged: Queue<ClaimsDepth>,
    lists: Queue<Option<Box<Node>>>,
    out: Queue<String>,
) {
    let forged = match forged.get_timeout(LONG) {
        Ok(claims) => format!("decoded {}", claims.0),
        Err(err) => format!("{:?}: {}", err.kind(), common::chain(&err)),
    };
    let list = match lists.get_timeout(LONG) {
        Ok(list) => format!("{} nodes", unlinked(list)),
        Err(err) => format!("{:?}", err.kind()),
    };
    let _ = out.put(format!("{forged} | {list}"));
}

/// Items nested deeper than the codec takes (1024 levels): a forged one is an error for its
/// receiver, which goes on (it used to overflow the receiver's stack and kill it), and an
/// honest linked list of 3000 nodes is refused by `put`, before anything is sent.
fn queue_items_nested_too_deep(m: StartMethod) -> Outcome {
    let forged = Queue::<ClaimsDepth>::new()?;
    let lists = Queue::<Option<Box<Node>>>::new()?;
    let out = Queue::<String>::new()?;
    forged.put(ClaimsDepth(1_000_000))?;
    let err = lists.put(linked(3000)).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Codec);
    check!(
        common::chain(&err).contains("nest more than 1024 deep"),
        "{}",
        common::chain(&err)
    );
    lists.put(linked(500))?;
    let p = Process::new(report_deep_items, (forged, lists, out.clone())).with_start_method(m);
    start(&p)?;
    joined(&p)?;
    let said = out.get_timeout(LONG)?;
    check!(
        said.starts_with("Codec: ") && said.contains("nest more than 1024 deep"),
        "{said}"
    );
    check!(said.ends_with(" | 500 nodes"), "{said}");
    Ok(())
}

/// `test_closed_queue_put_get_exceptions`, and `close` waking a waiting thread.
fn queue_closed() -> Outcome {
    let q = Queue::<u32>::new()?;
    let j = JoinableQueue::<u32>::new()?;
    let s = SimpleQueue::<u32>::new()?;
    q.close();
    j.close();
    s.close();
    check_eq!(kind(q.put(1))?, ErrorKind::Closed);
    check_eq!(kind(q.get())?, ErrorKind::Closed);
    check_eq!(kind(q.is_empty())?, ErrorKind::Closed);
    check_eq!(kind(j.put(1))?, ErrorKind::Closed);
    check_eq!(kind(j.get())?, ErrorKind::Closed);
    check_eq!(kind(s.put(1))?, ErrorKind::Closed);
    check_eq!(kind(s.get())?, ErrorKind::Closed);

    let q = Queue::<u32>::new()?;
    let waiter = {
        let q = q.clone();
        std::thread::spawn(move || q.get())
    };
    std::thread::sleep(SHORT);
    q.close();
    let r = waiter.join().map_err(|_| "the waiter panicked")?;
    check_eq!(kind(r)?, ErrorKind::Closed);
    Ok(())
}

#[process]
fn produce(q: Queue<u64>, id: u64, n: u64) {
    for i in 0..n {
        q.put(id * 1_000_000 + i).expect("put");
    }
}

/// Takes items until the `u64::MAX` sentinel, then puts the list it took on `done`.
#[process]
fn consume(q: Queue<u64>, done: Queue<Vec<u64>>) {
    let mut mine = Vec::new();
    loop {
        let item = q.get().expect("get");
        if item == u64::MAX {
            break;
        }
        mine.push(item);
    }
    done.put(mine).expect("put");
}

/// Many producers and consumers: every item exactly once.
fn queue_many_producers_consumers(m: StartMethod) -> Outcome {
    const PRODUCERS: u64 = 4;
    const CONSUMERS: usize = 3;
    const EACH: u64 = 1000;
    let q = Queue::<u64>::new()?;
    let done = Queue::<Vec<u64>>::new()?;
    let consumers: Vec<Process> = (0..CONSUMERS)
        .map(|_| Process::new(consume, (q.clone(), done.clone())).with_start_method(m))
        .collect();
    for c in &consumers {
        start(c)?;
    }
    let producers: Vec<Process> = (0..PRODUCERS)
        .map(|id| Process::new(produce, (q.clone(), id, EACH)).with_start_method(m))
        .collect();
    for p in &producers {
        start(p)?;
    }
    for p in &producers {
        joined(p)?;
    }
    for _ in 0..CONSUMERS {
        q.put(u64::MAX)?;
    }
    let mut seen = Vec::new();
    for _ in 0..CONSUMERS {
        let mine = done.get_timeout(LONG)?;
        // Each producer's items reach each consumer in order.
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for &item in &mine {
            let (producer, i) = (item / 1_000_000, item % 1_000_000);
            if let Some(&prev) = last.get(&producer) {
                check!(i > prev, "items of producer {producer} out of order");
            }
            last.insert(producer, i);
        }
        seen.extend(mine);
    }
    for c in &consumers {
        joined(c)?;
    }
    seen.sort_unstable();
    let expected: Vec<u64> = (0..PRODUCERS)
        .flat_map(|id| (0..EACH).map(move |i| id * 1_000_000 + i))
        .collect();
    check_eq!(seen.len(), expected.len());
    check!(seen == expected, "every item exactly once");
    Ok(())
}

/// Reports every item it takes on `taken` as `(id, item)`. With `park_after`, stops taking
/// after that many items, says so with `(id, u64::MAX)`, and sleeps (to be killed).
#[process]
fn reporting_consumer(q: Queue<u64>, taken: Queue<(u32, u64)>, id: u32, park_after: Option<u32>) {
    let mut n = 0;
    loop {
        if park_after == Some(n) {
            taken.put((id, u64::MAX)).expect("put");
            std::thread::sleep(Duration::from_secs(60));
        }
        let item = q.get().expect("get");
        if item == u64::MAX {
            return;
        }
        taken.put((id, item)).expect("report");
        n += 1;
    }
}

struct KillOutcome {
    /// Items of each consumer, in the order they reported them.
    by_consumer: BTreeMap<u32, Vec<u64>>,
}

/// Producers stream items; consumer 0 is SIGKILLed in the middle of the stream (after it
/// parked, or at a random moment while it takes items); the survivors finish the stream.
///
/// With `park`, the survivors start once the victim has parked: sharing the stream with two
/// others, the victim could otherwise get fewer than its 40 items before the stream ends (it
/// did on a loaded machine) and never park. Mid-stream, the victim is killed when it has
/// taken 100 items or the consumers half the stream, whichever comes first: either way while
/// items still flow.
fn kill_a_consumer(m: StartMethod, park: bool) -> Result<KillOutcome, Failed> {
    const PRODUCERS: u64 = 2;
    const EACH: u64 = 1500;
    let q = Queue::<u64>::new()?;
    let taken = Queue::<(u32, u64)>::new()?;
    let consumer = |id: u32, park_after: Option<u32>| {
        Process::new(
            reporting_consumer,
            (q.clone(), taken.clone(), id, park_after),
        )
        .with_start_method(m)
    };
    let victim = consumer(0, park.then_some(40));
    let survivors = [consumer(1, None), consumer(2, None)];
    start(&victim)?;
    if !park {
        for s in &survivors {
            start(s)?;
        }
    }
    let producers: Vec<Process> = (0..PRODUCERS)
        .map(|id| Process::new(produce, (q.clone(), id, EACH)).with_start_method(m))
        .collect();
    for p in &producers {
        start(p)?;
    }
    let mut by_consumer: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut reported = 0;
    loop {
        let (id, item) = taken.get_timeout(LONG)?;
        if id == 0 && item == u64::MAX {
            break;
        }
        let list = by_consumer.entry(id).or_default();
        list.push(item);
        reported += 1;
        if !park && ((id == 0 && list.len() == 100) || reported == PRODUCERS * EACH / 2) {
            break;
        }
    }
    victim.kill()?;
    check_eq!(victim.join_timeout(LONG)?, Some(-libc::SIGKILL));
    if park {
        for s in &survivors {
            start(s)?;
        }
    }
    for p in &producers {
        joined(p)?;
    }
    for _ in &survivors {
        q.put(u64::MAX)?;
    }
    for s in &survivors {
        joined(s)?;
    }
    // Every process that reported is gone: what is left in `taken` is complete.
    loop {
        match taken.try_get() {
            Ok((id, item)) if !(id == 0 && item == u64::MAX) => {
                by_consumer.entry(id).or_default().push(item)
            }
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::Empty => break,
            Err(err) => return Err(err.into()),
        }
    }
    check_eq!(kind(q.try_get())?, ErrorKind::Empty);
    Ok(KillOutcome { by_consumer })
}

fn all_items(producers: u64, each: u64) -> Vec<u64> {
    (0..producers)
        .flat_map(|id| (0..each).map(move |i| id * 1_000_000 + i))
        .collect()
}

/// A consumer SIGKILLed between items (parked): items put = items received by the
/// survivors + the items the dead one took, none twice.
fn queue_consumer_killed_between_items(m: StartMethod) -> Outcome {
    let out = kill_a_consumer(m, true)?;
    let dead = out.by_consumer.get(&0).map_or(0, Vec::len);
    check_eq!(dead, 40);
    let mut all: Vec<u64> = out.by_consumer.values().flatten().copied().collect();
    let unique: HashSet<u64> = all.iter().copied().collect();
    check_eq!(unique.len(), all.len()); // none twice
    all.sort_unstable();
    check!(
        all == all_items(2, 1500),
        "every item received exactly once"
    );
    Ok(())
}

/// A consumer SIGKILLed at an arbitrary moment while it takes items: no item twice, and at
/// most the one item it was holding (taken, not yet reported) missing.
fn queue_consumer_killed_mid_stream(m: StartMethod) -> Outcome {
    let out = kill_a_consumer(m, false)?;
    let all: Vec<u64> = out.by_consumer.values().flatten().copied().collect();
    let unique: HashSet<u64> = all.iter().copied().collect();
    check_eq!(unique.len(), all.len()); // none twice
    let expected = all_items(2, 1500);
    let missing: Vec<u64> = expected
        .iter()
        .filter(|i| !unique.contains(i))
        .copied()
        .collect();
    check!(
        missing.len() <= 1,
        "at most the item the dead consumer held is missing: {missing:?}"
    );
    check_eq!(unique.len() + missing.len(), expected.len());
    Ok(())
}

/// Puts a 60 KB item and takes one, forever (to be stopped and killed): most of its time is
/// spent copying under one of the ring's locks.
#[process]
fn put_get_forever(q: Queue<Blob>, running: Event) {
    let item = blob(60_000, 3);
    loop {
        q.put(&item).expect("put");
        q.get().expect("get");
        running.set();
    }
}

/// The state letter of process `pid` in `/proc/<pid>/stat` (`T`: stopped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Continues a process stopped with [`stop`] when dropped, on every path out of a trial
/// (a failed check, a panic): a test never leaves a child stopped.
struct Stopped(u32);

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: kill takes a pid and a signal number; the pid is our trial's child, which
        // is not reaped before this guard is dropped.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

/// Stops process `pid` (SIGSTOP) wherever it is, and waits until it is stopped.
fn stop(pid: u32) -> Result<Stopped, Failed> {
    // SAFETY: as in `Stopped::drop`.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    let stopped = Stopped(pid);
    let until = Instant::now() + LONG;
    while proc_state(pid) != Some('T') {
        check!(Instant::now() < until, "process {pid} did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(stopped)
}

/// Runs `ops` (which report each of their `n` results on the channel they get) on a thread
/// while `pid` is stopped, and collects the results: an error when one does not come within
/// a few seconds, that is, when an operation waits for the stopped process. The process is
/// continued before the thread is joined, on every path.
fn while_stopped<R: Send>(
    pid: u32,
    n: usize,
    ops: impl FnOnce(std::sync::mpsc::Sender<R>) + Send,
) -> Result<Vec<R>, Failed> {
    const STUCK: Duration = Duration::from_secs(3);
    std::thread::scope(|s| {
        let stopped = stop(pid)?;
        let (tx, rx) = std::sync::mpsc::channel();
        s.spawn(move || ops(tx));
        let mut results = Vec::new();
        for _ in 0..n {
            match rx.recv_timeout(STUCK) {
                Ok(r) => results.push(r),
                Err(_) => {
                    return Err(format!(
                        "result {} of {n} did not come in {STUCK:?}: an operation waits for \
                         the stopped process",
                        results.len() + 1
                    )
                    .into())
                }
            }
        }
        drop(stopped);
        Ok(results)
    })
}

/// A process stopped (SIGSTOP, not dead: its locks are never taken over) at random moments
/// of a put/get loop, often holding one of the ring's locks: `try_get` and `try_put` do not
/// wait for the lock (a held lock is as good as empty or full, as for CPython's
/// `get_nowait`, whose reader lock is busy), `get_timeout` and `put_timeout` wait for it
/// until their deadline; none waits until the process is continued.
fn queue_stopped_peer_holds_a_lock(m: StartMethod) -> Outcome {
    const TRIES: u32 = 150;
    let q = Queue::<Blob>::new()?;
    let running = Event::new()?;
    let p = Process::new(put_get_forever, (q.clone(), running.clone())).with_start_method(m);
    start(&p)?;
    let pid = p.pid().ok_or("no pid")?;
    check!(running.wait_timeout(LONG)?, "the child runs");
    let item = blob(60_000, 1);
    // Times a try found a lock held: an item waiting (nothing moves but this thread), yet
    // `Empty`; room for the item, yet `Full`.
    let (mut head_held, mut tail_held) = (0, 0);
    for attempt in 0..TRIES {
        let results = while_stopped(pid, 4, |tx| {
            let len = q.qsize();
            let _ = tx.send(("try_get", len, timed(|| q.try_get().map(drop))));
            let len = q.qsize();
            let got = timed(|| q.get_timeout(Duration::from_millis(10)).map(drop));
            let _ = tx.send(("get_timeout", len, got));
            let len = q.qsize();
            let _ = tx.send(("try_put", len, timed(|| q.try_put(&item))));
            let len = q.qsize();
            let put = timed(|| q.put_timeout(&item, Duration::from_millis(10)));
            let _ = tx.send(("put_timeout", len, put));
        })
        .map_err(|err| format!("attempt {attempt}: {}", err.message().unwrap_or_default()))?;
        for (op, len, (r, took)) in results {
            let refused = match (op, r) {
                (_, Ok(())) => None,
                ("try_get", Err(err)) => Some((err.kind(), ErrorKind::Empty)),
                ("try_put", Err(err)) => Some((err.kind(), ErrorKind::Full)),
                (_, Err(err)) => Some((err.kind(), ErrorKind::Timeout)),
            };
            if let Some((kind, expected)) = refused {
                check!(
                    kind == expected,
                    "attempt {attempt}: {op} failed with {kind:?}, not {expected:?}"
                );
                head_held += u32::from(op == "try_get" && len > 0);
                // 60 KB items: 12 leave the 1 MiB ring room for two more.
                tail_held += u32::from(op == "try_put" && len < 12);
            }
            check!(
                took < Duration::from_secs(1),
                "attempt {attempt}: {op} took {took:?} with the other process stopped"
            );
        }
        if head_held >= 3 && tail_held >= 3 {
            break;
        }
        // Let it run a little, to be stopped elsewhere.
        std::thread::sleep(Duration::from_millis(3));
    }
    p.kill()?;
    check_eq!(p.join_timeout(LONG)?, Some(-libc::SIGKILL));
    Ok(())
}

#[process]
fn put_hello(q: Queue<String>, ready: Event) {
    q.put("hello".to_string()).expect("put");
    ready.set();
}

/// The issue's example: a producer process puts "hello" and sets an event.
fn queue_issue_example(m: StartMethod) -> Outcome {
    let q = Queue::<String>::new()?;
    let ready = Event::new()?;
    let p = Process::new(put_hello, (q.clone(), ready.clone())).with_start_method(m);
    start(&p)?;
    check!(ready.wait_timeout(LONG)?, "the producer set the event");
    check_eq!(q.try_get()?, "hello");
    joined(&p)
}

#[process]
fn pass_back_large(q: Queue<Blob>, answers: SimpleQueue<(u64, bool)>) {
    let b = q.get().expect("get");
    answers
        .put((b.0.len() as u64, b == blob(b.0.len(), 5)))
        .expect("put");
    q.put(blob(b.0.len(), 9)).expect("put back");
}

/// A 100 MiB item each way through a queue (spilled to a memfd), and a SimpleQueue.
fn queue_large_items(m: StartMethod) -> Outcome {
    const LEN: usize = 100 << 20;
    let q = Queue::<Blob>::new()?;
    let answers = SimpleQueue::<(u64, bool)>::new()?;
    q.put(blob(LEN, 5))?; // before the child exists: the put does not wait for a reader
    let p = Process::new(pass_back_large, (q.clone(), answers.clone())).with_start_method(m);
    start(&p)?;
    check_eq!(answers.get()?, (LEN as u64, true));
    joined(&p)?;
    check!(q.get_timeout(LONG)? == blob(LEN, 9), "the reply is intact");
    Ok(())
}

#[process]
fn answer_on_queued_ends(q: Queue<Sender<String>>, n: u32) {
    for i in 0..n {
        let tx = q.get().expect("get an end");
        tx.send(format!("end {i}")).expect("send");
    }
}

/// Items that carry descriptors: a queue of pipe ends.
fn queue_of_pipe_ends(m: StartMethod) -> Outcome {
    let q = Queue::<Sender<String>>::new()?;
    let mut readers: Vec<Receiver<String>> = Vec::new();
    for _ in 0..5 {
        let (rx, tx) = Pipe::<String>::simplex()?;
        q.put(tx)?;
        readers.push(rx);
    }
    let p = Process::new(answer_on_queued_ends, (q.clone(), 5)).with_start_method(m);
    start(&p)?;
    for (i, rx) in readers.iter().enumerate() {
        check_eq!(rx.recv_timeout(LONG)?, format!("end {i}"));
    }
    joined(&p)?;
    for rx in &readers {
        check_eq!(kind(rx.recv())?, ErrorKind::Disconnected);
    }
    Ok(())
}

#[process]
fn work_and_mark_done(q: JoinableQueue<Option<u32>>, out: SimpleQueue<u32>) {
    while let Some(n) = q.get().expect("get") {
        std::thread::sleep(Duration::from_millis(20));
        out.put(n * 2).expect("put");
        q.task_done().expect("task_done");
    }
    q.task_done().expect("task_done of the sentinel");
}

/// `_TestQueue.test_task_done`: four workers, `join` returns when all ten are done.
fn joinable_task_done(m: StartMethod) -> Outcome {
    let q = JoinableQueue::<Option<u32>>::new()?;
    let out = SimpleQueue::<u32>::new()?;
    check!(
        q.join_timeout(Duration::ZERO)?,
        "nothing unfinished at first"
    );
    let workers: Vec<Process> = (0..4)
        .map(|_| {
            Process::new(work_and_mark_done, (q.clone(), out.clone()))
                .with_start_method(m)
                .with_daemon(true)
        })
        .collect();
    for w in &workers {
        start(w)?;
    }
    for i in 0..10 {
        q.put(Some(i))?;
    }
    check!(q.join_timeout(LONG)?, "join returned: every task is done");
    let mut got: Vec<u32> = (0..10).map(|_| out.get()).collect::<Result<_, _>>()?;
    got.sort_unstable();
    check_eq!(got, (0..10).map(|i| i * 2).collect::<Vec<_>>());
    for _ in &workers {
        q.put(None)?;
    }
    for w in &workers {
        joined(w)?;
    }
    check!(q.join_timeout(LONG)?, "the sentinels are done too");
    Ok(())
}

/// Puts an item, takes it and marks it done, forever (to be stopped and killed).
#[process]
fn put_get_done_forever(q: JoinableQueue<u32>, running: Event) {
    loop {
        q.put(1).expect("put");
        q.get().expect("get");
        q.task_done().expect("task_done");
        running.set();
    }
}

/// A consumer stopped (SIGSTOP) at random moments of a put/get/task_done loop, sometimes
/// inside `task_done`: `join_timeout` still returns by its deadline (its answer is whatever
/// the count was then).
fn joinable_stopped_consumer_and_join_timeout(m: StartMethod) -> Outcome {
    let q = JoinableQueue::<u32>::new()?;
    let running = Event::new()?;
    let p = Process::new(put_get_done_forever, (q.clone(), running.clone())).with_start_method(m);
    start(&p)?;
    let pid = p.pid().ok_or("no pid")?;
    check!(running.wait_timeout(LONG)?, "the child runs");
    for attempt in 0..300 {
        let results = while_stopped(pid, 1, |tx| {
            let _ = tx.send(timed(|| q.join_timeout(Duration::from_millis(5))));
        })
        .map_err(|err| format!("attempt {attempt}: {}", err.message().unwrap_or_default()))?;
        for (r, took) in results {
            r?;
            check!(
                took < Duration::from_secs(1),
                "attempt {attempt}: join_timeout(5 ms) took {took:?} with the consumer stopped"
            );
        }
    }
    p.kill()?;
    check_eq!(p.join_timeout(LONG)?, Some(-libc::SIGKILL));
    Ok(())
}

/// Puts one item into a full queue: waits for room until it is killed.
#[process]
fn put_into_full(q: JoinableQueue<u32>, putting: Event) {
    putting.set();
    q.put(2).expect("put");
}

/// A producer killed while its put waits for room in a full queue did not put its item: it
/// is not counted, and `join` returns once the items that were put are done (as in CPython,
/// whose put counts the item only once there is room). It was counted as the put began, so
/// `join` waited for an item that never came, forever.
fn joinable_producer_killed_waiting_for_room(m: StartMethod) -> Outcome {
    let q = JoinableQueue::<u32>::bounded(1)?;
    q.put(1)?;
    let putting = Event::new()?;
    let p = Process::new(put_into_full, (q.clone(), putting.clone())).with_start_method(m);
    start(&p)?;
    check!(putting.wait_timeout(LONG)?, "the child puts");
    // Well inside its put, asleep for room.
    std::thread::sleep(SHORT);
    check_eq!(q.qsize(), 1);
    p.kill()?;
    check_eq!(p.join_timeout(LONG)?, Some(-libc::SIGKILL));
    check_eq!(q.get()?, 1);
    q.task_done()?;
    check_eq!(q.unfinished_tasks(), 0);
    check!(
        q.join_timeout(SHORT)?,
        "join returns: the one item put is done"
    );
    check_eq!(kind(q.try_get())?, ErrorKind::Empty);
    Ok(())
}

/// `join_timeout` with an unfinished task, and `task_done` called too often.
fn joinable_rules() -> Outcome {
    let q = JoinableQueue::<u32>::new()?;
    check_eq!(kind(q.task_done())?, ErrorKind::InvalidInput);
    q.put(1)?;
    let (r, elapsed) = timed(|| q.join_timeout(SHORT));
    check!(!r?, "one task is unfinished");
    check!(elapsed >= SHORT, "join_timeout waited ({elapsed:?})");
    check_eq!(q.get()?, 1);
    check!(!q.join_timeout(Duration::ZERO)?, "taken is not done");
    q.task_done()?;
    check!(q.join_timeout(Duration::ZERO)?, "done");
    q.join()?;
    check_eq!(kind(q.task_done())?, ErrorKind::InvalidInput);
    // An item that cannot be encoded is not counted.
    let q = JoinableQueue::<Item>::bounded(1)?;
    check_eq!(kind(q.put(Item::Refuses))?, ErrorKind::Codec);
    check!(q.join_timeout(Duration::ZERO)?, "nothing unfinished");
    Ok(())
}

#[process]
fn put_square(q: Queue<u64>, n: u64) -> u64 {
    q.put(n * n).expect("put");
    n
}

/// A queue as a pool task argument.
fn queue_as_pool_task_argument(m: StartMethod) -> Outcome {
    let q = Queue::<u64>::new()?;
    let pool = Pool::builder().processes(2).start_method(m).build()?;
    let returned = pool.map(put_square, (0..20u64).map(|i| (q.clone(), i)))?;
    check_eq!(returned, (0..20).collect::<Vec<u64>>());
    let mut got: Vec<u64> = (0..20)
        .map(|_| q.get_timeout(LONG))
        .collect::<Result<_, _>>()?;
    got.sort_unstable();
    check_eq!(got, (0..20u64).map(|i| i * i).collect::<Vec<_>>());
    pool.close();
    pool.join()?;
    Ok(())
}

static WORKER_QUEUE: OnceLock<Queue<(u32, u64)>> = OnceLock::new();

#[process]
fn keep_queue(q: Queue<(u32, u64)>) {
    let _ = WORKER_QUEUE.set(q);
}

#[process]
fn report_to_init_queue(n: u64) {
    let q = WORKER_QUEUE.get().expect("the initializer ran");
    q.put((std::process::id(), n)).expect("put");
}

/// A queue as a pool initializer argument, used by every task of every worker.
fn queue_as_pool_initializer_argument(m: StartMethod) -> Outcome {
    let q = Queue::<(u32, u64)>::new()?;
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .initializer(keep_queue, q.clone())
        .build()?;
    pool.map(report_to_init_queue, 0..30u64)?;
    let mut got: Vec<u64> = Vec::new();
    let mut pids = HashSet::new();
    for _ in 0..30 {
        let (pid, n) = q.get_timeout(LONG)?;
        pids.insert(pid);
        got.push(n);
    }
    got.sort_unstable();
    check_eq!(got, (0..30).collect::<Vec<u64>>());
    check!(
        !pids.contains(&std::process::id()),
        "the workers put the items"
    );
    pool.close();
    pool.join()?;
    Ok(())
}

/// No descriptor leaks: 1000 create/use/drop cycles of each kind.
fn no_leaked_descriptors() -> Outcome {
    let cycle = |i: u32| -> Outcome {
        let q = Queue::<u32>::new()?;
        q.put(i)?;
        check_eq!(q.get()?, i);
        let b = Queue::<Blob>::bounded(2)?;
        b.put(blob(200_000, 1))?; // spilled
        check_eq!(b.get()?.0.len(), 200_000);
        b.put(blob(10, 1))?; // left in the queue
        let j = JoinableQueue::<u32>::new()?;
        j.put(i)?;
        j.get()?;
        j.task_done()?;
        let s = SimpleQueue::<u32>::new()?;
        s.put(i)?;
        s.get()?;
        let (a, c) = Pipe::<u32, u32>::duplex()?;
        a.send(i)?;
        check_eq!(c.recv()?, i);
        let (rx, tx) = Pipe::<Sender<u32>>::simplex()?;
        let (_r2, t2) = Pipe::<u32>::simplex()?;
        tx.send(t2)?; // a descriptor in flight, dropped unread
        drop((rx, tx));
        Ok(())
    };
    cycle(0)?; // warm up (thread-local buffers)
    let before = common::open_fds();
    let inheritable = common::inheritable_fds();
    for i in 0..1000 {
        cycle(i)?;
    }
    check_eq!(common::open_fds(), before);
    check_eq!(common::inheritable_fds(), inheritable);
    Ok(())
}

#[process]
fn touch_all(q: Queue<u8>, j: JoinableQueue<u8>, s: SimpleQueue<u8>, tx: Sender<u8>) {
    q.put(1).expect("put");
    j.put(2).expect("put");
    s.put(3).expect("put");
    tx.send(4).expect("send");
}

/// No descriptor leaks when channels travel to children and back.
fn no_leaked_descriptors_through_children(m: StartMethod) -> Outcome {
    let cycle = || -> Outcome {
        let q = Queue::new()?;
        let j = JoinableQueue::new()?;
        let s = SimpleQueue::new()?;
        let (rx, tx) = Pipe::<u8>::simplex()?;
        let p = Process::new(touch_all, (q.clone(), j.clone(), s.clone(), tx)).with_start_method(m);
        start(&p)?;
        joined(&p)?;
        check_eq!(q.get()?, 1);
        check_eq!(j.get()?, 2);
        check_eq!(s.get()?, 3);
        check_eq!(rx.recv()?, 4);
        Ok(())
    };
    cycle()?; // warm up (the fork server)
    let before = common::open_fds();
    for _ in 0..20 {
        cycle()?;
    }
    check_eq!(common::open_fds(), before);
    Ok(())
}

static INHERITED: OnceLock<(Queue<u32>, Connection<u32, u32>)> = OnceLock::new();

/// Exits with 0 when the parent's channels, seen through the memory a fork child inherits,
/// refuse to work (their descriptors are closed in the child).
#[process]
fn use_inherited_channels() {
    let Some((q, conn)) = INHERITED.get() else {
        std::process::exit(2)
    };
    let refused =
        |r: multiproc::Result<()>| matches!(r, Err(e) if e.kind() == ErrorKind::InvalidInput);
    if !refused(q.put(1)) || !refused(conn.send(1)) || !refused(q.get().map(drop)) {
        std::process::exit(3);
    }
    // Dropping them here must not close descriptors the child owns now.
    let (rx, tx) = Pipe::<u8>::simplex().expect("pipe");
    tx.send(1).expect("send");
    if rx.recv().ok() != Some(1) {
        std::process::exit(4);
    }
}

/// A fork child cannot use, by mistake, the channels in its copy of the parent's memory.
fn fork_child_refuses_inherited_channels() -> Outcome {
    let (a, b) = Pipe::<u32, u32>::duplex()?;
    let q = Queue::new()?;
    q.put(7)?;
    let _ = INHERITED.set((q.clone(), a));
    let p = Process::new(use_inherited_channels, ()).with_start_method(StartMethod::Fork);
    start(&p)?;
    joined(&p)?;
    // Still fine here.
    check_eq!(q.try_get()?, 7);
    let (_, a) = INHERITED.get().ok_or("set")?;
    a.send(5)?;
    check_eq!(b.recv()?, 5);
    Ok(())
}

fn main() {
    multiproc::init();
    let mut trials = trials!(each_method:
        pipe_duplex,
        pipe_simplex,
        pipe_poll_timeout,
        pipe_peer_closed,
        pipe_100_mib,
        pipe_carries_a_pipe_end,
        pipe_boundaries,
        pipe_peer_killed_while_waiting,
        pipe_peer_dropped_while_waiting,
        pipe_mixed_order,
        queue_mixed_order,
        queue_producer_killed_mid_put,
        queue_get,
        queue_put_bounded,
        queue_fork,
        queue_join_before_drain,
        queue_many_producers_consumers,
        queue_consumer_killed_between_items,
        queue_consumer_killed_mid_stream,
        queue_stopped_peer_holds_a_lock,
        queue_issue_example,
        queue_large_items,
        queue_items_nested_too_deep,
        queue_of_pipe_ends,
        joinable_task_done,
        joinable_stopped_consumer_and_join_timeout,
        joinable_producer_killed_waiting_for_room,
        queue_as_pool_task_argument,
        queue_as_pool_initializer_argument,
        no_leaked_descriptors_through_children,
    );
    trials.extend(trials!(once:
        queue_qsize,
        queue_unencodable_item,
        queue_closed,
        no_leaked_descriptors,
        joinable_rules,
        fork_child_refuses_inherited_channels,
    ));
    common::run(trials)
}
