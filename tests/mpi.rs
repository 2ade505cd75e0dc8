//! The pool over MPI ranks (feature `mpi`). Each trial runs this binary under
//! `mpirun --allow-run-as-root --oversubscribe -np 3` (plus the words of
//! `MULTIPROC_MPIRUN_ARGS`, e.g. `--mca btl tcp,self`), bounded by a deadline, with
//! `--mpi-scenario NAME`: rank 0 runs that scenario in `main` and prints `SCENARIO-OK NAME`;
//! the other ranks never run `main` (exactly one such line proves it).
//!
//! `cargo test --features mpi --test mpi` (Open MPI's `mpirun` on the `PATH`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use multiproc::{process, ErrorKind, Pool};

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[process]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[process]
fn panics(n: u64) -> u64 {
    if n == 3 {
        panic!("deliberate panic on item {n}");
    }
    n
}

#[process]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[process]
fn fd_count(fds: Vec<multiproc::SharedFd>) -> usize {
    fds.len()
}

/// Kills the rank that runs it.
#[process]
fn die(_: ()) {
    // SAFETY: sends a signal to this very process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// Stops the rank that runs it: alive, and deaf.
#[process]
fn stop(_: ()) {
    // SAFETY: sends a signal to this very process.
    unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
}

/// A result of `len` bytes (a block of zeroes: cheap until it is copied).
#[process]
fn bytes_of(len: usize) -> Vec<u8> {
    vec![0u8; len]
}

/// Ends the rank that runs it as a task's code may: `std::process::exit`.
#[process]
fn exits(_: ()) {
    std::process::exit(3);
}

/// Open MPI's C interface, for a task that speaks MPI itself (the handles are its globals).
mod ompi {
    use std::ffi::{c_int, c_void};
    extern "C" {
        pub(crate) static mut ompi_mpi_comm_world: u8;
        pub(crate) static mut ompi_mpi_byte: u8;
        pub(crate) fn MPI_Send(
            buf: *const c_void,
            count: c_int,
            datatype: *mut c_void,
            dest: c_int,
            tag: c_int,
            comm: *mut c_void,
        ) -> c_int;
    }
}

/// Sends rank 0 a forged result (the runtime's result tag, bytes that are no frame), then
/// returns as any task does.
#[process]
fn forge(_: ()) -> u64 {
    let garbage = [0xffu8; 16];
    // SAFETY: a blocking send of 16 live bytes to rank 0, with Open MPI's world and byte
    // handles (addresses of its globals).
    unsafe {
        ompi::MPI_Send(
            garbage.as_ptr().cast(),
            16,
            std::ptr::addr_of_mut!(ompi::ompi_mpi_byte).cast(),
            0,
            3,
            std::ptr::addr_of_mut!(ompi::ompi_mpi_comm_world).cast(),
        );
    }
    7
}

type Outcome = Result<(), String>;

fn scenario(name: &str) -> Outcome {
    match name {
        "squares" => squares(),
        "large_map" => large_map(),
        "panic" => panic_keeps_serving(),
        "terminate" => terminate_then_again(),
        "mismatch" => mismatch(),
        "killed" => killed(),
        "stopped" => stopped(),
        "descendant" => descendant(),
        "huge_result" => huge_result(),
        "odd_sizes" => odd_sizes(),
        "exits" => {
            let pool = mpi_pool()?;
            let got = pool.apply(exits, ());
            println!("RANK0-SAW {got:?}");
            Err("rank 0 went on after a rank exited".to_string())
        }
        "terminate_mid_receive" => terminate_mid_receive(),
        "exit_mid_map" => {
            // Rank 0 returns from `main` while another thread's map runs on a pool never
            // closed: the ranks finish their tasks, stop, and the job ends well.
            let pool: &'static Pool = Box::leak(Box::new(mpi_pool()?));
            std::thread::spawn(move || {
                let _ = pool.map_chunked(sleep_ms, [200u64; 20], 1);
            });
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        }
        "forged" => {
            let pool = mpi_pool()?;
            let err = pool
                .apply(forge, ())
                .err()
                .ok_or("a forged result was taken")?;
            println!("error: {err}");
            if err.kind() != ErrorKind::Codec || !err.to_string().contains("MPI rank") {
                return Err(format!("not a codec error naming the rank: {err}"));
            }
            let got = pool.map(square, 0..10).map_err(|e| e.to_string())?;
            check(
                got,
                (0..10).map(|n| n * n).collect(),
                "map after a forged result",
            )
        }
        "one_rank" | "not_launched" => {
            // `-np 1` has no rank to serve; without mpirun there is no MPI job at all.
            let (want, what) = match name {
                "one_rank" => (ErrorKind::InvalidInput, "-np 1"),
                _ => (ErrorKind::NotRunning, "no mpirun"),
            };
            let built = Pool::builder().mpi().build().map(|_| ());
            println!("build: {built:?}");
            check(built.map_err(|e| e.kind()), Err(want), what)
        }
        "two_ranks" => {
            let pool = mpi_pool()?;
            check(pool.processes(), 1, "processes of -np 2")?;
            let got = pool.map(square, 0..50).map_err(|e| e.to_string())?;
            check(got, (0..50).map(|n| n * n).collect(), "map on -np 2")
        }
        "rank0_panics" => {
            let _pool = Pool::builder().mpi().build().map_err(|e| e.to_string())?;
            panic!("deliberate panic on rank 0");
        }
        other => Err(format!("no scenario {other}")),
    }
}

fn mpi_pool() -> Result<Pool, String> {
    Pool::builder()
        .mpi()
        .build()
        .map_err(|e| format!("build: {e}"))
}

fn squares() -> Outcome {
    let pool = mpi_pool()?;
    let err = |e: multiproc::Error| e.to_string();
    let outputs = pool.map(square, 0..5).map_err(err)?;
    println!("Pool : {outputs:?}");
    if outputs != [0, 1, 4, 9, 16] {
        return Err(format!("map gave {outputs:?}"));
    }
    if pool.processes() != 2 {
        return Err(format!("{} processes, not 2 ranks", pool.processes()));
    }
    // The ranks serve one pool at a time.
    let second = Pool::builder()
        .mpi()
        .build()
        .map(|_| ())
        .map_err(|e| e.kind());
    check(second, Err(ErrorKind::InvalidInput), "a second MPI pool")?;
    // The ranks are the job's: no self-management.
    let resized = pool.resize(3).map_err(|e| e.kind());
    check(resized, Err(ErrorKind::InvalidInput), "resize")?;
    check(pool.processes(), 2, "processes after a refused resize")?;
    let managed = Pool::builder()
        .mpi()
        .idle_timeout(std::time::Duration::from_secs(1))
        .build()
        .map(|_| ())
        .map_err(|e| e.to_string());
    if !managed.as_ref().is_err_and(|e| e.contains("idle_timeout")) {
        return Err(format!("an MPI pool with an idle timeout: {managed:?}"));
    }
    check(pool.apply(square, 7).map_err(err)?, 49, "apply")?;
    let pending = pool.apply_async(square, 8);
    check(pending.get().map_err(err)?, 64, "apply_async")?;
    let chunked = pool.map_chunked(square, 0..10, 3).map_err(err)?;
    check(chunked, (0..10).map(|n| n * n).collect(), "map_chunked")?;
    let asynced = pool.map_async(square, 0..6).get().map_err(err)?;
    check(asynced, vec![0, 1, 4, 9, 16, 25], "map_async")?;
    let summed = pool.starmap(add, [(1, 2), (3, 4)]).map_err(err)?;
    check(summed, vec![3, 7], "starmap")?;
    let ordered: Vec<u64> = pool
        .imap(square, 0..20)
        .collect::<multiproc::Result<_>>()
        .map_err(err)?;
    check(ordered, (0..20).map(|n| n * n).collect(), "imap")?;
    let mut unordered: Vec<u64> = pool
        .imap_unordered(square, 0..20)
        .collect::<multiproc::Result<_>>()
        .map_err(err)?;
    unordered.sort_unstable();
    check(
        unordered,
        (0..20).map(|n| n * n).collect(),
        "imap_unordered",
    )?;
    // Descriptors cannot cross machines: that task fails, the pool goes on.
    let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let fds = vec![multiproc::SharedFd::new(std::os::fd::OwnedFd::from(null))];
    let refused = pool.apply(fd_count, fds).map_err(|e| e.kind());
    check(refused, Err(ErrorKind::Codec), "a task with a descriptor")?;
    check(
        pool.apply(square, 9).map_err(err)?,
        81,
        "apply after a refused task",
    )?;
    pool.close();
    let late = pool.apply(square, 1).map(|_| ()).map_err(|e| e.kind());
    check(late, Err(ErrorKind::NotRunning), "apply after close")?;
    pool.join().map_err(err)
}

fn check<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> Outcome {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

fn large_map() -> Outcome {
    let err = |e: multiproc::Error| e.to_string();
    let local = Pool::new(2).map_err(err)?;
    let expected = local.map(square, 0..100_000).map_err(err)?;
    local.close();
    local.join().map_err(err)?;
    let pool = mpi_pool()?;
    let got = pool.map(square, 0..100_000).map_err(err)?;
    if got != expected {
        return Err("the MPI pool's map differs from the local pool's".to_string());
    }
    pool.close();
    pool.join().map_err(err)
}

fn panic_keeps_serving() -> Outcome {
    let pool = mpi_pool()?;
    let failed = pool
        .map_chunked(panics, 0..6, 1)
        .err()
        .ok_or("a panicking task did not fail")?;
    if failed.kind() != ErrorKind::Panicked || !failed.to_string().contains("deliberate panic") {
        return Err(format!("not the task's panic: {failed}"));
    }
    let panic = failed.remote_panic().ok_or("no remote panic")?;
    if !panic.process.contains("MPI rank") {
        return Err(format!(
            "the panic does not name its rank: {}",
            panic.process
        ));
    }
    // Every rank still serves: a chunk of one item each, more chunks than ranks.
    let again = pool
        .map_chunked(square, 0..10, 1)
        .map_err(|e| e.to_string())?;
    check(again, (0..10).map(|n| n * n).collect(), "map after a panic")?;
    pool.close();
    pool.join().map_err(|e| e.to_string())
}

fn terminate_then_again() -> Outcome {
    let pool = mpi_pool()?;
    let slow = pool.apply_async(sleep_ms, 500);
    std::thread::sleep(Duration::from_millis(50));
    pool.terminate();
    check(
        slow.get().map_err(|e| e.kind()),
        Err(ErrorKind::Terminated),
        "a task of a terminated pool",
    )?;
    pool.join().map_err(|e| e.to_string())?;
    drop(pool);
    // The ranks serve the next pool, the busy one once its late result is in.
    let pool = mpi_pool()?;
    let got = pool
        .map_chunked(square, 0..8, 1)
        .map_err(|e| e.to_string())?;
    check(
        got,
        (0..8).map(|n| n * n).collect(),
        "a pool after terminate",
    )?;
    pool.close();
    pool.join().map_err(|e| e.to_string())
}

/// A result too large for one MPI message (2 GiB at most) fails its task with a codec error,
/// as a task too large does on rank 0; the rank goes on serving.
fn huge_result() -> Outcome {
    let pool = Pool::builder()
        .mpi()
        .processes(1)
        .task_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let len = (i32::MAX as usize) + 1;
    let err = pool
        .apply(bytes_of, len)
        .map(|v| v.len())
        .err()
        .ok_or("a result of 2 GiB crossed MPI")?;
    println!("error: {err}");
    if err.kind() != ErrorKind::Codec {
        return Err(format!("not a codec error: {err}"));
    }
    check(
        pool.apply(square, 5).map_err(|e| e.to_string())?,
        25,
        "apply after a result too large",
    )?;
    pool.close();
    pool.join().map_err(|e| e.to_string())
}

/// Empty inputs and results, results of megabytes, many small tasks, and the pool used from
/// two threads at once.
fn odd_sizes() -> Outcome {
    let err = |e: multiproc::Error| e.to_string();
    let pool = mpi_pool()?;
    check(
        pool.map(square, Vec::<u64>::new()).map_err(err)?,
        vec![],
        "an empty map",
    )?;
    let sizes = [0usize, 1, 3 << 20, 0, 17 << 20, 5];
    let got: Vec<usize> = pool
        .map_chunked(bytes_of, sizes, 1)
        .map_err(err)?
        .iter()
        .map(Vec::len)
        .collect();
    check(got, sizes.to_vec(), "results of odd sizes")?;
    let many = pool.map_chunked(square, 0..5000, 1).map_err(err)?;
    check(many, (0..5000).map(|n| n * n).collect(), "many tasks")?;
    let both = std::thread::scope(|scope| {
        let a = scope.spawn(|| pool.map_chunked(square, 0..300, 1));
        let b = scope.spawn(|| pool.map_chunked(add, (0..300).map(|n| (n, 1)), 2));
        (a.join(), b.join())
    });
    match both {
        (Ok(Ok(a)), Ok(Ok(b))) => {
            check(a, (0..300).map(|n| n * n).collect(), "thread a")?;
            check(b, (1..301).collect(), "thread b")?;
        }
        other => return Err(format!("two threads: {other:?}")),
    }
    // Dropped mid-map (no close): the next pool serves.
    let pending = pool.map_async(sleep_ms, [300u64; 6]);
    std::thread::sleep(Duration::from_millis(50));
    drop(pool);
    check(
        pending.get().map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::Terminated),
        "a map of a dropped pool",
    )?;
    let pool = mpi_pool()?;
    check(pool.apply(square, 6).map_err(err)?, 36, "the next pool")?;
    Ok(())
}

/// A pool terminated while rank 0 receives a large result (its bytes come in parts): the
/// rank's late result is accounted for, and the next pool gets that rank back.
fn terminate_mid_receive() -> Outcome {
    for round in 0..5 {
        let pool = mpi_pool()?;
        let pending = pool.map_async_chunked(bytes_of, [64usize << 20; 8], 1);
        std::thread::sleep(Duration::from_millis(30 + 40 * round));
        pool.terminate();
        let _ = pending.get();
        pool.join().map_err(|e| e.to_string())?;
        drop(pool);
        let pool = mpi_pool()?;
        let again = pool.map_async_chunked(square, 0..4, 1);
        match again.get_timeout(Duration::from_secs(20)) {
            Ok(got) => check(got, vec![0, 1, 4, 9], "the next pool's map")?,
            Err(err) => return Err(format!("round {round}: the next pool's map: {err}")),
        }
    }
    Ok(())
}

fn mismatch() -> Outcome {
    match Pool::builder().mpi().build() {
        Ok(_) => Err("a rank running another binary was accepted".to_string()),
        Err(err) if err.kind() == ErrorKind::BuildMismatch => {
            println!("refused: {err}");
            let text = err.to_string();
            if text.contains("MPI rank") && text.contains("another binary") {
                Ok(())
            } else {
                Err(format!("unclear: {text}"))
            }
        }
        Err(err) => Err(format!("not a build mismatch: {err}")),
    }
}

fn killed() -> Outcome {
    let pool = mpi_pool()?;
    // Open MPI ends the whole job when a rank dies: this call should not return.
    let got = pool.apply(die, ());
    println!("RANK0-SAW {got:?}");
    Err("rank 0 went on after a rank died".to_string())
}

fn stopped() -> Outcome {
    let pool = Pool::builder()
        .mpi()
        .processes(1)
        .task_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let err = pool
        .apply(stop, ())
        .err()
        .ok_or("a stopped rank answered")?;
    println!("error: {err}");
    if err.kind() != ErrorKind::Timeout || !err.to_string().contains("MPI rank 1") {
        return Err(format!("not a timeout naming the rank: {err}"));
    }
    if started.elapsed() > Duration::from_secs(30) {
        return Err("the timeout took too long".to_string());
    }
    Ok(())
}

/// A process that rank 0 starts itself (not through multiproc) from this very binary inherits
/// the launcher's environment, but is no rank: it runs its own `main`.
fn descendant() -> Outcome {
    let _pool = mpi_pool()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg(PLAIN_CHILD)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the plain child did not end within 30 s".to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if !status.success() || !out.contains("PLAIN-CHILD-RAN") {
        return Err(format!("the plain child: {status}, said {out:?}"));
    }
    Ok(())
}

/// The argument of a plain child of rank 0 (see [`descendant`]).
const PLAIN_CHILD: &str = "--plain-child";

/// What one mpirun run gave: `code` is None when mpirun was killed by a signal, or killed here
/// after it outlived its ranks (see [`LAUNCHER_TEARDOWN`]).
struct Run {
    code: Option<i32>,
    output: String,
    took: Duration,
}

const RUN_LIMIT: Duration = Duration::from_secs(120);

/// How long mpirun may outlive the last of its ranks before it is taken as hung in its own
/// teardown (it ends within a second when it does not hang).
const LAUNCHER_TEARDOWN: Duration = Duration::from_secs(15);

/// One `mpirun` at a time: Open MPI 4.1's launchers started together can collide on their
/// session directories (`orte_session_dir failed`), and the machine is small.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn mpirun(ranks: &[(&Path, u32)], name: &str) -> Result<Run, Failed> {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut command = Command::new("mpirun");
    command.args(["--allow-run-as-root", "--oversubscribe"]);
    if let Ok(extra) = std::env::var("MULTIPROC_MPIRUN_ARGS") {
        command.args(extra.split_whitespace());
    }
    for (i, (exe, n)) in ranks.iter().enumerate() {
        if i > 0 {
            command.arg(":");
        }
        command
            .arg("-np")
            .arg(n.to_string())
            .arg(exe)
            .args(["--mpi-scenario", name]);
    }
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run mpirun: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    // What the job prints, kept as it arrives: a hung job's output is read while it hangs.
    let printed = Arc::new(Mutex::new(String::new()));
    let readers = [
        keep_reading(stdout, Arc::clone(&printed)),
        keep_reading(stderr, Arc::clone(&printed)),
    ];
    let mut all_ended_since: Option<Instant> = None;
    let mut looked = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if looked.elapsed() > Duration::from_millis(200) {
            looked = Instant::now();
            let ranks = children_of(child.id());
            if !ranks.is_empty() && ranks.iter().all(|&(_, state)| state == 'Z') {
                if all_ended_since.get_or_insert(looked).elapsed() > LAUNCHER_TEARDOWN {
                    // Every rank has ended, and the launcher has not: Debian's Open MPI 4.1
                    // mpirun can hang in its own teardown (`PMIx_server_finalize`) after a job
                    // ends abnormally. What the ranks did is all there is to check.
                    eprintln!(
                        "mpirun outlived its ranks by {LAUNCHER_TEARDOWN:?} (hung in its own teardown): killed"
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            } else {
                all_ended_since = None;
            }
        }
        if started.elapsed() > RUN_LIMIT {
            // What still runs of the job, before it is ended.
            let left = Command::new("ps")
                .args(["-o", "pid,ppid,stat,wchan:24,args", "--ppid"])
                .arg(child.id().to_string())
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default();
            // SAFETY: signals our own child, mpirun, which ends its job on SIGTERM.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            let printed = printed.lock().map(|s| s.clone()).unwrap_or_default();
            return Err(format!(
                "mpirun still ran after {RUN_LIMIT:?}: a hang. Its ranks:\n{left}It printed:\n{printed}"
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    for reader in readers {
        let _ = reader.join();
    }
    let mut output = printed.lock().map(|s| s.clone()).unwrap_or_default();
    if status.is_none() {
        output.push_str(&format!(
            "(every rank had ended for {LAUNCHER_TEARDOWN:?} and mpirun had not: it was killed)\n"
        ));
    }
    Ok(Run {
        code: status.and_then(|status| status.code()),
        output,
        took,
    })
}

/// The children of `parent` and their states (`R`, `S`, `Z`...), from `/proc`.
fn children_of(parent: u32) -> Vec<(u32, char)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`: the command may hold spaces and parentheses.
            let mut after = stat[stat.rfind(')')? + 1..].split_whitespace();
            let state = after.next()?.chars().next()?;
            let ppid: u32 = after.next()?.parse().ok()?;
            (ppid == parent).then_some((pid, state))
        })
        .collect()
}

/// Appends what `from` yields, line by line, to `to` until its end.
fn keep_reading(from: impl Read + Send + 'static, to: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut to) = to.lock() {
                to.push_str(&line);
                to.push('\n');
            }
        }
    })
}

fn ok_line(name: &str) -> String {
    format!("SCENARIO-OK {name}")
}

/// A scenario that ends well: exit 0 and one `SCENARIO-OK` line (the other ranks never ran
/// `main`).
fn passes(name: &'static str) -> Trial {
    Trial::test(name, move || {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let run = mpirun(&[(&exe, 3)], name)?;
        let oks = run.output.matches(&ok_line(name)).count();
        if run.code != Some(0) || oks != 1 {
            return Err(format!(
                "exit {:?}, {oks} ok lines (want 0 and 1):\n{}",
                run.code, run.output
            )
            .into());
        }
        Ok(())
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == PLAIN_CHILD) {
        println!("PLAIN-CHILD-RAN");
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--mpi-scenario") {
        let name = args.get(i + 1).cloned().unwrap_or_default();
        match scenario(&name) {
            Ok(()) => println!("{}", ok_line(&name)),
            Err(err) => {
                eprintln!("scenario {name} failed: {err}");
                std::process::exit(2);
            }
        }
        return;
    }
    let args = Arguments::from_args();
    let mut trials: Vec<Trial> = [
        "squares",
        "large_map",
        "panic",
        "terminate",
        "descendant",
        "huge_result",
        "odd_sizes",
        "terminate_mid_receive",
        "exit_mid_map",
        "forged",
    ]
    .into_iter()
    .map(passes)
    .collect();
    trials.push(Trial::test("mismatched_binary_is_refused", || {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // Another binary: this one with a byte more (it runs the same, and hashes otherwise).
        let other: PathBuf =
            std::env::temp_dir().join(format!("multiproc-mpi-other-{}", std::process::id()));
        let mut bytes = std::fs::read(&exe).map_err(|e| e.to_string())?;
        bytes.push(0);
        std::fs::write(&other, &bytes).map_err(|e| e.to_string())?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
        }
        let run = mpirun(&[(&exe, 1), (&other, 2)], "mismatch");
        let _ = std::fs::remove_file(&other);
        let run = run?;
        if run.code != Some(0) || !run.output.contains(&ok_line("mismatch")) {
            return Err(format!("exit {:?}:\n{}", run.code, run.output).into());
        }
        Ok(())
    }));
    for (name, np) in [("one_rank", 1), ("two_ranks", 2)] {
        trials.push(Trial::test(name, move || {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let run = mpirun(&[(&exe, np)], name)?;
            if run.code != Some(0) || run.output.matches(&ok_line(name)).count() != 1 {
                return Err(format!("exit {:?}:\n{}", run.code, run.output).into());
            }
            Ok(())
        }));
    }
    trials.push(Trial::test("not_launched_by_mpirun", || {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = Command::new(exe)
            .args(["--mpi-scenario", "not_launched"])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || !text.contains(&ok_line("not_launched")) {
            return Err(format!("{}: {text}", out.status).into());
        }
        Ok(())
    }));
    trials.push(Trial::test(
        "a_rank_that_exits_ends_the_job_promptly",
        || {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let run = mpirun(&[(&exe, 3)], "exits")?;
            println!(
                "ended with {:?} after {:?}:\n{}",
                run.code, run.took, run.output
            );
            if run.code == Some(0) || run.output.contains("SCENARIO-OK") {
                return Err(format!("exit {:?}:\n{}", run.code, run.output).into());
            }
            Ok(())
        },
    ));
    trials.push(Trial::test("a_killed_rank_ends_the_job_promptly", || {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let run = mpirun(&[(&exe, 3)], "killed")?;
        // Open MPI cannot survive a rank's death: the whole job ends, non-zero, never a hang.
        if run.code == Some(0) || run.output.contains("SCENARIO-OK") {
            return Err(format!("exit {:?}:\n{}", run.code, run.output).into());
        }
        println!("ended with {:?} after {:?}", run.code, run.took);
        Ok(())
    }));
    trials.push(Trial::test("a_stopped_rank_times_out_on_rank_0", || {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let run = mpirun(&[(&exe, 3)], "stopped")?;
        // The task fails on rank 0 naming the rank; at exit the stopped rank does not
        // acknowledge the stop, and rank 0 aborts the job.
        if !run.output.contains(&ok_line("stopped")) || run.code == Some(0) {
            return Err(format!("exit {:?}:\n{}", run.code, run.output).into());
        }
        Ok(())
    }));
    trials.push(Trial::test("rank_0_panicking_ends_the_job", || {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let run = mpirun(&[(&exe, 3)], "rank0_panics")?;
        if run.code == Some(0) || !run.output.contains("deliberate panic on rank 0") {
            return Err(format!("exit {:?}:\n{}", run.code, run.output).into());
        }
        Ok(())
    }));
    libtest_mimic::run(&args, trials).exit();
}
