//! `Process` under every start method: exit codes, joins, signals, names, daemons, identity,
//! start-method selection, and no leaked descriptor or zombie.

mod common;

use std::time::{Duration, Instant};

use common::{is_gone, read_when_ready, scratch, write_line, Outcome, LONG};
use multiproc::{
    current_process, get_context, parent_process, process, ErrorKind, Process, StartMethod,
};
use serde::{Deserialize, Serialize};

#[process]
fn ok_worker() {}

#[process]
fn panicker(message: String) {
    panic!("{message}");
}

#[process]
fn exiter(code: i32) {
    std::process::exit(code);
}

#[process]
fn raiser(signal: i32) {
    // SAFETY: the default disposition (std handles SIGSEGV for its stack guard), then the
    // signal, in our own process.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

#[process]
fn aborter() {
    std::process::abort();
}

#[process]
fn sleeper(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

/// Writes who the child is: name, pid, parent name, parent pid, daemon, start method.
#[process]
fn report(path: String) {
    let me = current_process();
    let parent = parent_process().expect("a child has a parent");
    let method = me.start_method().map_or("none", StartMethod::as_str);
    write_line(
        &path,
        &format!(
            "{} {} {} {} {} {method}",
            me.name(),
            me.pid(),
            parent.name(),
            parent.pid(),
            me.daemon()
        ),
    );
}

/// Tries to start a child; writes the error kind (or "started").
#[process]
fn try_child(path: String) {
    let outcome = match Process::new(ok_worker, ()).start() {
        Ok(()) => "started".to_string(),
        Err(err) => format!("{:?}", err.kind()),
    };
    write_line(&path, &outcome);
}

/// Starts a daemonic sleeper with `method`, writes its pid, then sleeps.
#[process]
fn middle(path: String, method: String) {
    let method: StartMethod = method.parse().expect("method");
    let p = Process::new(sleeper, 60)
        .with_daemon(true)
        .with_start_method(method);
    p.start().expect("start grandchild");
    write_line(&path, &p.pid().expect("pid").to_string());
    std::thread::sleep(Duration::from_secs(60));
}

/// Starts a child that reports, and joins it.
#[process]
fn nest(path: String, method: String) {
    let method: StartMethod = method.parse().expect("method");
    let p = Process::new(report, path).with_start_method(method);
    p.start().expect("start grandchild");
    p.join().expect("join grandchild");
}

/// The sockets and pipes this process holds, by what they lead to (`socket:[inode]`), leaving
/// out the standard streams and what the test process itself inherited.
fn held_channels() -> Vec<String> {
    let inherited = common::inheritable_fds();
    let mut held: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|fd| *fd > 2 && !inherited.contains(fd))
        .filter_map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .filter(|t| t.starts_with("socket:") || t.starts_with("pipe:"))
        .collect();
    held.sort();
    held
}

/// Writes, space-separated, the sockets and pipes it holds.
#[process]
fn report_channels(path: String) {
    write_line(&path, &held_channels().join(" "));
}

/// Notes the sockets and pipes it holds (its control socket, a fork-server child's status
/// pipe), starts a `fork` child that reports its own, and writes those of its own that the
/// child holds too: none, if it keeps them registered for its forked children to close.
#[process]
fn channels_of_a_fork_child(dir: String) {
    let mine = held_channels();
    let path = format!("{dir}/grandchild");
    let p = Process::new(report_channels, path.clone()).with_start_method(StartMethod::Fork);
    p.start().expect("start the grandchild");
    assert_eq!(p.join().expect("join the grandchild"), 0);
    let theirs = std::fs::read_to_string(&path).expect("the grandchild's report");
    let shared: Vec<&str> = theirs
        .split_whitespace()
        .filter(|t| mine.iter().any(|m| m == t))
        .collect();
    write_line(
        &format!("{dir}/shared"),
        &format!("mine [{}] shared [{}]", mine.join(" "), shared.join(" ")),
    );
}

/// Lists the descriptors a program started by this child inherits.
#[process]
fn grandchild_fds(path: String) {
    let out = std::process::Command::new("ls")
        .arg("/proc/self/fd")
        .output()
        .expect("run ls");
    let fds = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    write_line(&path, &fds);
}

/// Writes where this child's descriptor 0 leads, then every descriptor of it that leads to
/// `/dev/null`.
#[process]
fn report_stdin(path: String) {
    let target = |fd: &str| {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut nulls: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|fd: &i32| target(&fd.to_string()) == "/dev/null")
        .collect();
    nulls.sort_unstable();
    write_line(&path, &format!("{} {nulls:?}", target("0")));
}

/// Starts a child with `method` (so that a fork server exists when the method is
/// forkserver), then writes the pid of its parent (the fork server, or this process) and sleeps.
#[process]
fn server_owner(path: String, method: String) {
    let method: StartMethod = method.parse().expect("method");
    let p = Process::new(sleeper, 60).with_start_method(method);
    p.start().expect("start");
    let stat =
        std::fs::read_to_string(format!("/proc/{}/stat", p.pid().expect("pid"))).expect("stat");
    let ppid = stat
        .rsplit_once(')')
        .expect("stat")
        .1
        .split_whitespace()
        .nth(1)
        .expect("ppid")
        .to_string();
    p.kill().expect("kill");
    p.join().expect("join");
    write_line(&path, &ppid);
    std::thread::sleep(Duration::from_secs(60));
}

#[derive(Serialize, Deserialize)]
struct Recorder {
    id: u32,
    path: String,
}

#[process]
impl Recorder {
    fn run(&mut self) {
        write_line(
            &self.path,
            &format!("{} {}", self.id, current_process().name()),
        );
    }
}

/// A worker that implements `Target` by hand and is never registered. `Target` is sealed (a
/// user's hand-written impl does not build: `tests/ui/hand_written_target.rs`); this test goes
/// through the seal with `__private`, which is not public API, to check that the child still
/// refuses a name that nothing registered.
#[derive(Clone, Copy)]
struct Unregistered;

impl multiproc::__private::SealedTarget for Unregistered {}

impl multiproc::Target for Unregistered {
    type Args = ();
    type Output = ();
    type ArgsCarrier = multiproc::__private::Plain;
    type OutputCarrier = multiproc::__private::Plain;
    const NAME: &'static str = "tests::process::Unregistered";
    fn call(_: ()) {}
}

fn start(p: &Process) -> Outcome {
    p.start()
        .map_err(|err| format!("start failed: {err}").into())
}

fn exit_code_return(m: StartMethod) -> Outcome {
    let p = Process::new(ok_worker, ()).with_start_method(m);
    check_eq!(p.exitcode(), None);
    start(&p)?;
    check_eq!(p.join()?, 0);
    check_eq!(p.exitcode(), Some(0));
    check!(p.error().is_none(), "no error after a clean return");
    Ok(())
}

fn exit_code_panic(m: StartMethod) -> Outcome {
    let p = Process::new(panicker, "deliberate panic: boom in the child".to_string())
        .with_start_method(m);
    start(&p)?;
    check_eq!(p.join()?, 1);
    let panic = p
        .remote_panic()
        .ok_or("the panic is readable by the parent")?;
    check_eq!(panic.message, "deliberate panic: boom in the child");
    check!(
        panic
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with("tests/process.rs:")),
        "location {:?}",
        panic.location
    );
    check_eq!(panic.process, p.name());
    let err = p.error().ok_or("error")?;
    check_eq!(err.kind(), ErrorKind::Panicked);
    Ok(())
}

fn exit_code_exit(m: StartMethod) -> Outcome {
    let p = Process::new(exiter, 7).with_start_method(m);
    start(&p)?;
    check_eq!(p.join()?, 7);
    check!(
        p.error()
            .is_some_and(|e| common::chain(&e).contains("exited with code 7")),
        "{:?}",
        p.error()
    );
    Ok(())
}

fn exit_code_sigsegv(m: StartMethod) -> Outcome {
    let p = Process::new(raiser, libc::SIGSEGV).with_start_method(m);
    start(&p)?;
    check_eq!(p.join()?, -libc::SIGSEGV);
    check!(
        p.error()
            .is_some_and(|e| common::chain(&e).contains("SIGSEGV")),
        "{:?}",
        p.error()
    );
    Ok(())
}

fn exit_code_abort(m: StartMethod) -> Outcome {
    let p = Process::new(aborter, ()).with_start_method(m);
    start(&p)?;
    check_eq!(p.join()?, -libc::SIGABRT);
    Ok(())
}

fn terminate_and_kill(m: StartMethod) -> Outcome {
    for (signal, send) in [
        (
            libc::SIGTERM,
            Process::terminate as fn(&Process) -> multiproc::Result<()>,
        ),
        (libc::SIGKILL, Process::kill),
        (libc::SIGINT, Process::interrupt),
    ] {
        let p = Process::new(sleeper, 60).with_start_method(m);
        start(&p)?;
        check!(p.is_alive(), "alive before the signal");
        send(&p)?;
        check_eq!(p.join_timeout(LONG)?, Some(-signal));
        check!(!p.is_alive(), "dead after the signal");
        send(&p)?; // a no-op once reaped
    }
    Ok(())
}

/// A plain join in one thread while another asks whether the child lives and signals it: the
/// join ends with the signal's code. (Under fork the plain join waits by pid, without the
/// process's lock and without a descriptor; the others signal and reap beside it.)
fn join_while_another_thread_signals(m: StartMethod) -> Outcome {
    let p = Process::new(sleeper, 60).with_start_method(m);
    start(&p)?;
    let joiner = p.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(joiner.join());
    });
    // Most likely waiting by then; the outcome is the same if not.
    std::thread::sleep(Duration::from_millis(50));
    check!(p.is_alive(), "alive before the signal");
    p.terminate()?;
    let joined = rx.recv_timeout(LONG);
    if joined.is_err() {
        let _ = p.kill();
    }
    let _ = thread.join();
    let code = joined.map_err(|_| format!("the join did not end within {LONG:?}"))??;
    check_eq!(code, -libc::SIGTERM);
    check_eq!(p.exitcode(), Some(-libc::SIGTERM));
    check!(!p.is_alive(), "dead after the join");
    check_eq!(p.join()?, -libc::SIGTERM);
    Ok(())
}

fn join_timeout(m: StartMethod) -> Outcome {
    let p = Process::new(sleeper, 60).with_start_method(m);
    start(&p)?;
    check_eq!(p.join_timeout(Duration::from_millis(100))?, None);
    check!(p.is_alive(), "still alive after a timed-out join");
    check_eq!(p.exitcode(), None);
    p.kill()?;
    check_eq!(p.join_timeout(LONG)?, Some(-9));
    // A child that ends early is seen when it ends, not when the timeout runs out.
    let p = Process::new(ok_worker, ()).with_start_method(m);
    start(&p)?;
    let t = Instant::now();
    check_eq!(p.join_timeout(Duration::from_secs(600))?, Some(0));
    check!(
        t.elapsed() < Duration::from_secs(60),
        "join_timeout waited {:?}",
        t.elapsed()
    );
    Ok(())
}

fn sentinel_and_wait(m: StartMethod) -> Outcome {
    let slow = Process::new(sleeper, 60).with_start_method(m);
    check_eq!(slow.sentinel().unwrap_err().kind(), ErrorKind::NotStarted);
    let quick = Process::new(ok_worker, ()).with_start_method(m);
    start(&slow)?;
    start(&quick)?;
    let sentinels = [slow.sentinel()?, quick.sentinel()?];
    check_eq!(multiproc::wait(&sentinels, Some(LONG))?, vec![1]);
    // Waiting did not consume the exit code: join still reads it.
    check_eq!(quick.join()?, 0);
    check!(
        multiproc::wait(&sentinels[..1], Some(Duration::from_millis(50)))?.is_empty(),
        "the slow child's sentinel is ready while it runs"
    );
    slow.kill()?;
    check_eq!(multiproc::wait(&sentinels[..1], None)?, vec![0]);
    check_eq!(slow.join()?, -9);
    // Reaped: a new sentinel is ready at once; closed: no sentinel.
    check_eq!(multiproc::wait(&[slow.sentinel()?], None)?, vec![0]);
    slow.close()?;
    check_eq!(slow.sentinel().unwrap_err().kind(), ErrorKind::Closed);
    Ok(())
}

fn state_rules(m: StartMethod) -> Outcome {
    let p = Process::new(sleeper, 60).with_start_method(m);
    check_eq!(p.join().unwrap_err().kind(), ErrorKind::NotStarted);
    check_eq!(p.terminate().unwrap_err().kind(), ErrorKind::NotStarted);
    check_eq!(p.pid(), None);
    start(&p)?;
    check_eq!(p.start().unwrap_err().kind(), ErrorKind::AlreadyStarted);
    check_eq!(
        p.set_daemon(true).unwrap_err().kind(),
        ErrorKind::AlreadyStarted
    );
    check_eq!(p.close().unwrap_err().kind(), ErrorKind::StillRunning);
    p.terminate()?;
    p.join()?;
    p.close()?;
    p.close()?;
    check_eq!(p.join().unwrap_err().kind(), ErrorKind::Closed);
    check_eq!(p.start().unwrap_err().kind(), ErrorKind::Closed);
    check_eq!(p.kill().unwrap_err().kind(), ErrorKind::Closed);
    Ok(())
}

fn names(m: StartMethod) -> Outcome {
    let a = Process::new(ok_worker, ()).with_start_method(m);
    let n: u32 = a
        .name()
        .strip_prefix("Process-")
        .ok_or("Process-N")?
        .parse()?;
    let named = Process::new(ok_worker, ()).with_name("custom");
    check_eq!(named.name(), "custom");
    let b = Process::new(ok_worker, ()).with_start_method(m);
    check_eq!(b.name(), format!("Process-{}", n + 2));
    let dir = scratch("names");
    let path = dir.join("r").to_string_lossy().into_owned();
    let c = Process::from(Recorder {
        id: 5,
        path: path.clone(),
    })
    .with_start_method(m);
    check_eq!(c.name(), format!("Recorder-{}", n + 3));
    start(&c)?;
    check_eq!(c.join()?, 0);
    check_eq!(
        read_when_ready(dir.join("r").as_path(), LONG)?,
        format!("5 Recorder-{}", n + 3)
    );
    Ok(())
}

/// A run of this binary leaves no scratch folder behind: the run below (one trial that writes
/// into a scratch folder, under `fork`) gets a private `TMPDIR`, which must hold no `multiproc*`
/// entry once it ended.
fn scratch_folders_removed_at_exit() -> Outcome {
    let tmp = scratch("privatetmp");
    let exe = std::env::current_exe()?;
    let child = std::process::Command::new(exe)
        .args(["--exact", "names::fork"])
        .env("TMPDIR", &tmp)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(LONG) {
        Ok(output) => output?,
        Err(_) => {
            // SAFETY: signals our own child, not reaped yet (the waiter still waits for it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = waiter.join();
            return Err(format!(
                "the run with TMPDIR={} did not end within {LONG:?}",
                tmp.display()
            )
            .into());
        }
    };
    let _ = waiter.join();
    let stdout = String::from_utf8_lossy(&output.stdout);
    check!(
        output.status.success() && stdout.contains("1 passed"),
        "the run failed ({:?}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let left: Vec<String> = std::fs::read_dir(&tmp)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("multiproc"))
        .collect();
    check!(
        left.is_empty(),
        "the run left {left:?} in {}",
        tmp.display()
    );
    Ok(())
}

/// `with_*` builds a value: a clone made before it keeps its settings, and both run as they
/// were built (the arguments are shared).
fn builders_leave_clones_alone(m: StartMethod) -> Outcome {
    let dir = scratch("builders");
    let path = dir.join("r");
    let original = Process::new(report, path.to_string_lossy().into_owned()).with_start_method(m);
    let clone = original.clone();
    let name = clone.name();
    let built = original.with_name("built").with_daemon(true);
    check_eq!(built.name(), "built");
    check!(built.daemon(), "the built value is daemonic");
    check_eq!(clone.name(), name);
    check!(
        !clone.daemon(),
        "the clone was made daemonic by its original"
    );
    let other = if m == StartMethod::Spawn {
        StartMethod::Fork
    } else {
        StartMethod::Spawn
    };
    let _rebuilt = clone.clone().with_start_method(other);
    check_eq!(clone.start_method(), Some(m));
    for (p, daemon) in [(&built, true), (&clone, false)] {
        start(p)?;
        check_eq!(p.join()?, 0);
        let line = read_when_ready(&path, LONG)?;
        let expected = format!(
            "{} {} MainProcess {} {daemon} {m}",
            p.name(),
            p.pid().ok_or("pid")?,
            std::process::id()
        );
        check_eq!(line, expected);
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

fn child_identity(m: StartMethod) -> Outcome {
    let dir = scratch("identity");
    for daemon in [false, true] {
        let path = dir.join(format!("r{daemon}"));
        let p = Process::new(report, path.to_string_lossy().into_owned())
            .with_start_method(m)
            .with_daemon(daemon);
        start(&p)?;
        check_eq!(p.join()?, 0);
        let line = read_when_ready(&path, LONG)?;
        let expected = format!(
            "{} {} MainProcess {} {daemon} {m}",
            p.name(),
            p.pid().ok_or("pid")?,
            std::process::id()
        );
        check_eq!(line, expected);
    }
    Ok(())
}

fn nested_names(m: StartMethod) -> Outcome {
    let dir = scratch("nested");
    let path = dir.join("r");
    let p = Process::new(nest, (path.to_string_lossy().into_owned(), m.to_string()))
        .with_start_method(m);
    start(&p)?;
    check_eq!(p.join()?, 0);
    let line = read_when_ready(&path, LONG)?;
    let mut fields = line.split(' ');
    check_eq!(fields.next(), Some(format!("{}:1", p.name())).as_deref());
    fields.next();
    check_eq!(fields.next(), Some(p.name()).as_deref());
    check_eq!(
        fields.next(),
        Some(p.pid().ok_or("pid")?.to_string()).as_deref()
    );
    Ok(())
}

fn daemonic_cannot_have_children(m: StartMethod) -> Outcome {
    let dir = scratch("daemonic");
    let path = dir.join("r");
    let p = Process::new(try_child, path.to_string_lossy().into_owned())
        .with_start_method(m)
        .with_daemon(true);
    start(&p)?;
    check_eq!(p.join()?, 0);
    check_eq!(read_when_ready(&path, LONG)?, "DaemonicChildren");
    Ok(())
}

fn daemon_dies_with_killed_parent(m: StartMethod) -> Outcome {
    let dir = scratch("orphan");
    let path = dir.join("pid");
    let p = Process::new(middle, (path.to_string_lossy().into_owned(), m.to_string()))
        .with_start_method(m);
    start(&p)?;
    let grandchild: i32 = read_when_ready(&path, LONG)?.parse()?;
    check!(!is_gone(grandchild), "the daemonic grandchild runs");
    p.kill()?;
    check_eq!(p.join_timeout(LONG)?, Some(-9));
    let deadline = Instant::now() + Duration::from_secs(1);
    while !is_gone(grandchild) {
        if Instant::now() > deadline {
            // SAFETY: clean up the orphan before failing.
            unsafe { libc::kill(grandchild, libc::SIGKILL) };
            return Err(
                "the daemonic grandchild outlived its SIGKILLed parent by more than a second"
                    .into(),
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn active_children(m: StartMethod) -> Outcome {
    let a = Process::new(sleeper, 60).with_start_method(m);
    let b = Process::new(sleeper, 60).with_start_method(m);
    start(&a)?;
    start(&b)?;
    let pids: Vec<_> = multiproc::active_children()
        .iter()
        .filter_map(Process::pid)
        .collect();
    check!(
        pids.contains(&a.pid().ok_or("pid")?) && pids.contains(&b.pid().ok_or("pid")?),
        "{pids:?}"
    );
    for p in multiproc::active_children() {
        p.terminate()?;
    }
    a.join()?;
    b.join()?;
    check!(
        multiproc::active_children().is_empty(),
        "no active children after join"
    );
    Ok(())
}

fn dropped_handle_is_reaped(m: StartMethod) -> Outcome {
    let p = Process::new(ok_worker, ()).with_start_method(m);
    start(&p)?;
    let pid = p.pid().ok_or("pid")?;
    drop(p);
    let deadline = Instant::now() + LONG;
    loop {
        let active: Vec<_> = multiproc::active_children()
            .iter()
            .filter_map(Process::pid)
            .collect();
        if !active.contains(&pid) {
            break;
        }
        check!(
            Instant::now() < deadline,
            "dropped child {pid} never reaped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    check!(
        !common::zombie_children().contains(&(pid as i32)),
        "zombie {pid}"
    );
    Ok(())
}

fn unknown_entry(m: StartMethod) -> Outcome {
    let p = Process::new(Unregistered, ()).with_start_method(m);
    let err = p.start().unwrap_err();
    check_eq!(err.kind(), ErrorKind::UnknownEntry);
    check!(
        common::chain(&err).contains("tests::process::Unregistered"),
        "{err}"
    );
    Ok(())
}

/// Writes on its control socket (the only socket a child has) a frame length of `declared`
/// bytes and `then` bytes of it, then returns.
#[process]
fn declare_a_frame(declared: u64, then: usize) {
    use std::io::Write;
    let mut control = common::only_socket();
    control.write_all(&declared.to_le_bytes()).expect("write");
    control.write_all(&vec![0; then]).expect("write");
}

/// In a fresh process (so that only the memory of a start and a join counts): starts
/// `declare_a_frame(declared, 1000)` with `m`, joins it and writes to `path` this process's
/// peak RSS in KiB, then the kind and text of the child's error.
#[process]
fn measure_a_declared_frame(m: StartMethod, declared: u64, path: String) {
    let p = Process::new(declare_a_frame, (declared, 1000)).with_start_method(m);
    let said = match p.start().and_then(|()| p.join_timeout(LONG)) {
        Ok(Some(code)) => match p.error() {
            Some(err) => format!("{code} {:?} {err}", err.kind()),
            None => format!("{code} none"),
        },
        Ok(None) => "did not end".to_string(),
        Err(err) => format!("start or join failed: {err}"),
    };
    let peak = common::peak_rss_kib();
    write_line(&path, &format!("{peak} {said}"));
}

/// A child that declares a huge frame on its control socket costs its parent no memory: a
/// length above what a child's message may be (64 MiB) is a clear codec error, and one below
/// it holds only the bytes that came.
fn declared_frame_length(m: StartMethod) -> Outcome {
    /// Peak RSS of a fresh process that starts and joins a child, at most.
    const BOUND_KIB: u64 = 32 << 10;
    let dir = scratch("declared");
    for (declared, says) in [
        (2u64 << 30, Some("corrupt frame")),
        (4u64 << 30, Some("corrupt frame")),
        ((64 << 20) - 1, None),
    ] {
        let path = dir
            .join(format!("{declared}"))
            .to_string_lossy()
            .into_owned();
        let p = Process::new(measure_a_declared_frame, (m, declared, path.clone()))
            .with_start_method(StartMethod::Spawn);
        start(&p)?;
        check_eq!(p.join_timeout(LONG)?, Some(0));
        let line = read_when_ready(std::path::Path::new(&path), LONG)?;
        let (peak, said) = line.split_once(' ').ok_or("a path")?;
        let peak: u64 = peak.parse()?;
        check!(
            peak < BOUND_KIB,
            "declared {declared}: peak RSS {peak} KiB ({said})"
        );
        match says {
            Some(says) => check!(
                said.starts_with("0 Codec") && said.contains(says),
                "declared {declared}: {said}"
            ),
            None => check!(said.starts_with("0 "), "declared {declared}: {said}"),
        }
    }
    Ok(())
}

/// Exits with the number of descriptors it was given.
#[process]
fn exit_with_fd_count(fds: Vec<multiproc::SharedFd>) {
    std::process::exit(fds.len() as i32);
}

/// More descriptors in a child's arguments than one message carries (253): a spawn or
/// forkserver start fails with a clear error before anything is sent, and leaks none of them;
/// a fork child inherits them all.
fn too_many_descriptors_in_arguments(m: StartMethod) -> Outcome {
    let many = |n: usize| -> Vec<multiproc::SharedFd> {
        (0..n)
            .map(|_| {
                let null = std::fs::File::open("/dev/null").expect("/dev/null");
                multiproc::SharedFd::new(std::os::fd::OwnedFd::from(null))
            })
            .collect()
    };
    // Warm up: the fork server, if any, is started once and kept.
    let p = Process::new(exit_with_fd_count, many(1)).with_start_method(m);
    start(&p)?;
    check_eq!(p.join_timeout(LONG)?, Some(1));
    let before = common::open_fds();
    let p = Process::new(exit_with_fd_count, many(254)).with_start_method(m);
    match (m, p.start()) {
        (StartMethod::Fork, started) => {
            started?;
            check_eq!(p.join_timeout(LONG)?, Some(254));
        }
        (_, Ok(())) => return Err("a start with 254 descriptors was not refused".into()),
        (_, Err(err)) => {
            check_eq!(err.kind(), ErrorKind::InvalidInput);
            check!(common::chain(&err).contains("at most 253"), "{err}");
        }
    }
    drop(p);
    check_eq!(common::open_fds(), before);
    let p = Process::new(exit_with_fd_count, many(253)).with_start_method(m);
    start(&p)?;
    check_eq!(p.join_timeout(LONG)?, Some(253));
    Ok(())
}

/// While a child runs, its parent holds one end of its control socket and no other socket of
/// it: the parent's copy of the child's end is closed as soon as the child is started.
fn one_control_socket_per_running_child(m: StartMethod) -> Outcome {
    // Warm up: the fork server, if any, is started once and kept.
    let p = Process::new(ok_worker, ()).with_start_method(m);
    start(&p)?;
    p.join()?;
    let sockets = || {
        held_channels()
            .into_iter()
            .filter(|t| t.starts_with("socket:"))
            .count()
    };
    let before = sockets();
    let p = Process::new(sleeper, 60).with_start_method(m);
    start(&p)?;
    let during = sockets();
    p.kill()?;
    check!(p.join_timeout(LONG)?.is_some(), "joined");
    check_eq!(during, before + 1);
    check_eq!(sockets(), before);
    Ok(())
}

fn no_leaks_200_cycles(m: StartMethod) -> Outcome {
    // Warm up: the fork server, if any, is started once and kept.
    let p = Process::new(ok_worker, ()).with_start_method(m);
    start(&p)?;
    p.join()?;
    let before = common::open_fds();
    for _ in 0..200 {
        let p = Process::new(ok_worker, ()).with_start_method(m);
        start(&p)?;
        check_eq!(p.join()?, 0);
    }
    let after = common::open_fds();
    check_eq!(after, before);
    check!(
        common::zombie_children().is_empty(),
        "zombies: {:?}",
        common::zombie_children()
    );
    Ok(())
}

fn subclass_style(m: StartMethod) -> Outcome {
    let dir = scratch("subclass");
    for id in 0..3 {
        let path = dir.join(id.to_string());
        let p = get_context(m).process_from(Recorder {
            id,
            path: path.to_string_lossy().into_owned(),
        });
        check_eq!(p.start_method(), Some(m));
        start(&p)?;
        check_eq!(p.join()?, 0);
        check_eq!(read_when_ready(&path, LONG)?, format!("{id} {}", p.name()));
    }
    Ok(())
}

/// A child's standard input is `/dev/null` (as in CPython), and it keeps no other copy of it
/// (the parent's or the fork server's, opened once for all their children).
fn stdin_is_dev_null(m: StartMethod) -> Outcome {
    let dir = scratch("stdin");
    for round in 0..2 {
        let path = dir.join(format!("stdin{round}"));
        let p =
            Process::new(report_stdin, path.to_string_lossy().into_owned()).with_start_method(m);
        start(&p)?;
        check_eq!(p.join()?, 0);
        let seen = read_when_ready(&path, LONG)?;
        // Standard output and error may be /dev/null too, under some runners.
        let (stdin, nulls) = seen.split_once(' ').ok_or("two fields")?;
        check_eq!(stdin, "/dev/null");
        let nulls: Vec<i32> = nulls
            .trim_matches(|c| c == '[' || c == ']')
            .split(", ")
            .filter(|fd| !fd.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        // Whatever this test process inherited from its runner a child inherits as well.
        let inherited = common::inheritable_fds();
        check!(
            nulls.iter().all(|&fd| fd <= 2 || inherited.contains(&fd)),
            "round {round}: /dev/null open on {nulls:?} in the child (inherited: {inherited:?})"
        );
    }
    Ok(())
}

fn bootstrap_does_not_leak(m: StartMethod) -> Outcome {
    let dir = scratch("leak");
    let path = dir.join("fds");
    let p = Process::new(grandchild_fds, path.to_string_lossy().into_owned()).with_start_method(m);
    start(&p)?;
    check_eq!(p.join()?, 0);
    // What a program started by the child sees: the descriptors this test process itself
    // inherited without close-on-exec (stdio, whatever the test runner left open), plus the
    // one ls opens to read the directory. No control socket, no pidfd.
    let inheritable = common::inheritable_fds();
    let seen: Vec<i32> = read_when_ready(&path, LONG)?
        .split(' ')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let extra: Vec<i32> = seen
        .iter()
        .copied()
        .filter(|fd| !inheritable.contains(fd))
        .collect();
    check!(
        extra.len() <= 1,
        "the grandchild inherited {extra:?} (all: {seen:?}, expected at most ls's own)"
    );
    Ok(())
}

/// A child keeps its control socket (and a fork-server child its status pipe) registered
/// for life: a child it forks in turn closes them, whether the child registered them itself
/// or found them registered (a `fork` child, whose parent leaves its control socket in the
/// registry it forks with; a fork-server child, whose server registers both before it forks).
fn forked_grandchild_holds_none_of_the_childs_channels(m: StartMethod) -> Outcome {
    let dir = scratch("channels");
    let p = Process::new(channels_of_a_fork_child, dir.to_string_lossy().into_owned())
        .with_start_method(m);
    start(&p)?;
    check_eq!(p.join()?, 0);
    let line = read_when_ready(&dir.join("shared"), LONG)?;
    // The child holds its control socket at least; its forked child holds none of it.
    let mine = line.split(" shared ").next().unwrap_or("");
    check!(mine.contains("socket:"), "{line}");
    check!(line.ends_with("shared []"), "{line}");
    Ok(())
}

fn fork_server_exits_with_its_parent() -> Outcome {
    let dir = scratch("server");
    let path = dir.join("ppid");
    let owner = Process::new(
        server_owner,
        (
            path.to_string_lossy().into_owned(),
            "forkserver".to_string(),
        ),
    )
    .with_start_method(StartMethod::Spawn);
    start(&owner)?;
    let server: i32 = read_when_ready(&path, LONG)?.parse()?;
    check!(
        server as u32 != owner.pid().ok_or("pid")?,
        "the child's parent was the fork server"
    );
    check!(!is_gone(server), "the fork server runs");
    owner.kill()?;
    owner.join()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while !is_gone(server) {
        if Instant::now() > deadline {
            // SAFETY: clean up the orphan before failing.
            unsafe { libc::kill(server, libc::SIGKILL) };
            return Err("the fork server outlived its SIGKILLed parent".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn global_start_method() -> Outcome {
    multiproc::force_start_method(None);
    multiproc::set_start_method(StartMethod::Spawn)?;
    check_eq!(
        multiproc::set_start_method(StartMethod::Fork)
            .unwrap_err()
            .kind(),
        ErrorKind::ContextAlreadySet
    );
    check_eq!(multiproc::get_start_method(), StartMethod::Spawn);
    let dir = scratch("global");
    let path = dir.join("r");
    let p = Process::new(report, path.to_string_lossy().into_owned());
    start(&p)?;
    p.join()?;
    check!(
        read_when_ready(&path, LONG)?.ends_with(" spawn"),
        "child used the global method"
    );
    multiproc::force_start_method(None);
    check_eq!(multiproc::get_start_method(), StartMethod::ForkServer);
    check_eq!(
        "bogus".parse::<StartMethod>().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    Ok(())
}

/// The library's own messages, as a logger of the application's sees them: (level, target,
/// message).
static LOGGED: std::sync::Mutex<Vec<(log::Level, String, String)>> =
    std::sync::Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let entry = (
            record.level(),
            record.target().to_string(),
            record.args().to_string(),
        );
        LOGGED.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    }

    fn flush(&self) {}
}

fn fork_policy_with_threads() -> Outcome {
    let _ = log::set_logger(&Capture);
    log::set_max_level(log::LevelFilter::Warn);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    let refused = Process::new(ok_worker, ())
        .with_start_method(StartMethod::Fork)
        .start();
    let warned = {
        // SAFETY: the other thread waits on a channel, holding no lock.
        unsafe { multiproc::set_fork_policy(multiproc::ForkPolicy::Warn) };
        let p = Process::new(ok_worker, ()).with_start_method(StartMethod::Fork);
        let started = p.start();
        // SAFETY: refusing promises nothing.
        unsafe { multiproc::set_fork_policy(multiproc::ForkPolicy::Refuse) };
        started.and_then(|()| p.join())
    };
    // The other methods never fork this process's threads.
    let spawned = {
        let p = Process::new(ok_worker, ()).with_start_method(StartMethod::ForkServer);
        p.start().and_then(|()| p.join())
    };
    let _ = tx.send(());
    let _ = thread.join();
    check_eq!(refused.unwrap_err().kind(), ErrorKind::ForkUnsafe);
    check_eq!(warned?, 0);
    check_eq!(spawned?, 0);
    // The warning went to the application's logger (and so can be routed or silenced), once.
    let logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let warnings: Vec<_> = logged
        .iter()
        .filter(|(_, _, message)| message.contains("multi-threaded"))
        .collect();
    check!(
        matches!(&warnings[..], [(log::Level::Warn, target, _)] if target == "multiproc"),
        "the fork warning was logged as {logged:?}"
    );
    Ok(())
}

fn fork_and_forkserver_from_two_threads() -> Outcome {
    // The library's locks are always taken in one order: starting children with fork in two
    // threads and through the fork server and spawn in others cannot deadlock. And the
    // sockets each start makes are registered as they are made: no forked child keeps another
    // child's (each has only its own control socket, as when it is forked alone).
    let alone = {
        let p =
            Process::new(common::exit_with_socket_count, ()).with_start_method(StartMethod::Fork);
        p.start()?;
        p.join()?
    };
    // SAFETY: the other threads only start children (that is what this test checks): the locks
    // they take are the library's, which a fork holds across it, and the C library's, which
    // its own fork handlers hold.
    unsafe { multiproc::set_fork_policy(multiproc::ForkPolicy::Allow) };
    let result = std::thread::scope(|scope| {
        let threads: Vec<_> = [
            StartMethod::Fork,
            StartMethod::Fork,
            StartMethod::ForkServer,
            StartMethod::Spawn,
        ]
        .into_iter()
        .map(|m| {
            scope.spawn(move || -> Result<(), String> {
                for _ in 0..20 {
                    let p = Process::new(common::exit_with_socket_count, ()).with_start_method(m);
                    p.start().map_err(|e| e.to_string())?;
                    let sockets = p.join().map_err(|e| e.to_string())?;
                    if m == StartMethod::Fork && sockets != alone {
                        return Err(format!(
                            "a child forked beside other starts has {sockets} sockets, {alone} alone"
                        ));
                    }
                }
                Ok(())
            })
        })
        .collect();
        threads.into_iter().map(|t| t.join()).collect::<Vec<_>>()
    });
    // SAFETY: refusing promises nothing.
    unsafe { multiproc::set_fork_policy(multiproc::ForkPolicy::Refuse) };
    for r in result {
        r.map_err(|_| "thread panicked")??;
    }
    Ok(())
}

fn example_binary(name: &str) -> Result<std::path::PathBuf, libtest_mimic::Failed> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join(name))
        .ok_or("no target dir")?;
    check!(
        path.exists(),
        "{} missing: cargo test builds the examples",
        path.display()
    );
    Ok(path)
}

fn build_mismatch() -> Outcome {
    let other = example_binary("spawn_three")?;
    multiproc::set_executable(Some(other));
    let p = Process::new(ok_worker, ()).with_start_method(StartMethod::Spawn);
    let result = p.start();
    multiproc::set_executable(None);
    let err = result.unwrap_err();
    check_eq!(err.kind(), ErrorKind::BuildMismatch);
    check!(
        common::chain(&err).contains("is not the parent's build"),
        "{err}"
    );
    Ok(())
}

/// A binary that cannot be executed (missing, or a file without the right to run it): the
/// start fails with an error, under `spawn` and `forkserver` alike; it used to wait for good
/// on the library's own descriptor lock.
fn unexecutable_binary() -> Outcome {
    let dir = scratch("unexecutable");
    let plain = dir.join("not-a-program");
    std::fs::write(&plain, b"not a program")?;
    for (exe, method) in [
        (dir.join("missing"), StartMethod::Spawn),
        (plain.clone(), StartMethod::Spawn),
        (dir.join("missing"), StartMethod::ForkServer),
        (plain, StartMethod::ForkServer),
    ] {
        if method == StartMethod::ForkServer {
            // A running fork server would start the child: this one must start a new one.
            let p = Process::new(sleeper, 60).with_start_method(method);
            start(&p)?;
            kill_fork_server_of(&p)?;
            p.kill()?;
            p.join_timeout(LONG)?.ok_or("the sleeper did not end")?;
        }
        multiproc::set_executable(Some(exe.clone()));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let p = Process::new(ok_worker, ()).with_start_method(method);
            let _ = tx.send(p.start().map(|()| p.join()));
        });
        let result = rx.recv_timeout(LONG);
        multiproc::set_executable(None);
        let Ok(result) = result else {
            // The thread holds what every later start needs: no test after this one could
            // run. Ending here keeps the run bounded.
            eprintln!("{method} start with {} did not return", exe.display());
            std::process::exit(101);
        };
        check!(
            result.is_err(),
            "{method} start with {}: {result:?}",
            exe.display()
        );
    }
    // And the next start works.
    let p = Process::new(ok_worker, ()).with_start_method(StartMethod::Spawn);
    check_eq!(p.start().and_then(|()| p.join())?, 0);
    Ok(())
}

fn copy_of_binary_is_same_build() -> Outcome {
    let dir = scratch("copy");
    let copy = dir.join("copy-of-test");
    std::fs::copy(std::env::current_exe()?, &copy)?;
    check_eq!(common::spawned_from(&copy, ok_worker, ())?, 0);
    Ok(())
}

/// Kills the fork server that started `p` (still running), and waits until it is gone.
fn kill_fork_server_of(p: &Process) -> Outcome {
    let pid = p.pid().ok_or("pid")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let server: i32 = stat
        .rsplit_once(')')
        .ok_or("stat")?
        .1
        .split_whitespace()
        .nth(1)
        .ok_or("ppid")?
        .parse()?;
    check!(
        server != std::process::id() as i32,
        "the child's parent is the fork server"
    );
    // SAFETY: the fork server is our own child.
    unsafe { libc::kill(server, libc::SIGKILL) };
    let deadline = Instant::now() + LONG;
    while !is_gone(server) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    check!(is_gone(server), "the fork server {server} is gone");
    Ok(())
}

fn forkserver_death_and_restart() -> Outcome {
    let p = Process::new(sleeper, 60).with_start_method(StartMethod::ForkServer);
    start(&p)?;
    kill_fork_server_of(&p)?;
    // The child outlives its server, and is seen running (CPython reports it ended, with
    // code 255, as soon as the server is gone).
    check!(p.is_alive(), "a child whose fork server died runs still");
    check_eq!(p.join_timeout(Duration::from_millis(200))?, None);
    check!(p.sentinel().is_ok(), "its sentinel");
    p.kill()?;
    // Its end is seen; the code, which only the server could read, is lost.
    check_eq!(p.join_timeout(LONG)?, Some(255));
    check!(!p.is_alive(), "ended");
    let q = Process::new(ok_worker, ()).with_start_method(StartMethod::ForkServer);
    start(&q)?;
    check_eq!(q.join_timeout(LONG)?, Some(0));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fork-server stream and exit codes: each in a fresh spawned child, whose fork server is its own

/// Writes its pid, then exits with `code` through `exit(3)`.
#[process]
fn pid_and_exit(path: String, code: i32) {
    write_line(&path, &std::process::id().to_string());
    std::process::exit(code);
}

/// Writes its pid, then sleeps.
#[process]
fn pid_and_sleep(path: String, secs: u64) {
    write_line(&path, &std::process::id().to_string());
    std::thread::sleep(Duration::from_secs(secs));
}

/// Starts `target(args)` under the fork server, in a scenario.
fn start_served<T: multiproc::Target>(target: T, args: T::Args) -> Result<Process, String> {
    let p = Process::new(target, args).with_start_method(StartMethod::ForkServer);
    p.start().map_err(|err| format!("start: {err}"))?;
    Ok(p)
}

/// The fork server of this process: the parent of a child it started.
fn server_of(p: &Process) -> Result<i32, String> {
    let pid = p.pid().ok_or("no pid")? as i32;
    common::peers::parent_of(pid).ok_or_else(|| format!("no parent for {pid}"))
}

/// The pid a child wrote in `path`, checked against what its handle says.
fn check_pid(p: &Process, path: &str) -> Result<(), String> {
    let seen = read_when_ready(std::path::Path::new(path), LONG).map_err(|e| format!("{e:?}"))?;
    let said = p.pid().ok_or("no pid")?.to_string();
    if seen != said {
        return Err(format!("pid() says {said}, the child is {seen}"));
    }
    Ok(())
}

/// A stray byte on the fork server's socket, then `pid()`, `join()` and `kill()` must still be
/// about the child each handle started.
#[process]
fn stray_byte_scenario(dir: String) {
    let outcome = (|| -> Result<(), String> {
        let first = start_served(pid_and_sleep, (format!("{dir}/first"), 60))?;
        check_pid(&first, &format!("{dir}/first"))?;
        let server = server_of(&first)?;
        common::peers::write_stray_byte(server)?;
        // The start that meets the stray byte kills the server. It is not asked of another:
        // the first may have forked the child, which runs with its bootstrap (two would run
        // for one start). It says so, and the next starts go to a new server.
        let path = format!("{dir}/met");
        if let Err(err) = start_served(pid_and_exit, (path.clone(), 9)) {
            if !err.contains("may have started; it was not asked again") {
                return Err(err);
            }
        }
        for i in 0..3 {
            let path = format!("{dir}/exit{i}");
            let p = start_served(pid_and_exit, (path.clone(), 10 + i))?;
            check_pid(&p, &path)?;
            match p.join_timeout(LONG).map_err(|e| e.to_string())? {
                Some(code) if code == 10 + i => {}
                other => return Err(format!("child {i} joined with {other:?}, not {}", 10 + i)),
            }
        }
        let path = format!("{dir}/sleeper");
        let asleep = start_served(pid_and_sleep, (path.clone(), 60))?;
        check_pid(&asleep, &path)?;
        asleep.kill().map_err(|e| e.to_string())?;
        let code = asleep.join_timeout(LONG).map_err(|e| e.to_string())?;
        if code != Some(-libc::SIGKILL) {
            return Err(format!("the killed sleeper joined with {code:?}"));
        }
        // No kill went astray.
        if !first.is_alive() {
            return Err("the first child was killed instead".into());
        }
        first.kill().map_err(|e| e.to_string())?;
        first
            .join_timeout(LONG)
            .map_err(|e| e.to_string())?
            .ok_or("the first child outlived its kill")?;
        Ok(())
    })();
    write_line(
        &format!("{dir}/outcome"),
        &outcome.err().unwrap_or_else(|| "ok".to_string()),
    );
}

/// Runs a scenario process, which waits `LONG` at most for each of its steps: waits (bounded)
/// for it, killing it if it does not end, and returns what it wrote in `dir/outcome`.
fn run_scenario(p: &Process, dir: &std::path::Path) -> Result<String, libtest_mimic::Failed> {
    start(p)?;
    let code = p.join_timeout(LONG * 4)?;
    if code.is_none() {
        let _ = p.kill();
        let _ = p.join_timeout(LONG);
    }
    check_eq!(code, Some(0));
    read_when_ready(&dir.join("outcome"), LONG)
}

fn forkserver_stray_byte() -> Outcome {
    let dir = scratch("stray");
    let p = Process::new(stray_byte_scenario, dir.display().to_string())
        .with_start_method(StartMethod::Spawn);
    check_eq!(run_scenario(&p, &dir)?, "ok");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Sends `bytes` with `fds` attached (`SCM_RIGHTS`) on `sock`, without waiting for room;
/// returns how many bytes went.
fn send_raw(sock: i32, bytes: &[u8], fds: &[i32]) -> isize {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let payload = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let mut space = vec![0u8; unsafe { libc::CMSG_SPACE(payload) } as usize];
    // SAFETY: a zeroed msghdr is valid; its pointers are set below to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = space.len() as _;
        // SAFETY: the control buffer has room for one header and `fds`.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload as usize,
            );
        }
    }
    // SAFETY: `msg` points to live buffers; no SIGPIPE.
    unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) }
}

/// A fork server's request: magic, op, three zeros, id.
fn forged_request(op: u8, id: u64) -> Vec<u8> {
    let mut frame = b"MPfq".to_vec();
    frame.extend([op, 0, 0, 0]);
    frame.extend(id.to_le_bytes());
    frame
}

/// Writes garbage of kind `case` on this process's socket to its fork server `server`.
/// Returns what must stay open until the next start (our ends of sockets sent).
fn write_garbage(case: u32, server: i32) -> Result<Vec<std::os::unix::net::UnixStream>, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    let fds = common::peers::sockets_to(server);
    let [sock] = fds[..] else {
        return Err(format!("expected one socket to the server, found {fds:?}"));
    };
    let mut keep = Vec::new();
    let (bytes, sent): (Vec<u8>, Vec<i32>) = match case {
        // Half a request, and nothing after it.
        0 => (forged_request(b'F', 1 << 40)[..8].to_vec(), vec![]),
        // A request without its descriptor.
        1 => (forged_request(b'F', 1 << 40), vec![]),
        // A request with two descriptors.
        2 => {
            let (a, b) = UnixStream::pair().map_err(|e| e.to_string())?;
            let fds = vec![a.as_raw_fd(), b.as_raw_fd()];
            keep.extend([a, b]);
            (forged_request(b'F', 1 << 40), fds)
        }
        // A well-formed request nobody waits for the answer of: a child on a socket of ours.
        3 => {
            let (a, b) = UnixStream::pair().map_err(|e| e.to_string())?;
            let fds = vec![b.as_raw_fd()];
            keep.extend([a, b]);
            (forged_request(b'F', 1 << 40), fds)
        }
        // A request whose bootstrap declares a 4 GiB role, of which a few bytes came.
        4 => {
            let (a, b) = UnixStream::pair().map_err(|e| e.to_string())?;
            let mut bootstrap = Vec::new();
            let build = multiproc::__private::forge::encode(
                &multiproc::__private::forge::BuildId::current(),
            )
            .map_err(|e| e.to_string())?;
            bootstrap.extend((build.len() as u64).to_le_bytes());
            bootstrap.extend(build);
            bootstrap.extend((4u64 << 30).to_le_bytes());
            bootstrap.extend([1, 2, 3]);
            use std::io::Write;
            (&a).write_all(&bootstrap).map_err(|e| e.to_string())?;
            let fds = vec![b.as_raw_fd()];
            keep.extend([a, b]);
            (forged_request(b'R', 1 << 40), fds)
        }
        // A megabyte of noise (what fits of it).
        _ => (vec![0xff; 1 << 20], vec![]),
    };
    if send_raw(sock, &bytes, &sent) <= 0 {
        return Err(format!(
            "cannot write on the socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(keep)
}

/// Garbage of each kind on the fork server's socket, then starts: the one that meets it runs
/// its child once, on a new server, unless the garbage made the server fork a child for it:
/// that start fails, saying why (its child may run, and is not asked twice), and the next one
/// runs its child. None waits long. The first start used to fail whatever the garbage.
#[process]
fn garbage_scenario(dir: String) {
    let outcome = (|| -> Result<(), String> {
        for case in 0..6 {
            let path = format!("{dir}/warm{case}");
            let warm = start_served(pid_and_sleep, (path.clone(), 60))?;
            check_pid(&warm, &path)?;
            let server = server_of(&warm)?;
            let keep = write_garbage(case, server)?;
            let mut ran = false;
            for attempt in 0..2 {
                let began = Instant::now();
                let path = format!("{dir}/after{case}-{attempt}");
                let started = start_served(pid_and_exit, (path.clone(), 7));
                if began.elapsed() > Duration::from_secs(10) {
                    return Err(format!("case {case}: a start took {:?}", began.elapsed()));
                }
                match started {
                    Ok(p) => {
                        check_pid(&p, &path)
                            .map_err(|e| format!("case {case}, start {attempt}: {e}"))?;
                        match p.join_timeout(LONG).map_err(|e| e.to_string())? {
                            Some(7) => {}
                            other => return Err(format!("case {case}: joined with {other:?}")),
                        }
                        ran = true;
                        break;
                    }
                    // A forged request the server answered (3, 4) puts its answer before the
                    // next start's, and half a request (0) may make the server read the
                    // start's request shifted, as another well-formed one: that start's child
                    // may then have been forked, and run. Otherwise the server died before a
                    // byte of the start's bootstrap was read, and the start is asked again of
                    // a new one.
                    Err(err)
                        if attempt == 0
                            && matches!(case, 0 | 3 | 4)
                            && err.contains("it was not asked again") => {}
                    Err(err) => return Err(format!("case {case}, start {attempt}: {err}")),
                }
            }
            drop(keep);
            if !ran {
                return Err(format!("case {case}: no start ran its child"));
            }
            warm.kill().map_err(|e| e.to_string())?;
            warm.join_timeout(LONG).map_err(|e| e.to_string())?;
        }
        Ok(())
    })();
    write_line(
        &format!("{dir}/outcome"),
        &outcome.err().unwrap_or_else(|| "ok".to_string()),
    );
    // A failed case leaves its sleeper, which the exit would wait for.
    for child in multiproc::active_children() {
        let _ = child.kill();
        let _ = child.join_timeout(LONG);
    }
}

fn forkserver_garbage() -> Outcome {
    let dir = scratch("garbage");
    let p = Process::new(garbage_scenario, dir.display().to_string())
        .with_start_method(StartMethod::Spawn);
    check_eq!(run_scenario(&p, &dir)?, "ok");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Appends one line to `path`: a child that ran.
#[process]
fn mark_ran(path: String) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open");
    file.write_all(b"ran\n").expect("write");
}

/// With only `free` descriptors left under its limit, starts one fork-server child that marks
/// a file, for `free` in 1..=8; writes what each start said and how many children ran.
#[process]
fn short_of_descriptors_scenario(dir: String) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let outcome = (|| -> Result<String, String> {
        // The fork server is up before the table fills.
        let warm = start_served(mark_ran, format!("{dir}/warm"))?;
        warm.join_timeout(LONG).map_err(|e| e.to_string())?;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: writes the limit into `limit`.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return Err("getrlimit".into());
        }
        let lowered = libc::rlimit {
            rlim_cur: 64,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: sets this process's limit from a valid struct (this process is the test's
        // own scenario, and ends after it).
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) } != 0 {
            return Err("setrlimit".into());
        }
        let mut said = Vec::new();
        for free in 1..=8 {
            let mut held = Vec::new();
            loop {
                // SAFETY: makes a new descriptor, owned at once below.
                let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
                if fd < 0 {
                    return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
                }
                // SAFETY: `fd` was just made, and is owned by nothing else.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let last = fd.as_raw_fd() >= 63;
                held.push(fd);
                if last {
                    break;
                }
            }
            // Free the `free` highest ones.
            held.truncate(held.len().saturating_sub(free));
            let path = format!("{dir}/run{free}");
            let started = start_served(mark_ran, path.clone());
            drop(held);
            let joined = match &started {
                Ok(p) => format!("{:?}", p.join_timeout(LONG).map_err(|e| e.to_string())?),
                Err(_) => "-".into(),
            };
            // Children that ran without the parent end within a moment.
            std::thread::sleep(Duration::from_millis(300));
            let ran = std::fs::read_to_string(&path).map_or(0, |s| s.lines().count());
            said.push(format!("{free}:{}:{joined}:{ran}", started.is_ok()));
        }
        Ok(said.join(" "))
    })();
    write_line(
        &format!("{dir}/outcome"),
        &outcome.unwrap_or_else(|err| format!("failed: {err}")),
    );
}

/// Short of descriptors, a fork-server start either starts its child once, or fails and
/// starts none: never a start that fails while its child runs, nor two children for one
/// start (the retry of a request the server had already served).
fn forkserver_start_short_of_descriptors() -> Outcome {
    let dir = scratch("shortfds");
    let p = Process::new(short_of_descriptors_scenario, dir.display().to_string())
        .with_start_method(StartMethod::Spawn);
    let outcome = run_scenario(&p, &dir)?;
    for case in outcome.split(' ') {
        let parts: Vec<&str> = case.split(':').collect();
        check!(parts.len() == 4, "{outcome}");
        let (started, ran) = (parts[1] == "true", parts[3]);
        if started {
            check!(
                ran == "1" && parts[2] == "Some(0)",
                "free {}: {case} ({outcome})",
                parts[0]
            );
        } else {
            check!(
                ran == "0",
                "free {}: a failed start ran {ran} children ({outcome})",
                parts[0]
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Waits (30 s at most) for `server` to die, then ends: `how` 0 returns, 1 panics, 2 exits
/// with `code` (`exit(3)`), 3 dies of SIGTERM.
#[process]
fn outlive_server(server: i32, how: u8, code: i32) {
    // SAFETY: pidfd_open of a pid; the descriptor, if any, is closed below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, server, 0) } as i32;
    if pidfd >= 0 {
        let mut poll = libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, then the close of our own descriptor.
        unsafe {
            libc::poll(&mut poll, 1, 30_000);
            libc::close(pidfd);
        }
    }
    match how {
        0 => {}
        1 => panic!("deliberate panic: planned"),
        2 => std::process::exit(code),
        // SAFETY: the default disposition, then the signal, in our own process.
        _ => unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            libc::raise(libc::SIGTERM);
        },
    }
}

/// Kills the fork server while its children run, then lets them end in every way: writes how
/// many report their true exit code, per way.
#[process]
fn exit_codes_scenario(dir: String) {
    let outcome = (|| -> Result<String, String> {
        let first = start_served(pid_and_sleep, (format!("{dir}/first"), 60))?;
        check_pid(&first, &format!("{dir}/first"))?;
        let server = server_of(&first)?;
        let mut children = Vec::new();
        for i in 0..16 {
            let how = (i % 4) as u8;
            let code = 20 + i;
            let p = start_served(outlive_server, (server, how, code))?;
            let expected = [0, 1, code, -libc::SIGTERM][usize::from(how)];
            children.push((p, how, expected));
        }
        // SAFETY: the fork server is this process's own child, not reaped yet.
        unsafe { libc::kill(server, libc::SIGKILL) };
        let mut true_codes = [0; 4];
        let mut lost = [0; 4];
        for (p, how, expected) in &children {
            match p.join_timeout(LONG).map_err(|e| e.to_string())? {
                Some(code) if code == *expected => true_codes[usize::from(*how)] += 1,
                Some(255) => lost[usize::from(*how)] += 1,
                other => return Err(format!("a child (way {how}) joined with {other:?}")),
            }
        }
        first.kill().map_err(|e| e.to_string())?;
        let _ = first.join_timeout(LONG);
        Ok(format!("true {true_codes:?} lost {lost:?}"))
    })();
    write_line(
        &format!("{dir}/outcome"),
        &outcome.unwrap_or_else(|err| err),
    );
}

/// The bound on lost exit codes: when the fork server dies, its children that end by
/// returning, panicking or `exit(3)` still report their code (they write it themselves); only
/// a death by signal, which only the server could see, reads 255.
fn forkserver_exit_codes_outlive_server() -> Outcome {
    let dir = scratch("codes");
    let p = Process::new(exit_codes_scenario, dir.display().to_string())
        .with_start_method(StartMethod::Spawn);
    check_eq!(
        run_scenario(&p, &dir)?,
        "true [4, 4, 4, 0] lost [0, 0, 0, 4]"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Ends at once: `how` 0 returns, 1 exits with `code` (`exit(3)`).
#[process]
fn end_at_once(how: u8, code: i32) {
    if how == 1 {
        std::process::exit(code);
    }
}

/// Starts and joins children that end at once while another thread kills this process's fork
/// server every 3 to 20 ms; writes how many joined with their true code, how many read 255,
/// and how many could not start (a start caught by the kill).
#[process]
fn server_kills_scenario(dir: String, children: u32) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let me = std::process::id() as i32;
    let killer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut kills = 0u32;
            let mut seed = u64::from(std::process::id());
            while !stop.load(Ordering::SeqCst) {
                // The fork server is this process's only child (its children are the server's).
                for server in common::peers::children_of(me) {
                    // SAFETY: our own child, not reaped yet (the library reaps it).
                    unsafe { libc::kill(server, libc::SIGKILL) };
                    kills += 1;
                }
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                std::thread::sleep(Duration::from_millis(3 + (seed >> 33) % 18));
            }
            kills
        })
    };
    let (mut true_codes, mut lost, mut unstarted) = (0, 0, 0);
    let mut other = Vec::new();
    for i in 0..children {
        let how = (i % 2) as u8;
        let code = 10 + (i % 50) as i32;
        let expected = if how == 1 { code } else { 0 };
        let p = Process::new(end_at_once, (how, code)).with_start_method(StartMethod::ForkServer);
        if p.start().is_err() {
            unstarted += 1;
            continue;
        }
        match p.join_timeout(LONG) {
            Ok(Some(code)) if code == expected => true_codes += 1,
            Ok(Some(255)) => lost += 1,
            outcome => other.push(format!("{outcome:?}")),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let kills = killer.join().unwrap_or(0);
    write_line(
        &format!("{dir}/outcome"),
        &format!(
            "true {true_codes} lost {lost} unstarted {unstarted} other {other:?} kills {kills}"
        ),
    );
}

/// The stress run of the issue: the fork server killed every 3 to 20 ms while its children end
/// normally. Every child that started reports its true code (before, 11% to 42% read 255).
fn forkserver_exit_codes_under_server_kills() -> Outcome {
    let dir = scratch("kills");
    let p = Process::new(server_kills_scenario, (dir.display().to_string(), 200))
        .with_start_method(StartMethod::Spawn);
    let outcome = run_scenario(&p, &dir)?;
    let counts: Vec<&str> = outcome.split_whitespace().collect();
    let count = |name: &str| -> u32 {
        counts
            .iter()
            .position(|w| *w == name)
            .and_then(|i| counts.get(i + 1)?.parse().ok())
            .unwrap_or(u32::MAX)
    };
    check!(
        count("lost") == 0 && outcome.contains("other []"),
        "{outcome}"
    );
    check!(count("true") >= 100 && count("kills") >= 1, "{outcome}");
    eprintln!("forkserver_exit_codes_under_server_kills: {outcome}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fork-server preload: run in a fresh spawned child, whose fork server is not running yet

static PRELOADED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A preload: sets the static every fork-server child inherits, and counts its calls in a file.
#[process]
fn preload_value(value: u64, count_path: String, extra: Vec<u8>) {
    let extra: u64 = extra.iter().map(|&b| u64::from(b)).sum();
    PRELOADED.store(value + extra, std::sync::atomic::Ordering::SeqCst);
    let mut calls = std::fs::read_to_string(&count_path).unwrap_or_default();
    calls.push('x');
    std::fs::write(&count_path, calls).expect("write the call count");
}

#[process]
fn preload_panics(message: String) {
    panic!("{message}");
}

#[process]
fn preload_leaves_a_thread() {
    std::thread::spawn(|| std::thread::sleep(Duration::from_secs(3600)));
}

/// A fork-server child: writes the static it inherited from the server.
#[process]
fn report_preloaded(path: String) {
    write_line(
        &path,
        &PRELOADED
            .load(std::sync::atomic::Ordering::SeqCst)
            .to_string(),
    );
}

/// In a fresh process: `case` 0 preloads a value and checks three children see it; 1 and 2
/// preload a call that panics / leaves a thread and check the start fails and says why.
/// Writes "ok" or what went wrong.
#[process]
fn preload_scenario(dir: String, case: u8) {
    let outcome = (|| -> Result<(), String> {
        let count = format!("{dir}/count");
        let preload = match case {
            // 40 + 2: the byte vector checks the arguments' encoding (byte runs).
            0 => multiproc::Preload::new(preload_value, (40, count.clone(), vec![1, 1])),
            1 => multiproc::Preload::new(
                preload_panics,
                "deliberate panic: no model file".to_string(),
            ),
            _ => multiproc::Preload::new(preload_leaves_a_thread, ()),
        };
        multiproc::set_forkserver_preload([preload]).map_err(|e| e.to_string())?;
        let start = |i: u32| {
            let path = format!("{dir}/child{i}");
            let p = Process::new(report_preloaded, path.clone())
                .with_start_method(StartMethod::ForkServer);
            p.start().map(|()| (p, path))
        };
        if case != 0 {
            let err = start(0).err().ok_or("the start succeeded")?;
            let wanted = if case == 1 {
                "panicked"
            } else {
                "thread(s) running"
            };
            if err.kind() != ErrorKind::ForkServer || !common::chain(&err).contains(wanted) {
                return Err(format!("unexpected error: {err:?}"));
            }
            if case == 1 && !common::chain(&err).contains("deliberate panic: no model file") {
                return Err(format!("the panic message is missing: {err}"));
            }
            return Ok(());
        }
        for i in 0..3 {
            let (p, path) = start(i).map_err(|e| e.to_string())?;
            p.join().map_err(|e| e.to_string())?;
            let seen = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            if seen.trim() != "42" {
                return Err(format!("child {i} saw {seen:?}"));
            }
        }
        let calls = std::fs::read_to_string(&count).map_err(|e| e.to_string())?;
        if calls != "x" {
            return Err(format!("the preload ran {} times", calls.len()));
        }
        let again = multiproc::set_forkserver_preload([])
            .err()
            .ok_or("reset while running")?;
        if again.kind() != ErrorKind::AlreadyStarted {
            return Err(format!("unexpected error: {again:?}"));
        }
        Ok(())
    })();
    write_line(
        &format!("{dir}/outcome"),
        &outcome.err().unwrap_or_else(|| "ok".to_string()),
    );
}

fn forkserver_preload() -> Outcome {
    for case in 0..3u8 {
        let dir = scratch("preload");
        let p = Process::new(preload_scenario, (dir.display().to_string(), case))
            .with_start_method(StartMethod::Spawn);
        start(&p)?;
        check_eq!(p.join_timeout(LONG)?, Some(0));
        check_eq!(read_when_ready(&dir.join("outcome"), LONG)?, "ok");
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// A panic payload whose `Drop` panics in turn.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("the payload's drop panicked");
    }
}

#[process]
fn panic_with_a_payload_that_panics_on_drop() {
    std::panic::panic_any(PanicsOnDrop);
}

/// Makes its standard error a pipe whose reader is gone (writes fail with `EPIPE`, SIGPIPE
/// being ignored), then panics.
#[process]
fn panic_with_broken_stderr(message: String) {
    let mut ends = [0; 2];
    // SAFETY: a new pipe, its read end closed, its write end made descriptor 2 of this
    // process, which only panics after this.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        assert_eq!(libc::pipe(ends.as_mut_ptr()), 0);
        libc::close(ends[0]);
        libc::dup2(ends[1], 2);
        libc::close(ends[1]);
    }
    panic!("{message}");
}

/// Runs a trial body in this process, and ends at once (without going back to the harness) if
/// it finds itself in another process: a forked child that returned from `start` as a copy of
/// its parent, which then marks `escaped`.
fn not_in_a_copy(escaped: &std::path::Path) {
    if std::process::id() != *MAIN_PID.get().expect("set in main") {
        let _ = std::fs::write(escaped, std::process::id().to_string());
        // SAFETY: ends this copy at once, running nothing of the parent's.
        unsafe { libc::_exit(0) };
    }
}

static MAIN_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// A panic whose payload panics as it is dropped still ends the child with code 1, as a panic,
/// and the child never comes back from the library into the parent's code (a forked child is
/// a copy of the parent: unwinding out of the library's child code would run the parent's
/// `main` on).
fn panic_payload_panics_on_drop(m: StartMethod) -> Outcome {
    let escaped = scratch("payload-drop").join("escaped");
    let p = Process::new(panic_with_a_payload_that_panics_on_drop, ()).with_start_method(m);
    start(&p)?;
    not_in_a_copy(&escaped);
    let code = p.join_timeout(LONG)?;
    not_in_a_copy(&escaped);
    std::thread::sleep(Duration::from_millis(100));
    check!(
        !escaped.exists(),
        "the child (pid {:?}) came back from the library into the parent's code",
        p.pid()
    );
    check_eq!(code, Some(1));
    check!(p.remote_panic().is_some(), "the panic is reported");
    Ok(())
}

/// A child whose standard error is broken still reports its panic (message and location) and
/// ends with code 1: the library's `Process <name>:` line must not panic in the panic hook
/// (a panic in the hook aborts: exit -6, message lost).
fn panic_reported_with_broken_stderr(m: StartMethod) -> Outcome {
    let p = Process::new(panic_with_broken_stderr, "boom with no stderr".to_string())
        .with_start_method(m);
    start(&p)?;
    check_eq!(p.join_timeout(LONG)?, Some(1));
    let panic = p.remote_panic().ok_or("the panic is reported")?;
    check_eq!(panic.message, "boom with no stderr");
    Ok(())
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// Starts, joins (plain, timed, through a sentinel) and signals children while SIGALRM, caught
/// without `SA_RESTART`, interrupts this process every 100 us: every system call the library
/// makes here may fail with `EINTR`, and none of that may show.
fn starts_and_joins_under_interrupting_signals(m: StartMethod) -> Outcome {
    // SAFETY: a handler that does nothing, installed without SA_RESTART; the timer is this
    // process's and is stopped (and the handler reset) below.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_alarm as *const () as usize;
        action.sa_flags = 0;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
    }
    let interval = libc::timeval {
        tv_sec: 0,
        tv_usec: 100,
    };
    let timer = libc::itimerval {
        it_interval: interval,
        it_value: interval,
    };
    // SAFETY: sets this process's real-time timer.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
    let outcome = (|| -> Outcome {
        for round in 0..8 {
            let p = Process::new(exiter, 3).with_start_method(m);
            p.start()
                .map_err(|e| format!("round {round}: start: {e}"))?;
            check_eq!(
                p.join().map_err(|e| format!("round {round}: join: {e}"))?,
                3
            );
            let p = Process::new(sleeper, 60).with_start_method(m);
            p.start()
                .map_err(|e| format!("round {round}: start: {e}"))?;
            check_eq!(p.join_timeout(Duration::from_millis(5))?, None);
            let sentinel = p.sentinel()?;
            check!(
                multiproc::wait(&[&sentinel], Some(Duration::from_millis(5)))?.is_empty(),
                "round {round}: ready while the child runs"
            );
            p.kill()?;
            check_eq!(multiproc::wait(&[&sentinel], Some(LONG))?, vec![0]);
            check_eq!(p.join_timeout(LONG)?, Some(-9));
            let p = Process::new(panicker, "interrupted".to_string()).with_start_method(m);
            p.start()?;
            check_eq!(p.join()?, 1);
            check_eq!(
                p.remote_panic().map(|panic| panic.message),
                Some("interrupted".to_string())
            );
        }
        Ok(())
    })();
    // SAFETY: `itimerval` is plain old data, for which all zeroes (a stopped timer) is valid.
    let stop: libc::itimerval = unsafe { std::mem::zeroed() };
    // SAFETY: stops the timer set above, then resets the handler.
    unsafe {
        libc::setitimer(libc::ITIMER_REAL, &stop, std::ptr::null_mut());
        libc::signal(libc::SIGALRM, libc::SIG_DFL);
    }
    outcome
}

/// A child that ends at once while three threads race over it: one joins, one asks
/// `is_alive`/`exitcode` until it has one, one sends SIGTERM until it has one. They all see one
/// and the same exit code (5, or -15 if the signal came first), and nothing fails.
fn threads_race_over_an_ending_child(m: StartMethod) -> Outcome {
    for round in 0..40 {
        let p = Process::new(exiter, 5).with_start_method(m);
        start(&p)?;
        let (a, b, c) = (p.clone(), p.clone(), p.clone());
        let joiner = std::thread::spawn(move || a.join().map_err(|e| e.to_string()));
        let asker = std::thread::spawn(move || -> Result<i32, String> {
            let deadline = Instant::now() + LONG;
            loop {
                let alive = b.is_alive();
                if let Some(code) = b.exitcode() {
                    return Ok(code);
                }
                if !alive && b.exitcode().is_none() {
                    return Err("not alive, and no exit code".into());
                }
                if Instant::now() > deadline {
                    return Err("no exit code".into());
                }
            }
        });
        let signaller = std::thread::spawn(move || -> Result<i32, String> {
            let deadline = Instant::now() + LONG;
            loop {
                c.terminate().map_err(|e| format!("terminate: {e}"))?;
                if let Some(code) = c
                    .join_timeout(Duration::from_micros(50))
                    .map_err(|e| format!("join_timeout: {e}"))?
                {
                    return Ok(code);
                }
                if Instant::now() > deadline {
                    return Err("no exit code".into());
                }
            }
        });
        let joined = joiner.join().map_err(|_| "joiner panicked")?;
        let asked = asker.join().map_err(|_| "asker panicked")?;
        let signalled = signaller.join().map_err(|_| "signaller panicked")?;
        let joined = joined.map_err(|e| format!("round {round}: join: {e}"))?;
        check!(
            joined == 5 || joined == -libc::SIGTERM,
            "round {round}: join gave {joined}"
        );
        check_eq!(asked, Ok(joined));
        check_eq!(signalled, Ok(joined));
        check_eq!(p.exitcode(), Some(joined));
        check!(!p.is_alive(), "round {round}: alive after the join");
    }
    check!(
        multiproc::active_children().is_empty(),
        "children left: {:?}",
        multiproc::active_children()
    );
    Ok(())
}

/// Six threads start and join children at once (every third one killed, every fifth one
/// panicking), with the fork server or spawn (a fork from a multi-threaded process is refused):
/// every child ends with its own exit code and panic, and no descriptor or zombie is left.
fn many_starts_from_several_threads() -> Outcome {
    for m in [StartMethod::ForkServer, StartMethod::Spawn] {
        let warm = Process::new(ok_worker, ()).with_start_method(m);
        start(&warm)?;
        warm.join()?;
        let before = common::open_fds();
        let threads: Vec<_> = (0..6)
            .map(|t| {
                std::thread::spawn(move || -> Result<(), String> {
                    for i in 0..12 {
                        let (p, want) = match i % 5 {
                            0 => (
                                Process::new(panicker, format!("thread {t} child {i}"))
                                    .with_start_method(m),
                                1,
                            ),
                            _ if i % 3 == 0 => (Process::new(sleeper, 60).with_start_method(m), -9),
                            _ => (
                                Process::new(exiter, 10 + t * 16 + i).with_start_method(m),
                                10 + t * 16 + i,
                            ),
                        };
                        p.start()
                            .map_err(|e| format!("{m} thread {t} child {i}: start: {e}"))?;
                        if want == -9 {
                            p.kill().map_err(|e| e.to_string())?;
                        }
                        let code = p
                            .join_timeout(LONG)
                            .map_err(|e| e.to_string())?
                            .ok_or(format!("{m} thread {t} child {i}: did not end"))?;
                        if code != want {
                            return Err(format!(
                                "{m} thread {t} child {i}: code {code}, not {want}"
                            ));
                        }
                        if want == 1 {
                            let message = p.remote_panic().map(|panic| panic.message);
                            if message.as_deref() != Some(&*format!("thread {t} child {i}")) {
                                return Err(format!("{m} thread {t} child {i}: panic {message:?}"));
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for thread in threads {
            thread.join().map_err(|_| "a thread panicked")??;
        }
        check_eq!(common::open_fds(), before);
        check!(
            common::zombie_children().is_empty(),
            "zombies: {:?}",
            common::zombie_children()
        );
    }
    Ok(())
}

#[process]
fn doubled(n: u64) -> u64 {
    n * 2
}

/// Starts, under each start method, a grandchild that panics, one killed by a signal and one
/// that returns a value, and writes what it saw of each, one method a line.
#[process]
fn nest_every_method(path: String) {
    let mut lines = Vec::new();
    for inner in StartMethod::all() {
        let p = Process::new(panicker, format!("inner {inner}")).with_start_method(inner);
        let panicked = p.start().map_err(|e| e.to_string()).and_then(|()| {
            let code = p.join().map_err(|e| e.to_string())?;
            Ok(format!(
                "{code}:{}",
                p.remote_panic()
                    .map(|panic| panic.message)
                    .unwrap_or_default()
            ))
        });
        let p = Process::new(sleeper, 60).with_start_method(inner);
        let killed = p.start().map_err(|e| e.to_string()).and_then(|()| {
            p.terminate().map_err(|e| e.to_string())?;
            p.join().map_err(|e| e.to_string())
        });
        let value = multiproc::ProcessBuilder::new()
            .start_method(inner)
            .spawn(doubled, 21)
            .and_then(|handle| handle.join())
            .map_err(|e| e.to_string());
        lines.push(format!("{inner} {panicked:?} {killed:?} {value:?}"));
    }
    write_line(&path, &lines.join("\n"));
}

/// A child of each start method starts grandchildren of every start method: each reports its
/// panic, its signal and its value to the child.
fn nested_under_every_method(m: StartMethod) -> Outcome {
    let path = scratch("nest-matrix").join(format!("{m}"));
    let p =
        Process::new(nest_every_method, path.to_string_lossy().into_owned()).with_start_method(m);
    start(&p)?;
    check_eq!(p.join_timeout(LONG)?, Some(0));
    let text = std::fs::read_to_string(&path)?;
    let want: Vec<String> = StartMethod::all()
        .into_iter()
        .map(|inner| format!("{inner} Ok(\"1:inner {inner}\") Ok(-15) Ok(42)"))
        .collect();
    check_eq!(text.trim_end(), want.join("\n"));
    Ok(())
}

#[process]
fn panic_of_size(len: usize) {
    panic!("{}", "x".repeat(len));
}

/// A panic with a long message (a failing `assert_eq!` on two large vectors prints them both)
/// is reported and the join returns: the child must not block writing its report on a control
/// socket that its parent reads only once it has exited. A message of 30 000 bytes comes whole;
/// a longer one may be cut (the child's standard error has it whole), but not to nothing.
fn long_panic_message(m: StartMethod) -> Outcome {
    for len in [30_000, 512 << 10] {
        let p = Process::new(panic_of_size, len).with_start_method(m);
        start(&p)?;
        let code = p.join_timeout(Duration::from_secs(10))?;
        if code.is_none() {
            p.kill()?;
            p.join()?;
            return Err(format!("a child panicking with a {len}-byte message never ended").into());
        }
        check_eq!(code, Some(1));
        let panic = p
            .remote_panic()
            .ok_or(format!("the {len}-byte panic is reported"))?;
        if len == 30_000 {
            check_eq!(panic.message, "x".repeat(len));
        } else {
            check!(
                panic.message.starts_with(&"x".repeat(30_000)) && panic.message.len() < len,
                "the {len}-byte panic came as {} bytes: {:?}...",
                panic.message.len(),
                &panic.message[..panic.message.len().min(100)]
            );
        }
    }
    Ok(())
}

#[process]
fn descriptors_out(n: usize) -> Vec<multiproc::SharedFd> {
    (0..n)
        .map(|_| {
            let null = std::fs::File::open("/dev/null").expect("/dev/null");
            multiproc::SharedFd::new(std::os::fd::OwnedFd::from(null))
        })
        .collect()
}

/// A child of `spawn` that returns more descriptors than one message carries (253): its join
/// ends with the value, or with an error that says why, never hangs, and the parent keeps no
/// descriptor of it.
fn too_many_descriptors_returned(m: StartMethod) -> Outcome {
    let warm = multiproc::ProcessBuilder::new()
        .start_method(m)
        .spawn(descriptors_out, 1)?;
    check_eq!(warm.join()?.len(), 1);
    let before = common::open_fds();
    for n in [253, 254, 400] {
        let handle = multiproc::ProcessBuilder::new()
            .start_method(m)
            .spawn(descriptors_out, n)?;
        let pid = handle.pid() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(
                handle
                    .join()
                    .map(|fds| fds.len())
                    .map_err(|e| (e.kind(), e.to_string())),
            );
        });
        let Ok(joined) = rx.recv_timeout(Duration::from_secs(20)) else {
            // SAFETY: our child, not reaped (its join still waits).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(
                format!("the join of a child returning {n} descriptors never ended").into(),
            );
        };
        match joined {
            Ok(got) => check_eq!(got, n),
            // Said why: not just "exited with code 1".
            Err((kind, message)) => check!(
                n > 253 && message.contains("at most 253"),
                "{n} descriptors: {kind:?} {message}"
            ),
        }
    }
    check_eq!(common::open_fds(), before);
    Ok(())
}

/// A join in one thread while another kills the child and closes the process as soon as it
/// may: the join returns the child's exit code, or fails with `Closed`; never a code the child
/// did not end with (-1 would say SIGHUP).
fn join_while_another_thread_closes(m: StartMethod) -> Outcome {
    let mut seen = std::collections::BTreeMap::new();
    for round in 0..60 {
        let p = Process::new(sleeper, 60).with_start_method(m);
        start(&p)?;
        let joiner = p.clone();
        let thread = std::thread::spawn(move || joiner.join().map_err(|e| e.kind()));
        std::thread::sleep(Duration::from_millis(2));
        p.kill()?;
        let deadline = Instant::now() + LONG;
        while p.close().is_err() {
            check!(Instant::now() < deadline, "round {round}: never closed");
        }
        let joined = thread.join().map_err(|_| "the joiner panicked")?;
        *seen.entry(format!("{joined:?}")).or_insert(0) += 1;
        check!(
            matches!(joined, Ok(-9) | Err(ErrorKind::Closed)),
            "round {round}: the join gave {joined:?} (so far {seen:?})"
        );
    }
    Ok(())
}

/// Closes its standard streams (0, 1 and 2: the next descriptors it opens take those numbers),
/// then starts, under each start method, a grandchild that panics and one that returns a
/// value, and writes what it saw of each, one method a line.
#[process]
fn without_stdio_nest(path: String) {
    // SAFETY: closes this process's standard streams, which nothing else of it uses after
    // this (it writes its report to a file).
    unsafe {
        libc::close(0);
        libc::close(1);
        libc::close(2);
    }
    let mut lines = Vec::new();
    for inner in StartMethod::all() {
        let p = Process::new(panicker, format!("inner {inner}")).with_start_method(inner);
        let panicked = p.start().map_err(|e| e.to_string()).and_then(|()| {
            let code = p
                .join_timeout(Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            if code.is_none() {
                let _ = p.kill();
            }
            Ok(format!(
                "{code:?}:{}",
                p.remote_panic()
                    .map(|panic| panic.message)
                    .unwrap_or_default()
            ))
        });
        let value = multiproc::ProcessBuilder::new()
            .start_method(inner)
            .spawn(doubled, 21)
            .and_then(|mut handle| handle.join_timeout(Duration::from_secs(10)))
            .map_err(|e| e.to_string());
        lines.push(format!("{inner} {panicked:?} {value:?}"));
    }
    write_line(&path, &lines.join("\n"));
}

/// A child without standard streams starts children of every start method: the descriptors the
/// library opens for them take the numbers 0, 1 and 2, which a start must not mistake for the
/// standard streams it sets up (a spawned child's standard input becomes `/dev/null`).
fn nested_without_stdio(m: StartMethod) -> Outcome {
    let path = scratch("nest-no-stdio").join(format!("{m}"));
    let p =
        Process::new(without_stdio_nest, path.to_string_lossy().into_owned()).with_start_method(m);
    start(&p)?;
    let code = p.join_timeout(Duration::from_secs(60))?;
    if code.is_none() {
        p.kill()?;
        p.join()?;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let want: Vec<String> = StartMethod::all()
        .into_iter()
        .map(|inner| format!("{inner} Ok(\"Some(1):inner {inner}\") Ok(42)"))
        .collect();
    check_eq!((code, text.trim_end()), (Some(0), &*want.join("\n")));
    Ok(())
}

/// Sleeps a little, then writes its pid.
#[process]
fn late_writer(path: String) {
    std::thread::sleep(Duration::from_millis(300));
    write_line(&path, &std::process::id().to_string());
}

/// Starts a non-daemonic child that writes after a while, then ends with
/// `std::process::exit(5)` at once.
#[process]
fn exit_with_a_child(path: String) {
    let p = Process::new(late_writer, path);
    p.start().expect("start the grandchild");
    std::process::exit(5);
}

/// `std::process::exit` in a child runs the exit function as it does in `main` (and as
/// Python's `sys.exit` in a child does): its non-daemonic children are joined before it ends,
/// under every start method alike.
fn exit_in_a_child_joins_its_children(m: StartMethod) -> Outcome {
    let path = scratch("exit-joins").join(format!("{m}"));
    let p =
        Process::new(exit_with_a_child, path.to_string_lossy().into_owned()).with_start_method(m);
    start(&p)?;
    check_eq!(p.join_timeout(LONG)?, Some(5));
    check!(
        path.exists(),
        "the child ended before its non-daemonic child did"
    );
    Ok(())
}

/// Starts a non-daemonic child that sleeps, writes its pid, then ends with
/// `std::process::exit(5)`, which joins that child first.
#[process]
fn exit_joining_a_sleeper(path: String) {
    let p = Process::new(sleeper, 60);
    p.start().expect("start the grandchild");
    write_line(&path, &p.pid().expect("pid").to_string());
    std::process::exit(5);
}

/// A child killed while its `std::process::exit(5)` joins its children is reported killed
/// (-15), not with the code it was ending with.
fn killed_while_exiting(m: StartMethod) -> Outcome {
    let path = scratch("killed-exiting").join(format!("{m}"));
    let p = Process::new(exit_joining_a_sleeper, path.to_string_lossy().into_owned())
        .with_start_method(m);
    start(&p)?;
    let grandchild: i32 = read_when_ready(&path, LONG)?.parse()?;
    std::thread::sleep(Duration::from_millis(100));
    p.terminate()?;
    let code = p.join_timeout(LONG)?;
    // SAFETY: the orphaned grandchild, by pid (it sleeps for a minute: still that process).
    unsafe { libc::kill(grandchild, libc::SIGKILL) };
    check_eq!(code, Some(-libc::SIGTERM));
    Ok(())
}

/// With SIGCHLD ignored, the kernel reaps this process's children as they end and their exit
/// codes are lost (except a fork server's child's, which the server reaps): a join still ends,
/// with the code or with 255 for a lost one (as for a fork-server child whose server died),
/// and the child is not kept as running for ever (in `active_children`, with its descriptors).
fn sigchld_ignored(m: StartMethod) -> Outcome {
    // SAFETY: sets this process's SIGCHLD disposition, set back below.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let outcome = (|| -> Outcome {
        // Warm up: what is opened once and kept (the fork server, a fork's `/dev/null`).
        let p = Process::new(ok_worker, ()).with_start_method(m);
        start(&p)?;
        p.join()?;
        let before = common::open_fds();
        for _ in 0..3 {
            let p = Process::new(exiter, 3).with_start_method(m);
            start(&p)?;
            let joined = p.join_timeout(LONG);
            let seen = format!(
                "join {:?} exitcode {:?} alive {} active {}",
                joined.as_ref().map_err(|e| e.to_string()),
                p.exitcode(),
                p.is_alive(),
                multiproc::active_children().len()
            );
            check!(
                matches!(joined, Ok(Some(3 | 255)))
                    && p.exitcode() == joined.ok().flatten()
                    && !p.is_alive()
                    && multiproc::active_children().is_empty(),
                "{seen}"
            );
        }
        check_eq!(common::open_fds(), before);
        Ok(())
    })();
    // SAFETY: back to the default.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    outcome
}

/// Exits 0 when its argument is `len` bytes of `fill`.
#[process]
fn check_bytes(data: Vec<u8>, len: usize, fill: u8) {
    std::process::exit(if data.len() == len && data.iter().all(|&b| b == fill) {
        0
    } else {
        9
    });
}

/// A 16 MiB argument reaches the child whole under every start method, in reasonable time.
fn huge_argument(m: StartMethod) -> Outcome {
    let len = 16 << 20;
    let t = Instant::now();
    let p = Process::new(check_bytes, (vec![7u8; len], len, 7)).with_start_method(m);
    start(&p)?;
    check_eq!(p.join_timeout(LONG)?, Some(0));
    check!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    Ok(())
}

/// Leaves a thread that holds standard output's lock (and standard error's) for a minute, and
/// returns.
#[process]
fn return_beside_a_thread_holding_stdout() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _out = std::io::stdout().lock();
        let _err = std::io::stderr().lock();
        let _ = tx.send(());
        std::thread::sleep(Duration::from_secs(60));
    });
    let _ = rx.recv();
}

/// A child that returns while another of its threads holds standard output's lock ends at
/// once, as a `main` that returns does (std flushes standard output at exit only if its lock is
/// free): the child's last flush must not wait for that thread.
fn ends_beside_a_thread_holding_stdout(m: StartMethod) -> Outcome {
    let p = Process::new(return_beside_a_thread_holding_stdout, ()).with_start_method(m);
    start(&p)?;
    let code = p.join_timeout(Duration::from_secs(10))?;
    if code.is_none() {
        p.kill()?;
        p.join()?;
    }
    check_eq!(code, Some(0));
    Ok(())
}

/// Leaves a thread that holds standard error's lock for a minute, and panics.
#[process]
fn panic_beside_a_thread_holding_stderr(message: String) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _err = std::io::stderr().lock();
        let _ = tx.send(());
        std::thread::sleep(Duration::from_secs(60));
    });
    let _ = rx.recv();
    panic!("{message}");
}

/// A child that panics while another of its threads holds standard error's lock reports its
/// panic and ends at once (std's own panic message goes out without that lock).
fn panics_beside_a_thread_holding_stderr(m: StartMethod) -> Outcome {
    let p =
        Process::new(panic_beside_a_thread_holding_stderr, "held".to_string()).with_start_method(m);
    start(&p)?;
    let code = p.join_timeout(Duration::from_secs(10))?;
    if code.is_none() {
        p.kill()?;
        p.join()?;
    }
    check_eq!(code, Some(1));
    check_eq!(
        p.remote_panic().map(|panic| panic.message),
        Some("held".to_string())
    );
    Ok(())
}

/// The highest descriptor number this process holds.
fn highest_fd() -> i32 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .max()
        .unwrap_or(2)
}

/// Starts with the descriptor table nearly full (`RLIMIT_NOFILE` just above what is open, by
/// 0 to 15 more): each start succeeds and its child ends with its code, or fails with an
/// error; none hangs, and none leaves a descriptor, a zombie or a running child behind.
fn starts_short_of_descriptors(m: StartMethod) -> Outcome {
    // Warm up: what is opened once and kept (the fork server, a fork's `/dev/null`).
    let p = Process::new(ok_worker, ()).with_start_method(m);
    start(&p)?;
    p.join()?;
    let before = common::open_fds();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads this process's limit into a valid `rlimit`.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    let saved = limit;
    let mut outcomes = Vec::new();
    for extra in 0..16 {
        let p = Process::new(exiter, 4).with_start_method(m);
        // The free numbers below the highest taken, filled: `extra` descriptors are left.
        let highest = highest_fd();
        let mut fillers = Vec::new();
        loop {
            let filler = std::fs::File::open("/dev/null")?;
            if std::os::fd::AsRawFd::as_raw_fd(&filler) > highest {
                break;
            }
            fillers.push(filler);
        }
        limit.rlim_cur = (highest + 1 + extra) as libc::rlim_t;
        // SAFETY: lowers this process's soft limit (set back just below).
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        let started = p.start();
        // SAFETY: sets the saved limit back.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) };
        drop(fillers);
        match started {
            Ok(()) => {
                let code = p.join_timeout(LONG)?;
                check_eq!(code, Some(4));
                outcomes.push("ok".to_string());
            }
            Err(err) => outcomes.push(format!("{:?}", err.kind())),
        }
        drop(p);
        check!(
            multiproc::active_children().is_empty(),
            "extra {extra}: children left: {:?}",
            multiproc::active_children()
        );
    }
    check_eq!(common::open_fds(), before);
    check!(
        common::zombie_children().is_empty(),
        "zombies: {:?}",
        common::zombie_children()
    );
    check!(
        outcomes.first().map(String::as_str) != Some("ok")
            && outcomes.last().map(String::as_str) == Some("ok"),
        "outcomes {outcomes:?}"
    );
    Ok(())
}

/// Starts a daemonic sleeper and a non-daemonic child that writes after a while, writes the
/// daemon's pid, drops both handles and returns.
#[process]
fn drop_running_children(dir: String) {
    let daemon = Process::new(sleeper, 60).with_daemon(true);
    daemon.start().expect("start the daemon");
    let writer = Process::new(late_writer, format!("{dir}/late"));
    writer.start().expect("start the writer");
    write_line(
        &format!("{dir}/daemon"),
        &daemon.pid().expect("pid").to_string(),
    );
}

/// A child that drops the handles of its running children and returns: as it ends, its
/// non-daemonic child is joined (it has written when the child's join returns) and its
/// daemonic one terminated (gone by then), as Python's exit function does.
fn dropped_children_ended_at_exit(m: StartMethod) -> Outcome {
    let dir = scratch("dropped-children").join(format!("{m}"));
    std::fs::create_dir_all(&dir)?;
    let p = Process::new(drop_running_children, dir.to_string_lossy().into_owned())
        .with_start_method(m);
    start(&p)?;
    check_eq!(p.join_timeout(LONG)?, Some(0));
    let daemon: i32 = std::fs::read_to_string(dir.join("daemon"))?
        .trim()
        .parse()?;
    let gone = is_gone(daemon);
    if !gone {
        // SAFETY: clean up the orphan before failing.
        unsafe { libc::kill(daemon, libc::SIGKILL) };
    }
    check!(gone, "the daemonic grandchild outlived its parent's exit");
    check!(
        dir.join("late").exists(),
        "the non-daemonic grandchild was not joined"
    );
    Ok(())
}

/// Writes its working directory and `MULTIPROC_PROBE`.
#[process]
fn report_cwd_and_env(path: String) {
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let var = std::env::var("MULTIPROC_PROBE").unwrap_or_default();
    write_line(&path, &format!("{cwd} {var}"));
}

/// A fork or spawn child starts in its parent's working directory and environment as they are
/// at `start`, changed since the last start (a fork-server child gets the server's, from when
/// the server started, as in CPython).
fn cwd_and_environment_at_start(m: StartMethod) -> Outcome {
    let dir = scratch("cwd-env").join(format!("{m}"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("report").to_string_lossy().into_owned();
    let first = Process::new(report_cwd_and_env, path.clone()).with_start_method(m);
    start(&first)?;
    first.join()?;
    let old = std::env::current_dir()?;
    std::env::set_current_dir(&dir)?;
    // SAFETY: this test process has no other thread now.
    unsafe { std::env::set_var("MULTIPROC_PROBE", "changed") };
    let p = Process::new(report_cwd_and_env, path.clone()).with_start_method(m);
    let started = p.start();
    std::env::set_current_dir(&old)?;
    // SAFETY: as above.
    unsafe { std::env::remove_var("MULTIPROC_PROBE") };
    started?;
    check_eq!(p.join_timeout(LONG)?, Some(0));
    let seen = std::fs::read_to_string(&path)?;
    if m != StartMethod::ForkServer {
        check_eq!(seen.trim_end(), format!("{} changed", dir.display()));
    }
    Ok(())
}

/// A value whose `Drop` panics in a child.
#[derive(Serialize, Deserialize)]
struct DropPanics(u32);

impl Drop for DropPanics {
    fn drop(&mut self) {
        if !std::thread::panicking() && parent_process().is_some() {
            panic!("drop of DropPanics({})", self.0);
        }
    }
}

#[process]
fn returns_a_value_that_panics_on_drop(n: u32) -> DropPanics {
    DropPanics(n)
}

#[process]
fn takes_a_value_that_panics_on_drop(_value: DropPanics) {}

/// A panic in the `Drop` of a child's result or argument is the child's panic: code 1, with
/// its message, for a `Process`; a `Panicked` error for a `spawn`'s join.
fn panic_in_drop_of_result_or_argument(m: StartMethod) -> Outcome {
    let p = Process::new(returns_a_value_that_panics_on_drop, 7).with_start_method(m);
    start(&p)?;
    check_eq!(p.join_timeout(LONG)?, Some(1));
    check_eq!(
        p.remote_panic().map(|panic| panic.message),
        Some("drop of DropPanics(7)".to_string())
    );
    let p = Process::new(takes_a_value_that_panics_on_drop, DropPanics(8)).with_start_method(m);
    start(&p)?;
    check_eq!(p.join_timeout(LONG)?, Some(1));
    check_eq!(
        p.remote_panic().map(|panic| panic.message),
        Some("drop of DropPanics(8)".to_string())
    );
    let handle = multiproc::ProcessBuilder::new()
        .start_method(m)
        .spawn(returns_a_value_that_panics_on_drop, 9)?;
    match handle.join() {
        Err(err) => check_eq!(
            err.remote_panic().map(|panic| panic.message.clone()),
            Some("drop of DropPanics(9)".to_string())
        ),
        Ok(value) => {
            std::mem::forget(value);
            return Err("the join gave the value".into());
        }
    }
    Ok(())
}

/// Replaces itself with `sh -c 'exit <code>'`.
#[process]
fn exec_exit(code: i32) {
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new("sh")
        .args(["-c", &format!("exit {code}")])
        .exec();
    panic!("exec failed: {err}");
}

/// A child that replaces itself with another program (`exec`) is joined with that program's
/// exit code, under every method (a fork-server child's own report of its code is gone with
/// its image: the server reports it).
fn child_that_execs(m: StartMethod) -> Outcome {
    let p = Process::new(exec_exit, 7).with_start_method(m);
    start(&p)?;
    check_eq!(p.join_timeout(LONG)?, Some(7));
    Ok(())
}

/// 150 children alive at once (the fork server watches more than its 32 on the stack), then
/// killed in the reverse order and joined: each with -9, and nothing left behind.
fn many_children_alive_at_once(m: StartMethod) -> Outcome {
    let warm = Process::new(ok_worker, ()).with_start_method(m);
    start(&warm)?;
    warm.join()?;
    let before = common::open_fds();
    let mut children = Vec::new();
    for _ in 0..150 {
        let p = Process::new(sleeper, 60).with_start_method(m);
        start(&p)?;
        children.push(p);
    }
    check_eq!(multiproc::active_children().len(), 150);
    for p in children.iter().rev() {
        p.kill()?;
    }
    for p in &children {
        check_eq!(p.join_timeout(LONG)?, Some(-9));
    }
    // A start after them all.
    let p = Process::new(exiter, 6).with_start_method(m);
    start(&p)?;
    check_eq!(p.join_timeout(LONG)?, Some(6));
    drop(children);
    check_eq!(common::open_fds(), before);
    check!(
        common::zombie_children().is_empty(),
        "zombies: {:?}",
        common::zombie_children()
    );
    Ok(())
}

/// The fork server stopped (SIGSTOP) between two starts: the second fails within the request
/// timeout (30 s) with an error that says so, and the server is killed and reaped, not left
/// stopped; the next start is served by a new server. (Ignored by default: it takes 30 s.)
fn fork_server_stopped_between_starts() -> Outcome {
    let first = start_served(ok_worker, ())?;
    let server = server_of(&first)?;
    first.join()?;
    // SAFETY: stops the fork server of this process (a child of ours), by pid while it runs.
    unsafe { libc::kill(server, libc::SIGSTOP) };
    let t = Instant::now();
    let second = Process::new(ok_worker, ()).with_start_method(StartMethod::ForkServer);
    let started = second.start();
    let took = t.elapsed();
    let result = (|| -> Outcome {
        let err = match started {
            Ok(()) => return Err("a start served by a stopped server".into()),
            Err(err) => err,
        };
        check!(
            took < Duration::from_secs(40),
            "the start failed after {took:?}: {err}"
        );
        check!(common::chain(&err).contains("did not answer"), "{err}");
        let deadline = Instant::now() + LONG;
        while !is_gone(server) {
            check!(
                Instant::now() < deadline,
                "the stopped server {server} is still there"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let third = start_served(sleeper, 60)?;
        let served_by = server_of(&third);
        third.kill()?;
        check_eq!(third.join_timeout(LONG)?, Some(-9));
        check!(
            served_by? != server,
            "the third start went to the old server"
        );
        Ok(())
    })();
    // SAFETY: lets it go on if the test failed while it is still there.
    unsafe { libc::kill(server, libc::SIGCONT) };
    result
}

fn main() {
    multiproc::init();
    let _ = MAIN_PID.set(std::process::id());
    let mut trials = trials!(each_method:
        exit_code_return,
        exit_code_panic,
        exit_code_exit,
        exit_code_sigsegv,
        exit_code_abort,
        terminate_and_kill,
        join_while_another_thread_signals,
        join_timeout,
        sentinel_and_wait,
        state_rules,
        names,
        builders_leave_clones_alone,
        child_identity,
        nested_names,
        daemonic_cannot_have_children,
        daemon_dies_with_killed_parent,
        active_children,
        dropped_handle_is_reaped,
        unknown_entry,
        no_leaks_200_cycles,
        one_control_socket_per_running_child,
        subclass_style,
        bootstrap_does_not_leak,
        stdin_is_dev_null,
        declared_frame_length,
        too_many_descriptors_in_arguments,
        forked_grandchild_holds_none_of_the_childs_channels,
        panic_payload_panics_on_drop,
        panic_reported_with_broken_stderr,
        starts_and_joins_under_interrupting_signals,
        threads_race_over_an_ending_child,
        nested_under_every_method,
        long_panic_message,
        too_many_descriptors_returned,
        join_while_another_thread_closes,
        nested_without_stdio,
        exit_in_a_child_joins_its_children,
        killed_while_exiting,
        sigchld_ignored,
        huge_argument,
        ends_beside_a_thread_holding_stdout,
        panics_beside_a_thread_holding_stderr,
        starts_short_of_descriptors,
        dropped_children_ended_at_exit,
        cwd_and_environment_at_start,
        panic_in_drop_of_result_or_argument,
        child_that_execs,
        many_children_alive_at_once,
    );
    trials.extend(trials!(once:
        global_start_method,
        fork_policy_with_threads,
        scratch_folders_removed_at_exit,
        build_mismatch,
        unexecutable_binary,
        copy_of_binary_is_same_build,
        forkserver_death_and_restart,
        fork_and_forkserver_from_two_threads,
        fork_server_exits_with_its_parent,
        forkserver_preload,
        many_starts_from_several_threads,
        forkserver_stray_byte,
        forkserver_garbage,
        forkserver_start_short_of_descriptors,
        forkserver_exit_codes_outlive_server,
        forkserver_exit_codes_under_server_kills,
    ));
    trials.push(
        libtest_mimic::Trial::test(
            "fork_server_stopped_between_starts",
            fork_server_stopped_between_starts,
        )
        .with_ignored_flag(true),
    );
    common::run(trials)
}
