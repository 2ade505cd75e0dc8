//! What the benchmarks share: timing series and the raw floors' children.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// Timings of one series, sorted.
pub(crate) struct Samples(pub Vec<Duration>);

impl Samples {
    pub(crate) fn new(mut v: Vec<Duration>) -> Samples {
        v.sort_unstable();
        Samples(v)
    }

    pub(crate) fn quantile(&self, q: f64) -> Duration {
        let v = &self.0;
        let pos = q * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        let frac = pos - lo as f64;
        v[lo].mul_f64(1.0 - frac) + v[hi].mul_f64(frac)
    }

    pub(crate) fn median(&self) -> f64 {
        self.quantile(0.5).as_secs_f64()
    }

    /// min / median / p90, formatted with `unit`.
    pub(crate) fn spread(&self, unit: &dyn Fn(f64) -> String) -> String {
        format!(
            "{} / {} / {}",
            unit(self.quantile(0.0).as_secs_f64()),
            unit(self.quantile(0.5).as_secs_f64()),
            unit(self.quantile(0.9).as_secs_f64())
        )
    }
}

pub(crate) fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t0 = Instant::now();
    let value = f();
    (t0.elapsed(), value)
}

/// Forks a raw child that closes `close` (the parent's descriptors of the other children),
/// runs `body` and `_exit`s.
pub(crate) fn fork_raw(close: &[RawFd], body: impl FnOnce()) -> libc::pid_t {
    // SAFETY: this process is single-threaded here (no pool yet); the child only does plain
    // reads, writes and allocations, then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        for &fd in close {
            // SAFETY: descriptors of this process that the child does not use.
            unsafe { libc::close(fd) };
        }
        let ok = std::panic::catch_unwind(AssertUnwindSafe(body)).is_ok();
        // SAFETY: async-signal-safe, never returns; skips the parent's atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    pid
}

/// Reads exactly `buf.len()` bytes; `false` on end of file before the first one.
pub(crate) fn read_all_or_eof(r: &mut impl Read, buf: &mut [u8]) -> bool {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return false,
            Ok(0) => panic!("end of file inside a message"),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => panic!("read: {err}"),
        }
    }
    true
}

/// W3 floor child: answers every 8-byte message with 8 bytes (the square).
pub(crate) fn ping_child(mut from_parent: File, mut to_parent: File) {
    let mut buf = [0u8; 8];
    while read_all_or_eof(&mut from_parent, &mut buf) {
        let n = u64::from_le_bytes(buf);
        to_parent
            .write_all(&n.wrapping_mul(n).to_le_bytes())
            .expect("ping child write");
    }
}

/// W4 floor child: for each request (an 8-byte length, then that many bytes), reads the bytes
/// into a buffer it reuses and answers the length in 8 bytes.
pub(crate) fn bulk_child(mut sock: UnixStream) {
    let mut buf = Vec::new();
    let mut header = [0u8; 8];
    while read_all_or_eof(&mut sock, &mut header) {
        let len = u64::from_le_bytes(header) as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        assert!(read_all_or_eof(&mut sock, &mut buf[..len]));
        sock.write_all(&(len as u64).to_le_bytes())
            .expect("bulk child write");
    }
}

pub(crate) fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: two fresh descriptors that nothing else owns.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

/// `MULTIPROC_BENCH_ITERS`, when set to a positive number: every count of a quick run.
pub(crate) fn forced_iters() -> Option<usize> {
    let v = std::env::var("MULTIPROC_BENCH_ITERS").ok()?;
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            eprintln!("MULTIPROC_BENCH_ITERS={v:?} is not a positive number: using the defaults");
            None
        }
    }
}

/// A ratio for the report: two decimals below 10, none above.
pub(crate) fn ratio(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.2}x")
    } else {
        format!("{r:.0}x")
    }
}

/// A target's verdict for the report.
pub(crate) fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// `name value` lines printed by a CPython script or a re-executed phase.
pub(crate) type Values = Result<Vec<(String, String)>, String>;

pub(crate) fn parse_values(stdout: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(' ')?;
            Some((name.to_string(), value.trim().to_string()))
        })
        .collect()
}

pub(crate) fn value<T: std::str::FromStr>(values: &Values, name: &str) -> Option<T> {
    values
        .as_ref()
        .ok()?
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// Runs a CPython benchmark script of `benches/` with `args` and collects the `name value`
/// lines it prints; an error says why there are none (python3 missing, the script failed).
pub(crate) fn run_cpython(script: &str, args: &[String]) -> Values {
    let output = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|err| format!("cannot run python3: {err}"))?;
    if !output.status.success() {
        return Err(format!("python3 {script} failed: {}", output.status));
    }
    let values = parse_values(&output.stdout);
    if values.is_empty() {
        return Err(format!("python3 {script} printed nothing usable"));
    }
    Ok(values)
}

/// `secs` in milliseconds, with two, one or no decimals as it grows.
pub(crate) fn ms(secs: f64) -> String {
    let ms = secs * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// `secs` in microseconds.
pub(crate) fn us(secs: f64) -> String {
    format!("{:.1} us", secs * 1e6)
}

/// The prime test of the prime-count workloads (the same as the CPython scripts'
/// `benches/primes.py`): trial division by 2 and the odd numbers up to the square root.
pub(crate) fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}
