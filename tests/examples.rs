//! Every tutorial example prints what the tutorial prints (PIDs aside), and ends on its own.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} missing: cargo test builds the examples",
        path.display()
    );
    path
}

/// Runs an example; returns its stdout lines with every number replaced by `N`, and the raw
/// lines.
fn run(name: &str) -> (Vec<String>, Vec<String>) {
    let t = Instant::now();
    let out = Command::new(example(name)).output().expect("run example");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "{name} took {:?}",
        t.elapsed()
    );
    assert!(
        out.status.success(),
        "{name} failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let raw: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let shape = raw.iter().map(|l| numbers_as_n(l)).collect();
    (shape, raw)
}

fn numbers_as_n(line: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

fn numbers(line: &str) -> Vec<u32> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[test]
fn fork_pids() {
    let (shape, raw) = run("fork_pids");
    assert_eq!(
        shape,
        [
            "PID of Parent process is : N",
            "PID of Child process is : N"
        ]
    );
    assert_ne!(numbers(&raw[0]), numbers(&raw[1]));
}

#[test]
fn spawn_three() {
    let (_, raw) = run("spawn_three");
    assert_eq!(
        raw,
        [
            "This is process: 0",
            "This is process: 1",
            "This is process: 2"
        ]
    );
}

#[test]
fn forkserver() {
    let (shape, raw) = run("forkserver");
    assert_eq!(
        shape,
        [
            "Fork server started the child: PID N, its parent N, main is N",
            "This is process: N",
            "This is process: N",
            "This is process: N"
        ]
    );
    let pids = numbers(&raw[0]);
    assert_ne!(
        pids[1], pids[2],
        "the child's parent is the fork server, not main"
    );
}

#[test]
fn daemon() {
    let (_, raw) = run("daemon");
    assert_eq!(raw, ["starting my Process", "ending my Process"]);
}

#[test]
fn terminate() {
    let (_, raw) = run("terminate");
    assert_eq!(
        raw,
        [
            "My Process has terminated, terminating main thread",
            "Terminating Child Process",
            "Child Process successfully terminated"
        ]
    );
}

#[test]
fn current_pid() {
    let (shape, raw) = run("current_pid");
    assert_eq!(
        shape,
        ["PID of Main process is: N", "PID of Child Process is: N"]
    );
    assert_ne!(numbers(&raw[0]), numbers(&raw[1]));
}

#[test]
fn subclass() {
    let (_, raw) = run("subclass");
    let expected: Vec<String> = (1..=5)
        .map(|i| format!("called run method in process: MyProcess-{i}"))
        .collect();
    assert_eq!(raw, expected);
}

#[test]
fn pool() {
    let (_, raw) = run("pool");
    assert_eq!(raw, ["Pool : [0, 1, 4, 9, 16]"]);
}

/// The README's first program (its "Getting started" section).
#[test]
fn getting_started() {
    let (_, raw) = run("getting_started");
    assert_eq!(
        raw,
        [
            "job 0: 3 words",
            "job 1: 6 words",
            "job 2: 9 words",
            "job 3: 12 words"
        ]
    );
}

#[test]
fn values_back() {
    let (_, raw) = run("values_back");
    assert_eq!(
        raw,
        [
            "squares: [1, 4, 9, 16]",
            "stats: 3 values, mean 2.50",
            "the child panicked: deliberate panic: zero has no inverse",
        ]
    );
}

#[test]
fn demo() {
    let (_, raw) = run("demo");
    assert!(raw
        .iter()
        .any(|l| l.contains("called run method in process: MyProcess-")));
}

/// The examples of the channels and shared state: each ends on its own and prints its point.
#[test]
fn channels_and_shared_state() {
    for (name, expected) in [
        ("pipe", "child says: HELLO, PIPE"),
        ("queue", "10 results, every task once: true"),
        ("joinable_queue", "all 20 tasks done"),
        (
            "rlock",
            "child: acquired it once the parent released both levels",
        ),
        ("semaphore", "6 workers ran, at most 2 at a time"),
        ("event", "go!"),
        ("condition", "consumer saw 5 items"),
        ("value", "counter: 40000"),
        ("array", "[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]"),
        ("shared_memory", "a worker filled 16777216 bytes"),
    ] {
        let (_, raw) = run(name);
        assert!(
            raw.iter().any(|l| l.contains(expected)),
            "{name} did not print {expected:?}: {raw:?}"
        );
    }
    for name in ["lock", "barrier"] {
        let (_, raw) = run(name);
        assert!(!raw.is_empty(), "{name} printed nothing");
    }
}
