//! What a worker's answer means for the task it holds: its reply, its death, its silence past
//! the task's timeout, or a reply begun and never finished. The driver thread (for the tasks it
//! dispatches) and a caller of `apply` (on a worker it borrowed) read workers alike: both
//! interpret what they see here, so that a task fails with the same error whichever ran it.

use std::any::Any;
use std::os::fd::AsFd;
use std::time::Duration;

use std::sync::PoisonError;

use super::link::Link;
use super::worker::{Reply, TaskOutcome};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;
use crate::{sys, wire};

/// How long a reply, once begun, may go without a byte before the worker that sends it is
/// killed as out of protocol. A worker writes its reply in one go; one that stops in the middle
/// is stopped or hung, or its task wrote the start of a message on the socket, which then
/// swallows the real reply and would wait for ever, without a task timeout, for bytes that
/// never come.
pub(crate) const REPLY_STALL: Duration = Duration::from_secs(10);

/// The task a worker holds, which its reply must name (see [`Reply::Done`]).
pub(super) struct Expected {
    pub job: u64,
    pub chunk: u32,
    pub ticket: u64,
}

/// A message from a worker that is past `Ready`: the result of the task it holds
/// (`expected`, `None` while the task is not wholly sent), or, as `Err`, what makes the message
/// out of protocol (a task can write anything on its worker's socket).
pub(super) fn answer(
    reply: Reply,
    body: Encoded,
    expected: Option<&Expected>,
) -> std::result::Result<Result<Encoded>, String> {
    match reply {
        Reply::Done {
            job,
            chunk,
            ticket,
            outcome,
        } if expected.is_some_and(|e| e.job == job && e.chunk == chunk && e.ticket == ticket) => {
            Ok(match outcome {
                TaskOutcome::Ok => Ok(body),
                TaskOutcome::Panicked(panic) => Err(Error::panicked(panic)),
                TaskOutcome::Failed { kind, message } => Err(Error::new(kind, message)),
            })
        }
        Reply::DoneMeasured {
            job,
            chunk,
            ticket,
            outcome,
            ..
        } => answer(
            Reply::Done {
                job,
                chunk,
                ticket,
                outcome,
            },
            body,
            expected,
        ),
        Reply::Done { job, chunk, .. } => Err(format!(
            "a reply that does not match its task (job {job}, chunk {chunk})"
        )),
        Reply::Ready => Err("a second `Ready`".to_string()),
        Reply::InitFailed(_) => Err("an initializer failure after `Ready`".to_string()),
    }
}

/// A reply came in `link`'s ring: what its socket holds, if anything, came before it, and can
/// only be what the task wrote there (a worker sends one message per task), which makes the
/// reply out of protocol, as it would be on the socket (the worker's reply would follow that
/// message, or complete it). `Some(what)`: out of protocol. A socket closed or reset is no
/// objection: the worker may have exited after its reply (`maxtasksperchild`).
pub(super) fn written_beside(link: &Link) -> Option<String> {
    let mut inbox = link.inbox.lock().unwrap_or_else(PoisonError::into_inner);
    if inbox.mid_message() {
        return Some("a reply in the ring in the middle of a message on the socket".to_string());
    }
    // Nearly always nothing: said without a `recvmsg`, on the round trip of every task.
    if sys::unread_bytes(link.control.as_fd()).is_ok_and(|unread| unread == 0) {
        return None;
    }
    match inbox.try_recv::<Reply>(&link.control) {
        Ok(wire::Received::Partial) if !inbox.mid_message() => None,
        Ok(wire::Received::Closed) => None,
        Ok(wire::Received::Partial) => {
            Some("the start of a message on the socket, then a reply in the ring".to_string())
        }
        Ok(wire::Received::Message(..)) => {
            Some("a message on the socket, then a reply in the ring".to_string())
        }
        Err(err) if err.kind() == ErrorKind::Codec => Some(bad_reply(&err)),
        Err(_) => None,
    }
}

/// What is out of protocol in a message that could not be read as one.
pub(super) fn bad_reply(err: &Error) -> String {
    format!("bad reply: {}", err.chain())
}

/// What is out of protocol in a reply begun and left unfinished for [`REPLY_STALL`].
pub(super) fn stalled() -> String {
    format!("the start of a message, and nothing more for {REPLY_STALL:?}")
}

/// The error of the task held by a worker that sent `what`, out of protocol (it is killed).
pub(super) fn out_of_protocol(link: &Link, kind: ErrorKind, what: &str) -> Error {
    Error::new(
        kind,
        format!(
            "pool worker {} (pid {}) sent a message out of protocol, and was killed and is replaced: {what}",
            link.name, link.pid
        ),
    )
}

/// The error of the task held by a worker that died (`code`: its exit code if known) `when`.
pub(super) fn died(link: &Link, code: Option<i32>, when: &str) -> Error {
    Error::new(
        ErrorKind::Died,
        format!(
            "pool worker {} (pid {}) {} {when}; the worker is replaced",
            link.name,
            link.pid,
            describe_exit(code)
        ),
    )
}

/// The error of a task that overran the pool's `timeout` (its worker is killed).
pub(super) fn timed_out(link: &Link, timeout: Option<Duration>) -> Error {
    Error::timeout(format!(
        "the task ran longer than its timeout of {:?}; pool worker {} (pid {}) was killed and is replaced",
        timeout.unwrap_or_default(),
        link.name,
        link.pid
    ))
}

/// The error of a task whose result's decoding (a user's `Deserialize`) or callback panicked.
pub(super) fn decoding_panicked(payload: &(dyn Any + Send)) -> Error {
    Error::new(
        ErrorKind::Panicked,
        format!(
            "decoding a result panicked: {}",
            crate::child::panic_message(payload)
        ),
    )
}

/// How a worker ended, for error messages.
pub(crate) fn describe_exit(code: Option<i32>) -> String {
    match code {
        Some(n) if n < 0 => format!("was killed by {}", sys::signal_name(-n)),
        Some(n) => format!("exited with code {n}"),
        None => "went away".to_string(),
    }
}

/// The resident size a reply reports (see `Reply::DoneMeasured`).
pub(super) fn resident(reply: &Reply) -> Option<u64> {
    match reply {
        Reply::DoneMeasured { resident, .. } => Some(*resident),
        _ => None,
    }
}
