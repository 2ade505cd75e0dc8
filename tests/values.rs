//! Values back from a process: `multiproc::spawn` and `JoinHandle` under every start method
//! (values, panics, exits, signals, timeouts, dropped handles), and the panic message of a
//! binary built with `panic = "abort"` (the fixture crate `tests/fixtures/abort`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{is_gone, Outcome, LONG};
use multiproc::{
    active_children, process, ErrorKind, Event, JoinHandle, Process, ProcessBuilder, Queue,
    SharedMemory, StartMethod,
};
use serde::{Deserialize, Serialize};

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[process]
fn shout(text: String) -> String {
    text.to_uppercase()
}

#[process]
fn countdown(from: u32) -> Vec<u32> {
    (0..=from).rev().collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Summary {
    name: String,
    total: i64,
    parts: Vec<(u8, Option<String>)>,
}

#[process]
fn summarize(name: String, values: Vec<i64>) -> Summary {
    Summary {
        total: values.iter().sum(),
        parts: vec![(1, None), (2, Some(name.clone()))],
        name,
    }
}

/// Far more than a socket's buffer: the child must not wait for its parent to read.
#[process]
fn big(n: usize) -> Vec<u64> {
    (0..n as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect()
}

/// A result written `Vec<u8>` has its own carrier.
#[process]
fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[process]
fn filled_queue(n: u64) -> Queue<u64> {
    let queue = Queue::new().expect("a queue");
    for i in 0..n {
        queue.put(i).expect("put");
    }
    queue
}

#[process]
fn written_memory(text: String) -> SharedMemory {
    let memory = SharedMemory::new(text.len()).expect("shared memory");
    memory.write_at(0, text.as_bytes()).expect("write");
    memory
}

#[process]
fn panicking(message: String) -> u64 {
    panic!("{message}");
}

#[process]
fn exiting(code: i32) -> u64 {
    std::process::exit(code);
}

/// Returns once `go` is set.
#[process]
fn waits_for(go: Event, value: u64) -> u64 {
    go.wait().expect("wait");
    value
}

fn spawn_with<T: multiproc::Target>(
    m: StartMethod,
    target: T,
    args: T::Args,
) -> Result<JoinHandle<T::Output>, libtest_mimic::Failed> {
    ProcessBuilder::new()
        .start_method(m)
        .spawn(target, args)
        .map_err(|err| format!("spawn under {m}: {err}").into())
}

/// Joins, bounded: a hung child fails the trial instead of the run.
fn join<R>(mut handle: JoinHandle<R>) -> multiproc::Result<R> {
    let outcome = handle.join_timeout(LONG);
    if matches!(&outcome, Err(err) if err.kind() == ErrorKind::Timeout) {
        let _ = handle.process().kill();
    }
    outcome
}

fn value_back(m: StartMethod) -> Outcome {
    check_eq!(join(spawn_with(m, square, 7)?)?, 49);
    let handle = spawn_with(m, square, 12)?;
    check_eq!(handle.process().start_method(), Some(m));
    check_eq!(join(handle)?, 144);
    Ok(())
}

fn rich_values_back(m: StartMethod) -> Outcome {
    check_eq!(join(spawn_with(m, shout, "héllo".to_string())?)?, "HÉLLO");
    check_eq!(join(spawn_with(m, countdown, 3)?)?, vec![3, 2, 1, 0]);
    let summary = join(spawn_with(
        m,
        summarize,
        ("s".to_string(), vec![4, -1, 10]),
    )?)?;
    check_eq!(
        summary,
        Summary {
            name: "s".into(),
            total: 13,
            parts: vec![(1, None), (2, Some("s".into()))],
        }
    );
    Ok(())
}

fn large_values_back(m: StartMethod) -> Outcome {
    // 8 MB and 3 MB: a child that sent them on its socket would wait for a parent that reads
    // only once it has exited.
    let n = 1 << 20;
    let values = join(spawn_with(m, big, n)?)?;
    check_eq!(values.len(), n);
    check!(
        values
            .iter()
            .enumerate()
            .all(|(i, v)| *v == (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        "wrong values"
    );
    let got = join(spawn_with(m, bytes, 3 << 20)?)?;
    check!(
        got.len() == 3 << 20 && got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
        "wrong bytes"
    );
    check_eq!(join(spawn_with(m, bytes, 10)?)?.len(), 10);
    Ok(())
}

fn descriptors_back(m: StartMethod) -> Outcome {
    let queue = join(spawn_with(m, filled_queue, 3)?)?;
    let got: Vec<u64> = (0..3)
        .map(|_| queue.get_timeout(LONG))
        .collect::<Result<_, _>>()?;
    check_eq!(got, vec![0, 1, 2]);
    let memory = join(spawn_with(m, written_memory, "shared".to_string())?)?;
    let mut buf = [0u8; 6];
    memory.read_at(0, &mut buf)?;
    check_eq!(&buf, b"shared");
    Ok(())
}

fn panic_is_an_error(m: StartMethod) -> Outcome {
    let handle = spawn_with(m, panicking, "deliberate panic in the child".to_string())?;
    let pid = handle.pid() as i32;
    let name = handle.process().name();
    let err = join(handle).err().ok_or("a panic is an error")?;
    check_eq!(err.kind(), ErrorKind::Panicked);
    let panic = err.remote_panic().ok_or("the panic is data")?;
    check_eq!(panic.message, "deliberate panic in the child");
    check!(
        panic
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with("tests/values.rs:")),
        "location {:?}",
        panic.location
    );
    check_eq!((panic.process.as_str(), panic.pid), (name.as_str(), pid));
    check!(
        common::chain(&err).contains("panicked at tests/values.rs:"),
        "{err}"
    );
    Ok(())
}

fn exit_code_is_an_error(m: StartMethod) -> Outcome {
    let err = join(spawn_with(m, exiting, 3)?)
        .err()
        .ok_or("exit(3) is an error")?;
    check_eq!(err.kind(), ErrorKind::Died);
    check!(common::chain(&err).contains("exited with code 3"), "{err}");
    // Exiting with 0 from inside the function is no return either.
    let err = join(spawn_with(m, exiting, 0)?)
        .err()
        .ok_or("exit(0) is no value")?;
    check_eq!(err.kind(), ErrorKind::Died);
    check!(
        common::chain(&err).contains("exited with code 0 without returning a value"),
        "{err}"
    );
    Ok(())
}

fn signal_is_an_error(m: StartMethod) -> Outcome {
    let go = Event::new()?;
    let handle = spawn_with(m, waits_for, (go.clone(), 1))?;
    handle.process().kill()?;
    let err = join(handle).err().ok_or("a kill is an error")?;
    check_eq!(err.kind(), ErrorKind::Died);
    check!(common::chain(&err).contains("killed by SIGKILL"), "{err}");
    Ok(())
}

fn timeout_leaves_the_handle_usable(m: StartMethod) -> Outcome {
    let go = Event::new()?;
    let mut handle = spawn_with(m, waits_for, (go.clone(), 5))?;
    let err = handle
        .join_timeout(Duration::from_millis(50))
        .err()
        .ok_or("the child waits: no value yet")?;
    check_eq!(err.kind(), ErrorKind::Timeout);
    check!(!handle.is_finished(), "still running");
    go.set();
    check_eq!(handle.join_timeout(LONG)?, 5);
    let again = handle
        .join_timeout(LONG)
        .err()
        .ok_or("the value is returned once")?;
    check_eq!(again.kind(), ErrorKind::InvalidInput);
    Ok(())
}

fn process_join_leaves_the_value(m: StartMethod) -> Outcome {
    let handle = spawn_with(m, square, 5)?;
    // The Python-style handle of the same child: the exit code, as ever.
    check_eq!(handle.process().join_timeout(LONG)?, Some(0));
    check_eq!(handle.process().error().map(|e| e.kind()), None);
    check_eq!(join(handle)?, 25);
    // And a Process of the same function keeps Python's semantics.
    let p = Process::new(square, 5).with_start_method(m);
    p.start()?;
    check_eq!(p.join_timeout(LONG)?, Some(0));
    Ok(())
}

/// Waits until `pid` has ended (a zombie counts), bounded.
fn wait_gone(pid: i32) -> Outcome {
    let deadline = Instant::now() + LONG;
    while !is_gone(pid) {
        check!(Instant::now() < deadline, "child {pid} never ended");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn dropped_handle_leaves_no_zombie(m: StartMethod) -> Outcome {
    // Ended before the drop: reaped by the drop itself.
    let handle = spawn_with(m, square, 2)?;
    let pid = handle.pid() as i32;
    let exit = handle.process().sentinel()?;
    check_eq!(multiproc::wait(&[&exit], Some(LONG))?, vec![0]);
    drop(handle);
    check!(
        !common::zombie_children().contains(&pid),
        "zombie {pid} after the drop"
    );
    check!(
        !active_children()
            .iter()
            .any(|p| p.pid() == Some(pid as u32)),
        "{pid} still listed"
    );
    // Still running at the drop: it runs on, and is reaped once it has ended.
    let go = Event::new()?;
    let handle = spawn_with(m, waits_for, (go.clone(), 1))?;
    let pid = handle.pid() as i32;
    drop(handle);
    check!(
        active_children()
            .iter()
            .any(|p| p.pid() == Some(pid as u32)),
        "a dropped handle does not stop its child"
    );
    go.set();
    wait_gone(pid)?;
    check!(
        !active_children()
            .iter()
            .any(|p| p.pid() == Some(pid as u32)),
        "{pid} still listed"
    );
    check!(!common::zombie_children().contains(&pid), "zombie {pid}");
    Ok(())
}

fn default_method_and_names() -> Outcome {
    let handle = multiproc::spawn(square, 9)?;
    check_eq!(handle.process().start_method(), None);
    check!(handle.process().name().starts_with("Process-"), "name");
    check_eq!(join(handle)?, 81);
    let handle = ProcessBuilder::new()
        .name("named")
        .spawn(shout, "x".into())?;
    check_eq!(handle.process().name(), "named");
    check_eq!(join(handle)?, "X");
    let handle = ProcessBuilder::new().daemon(true).spawn(square, 4)?;
    check!(handle.process().daemon(), "daemonic");
    check_eq!(join(handle)?, 16);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// panic = "abort"

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/abort")
}

/// Builds the fixture (a binary of its own workspace, built with `panic = "abort"`) into
/// `target/fixtures`, which later runs reuse: only the first build compiles the dependencies.
fn build_fixture() -> Result<PathBuf, libtest_mimic::Failed> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fixtures");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(fixture_dir().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        // The outer build's flags (coverage, say) are not the fixture's business.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    check!(
        output.status.success(),
        "the fixture does not build:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(target.join("debug/abort-fixture"))
}

/// Under `panic = "abort"`, a panic kills the child with SIGABRT before any `catch_unwind`
/// returns; its message must still reach the parent.
fn panic_message_under_abort() -> Outcome {
    let binary = build_fixture()?;
    let mut child = Command::new(&binary)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run {}: {err}", binary.display()))?;
    // Bounded: the fixture's own waits are bounded too, this is the last resort.
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the fixture did not finish within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    check!(
        output.status.success(),
        "the fixture failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for method in StartMethod::all() {
        // The worker that aborted is replaced, and takes no task with it.
        let after = format!("pool-after {method}: no error, [1, 2]");
        check!(
            stdout.lines().any(|l| l == after),
            "no {after:?} in:\n{stdout}"
        );
        for what in ["pool", "apply", "initializer", "handle", "process"] {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&format!("{what} {method}: ")))
                .ok_or_else(|| format!("no line for {what} under {method}:\n{stdout}"))?;
            check!(
                line.contains("panicked at src/main.rs:")
                    && line.contains("deliberate panic under abort"),
                "{line}"
            );
        }
    }
    Ok(())
}

fn main() {
    multiproc::init();
    let mut trials = trials!(each_method:
        value_back,
        rich_values_back,
        large_values_back,
        descriptors_back,
        panic_is_an_error,
        exit_code_is_an_error,
        signal_is_an_error,
        timeout_leaves_the_handle_usable,
        process_join_leaves_the_value,
        dropped_handle_leaves_no_zombie,
    );
    trials.extend(trials!(once: default_method_and_names, panic_message_under_abort));
    common::run(trials)
}
