//! How the pool starts its workers ([`Launcher`]), and the driver's two helper threads: the
//! starter, which starts workers (a fork-server request and a bootstrap handshake wait on
//! other processes), and the reaper, which reads the exit codes of dead workers. Neither makes
//! the driver thread wait on another process.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::jobs::Shared;
use super::link::Link;
use super::threads::spawn_counted;
use crate::bootstrap::Launch;
use crate::context::StartMethod;
use crate::error::{Error, ErrorKind, Result};
use crate::start::forkserver::{self, Zygotes};
use crate::start::{spawn, Popen};
use crate::sys;

/// How the pool starts its workers. `Send + Sync`: [`launch`](Launcher::launch) may be called
/// from any thread.
pub(crate) enum Launcher {
    /// `fork`: a zygote forked from the process when the pool was made forks them (replaced by
    /// its spare if it dies: see [`Zygotes`]).
    Zygote(Box<Zygotes>),
    /// `forkserver`: the process's fork server.
    ForkServer,
    /// `spawn`: an exec of the binary each.
    Spawn,
}

impl Launcher {
    pub(crate) fn new(method: StartMethod) -> Result<Launcher> {
        Ok(match method {
            StartMethod::Fork => Launcher::Zygote(Box::new(Zygotes::fork()?)),
            StartMethod::ForkServer => Launcher::ForkServer,
            StartMethod::Spawn => Launcher::Spawn,
        })
    }

    pub(super) fn launch(&self, launch: Launch, fds: &[RawFd]) -> Result<Popen> {
        match self {
            Launcher::Zygote(zygote) => zygote.launch(launch, fds),
            Launcher::ForkServer => forkserver::launch(launch, fds),
            Launcher::Spawn => spawn::launch(launch, fds),
        }
    }
}

const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Launcher>();
};

/// How long the driver, as it exits, waits for each helper thread to finish what it is doing
/// (a start held up by a stalled fork server, say); past that, the helper finishes alone and
/// disposes of what it gets (see [`Helpers`]).
pub(super) const HELPER_GRACE: Duration = Duration::from_millis(500);

/// A dead worker as the reaper thread sees it: a process to reap, and the link to mark buried
/// when the driver is gone. What else it is, is the driver's business.
pub(super) trait Reapable: Send + 'static {
    fn popen(&self) -> &Popen;
    fn link(&self) -> &Link;
}

/// What the driver's helper threads hand back to it.
pub(super) struct Handoff<W> {
    /// The driver has exited: a helper disposes of what it would hand back.
    pub closed: bool,
    /// Finished starts: the worker's name, and its process or why it could not start.
    pub started: Vec<(String, Result<Popen>)>,
    /// Dead workers and their exit codes.
    pub reaped: Vec<(W, Option<i32>)>,
}

impl<W> Default for Handoff<W> {
    fn default() -> Self {
        Handoff {
            closed: false,
            started: Vec::new(),
            reaped: Vec::new(),
        }
    }
}

/// A worker the driver asks its starter thread for.
pub(super) struct Order {
    pub name: String,
    pub launch: Launch,
}

/// What the reaper thread is given.
pub(super) enum Corpse<W> {
    /// A worker of the pool that exited: its exit code is read and it goes back to the driver,
    /// which fails its task with that code.
    Worker(Box<W>),
    /// A started process the pool does not use: killed and reaped.
    Stray(Popen),
}

/// The driver's two helper threads. The starter starts workers: a fork-server request and a
/// bootstrap handshake wait on other processes (for up to 30 and 60 seconds). The reaper reads
/// the exit codes of dead workers (a fork-server child's comes from the server, which may be
/// slow to give it). What they get comes back through `handoff`, with a wake-up of the driver.
pub(super) struct Helpers<W> {
    pub handoff: Arc<Mutex<Handoff<W>>>,
    pub orders: Option<mpsc::Sender<Order>>,
    pub corpses: Option<mpsc::Sender<Corpse<W>>>,
    /// Each thread's handle, and a channel that disconnects when it has done its work.
    pub starter: Option<(JoinHandle<()>, mpsc::Receiver<()>)>,
    pub reaper: Option<(JoinHandle<()>, mpsc::Receiver<()>)>,
}

impl<W: Reapable> Helpers<W> {
    /// No helper thread yet (see [`start`](Self::start)).
    pub(super) fn new() -> Helpers<W> {
        Helpers {
            handoff: Arc::new(Mutex::new(Handoff::default())),
            orders: None,
            corpses: None,
            starter: None,
            reaper: None,
        }
    }

    pub(super) fn handoff(&self) -> MutexGuard<'_, Handoff<W>> {
        self.handoff.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the starter and the reaper threads.
    pub(super) fn start(
        &mut self,
        launcher: Arc<Launcher>,
        init_fds: Arc<Vec<OwnedFd>>,
        shared: &Arc<Shared>,
    ) -> Result<()> {
        let cannot = |err| Error::io("cannot start the pool's helper threads", err);
        let (orders, incoming) = mpsc::channel();
        let (ended, starter_ended) = mpsc::channel::<()>();
        let (handoff, shared_) = (self.handoff.clone(), shared.clone());
        let handle = spawn_counted("multiproc-pool-start", move || {
            let _ended = ended;
            starter(launcher, init_fds, incoming, handoff, shared_);
        })
        .map_err(cannot)?;
        self.orders = Some(orders);
        self.starter = Some((handle, starter_ended));
        let (corpses, incoming) = mpsc::channel();
        let (ended, reaper_ended) = mpsc::channel::<()>();
        let (handoff, shared) = (self.handoff.clone(), shared.clone());
        let handle = spawn_counted("multiproc-pool-reap", move || {
            let _ended = ended;
            reaper(incoming, handoff, shared);
        })
        .map_err(cannot)?;
        self.corpses = Some(corpses);
        self.reaper = Some((handle, reaper_ended));
        Ok(())
    }
}

/// Waits at most `grace` for a helper thread to finish, and joins it if it did; otherwise it
/// goes on alone (it holds what it needs, and disposes of what it gets).
pub(super) fn let_finish(helper: Option<(JoinHandle<()>, mpsc::Receiver<()>)>, grace: Duration) {
    let Some((handle, ended)) = helper else {
        return;
    };
    if let Err(mpsc::RecvTimeoutError::Disconnected) = ended.recv_timeout(grace) {
        // It has done its work and is returning: a short join.
        let _ = handle.join();
    }
}

/// The starter thread's body: starts the workers it is asked for, one at a time.
fn starter<W>(
    launcher: Arc<Launcher>,
    init_fds: Arc<Vec<OwnedFd>>,
    orders: mpsc::Receiver<Order>,
    handoff: Arc<Mutex<Handoff<W>>>,
    shared: Arc<Shared>,
) {
    let fds: Vec<RawFd> = init_fds.iter().map(AsRawFd::as_raw_fd).collect();
    while let Ok(order) = orders.recv() {
        if handoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed
        {
            break;
        }
        let started = panic::catch_unwind(AssertUnwindSafe(|| launcher.launch(order.launch, &fds)))
            .unwrap_or_else(|payload| {
                Err(Error::new(
                    ErrorKind::Panicked,
                    format!(
                        "starting a worker panicked: {}",
                        crate::child::panic_message(&*payload)
                    ),
                ))
            });
        let mut handed = handoff.lock().unwrap_or_else(PoisonError::into_inner);
        if handed.closed {
            drop(handed);
            if let Ok(popen) = started {
                dispose(popen);
            }
            break;
        }
        handed.started.push((order.name, started));
        drop(handed);
        shared.wake();
    }
}

/// The reaper thread's body: reads the exit code of each dead worker it is given.
fn reaper<W: Reapable>(
    corpses: mpsc::Receiver<Corpse<W>>,
    handoff: Arc<Mutex<Handoff<W>>>,
    shared: Arc<Shared>,
) {
    while let Ok(corpse) = corpses.recv() {
        let worker = match corpse {
            Corpse::Stray(popen) => {
                dispose(popen);
                continue;
            }
            Corpse::Worker(worker) => *worker,
        };
        let code = worker.popen().try_reap().ok().flatten();
        let mut handed = handoff.lock().unwrap_or_else(PoisonError::into_inner);
        if handed.closed {
            drop(handed);
            worker.link().mark_buried(code);
            continue;
        }
        handed.reaped.push((worker, code));
        drop(handed);
        shared.wake();
    }
}

/// Kills a started process the pool does not use, and reaps it (on a helper thread: the
/// exit code of a fork-server child may be slow to come).
pub(super) fn dispose(popen: Popen) {
    let _ = popen.signal(libc::SIGKILL);
    let _ = popen.reap_by(sys::deadline_after(Duration::from_secs(5)));
}
