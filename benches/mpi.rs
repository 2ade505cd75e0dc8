//! The MPI pool beside `mpi4py.futures.MPIPoolExecutor`, in one run, both under
//! `mpirun --oversubscribe -np 3` (rank 0 drives, 2 ranks serve) against the same Open MPI.
//! Reports the targets; never fails on them.
//!
//! ```text
//! pip install mpi4py        # built against the system's Open MPI
//! cargo bench --features mpi --bench mpi
//! MULTIPROC_BENCH_ITERS=3 cargo bench --features mpi --bench mpi   # quick run
//! ```
//!
//! Rows (the same work on both sides):
//!
//! * map: `pool.map(square, 0..1_000_000)`, chunks of 125,000 (multiproc's default for 2
//!   workers, given to mpi4py as its `chunksize`).
//! * apply: sequential `pool.apply(square, n)` against `executor.submit(square, n).result()`,
//!   per call (the median of 2,000).
//! * primes: a naive prime count over `0..400_000` in 64 `(lo, hi)` chunks with `starmap`.
//!
//! `MULTIPROC_MPIRUN_ARGS` adds words to both `mpirun` commands (e.g. `--mca btl tcp,self`).

use std::process::Command;
use std::time::{Duration, Instant};

use multiproc::{process, Pool};

mod common;

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[process]
fn count_primes(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&n| common::is_prime(n)).count() as u64
}

const UNDER_MPI: &str = "--under-mpi";
const MAP_ITEMS: u64 = 1_000_000;
const APPLY_WARMUP: u64 = 200;
const PRIME_N: u64 = 400_000;
const CHUNKS: u64 = 64;

struct Iters {
    map: usize,
    apply: usize,
    primes: usize,
}

fn iters() -> Iters {
    match std::env::var("MULTIPROC_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => Iters {
            map: n,
            apply: n * 100,
            primes: n,
        },
        None => Iters {
            map: 10,
            apply: 2000,
            primes: 5,
        },
    }
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64()
}

fn timed(iters: usize, warmup: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let samples = (0..iters)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed()
        })
        .collect();
    median(samples)
}

fn prime_chunks(n: u64, chunks: u64) -> Vec<(u64, u64)> {
    let step = n.div_ceil(chunks);
    (0..chunks)
        .map(|i| ((i * step).min(n), ((i + 1) * step).min(n)))
        .collect()
}

/// Rank 0 under mpirun: the workloads, one `<name> <value>` line each.
fn under_mpi(iters: &Iters) -> multiproc::Result<()> {
    let pool = Pool::builder().mpi().build()?;
    println!("ranks {}", pool.processes());
    let expected = (MAP_ITEMS - 1) * (MAP_ITEMS - 1);
    let map_s = timed(iters.map, 1, || {
        let out = pool.map(square, 0..MAP_ITEMS).expect("map");
        assert_eq!(out[out.len() - 1], expected);
    });
    println!("map_s {map_s}");
    for n in 0..APPLY_WARMUP {
        assert_eq!(pool.apply(square, n)?, n * n);
    }
    let mut samples = Vec::with_capacity(iters.apply);
    for n in 0..iters.apply as u64 {
        let t0 = Instant::now();
        let v = pool.apply(square, n)?;
        samples.push(t0.elapsed());
        assert_eq!(v, n * n);
    }
    println!("apply_s {}", median(samples));
    let chunks = prime_chunks(PRIME_N, CHUNKS);
    let total: u64 = pool.starmap(count_primes, chunks.clone())?.iter().sum();
    let primes_s = timed(iters.primes, 0, || {
        let counts = pool.starmap(count_primes, chunks.clone()).expect("starmap");
        assert_eq!(counts.iter().sum::<u64>(), total);
    });
    println!("primes_s {primes_s}");
    println!("primes {total}");
    pool.close();
    pool.join()
}

/// Runs `program args` under `mpirun -np 3`; its `<name> <value>` lines.
fn mpirun(program: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut command = Command::new("timeout");
    command.args([
        "600",
        "mpirun",
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        "3",
    ]);
    if let Ok(extra) = std::env::var("MULTIPROC_MPIRUN_ARGS") {
        command.args(extra.split_whitespace());
    }
    let output = command
        .args(program)
        .output()
        .map_err(|e| format!("cannot run mpirun: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{:?} failed ({}):\n{}{}",
            program,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name.to_string(), value.trim().to_string()))
        })
        .collect())
}

fn value(lines: &[(String, String)], name: &str) -> Option<f64> {
    lines
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn show(seconds: Option<f64>) -> String {
    match seconds {
        None => "n/a".to_string(),
        Some(s) if s < 1e-3 => format!("{:.1} us", s * 1e6),
        Some(s) => format!("{:.2} ms", s * 1e3),
    }
}

fn main() {
    let iters = iters();
    if std::env::args().any(|a| a == UNDER_MPI) {
        if let Err(err) = under_mpi(&iters) {
            eprintln!("mpi bench: {err}");
            std::process::exit(1);
        }
        return;
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    let exe = exe.to_string_lossy().into_owned();
    let ours = match mpirun(&[&exe, UNDER_MPI]) {
        Ok(lines) => lines,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(1);
        }
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/mpi_cpython.py");
    let (map, apply, primes) = (
        iters.map.to_string(),
        iters.apply.to_string(),
        iters.primes.to_string(),
    );
    let prime_n = PRIME_N.to_string();
    let theirs = mpirun(&[
        "python3",
        "-m",
        "mpi4py.futures",
        script,
        &map,
        &apply,
        &primes,
        &prime_n,
    ])
    .unwrap_or_else(|err| {
        eprintln!("mpi4py.futures: n/a ({err})");
        Vec::new()
    });
    if let (Some(a), Some(b)) = (value(&ours, "primes"), value(&theirs, "primes")) {
        assert_eq!(a, b, "both sides count the same primes");
    }
    println!("MPI pool, mpirun --oversubscribe -np 3 (rank 0 drives 2 ranks); medians");
    println!(
        "{:<34} {:>12} {:>16} {:>9} {:>7}",
        "row", "multiproc", "mpi4py.futures", "ratio", "target"
    );
    for (row, name, target) in [
        ("map(square, 0..1M)", "map_s", 10.0),
        ("apply(square, n) round trip", "apply_s", 10.0),
        ("starmap(count_primes, 64 chunks)", "primes_s", 1.0),
    ] {
        let (a, b) = (value(&ours, name), value(&theirs, name));
        let ratio = match (a, b) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.1}x", b / a),
            _ => "n/a".to_string(),
        };
        let met = match (a, b) {
            (Some(a), Some(b)) if b / a >= target => "met",
            (Some(_), Some(_)) => "MISSED",
            _ => "n/a",
        };
        println!(
            "{row:<34} {:>12} {:>16} {ratio:>9} {:>7}",
            show(a),
            show(b),
            format!(">={target}x {met}")
        );
    }
}
