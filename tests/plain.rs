//! multiproc from plain `#[test]`s: the default harness, which owns `main` (no `init()`, no
//! `#[multiproc::main]`) and runs the tests on several threads. `spawn` and `forkserver` (the
//! default) work in every test; `fork` is refused under the default `ForkPolicy`, and says
//! what to do instead. (With another C library than glibc, children need `init()` in `main`.)
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use multiproc::{process, ErrorKind, Pool, Process, StartMethod};

/// Every join is bounded: a child that never ends fails the test instead of hanging it.
const LONG: Duration = Duration::from_secs(60);

#[process]
fn square(x: u64) -> u64 {
    x * x
}

#[process]
fn exit_with(code: i32) {
    std::process::exit(code);
}

#[process]
fn say(line: String) {
    println!("{line}");
}

/// Whether `SIGPIPE` is ignored here, as Rust's start-up makes it before `main`.
#[process]
fn sigpipe_ignored() -> bool {
    let mut action = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: reads the disposition of SIGPIPE into `action`, changing nothing.
    let read = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), action.as_mut_ptr()) };
    // SAFETY: filled by sigaction, which succeeded.
    read == 0 && unsafe { action.assume_init() }.sa_sigaction == libc::SIG_IGN
}

fn run_process(method: StartMethod) {
    let p = Process::new(exit_with, 7).with_start_method(method);
    p.start().expect("start");
    assert_eq!(p.join_timeout(LONG).expect("join"), Some(7), "{method}");
}

fn run_pool(method: StartMethod) {
    let pool = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .expect("pool");
    let squares = pool.map(square, 0..20u64).expect("map");
    assert_eq!(squares, (0..20u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(pool.apply(square, 12).expect("apply"), 144);
    pool.close();
    pool.join().expect("join");
}

#[test]
fn process_under_forkserver() {
    run_process(StartMethod::ForkServer);
}

#[test]
fn process_under_spawn() {
    run_process(StartMethod::Spawn);
}

#[test]
fn pool_under_forkserver() {
    run_pool(StartMethod::ForkServer);
}

#[test]
fn pool_under_spawn() {
    run_pool(StartMethod::Spawn);
}

/// A child entered before `main` ignores `SIGPIPE`, like one entered in `main` (a write to a
/// closed pipe is an error, not a death).
#[test]
fn children_ignore_sigpipe_as_main_would() {
    assert!(sigpipe_ignored(), "this test binary, after Rust's start-up");
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        let pool = Pool::builder()
            .processes(1)
            .start_method(method)
            .build()
            .expect("pool");
        assert!(pool.apply(sigpipe_ignored, ()).expect("apply"), "{method}");
    }
}

#[test]
fn the_default_method_works() {
    let p = Process::new(exit_with, 3);
    p.start().expect("start");
    assert_eq!(p.join_timeout(LONG).expect("join"), Some(3));
    let pool = Pool::new(2).expect("pool");
    assert_eq!(pool.map(square, [2, 3]).expect("map"), vec![4, 9]);
}

/// libtest runs this test on a thread of its own, beside its main thread: a fork could copy a
/// lock that another thread holds, so the default policy refuses it, and says what to do.
#[test]
fn fork_is_refused_in_a_test_and_says_what_to_do() {
    let p = Process::new(exit_with, 0).with_start_method(StartMethod::Fork);
    let err = p.start().expect_err("fork in a libtest thread");
    assert_eq!(err.kind(), ErrorKind::ForkUnsafe);
    let message = err.to_string();
    for hint in ["ForkServer", "Spawn", "harness = false", "cargo test"] {
        assert!(message.contains(hint), "{hint:?} not in {message:?}");
    }
    let err = Pool::builder()
        .processes(1)
        .start_method(StartMethod::Fork)
        .build()
        .expect_err("a fork pool in a libtest thread");
    assert_eq!(err.kind(), ErrorKind::ForkUnsafe);
}

/// Not a test on its own: `a_child_runs_only_its_entry` runs it alone in a new copy of this
/// binary and reads what that copy prints.
#[test]
fn children_say_hello() {
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        let p = Process::new(say, format!("hello from a {method} child")).with_start_method(method);
        p.start().expect("start");
        assert_eq!(p.join_timeout(LONG).expect("join"), Some(0), "{method}");
    }
}

/// A child of a test binary runs its entry point only: not the test suite (which would start
/// children of its own, and print libtest's header and summary again).
#[test]
fn a_child_runs_only_its_entry() {
    let exe = std::env::current_exe().expect("current_exe");
    let mut command = Command::new(exe);
    command.args([
        "children_say_hello",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ]);
    let out = output_within(command, LONG);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.matches("running 1 test").count(),
        1,
        "libtest ran more than once:\n{stdout}"
    );
    assert_eq!(stdout.matches("test result:").count(), 1, "{stdout}");
    for method in ["spawn", "forkserver"] {
        assert_eq!(
            stdout
                .matches(&format!("hello from a {method} child\n"))
                .count(),
            1,
            "{stdout}"
        );
    }
}

/// Runs `command` and collects its output; killed if it has not ended within `timeout`.
fn output_within(mut command: Command, timeout: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    // SAFETY: pidfd_open of our own child, which is not reaped (only `child` reaps it).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id(), 0) };
    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor, owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // Read on threads of their own: a hung child keeps its pipes open.
    fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            text
        })
    }
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let mut ready = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd on a descriptor we own.
    let seen = unsafe { libc::poll(&mut ready, 1, timeout.as_millis() as i32) };
    if seen == 0 {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} did not end within {timeout:?}");
    }
    let status = child.wait().expect("wait");
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}
