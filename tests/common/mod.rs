//! Shared harness of the process tests: real `main`, every scenario under every start method.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use multiproc::StartMethod;

pub(crate) mod peers;

pub(crate) type Outcome = Result<(), Failed>;

/// One trial per start method: `name::fork`, `name::spawn`, `name::forkserver`.
pub(crate) fn each_method(name: &str, test: fn(StartMethod) -> Outcome) -> Vec<Trial> {
    StartMethod::all()
        .into_iter()
        .map(|m| {
            Trial::test(format!("{name}::{m}"), move || {
                let outcome = test(m);
                if outcome.is_err() {
                    kill_children();
                }
                outcome
            })
        })
        .collect()
}

/// Trials named after their test functions, so that a name is written once:
/// `trials!(each_method: a, b)` gives `a::fork`, `a::spawn`, `a::forkserver`, `b::fork`, ...
/// (see [`each_method`]) from `fn(StartMethod) -> Outcome`s, and `trials!(once: c, d)` one
/// trial `c`, one `d` from `fn() -> Outcome`s. Either gives a `Vec<Trial>`, in the order given.
#[macro_export]
macro_rules! trials {
    (each_method: $($test:ident),* $(,)?) => {{
        let mut trials: Vec<::libtest_mimic::Trial> = Vec::new();
        $(trials.extend($crate::common::each_method(stringify!($test), $test));)*
        trials
    }};
    (once: $($test:ident),* $(,)?) => {
        vec![$(::libtest_mimic::Trial::test(stringify!($test), $test)),*]
    };
}

/// Runs the trials on the main thread (so that fork is allowed) and exits.
pub(crate) fn run(trials: Vec<Trial>) -> ! {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        kill_children();
    }
    remove_scratch();
    conclusion.exit()
}

/// Kills the children a failed trial left running (a consumer still waiting for items, say):
/// the exit of this process joins its non-daemonic children, as Python's does, and would
/// wait for them forever instead of reporting the failure.
fn kill_children() {
    for child in multiproc::active_children() {
        let _ = child.kill();
        let _ = child.join_timeout(Duration::from_secs(5));
    }
}

/// The scratch folders of this run: one folder in the temp dir per test process, made on the
/// first `scratch`, that `run` removes once the trials ended.
struct ScratchRoot {
    path: PathBuf,
    /// The process that made it and removes it: a forked child inherits the value, and must
    /// not remove what its parent's trials still use.
    owner: u32,
}

static SCRATCH_ROOT: OnceLock<ScratchRoot> = OnceLock::new();

/// A fresh, empty scratch directory for one trial, under this run's scratch root.
pub(crate) fn scratch(tag: &str) -> PathBuf {
    let root = SCRATCH_ROOT.get_or_init(|| {
        let owner = std::process::id();
        let path = std::env::temp_dir().join(format!("multiproc-test-{owner}-{}", rand_u64()));
        let _ = std::fs::remove_dir_all(&path);
        ScratchRoot { path, owner }
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = root
        .path
        .join(format!("{tag}-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

/// Removes this run's scratch root, if this process made one. Only `run` calls it, in the
/// parent after the trials ended; children (forked or spawned) never reach it.
fn remove_scratch() {
    if let Some(root) = SCRATCH_ROOT.get() {
        if root.owner == std::process::id() {
            if let Err(err) = std::fs::remove_dir_all(&root.path) {
                eprintln!(
                    "could not remove the scratch folder {}: {err}",
                    root.path.display()
                );
            }
        }
    }
}

/// Waits for `path` to exist and hold a complete line, at most `timeout`.
pub(crate) fn read_when_ready(path: &std::path::Path, timeout: Duration) -> Result<String, Failed> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return Ok(text.trim_end().to_string());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{} was not written within {timeout:?}", path.display()).into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes `text` + newline atomically (rename), for a parent polling with `read_when_ready`.
pub(crate) fn write_line(path: &str, text: &str) {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, format!("{text}\n")).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Whether `pid` is gone (no such process, or a zombie nobody reaped yet).
pub(crate) fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.trim_start().starts_with('Z') || rest.trim_start().starts_with('X')
            })
            .unwrap_or(true),
    }
}

/// Number of open descriptors of this process.
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Descriptors of this process without close-on-exec (what any program it runs inherits).
pub(crate) fn inheritable_fds() -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: F_GETFD only reads the flags of a descriptor number.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            out.push(fd);
        }
    }
    out
}

/// Mappings of multiproc's shared memory in this process (anonymous `memfd:multiproc:*`
/// segments and named `/dev/shm` ones): other mappings (malloc arenas, stacks) come and go
/// and must not make a leak test flaky.
pub(crate) fn shared_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| {
            maps.lines()
                .filter(|l| l.contains("memfd:multiproc:") || l.contains("/dev/shm/"))
                .count()
        })
        .unwrap_or(0)
}

/// Entries of `/dev/shm` whose name starts with `prefix` (other programs' entries come and
/// go).
pub(crate) fn dev_shm_entries(prefix: &str) -> usize {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

/// Children of this process that are zombies.
pub(crate) fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == me && state == "Z" {
            out.push(pid);
        }
    }
    out
}

/// Fails the trial with `message` unless `cond`.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

/// Fails the trial unless `left == right`.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {{
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err(format!(
                        "{} == {}: {:?} != {:?} (line {})",
                        stringify!($left),
                        stringify!($right),
                        l,
                        r,
                        line!()
                    )
                    .into());
                }
            }
        }
    }};
}

pub(crate) const LONG: Duration = Duration::from_secs(30);

/// Starts `target(args)` with start method `m`.
pub(crate) fn start<T: multiproc::Target>(
    m: StartMethod,
    target: T,
    args: T::Args,
) -> Result<multiproc::Process, Failed> {
    let p = multiproc::Process::new(target, args).with_start_method(m);
    p.start().map_err(|err| format!("start failed: {err}"))?;
    Ok(p)
}

/// Starts `target(args)` under `spawn` from the binary `exe` (`set_executable`, put back
/// after) and joins it: its exit code, or the start's error.
pub(crate) fn spawned_from<T: multiproc::Target>(
    exe: &std::path::Path,
    target: T,
    args: T::Args,
) -> multiproc::Result<i32> {
    multiproc::set_executable(Some(exe.to_path_buf()));
    let p = multiproc::Process::new(target, args).with_start_method(StartMethod::Spawn);
    let result = p.start().and_then(|()| p.join());
    multiproc::set_executable(None);
    result
}

/// Joins `p` (bounded) and fails unless it exited with `expected`.
pub(crate) fn finish_with(p: &multiproc::Process, expected: i32) -> Outcome {
    match p.join_timeout(LONG)? {
        None => {
            let _ = p.kill();
            let _ = p.join_timeout(LONG);
            Err(format!("{} did not end within {LONG:?}", p.name()).into())
        }
        Some(code) if code == expected => Ok(()),
        Some(code) => Err(format!(
            "{} exited with {code}, expected {expected}: {}",
            p.name(),
            p.error().map(|e| chain(&e)).unwrap_or_default()
        )
        .into()),
    }
}

/// Joins `p` (bounded) and fails unless it returned normally.
pub(crate) fn finish(p: &multiproc::Process) -> Outcome {
    finish_with(p, 0)
}

/// Kills the calling process with SIGKILL, whatever it holds.
pub(crate) fn kill_self() -> ! {
    // SAFETY: signals our own process; SIGKILL cannot be caught, so this does not return.
    unsafe { libc::raise(libc::SIGKILL) };
    unreachable!("SIGKILL returned")
}

/// The descriptors of this process's open sockets.
pub(crate) fn socket_fds() -> std::io::Result<Vec<i32>> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        })
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect())
}

/// Exits with the number of sockets this process has open: what a child kept of its parent's.
#[multiproc::process]
pub fn exit_with_socket_count() {
    let sockets = socket_fds().map_or(99, |fds| fds.len());
    std::process::exit(sockets as i32);
}

/// In a child (a pool worker, a `Process`): its control socket, the only socket it has, to
/// write on by hand. Never closed: the `File` is not dropped.
#[allow(dead_code)]
pub(crate) fn only_socket() -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    let sockets = socket_fds().expect("list descriptors");
    assert_eq!(sockets.len(), 1, "a child has one socket: {sockets:?}");
    // SAFETY: the child's control socket, which the library keeps open for the life of the
    // process; the `File` is never dropped, so it never closes it.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(sockets[0]) })
}

/// This process's peak resident size (`VmHWM`), in KiB.
#[allow(dead_code)]
pub(crate) fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
}

/// An error and its sources as one line (`"message: source: ..."`): what a test that looks for
/// a cause's text searches, since an error's `Display` is its own message alone.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

/// CPU clock ticks (user and system) of a `/proc/.../stat` (a process's or a thread's).
pub(crate) fn cpu_ticks(path: &str) -> Result<u64, Failed> {
    let stat = std::fs::read_to_string(path)?;
    // After the command name (in parentheses, which may hold spaces): fields 3 on; utime and
    // stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').ok_or("no command name in stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// The `/proc/self/task/N` folders of this process's pool driver threads (named
/// `multiproc-pool`); an error if there is none.
pub(crate) fn pool_driver_threads() -> Result<Vec<String>, Failed> {
    let drivers: Vec<String> = std::fs::read_dir("/proc/self/task")?
        .flatten()
        .map(|task| task.path().to_string_lossy().into_owned())
        .filter(|task| {
            std::fs::read_to_string(format!("{task}/comm"))
                .is_ok_and(|comm| comm.trim() == "multiproc-pool")
        })
        .collect();
    if drivers.is_empty() {
        return Err("no driver thread found".into());
    }
    Ok(drivers)
}

/// A value that claims to nest `n` levels deep, as a corrupt or hostile peer's bytes would:
/// written as one flat tuple of `n` `Some` tags and a `None` (one level for the encoder), read
/// as a chain of options of itself (a level a tag): it reads back as the depth it claims, or
/// fails past the decoder's limit.
#[derive(Debug, Clone)]
pub(crate) struct ClaimsDepth(pub usize);

impl serde::Serialize for ClaimsDepth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tags = s.serialize_tuple(self.0 + 1)?;
        for _ in 0..self.0 {
            tags.serialize_element(&1u8)?;
        }
        tags.serialize_element(&0u8)?;
        tags.end()
    }
}

impl<'de> serde::Deserialize<'de> for ClaimsDepth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Chain(#[allow(dead_code)] Option<Box<Chain>>);
        let mut depth = 0;
        let mut chain = Chain::deserialize(d)?;
        // Unlinked one at a time: the derived drop recurses.
        while let Chain(Some(next)) = chain {
            chain = *next;
            depth += 1;
        }
        Ok(ClaimsDepth(depth))
    }
}

/// A node of a linked list, with derived serde: two levels of nesting a node.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Node {
    pub value: u32,
    pub next: Option<Box<Node>>,
}

/// A linked list of `nodes` nodes, the last made first.
pub(crate) fn linked(nodes: u32) -> Option<Box<Node>> {
    (0..nodes).fold(None, |next, value| Some(Box::new(Node { value, next })))
}

/// The length of a linked list, unlinked one node at a time (the derived drop recurses).
pub(crate) fn unlinked(mut list: Option<Box<Node>>) -> u32 {
    let mut n = 0;
    while let Some(mut node) = list {
        list = node.next.take();
        n += 1;
    }
    n
}
