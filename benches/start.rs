//! Start + join of a no-op child, per start method: multiproc against the raw floors (bare
//! `fork` + `waitpid`, bare exec of this binary) and against CPython's `multiprocessing`, all
//! measured in one run and printed as one table. Reports the targets; never fails on them.
//!
//! ```text
//! cargo bench --bench start
//! MULTIPROC_BENCH_ITERS=20 cargo bench --bench start   # quick run: 20 iterations of each
//! MULTIPROC_BENCH_LOOP=fork MULTIPROC_BENCH_ITERS=300 perf stat target/release/deps/start-* --bench
//! ```
//!
//! `MULTIPROC_BENCH_LOOP` (one of `fork`, `forkserver`, `spawn`, `floor-fork`, `floor-exec`)
//! runs only that start + join, `MULTIPROC_BENCH_ITERS` times (default 300) after the warm-up,
//! and prints nothing: for `perf stat` and `strace -c`, whose counts divided by the iterations
//! are per start. With `MULTIPROC_BENCH_TIMED=1` as well, it times each start + join and prints
//! their mean and percentiles (for comparing two builds, each run alternately).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{forced_iters, met, ratio};
use multiproc::{process, Process, StartMethod};

/// Iterations per method when `MULTIPROC_BENCH_ITERS` is not set.
const DEFAULT_ITERS: [(StartMethod, usize); 3] = [
    (StartMethod::Fork, 300),
    (StartMethod::ForkServer, 200),
    (StartMethod::Spawn, 100),
];

/// Untimed starts before each series (the first fork-server start brings up the server).
const WARMUP: usize = 5;

/// The argument that makes `main` exit at once, before `multiproc::init()`: the exec floor.
const BARE_EXIT: &str = "--bare-exit";

#[process]
fn noop() {}

fn main() {
    if std::env::args().nth(1).as_deref() == Some(BARE_EXIT) {
        std::process::exit(0);
    }
    multiproc::init();
    // Any other argument (cargo bench passes `--bench`) is ignored.
    if let Ok(what) = std::env::var("MULTIPROC_BENCH_LOOP") {
        return run_loop(&what);
    }

    let iters = iterations();
    let n = |m: StartMethod| iters.iter().find(|(k, _)| *k == m).map_or(1, |(_, n)| *n);

    eprintln!("measuring fork ({} iterations) ...", n(StartMethod::Fork));
    let (fork, fork_floor) = interleaved(
        n(StartMethod::Fork),
        || start_join(StartMethod::Fork),
        bare_fork,
    );
    eprintln!(
        "measuring forkserver ({} iterations) ...",
        n(StartMethod::ForkServer)
    );
    let forkserver = series(n(StartMethod::ForkServer), || {
        start_join(StartMethod::ForkServer)
    });
    eprintln!("measuring spawn ({} iterations) ...", n(StartMethod::Spawn));
    let (spawn, exec_floor) = interleaved(
        n(StartMethod::Spawn),
        || start_join(StartMethod::Spawn),
        bare_exec,
    );
    eprintln!("measuring CPython ...");
    let cpython = cpython(&iters);

    let rows = [
        Row {
            method: "fork",
            ours: &fork,
            floor: &fork_floor,
            floor_what: "fork+waitpid",
            floor_target: 1.25,
        },
        Row {
            method: "forkserver",
            ours: &forkserver,
            floor: &fork_floor,
            floor_what: "fork+waitpid",
            floor_target: 1.6,
        },
        Row {
            method: "spawn",
            ours: &spawn,
            floor: &exec_floor,
            floor_what: "exec of binary",
            floor_target: 1.15,
        },
    ];
    print_report(&iters, &rows, &cpython);
}

/// `MULTIPROC_BENCH_LOOP`: only the start + join named, in a loop (see the module docs).
fn run_loop(what: &str) {
    let one: fn() = match what {
        "fork" => || start_join(StartMethod::Fork),
        "forkserver" => || start_join(StartMethod::ForkServer),
        "spawn" => || start_join(StartMethod::Spawn),
        "floor-fork" => bare_fork,
        "floor-exec" => bare_exec,
        other => panic!(
            "MULTIPROC_BENCH_LOOP: unknown {other:?} (fork, forkserver, spawn, floor-fork, floor-exec)"
        ),
    };
    for _ in 0..WARMUP {
        one();
    }
    let iters = forced_iters().unwrap_or(300);
    if std::env::var_os("MULTIPROC_BENCH_TIMED").is_none() {
        for _ in 0..iters {
            one();
        }
        return;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        times.push(common::time(one).0);
    }
    let mean = times.iter().sum::<Duration>() / iters.max(1) as u32;
    let s = common::Samples::new(times);
    let us = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
    println!(
        "{what}: {iters} starts + joins, us: mean {} p10 {} p50 {} p90 {}",
        us(mean),
        us(s.quantile(0.1)),
        us(s.quantile(0.5)),
        us(s.quantile(0.9))
    );
}

fn iterations() -> Vec<(StartMethod, usize)> {
    let forced = forced_iters();
    DEFAULT_ITERS
        .iter()
        .map(|&(m, n)| (m, forced.unwrap_or(n)))
        .collect()
}

/// One multiproc start + join.
fn start_join(method: StartMethod) {
    let p = Process::new(noop, ()).with_start_method(method);
    p.start()
        .unwrap_or_else(|err| panic!("{method} start: {err}"));
    let code = p
        .join()
        .unwrap_or_else(|err| panic!("{method} join: {err}"));
    assert_eq!(code, 0, "{method} child exit code");
}

/// The fork floor: `fork`, the child `_exit(0)`s at once, the parent `waitpid`s.
fn bare_fork() {
    // SAFETY: this process is single-threaded; the child only calls `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: async-signal-safe, never returns.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out-pointer.
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(reaped, pid, "waitpid: {}", std::io::Error::last_os_error());
}

/// The spawn floor: exec this binary with `--bare-exit` (std's `Command`, no pre_exec) and wait.
fn bare_exec() {
    let exe = current_exe();
    let status = Command::new(exe)
        .arg(BARE_EXIT)
        .status()
        .unwrap_or_else(|err| panic!("cannot execute {}: {err}", exe.display()));
    assert!(status.success(), "bare exec: {status}");
}

fn current_exe() -> &'static std::path::Path {
    static EXE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(|| std::env::current_exe().expect("current_exe"))
}

/// Timings of one series, sorted.
struct Samples(Vec<Duration>);

impl Samples {
    fn new(mut v: Vec<Duration>) -> Samples {
        v.sort_unstable();
        Samples(v)
    }

    fn quantile(&self, q: f64) -> Duration {
        let v = &self.0;
        let pos = q * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        let frac = pos - lo as f64;
        v[lo].mul_f64(1.0 - frac) + v[hi].mul_f64(frac)
    }

    fn median_us(&self) -> f64 {
        self.quantile(0.5).as_secs_f64() * 1e6
    }
}

fn time(f: &mut impl FnMut()) -> Duration {
    let t0 = Instant::now();
    f();
    t0.elapsed()
}

fn series(iters: usize, mut f: impl FnMut()) -> Samples {
    for _ in 0..WARMUP {
        f();
    }
    Samples::new((0..iters).map(|_| time(&mut f)).collect())
}

/// Two series measured in alternation, so that drift of the machine hits both alike.
fn interleaved(iters: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (Samples, Samples) {
    for _ in 0..WARMUP {
        a();
        b();
    }
    let (mut sa, mut sb) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for _ in 0..iters {
        sa.push(time(&mut a));
        sb.push(time(&mut b));
    }
    (Samples::new(sa), Samples::new(sb))
}

/// CPython's medians in microseconds, by name (`fork`, `forkserver`, `spawn`, `startup`,
/// `startup_nosite`), or why there are none.
type CPython = Result<Vec<(String, f64)>, String>;

fn cpython(iters: &[(StartMethod, usize)]) -> CPython {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/start_cpython.py");
    let n = |m: StartMethod| {
        iters
            .iter()
            .find(|(k, _)| *k == m)
            .map_or(1, |(_, n)| *n)
            .to_string()
    };
    let values = common::run_cpython(
        script,
        &[
            n(StartMethod::Fork),
            n(StartMethod::ForkServer),
            n(StartMethod::Spawn),
        ],
    )?;
    Ok(values
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.parse().ok()?)))
        .collect())
}

fn cpython_us(cpython: &CPython, name: &str) -> Option<f64> {
    cpython
        .as_ref()
        .ok()?
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
}

struct Row<'a> {
    method: &'static str,
    ours: &'a Samples,
    floor: &'a Samples,
    floor_what: &'static str,
    floor_target: f64,
}

/// `us` microseconds in milliseconds.
fn ms(us: f64) -> String {
    common::ms(us / 1e6)
}

fn print_report(iters: &[(StartMethod, usize)], rows: &[Row<'_>], cpython: &CPython) {
    let counts: Vec<String> = iters.iter().map(|(m, n)| format!("{n} ({m})")).collect();
    println!();
    println!(
        "start+join of a no-op child, median of {} after {WARMUP} warm-up starts ({}-core machine; compare within one run only)",
        counts.join(", "),
        multiproc::cpu_count()
    );
    println!(
        "{:<11} {:>10}   {:<26} {:>8}   {:>10}   {:>19}",
        "method", "multiproc", "floor (what)", "x floor", "CPython", "CPython / multiproc"
    );
    for row in rows {
        let (ours, floor) = (row.ours.median_us(), row.floor.median_us());
        let py = cpython_us(cpython, row.method);
        println!(
            "{:<11} {:>10}   {:<26} {:>8}   {:>10}   {:>19}",
            row.method,
            ms(ours),
            format!("{} ({})", ms(floor), row.floor_what),
            ratio(ours / floor),
            py.map_or("n/a".to_string(), ms),
            py.map_or("n/a".to_string(), |py| ratio(py / ours)),
        );
    }
    println!("targets (issue 12): fork <= 1.25x floor, forkserver <= 1.6x floor, spawn <= 1.15x floor, each >= 10x faster than CPython");
    for row in rows {
        let r = row.ours.median_us() / row.floor.median_us();
        println!(
            "  {:<10} <= {}x floor ({}): {r:.2}x -> {}",
            row.method,
            row.floor_target,
            row.floor_what,
            met(r <= row.floor_target)
        );
    }
    for row in rows {
        match cpython_us(cpython, row.method) {
            Some(py) => {
                let r = py / row.ours.median_us();
                println!(
                    "  {:<10} >= 10x faster than CPython: {r:.1}x -> {}",
                    row.method,
                    met(r >= 10.0)
                );
            }
            None => println!("  {:<10} >= 10x faster than CPython: n/a", row.method),
        }
    }

    println!("spread (min / median / p90):");
    let spread = |name: &str, s: &Samples| {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "  {name:<26} {:>9} / {:>9} / {:>9}",
            ms(us(s.quantile(0.0))),
            ms(us(s.quantile(0.5))),
            ms(us(s.quantile(0.9)))
        );
    };
    for row in rows {
        spread(&format!("multiproc {}", row.method), row.ours);
    }
    spread("floor fork+waitpid", rows[0].floor);
    spread("floor exec of binary", rows[2].floor);

    match cpython {
        Ok(_) => {
            let (site, nosite) = (
                cpython_us(cpython, "startup"),
                cpython_us(cpython, "startup_nosite"),
            );
            let measured = match (site, nosite) {
                (Some(site), Some(nosite)) => format!(
                    " (measured now: `python3 -c pass` {}, `python3 -S -c pass` {}, i.e. +{})",
                    ms(site),
                    ms(nosite),
                    ms(site - nosite)
                ),
                _ => String::new(),
            };
            println!(
                "note: a site start-up hook on this machine (a .pth in site-packages, imported by `site`) adds ~50 ms to \
                 every CPython interpreter start{measured}. It inflates CPython's spawn figure (each spawn child is a new \
                 interpreter) and the start of its fork server (excluded here by the warm-up); fork children, and fork-server \
                 children once the server runs, do not pay it."
            );
        }
        Err(why) => println!("note: CPython columns are n/a: {why}"),
    }
}
