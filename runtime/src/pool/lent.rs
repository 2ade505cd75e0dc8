//! A task run by the calling thread on a borrowed worker: `apply`, and a waiter for a task
//! that is still queued (`get` / `result` on `apply_async` / `submit`), send the task into the
//! worker's ring and take the reply from it themselves. Two hand-offs (caller, worker, caller)
//! instead of four through the driver thread, each of them a wake-up of a sleeping thread on a
//! small machine.
//!
//! The driver lends only an idle worker (see [`Shared::lend`]), and takes it back, or buries
//! it, however the call ends; while it is lent the driver reads nothing from it.

use std::os::fd::{AsFd, AsRawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use super::jobs::{self, Shared};
use super::link::{Link, GONE};
use super::reply::{self, Expected};
use super::rings;
use super::worker::{Reply, TaskHeader};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;
use crate::{sys, wire};

/// Gives a borrowed worker back however the call ends, a panicking `Serialize` included.
pub(super) struct GiveBack<'a>(pub &'a Shared, pub &'a Link);

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        self.0.give_back(self.1);
    }
}

/// Sends `header` and `payload` to the borrowed worker of `link` and waits for its reply: the
/// encoded result, or the task's error. A worker that dies, times out or answers out of
/// protocol fails this call alone (it is killed and replaced; the driver buries it).
pub(super) fn round_trip(
    shared: &Shared,
    link: &Arc<Link>,
    header: TaskHeader,
    payload: Encoded,
    cancelled: &dyn Fn() -> bool,
) -> Result<Encoded> {
    let lending = shared.lending();
    // A worker that died, or was killed, is never lent again: its state stays `GONE` until
    // the driver buries it (given back `IDLE`, the next caller would borrow a dead worker).
    let died = |what: &str| {
        // Killed too: a worker that hung up may still live (a task closed its socket).
        let _ = sys::pidfd_send_signal(link.pidfd.as_fd(), libc::SIGKILL);
        link.state.store(GONE, Ordering::Release);
        shared.wake();
        // Terminated: the driver buries its workers after its grace, not waited for.
        if shared.terminated() {
            return jobs::terminated();
        }
        let code = link.wait_buried(Duration::from_secs(5));
        if shared.terminated() {
            return jobs::terminated();
        }
        reply::died(link, code, what)
    };
    // A worker that sent what is no reply to this task is killed, and never lent again (its
    // state stays `GONE`; the driver buries it and starts another); this call alone fails.
    let out_of_protocol = |kind: ErrorKind, what: &str| {
        let _ = sys::pidfd_send_signal(link.pidfd.as_fd(), libc::SIGKILL);
        link.state.store(GONE, Ordering::Release);
        shared.wake();
        let _ = link.wait_buried(Duration::from_secs(5));
        reply::out_of_protocol(link, kind, what)
    };
    // A task timeout bounds the whole call: sending the task, running it, and reading the
    // reply (a worker stopped in the middle of a large one, say).
    let deadline = lending.task_timeout.and_then(sys::deadline_after);
    let timed_out = || {
        let _ = sys::pidfd_send_signal(link.pidfd.as_fd(), libc::SIGKILL);
        link.state.store(GONE, Ordering::Release);
        shared.wake();
        let _ = link.wait_buried(Duration::from_secs(5));
        reply::timed_out(link, lending.task_timeout)
    };
    // In the ring when it goes there; on the socket otherwise.
    let in_ring = link.rings.put_task(&header, &payload).unwrap_or(false);
    let sent = if in_ring {
        Ok(())
    } else {
        wire::send_message_until(&link.control, &header, &payload, deadline)
    };
    match sent {
        Ok(()) => {}
        // Refused before a byte was sent: the task fails, the worker is fine.
        Err(err) if err.kind() == ErrorKind::Codec => return Err(err),
        Err(err) if err.kind() == ErrorKind::Timeout => return Err(timed_out()),
        Err(_) => {
            // Gone, or out of step after a partial send: not to be trusted again.
            let _ = sys::pidfd_send_signal(link.pidfd.as_fd(), libc::SIGKILL);
            return Err(died("before it could receive this task"));
        }
    }
    shared.discard(payload);
    // Wait for the reply, the worker's exit, or the task's deadline, which also bounds the
    // reading of the reply. Without a deadline the wait is unbounded, but not a reply once
    // begun: it must arrive whole within `REPLY_STALL` of its last bytes (the start of a
    // message a task wrote on its socket would hold this call for ever). The inbox is only
    // held to read: never while waiting for the driver to bury the worker.
    let buffered = || {
        link.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .buffered()
    };
    // When the last bytes of a reply not yet whole came.
    let mut progress: Option<Instant> = None;
    // Before sleeping, look for the reply without waiting for a moment: a short task's
    // reply comes within it, and is caught awake, in the ring without a system call (a
    // reply on the socket, a large one, is seen by the poll that follows).
    let mut spun = false;
    let (reply, result) = loop {
        match link.rings.take_reply::<Reply>() {
            Ok(Some((reply, result))) => {
                if let Some(what) = reply::written_beside(link) {
                    return Err(out_of_protocol(ErrorKind::Codec, &what));
                }
                break (reply, result);
            }
            Ok(None) => {}
            Err(err) => return Err(out_of_protocol(ErrorKind::Codec, &reply::bad_reply(&err))),
        }
        if !spun {
            spun = true;
            if rings::spin(|| link.rings.reply_waiting()) {
                continue;
            }
        } else if !buffered() {
            let stall = progress.map(|at| at + reply::REPLY_STALL);
            let wait = match (deadline, stall) {
                (Some(deadline), Some(stall)) => Some(deadline.min(stall)),
                (deadline, stall) => deadline.or(stall),
            };
            let mut fds = [
                libc::pollfd {
                    fd: link.control.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: link.exit.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: link.rings.parent_bell().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // Said before the last look at the ring: a reply put after it rings the bell.
            link.rings.parent_sleeps(true);
            let polled = if link.rings.reply_waiting() {
                Ok(1)
            } else {
                sys::poll_many(&mut fds, wait)
            };
            link.rings.parent_sleeps(false);
            if fds[2].revents != 0 {
                sys::eventfd_drain(link.rings.parent_bell());
            }
            let ready = polled.map_err(|err| Error::io("cannot wait for a pool worker", err))?;
            if link.rings.reply_waiting() {
                continue;
            }
            // `terminate` rings the bell of every borrowed worker: this result can never be
            // delivered, and the worker (killed by the driver) is not waited for.
            if fds[2].revents != 0 && shared.terminated() {
                return Err(jobs::terminated());
            }
            // So does a `cancel` of this task's job: the task runs on, left to the driver,
            // which reads its reply and delivers it nowhere (the worker is lent again only
            // then), and this call fails at once, as a cancelled job's waiters do.
            if fds[2].revents != 0 && cancelled() {
                shared.orphan(jobs::Orphan {
                    link: link.clone(),
                    job: header.job,
                    chunk: header.chunk,
                    ticket: header.ticket,
                    in_ring,
                });
                return Err(jobs::cancelled());
            }
            if ready == 0 {
                if deadline.is_some_and(|deadline| deadline <= Instant::now()) {
                    return Err(timed_out());
                }
                return Err(out_of_protocol(ErrorKind::Codec, &reply::stalled()));
            }
            if fds[0].revents == 0 {
                if fds[1].revents == 0 {
                    // A bell rung for an earlier reply, or by a task: look again.
                    continue;
                }
                return Err(died("while running this task"));
            }
        }
        let (received, mid_message) = {
            let mut inbox = link.inbox.lock().unwrap_or_else(PoisonError::into_inner);
            let received = inbox.try_recv::<Reply>(&link.control);
            (received, inbox.mid_message())
        };
        match received {
            Ok(wire::Received::Message(reply, result)) => break (reply, result),
            Ok(wire::Received::Partial) => {
                if mid_message {
                    progress = Some(Instant::now());
                }
            }
            Ok(wire::Received::Closed) => {
                // The worker may have put its reply in the ring before it exited.
                if link.rings.reply_waiting() {
                    continue;
                }
                return Err(died("while running this task"));
            }
            Err(err) if err.kind() == ErrorKind::Disconnected => {
                return Err(died("while running this task"))
            }
            // The stream lost its place: the worker cannot be trusted with another task.
            Err(err) => return Err(out_of_protocol(err.kind(), &reply::bad_reply(&err))),
        }
    };
    // Only the reply to this task, carrying its ticket back, answers it: anything else was
    // written by a task on its own socket (a task can write anything there).
    let expected = Expected {
        job: header.job,
        chunk: header.chunk,
        ticket: header.ticket,
    };
    let resident = reply::resident(&reply);
    let result = match reply::answer(reply, result, Some(&expected)) {
        Ok(result) => result,
        Err(what) => return Err(out_of_protocol(ErrorKind::Codec, &what)),
    };
    link.note_resident(resident, lending.max_memory);
    link.done.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    result
}

/// Runs the task of `job` on an idle worker, in this thread, if it is still queued at the
/// head of the queue (its whole job: one task) and a worker is idle: the caller would
/// otherwise wait for the driver to wake, send it, wake again for the reply and wake the
/// caller. Delivers the outcome to the job's sink, as the driver would; `false` when it did
/// not take the task (the driver has it, or will).
pub(crate) fn run_queued_here(shared: &Arc<Shared>, job: u64) -> bool {
    let Some((link, task, mut sink)) = shared.lend_for(job) else {
        return false;
    };
    let header = TaskHeader {
        job: task.job,
        chunk: task.chunk,
        ticket: shared.ticket(),
        entry: task.entry.to_string(),
        claim: 0,
    };
    let result = {
        let _give_back = GiveBack(shared, &link);
        let job = task.job;
        round_trip(shared, &link, header, task.payload, &|| {
            shared.borrow_cancelled(job)
        })
    };
    // The worker is given back before the result is delivered: a callback that runs in the
    // delivery must not find it still lent (`join` would wait for it).
    let result = if shared.end_borrow(job) {
        Err(jobs::cancelled())
    } else {
        result
    };
    // User code (a `Deserialize`, a callback) may panic in the delivery: that fails the task,
    // as on the driver thread.
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| sink.deliver(task.chunk, result)))
    {
        let err = reply::decoding_panicked(&*payload);
        let _ = panic::catch_unwind(AssertUnwindSafe(|| sink.fail(&err)));
    }
    true
}
