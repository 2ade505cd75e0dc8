//! Fuzzes every decoder multiproc reads from another process, on stable Rust: seeded random
//! and mutated inputs thrown at the targets of `multiproc_runtime::__fuzz` (bootstrap frames,
//! pool messages, channel records, codec values).
//!
//! ```text
//! cargo run --release -p multiproc-fuzz                      # corpus, then 1,000,000 inputs
//! MULTIPROC_FUZZ_SEED=1234 cargo run --release -p multiproc-fuzz   # replay a run
//! MULTIPROC_FUZZ_COUNT=50000 MULTIPROC_FUZZ_TARGETS=pool-reply cargo run -p multiproc-fuzz
//! ```
//!
//! Each input must be decoded (or refused) without a panic, within [`HANG`], with no single
//! allocation above [`MAX_ALLOCATION`] and at most [`MAX_PEAK`] bytes live above what was live
//! before it (a counting global allocator, per thread): that bounds address space. Memory
//! proper is bounded too: the process's peak resident size (`getrusage`) may never rise more
//! than [`MAX_RESIDENT_GROWTH`] above where the run started, so a decoder that zero-fills a
//! declared length fails even when it is below the allocation bound. The first input that breaks a rule is
//! printed in hex with the seed and its number, and the run fails; its hex goes into
//! `fuzz/corpus/<target>/`, which every run replays first (also under `cargo test`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use multiproc_runtime::__fuzz::{Target, AHEAD, TARGETS};

/// Inputs are at most this long (a socket's buffer holds them whole).
const MAX_INPUT: usize = 64 << 10;
/// The largest single allocation an input may cause: the address space a decoder reserves
/// ahead of one declared part (64 MiB, touched only as bytes arrive), plus the codec's own
/// claim for an input of this size (64 KiB) and a reader's buffer (64 KiB).
const MAX_ALLOCATION: usize = AHEAD + (1 << 20);
/// The most bytes an input may hold live at once: one reservation ahead, and what the input's
/// own bytes become (a few times their length).
const MAX_PEAK: usize = AHEAD + (4 << 20);
/// How far the process's peak resident size may rise during a run: inputs are 64 KiB, so
/// anything near this is memory that followed a declared length, not bytes that came.
const MAX_RESIDENT_GROWTH: u64 = 16 << 20;
/// Longest an input may take.
const HANG: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Counting allocator

/// The system allocator, counting the allocations of each thread: bytes live, the peak of
/// that since the last reset, and the largest single allocation.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn grew(size: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(size);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

fn shrank(size: usize) {
    // Memory allocated by another thread may be freed here: never below zero.
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size)));
}

// SAFETY: every call is passed to `System` unchanged; the counting only touches
// const-initialised thread-locals without destructors (no allocation, no reentrance).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What one input cost: the largest allocation, and the peak of live bytes above the start.
fn measured(run: impl FnOnce()) -> (usize, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    LARGEST.with(|largest| largest.set(0));
    run();
    let peak = PEAK.with(Cell::get).saturating_sub(base);
    (LARGEST.with(Cell::get), peak)
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// xorshift64*: small, fast, and the same sequence for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: any seed (0 too) gives a good state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Lengths and counts that sit on the edges of what the decoders allow.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    7,
    8,
    24,
    252,
    253,
    254,
    255,
    256,
    4 << 10,
    (4 << 10) + 1,
    64 << 10,
    (64 << 20) - 1,
    64 << 20,
    (64 << 20) + 1,
    1 << 20,
    (1 << 20) + 1,
    0x3FFF_FFF0,
    1 << 31,
    u32::MAX as u64,
    1 << 32,
    (4 << 30) + 1,
    i64::MAX as u64,
    u64::MAX,
];

/// A new input: random bytes now and then, else a mutated seed.
fn generate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if seeds.is_empty() || rng.below(8) == 0 {
        let len = if rng.below(4) == 0 {
            rng.below(MAX_INPUT + 1)
        } else {
            rng.below(64)
        };
        return (0..len).map(|_| rng.next() as u8).collect();
    }
    let mut input = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        mutate(rng, &mut input, seeds);
    }
    input.truncate(MAX_INPUT);
    input
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let at = |rng: &mut Rng, len: usize| rng.below(len + 1);
    match rng.below(8) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] = [0, 0xFF, 0x7F, 0x80, rng.next() as u8][rng.below(5)];
        }
        2 | 3 if input.len() >= 4 => {
            // An interesting length, as a u64 or a u32, over whatever is there.
            let value = if rng.below(8) == 0 {
                rng.next()
            } else {
                INTERESTING[rng.below(INTERESTING.len())]
            };
            let width = if rng.below(2) == 0 { 8 } else { 4 };
            let width = width.min(input.len());
            let i = rng.below(input.len() - width + 1);
            input[i..i + width].copy_from_slice(&value.to_le_bytes()[..width]);
        }
        4 => {
            let i = at(rng, input.len());
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(i..i, bytes);
        }
        5 if !input.is_empty() => {
            let i = rng.below(input.len());
            let n = 1 + rng.below((input.len() - i).min(64));
            input.drain(i..i + n);
        }
        6 => {
            let cut = at(rng, input.len());
            input.truncate(cut);
        }
        _ => {
            // A piece of another seed (or of itself), spliced in.
            let other = &seeds[rng.below(seeds.len())];
            if other.is_empty() {
                return;
            }
            let from = rng.below(other.len());
            let n = 1 + rng.below(other.len() - from);
            let piece = other[from..from + n].to_vec();
            let i = at(rng, input.len());
            input.splice(i..i, piece);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Corpus

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// The regression inputs of `target`: `corpus/<target>/*.hex`, hex digits with whitespace
/// and `#` comment lines ignored.
fn corpus(target: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let dir = corpus_dir().join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "hex") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let digits: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
            .collect();
        let bytes = (0..digits.len())
            .step_by(2)
            .map(|i| {
                digits
                    .get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| format!("{} is not hex", path.display()))?;
        out.push((path.display().to_string(), bytes));
    }
    out.sort();
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(32).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for b in chunk {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Runs

/// Where a run is: the input being decoded, and since when (for the watchdog).
static CURRENT: AtomicU64 = AtomicU64::new(0);
static STARTED_NS: AtomicU64 = AtomicU64::new(0);

/// This process's peak resident size, in bytes.
fn peak_resident() -> u64 {
    // SAFETY: `rusage` is plain old data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer for the calling process's usage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as u64 * 1024
}

/// Checks one input against every rule; `Err` says which it broke. `resident_limit`: the
/// peak resident size the process may not pass.
fn check(target: &Target, input: &[u8], resident_limit: u64) -> Result<(usize, usize), String> {
    let outcome = std::panic::catch_unwind(|| measured(|| (target.run)(input)));
    let (largest, peak) = outcome.map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("panicked: {message}")
    })?;
    if largest > MAX_ALLOCATION {
        return Err(format!(
            "allocated {largest} bytes at once (at most {MAX_ALLOCATION})"
        ));
    }
    if peak > MAX_PEAK {
        return Err(format!("held {peak} bytes at once (at most {MAX_PEAK})"));
    }
    let resident = peak_resident();
    if resident > resident_limit {
        return Err(format!(
            "made the process resident in {resident} bytes (at most {resident_limit})"
        ));
    }
    Ok((largest, peak))
}

/// What a run found for one target.
#[derive(Default)]
struct Tally {
    inputs: u64,
    largest: usize,
    peak: usize,
}

/// Replays the corpus, then `count` generated inputs from `seed`, spread over `targets`.
fn run(seed: u64, count: u64, targets: &[&Target]) -> Result<Vec<Tally>, String> {
    // A fixed mmap threshold: glibc otherwise raises it as large blocks are freed, then
    // serves them from its heap and keeps their touched pages when they are freed, and the
    // resident-size check would see what the allocator keeps rather than what decoders touch.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter, which is thread-safe.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10)
    };
    let epoch = Instant::now();
    let resident_limit = peak_resident() + MAX_RESIDENT_GROWTH;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    // The watchdog: an input still running after `HANG` fails the run (it cannot be
    // interrupted, so the process exits).
    let watchdog = std::thread::spawn(move || loop {
        match done_rx.recv_timeout(Duration::from_millis(250)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let started = STARTED_NS.load(Ordering::Acquire);
        let elapsed = epoch.elapsed().as_nanos() as u64;
        if started != 0 && elapsed.saturating_sub(started) > HANG.as_nanos() as u64 {
            eprintln!(
                "multiproc-fuzz: input {} (seed {seed}) hangs: still running after {HANG:?}",
                CURRENT.load(Ordering::Acquire)
            );
            std::process::exit(2);
        }
    });
    let timed = |number: u64, target: &Target, input: &[u8]| {
        CURRENT.store(number, Ordering::Release);
        STARTED_NS.store(epoch.elapsed().as_nanos() as u64 | 1, Ordering::Release);
        let checked = check(target, input, resident_limit);
        STARTED_NS.store(0, Ordering::Release);
        checked
    };

    let mut tallies: Vec<Tally> = targets.iter().map(|_| Tally::default()).collect();
    let mut seeds = Vec::new();
    for (target, tally) in targets.iter().zip(&mut tallies) {
        let mut mine = (target.seeds)();
        for (path, input) in corpus(target.name)? {
            let (largest, peak) = timed(0, target, &input)
                .map_err(|why| format!("{}: corpus input {path}: {why}", target.name))?;
            tally.inputs += 1;
            tally.largest = tally.largest.max(largest);
            tally.peak = tally.peak.max(peak);
            mine.push(input);
        }
        seeds.push(mine);
    }
    let mut rng = Rng::new(seed);
    for number in 1..=count {
        let which = rng.below(targets.len());
        let input = generate(&mut rng, &seeds[which]);
        let (largest, peak) = timed(number, targets[which], &input).map_err(|why| {
            format!(
                "{}: input {number} of seed {seed} {why}\n\
                 replay: MULTIPROC_FUZZ_SEED={seed} MULTIPROC_FUZZ_COUNT={number} \
                 MULTIPROC_FUZZ_TARGETS={}\n\
                 input ({} bytes), for fuzz/corpus/{}/<name>.hex:\n{}",
                targets[which].name,
                targets.iter().map(|t| t.name).collect::<Vec<_>>().join(","),
                input.len(),
                targets[which].name,
                hex(&input)
            )
        })?;
        let tally = &mut tallies[which];
        tally.inputs += 1;
        tally.largest = tally.largest.max(largest);
        tally.peak = tally.peak.max(peak);
    }
    drop(done_tx);
    let _ = watchdog.join();
    Ok(tallies)
}

/// `name`'s value in the environment, parsed; `default` when unset.
fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}={value} is not a number")),
        Err(_) => Ok(default),
    }
}

fn selected() -> Result<Vec<&'static Target>, String> {
    let Ok(names) = std::env::var("MULTIPROC_FUZZ_TARGETS") else {
        return Ok(TARGETS.iter().collect());
    };
    names
        .split(',')
        .map(|name| {
            TARGETS
                .iter()
                .find(|t| t.name == name.trim())
                .ok_or_else(|| {
                    let known: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
                    format!("no target {name:?}; targets: {}", known.join(", "))
                })
        })
        .collect()
}

fn main() {
    let time_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let settings = (|| {
        Ok::<_, String>((
            env_u64("MULTIPROC_FUZZ_SEED", time_seed)?,
            env_u64("MULTIPROC_FUZZ_COUNT", 1_000_000)?,
            selected()?,
        ))
    })();
    let (seed, count, targets) = match settings {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("multiproc-fuzz: {err}");
            std::process::exit(2);
        }
    };
    // A panic is reported with its input below; the default hook would print it once per
    // input first.
    std::panic::set_hook(Box::new(|_| {}));
    println!(
        "multiproc-fuzz: seed {seed}, {count} inputs (replay with MULTIPROC_FUZZ_SEED={seed})"
    );
    println!(
        "bounds per input: one allocation <= {MAX_ALLOCATION} bytes, live <= {MAX_PEAK} bytes, \
         time <= {HANG:?}; peak resident size of the run <= start + {MAX_RESIDENT_GROWTH} bytes"
    );
    let started = Instant::now();
    let resident = peak_resident();
    match run(seed, count, &targets) {
        Ok(tallies) => {
            for (target, tally) in targets.iter().zip(&tallies) {
                println!(
                    "  {:<18} {:>9} inputs  largest allocation {:>9} B  peak live {:>9} B",
                    target.name, tally.inputs, tally.largest, tally.peak
                );
            }
            println!(
                "ok: {:.1?}; peak resident size grew by {} bytes",
                started.elapsed(),
                peak_resident().saturating_sub(resident)
            );
        }
        Err(err) => {
            eprintln!("multiproc-fuzz: FAILED: {err}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness under `cargo test`: the corpus and a few thousand inputs of a fixed seed,
    /// so it cannot rot between CI's long runs.
    #[test]
    fn a_short_run() {
        let count = env_u64("MULTIPROC_FUZZ_COUNT", 3000).unwrap();
        let targets: Vec<&Target> = TARGETS.iter().collect();
        let tallies = run(env_u64("MULTIPROC_FUZZ_SEED", 9).unwrap(), count, &targets)
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(tallies.iter().all(|t| t.inputs > 0));
    }

    #[test]
    fn the_allocation_bound_catches_a_large_allocation() {
        let (largest, peak) = measured(|| drop(std::hint::black_box(vec![0u8; 3 << 20])));
        assert!(largest >= 3 << 20 && peak >= 3 << 20, "{largest} {peak}");
    }

    #[test]
    fn the_generator_repeats_for_a_seed() {
        let seeds = vec![vec![1, 2, 3, 4, 5, 6, 7, 8, 9]];
        let a: Vec<_> = (0..50)
            .scan(Rng::new(5), |rng, _| Some(generate(rng, &seeds)))
            .collect();
        let b: Vec<_> = (0..50)
            .scan(Rng::new(5), |rng, _| Some(generate(rng, &seeds)))
            .collect();
        assert_eq!(a, b);
    }
}
