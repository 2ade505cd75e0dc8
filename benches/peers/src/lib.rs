//! What the per-library binaries share: the iteration counts, a timer and the report lines
//! they print for the driver (`src/main.rs`).

use std::time::{Duration, Instant};

/// Start + join of a child, per library and start method.
pub const STARTS: usize = 100;
/// `u64` round trips over a channel to a long-lived child.
pub const TRIPS: usize = 10_000;
/// Sequential `apply`-like calls on a pool of one process.
pub const APPLIES: usize = 2_000;
/// Squares mapped over a pool of two processes.
pub const MAP_ITEMS: u64 = 10_000;

/// `n`, or `n` scaled down by `PEERS_SCALE` (a divisor, for a quick run).
pub fn scaled(n: usize) -> usize {
    let div = std::env::var("PEERS_SCALE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&d| d > 0)
        .unwrap_or(1);
    (n / div).max(1)
}

/// The median of `runs` timings of `f`, each over `per` repetitions: seconds per repetition.
pub fn median_per(runs: usize, per: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2].as_secs_f64() / per as f64
}

/// One result line for the driver: `<workload> <variant> <seconds>`.
pub fn report(workload: &str, variant: &str, secs: f64) {
    println!("{workload} {variant} {secs:e}");
}
