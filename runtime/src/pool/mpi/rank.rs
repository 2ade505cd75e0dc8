//! A rank other than 0: it says hello, then runs the tasks rank 0 sends, one at a time, until
//! rank 0 tells it to stop. Entered before `main`, which it never runs.

use std::ffi::c_int;

use super::super::worker::TaskOutcome;
use super::frame;
use super::{probe, Hello, Idle, Sending, TAG_HELLO, TAG_RESULT, TAG_STOP, TAG_STOPPED, TAG_TASK};
use crate::child::catch_quiet;
use crate::error::{Error, RemotePanic};
use crate::handle::Encoded;
use crate::{codec, current, process, registry};

/// Serves rank 0 until it says stop, then finalises MPI and exits (status 0). Never returns.
pub(super) fn serve(universe: mpi::environment::Universe, rank: c_int) -> ! {
    // What Rust's start-up does before `main`, which a rank never reaches.
    // SAFETY: sets a signal's disposition to "ignore", as std does before `main`.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    current::mark_initialized();
    let code = match run(rank) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("multiproc: MPI rank {rank} stops serving: {err}");
            1
        }
    };
    // Local pools and processes a task left behind.
    let _ = std::panic::catch_unwind(process::shutdown_children);
    drop(universe);
    // SAFETY: ends the process without running `main`'s exit path (there is none here).
    unsafe { libc::_exit(code) }
}

fn run(rank: c_int) -> crate::Result<()> {
    let hello = codec::encode(&Hello::mine())?;
    send_blocking(TAG_HELLO, hello)?;
    let mut idle = Idle::new();
    loop {
        let Some((_, tag, message)) = probe(0)? else {
            idle.wait(None, None);
            continue;
        };
        idle.reset();
        match tag {
            TAG_TASK => {
                let reply = answer(rank, &message)?;
                crate::spare::give(message);
                send_blocking(TAG_RESULT, reply)?;
            }
            TAG_STOP => {
                send_blocking(TAG_STOPPED, Vec::new())?;
                return Ok(());
            }
            _ => {}
        }
    }
}

/// How long a rank sending a result looks again at once before it sleeps between looks.
const SEND_SPIN: std::time::Duration = std::time::Duration::from_millis(50);

/// Sends to rank 0, waiting until MPI is done with the bytes.
fn send_blocking(tag: c_int, bytes: Vec<u8>) -> crate::Result<()> {
    let mut sending = Sending::start(0, tag, bytes)?;
    // Rank 0 takes a result at once while its pool runs: its bytes move only while this rank
    // calls MPI, so it looks again at once for longer before it sleeps.
    let mut idle = Idle::spinning(SEND_SPIN);
    while !sending.test()? {
        idle.wait(None, None);
    }
    Ok(())
}

/// Runs one task; its result (or why there is none) as a message for rank 0.
fn answer(rank: c_int, message: &[u8]) -> crate::Result<Vec<u8>> {
    let (mut header, task) = frame::unpack(message)?;
    let Encoded { bytes, blocks, .. } = task;
    let failed = |err: Error| TaskOutcome::Failed {
        kind: err.kind(),
        message: err.chain().to_string(),
    };
    let (outcome, results) = match registry::lookup(&header.entry) {
        Err(err) => (failed(err), Encoded::default()),
        Ok(entry) => match catch_quiet(|| entry.invoke_chunk(&bytes, blocks)) {
            Ok(Ok(results)) => (TaskOutcome::Ok, results),
            Ok(Err(err)) => (failed(err), Encoded::default()),
            Err((message, location)) => (
                TaskOutcome::Panicked(RemotePanic {
                    message,
                    location,
                    process: format!("MPI rank {rank} on {}", super::host_name()),
                    pid: std::process::id() as i32,
                }),
                Encoded::default(),
            ),
        },
    };
    crate::spare::give(bytes);
    header.outcome = Some(outcome);
    header.entry.clear();
    let packed = frame::pack(header, &results);
    match packed {
        Ok(reply) => {
            crate::spare::give(results.bytes);
            Ok(reply)
        }
        // A result that cannot travel (it holds a descriptor): the task fails, not the rank.
        Err(err) => {
            let (mut header, _) = frame::unpack(message)?;
            header.entry.clear();
            header.outcome = Some(failed(err));
            frame::pack(header, &Encoded::default())
        }
    }
}
