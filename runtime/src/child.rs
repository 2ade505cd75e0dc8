//! The child's side: recognising a spawned child (before `main`, or in `init()`), acting on
//! the bootstrap that `bootstrap` checked and read (run an entry point, or make the preload
//! calls and become the fork server), running the entry point, reporting a panic and ending
//! with `_exit` (after the exit steps that `current` holds).

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::bootstrap::{
    self, authenticate, refuse, ChildMessage, Launch, PreloadCall, Refusal, Role, CHILD_FLAG,
    EXIT_BOOTSTRAP_FAILED, NOT_THE_PARENTS_BUILD,
};
use crate::current::{self, CurrentProcess, ParentProcess};
use crate::error::{ErrorKind, RemotePanic};
use crate::fd;
use crate::registry::{self, Entry};
use crate::{handle, sys, wire};

/// How a spawned child becomes its parent's fork server (`start::forkserver::serve`), given by
/// the caller above the start methods, which this module does not name.
pub(crate) type ForkServerMain = fn(UnixStream) -> !;

/// In `init()`: when this process is a spawned child, runs it and never returns.
pub(crate) fn enter_if_child(fork_server: ForkServerMain) {
    let mut args = std::env::args_os().skip(1);
    enter_flagged(args.next().as_deref(), args.next().as_deref(), fork_server);
}

/// When `flag` (`argv[1]`) is [`CHILD_FLAG`], runs this spawned child, whose control socket
/// `fd` (`argv[2]`) names, and never returns. Called by `init()`, or before `main` by the
/// constructor in `startup`. A child told to become the fork server runs `fork_server`.
pub(crate) fn enter_flagged(flag: Option<&OsStr>, fd: Option<&OsStr>, fork_server: ForkServerMain) {
    if flag != Some(OsStr::new(CHILD_FLAG)) {
        return;
    }
    let fd = fd.and_then(|s| s.to_str().and_then(|s| s.parse::<RawFd>().ok()));
    // SAFETY: the descriptor named after the flag is the control socket the parent passed to
    // this child for its bootstrap alone (`start::spawn`); nothing in this process owns it.
    let control = match fd.map(|fd| unsafe { sys::adopt_socket(fd) }) {
        Some(Ok(control)) => control,
        Some(Err(err)) => bail_early(&format!(
            "{CHILD_FLAG} was given a descriptor that is not a control socket: {err}"
        )),
        None => bail_early(&format!(
            "{CHILD_FLAG} needs the number of its control socket"
        )),
    };
    let deadline = sys::deadline_after(bootstrap::BOOTSTRAP_TIMEOUT);
    match authenticate(&control, deadline) {
        Ok(()) => {}
        Err(Refusal::Foreign(why)) => {
            // Nothing is said to a peer that is not our parent, and nothing that identifies
            // this build is said to anyone.
            bail_early(&format!("refused a bootstrap that does not come from this process's multiproc parent: {why}"))
        }
        Err(Refusal::OtherBuild) => refuse(
            &control,
            ErrorKind::BuildMismatch,
            NOT_THE_PARENTS_BUILD.to_string(),
        ),
    }
    run_bootstrap(control, Origin::Spawned(fork_server), deadline)
}

fn bail_early(message: &str) -> ! {
    sys::to_stderr(format_args!(
        "multiproc: {message} (this flag is for processes started by multiproc)"
    ));
    sys::exit_now(EXIT_BOOTSTRAP_FAILED)
}

/// Where a child's bootstrap comes from.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// An exec of the binary, authenticated by [`authenticate`]: may become a fork server, by
    /// running this.
    Spawned(ForkServerMain),
    /// A child of a fork server: only runs an entry point.
    ForkServer,
}

/// Child side of the bootstrap handshake of a fork server's child.
pub(crate) fn serve(control: UnixStream) -> ! {
    let deadline = sys::deadline_after(bootstrap::BOOTSTRAP_TIMEOUT);
    run_bootstrap(control, Origin::ForkServer, deadline)
}

/// What a fork server makes of a child's bootstrap before it forks the child, when the parent
/// has written that bootstrap in full on the child's control socket first (a `Process` start:
/// `start::forkserver::launch_process`): [`prepare_served`] reads and checks it in the server,
/// and [`run_served`] runs the child from there.
///
/// A fork server's child runs on copies of the server's pages, and pays a page fault for each
/// page it writes and for each window of code it runs first in its own address space (a fork
/// copies no page table entries for the program's code): reading, decoding and checking its
/// bootstrap, and allocating its setup, cost it about a dozen faults (2 to 3 us each on a
/// virtual machine), where the server, which runs that code for every child, has it at hand.
pub(crate) enum Served {
    /// Everything checked and made: the child only runs it.
    Run {
        setup: Box<Setup>,
        entry: &'static Entry,
        acknowledge: bool,
    },
    /// A launch whose descriptors follow on the socket: the child receives them, then runs it.
    /// Boxed, as the setup is: the child moves this value, and a large one is copied with a
    /// call to `memmove` (one more window of code for a forked child to fault in).
    Launch {
        control: UnixStream,
        launch: Box<Launch>,
        acknowledge: bool,
    },
    /// The child refuses its bootstrap with this.
    Refuse {
        control: UnixStream,
        kind: ErrorKind,
        message: String,
    },
    /// The parent hung up first: the child exits without a word.
    Closed,
}

impl Served {
    /// The child's control socket, if the child keeps it.
    pub(crate) fn control_fd(&self) -> Option<RawFd> {
        match self {
            Served::Run { setup, .. } => Some(setup.control.as_raw_fd()),
            Served::Launch { control, .. } | Served::Refuse { control, .. } => {
                Some(control.as_raw_fd())
            }
            Served::Closed => None,
        }
    }
}

/// Reads, in the fork server, the bootstrap that waits in full on `control` (without waiting
/// for anything that has not arrived), and makes of it what the child forked next runs (see
/// [`Served`]). Never fails: what the child would refuse, it refuses once forked. The server
/// drops what it returns once it has forked (closing its copy of the socket).
pub(crate) fn prepare_served(control: UnixStream) -> Served {
    let (launch, acknowledge) =
        match bootstrap::try_receive(&control, Some(std::time::Instant::now())) {
            Err(None) => return Served::Closed,
            Err(Some((kind, message))) => {
                return Served::Refuse {
                    control,
                    kind,
                    message,
                }
            }
            Ok(Role::ForkServer { .. }) => {
                return Served::Refuse {
                    control,
                    kind: ErrorKind::Bootstrap,
                    message: "a child of the fork server cannot become a fork server".to_string(),
                }
            }
            Ok(Role::Run(launch)) => (launch, true),
            Ok(Role::RunUnacknowledged(launch)) => (launch, false),
        };
    if launch.fds != 0 {
        return Served::Launch {
            control,
            launch: Box::new(launch),
            acknowledge,
        };
    }
    match entry_of(&launch) {
        Ok(entry) => Served::Run {
            setup: Setup::in_server(control, launch),
            entry,
            acknowledge,
        },
        Err(err) => Served::Refuse {
            control,
            kind: err.kind(),
            message: err.message().to_string(),
        },
    }
}

/// Runs, in a fork server's child, what [`prepare_served`] made. Never returns.
pub(crate) fn run_served(served: Served) -> ! {
    match served {
        Served::Run {
            setup,
            entry,
            acknowledge,
        } => {
            if acknowledge && wire::send(&setup.control, &ChildMessage::Ready).is_err() {
                sys::exit_now(EXIT_BOOTSTRAP_FAILED);
            }
            run(setup, entry, Vec::new())
        }
        Served::Launch {
            control,
            launch,
            acknowledge,
        } => run_launch(control, *launch, acknowledge),
        Served::Refuse {
            control,
            kind,
            message,
        } => refuse(&control, kind, message),
        Served::Closed => sys::exit_now(EXIT_BOOTSTRAP_FAILED),
    }
}

/// The name of the pool workers' entry point (`pool::worker::WorkerMain::NAME`): the library
/// starts it only as a daemonic pool worker, never as a preload.
const POOL_WORKER: &str = "multiproc::pool::worker";

/// Child side of the bootstrap handshake (a spawned binary, once its parent is authenticated,
/// or a fork-server child).
fn run_bootstrap(control: UnixStream, origin: Origin, deadline: Option<std::time::Instant>) -> ! {
    let role = bootstrap::receive(&control, deadline);
    match (role, origin) {
        (Role::ForkServer { .. }, Origin::ForkServer) => refuse(
            &control,
            ErrorKind::Bootstrap,
            "a child of the fork server cannot become a fork server".to_string(),
        ),
        (Role::ForkServer { preload }, Origin::Spawned(fork_server)) => {
            if !preload.is_empty() {
                // For the message and location of a panicking preload.
                set_process_name(Box::new("fork server".to_string()));
                install_panic_hook();
            }
            for call in &preload {
                if let Err((kind, message)) = preload_call(call) {
                    refuse(&control, kind, message);
                }
            }
            if wire::send(&control, &ChildMessage::Ready).is_err() {
                sys::exit_now(EXIT_BOOTSTRAP_FAILED);
            }
            fork_server(control)
        }
        (Role::Run(launch), origin) => {
            exit_function_of(origin);
            run_launch(control, launch, true)
        }
        (Role::RunUnacknowledged(launch), origin) => {
            exit_function_of(origin);
            run_launch(control, launch, false)
        }
    }
}

/// Registers the exit function in a spawned child before it runs its target, for a target that
/// ends with `exit(3)` (`std::process::exit`): its children are then joined first, as in
/// `main` (and as Python's `sys.exit` in a child). A forked child inherits its parent's; a fork
/// server's child, the server's (`start::forkserver::serve`).
fn exit_function_of(origin: Origin) {
    if let Origin::Spawned(_) = origin {
        current::register_exit_function();
    }
}

/// Receives the launch's descriptors, checks its entry point, says `Ready` if the parent waits
/// for it (`acknowledge`), and runs the entry point; refuses the bootstrap if any of that fails.
fn run_launch(control: UnixStream, launch: Launch, acknowledge: bool) -> ! {
    let fds = match wire::recv_fds(&control, launch.fds) {
        Ok(fds) => fds,
        Err(err) => refuse(
            &control,
            ErrorKind::Bootstrap,
            format!("cannot receive the parent's descriptors: {}", err.chain()),
        ),
    };
    let entry = match entry_of(&launch) {
        Ok(entry) => entry,
        Err(err) => refuse(&control, err.kind(), err.message().to_string()),
    };
    if acknowledge && wire::send(&control, &ChildMessage::Ready).is_err() {
        sys::exit_now(EXIT_BOOTSTRAP_FAILED);
    }
    run(Setup::new(control, launch), entry, fds)
}

/// The entry point a launch runs, or why a child refuses to run it (an
/// [`ErrorKind::UnknownEntry`] error): a name this build does not register, or the pool
/// workers' entry outside a pool. The parent of a fork-server child, which is its own build,
/// asks the same before it starts the child (`start::forkserver::launch_process`).
pub(crate) fn entry_of(launch: &Launch) -> crate::error::Result<&'static Entry> {
    if launch.entry == POOL_WORKER && !launch.daemon {
        return Err(crate::error::Error::new(
            ErrorKind::UnknownEntry,
            format!("`{POOL_WORKER}` runs only as a pool's worker"),
        ));
    }
    registry::lookup(&launch.entry)
        .map_err(|err| crate::error::Error::new(ErrorKind::UnknownEntry, err.message().to_string()))
}

/// Makes one of the fork server's preload calls; an error says why it failed.
fn preload_call(call: &PreloadCall) -> std::result::Result<(), (ErrorKind, String)> {
    let what = format!("the fork server's preload `{}`", call.entry);
    if call.entry == POOL_WORKER {
        return Err((ErrorKind::UnknownEntry, format!("{what}: not a preload")));
    }
    let entry = registry::lookup(&call.entry)
        .map_err(|err| (ErrorKind::UnknownEntry, format!("{what}: {}", err.chain())))?;
    IN_TARGET.with(|t| t.set(true));
    let result = catch_quiet(|| entry.invoke(&call.payload));
    IN_TARGET.with(|t| t.set(false));
    match result {
        Ok(Ok(_output)) => {}
        Ok(Err(err)) => {
            return Err((
                ErrorKind::Bootstrap,
                format!("{what} failed: {}", err.chain()),
            ))
        }
        Err((message, location)) => {
            let at = location.map(|l| format!(" at {l}")).unwrap_or_default();
            return Err((
                ErrorKind::Bootstrap,
                format!("{what} panicked{at}: {message}"),
            ));
        }
    }
    match sys::thread_count() {
        Ok(1) => Ok(()),
        Ok(n) => Err((
            ErrorKind::Bootstrap,
            format!(
                "{what} left {} thread(s) running: the server must stay single-threaded to fork safely",
                n - 1
            ),
        )),
        Err(err) => Err((ErrorKind::Bootstrap, format!("{what}: cannot count threads: {err}"))),
    }
}

thread_local! {
    static IN_TARGET: Cell<bool> = const { Cell::new(false) };
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<(String, Option<String>)>> = const { RefCell::new(None) };
    /// Under `panic = "abort"`: how the panic hook reports a panic of this thread's target
    /// before the process aborts (see [`reporting_aborts`]).
    static ABORT_REPORT: RefCell<Option<AbortReport>> = const { RefCell::new(None) };
}

/// Sends a panic's message and location to whoever waits for the target; `true` if it went.
pub(crate) type AbortReport = Box<dyn Fn(String, Option<String>) -> bool>;

/// Runs `f` so that a panic in it is reported with `make()`'s report from the panic hook, when
/// the panic cannot unwind: built with `panic = "abort"`, a panic aborts the process right
/// after the hook (no `catch_unwind` ever returns), and without this its message would reach
/// the parent only as a death by SIGABRT.
///
/// The strategy is the runtime crate's `cfg(panic)`, which is the binary's: Cargo builds every
/// crate of a profile with the same strategy, and a crate built with `abort` cannot be linked
/// into a binary that unwinds. With unwinding, `f` just runs, and the report is left to the
/// caller's `catch_unwind` (a panic that the target catches itself is no failure).
pub(crate) fn reporting_aborts<R>(make: impl FnOnce() -> AbortReport, f: impl FnOnce() -> R) -> R {
    if !cfg!(panic = "abort") {
        return f();
    }
    let previous = ABORT_REPORT.with(|r| r.replace(Some(make())));
    let result = f();
    ABORT_REPORT.with(|r| *r.borrow_mut() = previous);
    result
}

/// What a child sets up before its target runs: who it is, its control socket, its name for
/// the panic hook, the `/dev/null` its standard input becomes (a forked child's).
///
/// [`Setup::new`] makes everything that allocates or opens, and installs the library's panic
/// hook (which takes a lock that a forked child must never take); [`run`] only moves it into
/// place.
/// The fork start method makes the setup in the parent, before it forks: a forked child runs on
/// copies of the parent's pages, and pays a page fault (about 2 us) for each page it writes and
/// for each window of code it runs for the first time, the allocator's included; the parent has
/// them at hand. The parent closes its copies when it drops the setup after the fork.
pub(crate) struct Setup {
    control: Arc<UnixStream>,
    launch: Launch,
    process: CurrentProcess,
    parent: ParentProcess,
    /// For the panic hook, which is installed when the setup is made (see
    /// [`install_panic_hook`]). Boxed: the hook finds it through a thin atomic pointer.
    #[allow(clippy::box_collection)]
    name: Box<String>,
    /// The parent's `/dev/null` ([`shared_dev_null`]), which a forked child makes its standard
    /// input as it starts ([`ForChild::in_child`]); none for a child whose standard input is
    /// `/dev/null` already (a spawned child's, set by the spawn; a fork-server child's, set
    /// by the server), or if it cannot be opened.
    stdin: Option<RawFd>,
}

impl Setup {
    /// The setup of the child described by `launch`, whose end of the control socket is
    /// `control`, made in the child itself (a spawned or fork-server child).
    pub(crate) fn new(control: UnixStream, launch: Launch) -> Box<Setup> {
        install_panic_hook();
        Box::new(Setup::with_stdin(control, launch, None))
    }

    /// [`new`](Self::new), made in the parent for a child it forks next. Boxed: the child
    /// moves a pointer where it would copy the whole setup (a call to `memmove`, whose window
    /// of code a forked child faults in).
    pub(crate) fn for_fork(control: UnixStream, launch: Launch) -> Box<Setup> {
        install_panic_hook();
        Box::new(Setup::with_stdin(control, launch, shared_dev_null()))
    }

    /// [`new`](Self::new), made by a fork server for the child it forks next: the server has
    /// installed the panic hook once, before it serves (`start::forkserver::serve`; it runs no
    /// code of the user's after that, so the hook stays the library's), and installing it
    /// again for every child would write std's hook lock, one more page to copy per fork.
    fn in_server(control: UnixStream, launch: Launch) -> Box<Setup> {
        Box::new(Setup::with_stdin(control, launch, None))
    }

    fn with_stdin(control: UnixStream, mut launch: Launch, stdin: Option<RawFd>) -> Setup {
        let control = Arc::new(control);
        let (process, parent) = current::child_identity(&mut launch, control.clone());
        Setup {
            name: Box::new(launch.name.clone()),
            stdin,
            control,
            launch,
            process,
            parent,
        }
    }
}

impl ForChild for Box<Setup> {
    fn kept_fd(&self) -> RawFd {
        self.control.as_raw_fd()
    }

    fn kept_registered(&self) -> bool {
        true
    }

    fn in_child(&self) {
        if let Some(null) = self.stdin {
            // SAFETY: the parent's shared `/dev/null`, open (and registered) until this
            // child closes the parent's descriptors, just after this.
            sys::stdin_from(unsafe { BorrowedFd::borrow_raw(null) });
        }
    }
}

/// This process's `/dev/null`, opened once (close-on-exec, above the standard streams) for the
/// standard input of the children it forks, instead of once per child: an `open(2)` and two
/// `close(2)`s less per fork start. Registered for life, so that every forked child closes its
/// copy as it starts, after a child of the fork start method has made it its standard input
/// (`dup2`). A forked child that forks in turn opens its own. `None` if it cannot be opened.
pub(crate) fn shared_dev_null() -> Option<RawFd> {
    /// The descriptor, and the fork generation (plus one) of the process that opened it.
    static DEV_NULL: AtomicU64 = AtomicU64::new(0);
    fd::made(|fds| {
        let word = DEV_NULL.load(Ordering::Relaxed);
        let generation = fd::generation() + 1;
        if word != 0 && word >> 32 == generation {
            return Ok(word as u32 as RawFd);
        }
        let null = sys::open_devnull()?;
        let raw = fds.own(null).keep_for_life();
        DEV_NULL.store(generation << 32 | u64::from(raw as u32), Ordering::Relaxed);
        Ok::<_, std::io::Error>(raw)
    })
    .ok()
}

/// Becomes the child described by `setup`, runs `entry`, reports, exits. Never returns.
pub(crate) fn run(setup: Box<Setup>, entry: &'static Entry, fds: Vec<OwnedFd>) -> ! {
    // The launch stays in the box, read in place: the child ends with `_exit`, and moving it
    // out would only copy it.
    let Setup {
        control,
        process,
        parent,
        name,
        ..
    } = *setup;
    let launch = &setup.launch;
    // Closed in the children this child forks, for as long as it lives (registered already
    // in a child of the fork start method: `ForChild::kept_registered`).
    fd::register_for_life(control.as_raw_fd());
    current::become_child(process, parent);
    // A child starts its own children the way it was started, unless told otherwise.
    crate::context::force_start_method(Some(launch.start_method));
    if launch.daemon {
        watch_parent(control.clone());
    }
    set_process_name(name);

    IN_TARGET.with(|t| t.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        // A result nobody reads is dropped, not encoded (see `Entry::invoke_discarding`).
        let invoke = || {
            handle::with_incoming(fds, || {
                if launch.returns {
                    entry.invoke(&launch.payload)
                } else {
                    entry
                        .invoke_discarding(&launch.payload)
                        .map(|()| handle::Encoded::default())
                }
            })
        };
        if launch.entry == POOL_WORKER {
            // The worker reports its tasks' panics on its own messages (`pool::worker`).
            invoke()
        } else {
            reporting_aborts(
                || {
                    let (control, process) = (control.clone(), launch.name.clone());
                    Box::new(move |message, location| {
                        let report = RemotePanic {
                            message: bounded(message),
                            location,
                            process: bounded(process.clone()),
                            pid: std::process::id() as i32,
                        };
                        wire::send(&control, &ChildMessage::Panicked(report)).is_ok()
                    })
                },
                invoke,
            )
        }
    }));
    IN_TARGET.with(|t| t.set(false));
    let code = match result {
        Ok(Ok(output)) if launch.returns => match send_returned(&control, output) {
            Ok(()) => 0,
            Err(err) => {
                let message = format!("cannot send the result back: {}", err.chain());
                sys::to_stderr(format_args!("Process {}:\n{message}", launch.name));
                let _ = wire::send(
                    &control,
                    &ChildMessage::Failed {
                        kind: ErrorKind::Io,
                        message: bounded(message),
                    },
                );
                1
            }
        },
        Ok(Ok(_output)) => 0,
        Ok(Err(err)) => {
            sys::to_stderr(format_args!("Process {}:\n{}", launch.name, err.chain()));
            let kind = if err.kind() == ErrorKind::Codec {
                ErrorKind::Codec
            } else {
                ErrorKind::Bootstrap
            };
            let _ = wire::send(
                &control,
                &ChildMessage::Failed {
                    kind,
                    message: bounded(err.chain().to_string()),
                },
            );
            1
        }
        Err(payload) => {
            let (message, location) = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| (panic_message(&*payload), None));
            let report = RemotePanic {
                message: bounded(message),
                location,
                process: bounded(launch.name.clone()),
                pid: std::process::id() as i32,
            };
            let _ = wire::send(&control, &ChildMessage::Panicked(report));
            // Not dropped: its `Drop` is the target's code, which may panic in turn, and a
            // panic here would unwind out of the child (a forked one into its copy of the
            // parent's `main`). The process ends next, and frees it.
            std::mem::forget(payload);
            1
        }
    };
    finish(code)
}

/// Sends the target's result to the parent ([`ChildMessage::Returned`]): inline when small,
/// else in a sealed memory file, so that the message fits in the socket's buffer whatever the
/// size of the value (the parent reads it once this process has exited).
fn send_returned(control: &UnixStream, output: handle::Encoded) -> crate::error::Result<()> {
    use crate::bootstrap::ReturnedBytes;
    use crate::error::Error;
    let handle::Encoded { bytes, fds, .. } = output;
    let (value, file) = if bytes.len() <= ReturnedBytes::INLINE_MAX {
        (ReturnedBytes::Inline(bytes), None)
    } else {
        let file = sys::sealed_memfd("result", &bytes)
            .map_err(|err| Error::io("cannot put the result in a memory file", err))?;
        let len = bytes.len() as u64;
        (ReturnedBytes::File { len }, Some(file))
    };
    let raw: Vec<RawFd> = file.iter().chain(&fds).map(AsRawFd::as_raw_fd).collect();
    // Refused before the frame goes: a frame that announces descriptors which do not follow
    // is the last the parent reads, and the report of this failure would go unread.
    if raw.len() > sys::MAX_FDS {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the result holds {} descriptors{}: at most {} go back to the parent",
                fds.len(),
                if file.is_some() {
                    " (and a memory file holds its bytes)"
                } else {
                    ""
                },
                sys::MAX_FDS
            ),
        ));
    }
    wire::send(
        control,
        &ChildMessage::Returned {
            value,
            fds: raw.len() as u32,
        },
    )?;
    wire::send_fds_until(control, &raw, None)
}

/// What `start::fork::fork_child`'s `prepare` makes for the child: the descriptor in it (its
/// end of the control socket), which the child keeps.
pub(crate) trait ForChild {
    fn kept_fd(&self) -> RawFd;

    /// Whether the child keeps [`kept_fd`](Self::kept_fd) registered (closed in the children
    /// it forks in turn), as [`run`] does with its control socket: the fork then leaves them
    /// in the child's copy of the registry instead of taking them out, and the child writes
    /// nothing in the list's buffer (a page it would have to copy first).
    fn kept_registered(&self) -> bool {
        false
    }

    /// Runs in the child just after the fork, before it closes the parent's descriptors.
    fn in_child(&self) {}
}

impl ForChild for UnixStream {
    fn kept_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

/// Python's `_exit_function` then `_exit`: daemonic children terminated, the others joined,
/// stdio flushed; no destructor of the parent's copied state runs.
pub(crate) fn finish(code: i32) -> ! {
    current::run_exit_steps();
    flush_stdout();
    // Standard error is not flushed: std does not buffer it (its `flush` only takes its lock,
    // which another thread may hold).
    sys::exit_now(code)
}

/// How long a child that ends waits for another of its threads to let go of standard output's
/// lock, to flush what it buffered.
const STDOUT_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Flushes standard output as a `main` that returns does: not if another thread holds its lock
/// (std flushes it at exit with a `try_lock`), which would keep the child from ending for as
/// long as that thread holds it (for good, for a thread that keeps a `StdoutLock`).
///
/// With one thread (the usual case) the flush is made at once: nothing else can hold the lock
/// (this thread may, and the lock is reentrant). Else it is made on a thread of its own, which
/// the child waits for at most [`STDOUT_FLUSH_WAIT`], as close as std offers to a `try_lock`.
fn flush_stdout() {
    if sys::known_single_threaded() || matches!(sys::thread_count(), Ok(1)) {
        let _ = std::io::stdout().flush();
        return;
    }
    let (done, flushed) = std::sync::mpsc::channel();
    let flusher = std::thread::Builder::new()
        .name("multiproc-flush".into())
        .spawn(move || {
            let _ = std::io::stdout().flush();
            let _ = done.send(());
        });
    if flusher.is_ok() {
        let _ = flushed.recv_timeout(STDOUT_FLUSH_WAIT);
    }
}

/// A daemonic child dies with its parent, even when the parent is SIGKILLed: a thread waits for
/// the parent's end of the control socket to close.
///
/// It waits for a hang-up (`POLLHUP`: both directions shut, which the parent's close does), not
/// for `POLLRDHUP` alone: a pool worker that aborts on a panic shuts the reading side of its
/// own end first (`pool::worker`), and must live on until it has sent its report.
fn watch_parent(control: Arc<UnixStream>) {
    let spawned = std::thread::Builder::new()
        .name("multiproc-parent-watch".into())
        .spawn(move || {
            if let Ok(events) = sys::poll_one(control.as_fd(), libc::POLLHUP, None) {
                if events != 0 {
                    sys::exit_now(1);
                }
            }
        });
    if let Err(err) = spawned {
        log::warn!(
            target: "multiproc",
            "cannot watch the parent process, this daemonic child may outlive it: {err}"
        );
    }
}

type Hook = Box<dyn Fn(&panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// The name the library's panic hook gives this process (`Process <name>:`); null outside a
/// child. A child stores a name made before it was forked (see [`Setup`]).
static PROCESS_NAME: AtomicPtr<String> = AtomicPtr::new(std::ptr::null_mut());

/// The address of the library's panic hook once installed: how [`install_panic_hook`] knows
/// it is still the process's hook.
static INSTALLED_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Makes the library's panic hook this process's, on top of the current hook, unless it is
/// already. The hook records the message and location of a panic of a child's target, says
/// which process panicked, then calls the hook it wraps.
///
/// It takes std's hook lock, which another thread may hold while its panic runs the hook: a
/// forked child of a multi-threaded process must never call it (that lock would stay taken
/// for good). The fork start method calls it in the parent, before it forks, and the child
/// only stores its name; spawned children and the fork server call it while single-threaded.
pub(crate) fn install_panic_hook() {
    let _serialised = lock_panic_hook();
    let current = panic::take_hook();
    let address = |hook: &Hook| &**hook as *const _ as *const () as usize;
    if address(&current) == INSTALLED_HOOK.load(Ordering::Relaxed) {
        panic::set_hook(current);
        return;
    }
    let hook: Hook = Box::new(move |info: &panic::PanicHookInfo<'_>| {
        if IN_TARGET.with(|t| t.get()) {
            let message = info
                .payload_as_str()
                .map(str::to_string)
                .unwrap_or_else(|| "Box<dyn Any>".to_string());
            let location = info.location().map(|l| l.to_string());
            // Under `panic = "abort"` this is the last code to run: the report goes now. A
            // quiet panic (a pool task's) is printed after all if it could not go.
            let reported = cfg!(panic = "abort")
                && ABORT_REPORT.with(|r| {
                    r.borrow()
                        .as_ref()
                        .is_some_and(|report| report(message.clone(), location.clone()))
                });
            LAST_PANIC.with(|p| *p.borrow_mut() = Some((message, location)));
            if QUIET.with(|q| q.get()) && (reported || !cfg!(panic = "abort")) {
                return;
            }
            // SAFETY: a name, once stored, is leaked: it lives as long as the process.
            if let Some(name) = unsafe { PROCESS_NAME.load(Ordering::Acquire).as_ref() } {
                sys::to_stderr(format_args!("Process {name}:"));
            }
        }
        current(info);
    });
    INSTALLED_HOOK.store(address(&hook), Ordering::Relaxed);
    panic::set_hook(hook);
}

/// Held while the library takes and sets the process's panic hook, and by a fork across the
/// fork: std's hook lock is then never held by one of the library's threads at the moment of a
/// fork (a child that panics, or installs the hook, would wait on it for good).
pub(crate) fn lock_panic_hook() -> std::sync::MutexGuard<'static, ()> {
    static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HOOK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Names this process for the panic hook; `name` is leaked (it lives as long as the process).
#[allow(clippy::box_collection)]
fn set_process_name(name: Box<String>) {
    PROCESS_NAME.store(Box::into_raw(name), Ordering::Release);
}

/// The most of a panic's message, or of a failure's, that a child sends its parent (and of
/// its name), in bytes.
///
/// The parent reads the control socket once the child has exited, not before: everything the
/// child writes there must fit in the socket's buffer (about 200 KiB by default, the frame's
/// overhead included), or the child blocks on the write for good and its parent's `join` with
/// it. A failing `assert_eq!` on two large vectors makes a message of megabytes.
const REPORT_MAX: usize = 32 * 1024;

/// `text`, cut to [`REPORT_MAX`] bytes (on a character boundary) with a note of how much was
/// left out; the child's standard error has it whole (the panic hook, or the line the child
/// writes as it fails, prints it).
fn bounded(mut text: String) -> String {
    if text.len() <= REPORT_MAX {
        return text;
    }
    let total = text.len();
    let mut cut = REPORT_MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!(
        "... ({} more bytes, left out of the report: the child's standard error has them)",
        total - cut
    ));
    text
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}

/// Runs `f` in a child, catching a panic quietly (nothing printed): a pool task's panic goes
/// back to the caller as data instead. Returns the panic's message and location.
pub(crate) fn catch_quiet<R>(f: impl FnOnce() -> R) -> Result<R, (String, Option<String>)> {
    let was_quiet = QUIET.with(|q| q.replace(true));
    LAST_PANIC.with(|p| p.borrow_mut().take());
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was_quiet));
    result.map_err(|payload| {
        let report = LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| (panic_message(&*payload), None));
        // Not dropped: its `Drop` may panic, and unwind out of the worker (a forked one into
        // its copy of the parent's `main`), as `run` does with a target's.
        std::mem::forget(payload);
        report
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_long_reports_on_a_character_boundary() {
        assert_eq!(bounded("short".to_string()), "short");
        let exact = "x".repeat(REPORT_MAX);
        assert_eq!(bounded(exact.clone()), exact);
        // A two-byte character across the limit: cut before it.
        let long = format!("{}é{}", "x".repeat(REPORT_MAX - 1), "y".repeat(1000));
        let cut = bounded(long.clone());
        assert!(cut.starts_with(&"x".repeat(REPORT_MAX - 1)));
        assert!(!cut.contains('é'));
        assert!(cut.contains(&format!("({} more bytes", long.len() - (REPORT_MAX - 1))));
    }
}
