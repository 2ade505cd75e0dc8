//! The pool worker: the loop a pool's child process runs, and the messages it exchanges with
//! the pool's driver thread over the child's control socket and its rings (`rings`: the first
//! message on the socket hands them over; then each task and reply goes in a ring when it
//! fits there, on the socket otherwise).
//!
//! The worker is an ordinary registered entry point (`multiproc::pool::worker`), so it starts
//! the same way under every start method. It runs the initializer, says `Ready`, then serves
//! tasks one at a time: a task names its function (by registered name) and carries a chunk of
//! encoded arguments; the reply carries the chunk of encoded results, or the panic or error
//! that replaced them. A panic in a task is caught quietly and sent back as data; the worker
//! keeps serving. It exits when the parent closes the socket, or after `maxtasks` tasks.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::bulk::InPlace;
use super::rings::{self, Rings, Setup};
use super::soft;

use crate::carrier::Plain;
use crate::child::{catch_quiet, reporting_aborts, AbortReport};
use crate::codec;
use crate::current::{self, current_process};
use crate::error::{ErrorKind, RemotePanic};
use crate::handle::{self, Encoded};
use crate::registry::{self, Entry, Target};
use crate::spare;
use crate::{sys, wire};

/// What a worker is started with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerConfig {
    /// Entry name and encoded arguments of the initializer.
    pub initializer: Option<(String, Vec<u8>)>,
    /// Exit after this many tasks (a map chunk is one task).
    pub maxtasks: Option<u64>,
    /// The pool has a soft task timeout: the worker installs its signal's handler.
    pub soft_timeout: bool,
    /// The pool's memory limit per worker: replies carry the worker's resident size.
    pub max_memory: Option<u64>,
}

/// Parent to worker, the first message: the header of a message whose body is the worker's
/// rings ([`Setup`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RingsHeader;

/// Parent to worker: one task, the header of a message whose body is the encoded chunk of
/// arguments (with their descriptors and byte blocks).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TaskHeader {
    pub job: u64,
    pub chunk: u32,
    /// Echoed in the reply: a reply that does not carry it back answers no task of this worker.
    pub ticket: u64,
    pub entry: String,
    /// The claim word of a task queued behind a running one (1 or 2; 0: none): the worker
    /// claims the task there before it runs it, and does not run it if it was revoked (see
    /// `rings`).
    pub claim: u8,
}

/// Worker to parent: the header of a message. With `TaskOutcome::Ok`, its body is the encoded
/// chunk of results; otherwise it is empty.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The initializer ran; tasks are welcome.
    Ready,
    /// The initializer panicked or failed.
    InitFailed(String),
    /// A task finished: `job`, `chunk` and `ticket` are those of its [`TaskHeader`]. The parent
    /// takes it only as the reply to the task this worker holds; any other message is out of
    /// protocol (a task can write anything on the socket), and costs the worker its life and
    /// its task its result.
    Done {
        job: u64,
        chunk: u32,
        ticket: u64,
        outcome: TaskOutcome,
    },
    /// `Done`, from a worker of a pool with a memory limit: `resident` is the worker's
    /// resident size in bytes after the task (see [`measured`]).
    DoneMeasured {
        job: u64,
        chunk: u32,
        ticket: u64,
        outcome: TaskOutcome,
        resident: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum TaskOutcome {
    Ok,
    Panicked(RemotePanic),
    Failed { kind: ErrorKind, message: String },
}

/// The registered entry point of pool workers.
#[derive(Clone, Copy)]
pub(crate) struct WorkerMain;

impl crate::registry::sealed::SealedTarget for WorkerMain {}
impl Target for WorkerMain {
    type Args = WorkerConfig;
    type Output = ();
    type ArgsCarrier = Plain;
    type OutputCarrier = Plain;
    const NAME: &'static str = "multiproc::pool::worker";

    fn call(config: WorkerConfig) {
        serve(config);
    }
}

inventory::submit! { Entry::target::<WorkerMain>() }

fn panic_report(message: String, location: Option<String>) -> RemotePanic {
    RemotePanic {
        message,
        location,
        process: current_process().name().to_string(),
        pid: std::process::id() as i32,
    }
}

fn serve(config: WorkerConfig) {
    let Some(control) = current::parent_control() else {
        eprintln!("multiproc: a pool worker must run in a child process");
        return;
    };
    keep_freed_memory(&config);
    let mut inbox = wire::Reader::new();
    // The parent's first message: this worker's rings, sent as it was adopted.
    let rings = match inbox.recv::<RingsHeader>(&control, None) {
        Ok(Some((RingsHeader, body))) => {
            let Encoded { bytes, fds, .. } = body;
            match handle::with_incoming(fds, || codec::decode::<Setup>(&bytes))
                .and_then(Rings::open)
            {
                Ok(rings) => rings,
                Err(err) => {
                    eprintln!(
                        "multiproc: a pool worker cannot map its rings: {}",
                        err.chain()
                    );
                    return;
                }
            }
        }
        Ok(None) | Err(_) => return,
    };
    if let Some((name, payload)) = &config.initializer {
        // Under `panic = "abort"`, from the panic hook, before the abort.
        let report = || -> AbortReport {
            let (control, name) = (control.clone(), name.clone());
            Box::new(move |message, location| {
                let panic = panic_report(message, location);
                let reply = Reply::InitFailed(format!("initializer `{name}` failed: {panic}"));
                wire::send_message(&control, &reply, &Encoded::default()).is_ok()
            })
        };
        let failure = match registry::lookup(name) {
            Err(err) => Some(err.chain().to_string()),
            Ok(entry) => match catch_quiet(|| reporting_aborts(report, || entry.invoke(payload))) {
                Ok(Ok(_)) => None,
                Ok(Err(err)) => Some(err.chain().to_string()),
                Err((message, location)) => Some(panic_report(message, location).to_string()),
            },
        };
        if let Some(message) = failure {
            let _ = wire::send_message(
                &control,
                &Reply::InitFailed(format!("initializer `{name}` failed: {message}")),
                &Encoded::default(),
            );
            return;
        }
    }
    if config.soft_timeout {
        if let Err(err) = soft::install() {
            eprintln!("multiproc: {}", err.chain());
            return;
        }
    }
    if wire::send_message(&control, &Reply::Ready, &Encoded::default()).is_err() {
        return;
    }
    let mut done = 0u64;
    while config.maxtasks.is_none_or(|max| done < max) {
        let Some((header, task, in_place)) = next_task(&control, &mut inbox, &rings) else {
            return;
        };
        soft::reset();
        let Encoded {
            bytes: payload,
            fds,
            blocks,
        } = task;
        let claimed = rings.claim(header.claim, header.ticket);
        let (outcome, results) = match registry::lookup(&header.entry) {
            // Revoked while queued in the ring (cancelled, or its worker is being killed):
            // answered unrun, in its turn.
            _ if !claimed => (
                TaskOutcome::Failed {
                    kind: ErrorKind::Cancelled,
                    message: "the work was cancelled".to_string(),
                },
                Encoded::default(),
            ),
            Err(err) => (
                TaskOutcome::Failed {
                    kind: err.kind(),
                    message: err.chain().to_string(),
                },
                Encoded::default(),
            ),
            Ok(entry) => {
                // Under `panic = "abort"` the task's panic is this worker's last word: its
                // reply goes from the panic hook, before the abort.
                let report = || -> AbortReport {
                    let (control, job, chunk, ticket) =
                        (control.clone(), header.job, header.chunk, header.ticket);
                    let close_ring = rings.closer();
                    Box::new(move |message, location| {
                        // This worker is about to die: from now on a task for it goes to the
                        // socket (not the ring), where it fails at once (EPIPE) and goes to
                        // another worker, instead of being lost with it.
                        close_ring();
                        let _ = control.shutdown(std::net::Shutdown::Read);
                        let outcome = TaskOutcome::Panicked(panic_report(message, location));
                        let reply = Reply::Done {
                            job,
                            chunk,
                            ticket,
                            outcome,
                        };
                        wire::send_message(&control, &reply, &Encoded::default()).is_ok()
                    })
                };
                match catch_quiet(|| {
                    reporting_aborts(report, || {
                        // A payload in the bulk area is decoded in place.
                        let payload = in_place.as_ref().map_or(&payload[..], InPlace::bytes);
                        handle::with_incoming(fds, || entry.invoke_chunk(payload, blocks))
                    })
                }) {
                    Ok(Ok(results)) => (TaskOutcome::Ok, results),
                    Ok(Err(err)) => (
                        TaskOutcome::Failed {
                            kind: err.kind(),
                            message: err.chain().to_string(),
                        },
                        Encoded::default(),
                    ),
                    Err((message, location)) => (
                        TaskOutcome::Panicked(panic_report(message, location)),
                        Encoded::default(),
                    ),
                }
            }
        };
        // The buffers of this task and its reply serve the next ones: no fresh pages to fault
        // in for every chunk. Its bulk slot is the parent's again.
        spare::give(payload);
        drop(in_place);
        let reply = Reply::Done {
            job: header.job,
            chunk: header.chunk,
            ticket: header.ticket,
            outcome,
        };
        let reply = measured(reply, config.max_memory);
        // In the ring when it goes there; on the socket otherwise (descriptors, blocks, a large
        // result), or if the ring is corrupt.
        let in_ring = rings.put_reply(&reply, &results).unwrap_or(false);
        if !in_ring && wire::send_message(&control, &reply, &results).is_err() {
            return;
        }
        spare::give(results.bytes);
        done += 1;
    }
}

/// Makes the allocator of this worker keep the memory a task frees for the next ones (glibc
/// only): large blocks come from the heap instead of fresh mappings, and up to twice a bulk
/// slot (`bulk::SLOT_BYTES`) of free memory at its top stays. A large argument (a
/// vector of 64 MiB handed to `apply` again and again) then lands in pages already faulted in,
/// instead of fresh ones the kernel must fault in and zero each time, which costs more than
/// copying the bytes. Not under a memory limit, which measures the worker's resident size.
fn keep_freed_memory(config: &WorkerConfig) {
    if config.max_memory.is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let keep = i32::try_from(2 * super::bulk::SLOT_BYTES).unwrap_or(i32::MAX);
        // SAFETY: mallopt only changes glibc's allocation policy for this process; it is
        // called before this worker allocates for its tasks.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, keep);
        }
    }
}

/// The next task, from the ring or the socket, whichever has it (the parent sends one at a
/// time); `None` when the parent closed the socket, or the ring or the socket is corrupt.
/// Spins a few microseconds, then sleeps on the socket and the doorbell together.
fn next_task(
    control: &UnixStream,
    inbox: &mut wire::Reader,
    rings: &Rings,
) -> Option<(TaskHeader, Encoded, Option<InPlace>)> {
    let readable = || {
        sys::poll_one(control.as_fd(), sys::READABLE, Some(Instant::now())).map_or(true, |n| n != 0)
    };
    loop {
        match rings.take_task_in_place::<TaskHeader>(control.as_fd()) {
            Ok(Some(task)) => return Some(task),
            Ok(None) => {}
            Err(_) => return None,
        }
        let socket = inbox.buffered();
        if !socket && !rings::spin(|| rings.task_waiting()) {
            rings.worker_sleeps(true);
            if !rings.task_waiting() {
                let mut fds = [
                    libc::pollfd {
                        fd: control.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: rings.worker_bell().as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                if sys::poll_many(&mut fds, None).is_err() {
                    return None;
                }
            }
            rings.worker_sleeps(false);
            sys::eventfd_drain(rings.worker_bell());
        }
        if rings.task_waiting() {
            continue;
        }
        if socket || readable() {
            return match inbox.recv::<TaskHeader>(control, None) {
                Ok(Some((header, body))) => Some((header, body, None)),
                Ok(None) | Err(_) => None,
            };
        }
    }
}

/// The reply to a task, with this worker's resident size when its pool has a memory limit
/// (`max_memory`). Measured now, after the task, from `/proc/self/statm`: the memory the
/// worker holds at this moment, which is what replacing it gives back. (billiard reads
/// `ru_maxrss`, the peak, which never comes down: a task that used much and freed it would
/// replace its worker for nothing, and after `fork` the peak may be the parent's.)
fn measured(reply: Reply, max_memory: Option<u64>) -> Reply {
    // Only under a memory limit: reading statm costs three system calls.
    let Some(resident) = max_memory.and_then(|_| sys::resident_bytes().ok()) else {
        return reply;
    };
    match reply {
        Reply::Done {
            job,
            chunk,
            ticket,
            outcome,
        } => Reply::DoneMeasured {
            job,
            chunk,
            ticket,
            outcome,
            resident,
        },
        reply => reply,
    }
}
