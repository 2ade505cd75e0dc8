//! Rank 0's side of an MPI pool: a driver thread that hands the job table's tasks to idle
//! ranks and delivers their results, as the local driver does with worker processes.
//!
//! Nothing here waits on a rank: tasks go with non-blocking sends, results are looked for
//! with `MPI_Improbe` and received without waiting (`MPI_Imrecv`), and a task that outlives the pool's `task_timeout` fails with an error
//! that names its rank, which is then given up on. (A rank that dies is another matter: Open
//! MPI's launcher then ends the whole job; see the README.)

use std::ffi::c_int;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::jobs::{Lifecycle, Shared};
use super::super::reply::{self, Expected};
use super::super::worker::Reply;
use super::super::{threads, Pool};
use super::frame::{self, Header};
use super::{world, Idle, Receiving, Sending, World, IN_USE, TAG_HELLO, TAG_RESULT, TAG_TASK};
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;

/// How long the driver looks again at once, while a message is on its way, before it sleeps.
const MOVING_SPIN: Duration = Duration::from_millis(20);

struct Busy {
    job: u64,
    chunk: u32,
    ticket: u64,
    deadline: Option<Instant>,
}

/// One rank of this pool.
struct Slot {
    rank: c_int,
    task: Option<Busy>,
    sending: Option<Sending>,
}

struct Driver {
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    /// Messages begun and not yet wholly in (read a part at a time, never waited for).
    receiving: Vec<Receiving>,
    task_timeout: Option<Duration>,
}

/// A result to hand to the job table once `WORLD` is no longer held (decoding and callbacks
/// are user code).
type Delivery = (u64, u32, Result<Encoded>);

/// Starts the driver thread of a pool over `ranks`.
pub(super) fn start(ranks: Vec<c_int>, task_timeout: Option<Duration>) -> Result<Pool> {
    let shared = Shared::new()?;
    let processes = ranks.len();
    let driver = Driver {
        shared: shared.clone(),
        slots: ranks
            .into_iter()
            .map(|rank| Slot {
                rank,
                task: None,
                sending: None,
            })
            .collect(),
        receiving: Vec::new(),
        task_timeout,
    };
    let handle = threads::spawn_counted("multiproc-mpi-pool", move || driver.run())
        .map_err(|err| Error::io("cannot start the MPI pool's driver thread", err))?;
    Ok(Pool {
        shared,
        driver: Mutex::new(Some(handle)),
        size: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(processes)),
        limits: Default::default(),
        resizable: false,
    })
}

impl Driver {
    fn run(mut self) {
        self.shared.set_driver_thread();
        let mut idle = Idle::new();
        loop {
            let (lifecycle, broken, queued, waiting) = {
                let state = self.shared.lock();
                (
                    state.lifecycle,
                    state.broken.is_some(),
                    !state.queue.is_empty(),
                    state.waiting(),
                )
            };
            if lifecycle == Lifecycle::Terminated {
                return;
            }
            let busy = self.slots.iter().any(|s| s.task.is_some());
            if lifecycle == Lifecycle::Closed && !busy && ((!queued && !waiting) || broken) {
                return;
            }
            let mut deliveries = Vec::new();
            let progress = {
                let mut guard = world();
                let Some(world) = guard.as_mut() else {
                    drop(guard);
                    self.shared.mark_broken(Error::new(
                        ErrorKind::NotRunning,
                        "MPI was finalised: rank 0 is exiting",
                    ));
                    return;
                };
                match self.turn(world, &mut deliveries) {
                    Ok(progress) => progress,
                    Err(err) => {
                        drop(guard);
                        for (job, chunk, result) in deliveries {
                            self.shared.deliver(job, chunk, result);
                        }
                        self.shared.mark_broken(err);
                        return;
                    }
                }
            };
            let progress = progress || !deliveries.is_empty();
            for (job, chunk, result) in deliveries {
                self.shared.deliver(job, chunk, result);
            }
            if progress {
                idle.reset();
                continue;
            }
            // A message on its way in or out moves only while MPI is called (its bytes come in
            // parts, over TCP or shared memory): look again at once for longer.
            let moving =
                !self.receiving.is_empty() || self.slots.iter().any(|s| s.sending.is_some());
            idle.spin = if moving { MOVING_SPIN } else { super::SPIN };
            let deadline = self
                .slots
                .iter()
                .filter_map(|s| s.task.as_ref()?.deadline)
                .min();
            idle.wait(Some(self.shared.wake.as_fd()), deadline);
        }
    }

    /// One look at everything: results in, sends done, tasks out, timeouts. Whether anything
    /// happened.
    fn turn(&mut self, world: &mut World, deliveries: &mut Vec<Delivery>) -> Result<bool> {
        let mut progress = false;
        while let Some(receiving) = Receiving::start(super::any_source())? {
            progress = true;
            self.receiving.push(receiving);
        }
        let mut i = 0;
        while i < self.receiving.len() {
            if !self.receiving[i].test()? {
                // A rank given up on may never finish its message.
                if world.lost[self.receiving[i].source as usize] {
                    self.receiving.swap_remove(i);
                } else {
                    i += 1;
                }
                continue;
            }
            progress = true;
            let receiving = self.receiving.swap_remove(i);
            let (source, tag) = (receiving.source, receiving.tag);
            let bytes = receiving.take();
            self.received(world, source, tag, &bytes, deliveries);
            crate::spare::give(bytes);
        }
        for slot in &mut self.slots {
            let Some(sending) = &mut slot.sending else {
                continue;
            };
            match sending.test() {
                Ok(true) => slot.sending = None,
                Ok(false) => {}
                Err(err) => {
                    slot.sending = None;
                    world.lost[slot.rank as usize] = true;
                    if let Some(busy) = slot.task.take() {
                        deliveries.push((busy.job, busy.chunk, Err(err)));
                    }
                }
            }
        }
        progress |= self.dispatch(world, deliveries);
        self.enforce_timeouts(world, deliveries);
        if self.slots.iter().all(|s| world.lost[s.rank as usize]) {
            return Err(Error::new(
                ErrorKind::Died,
                "every rank of this MPI pool was given up on (tasks timed out there)",
            ));
        }
        Ok(progress)
    }

    fn received(
        &mut self,
        world: &mut World,
        source: c_int,
        tag: c_int,
        bytes: &[u8],
        deliveries: &mut Vec<Delivery>,
    ) {
        let index = source as usize;
        match tag {
            TAG_HELLO => {
                if let (Ok(hello), Some(slot)) = (codec::decode(bytes), world.hellos.get_mut(index))
                {
                    *slot = Some(hello);
                }
            }
            TAG_RESULT => {
                let Some(slot) = self.slots.iter_mut().find(|s| s.rank == source) else {
                    // A rank of no pool of ours (a late result of a pool that is gone).
                    if let Some(busy) = world.busy.get_mut(index) {
                        *busy = None;
                    }
                    return;
                };
                let (header, body) = match frame::unpack(bytes) {
                    Ok(unpacked) => unpacked,
                    Err(err) => {
                        // Out of step: not sent another task.
                        world.lost[index] = true;
                        if let Some(busy) = slot.task.take() {
                            let err = Error::new(
                                err.kind(),
                                format!("MPI rank {source} sent an unreadable result; it is given up on"),
                            )
                            .with_source(err);
                            deliveries.push((busy.job, busy.chunk, Err(err)));
                        }
                        return;
                    }
                };
                if world.busy[index] == Some(header.ticket) {
                    world.busy[index] = None;
                }
                let Some(busy) = slot.task.take_if(|b| b.ticket == header.ticket) else {
                    // The result of a task this pool no longer waits for.
                    return;
                };
                let Some(outcome) = header.outcome else {
                    let err = Error::new(
                        ErrorKind::Codec,
                        format!("MPI rank {source} sent a result without an outcome"),
                    );
                    deliveries.push((busy.job, busy.chunk, Err(err)));
                    return;
                };
                let reply = Reply::Done {
                    job: header.job,
                    chunk: header.chunk,
                    ticket: header.ticket,
                    outcome,
                };
                let expected = Expected {
                    job: busy.job,
                    chunk: busy.chunk,
                    ticket: busy.ticket,
                };
                let result = reply::answer(reply, body, Some(&expected)).unwrap_or_else(|what| {
                    Err(Error::new(
                        ErrorKind::Codec,
                        format!("MPI rank {source}: {what}"),
                    ))
                });
                deliveries.push((busy.job, busy.chunk, result));
            }
            _ => {}
        }
    }

    /// Hands queued tasks to idle ranks. Whether one went.
    fn dispatch(&mut self, world: &mut World, deliveries: &mut Vec<Delivery>) -> bool {
        let mut sent = false;
        for slot in &mut self.slots {
            let index = slot.rank as usize;
            if slot.task.is_some() || world.busy[index].is_some() || world.lost[index] {
                continue;
            }
            let Some(task) = self.shared.lock().queue.pop_front() else {
                break;
            };
            let ticket = self.shared.ticket();
            let header = Header::new(task.job, task.chunk, ticket, task.entry.to_string());
            let started = frame::pack(header, &task.payload)
                .and_then(|bytes| Sending::start(slot.rank, TAG_TASK, bytes));
            crate::spare::give(task.payload.bytes);
            match started {
                Ok(sending) => {
                    slot.sending = Some(sending);
                    slot.task = Some(Busy {
                        job: task.job,
                        chunk: task.chunk,
                        ticket,
                        deadline: self.task_timeout.and_then(crate::sys::deadline_after),
                    });
                    world.busy[index] = Some(ticket);
                    sent = true;
                }
                Err(err) if err.kind() == ErrorKind::Codec => {
                    deliveries.push((task.job, task.chunk, Err(err)));
                }
                Err(err) => {
                    world.lost[index] = true;
                    let err = Error::new(
                        ErrorKind::Died,
                        format!(
                            "cannot send a task to MPI rank {}; it is given up on",
                            slot.rank
                        ),
                    )
                    .with_source(err);
                    deliveries.push((task.job, task.chunk, Err(err)));
                }
            }
        }
        sent
    }

    fn enforce_timeouts(&mut self, world: &mut World, deliveries: &mut Vec<Delivery>) {
        let now = Instant::now();
        for slot in &mut self.slots {
            let overdue = slot
                .task
                .as_ref()
                .and_then(|b| b.deadline)
                .is_some_and(|d| d <= now);
            if !overdue {
                continue;
            }
            let Some(busy) = slot.task.take() else {
                continue;
            };
            slot.sending = None;
            let index = slot.rank as usize;
            world.lost[index] = true;
            let who = match &world.hellos[index] {
                Some(hello) => format!(
                    "MPI rank {} (pid {} on {})",
                    slot.rank, hello.pid, hello.host
                ),
                None => format!("MPI rank {}", slot.rank),
            };
            let err = Error::timeout(format!(
                "the task ran longer than its timeout of {:?} on {who}, which is given up on: no more tasks go there",
                self.task_timeout.unwrap_or_default(),
            ));
            deliveries.push((busy.job, busy.chunk, Err(err)));
        }
    }
}

impl Driver {
    /// Takes in the messages begun (a terminate can come while a large result arrives in
    /// parts): one dropped half-read was never seen again, and its rank stayed busy for every
    /// later pool. A rank given up on, or one that does not finish within [`super::STOP_GRACE`],
    /// is left as it is.
    fn finish_receiving(&mut self) {
        if self.receiving.is_empty() {
            return;
        }
        let mut guard = world();
        let Some(world) = guard.as_mut() else {
            return;
        };
        let deadline = Instant::now() + super::STOP_GRACE;
        let mut idle = Idle::spinning(MOVING_SPIN);
        for mut receiving in std::mem::take(&mut self.receiving) {
            let done = loop {
                if world.lost[receiving.source as usize] || Instant::now() >= deadline {
                    break false;
                }
                match receiving.test() {
                    Ok(true) => break true,
                    Ok(false) => idle.wait(None, Some(deadline)),
                    Err(_) => break false,
                }
            };
            if done {
                let (source, tag) = (receiving.source, receiving.tag);
                let bytes = receiving.take();
                // The results of a pool that ends are dropped: only the accounts are kept.
                self.received(world, source, tag, &bytes, &mut Vec::new());
                crate::spare::give(bytes);
            }
        }
    }
}

impl Drop for Driver {
    /// However the driver ends, the ranks are free for another pool and whatever still waits
    /// fails with a clear error.
    fn drop(&mut self) {
        self.finish_receiving();
        IN_USE.store(false, Ordering::Release);
        self.shared.finish();
    }
}
