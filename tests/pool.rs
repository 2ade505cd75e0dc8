//! `Pool` under every start method: ordering, chunking, every `AsyncResult` method, callbacks,
//! state rules, maxtasksperchild, initializer, panics, dead workers, task timeouts, threads,
//! pools in children, and no leaked descriptor or zombie.

mod common;

use std::cell::Cell;
use std::collections::HashSet;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    linked, read_when_ready, scratch, unlinked, write_line, ClaimsDepth, Node, Outcome, LONG,
};
use multiproc::{process, ErrorKind, Pool, Process, StartMethod};
use serde::{Deserialize, Serialize, Serializer};

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[process]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[process]
fn pid_of(_n: u32) -> u32 {
    std::process::id()
}

/// Ignores SIGTERM, says so in the file at `ready`, then sleeps `millis`.
#[process]
fn deaf_sleep(ready: String, millis: u64) {
    // SAFETY: sets the disposition of one signal in this worker process.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    write_line(&ready, "deaf");
    std::thread::sleep(Duration::from_millis(millis));
}

#[process]
fn slow_square(n: u64, millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    n * n
}

#[process]
fn panics_on(n: u64, bad: u64) -> u64 {
    if n == bad {
        panic!("deliberate panic: bad item {n}");
    }
    n
}

#[process]
fn dies_or_panics(n: u64, bad: [u64; 2]) -> u64 {
    if bad.contains(&n) {
        if n == bad[0] {
            // The later item fails first.
            panic!("deliberate panic: bad item {n}");
        }
        std::thread::sleep(Duration::from_millis(200));
        panic!("deliberate panic: bad item {n}");
    }
    n
}

/// Dies by `signal` (or exits with `-signal` when positive) on item `bad`.
#[process]
fn dies_on(n: u64, bad: u64, how: i32) -> u64 {
    if n == bad {
        if how > 0 {
            std::process::exit(how);
        }
        // SAFETY: default disposition, then the signal, in our own process.
        unsafe {
            libc::signal(-how, libc::SIG_DFL);
            libc::raise(-how);
        }
    }
    n
}

/// Numbers in, a tuple of numbers out: the raw carrier both ways.
#[process]
fn mixed_tuple(a: u8, b: u64) -> (u64, f64, i8) {
    (b.wrapping_add(u64::from(a)), b as f64, a as i8)
}

/// Records that the initializer ran in this process: one line per run in `dir/<pid>`.
#[process]
fn record_init(dir: String) {
    use std::io::Write;
    let path = format!("{dir}/{}", std::process::id());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    writeln!(file, "init").expect("write");
}

#[process]
fn failing_init(message: String) {
    panic!("{message}");
}

struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

impl<'de> Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unencodable)
    }
}

#[process]
fn unencodable(_n: u32) -> Unencodable {
    Unencodable
}

/// Encodes fine in the worker, refuses to decode in the parent.
struct Undecodable;

impl Serialize for Undecodable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(7)
    }
}

impl<'de> Deserialize<'de> for Undecodable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u8::deserialize(d)?;
        Err(serde::de::Error::custom("this value refuses to be decoded"))
    }
}

#[process]
fn undecodable(_n: u32) -> Undecodable {
    Undecodable
}

#[process]
fn exiting_init(code: i32) {
    std::process::exit(code);
}

/// Decoding panics in the parent.
struct PanicsOnDecode;

impl Serialize for PanicsOnDecode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for PanicsOnDecode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u8::deserialize(d)?;
        panic!("deliberate panic: a Deserialize impl that panics");
    }
}

#[process]
fn panics_on_decode(_n: u32) -> PanicsOnDecode {
    PanicsOnDecode
}

#[process]
fn bytes_len(v: Vec<u8>) -> u64 {
    v.len() as u64
}

/// In a child: a pool of 2 workers; writes their pids, then sleeps. With `sibling`, it also
/// borrows a worker (`apply`) and then forks a long-lived child, which must not keep the
/// workers' sockets open; its pid is written after a `/`.
#[process]
fn pool_owner(path: String, method: String, sibling: bool) {
    let method: StartMethod = method.parse().expect("method");
    let pool = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .expect("pool");
    let pids: HashSet<u32> = pool
        .map_chunked(slow_pid, (0..8).map(|_| 50), 1)
        .expect("map")
        .into_iter()
        .collect();
    let mut text: Vec<String> = pids.iter().map(u32::to_string).collect();
    if sibling {
        pool.apply(square, 3).expect("apply");
        let p = Process::new(sleep_secs, 30).with_start_method(StartMethod::Fork);
        p.start().expect("the forked sibling");
        text.push(format!("/{}", p.pid().expect("pid")));
    }
    write_line(&path, &text.join(" "));
    std::thread::sleep(Duration::from_secs(60));
}

#[process]
fn sleep_secs(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

#[process]
fn count_fds(fds: Vec<multiproc::SharedFd>) -> usize {
    fds.len()
}

#[process]
fn slow_pid(millis: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(millis));
    std::process::id()
}

/// In a child: makes a pool, maps, writes the result (or the error kind).
#[process]
fn pool_in_child(path: String, method: String) {
    let method: StartMethod = method.parse().expect("method");
    let outcome = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .and_then(|pool| pool.map(square, 0..5));
    let text = match outcome {
        Ok(values) => format!("{values:?}"),
        Err(err) => format!("{:?}", err.kind()),
    };
    write_line(&path, &text);
}

fn pool(m: StartMethod, processes: usize) -> Result<Pool, libtest_mimic::Failed> {
    Pool::builder()
        .processes(processes)
        .start_method(m)
        .build()
        .map_err(|err| format!("pool: {err}").into())
}

fn map_ordering_and_chunks(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let expected: Vec<u64> = (0..1000).map(|n| n * n).collect();
    check_eq!(pool.map(square, 0..1000)?, expected);
    check_eq!(pool.map_chunked(square, 0..1000, 1)?, expected);
    check_eq!(pool.map_chunked(square, 0..1000, 7)?, expected);
    check_eq!(
        pool.map_chunked(square, 0..10, 1000)?,
        expected[..10].to_vec()
    );
    check_eq!(pool.map(square, Vec::new())?, Vec::<u64>::new());
    check_eq!(pool.map_chunked(square, Vec::new(), 1)?, Vec::<u64>::new());
    check_eq!(
        pool.map_chunked(square, 0..3, 0).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    check_eq!(pool.starmap(add, vec![(1, 2), (3, 4)])?, vec![3, 7]);
    check_eq!(pool.starmap_async(add, vec![(5, 5)]).get()?, vec![10]);
    check_eq!(pool.apply(square, 7)?, 49);
    check_eq!(pool.apply(add, (2, 3))?, 5);
    Ok(())
}

/// An input that says it holds `claims` items (an exact size hint, which safe code may get
/// wrong) and yields those of `inner`.
struct Lying<I> {
    claims: usize,
    inner: I,
    taken: usize,
}

impl<I: Iterator> Iterator for Lying<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next()?;
        self.taken += 1;
        Some(item)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.claims.saturating_sub(self.taken);
        (left, Some(left))
    }
}

/// Runs `map` on a thread of its own, waited for at most [`LONG`]: a map that queued a chunk
/// for every item its input claims would run for hours.
fn within<T: Send + 'static>(
    what: &str,
    pool: &Arc<Pool>,
    map: impl FnOnce(&Pool) -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let shared = pool.clone();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(map(&shared));
    });
    match rx.recv_timeout(LONG) {
        Ok(value) => {
            // Joined: a thread still ending would make the next fork start (a pool of the
            // next trial) refuse a multi-threaded process.
            let _ = thread.join();
            Ok(value)
        }
        Err(_) => {
            // Its thread is left behind; the pool stops, so that it stops too.
            pool.terminate();
            Err(format!("{what}: no result within {LONG:?}"))
        }
    }
}

/// A map over an input that claims more (or fewer) items than it has returns the results of
/// the items it has, at once: no room is reserved for the claimed items, no empty chunk is
/// queued for them. More chunks than a map can number is a clear error.
fn inputs_that_lie_about_their_length(m: StartMethod) -> Outcome {
    let pool = Arc::new(pool(m, 2)?);
    let lying = |claims, has: u64| Lying {
        claims,
        inner: 0..has,
        taken: 0,
    };
    let squares = |n: u64| (0..n).map(|i| i * i).collect::<Vec<u64>>();
    // A terabyte of claimed items, in the default chunks.
    check_eq!(
        within("1 << 40 claimed", &pool, move |p| p
            .map(square, lying(1 << 40, 5)))??,
        squares(5)
    );
    // One chunk per claimed item.
    check_eq!(
        within("1 << 31 claimed, chunks of 1", &pool, move |p| p
            .map_chunked(square, lying(1 << 31, 5), 1))??,
        squares(5)
    );
    // Ending on a chunk's boundary, and before the first chunk.
    check_eq!(
        within("100 claimed, chunks of 5", &pool, move |p| p.map_chunked(
            square,
            lying(100, 10),
            5
        ))??,
        squares(10)
    );
    check_eq!(
        within("100 claimed, none", &pool, move |p| p.map_chunked(
            square,
            lying(100, 0),
            5
        ))??,
        squares(0)
    );
    // Fewer claimed than there are: the last chunk takes the rest.
    check_eq!(
        within("3 claimed", &pool, move |p| p.map_chunked(
            square,
            lying(3, 10),
            1
        ))??,
        squares(10)
    );
    // Arguments collected chunk by chunk (vectors of bytes), not encoded one at a time.
    let vectors = |claims, has: u64| Lying {
        claims,
        inner: (0..has).map(|n| vec![7u8; n as usize]),
        taken: 0,
    };
    check_eq!(
        within("1 << 40 vectors claimed", &pool, move |p| p
            .map(bytes_len, vectors(1 << 40, 5)))??,
        vec![0, 1, 2, 3, 4]
    );
    check_eq!(
        within("1 << 31 vectors claimed, chunks of 1", &pool, move |p| p
            .map_chunked(bytes_len, vectors(1 << 31, 5), 1))??,
        vec![0, 1, 2, 3, 4]
    );
    // `imap` takes its chunks from such an input as it goes, whatever their size.
    check_eq!(
        within(
            "imap, 1 << 40 claimed, chunks of usize::MAX",
            &pool,
            move |p| p
                .imap(square, lying(1 << 40, 5))
                .chunksize(usize::MAX)
                .collect::<multiproc::Result<Vec<u64>>>()
        )??,
        squares(5)
    );
    // A buffer size past what a `u32` counts is a bound all the same, not none.
    for buffersize in [(1usize << 32) - 2, usize::MAX] {
        check_eq!(
            within("imap with a huge buffersize", &pool, move |p| p
                .imap(square, 0..10u64)
                .buffersize(buffersize)
                .collect::<multiproc::Result<Vec<u64>>>())??,
            squares(10)
        );
    }
    // More chunks than a map numbers (2^32).
    let err = within("1 << 40 claimed, chunks of 1", &pool, move |p| {
        p.map_chunked(square, lying(1 << 40, 5), 1)
    })?
    .unwrap_err();
    check_eq!(err.kind(), ErrorKind::InvalidInput);
    check!(err.to_string().contains("chunks"), "{err}");
    Ok(())
}

/// Limits too long for the clock (`Duration::MAX`) are limits that never come, not a panic of
/// the pool's driver thread when it adds them to the time.
fn durations_too_long_for_the_clock(m: StartMethod) -> Outcome {
    let pool = Pool::builder()
        .processes(1)
        .start_method(m)
        .idle_timeout(Duration::MAX)
        .soft_task_timeout(Duration::MAX)
        .start_retry_limit(Duration::MAX)
        .build()?;
    check_eq!(pool.map(square, 0..5)?, vec![0, 1, 4, 9, 16]);
    // The driver looks at its idle workers and running tasks meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    check_eq!(pool.map(square, 0..5)?, vec![0, 1, 4, 9, 16]);
    pool.close();
    pool.join()?;
    Ok(())
}

#[process]
fn linked_list(nodes: u32) -> Option<Box<Node>> {
    linked(nodes)
}

#[process]
fn claims_depth(levels: usize) -> ClaimsDepth {
    ClaimsDepth(levels)
}

/// Results nested deeper than the codec takes (1024 levels) are a task's error, and the pool
/// goes on: a forged one used to overflow the stack of the pool's driver thread, which killed
/// the process that owns the pool, and so did an honest linked list of 3000 nodes, which its
/// worker encoded on a larger stack.
fn results_nested_too_deep(m: StartMethod) -> Outcome {
    let pool = Pool::builder().processes(1).start_method(m).build()?;
    // As deep as the codec takes: 500 nodes, 1001 levels with the `Some` of the head.
    check_eq!(unlinked(pool.apply(linked_list, 500)?), 500);
    check_eq!(pool.apply(claims_depth, 100)?.0, 100);
    // An honest list too deep: refused where the worker encodes it.
    let err = pool.apply(linked_list, 3000).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Codec);
    check!(
        common::chain(&err).contains("nest more than 1024 deep"),
        "{}",
        common::chain(&err)
    );
    // Forged: refused where the driver decodes it.
    let err = pool.apply(claims_depth, 1_000_000).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Codec);
    check!(
        common::chain(&err).contains("nest more than 1024 deep"),
        "{}",
        common::chain(&err)
    );
    check_eq!(pool.apply(square, 12)?, 144);
    pool.close();
    pool.join()?;
    Ok(())
}

/// Appends `n` to the file at `path` (each write whole, with `O_APPEND`), after `millis`:
/// which tasks ran, and when.
#[process]
fn log_number(path: String, n: u64, millis: u64) -> u64 {
    use std::io::Write;
    std::thread::sleep(Duration::from_millis(millis));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .expect("open the log");
    f.write_all(format!("{n} {}\n", now_ms()).as_bytes())
        .expect("write the log");
    n
}

/// Milliseconds since the epoch: when a task ran, comparable across processes.
fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Dies (SIGKILL) after `millis`.
#[process]
fn dies_after(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    common::kill_self()
}

/// The numbers `log_number` wrote to `path` (at or after `since`, in ms since the epoch).
fn marked_since(path: &str, since: u128) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (n, at) = line.split_once(' ')?;
            (at.parse::<u128>().ok()? >= since).then(|| n.to_string())
        })
        .collect()
}

fn marked(path: &str) -> Vec<String> {
    marked_since(path, 0)
}

/// Tasks queued in a worker's ring behind a running task, then cancelled (`cancel` said
/// `true`), never run: not when the driver moves the tasks queued behind a busy worker to
/// one that went idle (it moved the cancelled ones too), not when the worker they were queued
/// on dies (they went to its replacement), not when `shutdown(cancel_futures)` cancels them,
/// not when a `map_async` is cancelled, nor when an executor `map` is dropped (which revoked
/// nothing in the rings).
/// An executor of `workers` processes started with `m`.
fn executor(m: StartMethod, workers: usize) -> multiproc::Result<multiproc::Executor> {
    multiproc::Executor::builder()
        .max_workers(workers)
        .start_method(m)
        .build()
}

fn cancelled_tasks_never_run(m: StartMethod) -> Outcome {
    let dir = scratch("cancelled");
    let log = |what: &str| dir.join(what).to_string_lossy().to_string();

    // Moved to an idle worker.
    let ex = executor(m, 2)?;
    let path = log("moved");
    let a = ex.submit(slow_square, (1, 300));
    let b = ex.submit(slow_square, (2, 1500));
    std::thread::sleep(Duration::from_millis(50));
    let c = ex.submit(log_number, (path.clone(), 1, 0));
    let d = ex.submit(log_number, (path.clone(), 2, 0));
    std::thread::sleep(Duration::from_millis(50));
    let (cc, dc) = (c.cancel(), d.cancel());
    check!(cc && dc, "cancel of queued tasks: {cc} {dc} ({c:?} {d:?})");
    check_eq!(a.result_timeout(LONG)?, 1);
    check_eq!(b.result_timeout(LONG)?, 4);
    ex.shutdown(true, false)?;
    check!(c.cancelled() && d.cancelled(), "{c:?} {d:?}");
    check!(
        marked(&path).is_empty(),
        "cancelled yet ran: {:?}",
        marked(&path)
    );

    // Queued on a worker that dies.
    let ex = executor(m, 1)?;
    let path = log("dead");
    let a = ex.submit(dies_after, 400);
    std::thread::sleep(Duration::from_millis(50));
    let c = ex.submit(log_number, (path.clone(), 1, 0));
    std::thread::sleep(Duration::from_millis(50));
    check!(c.cancel(), "cancel of a queued task ({c:?})");
    check_eq!(a.result_timeout(LONG).unwrap_err().kind(), ErrorKind::Died);
    check_eq!(ex.submit(square, 3).result_timeout(LONG)?, 9);
    ex.shutdown(true, false)?;
    check!(
        marked(&path).is_empty(),
        "cancelled yet ran: {:?}",
        marked(&path)
    );

    // Cancelled by the shutdown.
    let ex = executor(m, 2)?;
    let path = log("shutdown");
    let a = ex.submit(slow_square, (1, 300));
    let b = ex.submit(slow_square, (2, 1500));
    std::thread::sleep(Duration::from_millis(50));
    let c = ex.submit(log_number, (path.clone(), 1, 0));
    let d = ex.submit(log_number, (path.clone(), 2, 0));
    std::thread::sleep(Duration::from_millis(50));
    ex.shutdown(true, true)?;
    check_eq!((a.result()?, b.result()?), (1, 4));
    let ran = marked(&path);
    let ran_anyway =
        |f: &multiproc::TaskFuture<u64>, n: &str| f.cancelled() && ran.iter().any(|r| r == n);
    check!(
        !ran_anyway(&c, "1") && !ran_anyway(&d, "2"),
        "cancelled by the shutdown yet ran: {ran:?} ({c:?} {d:?})"
    );

    // A map's chunks, cancelled, and an executor map dropped: items 0 and 1 run first (the
    // second for 1.5 s), the others are queued; none of those may run after the cancel (a
    // worker that started late may have run some before it).
    for how in ["map_async", "dropped map"] {
        let ex = executor(m, 2)?;
        let path = log(&how.replace(' ', "-"));
        let items: Vec<_> = [(0, 300), (1, 1500), (2, 0), (3, 0), (4, 0), (5, 0)]
            .into_iter()
            .map(|(n, ms)| (path.clone(), n, ms))
            .collect();
        let cancelled_at;
        if how == "map_async" {
            let r = ex.pool().map_async_chunked(log_number, items, 1);
            std::thread::sleep(Duration::from_millis(100));
            cancelled_at = now_ms();
            check!(r.cancel(), "cancel of a running map");
            check_eq!(r.get().unwrap_err().kind(), ErrorKind::Cancelled);
        } else {
            use futures::Stream;
            let mut stream = ex.map(log_number, items).into_stream();
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            let polled = std::pin::Pin::new(&mut stream).poll_next(&mut cx);
            check!(polled.is_pending(), "{polled:?}");
            std::thread::sleep(Duration::from_millis(100));
            cancelled_at = now_ms();
            drop(stream);
        }
        ex.shutdown(true, false)?;
        let late: Vec<_> = marked_since(&path, cancelled_at)
            .into_iter()
            .filter(|n| n != "0" && n != "1")
            .collect();
        check!(
            late.is_empty(),
            "{how}: ran after it was cancelled: {late:?}"
        );
    }
    Ok(())
}

/// `join` from two threads at once: neither returns before the work is done and the workers
/// have exited (the second one used to return at once, the work still running).
fn join_from_two_threads(m: StartMethod) -> Outcome {
    let pool = Pool::builder().processes(1).start_method(m).build()?;
    let r = pool.apply_async(slow_square, (3, 500));
    pool.close();
    let done_when_joined = std::thread::scope(|s| {
        let joins: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let joined = pool.join();
                    (joined.is_ok(), r.ready())
                })
            })
            .collect();
        joins
            .into_iter()
            .map(|j| j.join().unwrap_or((false, false)))
            .collect::<Vec<_>>()
    });
    check_eq!(done_when_joined, vec![(true, true), (true, true)]);
    check_eq!(r.get()?, 9);
    Ok(())
}

/// A lazy map (`imap`, an executor's `map`) reads its input as its results are taken. A
/// pool closed and joined meanwhile finishes the chunks already submitted (`join` used to
/// stop waiting for them, and their results were lost), and the rest fails with an error that
/// says why.
fn lazy_map_across_close_and_join(m: StartMethod) -> Outcome {
    let pool = Pool::builder().processes(2).start_method(m).build()?;
    // The first item at once, the others slow: still running when `join` is called.
    let mut it = pool
        .imap(
            slow_square,
            (0..20u64).map(|n| (n, if n == 0 { 0 } else { 300 })),
        )
        .buffersize(4);
    check_eq!(it.next().transpose()?, Some(0));
    pool.close();
    pool.join()?;
    let rest: Vec<_> = it.collect();
    let done: Vec<u64> = rest
        .iter()
        .map_while(|r| r.as_ref().ok().copied())
        .collect();
    check!(
        done.len() >= 3
            && done
                .iter()
                .enumerate()
                .all(|(i, &v)| v == ((i + 1) * (i + 1)) as u64),
        "the chunks submitted before the join: {done:?}"
    );
    let err = rest
        .iter()
        .find_map(|r| r.as_ref().err())
        .ok_or("the rest of the input was not refused")?;
    check_eq!(err.kind(), ErrorKind::NotRunning);
    check!(
        err.to_string().contains("take them before the shutdown"),
        "{err}"
    );
    Ok(())
}

/// A map's progress callback (which runs in the pool's driver thread) that panics fails the
/// map with an error that says so (it was reported as a result's decoding that panicked), and
/// is not called again; the pool goes on.
fn progress_callback_panics(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let err = pool
        .map_async_progress(square, 0..100u64, Some(10), move |p| {
            counted.fetch_add(1, Ordering::SeqCst);
            if p.done >= 30 {
                panic!("the bar broke at {}", p.done);
            }
        })
        .get()
        .unwrap_err();
    check_eq!(err.kind(), ErrorKind::Panicked);
    check!(
        err.to_string()
            .contains("the map's progress callback panicked: the bar broke at 30"),
        "{err}"
    );
    check_eq!(calls.load(Ordering::SeqCst), 3);
    check_eq!(pool.map(square, 0..4u64)?, vec![0, 1, 4, 9]);
    Ok(())
}

/// A pool of more workers than any machine runs is refused at once with an error, not tried
/// (which aborted the caller, on a reservation of room for each).
fn pools_of_more_processes_than_a_machine_runs() -> Outcome {
    for processes in [usize::MAX, 1 << 40, (1 << 16) + 1] {
        let err = Pool::builder().processes(processes).build().unwrap_err();
        check_eq!(err.kind(), ErrorKind::InvalidInput);
        let err = multiproc::Executor::builder()
            .max_workers(processes)
            .build()
            .unwrap_err();
        check_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    let pool = Pool::new(1)?;
    check_eq!(
        pool.resize(usize::MAX).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    check_eq!(pool.apply(square, 3)?, 9);
    Ok(())
}

/// The numbers of the `SlowToRead` results being decoded in this process now (by a pool's
/// driver thread).
static BEING_READ: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// A result whose decoding in the parent takes 300 ms, and says when it begins.
#[derive(Debug, Serialize)]
struct SlowToRead(u64);

impl<'de> Deserialize<'de> for SlowToRead {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        BEING_READ.lock().unwrap().push(n);
        std::thread::sleep(Duration::from_millis(300));
        BEING_READ.lock().unwrap().retain(|&m| m != n);
        Ok(SlowToRead(n))
    }
}

#[process]
fn slow_to_read(n: u64) -> SlowToRead {
    SlowToRead(n)
}

/// Leaves a file named `n` in `dir` as it starts; its result is slow to decode (a driver
/// slower to take results than the workers are to make them).
#[process]
fn noted_slowish(n: u64, dir: String) -> CountedRead {
    write_line(&format!("{dir}/{n}"), "");
    CountedRead(n)
}

/// `terminate` stops a map whose results stream back: the driver took every reply that waited
/// and handed each worker its next task before it looked at the pool's state again, so while
/// results came faster than it took them (large ones, slow to decode) it went on to the end of
/// the queue, and what waited failed only then.
fn terminate_while_results_stream(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let dir = scratch("streaming");
    let path = dir.to_string_lossy().into_owned();
    let started = || std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let pending = pool.map_async_chunked(noted_slowish, (0..200).map(|n| (n, path.clone())), 1);
    let begun = Instant::now();
    while started() < 6 {
        check!(begun.elapsed() < LONG, "the map never got going");
        std::thread::sleep(Duration::from_millis(1));
    }
    pool.terminate();
    let at_terminate = started();
    let outcome = pending.get_timeout(LONG).map(drop).map_err(|e| e.kind());
    pool.join()?;
    let after = started();
    check_eq!(outcome, Err(ErrorKind::Terminated));
    // The tasks the workers already had (one running and one queued behind, each), and one
    // being handed over as the pool was terminated.
    check!(
        after - at_terminate <= 6,
        "{} tasks started after terminate ({at_terminate} before)",
        after - at_terminate
    );
    Ok(())
}

/// Results decoded in this process so far (see [`CountedRead`]).
static DECODED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A result whose decoding in the parent takes 20 ms, counted in [`DECODED`].
#[derive(Debug, Serialize)]
struct CountedRead(u64);

impl<'de> Deserialize<'de> for CountedRead {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        std::thread::sleep(Duration::from_millis(20));
        DECODED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(CountedRead(n))
    }
}

/// Item 0 takes `millis`, then leaves a file named `zero` in `dir`; the others are at once.
#[process]
fn late_first(n: u64, dir: String, millis: u64) -> CountedRead {
    if n == 0 {
        std::thread::sleep(Duration::from_millis(millis));
        write_line(&format!("{dir}/zero"), "");
    }
    CountedRead(n)
}

/// A map whose first chunk comes last: the chunks that came before their turn waited
/// encoded, and the first one's delivery decoded them all in a row on the driver thread,
/// which looked at nothing else meanwhile (here `terminate`; as well a task timeout, a cancel,
/// a worker's death), for as long as the map is long. Each chunk is decoded as it comes.
fn terminate_while_early_chunks_decode(m: StartMethod) -> Outcome {
    use std::sync::atomic::Ordering::SeqCst;
    let pool = pool(m, 2)?;
    let dir = scratch("late-first");
    let path = dir.to_string_lossy().into_owned();
    let pending = pool.map_async_chunked(late_first, (0..150).map(|n| (n, path.clone(), 1500)), 1);
    read_when_ready(&dir.join("zero"), LONG)?;
    // The first chunk's result is in: its delivery has begun, or is about to.
    let begun = DECODED.load(SeqCst);
    let t = Instant::now();
    while DECODED.load(SeqCst) < begun + 2 {
        check!(t.elapsed() < LONG, "nothing was decoded");
        std::thread::sleep(Duration::from_millis(1));
    }
    pool.terminate();
    let at_terminate = DECODED.load(SeqCst);
    let outcome = pending.get_timeout(LONG).map(drop).map_err(|e| e.kind());
    let after = DECODED.load(SeqCst);
    pool.join()?;
    check_eq!(outcome, Err(ErrorKind::Terminated));
    check!(
        after - at_terminate <= 10,
        "{} results decoded after terminate before the map failed",
        after - at_terminate
    );
    Ok(())
}

/// Writes its pid in the file at `ready`, then sleeps `millis`.
#[process]
fn noted_pid_sleep(ready: String, millis: u64) {
    write_line(&ready, &std::process::id().to_string());
    std::thread::sleep(Duration::from_millis(millis));
}

/// A worker stuck on one task, seen to while the other workers' results stream back slower
/// than they come (each takes 20 ms to decode): `how` it ends (`kill`: its job cancelled with
/// `cancel_and_kill`; `signal`: killed by SIGKILL; `timeout`: its task overruns the pool's
/// task timeout). Returns how many of the stream's tasks started from then until the stuck
/// task's outcome came and its worker was gone, and how long that took.
fn stuck_while_results_stream(
    m: StartMethod,
    how: &str,
) -> Result<(usize, Duration), libtest_mimic::Failed> {
    let mut builder = Pool::builder().processes(3).start_method(m);
    if how == "timeout" {
        builder = builder.task_timeout(Duration::from_secs(1));
    }
    let pool = builder.build()?;
    let dir = scratch("stuck-streaming");
    let ready = dir.join("ready");
    let streamed = dir.join("streamed");
    std::fs::create_dir_all(&streamed)?;
    let path = streamed.to_string_lossy().into_owned();
    let started = || std::fs::read_dir(&streamed).map(|d| d.count()).unwrap_or(0);
    let ready_path = ready.to_string_lossy().into_owned();
    let stuck = pool.apply_async(noted_pid_sleep, (ready_path, 60_000));
    let pid: i32 = read_when_ready(&ready, LONG)?.parse()?;
    let pending = pool.map_async_chunked(noted_slowish, (0..300).map(|n| (n, path.clone())), 1);
    let begun = Instant::now();
    while started() < 6 {
        check!(begun.elapsed() < LONG, "the map never got going");
        std::thread::sleep(Duration::from_millis(1));
    }
    let at = started();
    let t = Instant::now();
    let expected = match how {
        "kill" => {
            check!(stuck.cancel_and_kill(), "the stuck task was not cancelled");
            ErrorKind::Cancelled
        }
        "signal" => {
            // SAFETY: a signal to a worker of this test's pool.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            ErrorKind::Died
        }
        _ => ErrorKind::Timeout,
    };
    let outcome = stuck.get_timeout(LONG).map_err(|e| e.kind());
    check_eq!(outcome, Err(expected));
    while !common::is_gone(pid) && t.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = t.elapsed();
    let after = started();
    check!(
        !pending.ready(),
        "the stream was over before the stuck task's end"
    );
    pool.terminate();
    pool.join()?;
    Ok((after - at, took))
}

/// A worker's death, a cancel that kills, a task timeout, while results stream back slower
/// than they come: each is seen to after a few of them. A worker's death waited for 16 rounds
/// of the driver without a poll, each taking two replies of every worker: 64 of them here.
fn deaths_while_results_stream(m: StartMethod) -> Outcome {
    let (n, _) = stuck_while_results_stream(m, "kill")?;
    check!(
        n <= 12,
        "{n} tasks started before a killed job's worker was gone"
    );
    let (n, _) = stuck_while_results_stream(m, "signal")?;
    check!(
        n <= 30,
        "{n} tasks started before a dead worker's task failed"
    );
    let (_, took) = stuck_while_results_stream(m, "timeout")?;
    check!(
        took < Duration::from_secs(5),
        "a task timeout of 1s was seen to after {took:?}"
    );
    Ok(())
}

/// Says so in the file at `ready`, sleeps `millis`, then says so in the file at `done`.
#[process]
fn sleep_between_notes(ready: String, done: String, millis: u64) {
    write_line(&ready, "started");
    std::thread::sleep(Duration::from_millis(millis));
    write_line(&done, "done");
}

/// `cancel` of a task that its waiter runs on a borrowed worker (`wait` / `get` of a queued
/// `apply_async`) fails the waiter at once, as it fails a task the driver runs: the waiter
/// went on waiting for the task to end. The task runs on; its worker serves again after it.
fn cancel_of_a_task_run_by_its_waiter(m: StartMethod) -> Outcome {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let pool = pool(m, 1)?;
    let dir = scratch("cancel-borrowed");
    let (ready, done) = (dir.join("ready"), dir.join("done"));
    let in_callback = Arc::new(AtomicBool::new(false));
    // The driver thread is held in a callback: the task queued meanwhile is run by its waiter
    // on the idle worker.
    let flag = in_callback.clone();
    let first = pool.apply_async(square, 3).on_success(move |_| {
        flag.store(true, SeqCst);
        std::thread::sleep(Duration::from_millis(1000));
    });
    let begun = Instant::now();
    while !in_callback.load(SeqCst) {
        check!(begun.elapsed() < LONG, "the callback never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let pending = pool.apply_async(sleep_between_notes, (path(&ready), path(&done), 4000));
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| pending.wait());
        read_when_ready(&ready, LONG)?;
        check!(pending.cancel(), "the task was not cancelled");
        let begun = Instant::now();
        while !waiter.is_finished() && begun.elapsed() < LONG {
            std::thread::sleep(Duration::from_millis(1));
        }
        let running = !done.exists();
        waiter.join().map_err(|_| "the waiter panicked")?;
        check!(
            running,
            "the waiter was told of the cancel only once its task ended"
        );
        Ok::<(), libtest_mimic::Failed>(())
    })?;
    check_eq!(
        pending.get_timeout(LONG).map(drop).map_err(|e| e.kind()),
        Err(ErrorKind::Cancelled)
    );
    first.get_timeout(LONG)?;
    // The task ran on, and its worker serves again.
    check_eq!(pool.map(square, 0..10)?, squares(10));
    check!(done.exists(), "the cancelled task did not run to its end");
    pool.close();
    pool.join()?;
    Ok(())
}

fn cancel_while_delivering(m: StartMethod) -> Outcome {
    // A cancel that comes while the driver decodes the result: if it says it cancelled (true),
    // the result is the Cancelled error, not the value.
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let pool = pool(m, 1)?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed) as u64;
    let r = pool.apply_async(slow_to_read, n);
    let begun = Instant::now();
    while !BEING_READ.lock().unwrap().contains(&n) {
        check!(begun.elapsed() < LONG, "the result was never decoded");
        std::thread::sleep(Duration::from_millis(1));
    }
    let cancelled = r.cancel();
    match r.get_timeout(LONG) {
        Err(err) if err.kind() == ErrorKind::Cancelled => {
            check!(
                cancelled,
                "the result is cancelled, but cancel() said false"
            )
        }
        Ok(value) => check!(!cancelled, "cancel() said true, and get() gave {value:?}"),
        Err(err) => return Err(format!("{err}").into()),
    }
    // The pool goes on.
    check_eq!(pool.apply(square, 6)?, 36);
    Ok(())
}

fn async_result_methods(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let r = pool.apply_async(slow_square, (8, 300));
    check!(!r.ready(), "not ready at once");
    check_eq!(r.successful().unwrap_err().kind(), ErrorKind::InvalidInput);
    check_eq!(
        r.get_timeout(Duration::from_millis(10)).unwrap_err().kind(),
        ErrorKind::Timeout
    );
    check!(
        !r.wait_timeout(Duration::from_millis(10)),
        "wait_timeout while running"
    );
    check!(r.wait_timeout(LONG), "wait_timeout until done");
    check!(r.ready(), "ready");
    check_eq!(r.successful()?, true);
    check_eq!(r.get_timeout(LONG)?, 64);
    check_eq!(
        r.get_timeout(LONG).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    let r = pool.apply_async(panics_on, (3, 3));
    r.wait();
    check_eq!(r.successful()?, false);
    check_eq!(r.get().unwrap_err().kind(), ErrorKind::Panicked);

    let m = pool.map_async(square, 0..100);
    check_eq!(
        m.get_timeout(LONG)?,
        (0..100).map(|n| n * n).collect::<Vec<u64>>()
    );
    Ok(())
}

fn callbacks(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let r = pool
        .apply_async(square, 9)
        .on_success(move |v| s.lock().unwrap().push(format!("ok {v}")));
    check_eq!(r.get()?, 81);
    let s = seen.clone();
    let r = pool
        .apply_async(panics_on, (1, 1))
        .on_success(|_| panic!("not called"))
        .on_error(move |e| s.lock().unwrap().push(format!("err {:?}", e.kind())));
    check_eq!(r.get().unwrap_err().kind(), ErrorKind::Panicked);
    let s = seen.clone();
    let r = pool
        .map_async(square, 0..4)
        .on_success(move |v| s.lock().unwrap().push(format!("map {v:?}")));
    r.wait();
    // A callback on a finished result runs at once.
    let s = seen.clone();
    let r = r.on_success(move |v| s.lock().unwrap().push(format!("late {}", v.len())));
    check_eq!(r.get()?, vec![0, 1, 4, 9]);
    check_eq!(
        *seen.lock().unwrap(),
        vec!["ok 81", "err Panicked", "map [0, 1, 4, 9]", "late 4"]
    );
    // A panicking callback becomes the result's error; the pool goes on.
    let r = pool
        .apply_async(square, 2)
        .on_success(|_| panic!("deliberate panic: callback bug"));
    let err = r.get().unwrap_err();
    check!(common::chain(&err).contains("callback bug"), "{err}");
    check_eq!(pool.apply(square, 3)?, 9);
    Ok(())
}

fn imap_ordered_and_lazy(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let got: Vec<u64> = pool
        .imap(square, 0..200)
        .collect::<multiproc::Result<_>>()?;
    check_eq!(got, (0..200).map(|n| n * n).collect::<Vec<u64>>());
    let got: Vec<u64> = pool
        .imap(square, 0..200)
        .chunksize(16)
        .collect::<multiproc::Result<_>>()?;
    check_eq!(got, (0..200).map(|n| n * n).collect::<Vec<u64>>());
    let mut unordered: Vec<u64> = pool
        .imap_unordered(square, 0..200)
        .collect::<multiproc::Result<_>>()?;
    unordered.sort_unstable();
    check_eq!(unordered, (0..200).map(|n| n * n).collect::<Vec<u64>>());
    check_eq!(pool.imap(square, Vec::new()).count(), 0);

    // Laziness: taking one result consumes a bounded part of an endless input.
    let consumed = Rc::new(Cell::new(0u64));
    let c = consumed.clone();
    let endless = (0u64..).inspect(move |_| c.set(c.get() + 1));
    let mut it = pool.imap(square, endless).chunksize(4).buffersize(2);
    check_eq!(it.next().transpose()?, Some(0));
    check!(
        consumed.get() <= (2 + 2) * 4,
        "consumed {} items for one result",
        consumed.get()
    );
    // What it keeps of the chunks is bounded too: those in flight, not one entry for every
    // chunk since the start (8 bytes an item with chunks of 1, for ever).
    let mut it = pool.imap(square, 0u64..).buffersize(2);
    for n in 0..3000u64 {
        check_eq!(it.next().transpose()?, Some(n * n));
    }
    let state = format!("{it:?}");
    let in_flight: usize = state
        .split("in_flight: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no in_flight in {state}"))?;
    check!(in_flight <= 2 + 2, "{in_flight} chunks kept: {state}");
    drop(it);
    // The pool still works after an imap dropped early.
    check_eq!(pool.apply(square, 5)?, 25);

    // A failed item yields its error in place; the iteration goes on.
    let got: Vec<Result<u64, ErrorKind>> = pool
        .imap(panics_on, (0..5).map(|n| (n, 2)))
        .map(|r| r.map_err(|e| e.kind()))
        .collect();
    check_eq!(
        got,
        vec![Ok(0), Ok(1), Err(ErrorKind::Panicked), Ok(3), Ok(4)]
    );
    Ok(())
}

fn state_rules(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    check_eq!(pool.join().unwrap_err().kind(), ErrorKind::InvalidInput);
    let queued = pool.map_async(slow_square, (0..6).map(|n| (n, 50)));
    pool.close();
    check_eq!(
        pool.apply(square, 1).unwrap_err().kind(),
        ErrorKind::NotRunning
    );
    check_eq!(
        pool.map(square, 0..3).unwrap_err().kind(),
        ErrorKind::NotRunning
    );
    pool.join()?;
    // close() let the queued work finish.
    check_eq!(queued.get()?, (0..6).map(|n| n * n).collect::<Vec<u64>>());

    let pool = self::pool(m, 2)?;
    let pending = pool.map_async_chunked(slow_square, (0..20).map(|n| (n, 60_000)), 1);
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    pool.terminate();
    pool.join()?;
    check!(
        t.elapsed() < Duration::from_secs(20),
        "terminate took {:?}",
        t.elapsed()
    );
    check_eq!(pending.get().unwrap_err().kind(), ErrorKind::Terminated);
    check_eq!(
        pool.apply(square, 1).unwrap_err().kind(),
        ErrorKind::NotRunning
    );

    check_eq!(
        Pool::builder().processes(0).build().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    check_eq!(
        Pool::builder()
            .processes(1)
            .maxtasksperchild(0)
            .build()
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    Ok(())
}

fn maxtasksperchild(m: StartMethod) -> Outcome {
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .maxtasksperchild(2)
        .build()?;
    let pids: HashSet<u32> = pool.map_chunked(pid_of, 0..20, 1)?.into_iter().collect();
    check!(
        pids.len() >= 10,
        "20 tasks, 2 per worker: {} distinct workers",
        pids.len()
    );
    Ok(())
}

fn initializer(m: StartMethod) -> Outcome {
    let dir = scratch("init");
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .initializer(record_init, dir.to_string_lossy().into_owned())
        .maxtasksperchild(3)
        .build()?;
    let pids: HashSet<u32> = pool.map_chunked(pid_of, 0..12, 1)?.into_iter().collect();
    pool.close();
    pool.join()?;
    for pid in &pids {
        let text = std::fs::read_to_string(dir.join(pid.to_string()))?;
        check_eq!(text, "init\n");
    }
    let files = std::fs::read_dir(&dir)?.count();
    check!(
        files >= pids.len(),
        "{files} initializer runs for {} workers",
        pids.len()
    );

    let broken = Pool::builder()
        .processes(2)
        .start_method(m)
        .initializer(failing_init, "deliberate panic: init exploded".to_string())
        .build()?;
    let t = Instant::now();
    let err = broken.map(square, 0..10).unwrap_err();
    check_eq!(err.kind(), ErrorKind::InitializerFailed);
    check!(
        common::chain(&err).contains("deliberate panic: init exploded"),
        "{err}"
    );
    check!(
        t.elapsed() < Duration::from_secs(30),
        "failed after {:?}",
        t.elapsed()
    );
    check_eq!(
        broken.apply(square, 1).unwrap_err().kind(),
        ErrorKind::InitializerFailed
    );
    Ok(())
}

fn panic_in_task(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let err = pool.apply(panics_on, (4, 4)).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Panicked);
    let panic = err.remote_panic().ok_or("panic data")?;
    check_eq!(panic.message, "deliberate panic: bad item 4");
    check!(
        panic
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with("tests/pool.rs:")),
        "{:?}",
        panic.location
    );
    check!(panic.process.contains("PoolWorker"), "{}", panic.process);
    check!(panic.pid > 0, "pid");
    // map reports the first failure in input order, after every chunk ran.
    let err = pool
        .map_chunked(dies_or_panics, (0..50).map(|n| (n, [30, 10])), 1)
        .unwrap_err();
    check!(common::chain(&err).contains("bad item 10"), "{err}");
    check_eq!(pool.apply(square, 6)?, 36);
    Ok(())
}

/// A panic payload whose drop panics too.
struct DropBomb;

impl Drop for DropBomb {
    fn drop(&mut self) {
        panic!("the payload's drop panicked");
    }
}

#[process]
fn panics_with_a_bomb(n: u64) -> u64 {
    if n == 3 {
        std::panic::panic_any(DropBomb);
    }
    n
}

fn panic_payload_panics_on_drop(m: StartMethod) -> Outcome {
    // The task fails as a panic; its worker goes on (a forked worker must never unwind into
    // its copy of the parent's main), and so does the pool.
    let pool = pool(m, 1)?;
    let err = pool.apply(panics_with_a_bomb, 3).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Panicked);
    check_eq!(pool.apply(square, 6)?, 36);
    let err = pool.map(panics_with_a_bomb, 0..8).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Panicked);
    check_eq!(pool.map(square, 0..4)?, vec![0, 1, 4, 9]);
    Ok(())
}

fn dead_worker(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    for (how, expect) in [
        (-libc::SIGKILL, "SIGKILL"),
        (-libc::SIGSEGV, "SIGSEGV"),
        (-libc::SIGABRT, "SIGABRT"),
        (3, "code 3"),
    ] {
        let t = Instant::now();
        let err = pool
            .map_chunked(dies_on, (0..40).map(|n| (n, 13, how)), 2)
            .unwrap_err();
        check_eq!(err.kind(), ErrorKind::Died);
        check!(common::chain(&err).contains(expect), "{err}");
        check!(
            t.elapsed() < Duration::from_secs(30),
            "took {:?}",
            t.elapsed()
        );
        // The worker was replaced: the pool serves the next call.
        check_eq!(
            pool.map(square, 0..10)?,
            (0..10).map(|n| n * n).collect::<Vec<u64>>()
        );
        // The same through apply, which runs its round trip on a borrowed idle worker.
        let err = pool.apply(dies_on, (13, 13, how)).unwrap_err();
        check_eq!(err.kind(), ErrorKind::Died);
        check!(common::chain(&err).contains(expect), "{err}");
        check_eq!(pool.apply(square, 12)?, 144);
    }
    // terminate() while another thread waits in apply: that apply fails, it does not hang.
    let pool = self::pool(m, 1)?;
    let outcome = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| pool.apply(slow_square, (2, 60_000)).map_err(|e| e.kind()));
        std::thread::sleep(Duration::from_millis(300));
        pool.terminate();
        waiting.join()
    });
    check_eq!(
        outcome.map_err(|_| "apply thread panicked")?,
        Err(ErrorKind::Terminated)
    );
    Ok(())
}

fn task_timeout(m: StartMethod) -> Outcome {
    let pool = Pool::builder()
        .processes(1)
        .start_method(m)
        .task_timeout(Duration::from_millis(300))
        .build()?;
    let t = Instant::now();
    let err = pool.apply(slow_square, (2, 60_000)).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Timeout);
    check!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    check_eq!(pool.apply(slow_square, (3, 1))?, 9);
    Ok(())
}

fn encode_failure(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    for _ in 0..3 {
        let err = pool.apply(unencodable, 1).map(|_| ()).unwrap_err();
        check_eq!(err.kind(), ErrorKind::Codec);
        check!(
            common::chain(&err).contains("refuses to be encoded"),
            "{err}"
        );
    }
    check_eq!(pool.apply(square, 4)?, 16);
    let err = pool.apply(undecodable, 1).map(|_| ()).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Codec);
    check!(
        common::chain(&err).contains("refuses to be decoded"),
        "{err}"
    );
    check_eq!(pool.apply(square, 5)?, 25);
    Ok(())
}

#[process]
fn reversed(mut v: Vec<u8>) -> Vec<u8> {
    v.reverse();
    v
}

#[process]
fn reversed_floats(mut v: Vec<f64>) -> Vec<f64> {
    v.reverse();
    v
}

#[process]
fn tagged(tag: u32, v: std::vec::Vec<u8>, name: String) -> (u32, usize, String, u64) {
    (tag, v.len(), name, v.iter().map(|&b| u64::from(b)).sum())
}

/// Writes the length and the sum of `v` to `path`, in a `Process`.
#[process]
fn sum_to_file(path: String, v: Vec<u8>) {
    let sum: u64 = v.iter().map(|&b| u64::from(b)).sum();
    write_line(&path, &format!("{} {sum}", v.len()));
}

/// Bytes that tell a shift or a lost block apart.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn byte_vectors(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    // Inline (under 16 KiB) and block-sized vectors; 5 MiB is received into huge pages.
    let sizes = [
        0usize,
        1,
        100,
        (16 << 10) - 1,
        16 << 10,
        (1 << 20) + 3,
        5 << 20,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let v = pattern(size, i as u8);
        let mut expected = v.clone();
        expected.reverse();
        // The caller's own round trip, and one through the driver thread.
        check_eq!(pool.apply(reversed, v.clone())?, expected);
        check_eq!(pool.apply_async(reversed, v).get_timeout(LONG)?, expected);
    }
    let items: Vec<Vec<u8>> = sizes
        .iter()
        .chain(sizes.iter().rev())
        .enumerate()
        .map(|(i, &size)| pattern(size, i as u8))
        .collect();
    let expected: Vec<Vec<u8>> = items
        .iter()
        .map(|v| v.iter().rev().copied().collect())
        .collect();
    check_eq!(pool.map(reversed, items.clone())?, expected);
    check_eq!(pool.map_chunked(reversed, items.clone(), 3)?, expected);
    let lazy: Vec<Vec<u8>> = pool
        .imap_unordered(reversed, items.clone())
        .chunksize(4)
        .collect::<multiproc::Result<_>>()?;
    check_eq!(lazy.len(), expected.len());
    check!(
        lazy.iter().all(|v| expected.contains(v)),
        "imap lost a vector"
    );

    // Beside other arguments.
    let big = pattern(40 << 10, 9);
    let sum: u64 = big.iter().map(|&b| u64::from(b)).sum();
    check_eq!(
        pool.apply(tagged, (7, big.clone(), "x".to_string()))?,
        (7, 40 << 10, "x".to_string(), sum)
    );
    check_eq!(
        pool.starmap(
            tagged,
            [
                (1, vec![2u8; 3], "a".to_string()),
                (2, big, "b".to_string())
            ]
        )?,
        vec![
            (1, 3, "a".to_string(), 6),
            (2, 40 << 10, "b".to_string(), sum)
        ]
    );
    pool.close();
    pool.join()?;

    // In the bootstrap of a process and of a pool's initializer, inline.
    let dir = scratch("bytes");
    let path = dir.join("sum").display().to_string();
    let v = pattern(100 << 10, 3);
    let sum: u64 = v.iter().map(|&b| u64::from(b)).sum();
    let p = Process::new(sum_to_file, (path.clone(), v.clone())).with_start_method(m);
    p.start()?;
    check_eq!(p.join_timeout(LONG)?, Some(0));
    check_eq!(
        read_when_ready(std::path::Path::new(&path), LONG)?,
        format!("{} {sum}", 100 << 10)
    );
    let init_path = dir.join("init").display().to_string();
    let pool = Pool::builder()
        .processes(1)
        .start_method(m)
        .initializer(sum_to_file, (init_path.clone(), v))
        .build()?;
    check_eq!(pool.apply(square, 3)?, 9);
    check_eq!(
        read_when_ready(std::path::Path::new(&init_path), LONG)?,
        format!("{} {sum}", 100 << 10)
    );
    pool.close();
    pool.join()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[process]
fn wrapping_square(n: u64) -> u64 {
    n.wrapping_mul(n)
}

#[process]
fn negate(n: i64) -> i64 {
    n.wrapping_neg()
}

#[process]
fn float_bits(x: f64) -> u64 {
    x.to_bits()
}

#[process]
fn halve(x: f32) -> f32 {
    x / 2.0
}

#[process]
fn low_byte(n: usize) -> u8 {
    n as u8
}

#[process]
fn widen(n: i8) -> isize {
    n as isize
}

fn numbers(m: StartMethod) -> Outcome {
    // Numbers travel as their bytes in memory (the `Raw` carrier): every value and bit pattern
    // comes back as it was, whatever the chunk size.
    let pool = pool(m, 2)?;
    let edges: Vec<u64> = vec![
        0,
        1,
        2,
        u64::MAX,
        u64::MAX - 1,
        1 << 32,
        1 << 63,
        4_294_967_295,
    ];
    let squares: Vec<u64> = edges.iter().map(|n| n.wrapping_mul(*n)).collect();
    check_eq!(pool.map(wrapping_square, edges.clone())?, squares);
    for chunksize in [1, 3, 8, 1000] {
        check_eq!(
            pool.map_chunked(wrapping_square, edges.clone(), chunksize)?,
            squares
        );
    }
    check_eq!(pool.apply(wrapping_square, u64::MAX)?, 1);
    let signed = vec![0i64, 1, -1, i64::MIN, i64::MAX, i64::MIN + 1];
    let negated: Vec<i64> = signed.iter().map(|n| n.wrapping_neg()).collect();
    check_eq!(pool.map(negate, signed.clone())?, negated);
    check_eq!(pool.map_chunked(negate, signed.clone(), 1)?, negated);
    check_eq!(pool.apply(negate, i64::MIN)?, i64::MIN);
    check_eq!(pool.apply_async(negate, i64::MAX).get()?, -i64::MAX);

    // Floats by their bits: a NaN with a payload, -0.0, infinities, the smallest subnormal.
    let floats = vec![
        0.0f64,
        -0.0,
        f64::NAN,
        f64::from_bits(0x7ff8_dead_beef_0001),
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
        f64::from_bits(1),
        f64::MAX,
    ];
    let bits: Vec<u64> = floats.iter().map(|x| x.to_bits()).collect();
    check_eq!(pool.map(float_bits, floats.clone())?, bits);
    check_eq!(pool.map_chunked(float_bits, floats.clone(), 2)?, bits);
    check_eq!(pool.apply(float_bits, -0.0)?, (-0.0f64).to_bits());
    let halves = pool.map(halve, vec![-0.0f32, 3.0, f32::INFINITY, f32::MIN_POSITIVE])?;
    check_eq!(
        halves.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        [-0.0f32, 1.5, f32::INFINITY, f32::MIN_POSITIVE / 2.0]
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    );
    check!(pool.apply(halve, f32::NAN)?.is_nan(), "NaN / 2 is NaN");

    // Other widths, and a result narrower or wider than the argument.
    check_eq!(
        pool.map(low_byte, vec![0usize, 255, 256, usize::MAX])?,
        vec![0u8, 255, 0, 255]
    );
    check_eq!(
        pool.starmap(widen, vec![i8::MIN, -1, 0, i8::MAX])?,
        vec![-128isize, -1, 0, 127]
    );

    // Two to four numbers as arguments, and a tuple of numbers as the result, travel raw too
    // (without the tuples' padding: a u8 beside a u64).
    let pairs: Vec<(u8, u64)> = vec![(0, 0), (u8::MAX, u64::MAX), (7, 1 << 40), (1, 2)];
    let expected: Vec<(u64, f64, i8)> = pairs
        .iter()
        .map(|&(a, b)| (b.wrapping_add(u64::from(a)), b as f64, a as i8))
        .collect();
    for chunksize in [1, 3, 1000] {
        let got = pool.map_chunked(mixed_tuple, pairs.clone(), chunksize)?;
        check_eq!(
            got.iter()
                .map(|t| (t.0, t.1.to_bits(), t.2))
                .collect::<Vec<_>>(),
            expected
                .iter()
                .map(|t| (t.0, t.1.to_bits(), t.2))
                .collect::<Vec<_>>()
        );
    }
    check_eq!(pool.apply(mixed_tuple, (2, 40))?.0, 42);

    // Empty input, and a large map split in chunks larger and smaller than a socket buffer.
    check_eq!(pool.map(square, Vec::new())?, Vec::<u64>::new());
    check_eq!(pool.map_chunked(negate, Vec::new(), 1)?, Vec::<i64>::new());
    let expected: Vec<u64> = (0..300_000u64).map(|n| n * n).collect();
    check_eq!(pool.map(square, 0..300_000)?, expected);
    check_eq!(pool.map_chunked(square, 0..300_000, 777)?, expected);

    // Lazily, in order and in completion order.
    let lazy: Vec<i64> = pool
        .imap(negate, signed.clone())
        .chunksize(4)
        .collect::<multiproc::Result<_>>()?;
    check_eq!(lazy, negated);
    let mut unordered: Vec<u64> = pool
        .imap_unordered(float_bits, floats.clone())
        .collect::<multiproc::Result<_>>()?;
    let mut sorted_bits = bits.clone();
    unordered.sort_unstable();
    sorted_bits.sort_unstable();
    check_eq!(unordered, sorted_bits);
    pool.close();
    pool.join()?;

    // As the argument of a process and of an initializer (inline, one value).
    let pool = Pool::builder()
        .processes(1)
        .start_method(m)
        .initializer(negate, i64::MIN)
        .build()?;
    check_eq!(pool.apply(square, 4)?, 16);
    pool.close();
    pool.join()?;
    let p = Process::new(negate, i64::MIN).with_start_method(m);
    p.start()?;
    check_eq!(p.join_timeout(LONG)?, Some(0));
    Ok(())
}

fn close_races(m: StartMethod) -> Outcome {
    // close() while a map is still queueing its chunks: the map is either refused (close came
    // first) or runs every chunk; it never waits forever.
    for delay in [0, 1, 3, 10] {
        let pool = pool(m, 2)?;
        let items = vec![vec![0u8; 4 << 10]; 200];
        let result = std::thread::scope(|scope| {
            let submitted = scope.spawn(|| pool.map_async_chunked(bytes_len, items, 1));
            std::thread::sleep(Duration::from_millis(delay));
            pool.close();
            submitted.join()
        });
        let result = result.map_err(|_| "submitting thread panicked")?;
        match result.get_timeout(LONG) {
            Ok(lens) => check_eq!(lens, vec![4 << 10; 200]),
            Err(err) => check_eq!(err.kind(), ErrorKind::NotRunning),
        }
        pool.join()?;
    }

    // An imap made before close() runs to its end; one made after fails at once.
    let pool = self::pool(m, 2)?;
    let mut early = pool.imap(square, 0..50).buffersize(0);
    check_eq!(early.next().transpose()?, Some(0));
    pool.close();
    check_eq!(
        pool.imap(square, 0..3)
            .next()
            .map(|r| r.map_err(|e| e.kind())),
        Some(Err(ErrorKind::NotRunning))
    );
    let rest: Vec<u64> = early.by_ref().collect::<multiproc::Result<_>>()?;
    check_eq!(rest.len(), 49);
    pool.join()?;

    // join() before an imap is consumed: the results of the chunks it had submitted (at
    // least the one after the first: two workers, two chunks in flight) still come, in
    // order; then one error for the rest of the input, never a hang.
    let pool = self::pool(m, 2)?;
    let mut pending = pool.imap(square, 0..1000).buffersize(0);
    check_eq!(pending.next().transpose()?, Some(0));
    pool.close();
    pool.join()?;
    let t = Instant::now();
    let tail: Vec<Result<u64, ErrorKind>> = pending.map(|r| r.map_err(|e| e.kind())).collect();
    check!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    check!(
        tail.last() == Some(&Err(ErrorKind::NotRunning)),
        "{:?}",
        tail.last()
    );
    let computed = &tail[..tail.len() - 1];
    check!(
        !computed.is_empty(),
        "the submitted chunk was lost: {tail:?}"
    );
    let expected: Vec<Result<u64, ErrorKind>> =
        (1..=computed.len() as u64).map(|n| Ok(n * n)).collect();
    check_eq!(computed, &expected[..]);
    Ok(())
}

/// The pool's driver thread is one of the library's own: a fork start right after `build`
/// returns is never refused as "multi-threaded", however soon the driver thread runs.
fn fork_right_after_build(m: StartMethod) -> Outcome {
    for _ in 0..20 {
        let pool = pool(m, 1)?;
        let p = Process::new(negate, 5).with_start_method(StartMethod::Fork);
        p.start()?;
        check_eq!(p.join_timeout(LONG)?, Some(0));
        pool.close();
        pool.join()?;
    }
    Ok(())
}

/// A fork on this thread while the driver thread starts a replacement worker: the forked
/// child never gets the new worker's sockets (it would keep the worker from seeing its parent
/// die, and an `apply` waiting for the worker's end of file waiting for the child).
fn fork_beside_the_driver(m: StartMethod) -> Outcome {
    let forked = || -> Result<i32, libtest_mimic::Failed> {
        let p =
            Process::new(common::exit_with_socket_count, ()).with_start_method(StartMethod::Fork);
        p.start()?;
        p.join_timeout(LONG)?
            .ok_or_else(|| "the forked child did not exit".into())
    };
    // What a forked child has when nothing runs beside the fork: its control socket.
    let alone = forked()?;
    let pool = pool(m, 1)?;
    for attempt in 0..40u64 {
        // The worker dies: the driver starts a replacement while this thread forks.
        let died = pool.apply_async(dies_on, (1, 1, -libc::SIGKILL));
        std::thread::sleep(Duration::from_micros(attempt * 37 % 900));
        let sockets = forked()?;
        check!(
            sockets == alone,
            "attempt {attempt}: a child forked beside the driver has {sockets} sockets, {alone} alone"
        );
        check_eq!(
            died.get_timeout(LONG).map_err(|e| e.kind()).err(),
            Some(ErrorKind::Died)
        );
    }
    Ok(())
}

/// A fork while the driver thread runs the panic hook (a result callback panicked, the panic
/// is caught): std holds its hook lock meanwhile, and a forked child that took it would wait
/// for good. The child runs its target; the hook is installed by the parent, before it forks.
/// (The default `ForkPolicy::Refuse` refuses this fork: see `fork_while_a_callback_runs`; this
/// is what a permissive policy gets.)
fn fork_while_the_driver_panics(m: StartMethod) -> Outcome {
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let previous = std::panic::take_hook();
    {
        let slow = slow.clone();
        std::panic::set_hook(Box::new(move |_| {
            if slow.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(300));
            }
        }));
    }
    let outcome = (|| -> Outcome {
        let pool = pool(m, 1)?;
        slow.store(true, Ordering::SeqCst);
        let result = pool
            .apply_async(square, 3)
            .on_success(|_| panic!("deliberate panic: a callback panics"));
        // The driver is most likely inside the slow hook now.
        std::thread::sleep(Duration::from_millis(100));
        let p = Process::new(negate, 1).with_start_method(StartMethod::Fork);
        // SAFETY: the only other threads are the pool's; its driver is in the panic hook, whose
        // lock `fork_child` holds across the fork (what this test checks), and holds no other.
        unsafe { multiproc::set_fork_policy(multiproc::ForkPolicy::Allow) };
        let started = p.start();
        // SAFETY: refusing promises nothing.
        unsafe { multiproc::set_fork_policy(multiproc::ForkPolicy::Refuse) };
        started?;
        let code = p.join_timeout(LONG)?;
        if code.is_none() {
            p.kill()?;
            p.join()?;
        }
        check_eq!(code, Some(0));
        check_eq!(
            result.get_timeout(LONG).map_err(|e| e.kind()).err(),
            Some(ErrorKind::Panicked)
        );
        Ok(())
    })();
    slow.store(false, Ordering::SeqCst);
    std::panic::set_hook(previous);
    outcome
}

/// Prints a line, as a child's target may.
#[process]
fn say(n: i64) {
    println!("say {n}");
    eprintln!("say {n}");
}

/// A fork while the driver thread runs a callback that holds standard output locked: the
/// forked child must not inherit that lock held by a thread it does not have (its first
/// `println!` would wait for good). (The default `ForkPolicy::Refuse` refuses this fork: see
/// `fork_while_a_callback_runs`; this is what a permissive policy gets.)
fn fork_while_a_callback_prints(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    let result = pool.apply_async(square, 3).on_success(|_| {
        let _out = std::io::stdout().lock();
        let _err = std::io::stderr().lock();
        std::thread::sleep(Duration::from_millis(300));
    });
    // The driver most likely holds both locks now.
    std::thread::sleep(Duration::from_millis(100));
    let p = Process::new(say, 1).with_start_method(StartMethod::Fork);
    // SAFETY: the only other threads are the pool's; its driver's callback holds standard output
    // and error, which `fork_child` holds across the fork (what this test checks), and no other.
    unsafe { multiproc::set_fork_policy(multiproc::ForkPolicy::Allow) };
    let started = p.start();
    // SAFETY: refusing promises nothing.
    unsafe { multiproc::set_fork_policy(multiproc::ForkPolicy::Refuse) };
    started?;
    let code = p.join_timeout(LONG)?;
    if code.is_none() {
        p.kill()?;
        p.join()?;
    }
    check_eq!(code, Some(0));
    check_eq!(result.get_timeout(LONG)?, 9);
    Ok(())
}

/// A fork while the driver thread runs user code (a result callback, here one that waits for
/// this thread): the driver is then as any thread of the user's (the callback may hold any lock
/// of theirs), and the default `ForkPolicy::Refuse` refuses the fork.
fn fork_while_a_callback_runs(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    let (entered, on_driver) = std::sync::mpsc::channel::<bool>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    // A slow task, so that the callback is attached before the result comes and runs on the
    // driver thread.
    let result = pool
        .apply_async(slow_square, (3, 200))
        .on_success(move |_| {
            let name = std::thread::current().name().map(str::to_string);
            let _ = entered.send(name.as_deref() == Some("multiproc-pool"));
            let _ = released.recv_timeout(LONG);
        });
    let in_driver = on_driver
        .recv_timeout(LONG)
        .map_err(|_| "the callback did not run")?;
    let p = Process::new(negate, 1).with_start_method(StartMethod::Fork);
    let started = p.start();
    let _ = release.send(());
    if started.is_ok() {
        let _ = p.join_timeout(LONG);
    }
    check!(in_driver, "the callback did not run on the driver thread");
    check_eq!(
        started.map_err(|e| e.kind()).err(),
        Some(ErrorKind::ForkUnsafe)
    );
    check_eq!(result.get_timeout(LONG)?, 9);
    // Once the callback is over, the driver is the library's own again (it may still be
    // finishing that delivery for a moment: a fork refused meanwhile is tried again).
    let deadline = Instant::now() + LONG;
    let p = loop {
        let p = Process::new(negate, 1).with_start_method(StartMethod::Fork);
        match p.start() {
            Ok(()) => break p,
            Err(err) if err.kind() == ErrorKind::ForkUnsafe && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => return Err(format!("a fork after the callback: {err}").into()),
        }
    };
    check_eq!(p.join_timeout(LONG)?, Some(0));
    Ok(())
}

/// Set by the result callbacks of `fork_never_overlaps_user_code` while they run.
static IN_CALLBACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Exits with 1 if this child is a copy of its parent taken while a callback ran.
#[process]
fn exit_if_in_callback() {
    std::process::exit(i32::from(IN_CALLBACK.load(Ordering::SeqCst)));
}

/// Forks on this thread while the driver thread goes in and out of result callbacks: a fork
/// whose thread check counted the driver as the library's own (between two callbacks) must be
/// over before the driver runs the next one, so no forked child is a copy of its parent taken
/// in the middle of a callback (one that could hold a lock of the user's). A fork the check
/// refuses is fine.
fn fork_never_overlaps_user_code() -> Outcome {
    let pool = pool(StartMethod::ForkServer, 2)?;
    let (mut forked, mut overlapped) = (0, 0);
    // Without the fork gate, one fork in a few hundred went ahead in a callback.
    for _ in 0..2000 {
        let results: Vec<_> = (0..8u64)
            .map(|n| {
                pool.apply_async(square, n).on_success(|_| {
                    IN_CALLBACK.store(true, Ordering::SeqCst);
                    let until = Instant::now() + Duration::from_micros(30);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    IN_CALLBACK.store(false, Ordering::SeqCst);
                })
            })
            .collect();
        let p = Process::new(exit_if_in_callback, ()).with_start_method(StartMethod::Fork);
        match p.start() {
            Ok(()) => {
                forked += 1;
                let code = p.join_timeout(LONG)?;
                if code.is_none() {
                    p.kill()?;
                    p.join()?;
                }
                if code != Some(0) {
                    overlapped += 1;
                }
            }
            Err(err) if err.kind() == ErrorKind::ForkUnsafe => {}
            Err(err) => return Err(err.into()),
        }
        for result in results {
            result.get_timeout(LONG)?;
        }
    }
    check!(
        overlapped == 0,
        "{overlapped} of {forked} forked children were copies taken during a callback"
    );
    check!(forked > 0, "every fork was refused");
    Ok(())
}

fn user_code_that_fails_in_the_parent(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    // A panicking Deserialize fails its task, not the pool: through the driver thread (the
    // worker is not ready yet, or busy), and on the caller's thread (the worker is idle).
    let err = pool.apply(panics_on_decode, 1).map(|_| ()).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Panicked);
    check_eq!(pool.apply(square, 3)?, 9);
    let err = pool.apply(panics_on_decode, 1).map(|_| ()).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Panicked);
    check!(
        common::chain(&err).contains("decoding a result panicked"),
        "{err}"
    );
    let err = pool
        .apply_async(panics_on_decode, 1)
        .get_timeout(LONG)
        .map(|_| ())
        .unwrap_err();
    check_eq!(err.kind(), ErrorKind::Panicked);
    // The worker was given back each time.
    check_eq!(pool.apply(square, 3)?, 9);
    // A blocking call inside a callback is an error, not a deadlock.
    let pool = Arc::new(pool);
    let inner = Arc::new(Mutex::new(None));
    let (p, i) = (pool.clone(), inner.clone());
    // A slow task, so that the callback is attached before the result arrives and runs on the
    // driver thread (one attached later runs at once, on the caller's thread).
    let r = pool
        .apply_async(slow_square, (2, 200))
        .on_success(move |_| {
            *i.lock().unwrap() = Some(p.apply(square, 4).map_err(|e| e.kind()));
        });
    check_eq!(r.get_timeout(LONG)?, 4);
    check_eq!(*inner.lock().unwrap(), Some(Err(ErrorKind::InvalidInput)));
    // A callback added to a failed result leaves the error in place.
    let r = pool.apply_async(panics_on, (1, 1));
    r.wait();
    let r = r.on_success(|_| {});
    check_eq!(r.get().unwrap_err().kind(), ErrorKind::Panicked);
    Ok(())
}

fn initializer_that_exits(m: StartMethod) -> Outcome {
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .initializer(exiting_init, 3)
        .build()?;
    let t = Instant::now();
    let err = pool.apply(square, 1).unwrap_err();
    check_eq!(err.kind(), ErrorKind::InitializerFailed);
    check!(common::chain(&err).contains("exited with code 3"), "{err}");
    check!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    Ok(())
}

fn workers_die_with_killed_parent(m: StartMethod) -> Outcome {
    orphaned_workers_die(m, false)
}

fn workers_die_with_killed_parent_despite_a_forked_sibling(m: StartMethod) -> Outcome {
    orphaned_workers_die(m, true)
}

fn orphaned_workers_die(m: StartMethod, sibling: bool) -> Outcome {
    let dir = scratch("poolorphans");
    let path = dir.join("pids");
    let owner = Process::new(
        pool_owner,
        (path.to_string_lossy().into_owned(), m.to_string(), sibling),
    )
    .with_start_method(m);
    owner.start()?;
    let line = read_when_ready(&path, LONG)?;
    let (workers, sibling_pid) = line.split_once(" /").unwrap_or((&line, ""));
    let pids: Vec<i32> = workers
        .split(' ')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    struct KillOnDrop(Option<i32>);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                // SAFETY: the forked sibling, an orphan by now; signals only.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _sibling = KillOnDrop(sibling_pid.parse().ok());
    check!(
        !pids.is_empty() && pids.iter().all(|&p| !common::is_gone(p)),
        "workers {pids:?} run"
    );
    owner.kill()?;
    owner.join()?;
    let deadline = Instant::now() + Duration::from_secs(1);
    while !pids.iter().all(|&p| common::is_gone(p)) {
        if Instant::now() > deadline {
            for &p in &pids {
                // SAFETY: clean up the orphans before failing.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            return Err(format!(
                "pool workers {pids:?} outlived their SIGKILLed parent by more than a second"
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn too_many_descriptors(m: StartMethod) -> Outcome {
    // More descriptors than one message carries: that task fails with a Codec error, and the
    // pool (same workers, nobody respawned) serves the next calls.
    let pool = pool(m, 2)?;
    let before: HashSet<u32> = pool
        .map_chunked(slow_pid, vec![20; 8], 1)?
        .into_iter()
        .collect();
    let many = || -> Vec<multiproc::SharedFd> {
        (0..300)
            .map(|_| {
                let null = std::fs::File::open("/dev/null").expect("/dev/null");
                multiproc::SharedFd::new(std::os::fd::OwnedFd::from(null))
            })
            .collect()
    };
    let err = pool
        .apply_async(count_fds, many())
        .get_timeout(LONG)
        .unwrap_err();
    check_eq!(err.kind(), ErrorKind::Codec);
    let err = pool.apply(count_fds, many()).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Codec);
    check_eq!(pool.apply(count_fds, many().split_off(290))?, 10);
    check_eq!(pool.map(square, 0..10u64)?[9], 81);
    let after: HashSet<u32> = pool
        .map_chunked(slow_pid, vec![20; 8], 1)?
        .into_iter()
        .collect();
    check_eq!(before, after);
    Ok(())
}

fn terminate_during_apply(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    check_eq!(pool.apply(square, 2)?, 4);
    let started = Instant::now();
    let (outcome, took) = std::thread::scope(|s| {
        let call = s.spawn(|| {
            let outcome = pool.apply(slow_square, (3, 10_000));
            (outcome.map_err(|e| e.kind()), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        pool.terminate();
        call.join().expect("the apply thread")
    });
    check_eq!(outcome, Err(ErrorKind::Terminated));
    check!(
        took < Duration::from_secs(3),
        "apply returned {took:?} after its start"
    );
    Ok(())
}

fn threads_at_once(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let ok = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let (pool, ok) = (&pool, &ok);
            scope.spawn(move || {
                let input: Vec<u64> = (t * 100..t * 100 + 100).collect();
                let expected: Vec<u64> = input.iter().map(|n| n * n).collect();
                if pool.map_chunked(square, input, 3).ok() == Some(expected)
                    && pool.apply(add, (t as i64, 1)).ok() == Some(t as i64 + 1)
                {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    check_eq!(ok.load(Ordering::SeqCst), 4);
    Ok(())
}

fn pool_in_a_child(m: StartMethod) -> Outcome {
    let dir = scratch("poolchild");
    for (daemon, expected) in [(false, "[0, 1, 4, 9, 16]"), (true, "DaemonicChildren")] {
        let path = dir.join(format!("r{daemon}"));
        let p = Process::new(
            pool_in_child,
            (path.to_string_lossy().into_owned(), m.to_string()),
        )
        .with_start_method(m)
        .with_daemon(daemon);
        p.start()?;
        check_eq!(p.join_timeout(LONG)?, Some(0));
        check_eq!(read_when_ready(&path, LONG)?, expected);
    }
    Ok(())
}

fn no_leaks_50_pools(m: StartMethod) -> Outcome {
    drop(pool(m, 1)?);
    let before = common::open_fds();
    for i in 0..50 {
        let pool = pool(m, 2)?;
        check_eq!(pool.apply(square, i)?, i * i);
        if i % 2 == 0 {
            pool.close();
            pool.join()?;
        }
    }
    check_eq!(common::open_fds(), before);
    check!(
        common::zombie_children().is_empty(),
        "zombies: {:?}",
        common::zombie_children()
    );
    Ok(())
}

/// What [`misbehave`] writes on its control socket in place of a reply.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Misbehavior {
    /// The start of a large reply, then SIGSTOP: a worker stopped in the middle of its reply.
    StopMidReply,
    /// A message prefix that announces 100 header bytes, then silence (the worker sleeps).
    CutShort,
    /// The same, then the worker exits.
    CutShortThenExit,
    /// The same, then the task returns as usual: the worker's reply is taken for the rest of
    /// the message, which is not whole.
    CutShortThenReturn,
    /// 24 bytes that are not a message, then silence.
    Garbage,
    /// A well-formed `Reply::InitFailed`, then the task returns as usual.
    ForgedInitFailed,
    /// A well-formed `Reply::Done` for chunk 0 of `job` whose result is 4242, with a guessed
    /// ticket (or, `None`, in the layout of a reply without a ticket), then the task returns as
    /// usual (0).
    ForgedDone { job: u64, ticket: Option<u64> },
}

/// In a pool worker: records its pid in `pid_path`, then writes `how` on its control socket
/// (the only socket a pool worker has) instead of a reply.
#[process]
fn misbehave(pid_path: String, how: Misbehavior) -> u64 {
    use std::io::Write;
    let mut control = common::only_socket();
    // A message prefix (see `runtime/src/wire.rs`): mark, header length, descriptor count,
    // block count, payload length.
    let prefix = |header: u32, payload: u64| {
        let mut prefix = b"mpm1".to_vec();
        prefix.extend_from_slice(&header.to_le_bytes());
        prefix.extend_from_slice(&[0; 8]);
        prefix.extend_from_slice(&payload.to_le_bytes());
        prefix
    };
    write_line(&pid_path, &std::process::id().to_string());
    match how {
        Misbehavior::StopMidReply => {
            // A 64 MiB reply of which 1 MiB arrives: more than a socket holds, so the
            // parent has read part of it when the worker stops.
            // A header that decodes: `Reply::Ready` (variant 0, a little-endian `u32`).
            control.write_all(&prefix(4, 64 << 20)).expect("write");
            control.write_all(&[0; 4]).expect("write");
            control.write_all(&vec![0; 1 << 20]).expect("write");
            // SAFETY: stops this process; only a SIGKILL (or SIGCONT) ends that.
            unsafe { libc::raise(libc::SIGSTOP) };
        }
        Misbehavior::CutShort | Misbehavior::CutShortThenExit => {
            control.write_all(&prefix(100, 0)).expect("write");
        }
        Misbehavior::CutShortThenReturn => {
            control.write_all(&prefix(100, 0)).expect("write");
            return 0;
        }
        Misbehavior::Garbage => control.write_all(&[0xAB; 24]).expect("write"),
        Misbehavior::ForgedInitFailed => {
            // Variant 1, then the message as a `u64` length and its bytes.
            let mut header = 1u32.to_le_bytes().to_vec();
            header.extend_from_slice(&6u64.to_le_bytes());
            header.extend_from_slice(b"forged");
            control
                .write_all(&prefix(header.len() as u32, 0))
                .expect("write");
            control.write_all(&header).expect("write");
            return 0;
        }
        Misbehavior::ForgedDone { job, ticket } => {
            // Variant 2: job, chunk, ticket, outcome (`Ok`, variant 0); the body is the
            // result, a `u64` as is.
            let mut header = 2u32.to_le_bytes().to_vec();
            header.extend_from_slice(&job.to_le_bytes());
            header.extend_from_slice(&0u32.to_le_bytes());
            if let Some(ticket) = ticket {
                header.extend_from_slice(&ticket.to_le_bytes());
            }
            header.extend_from_slice(&0u32.to_le_bytes());
            control
                .write_all(&prefix(header.len() as u32, 8))
                .expect("write");
            control.write_all(&header).expect("write");
            control.write_all(&4242u64.to_le_bytes()).expect("write");
            return 0;
        }
    }
    if let Misbehavior::CutShortThenExit = how {
        // SAFETY: ends this process at once, as a crash would.
        unsafe { libc::_exit(0) };
    }
    std::thread::sleep(Duration::from_secs(120));
    0
}

/// Runs `scenario` with `pool` on another thread and waits for it at most `2 * LONG`: a pool
/// that hangs on a misbehaving worker fails the trial instead of hanging it. The workers that
/// recorded their pid in `dir` are then killed, which unblocks whatever waits on them. (The
/// pool is made before that thread: `fork` refuses a multi-threaded process.)
fn bounded(dir: &Path, pool: Pool, scenario: impl FnOnce(Pool) -> Outcome + Send) -> Outcome {
    let limit = 2 * LONG;
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let running = scope.spawn(move || {
            let outcome = scenario(pool);
            let _ = done.send(());
            outcome
        });
        let overran = finished.recv_timeout(limit).is_err();
        if overran {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let pid = std::fs::read_to_string(entry.path()).unwrap_or_default();
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    if !common::is_gone(pid) {
                        // SAFETY: a signal to a worker of this trial, which is still there.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        // Joined here, not at the end of the scope: that would not wait for the thread itself
        // to end, and `fork` in the next trial would see it.
        let outcome = running
            .join()
            .unwrap_or_else(|_| Err("the scenario panicked".into()));
        if overran {
            return Err(format!(
                "the pool hung: the scenario did not end within {limit:?} ({outcome:?} once its workers were killed)"
            )
            .into());
        }
        outcome
    })
}

/// Waits (bounded) until the worker whose pid `path` holds is stopped; returns its pid.
fn stopped_worker(path: &Path) -> Result<i32, libtest_mimic::Failed> {
    let pid: i32 = read_when_ready(path, LONG)?.parse()?;
    wait_stopped(pid)?;
    Ok(pid)
}

/// Waits (bounded) until process `pid` is stopped.
fn wait_stopped(pid: i32) -> Outcome {
    let deadline = Instant::now() + LONG;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        if state.is_some_and(|s| s.starts_with('T')) {
            return Ok(());
        }
        check!(
            Instant::now() < deadline,
            "process {pid} did not stop: {stat}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn squares(n: u64) -> Vec<u64> {
    (0..n).map(|n| n * n).collect()
}

/// A pool of `processes` workers whose tasks time out after a second.
fn timing_out_pool(m: StartMethod, processes: usize) -> Result<Pool, libtest_mimic::Failed> {
    Ok(Pool::builder()
        .processes(processes)
        .start_method(m)
        .task_timeout(Duration::from_secs(1))
        .build()?)
}

/// `err` is the task timeout's.
fn check_timed_out(err: multiproc::Error) -> Outcome {
    check_eq!(err.kind(), ErrorKind::Timeout);
    check!(
        common::chain(&err).contains("longer than its timeout"),
        "{err}"
    );
    Ok(())
}

/// Drops `pool`, which must not take long, whatever its workers do.
fn drop_promptly(pool: Pool) -> Outcome {
    let t = Instant::now();
    drop(pool);
    check!(
        t.elapsed() < Duration::from_secs(10),
        "drop took {:?}",
        t.elapsed()
    );
    Ok(())
}

/// The worker `pid` was killed (with its pool, say).
fn check_gone(pid: i32) -> Outcome {
    // (A process killed a moment ago may still be exiting.)
    let deadline = Instant::now() + LONG;
    while !common::is_gone(pid) {
        check!(
            Instant::now() < deadline,
            "the killed worker {pid} is still there"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A worker stopped in the middle of its reply, without a task timeout: the other worker
/// serves meanwhile, and `terminate` and drop return promptly and kill it.
fn stopped_mid_reply(m: StartMethod) -> Outcome {
    let dir = scratch("midreply");
    bounded(&dir, pool(m, 2)?, |pool| {
        let path = dir.join("stopped");
        let stuck = pool.apply_async(
            misbehave,
            (
                path.to_string_lossy().into_owned(),
                Misbehavior::StopMidReply,
            ),
        );
        let pid = stopped_worker(&path)?;
        check_eq!(
            pool.map_async(square, 0..20).get_timeout(LONG)?,
            squares(20)
        );
        check!(!stuck.ready(), "the stopped worker's task has a result");
        let t = Instant::now();
        pool.terminate();
        check_eq!(
            stuck.get_timeout(LONG).map_err(|e| e.kind()),
            Err(ErrorKind::Terminated)
        );
        drop(pool);
        check!(
            t.elapsed() < Duration::from_secs(10),
            "terminate and drop took {:?}",
            t.elapsed()
        );
        check_gone(pid)
    })
}

/// A worker stopped in the middle of its reply, with a task timeout: the task fails with
/// `Timeout` and the worker is replaced, through the driver (`apply_async`) and through a
/// borrowed worker (`apply`) alike.
fn stopped_mid_reply_times_out(m: StartMethod) -> Outcome {
    let dir = scratch("midreplytimeout");
    bounded(&dir, timing_out_pool(m, 2)?, |pool| {
        let path = dir.join("async");
        let stuck = pool.apply_async(
            misbehave,
            (
                path.to_string_lossy().into_owned(),
                Misbehavior::StopMidReply,
            ),
        );
        check_eq!(pool.apply_async(square, 7).get_timeout(LONG)?, 49);
        check_timed_out(stuck.get_timeout(LONG).unwrap_err())?;
        let path = dir.join("apply");
        let err = pool
            .apply(
                misbehave,
                (
                    path.to_string_lossy().into_owned(),
                    Misbehavior::StopMidReply,
                ),
            )
            .unwrap_err();
        check_timed_out(err)?;
        check_eq!(
            pool.map_async(square, 0..20).get_timeout(LONG)?,
            squares(20)
        );
        drop_promptly(pool)?;
        for name in ["async", "apply"] {
            check_gone(read_when_ready(&dir.join(name), LONG)?.parse()?)?;
        }
        Ok(())
    })
}

/// A reply cut short by a live worker times out like a hung task without holding up the
/// others; cut short by a worker that exits, it is a death; a reply that is no message is a
/// codec error. The worker is replaced each time.
fn cut_short_reply(m: StartMethod) -> Outcome {
    let dir = scratch("cutshort");
    bounded(&dir, timing_out_pool(m, 2)?, |pool| {
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let cut = pool.apply_async(misbehave, (path("cut"), Misbehavior::CutShort));
        check_eq!(
            pool.map_async(square, 0..20).get_timeout(LONG)?,
            squares(20)
        );
        check_timed_out(cut.get_timeout(LONG).unwrap_err())?;
        let err = pool
            .apply(misbehave, (path("cut-apply"), Misbehavior::CutShort))
            .unwrap_err();
        check_timed_out(err)?;
        for (name, how, kind, says) in [
            (
                "exit",
                Misbehavior::CutShortThenExit,
                ErrorKind::Died,
                "in the middle of a message",
            ),
            (
                "garbage",
                Misbehavior::Garbage,
                ErrorKind::Codec,
                "corrupt message",
            ),
        ] {
            let err = pool
                .apply_async(misbehave, (path(name), how))
                .get_timeout(LONG)
                .unwrap_err();
            check_eq!(err.kind(), kind);
            check!(common::chain(&err).contains(says), "{err}");
        }
        check_eq!(
            pool.map_async(square, 0..20).get_timeout(LONG)?,
            squares(20)
        );
        drop_promptly(pool)?;
        Ok(())
    })
}

/// A task larger than a socket holds, sent to a worker that stopped before it read it: the
/// driver does not wait for the worker to make room, so the task timeout fires and the pool
/// goes on.
fn large_task_to_stopped_worker(m: StartMethod) -> Outcome {
    let dir = scratch("stoppedtask");
    bounded(&dir, timing_out_pool(m, 1)?, |pool| {
        let pid = pool.apply(pid_of, 0)? as i32;
        write_line(&dir.join("worker").to_string_lossy(), &pid.to_string());
        // SAFETY: a signal to the pool's worker, which is there (it just answered).
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let err = pool
            .apply_async(bytes_len, vec![1u8; 64 << 20])
            .get_timeout(LONG)
            .unwrap_err();
        check_timed_out(err)?;
        check_eq!(pool.apply_async(square, 3).get_timeout(LONG)?, 9);
        drop_promptly(pool)?;
        check_gone(pid)
    })
}

// ---------------------------------------------------------------------------------------------
// A fork pool's zygote: killed, out of step, killed with its spare. Each in a fresh spawned
// child, so that the zygote is that child's only child.

/// Set before the pool is built (7), and after (8): a zygote forked at build time sees 7.
static BUILD_TIME: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Set by the initializer in every worker.
static INITIALIZED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[process]
fn set_initialized(value: u64) {
    INITIALIZED.store(value, Ordering::SeqCst);
}

/// What the worker sees: the build-time static, the initializer's; its pid and its parent's.
#[process]
fn worker_state(_n: u32) -> (u64, u64, u32, i32) {
    (
        BUILD_TIME.load(Ordering::SeqCst),
        INITIALIZED.load(Ordering::SeqCst),
        std::process::id(),
        // SAFETY: getppid cannot fail.
        unsafe { libc::getppid() },
    )
}

/// Waits (bounded) until `pid` is gone.
fn wait_gone(pid: i32) -> Result<(), String> {
    let deadline = Instant::now() + LONG;
    while !common::is_gone(pid) {
        if Instant::now() > deadline {
            return Err(format!("pid {pid} outlived its SIGKILL"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

fn sigkill(pid: i32) -> Result<(), String> {
    // SAFETY: a signal to a process of this scenario's pool, found just now.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid)
}

/// The only worker of `pool`: runs a task, checks what it sees; returns its pid and its
/// parent's (the zygote's).
fn the_worker(pool: &Pool, build_time: u64) -> Result<(i32, i32), String> {
    let seen = pool
        .map(worker_state, [0u32])
        .map_err(|err| format!("map: {err}"))?;
    match seen[..] {
        [(seen_build, 5, pid, zygote)] if seen_build == build_time => Ok((pid as i32, zygote)),
        _ => Err(format!(
            "a worker saw {seen:?}, expected ({build_time}, 5, _, _)"
        )),
    }
}

/// `case` 0: the zygote is killed (twice: the spare that replaced it has a spare too);
/// 1: a stray byte on the zygote's socket; 2: the zygote and its spare are killed, under
/// `ForkPolicy::Allow`; 3: the same under `Refuse`. Each time the worker then dies in a task,
/// so that a replacement must be forked. Writes "ok" or what went wrong.
#[process]
fn zygote_scenario(dir: String, case: u8) {
    let outcome = (|| -> Result<(), String> {
        BUILD_TIME.store(7, Ordering::SeqCst);
        let pool = Pool::builder()
            .processes(1)
            .start_method(StartMethod::Fork)
            .initializer(set_initialized, 5)
            .build()
            .map_err(|err| format!("build: {err}"))?;
        BUILD_TIME.store(8, Ordering::SeqCst);
        let me = std::process::id() as i32;
        let (mut worker, mut zygote) = the_worker(&pool, 7)?;
        if common::peers::children_of(me) != [zygote] {
            return Err(format!(
                "the zygote {zygote} is not this process's only child"
            ));
        }
        let rounds = if case == 0 { 2 } else { 1 };
        for _ in 0..rounds {
            match case {
                0 => sigkill(zygote)?,
                1 => common::peers::write_stray_byte(zygote)?,
                _ => {
                    let spare = match common::peers::children_of(zygote)
                        .into_iter()
                        .filter(|&pid| pid != worker)
                        .collect::<Vec<_>>()[..]
                    {
                        [spare] => spare,
                        ref others => return Err(format!("expected one spare, found {others:?}")),
                    };
                    sigkill(spare)?;
                    sigkill(zygote)?;
                    if case == 2 {
                        // SAFETY: the only other threads are the pool's, which run no user code here: the
                        // new zygote is forked with only the library's locks in use.
                        unsafe { multiproc::set_fork_policy(multiproc::ForkPolicy::Allow) };
                    }
                }
            }
            // The worker dies in a task: the pool forks a replacement.
            let died = pool.apply(dies_on, (13, 13, -libc::SIGKILL));
            if died.as_ref().map_err(|e| e.kind()) != Err(ErrorKind::Died) {
                return Err(format!("a worker killed in its task gave {died:?}"));
            }
            if case == 3 {
                let err = pool
                    .map(worker_state, [0u32])
                    .err()
                    .ok_or("a worker was forked from a multi-threaded process under Refuse")?;
                if !common::chain(&err).contains("zygote and its spare are dead") {
                    return Err(format!("unexpected error: {err}"));
                }
                return Ok(());
            }
            // A replacement from the spare sees the pool's build time; one forked from this
            // process after the spare died sees it as it is now.
            let (replacement, parent) = the_worker(&pool, if case == 2 { 8 } else { 7 })?;
            if replacement == worker || parent == zygote {
                return Err(format!(
                    "worker {replacement} of {parent} replaced {worker} of {zygote}"
                ));
            }
            (worker, zygote) = (replacement, parent);
        }
        // More tasks on the replacement.
        let values = pool
            .map(square, 0..20u64)
            .map_err(|err| format!("map: {err}"))?;
        if values != (0..20u64).map(|n| n * n).collect::<Vec<_>>() {
            return Err(format!("map gave {values:?}"));
        }
        pool.close();
        pool.join().map_err(|err| format!("join: {err}"))?;
        Ok(())
    })();
    write_line(
        &format!("{dir}/outcome"),
        &outcome.err().unwrap_or_else(|| "ok".to_string()),
    );
}

fn zygote_scenario_outcome(case: u8) -> Outcome {
    let dir = scratch("zygote");
    let p = Process::new(zygote_scenario, (dir.display().to_string(), case))
        .with_start_method(StartMethod::Spawn);
    p.start()?;
    // Each step of the scenario waits `LONG` at most.
    let code = p.join_timeout(LONG * 4)?;
    if code.is_none() {
        let _ = p.kill();
        let _ = p.join_timeout(LONG);
    }
    check_eq!(code, Some(0));
    check_eq!(read_when_ready(&dir.join("outcome"), LONG)?, "ok");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn zygote_killed() -> Outcome {
    zygote_scenario_outcome(0)
}

fn zygote_stray_byte() -> Outcome {
    zygote_scenario_outcome(1)
}

fn zygote_and_spare_killed() -> Outcome {
    zygote_scenario_outcome(2)
}

fn zygote_and_spare_killed_under_refuse() -> Outcome {
    zygote_scenario_outcome(3)
}

/// What a call that must not wait on a stalled fork server is given.
const PROMPT: Duration = Duration::from_secs(10);

/// The parent of process `pid`.
fn parent_of(pid: i32) -> Result<i32, libtest_mimic::Failed> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat.rsplit_once(')').ok_or("stat")?;
    Ok(rest.split_whitespace().nth(1).ok_or("ppid")?.parse()?)
}

/// Stops process `pid` (SIGSTOP) until dropped, however the trial ends.
struct Stopped(i32);

impl Stopped {
    fn new(pid: i32) -> Result<Stopped, libtest_mimic::Failed> {
        // SAFETY: a signal to a child of this process (a fork server, a pool's zygote).
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let stopped = Stopped(pid);
        wait_stopped(pid)?;
        Ok(stopped)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as in `new`; a process that is gone meanwhile makes this a no-op.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The fork server (or the pool's zygote) stopped, a worker killed: the pool's thread does not
/// wait for the server to start a replacement. The other worker serves, a task timeout fires
/// on time, terminate and drop are prompt; and once the server runs again, the worker it
/// starts meanwhile is killed and reaped, and no descriptor stays open.
fn stalled_fork_server(m: StartMethod) -> Outcome {
    // The fork server of this process runs (its descriptors are not the pool's).
    drop(pool(m, 1)?);
    let fds = common::open_fds();
    let pool = timing_out_pool(m, 2)?;
    let server = parent_of(pool.apply(pid_of, 0)? as i32)?;
    check!(
        server != std::process::id() as i32,
        "a worker's parent is its server"
    );
    let stopped = Stopped::new(server)?;
    let died = pool
        .apply_async(dies_on, (1, 1, -libc::SIGKILL))
        .get_timeout(PROMPT)
        .map_err(|e| e.kind());
    check_eq!(died, Err(ErrorKind::Died));
    check_eq!(
        pool.map_async(square, 0..20).get_timeout(PROMPT)?,
        squares(20)
    );
    let err = pool
        .apply_async(sleep_secs, 60)
        .get_timeout(PROMPT)
        .err()
        .ok_or("a task of 60 s ended within 10 s")?;
    check_timed_out(err)?;
    pool.terminate();
    drop_promptly(pool)?;
    drop(stopped);
    let deadline = Instant::now() + LONG;
    while common::open_fds() != fds || !common::zombie_children().is_empty() {
        check!(
            Instant::now() < deadline,
            "{} descriptors open instead of {fds}, zombies {:?}",
            common::open_fds(),
            common::zombie_children()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Descriptor numbers below 64 all taken in this process until dropped, and once `shut`, its
/// limit lowered to 64: no new descriptor can be made, even when one above the limit is closed.
struct TableFull {
    limit: libc::rlimit,
    held: Vec<std::os::fd::OwnedFd>,
}

impl TableFull {
    const LIMIT: i32 = 64;

    fn new() -> Result<TableFull, libtest_mimic::Failed> {
        use std::os::fd::{FromRawFd, OwnedFd};
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: writes the limit into `limit`.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        check!(got == 0, "getrlimit");
        let mut full = TableFull {
            limit,
            held: Vec::new(),
        };
        loop {
            // SAFETY: makes a new descriptor, owned at once.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            check!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
            // SAFETY: `fd` was just made, and is owned by nothing else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            if std::os::fd::AsRawFd::as_raw_fd(&fd) >= Self::LIMIT {
                return Ok(full);
            }
            full.held.push(fd);
        }
    }

    fn shut(&self) -> Outcome {
        let lowered = libc::rlimit {
            rlim_cur: Self::LIMIT as libc::rlim_t,
            rlim_max: self.limit.rlim_max,
        };
        // SAFETY: sets this process's limit from a valid struct; restored by `drop`.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) };
        check!(set == 0, "setrlimit");
        Ok(())
    }
}

impl Drop for TableFull {
    fn drop(&mut self) {
        // SAFETY: restores the limit read in `new`.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.limit) };
        self.held.clear();
    }
}

/// Out of descriptors when a worker must be replaced: the start is retried while the tasks
/// wait, which fail only after the pool's start retry limit, with a clear error; once
/// descriptors are free again, the pool serves.
fn start_failures_are_retried(m: StartMethod) -> Outcome {
    // The pool's descriptors above the limit: those of its dead worker cannot serve again.
    let full = TableFull::new()?;
    let pool = Pool::builder()
        .processes(1)
        .start_method(m)
        .start_retry_limit(Duration::from_secs(2))
        .build()?;
    full.shut()?;
    let died = pool
        .apply_async(dies_on, (1, 1, -libc::SIGKILL))
        .get_timeout(LONG)
        .map_err(|e| e.kind());
    check_eq!(died, Err(ErrorKind::Died));
    let waiting = pool.map_async(square, 0..4);
    std::thread::sleep(Duration::from_millis(500));
    check!(
        !waiting.ready(),
        "tasks did not wait: {:?}",
        waiting.get_timeout(LONG)
    );
    let err = waiting
        .get_timeout(LONG)
        .err()
        .ok_or("tasks ran without descriptors for a worker")?;
    check!(
        common::chain(&err).contains("no pool worker could be started"),
        "{err}"
    );
    drop(full);
    serves_then_drops(pool)
}

/// Without a task timeout, a task writes the start of a message on its socket and returns:
/// the worker's reply does not complete it. The call fails once the reply has stalled (through
/// the driver and through a borrowed worker, at the same time), the worker is replaced, and the
/// pool goes on.
fn message_start_without_timeout(m: StartMethod) -> Outcome {
    let dir = scratch("msgstart");
    bounded(&dir, pool(m, 2)?, |pool| {
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let queued = pool.apply_async(misbehave, (path("async"), Misbehavior::CutShortThenReturn));
        read_when_ready(&dir.join("async"), LONG)?;
        let lent = pool.apply(misbehave, (path("apply"), Misbehavior::CutShortThenReturn));
        for (name, result) in [("async", queued.get_timeout(LONG)), ("apply", lent)] {
            check_out_of_protocol(&dir, name, result)?;
        }
        serves_then_drops(pool)
    })
}

/// `result`, the call of a task that recorded its worker's pid in `dir/name`, failed because
/// that worker sent a message out of protocol; the worker is killed.
fn check_out_of_protocol(dir: &Path, name: &str, result: multiproc::Result<u64>) -> Outcome {
    let pid = read_when_ready(&dir.join(name), LONG)?;
    let err = match result {
        Ok(value) => return Err(format!("{name}: the task's result is {value}").into()),
        Err(err) => err,
    };
    check_eq!(err.kind(), ErrorKind::Codec);
    let text = common::chain(&err);
    check!(
        text.contains("out of protocol") && text.contains(&format!("(pid {pid})")),
        "{name}: {text}"
    );
    check_gone(pid.parse()?)
}

/// `pool` serves a map, then drops promptly.
fn serves_then_drops(pool: Pool) -> Outcome {
    check_eq!(
        pool.map_async(square, 0..20).get_timeout(LONG)?,
        squares(20)
    );
    drop_promptly(pool)
}

/// A task that writes a well-formed message of its own on its worker's socket (a start-up
/// message, or a reply to its own task or another's without the task's ticket), through the
/// driver and through a borrowed worker: that task alone fails, with an error naming the
/// worker, which is killed and replaced; the pool is not broken, and no later task gets the
/// forged or the stale reply.
fn forged_messages(m: StartMethod) -> Outcome {
    let dir = scratch("forged");
    bounded(&dir, pool(m, 2)?, |pool| {
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let forgeries = [
            // The pool's first job is job 0: a reply that names it, as the worker's would.
            (
                "done",
                Misbehavior::ForgedDone {
                    job: 0,
                    ticket: None,
                },
                false,
            ),
            (
                "done-ticket",
                Misbehavior::ForgedDone {
                    job: 1,
                    ticket: Some(0),
                },
                false,
            ),
            ("init", Misbehavior::ForgedInitFailed, false),
            // What a borrowed worker's task is numbered.
            (
                "done-apply",
                Misbehavior::ForgedDone {
                    job: u64::MAX,
                    ticket: None,
                },
                true,
            ),
            (
                "done-ticket-apply",
                Misbehavior::ForgedDone {
                    job: u64::MAX,
                    ticket: Some(0),
                },
                true,
            ),
            ("init-apply", Misbehavior::ForgedInitFailed, true),
        ];
        for (name, how, lent) in forgeries {
            let result = if lent {
                pool.apply(misbehave, (path(name), how))
            } else {
                pool.apply_async(misbehave, (path(name), how))
                    .get_timeout(LONG)
            };
            check_out_of_protocol(&dir, name, result)?;
            for i in 0..4 {
                check_eq!(pool.apply(square, i)?, i * i);
            }
            check_eq!(
                pool.map_async(square, 0..20).get_timeout(LONG)?,
                squares(20)
            );
        }
        drop_promptly(pool)
    })
}

/// In a pool worker: writes on its control socket (its only socket), in place of a reply, a
/// message prefix that declares a `header`-byte header and a `payload`-byte payload, then
/// 100 bytes of them, and waits to be killed.
#[process]
fn declare_a_message(header: u32, payload: u64) -> u64 {
    use std::io::Write;
    let mut control = common::only_socket();
    // Mark, header length, descriptor count, block count, payload length (`runtime/src/wire.rs`).
    let mut prefix = b"mpm1".to_vec();
    prefix.extend_from_slice(&header.to_le_bytes());
    prefix.extend_from_slice(&[0; 8]);
    prefix.extend_from_slice(&payload.to_le_bytes());
    control.write_all(&prefix).expect("write");
    // A header that decodes, if it is 4 bytes: `Reply::Ready`.
    control.write_all(&[0; 100]).expect("write");
    std::thread::sleep(Duration::from_secs(120));
    0
}

/// In a fresh process (so that only the pool's memory counts): a pool of one worker started
/// with `m`, whose worker declares `header` and `payload` bytes in place of a reply. Writes to
/// `path` this process's peak RSS in KiB, whether a map on the replacement worker went
/// right, and the kind and text of the task's error.
#[process]
fn measure_a_declared_message(m: StartMethod, header: u32, payload: u64, path: String) {
    let said = (|| -> Result<String, multiproc::Error> {
        let pool = Pool::builder()
            .processes(1)
            .start_method(m)
            .task_timeout(Duration::from_secs(1))
            .build()?;
        let err = match pool
            .apply_async(declare_a_message, (header, payload))
            .get_timeout(LONG)
        {
            Ok(_) => return Ok("answered".into()),
            Err(err) => err,
        };
        let after = pool.map_async(square, 0..20).get_timeout(LONG)? == squares(20);
        drop(pool);
        Ok(format!("{after} {:?} {err}", err.kind()))
    })()
    .unwrap_or_else(|err| format!("failed: {err}"));
    let peak = common::peak_rss_kib();
    write_line(&path, &format!("{peak} {said}"));
}

/// A worker that declares a huge message costs the pool's process no memory: a header of
/// 60 MiB (below the 64 MiB a header may have) and a payload of 4 GiB hold only the bytes
/// that came, until the task times out; a header above the limit is a codec error at once.
/// The pool goes on with a replacement worker.
fn declared_message_length(m: StartMethod) -> Outcome {
    /// Peak RSS of a fresh process with a pool, at most.
    const BOUND_KIB: u64 = 32 << 10;
    let dir = scratch("declaredmsg");
    for (header, payload, kind, says) in [
        (60 << 20, 0, "Timeout", "longer than its timeout"),
        (4, 4 << 30, "Timeout", "longer than its timeout"),
        (u32::MAX, 0, "Codec", "corrupt message"),
    ] {
        let path = dir
            .join(format!("{header}-{payload}"))
            .to_string_lossy()
            .into_owned();
        let p = Process::new(
            measure_a_declared_message,
            (m, header, payload, path.clone()),
        )
        .with_start_method(StartMethod::Spawn);
        p.start()?;
        check_eq!(p.join_timeout(2 * LONG)?, Some(0));
        let line = read_when_ready(Path::new(&path), LONG)?;
        let (peak, said) = line.split_once(' ').ok_or("a report")?;
        let peak: u64 = peak.parse()?;
        check!(
            peak < BOUND_KIB,
            "header {header}, payload {payload}: peak RSS {peak} KiB ({said})"
        );
        check!(
            said.starts_with(&format!("true {kind}")) && said.contains(says),
            "header {header}, payload {payload}: {said}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The workers' rings: tasks and replies travel in two shared-memory rings per worker, beside
// its socket (`runtime/src/pool/rings.rs`).

/// Text that tells a shift, a cut or a swap apart: `len` bytes from `seed`.
fn text(len: usize, seed: u32) -> String {
    (0..len)
        .map(|i| char::from(b'a' + ((i as u32).wrapping_mul(7).wrapping_add(seed) % 26) as u8))
        .collect()
}

/// The text reversed, with `extra` more bytes: a result of another size than its argument.
#[process]
fn reverse_text(s: String, extra: usize) -> String {
    let mut out: String = s.chars().rev().collect();
    out.push_str(&text(extra, 5));
    out
}

fn reversed_text(s: &str, extra: usize) -> String {
    let mut out: String = s.chars().rev().collect();
    out.push_str(&text(extra, 5));
    out
}

/// Arguments and results of every size around what a ring takes (a record of 64 KiB) and what
/// it holds (256 KiB), through a borrowed worker (`apply`), the driver (`apply_async`) and a
/// map: each arrives whole and in its place, whichever way it went.
fn ring_sized_messages_arrive_intact(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let k = 1024;
    let sizes = [
        0,
        1,
        100,
        4 * k,
        64 * k - 64,
        64 * k - 8,
        64 * k,
        64 * k + 1,
        200 * k,
        256 * k,
        300 * k,
        2048 * k,
    ];
    for (i, &arg) in sizes.iter().enumerate() {
        for &extra in &[0, 64 * k - 40, 300 * k] {
            let s = text(arg, i as u32);
            let want = reversed_text(&s, extra);
            check_eq!(pool.apply(reverse_text, (s.clone(), extra))?, want);
            check_eq!(
                pool.apply_async(reverse_text, (s, extra))
                    .get_timeout(LONG)?,
                want
            );
        }
    }
    let items: Vec<(String, usize)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| (text(len, i as u32), sizes[sizes.len() - 1 - i]))
        .collect();
    let want: Vec<String> = items.iter().map(|(s, e)| reversed_text(s, *e)).collect();
    for chunksize in [1, 3] {
        check_eq!(
            pool.map_async_chunked(reverse_text, items.clone(), chunksize)
                .get_timeout(LONG)?,
            want
        );
    }
    Ok(())
}

/// Many tasks and results that fill the rings both ways (each near what a ring takes, or more
/// than it holds), on two workers at once, with borrowed workers beside the driver: no
/// deadlock, every result in its place.
fn rings_full_both_ways(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let k = 1024;
    let items: Vec<(String, usize)> = (0..64)
        .map(|i| (text(60 * k + i * 97, i as u32), (i % 5) * 70 * k))
        .collect();
    let want: Vec<String> = items.iter().map(|(s, e)| reversed_text(s, *e)).collect();
    let t = Instant::now();
    let pending: Vec<_> = items
        .iter()
        .cloned()
        .map(|args| pool.apply_async(reverse_text, args))
        .collect();
    let mapped = pool.map_async_chunked(reverse_text, items.clone(), 2);
    std::thread::scope(|scope| -> Outcome {
        let borrower = scope.spawn(|| -> Outcome {
            for (args, want) in items.iter().zip(&want).take(16) {
                check_eq!(&pool.apply(reverse_text, args.clone())?, want);
            }
            Ok(())
        });
        for (result, want) in pending.into_iter().zip(&want) {
            check_eq!(&result.get_timeout(LONG)?, want);
        }
        check_eq!(&mapped.get_timeout(LONG)?, &want);
        borrower
            .join()
            .map_err(|_| "the borrowing thread panicked")?
    })?;
    check!(t.elapsed() < LONG, "took {:?}", t.elapsed());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The bulk area: messages too large for a ring record go through shared memory beside the
// rings (`runtime/src/pool/bulk.rs`). The offsets below mirror that layout and the rings'
// (`rings.rs`, `channel/ring.rs`): two rings of a 4 KiB header page and 256 KiB of data, a page
// of doorbell words, then the bulk area: a page of slot words (one 8-byte word a slot, then a
// progress word a slot), then
// four slots of 128 MiB (0 and 1 for tasks, 2 and 3 for replies).

const RING_SIZE: usize = 4096 + (256 << 10);
const BULK_AT: usize = 2 * RING_SIZE + 4096;
const SLOT_SIZE: usize = 128 << 20;

fn slot_at(slot: usize) -> usize {
    BULK_AT + 4096 + slot * SLOT_SIZE
}

/// In a pool worker: the start of the mapping of its rings' region for which `mine` holds (a
/// forked worker may map other workers' regions too).
fn rings_region(mine: impl Fn(usize) -> bool) -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter(|line| line.contains("multiproc:pool-rings"))
        .filter_map(|line| {
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end - start >= slot_at(4)).then_some(start)
        })
        .find(|&start| mine(start))
}

/// Whether the `len` bytes at `at` in the region mapped at `start` hold `needle`.
fn region_holds(start: usize, at: usize, len: usize, needle: &[u8]) -> bool {
    // SAFETY: `at..at + len` lies inside the region mapped at `start` (callers stay within
    // one slot or ring of a mapping of at least `slot_at(4)` bytes, see `rings_region`); the
    // bytes may change under this read (another process writes them), which a test's scan
    // for a needle tolerates.
    let bytes = unsafe { std::slice::from_raw_parts((start + at) as *const u8, len) };
    bytes.windows(needle.len()).any(|w| w == needle)
}

/// In a pool worker: the region whose task ring or task slots hold `nonce`.
fn region_with_task(nonce: &str) -> usize {
    rings_region(|start| {
        region_holds(start, 4096, 256 << 10, nonce.as_bytes())
            || (0..2).any(|slot| region_holds(start, slot_at(slot), 4 << 20, nonce.as_bytes()))
    })
    .expect("no rings region of this worker holds this task")
}

/// A unique marker for one trial's tasks (upper case: `text` makes lower case only).
fn nonce(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!("NONCE-{}-{tag}-{n}-", std::process::id())
}

/// Whether this task's argument `s` (which holds `nonce`) came in a task slot of the bulk area.
#[process]
fn in_task_slot(s: String, nonce: String) -> bool {
    let _ = s;
    rings_region(|start| {
        (0..2).any(|slot| region_holds(start, slot_at(slot), 4 << 20, nonce.as_bytes()))
    })
    .is_some()
}

/// Whether a reply slot of this worker's bulk area holds `nonce` (a reply sent before).
#[process]
fn in_reply_slot(nonce: String) -> bool {
    let start = region_with_task(&nonce);
    (2..4).any(|slot| region_holds(start, slot_at(slot), 4 << 20, nonce.as_bytes()))
}

/// `len` bytes of text that end with `nonce`.
fn marked_text(len: usize, nonce: &str) -> String {
    let mut s = text(len - nonce.len(), 3);
    s.push_str(nonce);
    s
}

#[process]
fn marked_reply(len: usize, nonce: String) -> String {
    marked_text(len, &nonce)
}

/// Tasks and replies larger than a ring record go through the bulk area, whole, through a
/// borrowed worker (`apply`), the driver (`apply_async`) and a map; byte vectors too.
fn bulk_messages_arrive_intact(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    let mark = nonce("task");
    let s = marked_text(3 << 20, &mark);
    check!(
        pool.apply(in_task_slot, (s.clone(), mark.clone()))?,
        "apply: not in a task slot"
    );
    check!(
        pool.apply_async(in_task_slot, (s, mark))
            .get_timeout(LONG)?,
        "apply_async: not in a task slot"
    );
    for len in [100 << 10, 3 << 20] {
        let mark = nonce("reply");
        check_eq!(
            pool.apply(marked_reply, (len, mark.clone()))?,
            marked_text(len, &mark)
        );
        check!(
            pool.apply(in_reply_slot, mark)?,
            "the reply was not in a reply slot"
        );
        let mark = nonce("reply-async");
        check_eq!(
            pool.apply_async(marked_reply, (len, mark.clone()))
                .get_timeout(LONG)?,
            marked_text(len, &mark)
        );
        check!(
            pool.apply(in_reply_slot, mark)?,
            "the reply was not in a reply slot"
        );
    }
    for len in [70 << 10, 5 << 20] {
        let s = text(len, 9);
        check_eq!(
            pool.apply(reverse_text, (s.clone(), len))?,
            reversed_text(&s, len)
        );
        let v = pattern(len, 4);
        let back: Vec<u8> = v.iter().rev().copied().collect();
        check_eq!(pool.apply(reversed, v.clone())?, back);
        check_eq!(pool.apply_async(reversed, v).get_timeout(LONG)?, back);
    }
    check_eq!(
        pool.map_async_chunked(square, 0..300_000u64, 100_000)
            .get_timeout(LONG)?,
        squares(300_000)
    );
    Ok(())
}

/// Large vectors of numbers wider than a byte travel as blocks that keep their alignment, and
/// a worker copies a large task out while the parent is still copying it in: each arrives
/// whole, both ways, whatever its length (a stripe's edge cut anywhere).
fn bulk_vectors_of_floats_arrive_intact(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    for len in [(64 << 10) / 8, (5 << 20) / 8 + 3, (9 << 20) / 8 - 1] {
        let v: Vec<f64> = (0..len).map(|i| i as f64 * 0.25 - 7.0).collect();
        let back: Vec<f64> = v.iter().rev().copied().collect();
        check_eq!(pool.apply(reversed_floats, v.clone())?, back);
        check_eq!(
            pool.apply_async(reversed_floats, v).get_timeout(LONG)?,
            back
        );
    }
    Ok(())
}

/// In a pool worker: whether the task `next` (by its marker) arrives in a task slot of this
/// worker while this one runs, which holds `mine` (bounded wait; `next` empty: nothing to wait
/// for).
#[process]
fn sees_next_task(s: String, mine: String, next: String) -> bool {
    let _ = s;
    if next.is_empty() {
        return true;
    }
    let Some(start) = rings_region(|start| {
        (0..2).any(|slot| {
            region_holds(start, slot_at(slot), 4 << 20, mine.as_bytes())
                || region_holds(start, slot_at(slot), 4 << 20, next.as_bytes())
        })
    }) else {
        return false;
    };
    let deadline = Instant::now() + LONG;
    while Instant::now() < deadline {
        if (0..2).any(|slot| region_holds(start, slot_at(slot), 4 << 20, next.as_bytes())) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Large tasks queued behind a running one go in the other task slot (the one the running task
/// came in may not be read yet): each worker gets its next large task while it runs one, and
/// every result is right.
fn bulk_tasks_pipelined(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    let marks: Vec<String> = (0..6).map(|i| nonce(&format!("pipelined-{i}"))).collect();
    let items: Vec<(String, String, String)> = (0..6)
        .map(|i| {
            let next = marks.get(i + 1).cloned().unwrap_or_default();
            (marked_text(200 << 10, &marks[i]), marks[i].clone(), next)
        })
        .collect();
    check_eq!(
        pool.map_async_chunked(sees_next_task, items, 1)
            .get_timeout(2 * LONG)?,
        vec![true; 6]
    );
    Ok(())
}

/// In a pool worker: leaves what a worker killed in the middle of copying a large reply into
/// its bulk area leaves (a reply slot taken, half written, no record in the ring), and is
/// killed.
#[process]
fn killed_mid_bulk_reply(mark: String) -> u64 {
    let start = region_with_task(&mark);
    // SAFETY: the word of reply slot 2 and the slot's first mebibyte, in this worker's own
    // live mapping of its region; this worker is their only writer while it runs a task.
    unsafe {
        std::sync::atomic::AtomicU64::from_ptr((start + BULK_AT + 16) as *mut u64)
            .store(1, Ordering::SeqCst);
        std::ptr::write_bytes((start + slot_at(2)) as *mut u8, 0xAB, 1 << 20);
        libc::raise(libc::SIGKILL);
    }
    0
}

/// A worker killed in the middle of a large reply fails its task alone (through the driver and
/// through a borrowed worker); its replacement carries large tasks and replies again.
fn bulk_reply_killed_midway(m: StartMethod) -> Outcome {
    let dir = scratch("bulkkilled");
    bounded(&dir, pool(m, 1)?, |pool| {
        let err = pool
            .apply(killed_mid_bulk_reply, nonce("killed"))
            .unwrap_err();
        check_eq!(err.kind(), ErrorKind::Died);
        let err = pool
            .apply_async(killed_mid_bulk_reply, nonce("killed-async"))
            .get_timeout(LONG)
            .unwrap_err();
        check_eq!(err.kind(), ErrorKind::Died);
        let s = text(2 << 20, 1);
        check_eq!(
            pool.apply(reverse_text, (s.clone(), 1 << 20))?,
            reversed_text(&s, 1 << 20)
        );
        check_eq!(
            pool.apply_async(reverse_text, (s.clone(), 0))
                .get_timeout(LONG)?,
            reversed_text(&s, 0)
        );
        Ok(())
    })
}

/// In a pool worker: commits in its reply ring, before its own reply, a record that says its
/// body is in the bulk area with `descriptor` (its 8-byte words): as a task that writes its own
/// process's memory could. The record's header is `Reply::Ready` (variant 0).
#[process]
fn forge_bulk_record(mark: String, descriptor: Vec<u64>) -> u64 {
    const CAP: u64 = 256 << 10;
    let start = region_with_task(&mark);
    let ring = start + RING_SIZE;
    let mut record = (4u32 | (1 << 31)).to_le_bytes().to_vec();
    record.extend_from_slice(&[0; 4]);
    for word in &descriptor {
        record.extend_from_slice(&word.to_le_bytes());
    }
    let words = 1 + record.len().div_ceil(8) as u64;
    // SAFETY: the tail word (at 64 in the ring's header page) and the data words of this
    // worker's own reply ring, in its live mapping; this worker is the ring's only producer,
    // and it puts nothing while its task runs. The words are written before the tail that
    // commits them, as the ring's producers do.
    unsafe {
        let tail = std::sync::atomic::AtomicU64::from_ptr((ring + 64) as *mut u64);
        let now = tail.load(Ordering::SeqCst);
        let (count, bytes) = (now >> 32, now & 0xffff_ffff);
        let mut at = bytes % CAP;
        let mut pad = 0;
        if at + 8 * words > CAP {
            // A pad record to the end of the data, then the record at its start.
            ((ring + 4096 + at as usize) as *mut u64).write_volatile(3 << 32);
            pad = CAP - at;
            at = 0;
        }
        let data = (ring + 4096 + at as usize) as *mut u64;
        data.write_volatile((1 << 32) | record.len() as u64);
        for (i, chunk) in record.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            data.add(1 + i).write_volatile(u64::from_ne_bytes(w));
        }
        let bytes = (bytes + pad + 8 * words) & 0xffff_ffff;
        tail.store(((count + 1) << 32) | bytes, Ordering::SeqCst);
    }
    0
}

/// A task that forges a bulk record (a slot of the wrong direction, lengths past the slot or
/// that overflow, a block count its descriptor does not hold): the parent reads nothing out of
/// bounds, the task alone fails as out of protocol (through the driver and through a borrowed
/// worker), and the pool goes on.
fn forged_bulk_descriptor(m: StartMethod) -> Outcome {
    let dir = scratch("bulkforged");
    bounded(&dir, pool(m, 1)?, |pool| {
        let head = |slot: u64, blocks: u64| slot | (blocks << 32);
        let forgeries: Vec<(Vec<u64>, &str)> = vec![
            (vec![head(0, 0), 8], "slot 0"),
            (vec![head(1, 0), 8], "slot 1"),
            (vec![head(7, 0), 8], "slot 7"),
            (vec![head(2, 0), 1 << 40], "larger than its slot"),
            (vec![head(3, 0), (128 << 20) + 1], "larger than its slot"),
            (vec![head(2, 1), 8, u64::MAX], "larger than its slot"),
            (vec![head(2, 1), u64::MAX - 3, 8], "larger than its slot"),
            (vec![head(3, 3), 8, 8], "3 blocks"),
            (vec![head(2, 0)], "shorter than its head"),
            (vec![], "shorter than its head"),
        ];
        for (i, (descriptor, says)) in forgeries.into_iter().enumerate() {
            let args = (nonce("forged"), descriptor);
            let err = if i % 2 == 0 {
                pool.apply(forge_bulk_record, args).unwrap_err()
            } else {
                pool.apply_async(forge_bulk_record, args)
                    .get_timeout(LONG)
                    .unwrap_err()
            };
            check_eq!(err.kind(), ErrorKind::Codec);
            let chain = common::chain(&err);
            check!(
                chain.contains("bulk area") && chain.contains(says),
                "{chain}"
            );
            check_eq!(pool.apply(square, 3)?, 9);
        }
        // A descriptor within bounds: the bytes are read, and the message, a `Ready` to a
        // worker that is ready, is out of protocol.
        let err = pool
            .apply(forge_bulk_record, (nonce("forged"), vec![2, 16]))
            .unwrap_err();
        check_eq!(err.kind(), ErrorKind::Codec);
        check_eq!(pool.apply_async(square, 4).get_timeout(LONG)?, 16);
        Ok(())
    })
}

/// How [`hold_ring_lock`] leaves the lock it takes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Hold {
    /// The worker is killed holding it.
    Die,
    /// The task returns and its worker lives on, holding it.
    Keep,
}

/// In a pool worker: finds its own rings (the mapping of `/proc/self/maps` whose task ring
/// holds `nonce`, which came in this task's arguments), takes the lock the parent takes to read
/// the reply ring, as a task that scribbles on its rings could, and dies or returns holding it.
///
/// The offsets mirror the layout of `runtime/src/pool/rings.rs` and `channel/ring.rs` (a ring
/// is a 4 KiB header page, its head lock at 1024, then 256 KiB of data; the reply ring follows
/// the task ring) and of a lock (an 8-byte tag, then the owner's thread id); the lock's tag is
/// checked, so a layout that moved fails this task instead of scribbling elsewhere.
#[process]
fn hold_ring_lock(nonce: String, how: Hold, pid_path: String) -> u64 {
    const RING: usize = 4096 + (256 << 10);
    write_line(&pid_path, &std::process::id().to_string());
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let region = maps
        .lines()
        .filter(|line| line.contains("multiproc:pool-rings"))
        .filter_map(|line| {
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end - start >= 2 * RING).then_some(start)
        })
        .find(|&start| {
            // SAFETY: the task ring's data area, in a mapping of at least two rings; no other
            // process writes it while this task runs (its worker holds the only task).
            let data =
                unsafe { std::slice::from_raw_parts((start + 4096) as *const u8, 256 << 10) };
            data.windows(nonce.len()).any(|w| w == nonce.as_bytes())
        })
        .expect("no ring of this worker holds this task");
    let lock = region + RING + 1024;
    // SAFETY: inside the mapping found above; the tag and the word are 8- and 4-byte aligned.
    let (tag, word) = unsafe {
        (
            &*(lock as *const std::sync::atomic::AtomicU64),
            &*((lock + 8) as *const std::sync::atomic::AtomicU32),
        )
    };
    assert_eq!(
        tag.load(Ordering::Relaxed),
        u64::from_le_bytes(*b"mp:lock\0")
    );
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() } as u32;
    assert!(
        word.compare_exchange(0, tid, Ordering::AcqRel, Ordering::Acquire)
            .is_ok(),
        "the reply ring's lock is held"
    );
    if let Hold::Die = how {
        // SAFETY: ends this process at once, holding the lock.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    7
}

/// A task takes the lock of its worker's ring that the parent takes to read a reply: killed
/// holding it, the task fails as a death; living on holding it, the task fails as out of
/// protocol (the parent never waits for a ring's lock: it would wait for good). Through the
/// driver and a borrowed worker alike; each time the worker is replaced, gets fresh rings, and
/// the pool serves on.
fn ring_lock_held_by_a_task(m: StartMethod) -> Outcome {
    let dir = scratch("ringlock");
    bounded(&dir, pool(m, 2)?, |pool| {
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        for (name, how, lent) in [
            ("die", Hold::Die, false),
            ("die-apply", Hold::Die, true),
            ("keep", Hold::Keep, false),
            ("keep-apply", Hold::Keep, true),
        ] {
            let nonce = format!("ring-lock-nonce-{}-{name}", std::process::id());
            let args = (nonce, how, path(name));
            let result = if lent {
                pool.apply(hold_ring_lock, args)
            } else {
                pool.apply_async(hold_ring_lock, args).get_timeout(LONG)
            };
            match how {
                Hold::Die => {
                    let err = match result {
                        Ok(value) => return Err(format!("{name}: the result is {value}").into()),
                        Err(err) => err,
                    };
                    check_eq!(err.kind(), ErrorKind::Died);
                    check!(common::chain(&err).contains("SIGKILL"), "{name}: {err}");
                }
                Hold::Keep => check_out_of_protocol(&dir, name, result)?,
            }
            for i in 0..8 {
                check_eq!(pool.apply(square, i)?, i * i);
            }
            check_eq!(
                pool.map_async(square, 0..20).get_timeout(LONG)?,
                squares(20)
            );
        }
        drop_promptly(pool)
    })
}

/// An idle pool sleeps: its worker and its driver thread, after the few microseconds they
/// spin on a ring, wait in `poll(2)`, and take next to no CPU time while nothing comes.
fn idle_pool_sleeps(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    let pid = pool.apply(pid_of, 0)?;
    check_eq!(pool.apply(square, 3)?, 9);
    let drivers = common::pool_driver_threads()?;
    let worker = format!("/proc/{pid}/stat");
    let ticks = || -> Result<u64, libtest_mimic::Failed> {
        let mut sum = common::cpu_ticks(&worker)?;
        for driver in &drivers {
            sum += common::cpu_ticks(&format!("{driver}/stat")).unwrap_or(0);
        }
        Ok(sum)
    };
    std::thread::sleep(Duration::from_millis(100));
    let before = ticks()?;
    std::thread::sleep(Duration::from_secs(1));
    let spent = ticks()? - before;
    // A clock tick is 10 ms: a process that spins takes 50 to 100 of them in this second.
    check!(
        spent <= 10,
        "an idle pool took {spent} clock ticks in a second"
    );
    check_eq!(pool.apply(square, 4)?, 16);
    Ok(())
}

#[process]
fn nothing(_n: u64) {}

/// An input that panics at item `at`.
fn panicking_input(len: u64, at: u64) -> impl Iterator<Item = u64> {
    (0..len).inspect(move |&n| {
        if n == at {
            panic!("deliberate panic: input item {n}");
        }
    })
}

/// `imap` off the beaten track: chunks larger than the input, empty inputs, a zero buffer,
/// an input that panics half way, an iterator dropped half way, unit results, progress; the
/// pool serves every call after each.
fn imap_edges(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    for ordered in [true, false] {
        let imap = |items: Vec<u64>, chunksize: usize| {
            let it = if ordered {
                pool.imap(square, items)
            } else {
                pool.imap_unordered(square, items)
            };
            it.chunksize(chunksize)
        };
        let mut five: Vec<u64> = imap((0..5).collect(), 100).collect::<Result<_, _>>()?;
        five.sort();
        check_eq!(five, squares(5));
        check_eq!(imap(Vec::new(), 1).count(), 0);
        check_eq!(imap(Vec::new(), 100).count(), 0);
        let mut zero: Vec<u64> = imap((0..50).collect(), 3)
            .buffersize(0)
            .collect::<Result<_, _>>()?;
        zero.sort();
        check_eq!(zero, squares(50));
        // Dropped after a few items: the rest is cancelled, the pool goes on.
        let mut half = imap((0..1000).collect(), 2);
        for _ in 0..5 {
            check!(half.next().is_some_and(|r| r.is_ok()), "an item of half");
        }
        drop(half);
        check_eq!(pool.map(square, 0..100)?, squares(100));
    }
    // An input that panics: the panic reaches the caller, the pool goes on.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.imap(square, panicking_input(100, 37))
            .chunksize(4)
            .count()
    }));
    check!(caught.is_err(), "the input's panic was swallowed");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.map_async(square, panicking_input(100, 37)).get()
    }));
    check!(caught.is_err(), "the input's panic was swallowed");
    check_eq!(pool.map(square, 0..100)?, squares(100));
    check_eq!(pool.apply(square, 7)?, 49);
    // Empty inputs everywhere else.
    check_eq!(pool.map(square, Vec::new())?, Vec::<u64>::new());
    check_eq!(pool.map_chunked(square, 0..0, 7)?, Vec::<u64>::new());
    check_eq!(pool.starmap(add, Vec::new())?, Vec::<i64>::new());
    check_eq!(
        pool.map_async_progress(square, Vec::new(), None, |_| {})
            .get_timeout(LONG)?,
        Vec::<u64>::new()
    );
    // Unit results, many of them.
    check_eq!(pool.map(nothing, 0..1000)?.len(), 1000);
    check_eq!(
        pool.imap(nothing, 0..1000)
            .chunksize(7)
            .filter(|r| r.is_ok())
            .count(),
        1000
    );
    // Progress: the last report says every item is done, and the total.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let values: Vec<u64> = pool
        .imap(square, 0..103)
        .chunksize(10)
        .on_progress(move |p| s.lock().unwrap().push((p.done, p.known, p.total)))
        .collect::<Result<_, _>>()?;
    check_eq!(values, squares(103));
    let seen = seen.lock().unwrap().clone();
    check_eq!(seen.len(), 11);
    check_eq!(seen.last().copied(), Some((103, 103, Some(103))));
    Ok(())
}

/// A block of `n` MiB, each byte its index's low byte.
#[process]
fn mebibytes(n: u64) -> Vec<u8> {
    (0..n << 20).map(|i| i as u8).collect()
}

#[process]
fn byte_sum(v: Vec<u8>) -> u64 {
    v.iter().map(|&b| u64::from(b)).sum()
}

/// Workers that live for one task, and die on some of them: every other item's result is
/// there, in its place, and the dead one's place holds a `Died` error.
fn deaths_with_one_task_per_child(m: StartMethod) -> Outcome {
    // The fork server (for forkserver) is up before the count.
    drop(pool(m, 1)?);
    let fds = common::open_fds();
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .maxtasksperchild(1)
        .build()?;
    let items = || (0..60).map(|n| (n, 13, -libc::SIGKILL));
    let got: Vec<Result<u64, ErrorKind>> = pool
        .imap(dies_on, items())
        .map(|r| r.map_err(|e| e.kind()))
        .collect();
    let expected: Vec<Result<u64, ErrorKind>> = (0..60)
        .map(|n| if n == 13 { Err(ErrorKind::Died) } else { Ok(n) })
        .collect();
    check_eq!(got, expected);
    let mut got: Vec<Result<u64, ErrorKind>> = pool
        .imap_unordered(dies_on, items())
        .map(|r| r.map_err(|e| e.kind()))
        .collect();
    got.sort_by_key(|r| r.map_err(|e| format!("{e:?}")));
    let mut expected = expected;
    expected.sort_by_key(|r| r.map_err(|e| format!("{e:?}")));
    check_eq!(got, expected);
    let err = pool
        .map_async_chunked(dies_on, (0..200).map(|n| (n, 77, 3)), 1)
        .get_timeout(LONG)
        .unwrap_err();
    check_eq!(err.kind(), ErrorKind::Died);
    check_eq!(pool.map_chunked(square, 0..200, 1)?, squares(200));
    pool.close();
    pool.join()?;
    drop(pool);
    check!(
        common::zombie_children().is_empty(),
        "zombies: {:?}",
        common::zombie_children()
    );
    check_eq!(common::open_fds(), fds);
    Ok(())
}

/// `terminate` while large results and arguments are on their way: the map fails with
/// `Terminated`, promptly, and nothing is left behind.
/// `terminate` fails what waits at once: the results can never come. They used to fail only
/// once the workers were reaped, which a worker that ignores SIGTERM holds up for the
/// driver's grace, and a loaded machine for seconds.
fn terminate_fails_results_before_reaping(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    let worker = pool.apply(pid_of, 0)? as i32;
    let ready = scratch("deaf").join("ready");
    let ready_path = ready.to_string_lossy().into_owned();
    let pending = pool.apply_async(deaf_sleep, (ready_path, 30_000));
    read_when_ready(&ready, LONG)?;
    pool.terminate();
    let outcome = pending.get_timeout(LONG).map_err(|e| e.kind());
    // Still within the grace its SIGTERM gets (a second), since it ignores it.
    let alive = !common::is_gone(worker);
    check_eq!(outcome, Err(ErrorKind::Terminated));
    check!(alive, "the result failed only once its worker was gone");
    pool.join()?;
    check!(
        common::is_gone(worker),
        "a terminated pool's worker lives on"
    );
    Ok(())
}

/// `terminate` fails an `apply` that its caller runs on a borrowed worker at once, as it fails
/// what the driver waits for: the call waited for its worker to die, which a worker that ignores
/// SIGTERM holds up for the driver's grace, and then for the driver to bury it.
fn terminate_fails_a_lent_apply_at_once(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    let worker = pool.apply(pid_of, 0)? as i32;
    let ready = scratch("deaf-lent").join("ready");
    let ready_path = ready.to_string_lossy().into_owned();
    std::thread::scope(|scope| {
        // The one worker is idle: this thread borrows it and runs the task itself.
        let call = scope.spawn(|| {
            pool.apply(deaf_sleep, (ready_path, 30_000))
                .map_err(|e| e.kind())
        });
        read_when_ready(&ready, LONG)?;
        pool.terminate();
        let begun = Instant::now();
        while !call.is_finished() && begun.elapsed() < LONG {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Still within the grace its SIGTERM gets (a second), since it ignores it.
        let alive = !common::is_gone(worker);
        let outcome = call.join().map_err(|_| "the call panicked")?;
        check_eq!(outcome, Err(ErrorKind::Terminated));
        check!(alive, "the call failed only once its worker was gone");
        Ok::<(), libtest_mimic::Failed>(())
    })?;
    pool.join()?;
    check!(
        common::is_gone(worker),
        "a terminated pool's worker lives on"
    );
    Ok(())
}

/// Sleeps `millis`, returns `n`, and has its worker exit 10 ms later (its reply sent).
#[process]
fn exits_after_reply(n: u64, millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(10));
        // SAFETY: ends this worker process at once, as a crash would.
        unsafe { libc::_exit(7) };
    });
    n
}

/// A task handed to a worker that died after its last reply, before the driver saw it die,
/// never ran there: another worker runs it. It failed with `Died` ("exited with code 7 while
/// running chunk 0"), its payload gone and no claim word to say it was never taken.
fn task_handed_to_a_worker_just_dead_runs_elsewhere(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    for _ in 0..2 {
        pool.map(square, 0..4)?;
    }
    // The driver is held in this callback while the next worker dies after its reply.
    let held = pool
        .apply_async(square, 1)
        .on_success(|_| std::thread::sleep(Duration::from_millis(1000)));
    let dies = pool.apply_async(exits_after_reply, (5, 300));
    std::thread::sleep(Duration::from_millis(150));
    let long = pool.apply_async(slow_square, (2, 3000));
    let handed = pool.apply_async(square, 7);
    let got = handed.get_timeout(LONG).map_err(|e| e.to_string());
    check_eq!(dies.get_timeout(LONG)?, 5);
    held.get_timeout(LONG)?;
    check_eq!(long.get_timeout(LONG)?, 4);
    check_eq!(got, Ok(49));
    Ok(())
}

fn terminate_mid_transfer(m: StartMethod) -> Outcome {
    // The fork server (for forkserver) is up before the count.
    drop(pool(m, 1)?);
    let fds = common::open_fds();
    /// Terminates `pool` while `pending` is under way: it fails with `Terminated`, promptly.
    fn terminated<T: std::fmt::Debug>(
        pool: Pool,
        pending: multiproc::AsyncResult<T>,
        what: &str,
    ) -> Outcome {
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        pool.terminate();
        let outcome = pending
            .get_timeout(LONG)
            .map(|_| ())
            .map_err(|e| (e.kind(), e.to_string()));
        check!(
            matches!(outcome, Err((ErrorKind::Terminated, _))),
            "{what}: {outcome:?}"
        );
        check!(
            t.elapsed() < Duration::from_secs(5),
            "{what}: took {:?}",
            t.elapsed()
        );
        pool.join()?;
        drop(pool);
        Ok(())
    }
    let pool = pool(m, 2)?;
    check_eq!(pool.apply(square, 2)?, 4);
    let pending = pool.map_async_chunked(mebibytes, std::iter::repeat_n(2, 200), 1);
    terminated(pool, pending, "large results")?;
    let pool = self::pool(m, 2)?;
    check_eq!(pool.apply(square, 2)?, 4);
    let pending = pool.map_async_chunked(byte_sum, (0..100).map(|_| vec![7u8; 2 << 20]), 1);
    terminated(pool, pending, "large arguments")?;
    check!(
        common::zombie_children().is_empty(),
        "zombies: {:?}",
        common::zombie_children()
    );
    check_eq!(common::open_fds(), fds);
    Ok(())
}

/// Threads that call `apply`, `apply_async(..).get()` and `map` at once on a pool whose workers
/// live for one task and die on some: each call gets its own answer, or `Died` for the
/// items that die, never another call's.
fn concurrent_calls_with_deaths(m: StartMethod) -> Outcome {
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .maxtasksperchild(1)
        .build()?;
    let outcome: Result<(), String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let pool = &pool;
                scope.spawn(move || -> Result<(), String> {
                    for i in 0..25u64 {
                        let n = t * 1000 + i;
                        let dies = i % 7 == 3;
                        let bad = if dies { n } else { u64::MAX };
                        let got = match (t + i) % 3 {
                            0 => pool.apply(dies_on, (n, bad, -libc::SIGKILL)),
                            1 => pool.apply_async(dies_on, (n, bad, -libc::SIGKILL)).get(),
                            _ => pool
                                .map(dies_on, [(n, bad, -libc::SIGKILL), (n + 500, u64::MAX, 0)])
                                .map(|v| v[0]),
                        };
                        match got {
                            Ok(v) if !dies && v == n => {}
                            Err(e) if dies && e.kind() == ErrorKind::Died => {}
                            other => {
                                return Err(format!("thread {t} item {n} (dies {dies}): {other:?}"))
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a thread panicked".to_string())??;
        }
        Ok(())
    });
    outcome?;
    check_eq!(pool.map(square, 0..20)?, squares(20));
    Ok(())
}

/// Two byte vectors whose sizes add up to more than a bulk slot, back as one reply.
#[process]
fn split_in_two(v: Vec<u8>, at: u64) -> (Vec<u8>, Vec<u8>) {
    let mut v = v;
    let tail = v.split_off(at as usize);
    (v, tail)
}

/// Byte vectors at a bulk slot's size (128 MiB), around it, and past it, both ways, through
/// `apply` (a borrowed worker) and `apply_async` (the driver thread); and a reply of two
/// vectors that fit a slot apart but not together.
fn messages_at_the_bulk_slot_size(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    let slot = 128usize << 20;
    for (i, len) in [slot - 8, slot, slot + 1].into_iter().enumerate() {
        let mut v = vec![i as u8; len];
        v[0] = 0xA5;
        v[len / 2] = 0x5A;
        v[len - 1] = 0xC3;
        let mut expected = v.clone();
        expected.reverse();
        let back = pool
            .apply(reversed, v.clone())
            .map_err(|e| format!("apply {len}: {e}"))?;
        check!(back == expected, "apply {len}: changed on the way");
        let back = pool
            .apply_async(reversed, v)
            .get_timeout(LONG)
            .map_err(|e| format!("apply_async {len}: {e}"))?;
        check!(back == expected, "apply_async {len}: changed on the way");
    }
    let v: Vec<u8> = vec![7u8; 200 << 20];
    let (a, b) = pool.apply(split_in_two, (v, 100 << 20))?;
    check_eq!((a.len(), b.len()), (100 << 20, 100 << 20));
    check!(a.iter().chain(&b).all(|&x| x == 7), "the halves changed");
    check_eq!(pool.apply(square, 5)?, 25);
    Ok(())
}

/// In a pool worker: a pool of its own, its map's outcome (or the error kind) as text.
#[process]
fn pool_in_a_task(method: String) -> String {
    let method: StartMethod = method.parse().expect("method");
    let outcome = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .and_then(|pool| pool.map(square, 0..5));
    match outcome {
        Ok(values) => format!("{values:?}"),
        Err(err) => format!("{:?}", err.kind()),
    }
}

/// A pool built inside a pool's task: workers are daemonic, as Python's, so it is refused
/// with a clear error, promptly, and the outer pool serves on.
fn pool_in_a_pool_worker(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    let t = Instant::now();
    let got = pool
        .apply_async(pool_in_a_task, m.to_string())
        .get_timeout(LONG)?;
    check!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    check_eq!(got, "DaemonicChildren");
    check_eq!(pool.apply(square, 6)?, 36);
    Ok(())
}

/// Sleeps `millis`, then returns `mib` MiB of a pattern seeded by `seed`.
#[process]
fn late_large_reply(millis: u64, mib: u64, seed: u8) -> Vec<u8> {
    std::thread::sleep(Duration::from_millis(millis));
    let mut v = vec![seed; (mib << 20) as usize];
    v[0] = seed.wrapping_add(1);
    let last = v.len() - 1;
    v[last] = seed.wrapping_add(2);
    v
}

/// A task timeout that fires around the moment a large reply is being written: each call
/// either brings its own intact reply or fails with `Timeout`; never another's, never a
/// corrupt one, never a hang; and the pool serves on.
fn task_timeout_during_a_large_reply(m: StartMethod) -> Outcome {
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .task_timeout(Duration::from_millis(300))
        .build()?;
    let (mut ok, mut timed_out) = (0, 0);
    for (i, millis) in (240..=330).step_by(10).enumerate() {
        let seed = i as u8 * 3;
        let check_reply = |got: multiproc::Result<Vec<u8>>| -> Result<bool, String> {
            match got {
                Ok(v) => {
                    let intact = v.len() == 24 << 20
                        && v[0] == seed.wrapping_add(1)
                        && v[v.len() - 1] == seed.wrapping_add(2)
                        && v[1..v.len() - 1].iter().all(|&b| b == seed);
                    if intact {
                        Ok(true)
                    } else {
                        Err(format!("{millis} ms: a reply that is not its own"))
                    }
                }
                Err(e) if e.kind() == ErrorKind::Timeout => Ok(false),
                Err(e) => Err(format!("{millis} ms: {e}")),
            }
        };
        let pending = pool.apply_async(late_large_reply, (millis, 24, seed));
        let lent = check_reply(pool.apply(late_large_reply, (millis, 24, seed)))?;
        let queued = check_reply(pending.get_timeout(LONG))?;
        for done in [lent, queued] {
            if done {
                ok += 1;
            } else {
                timed_out += 1;
            }
        }
    }
    check!(timed_out > 0, "no call timed out ({ok} came)");
    check_eq!(pool.map(square, 0..20)?, squares(20));
    Ok(())
}

/// The last handle of a pool dropped in one of its own result callbacks (on its driver
/// thread): no hang, and its workers and descriptors go.
fn pool_dropped_in_its_own_callback(m: StartMethod) -> Outcome {
    drop(pool(m, 1)?);
    let fds = common::open_fds();
    let pool = Arc::new(pool(m, 2)?);
    let pids = {
        let mut pids = Vec::new();
        for _ in 0..10 {
            pids = pool.worker_pids();
            if pids.len() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pids
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let last = pool.clone();
    let result = pool
        .apply_async(slow_square, (3, 300))
        .on_success(move |_| {
            drop(last);
            let _ = tx.send(());
        });
    drop(pool);
    rx.recv_timeout(LONG)
        .map_err(|_| "the callback that dropped the pool never returned")?;
    check_eq!(result.get()?, 9);
    for pid in pids {
        let deadline = Instant::now() + LONG;
        while !common::is_gone(pid) {
            check!(Instant::now() < deadline, "worker {pid} outlived its pool");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let deadline = Instant::now() + LONG;
    while common::open_fds() != fds {
        check!(
            Instant::now() < deadline,
            "{} descriptors open, {fds} before the pool",
            common::open_fds()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    check!(
        common::zombie_children().is_empty(),
        "zombies: {:?}",
        common::zombie_children()
    );
    Ok(())
}

/// A panicking `on_error` callback is the result's error whether the result was pending or
/// already failed when it was registered (as a panicking `on_success` is either way).
fn error_callback_panics_alike_before_and_after(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    let bug = |_: &multiproc::Error| panic!("deliberate panic: error callback bug");
    let pending = pool
        .apply_async(slow_panics, 50)
        .on_error(bug)
        .get()
        .unwrap_err();
    let failed = pool.apply_async(slow_panics, 0);
    check!(failed.wait_timeout(LONG), "not failed in time");
    let ready = failed.on_error(bug).get().unwrap_err();
    let said = |err: &multiproc::Error| common::chain(err).contains("error callback bug");
    check_eq!(
        (pending.kind(), said(&pending)),
        (ready.kind(), said(&ready))
    );
    // And the same for on_success.
    let ok = pool.apply_async(square, 2);
    check!(ok.wait_timeout(LONG), "not done in time");
    let ready = ok
        .on_success(|_| panic!("deliberate panic: callback bug"))
        .get()
        .unwrap_err();
    check!(common::chain(&ready).contains("callback bug"), "{ready}");
    Ok(())
}

/// Panics after `millis`.
#[process]
fn slow_panics(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    panic!("deliberate panic: the task");
}

/// `maxtasksperchild` holds for every way a task reaches a worker: `apply` (a borrowed
/// worker), `apply_async(..).get()` (run by the waiter), `apply_async` awaited by the driver,
/// and `map`: no worker serves more than its share.
fn maxtasksperchild_on_every_path(m: StartMethod) -> Outcome {
    let pool = Pool::builder()
        .processes(1)
        .start_method(m)
        .maxtasksperchild(2)
        .build()?;
    let mut served: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for i in 0..24u32 {
        let pid = match i % 4 {
            0 => pool.apply(pid_of, i)?,
            1 => pool.apply_async(pid_of, i).get()?,
            2 => {
                let r = pool.apply_async(pid_of, i);
                check!(r.wait_timeout(LONG), "not done in time");
                r.get()?
            }
            _ => pool.map(pid_of, [i])?[0],
        };
        *served.entry(pid).or_default() += 1;
    }
    check!(
        served.values().all(|&n| n <= 2),
        "tasks per worker: {served:?}"
    );
    check!(served.len() >= 12, "workers: {served:?}");
    Ok(())
}

/// Returns `n`; on item `bad`, the worker dies `millis` after (a thread of the task's exits the
/// process once the reply is on its way, or just before).
#[process]
fn dies_after_reply(n: u64, bad: u64, micros: u64) -> u64 {
    if n == bad {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(micros));
            // SAFETY: ends this process at once, as a crash would.
            unsafe { libc::_exit(3) };
        });
    }
    n
}

/// A worker that dies just after (or while) it replies, with the next tasks queued for it:
/// every item gets one outcome, in its place; only the task its worker runs when it dies
/// (the dying item's, or one of those it went on to) fails (`Died`), and no value is another
/// item's.
fn worker_dies_just_after_its_reply(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    for micros in [0, 50, 200, 1000, 3000] {
        let got: Vec<multiproc::Result<u64>> = pool
            .imap(dies_after_reply, (0..40).map(|n| (n, 10, micros)))
            .buffersize(8)
            .collect();
        check_eq!(got.len(), 40);
        let died = got.iter().filter(|r| r.is_err()).count();
        check!(died <= 1, "{micros} us: {died} items failed for one death");
        for (n, outcome) in got.iter().enumerate() {
            match outcome {
                Ok(v) => check_eq!(*v, n as u64),
                Err(e) if e.kind() == ErrorKind::Died && n >= 10 => {}
                Err(e) => {
                    let all: Vec<_> = got
                        .iter()
                        .map(|r| r.as_ref().map_err(|e| e.kind()))
                        .collect();
                    return Err(format!("{micros} us: item {n}: {e}; all: {all:?}").into());
                }
            }
        }
        let applied = pool.apply(dies_after_reply, (10, 10, micros));
        check!(
            matches!(&applied, Ok(10))
                || applied.as_ref().is_err_and(|e| e.kind() == ErrorKind::Died),
            "{micros} us: apply: {applied:?}"
        );
        // Its worker's end comes after the reply: let it come before the next call.
        std::thread::sleep(Duration::from_millis(20));
        check_eq!(pool.apply(square, 3)?, 9);
    }
    Ok(())
}

/// Plain old data of an odd size (3 bytes, alignment 1).
#[derive(
    Debug, Clone, Copy, PartialEq, multiproc::Pod, multiproc::Zeroable, Serialize, Deserialize,
)]
#[bytemuck(crate = "multiproc::bytemuck")]
#[repr(C)]
pub struct Rgb {
    r: u8,
    g: u8,
    b: u8,
}

/// Plain old data aligned past any allocator's word (16 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, multiproc::Pod, multiproc::Zeroable, Serialize, Deserialize,
)]
#[bytemuck(crate = "multiproc::bytemuck")]
#[repr(C, align(16))]
pub struct Wide {
    lo: u64,
    hi: u64,
}

/// Plain old data of no size.
#[derive(
    Debug, Clone, Copy, PartialEq, multiproc::Pod, multiproc::Zeroable, Serialize, Deserialize,
)]
#[bytemuck(crate = "multiproc::bytemuck")]
#[repr(C)]
pub struct Nothing;

#[process]
fn brighter(v: Vec<Rgb>) -> Vec<Rgb> {
    v.into_iter()
        .map(|c| Rgb {
            r: c.r.wrapping_add(1),
            ..c
        })
        .collect()
}

#[process]
fn swapped(v: Vec<Wide>) -> Vec<Wide> {
    assert_eq!(v.as_ptr() as usize % 16, 0, "a Vec<Wide> out of alignment");
    v.into_iter().map(|w| Wide { lo: w.hi, hi: w.lo }).collect()
}

#[process]
fn swap_one(w: Wide) -> Wide {
    Wide { lo: w.hi, hi: w.lo }
}

#[process]
fn nothings(n: u64) -> Vec<Nothing> {
    vec![Nothing; n as usize]
}

#[process]
fn count_nothings(v: Vec<Nothing>, also: Vec<Wide>) -> (u64, u64) {
    (v.len() as u64, also.len() as u64)
}

/// Vectors of plain old data of odd size, of large alignment, and of no size, as arguments
/// and results, inline and as blocks, one value and a `map` of them.
fn plain_old_data_of_odd_shapes(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    for len in [0usize, 1, 5461, 5462, 5463, 100_000] {
        let colours: Vec<Rgb> = (0..len)
            .map(|i| Rgb {
                r: i as u8,
                g: (i >> 8) as u8,
                b: 7,
            })
            .collect();
        let expected: Vec<Rgb> = colours
            .iter()
            .map(|c| Rgb {
                r: c.r.wrapping_add(1),
                ..*c
            })
            .collect();
        check_eq!(pool.apply(brighter, colours.clone())?, expected);
        check_eq!(
            pool.apply_async(brighter, colours).get_timeout(LONG)?,
            expected
        );
    }
    for len in [0usize, 1, 1023, 1024, 1025, 70_001] {
        let wide: Vec<Wide> = (0..len as u64).map(|i| Wide { lo: i, hi: !i }).collect();
        let expected: Vec<Wide> = wide.iter().map(|w| Wide { lo: w.hi, hi: w.lo }).collect();
        check_eq!(pool.apply(swapped, wide.clone())?, expected);
        check_eq!(
            pool.apply_async(swapped, wide.clone()).get_timeout(LONG)?,
            expected
        );
        check_eq!(pool.map_chunked(swap_one, wide.clone(), 333)?, expected);
    }
    for n in [0u64, 1, 1 << 20] {
        check_eq!(pool.apply(nothings, n)?.len() as u64, n);
    }
    let wide: Vec<Wide> = (0..5000u64).map(|i| Wide { lo: i, hi: i }).collect();
    check_eq!(
        pool.apply(count_nothings, (vec![Nothing; 12345], wide))?,
        (12345, 5000)
    );
    Ok(())
}

/// A number whose decoding panics in the parent when it is 7.
#[derive(Debug, PartialEq)]
struct SevenPanics(u64);

impl Serialize for SevenPanics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for SevenPanics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        if n == 7 {
            panic!("deliberate panic: decoding seven");
        }
        Ok(SevenPanics(n))
    }
}

#[process]
fn seven_panics(n: u64) -> SevenPanics {
    SevenPanics(n)
}

/// A result's decoding that panics in the parent, for one item of a `map`, an `imap` (its
/// chunk's items fail, in place, the rest come) and an `imap` stream: the driver thread lives
/// on, and so does the pool.
fn decoding_panics_in_lazy_maps(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let err = pool.map_chunked(seven_panics, 0..20, 3).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Panicked);
    let panicked = |r: &multiproc::Result<SevenPanics>| {
        r.as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::Panicked && e.to_string().contains("seven"))
    };
    for ordered in [true, false] {
        let it = if ordered {
            pool.imap(seven_panics, 0..20u64)
        } else {
            pool.imap_unordered(seven_panics, 0..20u64)
        };
        let got: Vec<multiproc::Result<SevenPanics>> = it.chunksize(3).collect();
        let failed = got.iter().filter(|r| r.is_err()).count();
        check!(
            failed == 3 && got.iter().filter(|r| panicked(r)).count() == 3,
            "ordered {ordered}: {failed} items failed: {got:?}"
        );
        if ordered {
            for (n, r) in got.iter().enumerate() {
                let n = n as u64;
                if (6..9).contains(&n) {
                    check!(panicked(r), "item {n}: {r:?}");
                } else {
                    check!(
                        matches!(r, Ok(SevenPanics(v)) if *v == n),
                        "item {n}: {r:?}"
                    );
                }
            }
        }
        let mut values: Vec<u64> = got
            .into_iter()
            .filter_map(|r| r.ok().map(|v| v.0))
            .collect();
        values.sort();
        check_eq!(
            values,
            (0..20u64)
                .filter(|n| !(6..9).contains(n))
                .collect::<Vec<_>>()
        );
    }
    let streamed: Vec<multiproc::Result<SevenPanics>> = futures::executor::block_on(
        futures::StreamExt::collect(pool.imap(seven_panics, 0..12u64).into_stream()),
    );
    check!(
        streamed.iter().filter(|r| r.is_err()).count() == 1 && panicked(&streamed[7]),
        "streamed: {streamed:?}"
    );
    check_eq!(pool.map(square, 0..20)?, squares(20));
    Ok(())
}

/// Item 1 panics in the worker, late; item 7's result panics as it is decoded.
#[process]
fn late_panic_or_seven(n: u64) -> SevenPanics {
    if n == 1 {
        std::thread::sleep(Duration::from_millis(300));
        panic!("deliberate panic: bad item 1");
    }
    SevenPanics(n)
}

/// A `map` reports its first failure in input order, a result's decoding that panics
/// included: a later chunk whose decoding panics does not win over an earlier chunk that fails
/// after it.
fn map_decoding_panic_keeps_input_order(m: StartMethod) -> Outcome {
    let pool = pool(m, 3)?;
    let err = pool.map_chunked(late_panic_or_seven, 0..12, 3).unwrap_err();
    check!(
        err.kind() == ErrorKind::Panicked && common::chain(&err).contains("bad item 1"),
        "{err}"
    );
    check_eq!(pool.map(square, 0..20)?, squares(20));
    Ok(())
}

/// A number whose `Serialize` panics when it is 13 (in the parent, as an argument is encoded).
#[derive(Debug, PartialEq)]
pub struct Bomb(u64);

impl Serialize for Bomb {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 {
            panic!("deliberate panic: encoding thirteen");
        }
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Bomb {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Bomb(u64::deserialize(d)?))
    }
}

#[process]
fn defused(b: Bomb) -> u64 {
    b.0
}

/// An argument whose `Serialize` panics half way through a `map`'s encoding, for every way a
/// map is submitted (an input of known length, one of unknown length, with progress, and an
/// imap): the panic reaches the caller, and the pool still serves, closes and joins promptly
/// (no job left waiting for chunks that were never queued).
fn encoding_panics_half_way(m: StartMethod) -> Outcome {
    let bombs = || (0..40).map(Bomb);
    let unknown_length = || (0..40).filter(|_| true).map(Bomb);
    type Attempt = fn(&Pool, &dyn Fn() -> Box<dyn Iterator<Item = Bomb>>);
    let attempts: [(&str, Attempt); 4] = [
        ("map_async_chunked", |pool, input| {
            drop(pool.map_async_chunked(defused, input(), 2))
        }),
        ("map_async", |pool, input| {
            drop(pool.map_async(defused, input()))
        }),
        ("map_async_progress", |pool, input| {
            drop(pool.map_async_progress(defused, input(), Some(2), |_| {}))
        }),
        ("imap", |pool, input| {
            let _ = pool.imap(defused, input()).chunksize(2).count();
        }),
    ];
    let mut hung = Vec::new();
    for (what, attempt) in attempts {
        for (length, input) in [
            (
                "known length",
                &(|| Box::new(bombs()) as Box<dyn Iterator<Item = Bomb>>) as &dyn Fn() -> _,
            ),
            (
                "unknown length",
                &(|| Box::new(unknown_length()) as Box<dyn Iterator<Item = Bomb>>),
            ),
        ] {
            let pool = pool(m, 2)?;
            let caught =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| attempt(&pool, input)));
            check!(caught.is_err(), "{what}, {length}: the panic was swallowed");
            check_eq!(pool.map(square, 0..10)?, squares(10));
            let t = Instant::now();
            pool.close();
            std::thread::scope(|scope| {
                let joining = scope.spawn(|| pool.join());
                while !joining.is_finished() && t.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if !joining.is_finished() {
                    hung.push(format!("{what}, {length}"));
                    pool.terminate();
                }
                let _ = joining.join();
            });
        }
    }
    check!(hung.is_empty(), "close and join hung after: {hung:?}");
    Ok(())
}

/// A `map` whose input terminates the pool half way through its reading (as another thread
/// could): the map was submitted before, so it fails as every pending result of a
/// terminated pool does, with `Terminated`, not as a call made after the terminate.
fn terminated_while_a_map_is_read(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let p = &pool;
    let items = (0..100u64).inspect(move |&n| {
        if n == 50 {
            p.terminate();
        }
    });
    let err = pool
        .map_async_chunked(square, items, 1)
        .get_timeout(LONG)
        .unwrap_err();
    check!(
        err.kind() == ErrorKind::Terminated,
        "{:?}: {err}",
        err.kind()
    );
    Ok(())
}

fn main() {
    multiproc::init();
    let mut trials = trials!(each_method:
        map_ordering_and_chunks,
        inputs_that_lie_about_their_length,
        durations_too_long_for_the_clock,
        results_nested_too_deep,
        cancelled_tasks_never_run,
        join_from_two_threads,
        lazy_map_across_close_and_join,
        progress_callback_panics,
        async_result_methods,
        cancel_while_delivering,
        callbacks,
        imap_ordered_and_lazy,
        state_rules,
        maxtasksperchild,
        initializer,
        panic_in_task,
        panic_payload_panics_on_drop,
        dead_worker,
        task_timeout,
        encode_failure,
        byte_vectors,
        numbers,
        threads_at_once,
        pool_in_a_child,
        no_leaks_50_pools,
        workers_die_with_killed_parent,
        workers_die_with_killed_parent_despite_a_forked_sibling,
        too_many_descriptors,
        terminate_during_apply,
        close_races,
        user_code_that_fails_in_the_parent,
        initializer_that_exits,
        fork_right_after_build,
        fork_beside_the_driver,
        fork_while_the_driver_panics,
        fork_while_a_callback_prints,
        fork_while_a_callback_runs,
        stopped_mid_reply,
        stopped_mid_reply_times_out,
        cut_short_reply,
        large_task_to_stopped_worker,
        forged_messages,
        message_start_without_timeout,
        start_failures_are_retried,
        declared_message_length,
        ring_sized_messages_arrive_intact,
        rings_full_both_ways,
        ring_lock_held_by_a_task,
        idle_pool_sleeps,
        bulk_messages_arrive_intact,
        bulk_vectors_of_floats_arrive_intact,
        bulk_tasks_pipelined,
        bulk_reply_killed_midway,
        forged_bulk_descriptor,
        imap_edges,
        deaths_with_one_task_per_child,
        terminate_mid_transfer,
        terminate_fails_results_before_reaping,
        terminate_fails_a_lent_apply_at_once,
        terminate_while_early_chunks_decode,
        deaths_while_results_stream,
        cancel_of_a_task_run_by_its_waiter,
        terminate_while_results_stream,
        task_handed_to_a_worker_just_dead_runs_elsewhere,
        concurrent_calls_with_deaths,
        messages_at_the_bulk_slot_size,
        pool_in_a_pool_worker,
        task_timeout_during_a_large_reply,
        pool_dropped_in_its_own_callback,
        error_callback_panics_alike_before_and_after,
        maxtasksperchild_on_every_path,
        worker_dies_just_after_its_reply,
        plain_old_data_of_odd_shapes,
        decoding_panics_in_lazy_maps,
        map_decoding_panic_keeps_input_order,
        encoding_panics_half_way,
        terminated_while_a_map_is_read,
    );
    trials.extend(trials!(once:
        pools_of_more_processes_than_a_machine_runs,
        zygote_killed,
        zygote_stray_byte,
        zygote_and_spare_killed,
        zygote_and_spare_killed_under_refuse,
        fork_never_overlaps_user_code,
    ));
    // Only the methods with a fork server (the pool's zygote, for `fork`).
    trials.extend(
        trials!(each_method: stalled_fork_server)
            .into_iter()
            .filter(|trial| !trial.name().ends_with("::spawn")),
    );
    common::run(trials)
}
