//! The pool over MPI ranks (feature `mpi`): `Pool::builder().mpi().build()` under `mpirun`.
//!
//! # How ranks start
//!
//! Every rank runs the same binary. The runtime's constructor (`startup`), which already
//! enters spawned children before `main`, also recognises a process launched by an MPI
//! launcher (`OMPI_COMM_WORLD_RANK`, `PMIX_RANK` or `PMI_RANK` in its environment), after it has
//! ruled out a spawned child. There, before `main`, every rank initialises MPI
//! ([`enter_before_main`]); rank 0 goes on to `main`, every other rank serves tasks
//! ([`rank::serve`]) and ends with `_exit`, so it never runs the body of `main` (not the
//! user's, not libtest's). A program built without the feature, or not launched by an MPI
//! launcher, is untouched. Entering before `main` rather than on an explicit call in `main`
//! keeps the promise of the local pool: code written for it runs unchanged, with no line a
//! rank must reach first, and a test binary's `main` (libtest's) is no exception.
//!
//! # What travels
//!
//! A task is the local pool's task: its entry's registered name, and the chunk of arguments
//! encoded by the same carriers; a result is the same encoded chunk of outputs, or the same
//! panic or error. Each goes as one MPI message of bytes ([`frame`]). Descriptors cannot cross
//! machines: a task that carries one fails on rank 0.
//!
//! # Identity
//!
//! A rank says hello first, with a hash of its executable's bytes: rank 0 refuses, when the
//! pool is built, a rank that runs another binary ([`ErrorKind::BuildMismatch`]). The bytes, not
//! the file's inode and times as the local check does: on a cluster every node has its own copy.
//!
//! # Ending
//!
//! Rank 0 ends the others when it exits (normally or by a panic: both run the C library's exit
//! functions): it tells every rank to stop, takes their acknowledgements (and whatever results
//! they still send) for at most [`STOP_GRACE`], and finalises MPI. A rank still running a task
//! then is not waited for: rank 0 aborts the job (`MPI_Abort`), which ends it non-zero. Rank 0
//! killed: the launcher ends the job.

mod driver;
mod frame;
mod rank;

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use mpi::ffi;
use mpi::traits::Communicator;

use super::{Pool, PoolBuilder};
use crate::error::{Error, ErrorKind, Result};

/// Message tags.
const TAG_HELLO: c_int = 1;
const TAG_TASK: c_int = 2;
const TAG_RESULT: c_int = 3;
const TAG_STOP: c_int = 4;
const TAG_STOPPED: c_int = 5;

/// How long rank 0, as it exits, waits for the ranks to acknowledge the stop.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long `build` waits for a rank's hello (it is sent before `main` runs on rank 0).
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

/// Set by a rank as it starts to its pid: a process that finds it set to another pid inherited
/// the launcher's environment from a rank (a program the rank ran itself), and is no rank.
const RANK_PID: &str = "MULTIPROC_MPI_RANK_PID";

/// The rank given by the MPI launcher, if this process was launched by one (and not started by
/// a rank: see [`RANK_PID`]).
fn launched_rank() -> Option<u32> {
    let rank = ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse().ok())?;
    let me = std::process::id().to_string();
    if std::env::var(RANK_PID).is_ok_and(|pid| pid != me) {
        return None;
    }
    // Before any thread of this process exists (the constructors run first).
    std::env::set_var(RANK_PID, me);
    Some(rank)
}

/// What a rank says first: who it is and which binary it runs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Hello {
    build: u64,
    pid: u32,
    host: String,
}

impl Hello {
    fn mine() -> Hello {
        Hello {
            build: build_hash(),
            pid: std::process::id(),
            host: host_name(),
        }
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `gethostname` writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "?".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A hash of this executable's bytes (0 if it cannot be read, which no other rank matches
/// unless it cannot read its own either).
fn build_hash() -> u64 {
    static HASH: OnceLock<u64> = OnceLock::new();
    *HASH.get_or_init(|| {
        use std::io::Read;
        let Ok(mut file) = std::fs::File::open("/proc/self/exe") else {
            return 0;
        };
        let mut hash: u64 = 0x243f_6a88_85a3_08d3;
        let mut buf = vec![0u8; 1 << 20];
        let mut total: u64 = 0;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return 0,
            };
            total += n as u64;
            // Words, then the tail byte by byte (a read may end anywhere: the hash then
            // depends on where reads end, the same for the same file on every rank).
            let mut words = buf[..n].chunks_exact(8);
            for word in &mut words {
                let w = u64::from_le_bytes([
                    word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
                ]);
                hash = (hash ^ w)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .rotate_left(29);
            }
            for &b in words.remainder() {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            }
        }
        hash ^ total
    })
}

/// What rank 0 knows of the job.
pub(crate) struct World {
    /// Finalises MPI when dropped.
    universe: mpi::environment::Universe,
    size: c_int,
    /// Every rank's hello, once heard (index: rank).
    hellos: Vec<Option<Hello>>,
    /// The ticket of the task each rank runs (index: rank), also after its pool is gone: its
    /// result is then read and dropped.
    busy: Vec<Option<u64>>,
    /// Ranks given up on (a task timed out there): never sent another task.
    lost: Vec<bool>,
}

/// Rank 0's MPI, from before `main` until it exits; `None` elsewhere (and after). Every MPI
/// call of rank 0 is made holding it.
static WORLD: Mutex<Option<World>> = Mutex::new(None);

/// An MPI pool is built and not yet joined: the ranks serve one pool at a time.
static IN_USE: AtomicBool = AtomicBool::new(false);

fn world() -> MutexGuard<'static, Option<World>> {
    WORLD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Called by the runtime's constructor, before `main`, in a process that is no spawned child:
/// when an MPI launcher started it, initialises MPI; a rank other than 0 then serves and never
/// returns, after `before_serving` (the constructors after the runtime's, which fill the
/// registry).
pub(crate) fn enter_before_main(before_serving: impl FnOnce()) {
    let Some(rank) = launched_rank() else {
        return;
    };
    let Some((universe, _threading)) = mpi::initialize_with_threading(mpi::Threading::Multiple)
    else {
        eprintln!("multiproc: launched as MPI rank {rank}, but MPI was already initialised");
        return;
    };
    // SAFETY: sets the error handler of the world communicator, after MPI_Init: errors are
    // returned (and checked at every call) instead of aborting the job.
    unsafe { ffi::MPI_Comm_set_errhandler(ffi::RSMPI_COMM_WORLD, ffi::RSMPI_ERRORS_RETURN) };
    let comm = universe.world();
    let (rank, size) = (comm.rank(), comm.size());
    if rank != 0 {
        before_serving();
        rank::serve(universe, rank);
    }
    let ranks = usize::try_from(size).unwrap_or(1);
    *world() = Some(World {
        universe,
        size,
        hellos: vec![None; ranks],
        busy: vec![None; ranks],
        lost: vec![false; ranks],
    });
    // SAFETY: `at_exit` is an `extern "C" fn()` that never unwinds.
    unsafe { libc::atexit(at_exit) };
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(stop_ranks);
}

/// Rank 0 exits: every rank is told to stop, and MPI is finalised; a rank that does not
/// acknowledge within [`STOP_GRACE`] (a task still running) makes this abort the job.
fn stop_ranks() {
    let Some(world) = world().take() else {
        return;
    };
    let mut pending = Vec::new();
    let mut waiting = vec![false; world.hellos.len()];
    for rank in 1..world.size {
        match Sending::start(rank, TAG_STOP, Vec::new()) {
            Ok(sending) => {
                pending.push(sending);
                waiting[rank as usize] = true;
            }
            Err(err) => eprintln!("multiproc: cannot stop MPI rank {rank}: {err}"),
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    let mut idle = Idle::new();
    while waiting.contains(&true) && Instant::now() < deadline {
        match probe(any_source()) {
            Ok(Some((source, TAG_STOPPED, _))) => {
                if let Some(w) = waiting.get_mut(source as usize) {
                    *w = false;
                }
                idle.reset();
            }
            // A late result or hello: read, so that its sender is not held in its send.
            Ok(Some(_)) => idle.reset(),
            Ok(None) => idle.wait(None, Some(deadline)),
            Err(err) => {
                eprintln!("multiproc: cannot hear the MPI ranks as rank 0 exits: {err}");
                break;
            }
        }
        pending.retain_mut(|s| !matches!(s.test(), Ok(true)));
    }
    if let Some(rank) = waiting.iter().position(|&w| w) {
        eprintln!(
            "multiproc: MPI rank {rank} did not stop within {STOP_GRACE:?} of rank 0's exit (a task still running?): aborting the job"
        );
        world.universe.world().abort(1);
    }
    drop(pending);
    drop(world);
}

/// `PoolBuilder::build` for `.mpi()`.
pub(super) fn build(builder: PoolBuilder) -> Result<Pool> {
    if builder.initializer.is_some() || builder.maxtasksperchild.is_some() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "an MPI pool takes no initializer and no maxtasksperchild: its workers are the job's ranks, which are never replaced",
        ));
    }
    let limits = &builder.limits;
    if limits.idle_timeout.is_some() || limits.max_memory.is_some() || limits.soft_timeout.is_some()
    {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "an MPI pool takes no idle_timeout, max_memory_per_child or soft_task_timeout: its workers are the job's ranks, which are never replaced",
        ));
    }
    if builder.start_method.is_some() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "an MPI pool has no start method: its workers are the ranks that the MPI launcher started",
        ));
    }
    let mut guard = world();
    let Some(world) = guard.as_mut() else {
        return Err(Error::new(
            ErrorKind::NotRunning,
            "not an MPI job: an MPI pool runs on rank 0 of a program launched by `mpirun` (or `srun`)",
        ));
    };
    // First: while a pool runs, its driver alone reads what the ranks send.
    if IN_USE.swap(true, Ordering::AcqRel) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "another MPI pool is running: the ranks serve one pool at a time (join it first)",
        ));
    }
    let ranks = choose_ranks(world, builder.processes);
    drop(guard);
    let started = ranks.and_then(|ranks| driver::start(ranks, builder.task_timeout));
    if started.is_err() {
        IN_USE.store(false, Ordering::Release);
    }
    started
}

/// The ranks of a new pool (at most `processes`), once each has said hello with this binary.
fn choose_ranks(world: &mut World, processes: Option<usize>) -> Result<Vec<c_int>> {
    if world.size < 2 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "an MPI pool needs at least one rank besides rank 0 (`mpirun -np 2` or more)",
        ));
    }
    let ranks: Vec<c_int> = (1..world.size)
        .filter(|&r| !world.lost[r as usize])
        .collect();
    let ranks: Vec<c_int> = match processes {
        Some(0) => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "number of processes must be at least 1",
            ))
        }
        Some(n) => ranks.into_iter().take(n).collect(),
        None => ranks,
    };
    if ranks.is_empty() {
        return Err(Error::new(
            ErrorKind::NotRunning,
            "every MPI rank was given up on (a task timed out there)",
        ));
    }
    hear_hellos(world, &ranks)?;
    Ok(ranks)
}

/// Waits for the hello of every rank in `ranks` not yet heard, and checks that each runs this
/// binary.
fn hear_hellos(world: &mut World, ranks: &[c_int]) -> Result<()> {
    let deadline = Instant::now() + HELLO_TIMEOUT;
    let mut idle = Idle::new();
    while let Some(&missing) = ranks.iter().find(|&&r| world.hellos[r as usize].is_none()) {
        match probe(any_source())? {
            Some((source, TAG_HELLO, bytes)) => {
                let hello: Hello = crate::codec::decode(&bytes).map_err(|err| {
                    Error::new(
                        ErrorKind::Codec,
                        format!("MPI rank {source} said an unreadable hello"),
                    )
                    .with_source(err)
                })?;
                if let Some(slot) = world.hellos.get_mut(source as usize) {
                    *slot = Some(hello);
                }
                idle.reset();
            }
            Some((source, TAG_RESULT, _)) => {
                // A late result of a pool that is gone.
                if let Some(busy) = world.busy.get_mut(source as usize) {
                    *busy = None;
                }
            }
            Some(_) => {}
            None => {
                if Instant::now() >= deadline {
                    return Err(Error::timeout(format!(
                        "MPI rank {missing} did not say hello within {HELLO_TIMEOUT:?}"
                    )));
                }
                idle.wait(None, Some(deadline));
            }
        }
    }
    let mine = build_hash();
    for &rank in ranks {
        let Some(hello) = &world.hellos[rank as usize] else {
            continue;
        };
        if hello.build != mine {
            return Err(Error::new(
                ErrorKind::BuildMismatch,
                format!(
                    "MPI rank {rank} (pid {} on {}) runs another binary than rank 0 (its executable hashes to {:016x}, rank 0's to {mine:016x}): every rank must run the same build",
                    hello.pid, hello.host, hello.build
                ),
            ));
        }
    }
    Ok(())
}

/// `MPI_ANY_SOURCE`.
fn any_source() -> c_int {
    // SAFETY: a constant of the MPI library, set before any Rust code runs.
    unsafe { ffi::RSMPI_ANY_SOURCE }
}

/// The text of an MPI error code.
fn describe(code: c_int) -> String {
    let mut buf = vec![0u8; 512];
    let mut len: c_int = 0;
    // SAFETY: `buf` has room for MPI_MAX_ERROR_STRING (256 in Open MPI, 512 in MPICH)
    // characters, which is all MPI writes; `len` receives the length written.
    let rc = unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return format!("MPI error {code}");
    }
    buf.truncate(usize::try_from(len).unwrap_or(0).min(512));
    String::from_utf8_lossy(&buf).into_owned()
}

fn check(rc: c_int, what: impl FnOnce() -> String) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Disconnected,
        format!("{}: {}", what(), describe(rc)),
    ))
}

/// A message being sent without waiting: it owns its bytes until MPI is done with them.
struct Sending {
    request: ffi::MPI_Request,
    bytes: Vec<u8>,
    done: bool,
}

// SAFETY: an MPI request is a handle, valid in any thread of a process initialised with
// MPI_THREAD_MULTIPLE (or used under `WORLD`'s lock).
unsafe impl Send for Sending {}

impl Sending {
    /// Starts sending `bytes` to `dest`.
    fn start(dest: c_int, tag: c_int, bytes: Vec<u8>) -> Result<Sending> {
        let len = c_int::try_from(bytes.len()).map_err(|_| {
            Error::new(
                ErrorKind::Codec,
                format!(
                    "a message of {} bytes cannot travel over MPI (2 GiB at most)",
                    bytes.len()
                ),
            )
        })?;
        let mut request = std::mem::MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: `bytes` is a live buffer of `len` bytes, owned by the returned `Sending`
        // (its heap block does not move with it) until the request completes; `request` is
        // written by MPI_Isend when it succeeds, and read only then.
        let request = unsafe {
            let rc = ffi::MPI_Isend(
                bytes.as_ptr() as *const c_void as *mut c_void,
                len,
                ffi::RSMPI_UINT8_T,
                dest,
                tag,
                ffi::RSMPI_COMM_WORLD,
                request.as_mut_ptr(),
            );
            check(rc, || format!("cannot send to MPI rank {dest}"))?;
            request.assume_init()
        };
        Ok(Sending {
            request,
            bytes,
            done: false,
        })
    }

    /// Whether the send completed (its bytes are free).
    fn test(&mut self) -> Result<bool> {
        if self.done {
            return Ok(true);
        }
        let mut flag: c_int = 0;
        // SAFETY: a request from MPI_Isend, not yet completed; `flag` is written by MPI_Test.
        let rc = unsafe { ffi::MPI_Test(&mut self.request, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
        check(rc, || "cannot complete a send over MPI".to_string())?;
        self.done = flag != 0;
        Ok(self.done)
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if self.done {
            // Sent: the buffer serves the next message.
            crate::spare::give(std::mem::take(&mut self.bytes));
            return;
        }
        // MPI may still read the bytes: they are left to it (a rank given up on, or the end).
        std::mem::forget(std::mem::take(&mut self.bytes));
    }
}

/// Receives a message from `source` (or any) if one is there: its source, tag and bytes. Waits
/// for its bytes once it has begun (for the small messages of the handshake and the ends).
fn probe(source: c_int) -> Result<Option<(c_int, c_int, Vec<u8>)>> {
    let Some(mut receiving) = Receiving::start(source)? else {
        return Ok(None);
    };
    while !receiving.test()? {
        std::thread::yield_now();
    }
    let (source, tag) = (receiving.source, receiving.tag);
    Ok(Some((source, tag, receiving.take())))
}

/// A message being received without waiting: it owns its buffer until MPI has filled it.
struct Receiving {
    source: c_int,
    tag: c_int,
    request: ffi::MPI_Request,
    bytes: Vec<u8>,
    done: bool,
}

// SAFETY: as for `Sending`.
unsafe impl Send for Receiving {}

impl Receiving {
    /// Starts receiving the next message from `source` (or any), if one has begun to arrive.
    fn start(source: c_int) -> Result<Option<Receiving>> {
        let mut flag: c_int = 0;
        let mut message = std::mem::MaybeUninit::<ffi::MPI_Message>::uninit();
        let mut status = std::mem::MaybeUninit::<ffi::MPI_Status>::uninit();
        // SAFETY: MPI_Improbe writes `flag`, and when it is set `message` and `status`, which
        // are read only then.
        let (mut message, status) = unsafe {
            let rc = ffi::MPI_Improbe(
                source,
                ffi::RSMPI_ANY_TAG,
                ffi::RSMPI_COMM_WORLD,
                &mut flag,
                message.as_mut_ptr(),
                status.as_mut_ptr(),
            );
            check(rc, || "cannot look for MPI messages".to_string())?;
            if flag == 0 {
                return Ok(None);
            }
            (message.assume_init(), status.assume_init())
        };
        let (source, tag) = (status.MPI_SOURCE, status.MPI_TAG);
        let mut count: c_int = 0;
        // SAFETY: the status of the matched message; `count` is written by MPI_Get_count.
        let rc = unsafe { ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut count) };
        check(rc, || "cannot size an MPI message".to_string())?;
        let len = usize::try_from(count).unwrap_or(0);
        let mut bytes = crate::spare::take_or_new(len);
        bytes.resize(len, 0);
        let mut request = std::mem::MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: starts receiving the matched message, of `count` bytes, into `bytes`, which
        // has room for them and is owned by the returned `Receiving` (its heap block does not
        // move with it) until the request completes; `request` is read only on success.
        let request = unsafe {
            let rc = ffi::MPI_Imrecv(
                bytes.as_mut_ptr().cast(),
                count,
                ffi::RSMPI_UINT8_T,
                &mut message,
                request.as_mut_ptr(),
            );
            check(rc, || format!("cannot receive from MPI rank {source}"))?;
            request.assume_init()
        };
        Ok(Some(Receiving {
            source,
            tag,
            request,
            bytes,
            done: false,
        }))
    }

    /// Whether the whole message is in.
    fn test(&mut self) -> Result<bool> {
        if self.done {
            return Ok(true);
        }
        let mut flag: c_int = 0;
        // SAFETY: a request from MPI_Imrecv, not yet completed; `flag` is written by MPI_Test.
        let rc = unsafe { ffi::MPI_Test(&mut self.request, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
        let source = self.source;
        check(rc, || format!("cannot receive from MPI rank {source}"))?;
        self.done = flag != 0;
        Ok(self.done)
    }

    /// The bytes of a message wholly received.
    fn take(mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // MPI may still write into the buffer: it is left to it (a rank given up on).
        std::mem::forget(std::mem::take(&mut self.bytes));
    }
}

/// Waiting for MPI, which has no descriptor to poll: look again at once for a moment (yielding
/// the processor), then sleep between looks, longer and longer up to a millisecond.
struct Idle {
    since: Option<Instant>,
    spin: Duration,
}

/// How long to look again at once before sleeping.
const SPIN: Duration = Duration::from_micros(200);
const SLEEP_MAX: Duration = Duration::from_millis(1);

impl Idle {
    fn new() -> Idle {
        Idle::spinning(SPIN)
    }

    /// Looks again at once for `spin` before sleeping.
    fn spinning(spin: Duration) -> Idle {
        Idle { since: None, spin }
    }

    fn reset(&mut self) {
        self.since = None;
    }

    /// Waits a little: woken early by `wake` (an eventfd), never past `deadline`.
    fn wait(&mut self, wake: Option<std::os::fd::BorrowedFd<'_>>, deadline: Option<Instant>) {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        let idle = now - since;
        if idle < self.spin {
            std::thread::yield_now();
            return;
        }
        let sleep = (idle / 8).clamp(Duration::from_micros(20), SLEEP_MAX);
        let until = deadline.map_or(now + sleep, |d| d.min(now + sleep));
        match wake {
            Some(fd) => {
                if wait_readable(fd, until.saturating_duration_since(now)) {
                    crate::sys::eventfd_drain(fd);
                    self.reset();
                }
            }
            None => std::thread::sleep(until.saturating_duration_since(now)),
        }
    }
}

/// Whether `fd` became readable within `timeout`, to the microsecond (`ppoll`: `poll` counts
/// milliseconds, and would round every short sleep of [`Idle`] up to one).
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let spec = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: one valid, exclusively borrowed pollfd; `spec` lives across the call; no signal
    // mask is changed (null).
    let n = unsafe { libc::ppoll(&mut pfd, 1, &spec, std::ptr::null()) };
    n > 0
}
