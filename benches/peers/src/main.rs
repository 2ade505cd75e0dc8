//! The peers benchmark: runs multiproc's, procspawn's, crossmist's and mitosis's binaries one
//! after the other (each library re-executes its own binary for its children, so each gets a
//! binary of its own) and prints one table of medians.
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml
//! PEERS_SCALE=10 cargo run --release --manifest-path benches/peers/Cargo.toml  # quick
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use multiproc_peers::{scaled, APPLIES, MAP_ITEMS, STARTS, TRIPS};

const BINARIES: [&str; 4] = [
    "peer-multiproc",
    "peer-procspawn",
    "peer-crossmist",
    "peer-mitosis",
];

fn main() {
    // The peers' binaries built first, every one: `cargo run --bin multiproc-peers` builds
    // this runner alone, and a peer binary left from an older build would be measured
    // silently (multiproc's own, against the library as it was then).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .args(["build", "--release", "--bins", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(
        built.success(),
        "building the peers' binaries failed: {built}"
    );
    let dir = std::env::current_exe()
        .expect("current_exe")
        .parent()
        .expect("a directory")
        .to_path_buf();
    // workload -> variant -> seconds
    let mut results: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut failures = Vec::new();
    for bin in BINARIES {
        let path: PathBuf = dir.join(bin);
        eprintln!("running {} ...", path.display());
        let out = Command::new(&path).output().unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (build with `cargo build --release --bins`)",
                path.display()
            )
        });
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            eprintln!("{bin} failed ({}):\n{stderr}", out.status);
            // The panic message: the line after "panicked at".
            let why = stderr
                .lines()
                .skip_while(|l| !l.contains("panicked at"))
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            failures.push(format!("{bin}: {} ({why})", out.status));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut parts = line.split_whitespace();
            if let (Some(w), Some(v), Some(s)) = (parts.next(), parts.next(), parts.next()) {
                if let Ok(secs) = s.parse::<f64>() {
                    results.entry(w.into()).or_default().insert(v.into(), secs);
                }
            }
        }
    }
    print_report(&results);
    if !failures.is_empty() {
        println!();
        println!("failed (the workloads after the failure have no figure):");
        for f in failures {
            println!("  {f}");
        }
    }
}

fn human(secs: f64) -> String {
    if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.1} us", secs * 1e6)
    }
}

fn print_report(results: &BTreeMap<String, BTreeMap<String, f64>>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "multiproc and its Rust peers ({cores}-core machine; medians; compare within one run only)"
    );
    println!();
    println!("| workload | library | median | x multiproc |");
    println!("|---|---|---|---|");
    let order = ["start", "apply", "map", "rtt"];
    for w in order {
        let Some(row) = results.get(w) else { continue };
        // The baseline: multiproc's spawn for start-up (the peers re-execute the binary too),
        // multiproc's only variant elsewhere.
        let best = row
            .iter()
            .filter(|(v, _)| v.as_str() == "multiproc" || v.as_str() == "multiproc-spawn")
            .map(|(_, &s)| s)
            .fold(f64::INFINITY, f64::min);
        let mut entries: Vec<_> = row.iter().collect();
        entries.sort_by(|a, b| a.1.total_cmp(b.1));
        for (variant, &secs) in entries {
            let ratio = if variant.starts_with("multiproc") {
                String::new()
            } else {
                format!("{:.1}x", secs / best)
            };
            println!("| {w} | {variant} | {} | {ratio} |", human(secs));
        }
    }
    println!();
    println!("x multiproc: the peer's time over multiproc's (for start: multiproc-spawn, the same mechanism); > 1: multiproc is faster.");
    println!(
        "  start: start + join of a child that gets a u64 (and, for the peers, returns it), median of {}; multiproc with each start method, the peers re-execute the binary (like spawn).",
        scaled(STARTS)
    );
    println!(
        "  apply: a sequential call of square(u64) on a pool of 1 process, median of {} after 200 warm-up (multiproc pool.apply, forkserver; procspawn Pool::spawn + join).",
        scaled(APPLIES)
    );
    println!(
        "  map: squares of 0..{MAP_ITEMS} on a pool of 2 processes, median of 5 (multiproc pool.map; procspawn: a Pool::spawn per item, 256 in flight at a time, since each pending task holds descriptors)."
    );
    println!(
        "  rtt: a u64 round trip to a long-lived echoing child, median of {} after 1000 warm-up (multiproc Pipe::duplex; crossmist Duplex::request). procspawn and mitosis have no channel of their own.",
        scaled(TRIPS)
    );
}
