//! Channels, locks and shared state: `Queue` throughput, `Pipe` round trip, uncontended
//! `Lock`, a contended `Value` counter and zero-copy `SharedMemory` through a pool, against
//! raw floors (forked children on bare pipes, sockets and pthread mutexes) and against CPython
//! 3.11's `multiprocessing`, all measured in one run and printed as one table. Reports the
//! targets; never fails on them.
//!
//! ```text
//! cargo bench --bench shared
//! MULTIPROC_BENCH_ITERS=3 cargo bench --bench shared   # quick run: 3 iterations of everything
//! ```
//!
//! Start method: fork, on both sides (the issue's CPython figures were measured with fork).
//!
//! * Queue: one producer process puts `QUEUE_ITEMS` `u64`s into a `Queue<u64>`, this process
//!   gets them; timed from the go signal to the last item. Floor: a forked child writes as
//!   many 8-byte records into a `SOCK_SEQPACKET` socketpair, this process reads them: one
//!   kernel record per item, the ceiling of `Queue`'s previous transport. `Queue` now copies
//!   its items through a shared-memory ring (the socket only carries items with descriptors
//!   and spilled ones); there is no raw ring floor here, so the ratio to this floor is below
//!   1.
//! * Pipe: a `u64` ping-pong over a duplex `Pipe` with an echoing child, per round trip.
//!   Floor: an 8-byte ping-pong over two pipes with a forked child (and, for reference, over a
//!   `SOCK_SEQPACKET` socketpair, `Pipe`'s previous transport). Each series runs its trips
//!   back to back, in blocks of `PIPE_BLOCK` that alternate between the series. Then the
//!   peer-asleep case: trips interleaved one by one, each after a busy gap of `PIPE_GAP`
//!   (longer than the 20 us a `Pipe` end spins before it sleeps on a futex), so that every
//!   echo child, ours and the floor's, is asleep when its trip starts.
//! * Lock: `lock.acquire()` and the guard's drop, `LOCK_LOOP` times in this process, per
//!   pair. Floor: `pthread_mutex_lock` / `unlock` of glibc's robust, process-shared,
//!   error-checking mutex (what `Lock` was built on before its own futex mutex; the kernel
//!   reports a dead owner), and `std::sync::Mutex` (not robust, not shared) for reference.
//! * Counter: 4 processes x 50_000 `*counter.lock()? += 1` on a `Value<i64>`, from the first
//!   start to the last join. Floor: 4 forked children doing the same on a raw robust mutex and
//!   an `i64` in a shared anonymous mapping.
//! * W4 zero-copy: `pool.apply(touch_len, shm)` with a 64 MiB `SharedMemory` on a 1-worker
//!   pool (the worker maps it, reads a byte of every page and returns its length), in MB/s.
//!   Floor: 64 MiB written into a socketpair, read by a forked child into a reused buffer, 8
//!   bytes back (as in `benches/pool.rs`). Also the reverse (a worker creates, fills and returns
//!   a 64 MiB segment; this process reads a byte of every page) and, for reference,
//!   `pool.apply(len_of, <64 MiB Vec<u8>>)`.

mod common;

use std::cell::UnsafeCell;
use std::fs::File;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{
    forced_iters, fork_raw, met, ms, pipe, ratio, read_all_or_eof, run_cpython, time, us, value,
    Samples, Values,
};
use multiproc::{
    process, Connection, Event, Lock, Pipe, Pool, Process, Queue, SharedMemory, StartMethod, Value,
};

/// The start method of every child and of the pool, here and in CPython.
const METHOD: StartMethod = StartMethod::Fork;

const QUEUE_ITEMS: u64 = 200_000;
const LOCK_LOOP: u64 = 10_000_000;
const COUNTER_PROCS: usize = 4;
const COUNTER_INCS: u32 = 50_000;
const SHM_BYTES: usize = 64 << 20;
const PAGE: usize = 4096;
/// The byte every 64 MiB buffer and segment is filled with.
const FILL: u8 = 7;

/// Iteration counts when `MULTIPROC_BENCH_ITERS` is not set.
#[derive(Debug, Clone, Copy)]
struct Iters {
    /// Queue runs of `QUEUE_ITEMS` items.
    queue: usize,
    /// Pipe round trips.
    pipe: usize,
    /// Lock runs of `LOCK_LOOP` pairs.
    lock: usize,
    /// Counter runs.
    counter: usize,
    /// 64 MiB transfers of each kind.
    shm: usize,
}

const DEFAULT_ITERS: Iters = Iters {
    queue: 5,
    pipe: 20_000,
    lock: 5,
    counter: 5,
    shm: 10,
};

/// Untimed runs before each series (the pipe has its own, larger, warm-up).
const WARMUP: usize = 1;
const PIPE_WARMUP: usize = 1000;

#[process]
fn producer(q: Queue<u64>, ready: Event, go: Event, n: u64) {
    ready.set();
    go.wait().expect("producer: go.wait");
    for i in 0..n {
        q.put(i).expect("producer: put");
    }
}

#[process]
fn echo(conn: Connection<u64, u64>) {
    // Ends when the parent drops its end.
    while let Ok(n) = conn.recv() {
        if conn.send(n).is_err() {
            break;
        }
    }
}

#[process]
fn count(counter: Value<i64>, n: u32) {
    for _ in 0..n {
        *counter.lock().expect("count: lock") += 1;
    }
}

/// Maps the segment, reads one byte of every page, returns its length.
#[process]
fn touch_len(shm: SharedMemory) -> u64 {
    // SAFETY: nobody writes the segment while a task holds it (the parent waits for the result).
    let bytes = unsafe { shm.as_slice() };
    let sum = page_sum(bytes);
    assert_eq!(sum, u64::from(FILL) * (bytes.len() / PAGE) as u64);
    shm.len() as u64
}

/// Creates a segment of `len` bytes, fills it, and returns it (as its descriptor).
#[process]
fn fill_new(len: usize) -> SharedMemory {
    let shm = SharedMemory::new(len).expect("fill_new: SharedMemory::new");
    // SAFETY: the segment was just made here: no other handle, in any process, exists yet.
    unsafe { shm.as_mut_slice() }.fill(FILL);
    shm
}

#[process]
fn len_of(v: Vec<u8>) -> u64 {
    v.len() as u64
}

/// The sum of the first byte of every page: touches (maps) every page once.
fn page_sum(bytes: &[u8]) -> u64 {
    black_box(bytes.iter().step_by(PAGE).map(|&b| u64::from(b)).sum())
}

fn main() {
    multiproc::init();
    // Only the parent gets here (init() runs spawn and fork-server children and never returns
    // in them). Any other argument (cargo bench passes `--bench`) is ignored.

    let iters = iterations();
    // The raw floors' children are forked first, while this process has no pool (and no
    // thread); they serve every floor measurement and are reaped at the end.
    let floors = Floors::fork();

    eprintln!(
        "queue: {} runs of {QUEUE_ITEMS} items ({METHOD}) ...",
        iters.queue
    );
    let queue = bench_queue(&floors, iters.queue);
    eprintln!("pipe: {} round trips ...", iters.pipe);
    let pipe = bench_pipe(&floors, iters.pipe);
    eprintln!("lock: {} runs of {LOCK_LOOP} pairs ...", iters.lock);
    let lock = bench_lock(iters.lock);
    eprintln!(
        "counter: {} runs of {COUNTER_PROCS} x {COUNTER_INCS} ...",
        iters.counter
    );
    let counter = bench_counter(iters.counter);
    eprintln!("W4: 64 MiB transfers, {} runs of each ...", iters.shm);
    let shm = bench_shm(&floors, iters.shm);

    floors.reap();

    eprintln!("CPython ...");
    let cpython = cpython(&iters);

    print_report(&Report {
        iters,
        queue,
        pipe,
        lock,
        counter,
        shm,
        cpython,
    });
}

fn iterations() -> Iters {
    match forced_iters() {
        Some(n) => Iters {
            queue: n,
            pipe: n,
            lock: n,
            counter: n,
            shm: n,
        },
        None => DEFAULT_ITERS,
    }
}

// ---------------------------------------------------------------------------------------------
// Samples

// ---------------------------------------------------------------------------------------------
// The raw floors: children forked before any pool, speaking bare bytes.

fn wait_ok(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out-pointer.
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(reaped, pid, "waitpid: {}", io::Error::last_os_error());
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// A `SOCK_SEQPACKET` socketpair (one `write` is one record, one `read` takes one), both ends
/// with the largest send buffer allowed, as multiproc's channels have.
fn seqpacket_pair() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two descriptors.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", io::Error::last_os_error());
    for fd in fds {
        let size: libc::c_int = 64 << 20;
        // SAFETY: a valid socket and a valid pointer to an int of the given size. The kernel
        // caps the request at `2 * net.core.wmem_max`; a refusal leaves the default.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

/// Queue floor child: for each 8-byte request `n`, writes `n` 8-byte records (0..n).
fn stream_child(mut sock: File) {
    let mut header = [0u8; 8];
    while read_all_or_eof(&mut sock, &mut header) {
        for i in 0..u64::from_le_bytes(header) {
            sock.write_all(&i.to_le_bytes())
                .expect("stream child write");
        }
    }
}

/// Pipe floor child: answers every 8-byte message with the same 8 bytes.
fn ping_child(mut from_parent: File, mut to_parent: File) {
    let mut buf = [0u8; 8];
    while read_all_or_eof(&mut from_parent, &mut buf) {
        to_parent.write_all(&buf).expect("ping child write");
    }
}

/// W4 floor child: for each 16-byte request `(op, len)`: op 0, reads `len` bytes into a buffer
/// it reuses and answers the length in 8 bytes; op 1, writes `len` bytes of a buffer it reuses.
fn bulk_child(mut sock: UnixStream) {
    let mut buf = vec![FILL; SHM_BYTES];
    let mut header = [0u8; 16];
    while read_all_or_eof(&mut sock, &mut header) {
        let op = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(header[8..].try_into().expect("8 bytes")) as usize;
        if buf.len() < len {
            buf.resize(len, FILL);
        }
        if op == 0 {
            assert!(read_all_or_eof(&mut sock, &mut buf[..len]));
            sock.write_all(&(len as u64).to_le_bytes())
                .expect("bulk child write");
        } else {
            sock.write_all(&buf[..len]).expect("bulk child write");
        }
    }
}

struct Floors {
    /// Queue: the child and the parent's end of a seqpacket pair.
    stream: (libc::pid_t, File),
    /// Pipe: the child, the parent's write end, the parent's read end.
    ping: (libc::pid_t, File, File),
    /// Pipe, for reference: the same over a seqpacket pair (the child, the parent's end).
    seqping: (libc::pid_t, File),
    /// W4.
    bulk: (libc::pid_t, UnixStream),
}

impl Floors {
    fn fork() -> Floors {
        // Descriptors of the parent the next child must not keep open (or it would hold the
        // other children's ends open past the parent's close).
        let mut parents: Vec<RawFd> = Vec::new();

        let (mine, theirs) = seqpacket_pair();
        let pid = fork_raw(&[mine.as_raw_fd()], move || stream_child(theirs));
        parents.push(mine.as_raw_fd());
        let stream = (pid, mine);

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

        let (mine, theirs) = seqpacket_pair();
        let close = [parents.clone(), vec![mine.as_raw_fd()]].concat();
        let pid = fork_raw(&close, move || {
            let reader = theirs.try_clone().expect("dup");
            ping_child(reader, theirs)
        });
        parents.push(mine.as_raw_fd());
        let seqping = (pid, mine);

        let (mine, theirs) = UnixStream::pair().expect("socketpair");
        let close = [parents, vec![mine.as_raw_fd()]].concat();
        let pid = fork_raw(&close, move || bulk_child(theirs));
        Floors {
            stream,
            ping,
            seqping,
            bulk: (pid, mine),
        }
    }

    /// Closes the parent's ends (the children see end of file and exit) and reaps them.
    fn reap(self) {
        let pids = [self.stream.0, self.ping.0, self.seqping.0, self.bulk.0];
        drop(self);
        for pid in pids {
            if !wait_ok(pid) {
                eprintln!("warning: floor child {pid} did not exit cleanly");
            }
        }
    }

    /// Queue floor: `n` records from the stream child; the last one.
    fn stream(&self, n: u64) -> u64 {
        let mut sock = &self.stream.1;
        sock.write_all(&n.to_le_bytes()).expect("stream write");
        let mut buf = [0u8; 8];
        for _ in 0..n {
            assert_eq!(sock.read(&mut buf).expect("stream read"), 8);
        }
        u64::from_le_bytes(buf)
    }

    /// Pipe floor: one 8-byte round trip over two pipes.
    fn ping(&self, n: u64) -> u64 {
        let (mut to_child, mut from_child) = (&self.ping.1, &self.ping.2);
        to_child.write_all(&n.to_le_bytes()).expect("ping write");
        let mut buf = [0u8; 8];
        assert!(
            read_all_or_eof(&mut from_child, &mut buf),
            "ping child gone"
        );
        u64::from_le_bytes(buf)
    }

    /// Pipe reference: one 8-byte round trip over a seqpacket pair.
    fn seqping(&self, n: u64) -> u64 {
        let mut sock = &self.seqping.1;
        sock.write_all(&n.to_le_bytes()).expect("seqping write");
        let mut buf = [0u8; 8];
        assert_eq!(sock.read(&mut buf).expect("seqping read"), 8);
        u64::from_le_bytes(buf)
    }

    /// W4 floor: `data` to the bulk child, 8 bytes back.
    fn bulk_send(&self, data: &[u8]) -> u64 {
        let mut sock = &self.bulk.1;
        let mut header = [0u8; 16];
        header[8..].copy_from_slice(&(data.len() as u64).to_le_bytes());
        sock.write_all(&header).expect("bulk write");
        sock.write_all(data).expect("bulk write");
        let mut buf = [0u8; 8];
        assert!(read_all_or_eof(&mut sock, &mut buf), "bulk child gone");
        u64::from_le_bytes(buf)
    }

    /// W4 reverse floor: `buf.len()` bytes from the bulk child, into `buf`.
    fn bulk_recv(&self, buf: &mut [u8]) {
        let mut sock = &self.bulk.1;
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(&1u64.to_le_bytes());
        header[8..].copy_from_slice(&(buf.len() as u64).to_le_bytes());
        sock.write_all(&header).expect("bulk write");
        assert!(read_all_or_eof(&mut sock, buf), "bulk child gone");
    }
}

/// A robust, process-shared, error-checking `pthread_mutex_t` (what multiproc's `Lock` was
/// built on before its own futex mutex) and an `i64`, in a shared anonymous mapping of one page: forked children share it.
#[repr(C)]
struct RawShared {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    value: UnsafeCell<i64>,
}

struct RawPage(*mut RawShared);

impl RawPage {
    fn new() -> RawPage {
        // SAFETY: a new anonymous shared mapping of one page; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
        let shared = p.cast::<RawShared>();
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is initialized before the setters use it and destroyed after; the
        // mutex is in the fresh (zeroed, page-aligned) mapping that nobody else uses yet.
        unsafe {
            let a = attr.as_mut_ptr();
            assert_eq!(libc::pthread_mutexattr_init(a), 0);
            assert_eq!(
                libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED),
                0
            );
            assert_eq!(
                libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST),
                0
            );
            assert_eq!(
                libc::pthread_mutexattr_settype(a, libc::PTHREAD_MUTEX_ERRORCHECK),
                0
            );
            assert_eq!(libc::pthread_mutex_init((*shared).mutex.get(), a), 0);
            libc::pthread_mutexattr_destroy(a);
        }
        RawPage(shared)
    }

    /// Lock, `op` on the value, unlock: the raw counterpart of `*value.lock()? += 1`.
    fn with_lock(&self, op: impl FnOnce(&mut i64)) {
        // SAFETY: an initialized mutex in a live mapping; the value is only touched under it.
        unsafe {
            let m = (*self.0).mutex.get();
            assert_eq!(libc::pthread_mutex_lock(m), 0);
            op(&mut *(*self.0).value.get());
            assert_eq!(libc::pthread_mutex_unlock(m), 0);
        }
    }

    fn value(&self) -> i64 {
        let mut v = 0;
        self.with_lock(|x| v = *x);
        v
    }
}

impl Drop for RawPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; nothing refers to it any more.
        unsafe { libc::munmap(self.0.cast(), PAGE) };
    }
}

// ---------------------------------------------------------------------------------------------
// The workloads

struct QueueResult {
    ours: Samples,
    floor: Samples,
}

fn bench_queue(floors: &Floors, runs: usize) -> QueueResult {
    let q = Queue::<u64>::new().expect("Queue::new");
    let ours = || -> Duration {
        let (ready, go) = (
            Event::new().expect("Event::new"),
            Event::new().expect("Event::new"),
        );
        let p = Process::new(
            producer,
            (q.clone(), ready.clone(), go.clone(), QUEUE_ITEMS),
        )
        .with_start_method(METHOD);
        p.start().expect("producer start");
        ready.wait().expect("ready.wait");
        let (d, last) = time(|| {
            go.set();
            let mut last = 0;
            for _ in 0..QUEUE_ITEMS {
                last = q.get().expect("get");
            }
            last
        });
        assert_eq!(last, QUEUE_ITEMS - 1);
        assert_eq!(p.join().expect("producer join"), 0);
        d
    };
    let floor = || -> Duration {
        let (d, last) = time(|| floors.stream(QUEUE_ITEMS));
        assert_eq!(last, QUEUE_ITEMS - 1);
        d
    };
    for _ in 0..WARMUP {
        ours();
        floor();
    }
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        sa.push(ours());
        sb.push(floor());
    }
    QueueResult {
        ours: Samples::new(sa),
        floor: Samples::new(sb),
    }
}

struct PipeResult {
    /// Back-to-back ping-pong, in alternating blocks.
    ours: Samples,
    floor: Samples,
    seqpacket: Samples,
    /// Each trip after an idle gap: the echo child has gone to sleep.
    asleep: Samples,
    asleep_floor: Samples,
}

/// Trips per block of the back-to-back ping-pong.
const PIPE_BLOCK: usize = 100;
/// The busy gap before each trip of the peer-asleep series: well past the 20 us a `Pipe`
/// end spins before it sleeps.
const PIPE_GAP: Duration = Duration::from_micros(100);

fn bench_pipe(floors: &Floors, trips: usize) -> PipeResult {
    let (mine, theirs) = Pipe::<u64, u64>::duplex().expect("Pipe::duplex");
    // Moving `theirs` into the arguments closes this process's copy.
    let p = Process::new(echo, theirs).with_start_method(METHOD);
    p.start().expect("echo start");
    let ours = |n: u64| -> u64 {
        mine.send(n).expect("send");
        mine.recv().expect("recv")
    };
    let pings: [&dyn Fn(u64) -> u64; 3] = [&ours, &|n| floors.ping(n), &|n| floors.seqping(n)];
    for n in 0..PIPE_WARMUP as u64 {
        for ping in pings {
            assert_eq!(ping(n), n);
        }
    }
    // A ping-pong: each series runs its trips back to back, in blocks that alternate
    // between the series, so that a change of machine load is shared among them.
    let mut s: [Vec<Duration>; 3] = Default::default();
    for block in 0..trips.div_ceil(PIPE_BLOCK) {
        for (ping, samples) in pings.iter().zip(&mut s) {
            for i in 0..PIPE_BLOCK {
                let n = (block * PIPE_BLOCK + i) as u64;
                let (d, v) = time(|| ping(n));
                assert_eq!(v, n);
                samples.push(d);
            }
        }
    }
    // The peer asleep: trip by trip, each after the same busy gap.
    let mut a: [Vec<Duration>; 2] = Default::default();
    for n in 0..(trips / 4) as u64 {
        for (ping, samples) in pings.iter().zip(&mut a) {
            let gap = std::time::Instant::now();
            while gap.elapsed() < PIPE_GAP {
                std::hint::spin_loop();
            }
            let (d, v) = time(|| ping(n));
            assert_eq!(v, n);
            samples.push(d);
        }
    }
    drop(mine);
    assert_eq!(p.join().expect("echo join"), 0);
    let [ours, floor, seqpacket] = s.map(Samples::new);
    let [asleep, asleep_floor] = a.map(Samples::new);
    PipeResult {
        ours,
        floor,
        seqpacket,
        asleep,
        asleep_floor,
    }
}

struct LockResult {
    /// Per run of `LOCK_LOOP` pairs.
    ours: Samples,
    floor: Samples,
    std: Samples,
}

/// `n` uncontended acquire + release pairs, as a user writes them.
#[inline(never)]
fn lock_loop(lock: &Lock, n: u64) -> multiproc::Result<()> {
    for _ in 0..n {
        let guard = lock.acquire()?;
        black_box(&guard);
    }
    Ok(())
}

#[inline(never)]
fn raw_lock_loop(page: &RawPage, n: u64) {
    for _ in 0..n {
        page.with_lock(|v| {
            black_box(v);
        });
    }
}

#[inline(never)]
fn std_lock_loop(m: &std::sync::Mutex<u64>, n: u64) {
    for _ in 0..n {
        let guard = m.lock().expect("std mutex");
        black_box(&guard);
    }
}

fn bench_lock(runs: usize) -> LockResult {
    let lock = Lock::new().expect("Lock::new");
    let page = RawPage::new();
    let std_mutex = std::sync::Mutex::new(0u64);
    lock_loop(&lock, LOCK_LOOP / 10).expect("lock loop");
    raw_lock_loop(&page, LOCK_LOOP / 10);
    std_lock_loop(&std_mutex, LOCK_LOOP / 10);
    let mut s: [Vec<Duration>; 3] = Default::default();
    for _ in 0..runs {
        s[0].push(time(|| lock_loop(&lock, LOCK_LOOP).expect("lock loop")).0);
        s[1].push(time(|| raw_lock_loop(&page, LOCK_LOOP)).0);
        s[2].push(time(|| std_lock_loop(&std_mutex, LOCK_LOOP)).0);
    }
    let [ours, floor, std] = s.map(Samples::new);
    LockResult { ours, floor, std }
}

struct CounterResult {
    ours: Samples,
    floor: Samples,
}

fn bench_counter(runs: usize) -> CounterResult {
    let expected = (COUNTER_PROCS as i64) * i64::from(COUNTER_INCS);
    let ours = || -> Duration {
        let counter = Value::new(0i64).expect("Value::new");
        let procs: Vec<Process> = (0..COUNTER_PROCS)
            .map(|_| Process::new(count, (counter.clone(), COUNTER_INCS)).with_start_method(METHOD))
            .collect();
        let (d, ()) = time(|| {
            for p in &procs {
                p.start().expect("count start");
            }
            for p in &procs {
                assert_eq!(p.join().expect("count join"), 0);
            }
        });
        assert_eq!(counter.get().expect("counter.get"), expected);
        d
    };
    let floor = || -> Duration {
        let page = RawPage::new();
        let (d, ()) = time(|| {
            let pids: Vec<libc::pid_t> = (0..COUNTER_PROCS)
                .map(|_| {
                    fork_raw(&[], || {
                        for _ in 0..COUNTER_INCS {
                            page.with_lock(|v| *v += 1);
                        }
                    })
                })
                .collect();
            for pid in pids {
                assert!(wait_ok(pid), "raw counter child failed");
            }
        });
        assert_eq!(page.value(), expected);
        d
    };
    for _ in 0..WARMUP {
        ours();
        floor();
    }
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        sa.push(ours());
        sb.push(floor());
    }
    CounterResult {
        ours: Samples::new(sa),
        floor: Samples::new(sb),
    }
}

struct ShmResult {
    /// apply(touch_len, shm).
    zero_copy: Samples,
    /// The socketpair floor, parent to child.
    floor: Samples,
    /// apply(fill_new, len), then a byte of every page read here.
    reverse: Samples,
    /// The socketpair floor, child to parent.
    reverse_floor: Samples,
    /// apply(len_of, vec).
    vec: Samples,
}

fn bench_shm(floors: &Floors, iters: usize) -> ShmResult {
    let pool = Pool::builder()
        .processes(1)
        .start_method(METHOD)
        .build()
        .expect("a pool of 1 worker");
    let shm = SharedMemory::new(SHM_BYTES).expect("SharedMemory::new");
    // SAFETY: no other process has the segment yet, and this is the only access to it.
    unsafe { shm.as_mut_slice() }.fill(FILL);
    let data = vec![FILL; SHM_BYTES];
    let mut back = vec![0u8; SHM_BYTES];
    let mut s: [Vec<Duration>; 5] = Default::default();
    for i in 0..WARMUP + iters {
        let arg = shm.clone();
        let (a, n) = time(|| pool.apply(touch_len, arg));
        assert_eq!(n.expect("apply(touch_len)"), SHM_BYTES as u64);

        let (b, n) = time(|| floors.bulk_send(&data));
        assert_eq!(n, SHM_BYTES as u64);

        let (c, (got, sum)) = time(|| {
            let got = pool.apply(fill_new, SHM_BYTES).expect("apply(fill_new)");
            // SAFETY: the worker that filled the segment dropped its handle; nobody writes it.
            let sum = page_sum(unsafe { got.as_slice() });
            (got, sum)
        });
        assert_eq!(got.len(), SHM_BYTES);
        assert_eq!(sum, u64::from(FILL) * (SHM_BYTES / PAGE) as u64);
        drop(got); // outside the timed region: unmapping and freeing 64 MiB

        let (d, ()) = time(|| floors.bulk_recv(&mut back));
        assert!(back[SHM_BYTES - 1] == FILL && back[0] == FILL);
        back[0] = 0;

        // The clone is made before the clock starts: only `apply` is timed.
        let arg = data.clone();
        let (e, n) = time(|| pool.apply(len_of, arg));
        assert_eq!(n.expect("apply(len_of)"), SHM_BYTES as u64);

        if i >= WARMUP {
            for (series, d) in s.iter_mut().zip([a, b, c, d, e]) {
                series.push(d);
            }
        }
    }
    pool.close();
    pool.join().expect("pool join");
    let [zero_copy, floor, reverse, reverse_floor, vec] = s.map(Samples::new);
    ShmResult {
        zero_copy,
        floor,
        reverse,
        reverse_floor,
        vec,
    }
}

// ---------------------------------------------------------------------------------------------
// CPython

fn cpython(iters: &Iters) -> Values {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/shared_cpython.py");
    run_cpython(
        script,
        &[
            iters.queue,
            QUEUE_ITEMS as usize,
            iters.pipe,
            iters.lock,
            LOCK_LOOP as usize,
            iters.counter,
            iters.shm,
        ]
        .map(|n| n.to_string()),
    )
}

// ---------------------------------------------------------------------------------------------
// The report

fn ns(secs: f64) -> String {
    format!("{:.1} ns", secs * 1e9)
}

/// Items per second, for `QUEUE_ITEMS` items in `secs`.
fn items_per_s(secs: f64) -> f64 {
    QUEUE_ITEMS as f64 / secs
}

fn rate(secs: f64) -> String {
    let r = items_per_s(secs);
    if r >= 1e6 {
        format!("{:.2}M/s", r / 1e6)
    } else {
        format!("{:.0}k/s", r / 1e3)
    }
}

fn mbps(secs: f64) -> String {
    format!("{:.0} MB/s", SHM_BYTES as f64 / secs / 1e6)
}

fn na(v: Option<String>) -> String {
    v.unwrap_or_else(|| "n/a".to_string())
}

struct Report {
    iters: Iters,
    queue: QueueResult,
    pipe: PipeResult,
    lock: LockResult,
    counter: CounterResult,
    shm: ShmResult,
    cpython: Values,
}

/// One line of the table, with times in seconds (the smaller the better); `None` prints
/// as "n/a".
struct Line {
    name: String,
    unit: fn(f64) -> String,
    ours: f64,
    floor: f64,
    cpython: Option<f64>,
    target: String,
}

fn print_report(r: &Report) {
    let py = |name: &str| value::<f64>(&r.cpython, name);
    let py_method: Option<String> = value(&r.cpython, "start_method");
    let per_pair = |s: &Samples| s.median() / LOCK_LOOP as f64;

    let queue = (r.queue.ours.median(), r.queue.floor.median());
    let queue_py = py("queue_s");
    let queue_x = queue_py.map(|p| p / queue.0);
    let pipe = (r.pipe.ours.median(), r.pipe.floor.median());
    let pipe_py = py("pipe_rt_s");
    let asleep = (r.pipe.asleep.median(), r.pipe.asleep_floor.median());
    let lock = (per_pair(&r.lock.ours), per_pair(&r.lock.floor));
    let lock_py = py("lock_pair_s");
    let counter = (r.counter.ours.median(), r.counter.floor.median());
    let counter_py = py("counter_s");
    let counter_x = counter_py.map(|p| p / counter.0);
    let zc = (r.shm.zero_copy.median(), r.shm.floor.median());
    let rev = (r.shm.reverse.median(), r.shm.reverse_floor.median());
    let vec = r.shm.vec.median();

    let lines = [
        Line {
            name: format!("Queue<u64> {QUEUE_ITEMS} items, 1 -> 1 process"),
            unit: rate,
            ours: queue.0,
            floor: queue.1,
            cpython: queue_py,
            target: format!(
                ">= 20x CPython: {}; >= 2.8M/s: {}",
                queue_x.map_or("n/a", |x| met(x >= 20.0)),
                met(items_per_s(queue.0) >= 2.8e6)
            ),
        },
        Line {
            name: "Pipe<u64> duplex round trip (ping-pong)".into(),
            unit: us,
            ours: pipe.0,
            floor: pipe.1,
            cpython: pipe_py,
            target: format!("<= 1.5x floor: {}", met(pipe.0 / pipe.1 <= 1.5)),
        },
        Line {
            name: "Pipe round trip, peer asleep (100 us gap)".into(),
            unit: us,
            ours: asleep.0,
            floor: asleep.1,
            cpython: None,
            target: format!("<= 1.5x floor: {}", met(asleep.0 / asleep.1 <= 1.5)),
        },
        Line {
            name: "Lock acquire+release, uncontended".into(),
            unit: ns,
            ours: lock.0,
            floor: lock.1,
            cpython: lock_py,
            target: format!("< 30 ns: {}", met(lock.0 < 30e-9)),
        },
        Line {
            name: format!("Value<i64> {COUNTER_PROCS} procs x {COUNTER_INCS} locked +=1"),
            unit: ms,
            ours: counter.0,
            floor: counter.1,
            cpython: counter_py,
            target: format!(
                ">= 10x CPython: {}",
                counter_x.map_or("n/a", |x| met(x >= 10.0))
            ),
        },
        Line {
            name: "W4 apply 64 MiB SharedMemory (zero-copy)".into(),
            unit: mbps,
            ours: zc.0,
            floor: zc.1,
            cpython: py("shm_touch_s"),
            target: format!("> floor MB/s: {}", met(zc.0 < zc.1)),
        },
        Line {
            name: "W4 reverse: worker fills + returns 64 MiB".into(),
            unit: mbps,
            ours: rev.0,
            floor: rev.1,
            cpython: py("shm_fill_s"),
            target: "-".into(),
        },
        Line {
            name: "W4 reference: apply 64 MiB Vec<u8>".into(),
            unit: mbps,
            ours: vec,
            floor: zc.1,
            cpython: py("bytes_apply_s"),
            target: "-".into(),
        },
    ];

    println!();
    println!(
        "Channels, locks and shared state ({}-core machine; compare within one run only). Start method: multiproc {}, CPython {}.",
        multiproc::cpu_count(),
        METHOD,
        na(py_method)
    );
    println!(
        "{:<44} {:>11} {:>11} {:>8} {:>11} {:>8}  target met?",
        "workload", "multiproc", "floor", "x floor", "CPython", "CPy/mp"
    );
    for l in &lines {
        println!(
            "{:<44} {:>11} {:>11} {:>8} {:>11} {:>8}  {}",
            l.name,
            (l.unit)(l.ours),
            (l.unit)(l.floor),
            ratio(l.ours / l.floor),
            na(l.cpython.map(l.unit)),
            na(l.cpython.map(|p| ratio(p / l.ours))),
            l.target
        );
    }
    println!(
        "x floor = multiproc time / floor time (for rates: floor rate / multiproc rate); CPy/mp = CPython time / multiproc time (> 1: multiproc is faster)."
    );

    println!("details:");
    println!(
        "  Queue: a fork producer puts 0..{QUEUE_ITEMS} into an unbounded Queue<u64> after a go Event; this process gets them; median of {} runs after {WARMUP} warm-up, timed from go to the last item.",
        r.iters.queue
    );
    println!(
        "      floor: a forked child writes {QUEUE_ITEMS} 8-byte records into a SOCK_SEQPACKET socketpair (send buffer as large as multiproc's), this process reads them: one kernel record per item, the ceiling of Queue's previous transport (Queue now copies items through a shared-memory ring; no raw ring floor here). CPython: ctx.Queue(), put / get of ints. The issue's CPython figure: ~140k/s; target 20x that = 2.8M/s."
    );
    println!(
        "  Pipe: {} u64 round trips over Pipe::duplex with a fork child that echoes, after {PIPE_WARMUP} warm-up, median per trip, back to back in blocks of {PIPE_BLOCK} that alternate with the floor's: 8-byte ping-pong over 2 pipes with a forked child. A Pipe end spins (yielding after 1 us) up to 20 us before it sleeps on a futex; the floor's child sleeps in read(2).",
        r.iters.pipe
    );
    println!(
        "      reference, the same ping-pong over a SOCK_SEQPACKET socketpair (Pipe's previous transport): {} median ({:.2}x the pipe floor; multiproc is {:.2}x it).",
        us(r.pipe.seqpacket.median()),
        r.pipe.seqpacket.median() / pipe.1,
        pipe.0 / r.pipe.seqpacket.median()
    );
    println!(
        "      peer asleep: {} trips of each, interleaved trip by trip, each after a busy gap of {} us that outlasts the Pipe end's spin: the echo child sleeps on its futex, the floor's in read(2); multiproc {} vs floor {} median ({:.2}x).",
        r.pipe.asleep.0.len(),
        PIPE_GAP.as_micros(),
        us(asleep.0),
        us(asleep.1),
        asleep.0 / asleep.1
    );
    if let (Some(min), Some(p90)) = (py("pipe_rt_min_s"), py("pipe_rt_p90_s")) {
        println!(
            "      CPython: Connection send / recv with a fork child, back to back; min / median / p90 {} / {} / {}.",
            us(min),
            na(pipe_py.map(us)),
            us(p90)
        );
    }
    println!(
        "  Lock: {LOCK_LOOP} x `let g = lock.acquire()?; drop(g)` in this process, median of {} runs, per pair; floor: pthread_mutex_lock + unlock of glibc's robust, process-shared, error-checking mutex (what Lock was built on before). std::sync::Mutex: {}.",
        r.iters.lock,
        ns(per_pair(&r.lock.std))
    );
    println!(
        "      CPython: `lock.acquire(); lock.release()` in a for loop over range({LOCK_LOOP}) (ctx.Lock(), a POSIX semaphore); the empty loop alone costs {} per iteration.",
        na(py("empty_loop_s").map(ns))
    );
    println!(
        "  Counter: {COUNTER_PROCS} fork processes x {COUNTER_INCS} `*counter.lock()? += 1` on one Value<i64> (final value checked: {}), timed from the first start to the last join; median of {} runs.",
        COUNTER_PROCS as i64 * i64::from(COUNTER_INCS),
        r.iters.counter
    );
    println!(
        "      floor: {COUNTER_PROCS} forked children, pthread_mutex_lock / += 1 / unlock on a robust process-shared mutex in a MAP_SHARED page. CPython: `with v.get_lock(): v.value += 1`; the issue's figure ~0.5 s."
    );
    println!(
        "  W4: 64 MiB (67108864 bytes) per transfer, MB/s = 10^6 bytes/s; pool of 1 fork worker; median of {} after {WARMUP} warm-up.",
        r.iters.shm
    );
    println!(
        "      zero-copy: pool.apply(touch_len, shm.clone()), shm made and filled once; the worker maps it (the descriptor travels), reads 1 byte of each of the 16384 pages, returns the length."
    );
    println!(
        "      floor: 64 MiB (filled, not calloc'd zero pages) written into a socketpair, a forked child reads it into a reused buffer and answers 8 bytes. Reverse floor: the child writes 64 MiB, this process reads into a reused buffer."
    );
    println!(
        "      reverse: pool.apply(fill_new, 64 MiB): the worker creates a SharedMemory, fills it (memset), returns it; this process maps it and reads 1 byte of each page (timed); the drop (munmap, free) is not timed."
    );
    println!(
        "      Vec<u8>: pool.apply(len_of, v), the clone of v made outside the timed region. CPython: multiprocessing.shared_memory.SharedMemory passed / returned (by name), and apply(len, (bytes,))."
    );
    println!("spread (min / median / p90):");
    let per_pair_unit = |secs: f64| ns(secs / LOCK_LOOP as f64);
    type Unit<'a> = &'a dyn Fn(f64) -> String;
    let rows: [(&str, &Samples, Unit<'_>); 16] = [
        ("Queue multiproc (time)", &r.queue.ours, &ms),
        ("Queue floor (time)", &r.queue.floor, &ms),
        ("Pipe multiproc", &r.pipe.ours, &us),
        ("Pipe floor (pipes)", &r.pipe.floor, &us),
        ("Pipe seqpacket", &r.pipe.seqpacket, &us),
        ("Pipe asleep multiproc", &r.pipe.asleep, &us),
        ("Pipe asleep floor", &r.pipe.asleep_floor, &us),
        ("Lock multiproc", &r.lock.ours, &per_pair_unit),
        ("Lock floor", &r.lock.floor, &per_pair_unit),
        ("Counter multiproc", &r.counter.ours, &ms),
        ("Counter floor", &r.counter.floor, &ms),
        ("W4 zero-copy (time)", &r.shm.zero_copy, &ms),
        ("W4 floor (time)", &r.shm.floor, &ms),
        ("W4 reverse (time)", &r.shm.reverse, &ms),
        ("W4 reverse floor (time)", &r.shm.reverse_floor, &ms),
        ("W4 Vec<u8> (time)", &r.shm.vec, &ms),
    ];
    for (name, s, unit) in rows {
        println!("  {name:<24} {}", s.spread(unit));
    }
    if let Err(why) = &r.cpython {
        println!("note: CPython columns are n/a: {why}");
    }
}
