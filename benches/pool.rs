//! `Pool` throughput, latency, scaling and memory: multiproc against raw floors (forked
//! children talking over bare sockets and pipes) and against CPython's `multiprocessing.Pool`,
//! all measured in one run and printed as one table. Reports the targets; never fails on them.
//!
//! ```text
//! cargo bench --bench pool
//! MULTIPROC_BENCH_ITERS=3 cargo bench --bench pool   # quick run: 3 iterations of everything
//! MULTIPROC_BENCH_ONLY=w3,w4 cargo bench --bench pool # only these parts (w2 w2s w3 w4 w5 imap exec cpython)
//! ```
//!
//! Workloads (default start method, forkserver, on both sides):
//!
//! * W2: `pool.map(square, 0..1_000_000)` on 2 workers. Floor: two forked children that get
//!   their half of the numbers as raw little-endian `u64`s over a socketpair and stream the
//!   squares back the same way.
//! * W2s: the same map over a `#[derive(Serialize, Deserialize)]` struct of two `u64`s (each
//!   field squared), beside the `u64` map in the same minutes: the ratio is the target. Beside
//!   them, the same struct as `#[derive(Pod)]` (its bytes, no serde).
//! * W3: sequential `pool.apply(square, n)` on 1 worker, per call. Floor: an 8-byte ping-pong
//!   over two pipes with a forked child; the two in blocks of 100 that alternate.
//! * W4: `pool.apply(len_of, <64 MiB Vec<u8>>)` on 1 worker, in MB/s. Floor: 64 MiB written
//!   into a socketpair, read by a forked child into a reused buffer, 8 bytes back. Beside it,
//!   `pool.apply(len_of_f64s, <64 MiB Vec<f64>>)` against the same floor.
//! * W5: a naive prime count over `0..N` in 64 `(lo, hi)` chunks with `starmap`, on 1 and on 2
//!   workers: the speed-up. Floor: the same count in this process, on one thread. Beside it,
//!   the same 8 tasks taken in order by two threads of this process (what the machine gives
//!   two CPU-bound threads during the run: the pool's ceiling), and the CPU time this process
//!   spends during a 2-worker run (it should sleep while the workers compute).
//! * Memory: peak RSS (VmHWM) of the parent while iterating
//!   `pool.imap(square, 0..10_000_000).chunksize(1000)`, in a re-executed copy of this binary.
//! * Exec (its own table, after the main one): the `Executor` beside CPython's
//!   `ProcessPoolExecutor`: `submit(square, n).result()` round trips on 1 worker (beside
//!   `apply` on the executor's own pool and worker, in alternating blocks of 100), and 10,000
//!   `submit`s then `as_completed` on 2 workers.

mod common;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    bulk_child, forced_iters, fork_raw, met, ms, parse_values, ping_child, pipe, ratio,
    read_all_or_eof, run_cpython, time, us, value, Samples, Values,
};
use multiproc::{process, Pool};
use serde::{Deserialize, Serialize};

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[process]
fn len_of(v: Vec<u8>) -> u64 {
    v.len() as u64
}

#[process]
fn len_of_f64s(v: Vec<f64>) -> u64 {
    (v.len() * std::mem::size_of::<f64>()) as u64
}

/// W2s's item: two numbers through serde.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Pair {
    a: u64,
    b: u64,
}

#[process]
fn square_pair(p: Pair) -> Pair {
    Pair {
        a: p.a * p.a,
        b: p.b * p.b,
    }
}

/// The same two numbers as plain old data: `map` moves them as their bytes.
#[derive(
    Debug, Clone, Copy, PartialEq, Serialize, Deserialize, multiproc::Pod, multiproc::Zeroable,
)]
#[bytemuck(crate = "multiproc::bytemuck")]
#[repr(C)]
struct PodPair {
    a: u64,
    b: u64,
}

#[process]
fn square_pod_pair(p: PodPair) -> PodPair {
    PodPair {
        a: p.a * p.a,
        b: p.b * p.b,
    }
}

#[process]
fn count_primes(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&n| common::is_prime(n)).count() as u64
}

/// The argument that makes `main` run the imap memory phase alone and print its numbers.
const IMAP_RSS: &str = "--imap-rss";

const W2_ITEMS: u64 = 1_000_000;
const W4_BYTES: usize = 64 << 20;
/// W5's range: one 1-worker run takes well over half a second here.
const W5_N: u64 = 2_000_000;
/// W5's range for the CPython comparison (pure-Python trial division is ~50x slower).
const W5_PY_N: u64 = 400_000;
const W5_CHUNKS: u64 = 64;
const IMAP_ITEMS: u64 = 10_000_000;
const IMAP_CHUNKSIZE: usize = 1000;

/// Iterations when `MULTIPROC_BENCH_ITERS` is not set.
#[derive(Debug, Clone, Copy)]
struct Iters {
    /// W2 maps.
    w2: usize,
    /// W3 apply calls (and ping-pongs).
    w3: usize,
    /// W4 64 MiB applies (and transfers).
    w4: usize,
    /// W5 prime counts of each kind.
    w5: usize,
}

const DEFAULT_ITERS: Iters = Iters {
    w2: 20,
    w3: 2000,
    w4: 10,
    w5: 5,
};

/// Untimed runs before each series (W3 has its own, larger, warm-up).
const WARMUP: usize = 2;
const W3_WARMUP: usize = 200;
/// W3's calls go in blocks of this many, alternating with the floor's.
const W3_BLOCK: usize = 100;

fn main() {
    multiproc::init();
    // Only the parent gets here (init() runs spawn and fork-server children and never returns
    // in them). Any other argument (cargo bench passes `--bench`) is ignored.
    if std::env::args().nth(1).as_deref() == Some(IMAP_RSS) {
        imap_rss_phase();
        return;
    }

    let iters = iterations();
    let only = Only::from_env();
    // The raw floors' children are forked first, while this process has no pool (and no
    // thread); they serve every floor measurement and are reaped at the end.
    let floors = Floors::fork();

    let method = multiproc::get_start_method();
    let pool2 = Pool::builder()
        .processes(2)
        .build()
        .expect("a pool of 2 workers");
    let pool1 = Pool::builder()
        .processes(1)
        .build()
        .expect("a pool of 1 worker");

    let w2 = only.run("w2", || {
        eprintln!("W2: map of {W2_ITEMS} squares, {} runs ...", iters.w2);
        bench_w2(&pool2, &floors, iters.w2)
    });
    let w2s = only.run("w2s", || {
        eprintln!(
            "W2s: map of {W2_ITEMS} serde pairs beside the u64 map, {} runs ...",
            iters.w2
        );
        bench_w2s(&pool2, &floors, iters.w2)
    });
    let w3 = only.run("w3", || {
        eprintln!("W3: {} sequential applies ...", iters.w3);
        bench_w3(&pool1, &floors, iters.w3)
    });
    let w4 = only.run("w4", || {
        eprintln!(
            "W4: apply of a 64 MiB Vec<u8> and Vec<f64>, {} runs ...",
            iters.w4
        );
        bench_w4(&pool1, &floors, iters.w4)
    });
    let w5 = only.run("w5", || {
        eprintln!("W5: prime counts, {} runs of each ...", iters.w5);
        bench_w5(&pool1, &pool2, iters.w5)
    });

    let exec = only.run("exec", || {
        eprintln!("Exec: executor round trips and {EXEC_SUBMITS} submits, with CPython's ...");
        bench_exec(&iters)
    });

    for pool in [pool1, pool2] {
        pool.close();
        pool.join().expect("pool join");
    }
    floors.reap();

    let imap = only
        .run("imap", || {
            eprintln!("imap memory: re-executing this binary with {IMAP_RSS} ...");
            run_imap_phase()
        })
        .unwrap_or_else(|| Err(SKIPPED.to_string()));
    let cpython = only
        .run("cpython", || {
            eprintln!("CPython ...");
            cpython(&iters)
        })
        .unwrap_or_else(|| Err(SKIPPED.to_string()));

    print_report(&Report {
        iters,
        method: method.as_str(),
        w2,
        w2s,
        w3,
        w4,
        w5,
        imap,
        cpython,
    });
    if let Some(exec) = &exec {
        print_exec(exec);
    }
}

fn iterations() -> Iters {
    match forced_iters() {
        Some(n) => Iters {
            w2: n,
            w3: n,
            w4: n,
            w5: n,
        },
        None => DEFAULT_ITERS,
    }
}

/// Why a part that `MULTIPROC_BENCH_ONLY` left out has no figures.
const SKIPPED: &str = "skipped (not in MULTIPROC_BENCH_ONLY)";

/// The parts to run: `MULTIPROC_BENCH_ONLY`, a comma-separated list of `w2`, `w2s`, `w3`, `w4`, `w5`,
/// `imap` and `cpython`; every part when it is not set.
struct Only(Option<Vec<String>>);

impl Only {
    const PARTS: [&'static str; 8] = ["w2", "w2s", "w3", "w4", "w5", "imap", "exec", "cpython"];

    fn from_env() -> Only {
        let Ok(v) = std::env::var("MULTIPROC_BENCH_ONLY") else {
            return Only(None);
        };
        let parts: Vec<String> = v
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        for p in &parts {
            assert!(
                Self::PARTS.contains(&p.as_str()),
                "MULTIPROC_BENCH_ONLY: unknown part {p:?} (known: {})",
                Self::PARTS.join(", ")
            );
        }
        Only(Some(parts))
    }

    /// `part()` when the part is selected.
    fn run<T>(&self, part: &str, f: impl FnOnce() -> T) -> Option<T> {
        let selected = self.0.as_ref().is_none_or(|p| p.iter().any(|p| p == part));
        selected.then(f)
    }
}

// ---------------------------------------------------------------------------------------------
// Samples

// ---------------------------------------------------------------------------------------------
// The raw floors: children forked before any pool, speaking bare bytes.

#[cfg(not(target_endian = "little"))]
compile_error!("the raw floors send native u64s as little-endian bytes");

fn as_bytes(v: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and u8 has alignment 1; same memory, same lifetime.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

fn as_bytes_mut(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: as `as_bytes`; every byte pattern is a valid u64.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}

/// Bytes per read of a map child (a multiple of 8).
const MAP_BLOCK: usize = 64 << 10;

/// W2 floor child: for each request (an 8-byte count, then that many raw u64s), streams back
/// the squares block by block.
fn map_child(mut sock: UnixStream) {
    let mut buf = vec![0u64; MAP_BLOCK / 8];
    let mut header = [0u8; 8];
    while read_all_or_eof(&mut sock, &mut header) {
        let mut left = u64::from_le_bytes(header) as usize;
        while left > 0 {
            let n = left.min(buf.len());
            let block = &mut buf[..n];
            assert!(read_all_or_eof(&mut sock, as_bytes_mut(block)));
            for x in block.iter_mut() {
                *x = x.wrapping_mul(*x);
            }
            sock.write_all(as_bytes(block)).expect("map child write");
            left -= n;
        }
    }
}

struct Floors {
    /// W2: two children; the parent's ends are non-blocking.
    map: Vec<(libc::pid_t, UnixStream)>,
    /// W3: the child, the parent's write end, the parent's read end.
    ping: (libc::pid_t, File, File),
    /// W4.
    bulk: (libc::pid_t, UnixStream),
}

impl Floors {
    fn fork() -> Floors {
        // Descriptors of the parent the next child must not keep open (or it would hold the
        // other children's sockets open past the parent's close).
        let mut parents: Vec<RawFd> = Vec::new();
        let mut map = Vec::new();
        for _ in 0..2 {
            let (mine, theirs) = UnixStream::pair().expect("socketpair");
            // The closure owns the child's end: the parent's copy closes when it is dropped.
            let pid = fork_raw(&parents_plus(&parents, mine.as_raw_fd()), move || {
                map_child(theirs)
            });
            mine.set_nonblocking(true).expect("O_NONBLOCK");
            parents.push(mine.as_raw_fd());
            map.push((pid, mine));
        }
        let (from_parent, to_child) = pipe();
        let (from_child, to_parent) = pipe();
        let close = [
            parents.clone(),
            vec![to_child.as_raw_fd(), from_child.as_raw_fd()],
        ]
        .concat();
        let pid = fork_raw(&close, move || ping_child(from_parent, to_parent));
        parents.extend([to_child.as_raw_fd(), from_child.as_raw_fd()]);
        let ping = (pid, to_child, from_child);
        let (mine, theirs) = UnixStream::pair().expect("socketpair");
        let pid = fork_raw(&parents_plus(&parents, mine.as_raw_fd()), move || {
            bulk_child(theirs)
        });
        Floors {
            map,
            ping,
            bulk: (pid, mine),
        }
    }

    /// Closes the parent's ends (the children see end of file and exit) and reaps them.
    fn reap(self) {
        let mut pids: Vec<libc::pid_t> = self.map.iter().map(|(pid, _)| *pid).collect();
        pids.extend([self.ping.0, self.bulk.0]);
        drop(self);
        for pid in pids {
            let mut status = 0;
            // SAFETY: `pid` is our child; `status` is a valid out-pointer.
            let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(reaped, pid, "waitpid: {}", io::Error::last_os_error());
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                eprintln!("warning: floor child {pid} ended with status {status:#x}");
            }
        }
    }

    /// W2 floor: `items` numbers split between the map children; their squares in order.
    fn map_squares(&self, items: u64) -> Vec<u64> {
        let input: Vec<u64> = (0..items).collect();
        let mut output = vec![0u64; items as usize];
        self.map_squares_into(&input, &mut output);
        output
    }

    /// The squares of `input` into `output` (of the same length), split between the map
    /// children.
    fn map_squares_into(&self, input: &[u64], output: &mut [u64]) {
        let items = input.len();
        let per = items.div_ceil(self.map.len());
        struct Leg<'a> {
            sock: &'a UnixStream,
            header: [u8; 8],
            header_sent: usize,
            send: &'a [u8],
            sent: usize,
            recv: &'a mut [u8],
            received: usize,
        }
        let mut legs: Vec<Leg<'_>> = self
            .map
            .iter()
            .zip(input.chunks(per).zip(output.chunks_mut(per)))
            .map(|((_, sock), (send, recv))| Leg {
                sock,
                header: (send.len() as u64).to_le_bytes(),
                header_sent: 0,
                send: as_bytes(send),
                sent: 0,
                recv: as_bytes_mut(recv),
                received: 0,
            })
            .collect();
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(legs.len());
        loop {
            fds.clear();
            for leg in &legs {
                let mut events = 0;
                if leg.sent < leg.send.len() {
                    events |= libc::POLLOUT;
                }
                if leg.received < leg.recv.len() {
                    events |= libc::POLLIN;
                }
                fds.push(libc::pollfd {
                    fd: if events == 0 {
                        -1
                    } else {
                        leg.sock.as_raw_fd()
                    },
                    events,
                    revents: 0,
                });
            }
            if fds.iter().all(|p| p.fd < 0) {
                break;
            }
            // SAFETY: `fds` is a valid pollfd array of its length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let err = io::Error::last_os_error();
                assert_eq!(err.kind(), io::ErrorKind::Interrupted, "poll: {err}");
                continue;
            }
            for (leg, pfd) in legs.iter_mut().zip(&fds) {
                if pfd.revents & libc::POLLOUT != 0 {
                    let mut sock = leg.sock;
                    if leg.header_sent < 8 {
                        match sock.write(&leg.header[leg.header_sent..]) {
                            Ok(n) => leg.header_sent += n,
                            Err(err) if would_block(&err) => {}
                            Err(err) => panic!("floor write: {err}"),
                        }
                    }
                    if leg.header_sent == 8 {
                        match sock.write(&leg.send[leg.sent..]) {
                            Ok(n) => leg.sent += n,
                            Err(err) if would_block(&err) => {}
                            Err(err) => panic!("floor write: {err}"),
                        }
                    }
                }
                if pfd.revents & libc::POLLIN != 0 {
                    let mut sock = leg.sock;
                    match sock.read(&mut leg.recv[leg.received..]) {
                        Ok(0) => panic!("a floor map child went away"),
                        Ok(n) => leg.received += n,
                        Err(err) if would_block(&err) => {}
                        Err(err) => panic!("floor read: {err}"),
                    }
                }
                if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
                    && pfd.revents & libc::POLLIN == 0
                {
                    panic!("a floor map child went away (revents {:#x})", pfd.revents);
                }
            }
        }
        drop(legs);
    }

    /// W3 floor: one 8-byte round trip.
    fn ping(&self, n: u64) -> u64 {
        let (_, mut to_child, mut from_child) = (&self.ping.0, &self.ping.1, &self.ping.2);
        to_child.write_all(&n.to_le_bytes()).expect("ping write");
        let mut buf = [0u8; 8];
        assert!(
            read_all_or_eof(&mut from_child, &mut buf),
            "ping child gone"
        );
        u64::from_le_bytes(buf)
    }

    /// W4 floor: `data` to the bulk child, 8 bytes back.
    fn bulk(&self, data: &[u8]) -> u64 {
        let mut sock = &self.bulk.1;
        sock.write_all(&(data.len() as u64).to_le_bytes())
            .expect("bulk write");
        sock.write_all(data).expect("bulk write");
        let mut buf = [0u8; 8];
        assert!(read_all_or_eof(&mut sock, &mut buf), "bulk child gone");
        u64::from_le_bytes(buf)
    }
}

fn parents_plus(parents: &[RawFd], fd: RawFd) -> Vec<RawFd> {
    let mut v = parents.to_vec();
    v.push(fd);
    v
}

fn would_block(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

// ---------------------------------------------------------------------------------------------
// The workloads

struct W2 {
    ours: Samples,
    floor: Samples,
}

fn bench_w2(pool: &Pool, floors: &Floors, iters: usize) -> W2 {
    let ours = || pool.map(square, 0..W2_ITEMS).expect("pool.map");
    let floor = || floors.map_squares(W2_ITEMS);
    let (a, b) = (ours(), floor());
    assert_eq!(a, b, "multiproc and the floor disagree");
    assert_eq!(a[999_999], 999_999 * 999_999);
    for _ in 1..WARMUP {
        ours();
        floor();
    }
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    for _ in 0..iters {
        sa.push(time(ours).0);
        sb.push(time(floor).0);
    }
    W2 {
        ours: Samples::new(sa),
        floor: Samples::new(sb),
    }
}

struct W2s {
    /// The u64 map (as W2), the serde pair map and the Pod pair map, alternated.
    squares: Samples,
    pairs: Samples,
    pod_pairs: Samples,
    /// W2's socketpair floor over 1M numbers, and over 2M: the bytes of 1M pairs each way,
    /// squared the same way (a pair's two numbers), into buffers made once, alternated with
    /// each other after the maps.
    floor_squares: Samples,
    floor_pairs: Samples,
}

fn bench_w2s(pool: &Pool, floors: &Floors, iters: usize) -> W2s {
    // The items are made as the map takes them, as `0..N` makes W2's numbers.
    let items = || (0..W2_ITEMS).map(|i| Pair { a: i, b: i + 1 });
    let squares = || pool.map(square, 0..W2_ITEMS).expect("pool.map");
    let pairs = || pool.map(square_pair, items()).expect("pool.map");
    let pod_items = || (0..W2_ITEMS).map(|i| PodPair { a: i, b: i + 1 });
    let pod_pairs = || pool.map(square_pod_pair, pod_items()).expect("pool.map");
    assert_eq!(
        pod_pairs()[999_999],
        PodPair {
            a: 999_999 * 999_999,
            b: 1_000_000 * 1_000_000
        }
    );
    let back = pairs();
    assert_eq!(back.len(), W2_ITEMS as usize);
    assert_eq!(
        back[999_999],
        square_pair(Pair {
            a: 999_999,
            b: 1_000_000
        })
    );
    for _ in 1..WARMUP {
        squares();
        pairs();
        pod_pairs();
    }
    // Into buffers made once: the transport's own cost, without the fresh pages W2's floor
    // faults in each run (which would also change the memory the maps get).
    let numbers: Vec<u64> = (0..2 * W2_ITEMS).collect();
    let out = std::cell::RefCell::new(vec![0u64; numbers.len()]);
    let half = W2_ITEMS as usize;
    let floor_squares = || floors.map_squares_into(&numbers[..half], &mut out.borrow_mut()[..half]);
    let floor_pairs = || floors.map_squares_into(&numbers, &mut out.borrow_mut());
    floor_pairs();
    assert_eq!(out.borrow()[2 * half - 1], (2 * W2_ITEMS - 1).pow(2));
    let (mut sa, mut sb, mut sc) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sd, mut se) = (Vec::new(), Vec::new());
    for _ in 0..iters {
        sa.push(time(squares).0);
        sb.push(time(pairs).0);
        sc.push(time(pod_pairs).0);
    }
    // The floors after the maps, not among them: their children's work would change the
    // caches and the memory the maps find.
    for _ in 0..iters {
        sd.push(time(floor_squares).0);
        se.push(time(floor_pairs).0);
    }
    W2s {
        squares: Samples::new(sa),
        pairs: Samples::new(sb),
        pod_pairs: Samples::new(sc),
        floor_squares: Samples::new(sd),
        floor_pairs: Samples::new(se),
    }
}

struct W3 {
    ours: Samples,
    floor: Samples,
}

fn bench_w3(pool: &Pool, floors: &Floors, calls: usize) -> W3 {
    for n in 0..W3_WARMUP as u64 {
        assert_eq!(pool.apply(square, n).expect("pool.apply"), n * n);
        assert_eq!(floors.ping(n), n * n);
    }
    // Back to back in blocks that alternate between the series, as the `Pipe` round trip in
    // `benches/shared.rs`: interleaved call by call, each series would be timed just after the
    // other woke its own process, on a worker that the other's trip had cooled.
    let (mut sa, mut sb) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for block in 0..calls.div_ceil(W3_BLOCK) {
        let trips = (block * W3_BLOCK) as u64..((block + 1) * W3_BLOCK).min(calls) as u64;
        for n in trips.clone() {
            let (d, v) = time(|| pool.apply(square, n));
            assert_eq!(v.expect("pool.apply"), n * n);
            sa.push(d);
        }
        for n in trips {
            let (d, v) = time(|| floors.ping(n));
            assert_eq!(v, n * n);
            sb.push(d);
        }
    }
    W3 {
        ours: Samples::new(sa),
        floor: Samples::new(sb),
    }
}

struct W4 {
    ours: Samples,
    floor: Samples,
    /// The same bytes as a `Vec<f64>`.
    floats: Samples,
}

fn bench_w4(pool: &Pool, floors: &Floors, iters: usize) -> W4 {
    let data = vec![0u8; W4_BYTES];
    let floats: Vec<f64> = (0..W4_BYTES / 8).map(|i| i as f64 * 0.5).collect();
    let (mut sa, mut sb, mut sc) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..WARMUP + iters {
        // The clone is made before the clock starts: only `apply` is timed.
        let arg = data.clone();
        let (d, v) = time(|| pool.apply(len_of, arg));
        assert_eq!(v.expect("pool.apply"), W4_BYTES as u64);
        let (e, w) = time(|| floors.bulk(&data));
        assert_eq!(w, W4_BYTES as u64);
        let arg = floats.clone();
        let (f, v) = time(|| pool.apply(len_of_f64s, arg));
        assert_eq!(v.expect("pool.apply"), W4_BYTES as u64);
        if i >= WARMUP {
            sa.push(d);
            sb.push(e);
            sc.push(f);
        }
    }
    W4 {
        ours: Samples::new(sa),
        floor: Samples::new(sb),
        floats: Samples::new(sc),
    }
}

struct W5 {
    /// In this process, one thread, over 0..W5_N.
    inproc: Samples,
    /// In this process, two threads taking the 2-worker pool's tasks (8 chunks each) in input
    /// order, as its workers do: what this machine gives two CPU-bound threads right now.
    inproc2: Samples,
    /// CPU time (user + system, every thread) of this process during a 2-worker run: the
    /// parent should sleep while its workers compute.
    parent_cpu: Samples,
    one: Samples,
    two: Samples,
    /// The same over 0..W5_PY_N (for the CPython comparison).
    small_one: Samples,
    small_two: Samples,
    primes: u64,
}

fn prime_chunks(n: u64) -> Vec<(u64, u64)> {
    let step = n.div_ceil(W5_CHUNKS);
    (0..W5_CHUNKS)
        .map(|i| ((i * step).min(n), ((i + 1) * step).min(n)))
        .collect()
}

fn bench_w5(pool1: &Pool, pool2: &Pool, iters: usize) -> W5 {
    let total = |pool: &Pool, n: u64| -> u64 {
        pool.starmap(count_primes, prime_chunks(n))
            .expect("pool.starmap")
            .iter()
            .sum()
    };
    let inproc = |n: u64| -> u64 {
        prime_chunks(n)
            .into_iter()
            .map(|c| count_primes(c.0, c.1))
            .sum()
    };
    // The pool's tasks for 2 workers: Python's default chunksize, ceil(64 / (4 * 2)) chunks.
    let inproc2 = |n: u64| -> u64 {
        let chunks = prime_chunks(n);
        let tasks: Vec<&[(u64, u64)]> = chunks.chunks(chunks.len().div_ceil(8)).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
            let mut sum = 0;
            while let Some(task) =
                tasks.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            {
                sum += task.iter().map(|c| count_primes(c.0, c.1)).sum::<u64>();
            }
            sum
        };
        std::thread::scope(|s| {
            let other = s.spawn(work);
            work() + other.join().expect("prime thread")
        })
    };
    let primes = inproc(W5_N);
    let small = inproc(W5_PY_N);
    assert_eq!(inproc2(W5_N), primes);
    assert_eq!(total(pool1, W5_N), primes);
    assert_eq!(total(pool2, W5_N), primes);
    let mut s: [Vec<Duration>; 7] = Default::default();
    for _ in 0..iters {
        s[0].push(time(|| assert_eq!(inproc(W5_N), primes)).0);
        s[1].push(time(|| assert_eq!(total(pool1, W5_N), primes)).0);
        let cpu = process_cpu();
        s[2].push(time(|| assert_eq!(total(pool2, W5_N), primes)).0);
        s[6].push(process_cpu() - cpu);
        s[5].push(time(|| assert_eq!(inproc2(W5_N), primes)).0);
        s[3].push(time(|| assert_eq!(total(pool1, W5_PY_N), small)).0);
        s[4].push(time(|| assert_eq!(total(pool2, W5_PY_N), small)).0);
    }
    let [a, b, c, d, e, f, g] = s.map(Samples::new);
    W5 {
        inproc: a,
        inproc2: f,
        parent_cpu: g,
        one: b,
        two: c,
        small_one: d,
        small_two: e,
        primes,
    }
}

/// User and system CPU time of this process so far, every thread included.
fn process_cpu() -> Duration {
    // SAFETY: an all-zero `rusage` is valid, and getrusage writes only into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out-pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

// ---------------------------------------------------------------------------------------------
// Memory: the imap phase, in a fresh process

/// VmHWM (peak resident set) of this process, in KiB.
fn vmhwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Runs in the re-executed binary: iterates the imap to the end and prints `name value` lines.
fn imap_rss_phase() {
    let baseline = vmhwm_kib();
    let pool = Pool::builder()
        .processes(2)
        .build()
        .expect("a pool of 2 workers");
    let after_pool = vmhwm_kib();
    let t0 = Instant::now();
    let mut sum: u128 = 0;
    let mut count: u64 = 0;
    for r in pool.imap(square, 0..IMAP_ITEMS).chunksize(IMAP_CHUNKSIZE) {
        sum += u128::from(r.expect("imap item"));
        count += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let peak = vmhwm_kib();
    let n = u128::from(IMAP_ITEMS);
    let expected = (n - 1) * n * (2 * n - 1) / 6;
    println!("imap_items {count}");
    println!(
        "imap_sum_ok {}",
        u8::from(sum == expected && count == IMAP_ITEMS)
    );
    println!("imap_seconds {secs}");
    println!("imap_baseline_kib {baseline}");
    println!("imap_after_pool_kib {after_pool}");
    println!("imap_peak_kib {peak}");
    println!("imap_start_method {}", multiproc::get_start_method());
    pool.close();
    pool.join().expect("pool join");
}

fn run_imap_phase() -> Values {
    let exe = std::env::current_exe().map_err(|err| format!("current_exe: {err}"))?;
    let output = Command::new(&exe)
        .arg(IMAP_RSS)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|err| format!("cannot execute {}: {err}", exe.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} {IMAP_RSS} failed: {}",
            exe.display(),
            output.status
        ));
    }
    Ok(parse_values(&output.stdout))
}

// ---------------------------------------------------------------------------------------------
// Exec: the executor, beside CPython's ProcessPoolExecutor (run by the same script).

/// Submits of the as_completed series.
const EXEC_SUBMITS: u64 = 10_000;

struct Exec {
    /// `submit(square, n).result()` on an executor of 1 worker.
    round_trip: Samples,
    /// `ex.pool().apply(square, n)`: the same executor's pool and worker, in blocks that alternate with the above.
    apply: Samples,
    /// `EXEC_SUBMITS` submits, then `as_completed` over them, on 2 workers.
    submits: Samples,
    cpython: Values,
}

fn bench_exec(iters: &Iters) -> Exec {
    use multiproc::executor::as_completed;
    use multiproc::Executor;

    let one = Executor::new(1).expect("an executor of 1 worker");
    for n in 0..W3_WARMUP as u64 {
        assert_eq!(one.submit(square, n).result().expect("result"), n * n);
        assert_eq!(one.pool().apply(square, n).expect("pool.apply"), n * n);
    }
    let calls = iters.w3;
    let (mut rt, mut apply) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    // In blocks that alternate between the two, as W3 (see `bench_w3`).
    for block in 0..calls.div_ceil(W3_BLOCK) {
        let trips = (block * W3_BLOCK) as u64..((block + 1) * W3_BLOCK).min(calls) as u64;
        for n in trips.clone() {
            let (d, v) = time(|| one.submit(square, n).result());
            assert_eq!(v.expect("result"), n * n);
            rt.push(d);
        }
        for n in trips {
            let (d, v) = time(|| one.pool().apply(square, n));
            assert_eq!(v.expect("pool.apply"), n * n);
            apply.push(d);
        }
    }
    drop(one);

    let two = Executor::new(2).expect("an executor of 2 workers");
    let series = || {
        let futures: Vec<_> = (0..EXEC_SUBMITS).map(|n| two.submit(square, n)).collect();
        let total: u64 = as_completed(&futures, None)
            .map(|f| f.and_then(|f| f.result()).expect("result"))
            .sum();
        assert_eq!(total, (0..EXEC_SUBMITS).map(|n| n * n).sum::<u64>());
    };
    for _ in 0..WARMUP {
        series();
    }
    let runs = iters.w5.max(3);
    let submits = (0..runs).map(|_| time(series).0).collect();
    drop(two);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pool_cpython.py");
    let args = [
        "exec",
        &calls.to_string(),
        &EXEC_SUBMITS.to_string(),
        &runs.to_string(),
    ];
    Exec {
        round_trip: Samples::new(rt),
        apply: Samples::new(apply),
        submits: Samples::new(submits),
        cpython: run_cpython(script, &args.map(String::from)),
    }
}

fn print_exec(e: &Exec) {
    let py = |name: &str| value::<f64>(&e.cpython, name);
    let (rt, apply, submits) = (e.round_trip.median(), e.apply.median(), e.submits.median());
    let (py_rt, py_submits) = (py("exec_round_trip_s"), py("exec_submits_s"));
    let x_py = |p: Option<f64>, ours: f64| p.map_or("n/a".to_string(), |p| ratio(p / ours));
    let verdict = |p: Option<f64>, ours: f64| p.map_or("n/a", |p| met(p / ours >= 20.0));
    println!();
    println!(
        "{:<44} {:>12} {:>12} {:>10} {:>12} {:>9}  target",
        "Executor (ProcessPoolExecutor)",
        "multiproc",
        "pool.apply",
        "x apply",
        "CPython",
        "x faster"
    );
    println!(
        "{:<44} {:>12} {:>12} {:>10} {:>12} {:>9}  >= 20x CPython: {}; <= 1.5x apply: {}",
        "submit().result() round trip, 1 worker",
        us(rt),
        us(apply),
        ratio(rt / apply),
        py_rt.map_or("n/a".to_string(), us),
        x_py(py_rt, rt),
        verdict(py_rt, rt),
        met(rt / apply <= 1.5),
    );
    println!(
        "{:<44} {:>12} {:>12} {:>10} {:>12} {:>9}  >= 20x CPython: {}",
        format!("{EXEC_SUBMITS} submits + as_completed, 2 workers"),
        ms(submits),
        "-",
        "-",
        py_submits.map_or("n/a".to_string(), ms),
        x_py(py_submits, submits),
        verdict(py_submits, submits),
    );
    println!(
        "  round trip: min / median / p90 {} (apply {}); submits: {} runs, min / median / p90 {}",
        e.round_trip.spread(&us),
        e.apply.spread(&us),
        e.submits.0.len(),
        e.submits.spread(&ms)
    );
    if let Err(err) = &e.cpython {
        println!("  CPython: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// CPython

fn cpython(iters: &Iters) -> Values {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pool_cpython.py");
    run_cpython(
        script,
        &[
            iters.w2,
            iters.w3,
            iters.w4,
            iters.w5,
            W5_PY_N as usize,
            W5_CHUNKS as usize,
        ]
        .map(|n| n.to_string()),
    )
}

// ---------------------------------------------------------------------------------------------
// The report

fn mbps(secs: f64) -> String {
    format!("{:.0} MB/s", W4_BYTES as f64 / secs / 1e6)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

struct Report {
    iters: Iters,
    method: &'static str,
    w2: Option<W2>,
    w2s: Option<W2s>,
    w3: Option<W3>,
    w4: Option<W4>,
    w5: Option<W5>,
    imap: Values,
    cpython: Values,
}

/// One line of the table; `None` prints as "n/a".
struct Line {
    name: String,
    ours: String,
    floor: String,
    x_floor: Option<f64>,
    cpython: Option<String>,
    py_ratio: Option<f64>,
    target: String,
}

impl Line {
    /// The line of a workload that `MULTIPROC_BENCH_ONLY` left out.
    fn skipped(name: String) -> Line {
        Line {
            name,
            ours: "skipped".into(),
            floor: "-".into(),
            x_floor: None,
            cpython: None,
            py_ratio: None,
            target: "-".into(),
        }
    }
}

fn na(v: Option<String>) -> String {
    v.unwrap_or_else(|| "n/a".to_string())
}

fn print_report(r: &Report) {
    let py = |name: &str| value::<f64>(&r.cpython, name);
    let py_method: Option<String> = value(&r.cpython, "start_method");

    let w2_py = py("w2_map_s");
    let w3_py = py("w3_apply_s");
    let w4_py = py("w4_apply_s");
    let (w5_py1, w5_py2) = (py("w5_1_s"), py("w5_2_s"));
    let peak: Option<u64> = value(&r.imap, "imap_peak_kib");
    let imap_secs: Option<f64> = value(&r.imap, "imap_seconds");

    let mut lines = Vec::new();
    let w2_name = "W2 map 1M squares, 2 workers".to_string();
    lines.push(match &r.w2 {
        None => Line::skipped(w2_name),
        Some(w) => {
            let w2 = (w.ours.median(), w.floor.median());
            let w2_py_ok = w2_py.map_or("n/a", |p| met(p / w2.0 >= 25.0));
            Line {
                name: w2_name,
                ours: ms(w2.0),
                floor: ms(w2.1),
                x_floor: Some(w2.0 / w2.1),
                cpython: w2_py.map(ms),
                py_ratio: w2_py.map(|p| p / w2.0),
                target: format!(
                    "<= 3x floor: {}; >= 25x CPython: {w2_py_ok}",
                    met(w2.0 / w2.1 <= 3.0)
                ),
            }
        }
    });
    let w2s_name = "W2s map 1M serde pairs vs u64s, 2 workers".to_string();
    let w2s_py = py("w2s_map_s");
    lines.push(match &r.w2s {
        None => Line::skipped(w2s_name),
        Some(w) => {
            let (pairs, squares) = (w.pairs.median(), w.squares.median());
            Line {
                name: w2s_name,
                ours: ms(pairs),
                floor: ms(squares),
                x_floor: Some(pairs / squares),
                cpython: w2s_py.map(ms),
                py_ratio: w2s_py.map(|p| p / pairs),
                target: format!("<= 1.5x the u64 map: {}", met(pairs / squares <= 1.5)),
            }
        }
    });
    let w2p_name = "W2s map 1M Pod pairs vs u64s, 2 workers".to_string();
    lines.push(match &r.w2s {
        None => Line::skipped(w2p_name),
        Some(w) => {
            let (pairs, squares) = (w.pod_pairs.median(), w.squares.median());
            Line {
                name: w2p_name,
                ours: ms(pairs),
                floor: ms(squares),
                x_floor: Some(pairs / squares),
                cpython: None,
                py_ratio: None,
                target: "-".into(),
            }
        }
    });
    let w2f_name = "W2s floor: 1M pairs' bytes vs 1M u64s".to_string();
    lines.push(match &r.w2s {
        None => Line::skipped(w2f_name),
        Some(w) => {
            let (pairs, squares) = (w.floor_pairs.median(), w.floor_squares.median());
            Line {
                name: w2f_name,
                ours: ms(pairs),
                floor: ms(squares),
                x_floor: Some(pairs / squares),
                cpython: None,
                py_ratio: None,
                target: "- (the raw socketpairs' own ratio)".into(),
            }
        }
    });
    let w3_name = "W3 apply round trip, 1 worker".to_string();
    lines.push(match &r.w3 {
        None => Line::skipped(w3_name),
        Some(w) => {
            let w3 = (w.ours.median(), w.floor.median());
            Line {
                name: w3_name,
                ours: us(w3.0),
                floor: us(w3.1),
                x_floor: Some(w3.0 / w3.1),
                cpython: w3_py.map(us),
                py_ratio: w3_py.map(|p| p / w3.0),
                target: format!(
                    "<= 2 us: {}; < floor: {}",
                    met(w3.0 <= 2e-6),
                    met(w3.0 < w3.1)
                ),
            }
        }
    });
    let w4_name = "W4 apply 64 MiB Vec<u8>, 1 worker".to_string();
    lines.push(match &r.w4 {
        None => Line::skipped(w4_name),
        Some(w) => {
            let w4 = (w.ours.median(), w.floor.median());
            Line {
                name: w4_name,
                ours: mbps(w4.0),
                floor: mbps(w4.1),
                x_floor: Some(w4.0 / w4.1),
                cpython: w4_py.map(mbps),
                py_ratio: w4_py.map(|p| p / w4.0),
                target: format!(">= floor MB/s: {}", met(w4.0 <= w4.1)),
            }
        }
    });
    let w4f_name = "W4 apply 64 MiB Vec<f64>, 1 worker".to_string();
    lines.push(match &r.w4 {
        None => Line::skipped(w4f_name),
        Some(w) => {
            let w4 = (w.floats.median(), w.floor.median());
            Line {
                name: w4f_name,
                ours: mbps(w4.0),
                floor: mbps(w4.1),
                x_floor: Some(w4.0 / w4.1),
                cpython: None,
                py_ratio: None,
                target: format!(">= floor MB/s: {}", met(w4.0 <= w4.1)),
            }
        }
    });
    let w5_names = [
        format!("W5 primes N={W5_N}, 1 worker"),
        format!("W5 primes N={W5_N}, 2 workers"),
        "W5 speed-up, 2 vs 1 worker".to_string(),
        "W5 same tasks on 2 threads vs 1, in-process".to_string(),
        format!("W5 primes N={W5_PY_N}, 1 worker"),
        format!("W5 primes N={W5_PY_N}, 2 workers"),
    ];
    match &r.w5 {
        None => lines.extend(w5_names.map(Line::skipped)),
        Some(w) => {
            let w5 = (w.one.median(), w.two.median(), w.inproc.median());
            let w5_speedup = w5.0 / w5.1;
            let w5s = (w.small_one.median(), w.small_two.median());
            let [one, two, speedup, threads, small_one, small_two] = w5_names;
            let threads_speedup = w5.2 / w.inproc2.median();
            lines.extend([
                Line {
                    name: one,
                    ours: ms(w5.0),
                    floor: ms(w5.2),
                    x_floor: Some(w5.0 / w5.2),
                    cpython: None,
                    py_ratio: None,
                    target: "-".into(),
                },
                Line {
                    name: two,
                    ours: ms(w5.1),
                    floor: ms(w5.2 / 2.0),
                    x_floor: Some(w5.1 / (w5.2 / 2.0)),
                    cpython: None,
                    py_ratio: None,
                    target: "-".into(),
                },
                Line {
                    name: speedup,
                    ours: ratio(w5_speedup),
                    floor: "2.00x".into(),
                    x_floor: None,
                    cpython: w5_py1.zip(w5_py2).map(|(a, b)| ratio(a / b)),
                    py_ratio: None,
                    target: format!(">= 1.8x: {}", met(w5_speedup >= 1.8)),
                },
                Line {
                    name: threads,
                    ours: ratio(threads_speedup),
                    floor: "2.00x".into(),
                    x_floor: None,
                    cpython: None,
                    py_ratio: None,
                    target: "(this machine, now)".into(),
                },
                Line {
                    name: small_one,
                    ours: ms(w5s.0),
                    floor: "-".into(),
                    x_floor: None,
                    cpython: w5_py1.map(ms),
                    py_ratio: w5_py1.map(|p| p / w5s.0),
                    target: "-".into(),
                },
                Line {
                    name: small_two,
                    ours: ms(w5s.1),
                    floor: "-".into(),
                    x_floor: None,
                    cpython: w5_py2.map(ms),
                    py_ratio: w5_py2.map(|p| p / w5s.1),
                    target: "-".into(),
                },
            ]);
        }
    }
    lines.push(Line {
        name: "imap 10M squares, chunksize 1000: peak RSS".into(),
        ours: na(peak.map(mib)),
        floor: na(value(&r.imap, "imap_baseline_kib").map(mib)),
        x_floor: None,
        cpython: None,
        py_ratio: None,
        target: format!("< 64 MiB: {}", peak.map_or("n/a", |p| met(p < 64 * 1024))),
    });

    println!();
    println!(
        "Pool benchmark ({}-core machine; compare within one run only). Start method: multiproc {}, CPython {}.",
        multiproc::cpu_count(),
        r.method,
        na(py_method)
    );
    println!(
        "{:<42} {:>10} {:>10} {:>8} {:>10} {:>8}  target met?",
        "workload", "multiproc", "floor", "x floor", "CPython", "CPy/mp"
    );
    for l in &lines {
        println!(
            "{:<42} {:>10} {:>10} {:>8} {:>10} {:>8}  {}",
            l.name,
            l.ours,
            l.floor,
            na(l.x_floor.map(ratio)),
            na(l.cpython.clone()),
            na(l.py_ratio.map(ratio)),
            l.target
        );
    }

    println!(
        "x floor = multiproc time / floor time (W4: floor MB/s / multiproc MB/s); CPy/mp = CPython time / multiproc time (> 1: multiproc is faster)."
    );
    println!("details:");
    if let Some(w) = &r.w2 {
        let w2 = (w.ours.median(), w.floor.median());
        println!(
            "  W2: pool.map(square, 0..{W2_ITEMS}) on a pool of 2 made once, default chunks ({} of {}); median of {} after {WARMUP} warm-up runs.",
            W2_ITEMS.div_ceil(W2_ITEMS.div_ceil(8)),
            W2_ITEMS.div_ceil(8),
            r.iters.w2
        );
        println!(
            "      floor: 2 forked children, each streamed its half as raw LE u64s over a socketpair and streams the squares back (parent polls both)."
        );
        println!(
            "      CPython: Pool(2).map(square, range({W2_ITEMS})). x floor {}; CPython / multiproc {}.",
            ratio(w2.0 / w2.1),
            na(w2_py.map(|p| ratio(p / w2.0)))
        );
    }
    if r.w2s.is_some() {
        println!(
            "  W2s: pool.map(square_pair, pairs) over 1M `#[derive(Serialize, Deserialize)] struct Pair {{ a: u64, b: u64 }}` (made by an iterator inside the clock, as W2's range), alternated with W2's u64 map on the same pool; the \"floor\" column is that u64 map. CPython: Pool(2).map over 1M instances of a two-int class with __slots__. Its floor line: W2's socketpair floor over 2M numbers (the bytes of 1M pairs each way, each number squared as a pair's are) against the same floor over 1M, into buffers made once (no fresh pages), alternated with each other after the maps: what raw transport gives for twice the bytes."
        );
    }
    if r.w3.is_some() {
        println!(
            "  W3: {} sequential pool.apply(square, n) on a pool of 1 after {W3_WARMUP} warm-up calls, median per call; floor: 8-byte ping-pong over 2 pipes with a forked child; back to back in blocks of {W3_BLOCK} that alternate between the two.",
            r.iters.w3
        );
        if let (Some(min), Some(p90)) = (py("w3_apply_min_s"), py("w3_apply_p90_s")) {
            println!(
                "      CPython W3 min / median / p90: {} / {} / {} (bimodal: a GIL hand-off between its pool's handler threads can wait up to the 5 ms switch interval).",
                us(min),
                na(w3_py.map(us)),
                us(p90)
            );
        }
    }
    if r.w4.is_some() {
        println!(
            "  W4: pool.apply(len_of, v) with v: Vec<u8> of 64 MiB on the pool of 1; median of {} after {WARMUP} warm-up runs. The clone of v is made OUTSIDE the timed region. The Vec<f64> row: pool.apply(len_of_f64s, v) with 8M f64s (64 MiB), timed the same way.",
            r.iters.w4
        );
        println!(
            "      MB/s = 64 MiB (67108864 bytes) / median time, in 10^6 bytes/s. floor: 64 MiB written into a socketpair, a forked child reads it into a reused buffer and answers 8 bytes. CPython: apply(len, (b'\\0' * 64 MiB,))."
        );
    }
    if let Some(w) = &r.w5 {
        println!(
            "  W5: count_primes(lo, hi) by trial division over 64 (lo, hi) chunks with pool.starmap (default chunksize: 16 for 1 worker, 8 for 2); median of {} runs. {} primes below {W5_N}.",
            r.iters.w5,
            w.primes
        );
        println!(
            "      floor: the same 64 chunks in this process on one thread (/2 for the ideal 2-worker time). CPython runs N={W5_PY_N} (pure-Python trial division is ~50x slower), so multiproc is also run at that N for the ratio."
        );
        println!(
            "      in-process 2 threads: the 2-worker pool's 8 tasks of 8 chunks, taken in input order by two threads of this process (the pool's schedule without processes). CPU time of this process (all threads) during a 2-worker run: median {}.",
            ms(w.parent_cpu.median())
        );
    }
    match &r.imap {
        Ok(_) => println!(
            "  imap: parent VmHWM after iterating pool.imap(square, 0..{IMAP_ITEMS}).chunksize({IMAP_CHUNKSIZE}) to the end on a pool of 2 ({}), in a re-executed `{IMAP_RSS}` process: {} (baseline before the pool {}, after starting it {}); took {}; sum {}.",
            na(value(&r.imap, "imap_start_method")),
            na(peak.map(mib)),
            na(value(&r.imap, "imap_baseline_kib").map(mib)),
            na(value(&r.imap, "imap_after_pool_kib").map(mib)),
            na(imap_secs.map(ms)),
            if value::<u8>(&r.imap, "imap_sum_ok") == Some(1) { "correct" } else { "WRONG" },
        ),
        Err(why) => println!("  imap: n/a: {why}"),
    }
    println!("spread (min / median / p90):");
    type Unit = fn(f64) -> String;
    let mut rows: Vec<(&str, &Samples, Unit)> = Vec::new();
    if let Some(w) = &r.w2 {
        rows.extend([
            ("W2 multiproc", &w.ours, ms as Unit),
            ("W2 floor", &w.floor, ms),
        ]);
    }
    if let Some(w) = &r.w2s {
        rows.extend([
            ("W2s u64 map", &w.squares, ms as Unit),
            ("W2s pair map", &w.pairs, ms),
            ("W2s Pod pair map", &w.pod_pairs, ms),
            ("W2s floor 1M u64s", &w.floor_squares, ms),
            ("W2s floor 2M u64s", &w.floor_pairs, ms),
        ]);
    }
    if let Some(w) = &r.w3 {
        rows.extend([
            ("W3 multiproc", &w.ours, us as Unit),
            ("W3 floor", &w.floor, us),
        ]);
    }
    if let Some(w) = &r.w4 {
        rows.extend([
            ("W4 multiproc (time)", &w.ours, ms as Unit),
            ("W4 floor (time)", &w.floor, ms),
            ("W4 Vec<f64> (time)", &w.floats, ms),
        ]);
    }
    if let Some(w) = &r.w5 {
        rows.extend([
            ("W5 in-process", &w.inproc, ms as Unit),
            ("W5 in-process 2 thr", &w.inproc2, ms),
            ("W5 parent CPU, 2 wkr", &w.parent_cpu, ms),
            ("W5 1 worker", &w.one, ms),
            ("W5 2 workers", &w.two, ms),
            ("W5 small 2 workers", &w.small_two, ms),
        ]);
    }
    for (name, s, unit) in rows {
        println!("  {name:<22} {}", s.spread(&unit));
    }
    if let Err(why) = &r.cpython {
        println!("note: CPython columns are n/a: {why}");
    }
}
