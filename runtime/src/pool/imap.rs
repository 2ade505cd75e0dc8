//! [`Imap`]: the lazy iterator of [`Pool::imap`] and [`Pool::imap_unordered`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_core::Stream;

use super::jobs::Task;
use super::result::{self, ImapSink, ImapState, Progress};
use super::Pool;
use crate::carrier;
use crate::error::{Error, ErrorKind, Result};
use crate::registry::Target;

/// The most chunks of one `imap` in flight (submitted and not yet taken), whatever its
/// `buffersize`: their numbers on the wire are a `u32` that wraps, and no two in flight may
/// share one.
const MAX_IN_FLIGHT: u64 = 1 << 31;

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: yields each result (or its
/// error) lazily. A failed chunk yields its error once for each of its items, so positions stay
/// aligned with the input; the iteration goes on after it.
///
/// [`into_stream`](Self::into_stream) makes it a [`Stream`](futures_core::Stream) of the same
/// items, under any async runtime (the pool's driver thread wakes the polling task as chunks
/// arrive). Dropping it, or
/// [`cancel`](Self::cancel), stops the work: its chunks not yet handed to a worker are
/// dropped, and the workers go on with other work.
pub struct Imap<'p, F: Target, I> {
    pool: &'p Pool,
    input: I,
    ordered: bool,
    chunksize: usize,
    buffersize: usize,
    job: Option<u64>,
    refused: Option<Error>,
    state: Arc<ImapState<F::Output>>,
    /// The items of each chunk submitted and not yet taken, by its number on the wire (its
    /// count of chunks before it, wrapped to a `u32`: no more than [`MAX_IN_FLIGHT`] are ever
    /// in flight, so no two of them share a number).
    sizes: HashMap<u32, usize>,
    submitted: u64,
    received: u64,
    next_chunk: u64,
    exhausted: bool,
    current: std::vec::IntoIter<F::Output>,
    pending_error: Option<(Error, usize)>,
    /// Why no more chunks can be submitted (the pool was closed and joined, terminated, a
    /// chunk did not encode): yielded once, after the results of every chunk submitted.
    stopped: Option<Error>,
    done: bool,
    /// The end of [`timeout`](Imap::timeout).
    deadline: Option<Instant>,
    timeout: Duration,
    /// Called with (items done, items submitted, whether the input is exhausted).
    progress: Option<Box<dyn FnMut(Progress) + Send + 'p>>,
    items_done: u64,
    items_submitted: u64,
}

/// How [`Imap::take_chunk`] waits for a chunk that is not there yet.
enum Wait<'w> {
    /// Blocks the thread, until the deadline if any.
    Block(Option<Instant>),
    /// Keeps the waker of a polling task and returns.
    Wake(&'w Waker),
}

/// What [`Imap::take_chunk`] found.
enum Taken<T> {
    Chunk(u32, Result<Vec<T>>),
    /// Every chunk submitted was taken.
    Finished,
    /// Not there yet (the waker is kept), or the deadline passed.
    NotYet,
}

// Nothing of an `Imap` is ever pinned in place (`poll_next` works through `&mut`).
impl<F: Target, I> Unpin for Imap<'_, F, I> {}

impl<F: Target, I> std::fmt::Debug for Imap<'_, F, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("function", &F::NAME)
            .field("ordered", &self.ordered)
            .field("chunksize", &self.chunksize)
            .field("buffersize", &self.buffersize)
            .field("received", &self.received)
            .field("in_flight", &self.sizes.len())
            .field("exhausted", &self.exhausted)
            .finish_non_exhaustive()
    }
}

impl<'p, F: Target, I: Iterator<Item = F::Args>> Imap<'p, F, I> {
    pub(super) fn new(pool: &'p Pool, _function: F, input: I, ordered: bool) -> Self {
        // Registered now, like Python's imap submits at the call: an imap made before
        // `close()` runs to its end; one made after fails at once.
        let state = ImapState::new();
        let sink = Box::new(ImapSink {
            state: state.clone(),
            decode: carrier::decode_outputs::<F>,
        });
        let (job, refused) = match pool.shared.submit(sink, |_| Vec::new(), true) {
            Ok(job) => (Some(job), None),
            Err(err) => (None, Some(err)),
        };
        Imap {
            pool,
            input,
            ordered,
            chunksize: 1,
            buffersize: pool.processes() * 2,
            job,
            refused,
            state,
            sizes: HashMap::new(),
            submitted: 0,
            received: 0,
            next_chunk: 0,
            exhausted: false,
            current: Vec::new().into_iter(),
            pending_error: None,
            stopped: None,
            done: false,
            deadline: None,
            timeout: Duration::ZERO,
            progress: None,
            items_done: 0,
            items_submitted: 0,
        }
    }

    /// A timeout over the whole iteration, counted from this call (as the `timeout` of Python's
    /// `Executor.map`): an item not ready by then is an [`ErrorKind::Timeout`] error, and the
    /// iteration ends there, its unsent chunks dropped. Applies to the blocking iterator; as a
    /// `Stream`, use your runtime's timeout instead.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.deadline = Instant::now().checked_add(timeout);
        self.timeout = timeout;
        self
    }

    /// Calls `progress` each time the results of a chunk are taken, with how far the
    /// iteration has come (for a progress bar of your own; see also the `progress` feature).
    pub fn on_progress(mut self, progress: impl FnMut(Progress) + Send + 'p) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// Cancels the rest of the work: chunks not yet handed to a worker are dropped, chunks
    /// running finish (their results are dropped), and the iteration ends. Other work in the
    /// pool is not touched. Dropping the iterator does the same.
    pub fn cancel(&mut self) {
        self.stop(false);
    }

    /// [`cancel`](Self::cancel), and the workers running a chunk of it are killed (and
    /// replaced) instead of finishing it.
    pub fn cancel_and_kill(&mut self) {
        self.stop(true);
    }

    fn stop(&mut self, kill: bool) {
        if let Some(job) = self.job.take() {
            if !self.pool.shared.cancel(job, kill, false) {
                self.pool.shared.forget(job);
            }
        }
        self.done = true;
        self.exhausted = true;
        self.current = Vec::new().into_iter();
        self.pending_error = None;
        self.stopped = None;
    }

    /// Items per task (default 1, as Python); larger chunks cut per-item overhead.
    pub fn chunksize(mut self, chunksize: usize) -> Self {
        self.chunksize = chunksize.max(1);
        self
    }

    /// Chunks in flight beyond one per worker (default: twice the number of workers). Bounds
    /// memory whatever the input's length (Python 3.15's `buffersize`).
    pub fn buffersize(mut self, buffersize: usize) -> Self {
        self.buffersize = buffersize;
        self
    }

    /// Submits chunks until the bound is reached or the input ends.
    fn fill(&mut self) -> Result<()> {
        if let Some(err) = self.refused.take() {
            return Err(err);
        }
        let Some(job) = self.job else {
            return Ok(());
        };
        // A bound past what the chunks' numbers tell apart is the largest they do.
        let bound =
            (self.pool.processes().saturating_add(self.buffersize) as u64).min(MAX_IN_FLIGHT);
        while !self.exhausted && self.submitted - self.received < bound {
            // Collected without trusting what the input says it holds.
            let chunk: Vec<F::Args> = carrier::collect(self.input.by_ref().take(self.chunksize));
            if chunk.is_empty() {
                self.exhausted = true;
                break;
            }
            let index = self.submitted as u32;
            let size = chunk.len();
            self.state
                .largest
                .fetch_max(chunk.len(), std::sync::atomic::Ordering::AcqRel);
            let payload = carrier::encode_args_chunk::<F>(chunk)?;
            let task = Task {
                job,
                chunk: index,
                entry: F::NAME,
                payload,
                queued: Instant::now(),
            };
            self.pool.shared.push(job, [task])?;
            self.sizes.insert(index, size);
            self.submitted += 1;
            self.items_submitted += size as u64;
        }
        Ok(())
    }

    /// The next chunk to take (in order, or any), waiting as `wait` says.
    fn take_chunk(&mut self, wait: Wait<'_>) -> Taken<F::Output> {
        if self.received == self.submitted {
            return Taken::Finished;
        }
        let mut inner = self.state.lock();
        loop {
            let key = if self.ordered {
                let next = self.next_chunk as u32;
                inner.chunks.contains_key(&next).then_some(next)
            } else {
                inner.chunks.keys().next().copied()
            };
            if let Some(result) = key.and_then(|key| inner.chunks.remove(&key)) {
                return Taken::Chunk(key.unwrap_or_default(), result);
            }
            if let Some(err) = &inner.failed {
                let err = err.duplicate();
                // The next in order, or any still in flight.
                let key = if self.ordered {
                    self.next_chunk as u32
                } else {
                    self.sizes.keys().next().copied().unwrap_or_default()
                };
                return Taken::Chunk(key, Err(err));
            }
            match wait {
                Wait::Wake(waker) => {
                    match &inner.waker {
                        Some(kept) if kept.will_wake(waker) => {}
                        _ => inner.waker = Some(waker.clone()),
                    }
                    return Taken::NotYet;
                }
                Wait::Block(None) => {
                    inner = self
                        .state
                        .cond
                        .wait(inner)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Wait::Block(Some(deadline)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Taken::NotYet;
                    }
                    inner = self
                        .state
                        .cond
                        .wait_timeout(inner, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    fn report_progress(&mut self) {
        if let Some(progress) = &mut self.progress {
            progress(Progress {
                done: self.items_done,
                known: self.items_submitted,
                total: self.exhausted.then_some(self.items_submitted),
            });
        }
    }

    /// The next item: waits as `wait` says; `Pending` when a polling task must wait.
    fn advance(&mut self, wait: Option<&Waker>) -> Poll<Option<Result<F::Output>>> {
        loop {
            if let Some(value) = self.current.next() {
                return Poll::Ready(Some(Ok(value)));
            }
            if let Some((err, left)) = &mut self.pending_error {
                if *left > 0 {
                    *left -= 1;
                    return Poll::Ready(Some(Err(err.duplicate())));
                }
                self.pending_error = None;
            }
            if self.done {
                return Poll::Ready(None);
            }
            // Also as a stream: an executor that blocks on it there (`block_on`) would hold
            // the driver thread, which alone delivers its chunks.
            if let Err(err) = self.pool.check_not_in_callback() {
                self.done = true;
                return Poll::Ready(Some(Err(err)));
            }
            if self.stopped.is_none() {
                if let Err(err) = self.fill() {
                    // Results already computed (or failed in place) still come first.
                    self.stopped = Some(err);
                }
            }
            let how = match wait {
                Some(waker) => Wait::Wake(waker),
                None => Wait::Block(self.deadline),
            };
            let (chunk, result) = match self.take_chunk(how) {
                Taken::Chunk(chunk, result) => (chunk, result),
                Taken::Finished => {
                    self.done = true;
                    return Poll::Ready(self.stopped.take().map(Err));
                }
                Taken::NotYet if self.deadline.is_some_and(|d| d <= Instant::now()) => {
                    let err = Error::timeout(format!(
                        "the results were not ready within {:?}",
                        self.timeout
                    ));
                    self.stop(false);
                    return Poll::Ready(Some(Err(err)));
                }
                Taken::NotYet => return Poll::Pending,
            };
            self.received += 1;
            if self.ordered {
                self.next_chunk += 1;
            }
            let size = self.sizes.remove(&chunk).unwrap_or(1);
            self.items_done += size as u64;
            match result {
                Ok(values) if values.len() == size => self.current = values.into_iter(),
                Ok(values) => {
                    let err = result::miscounted(values.len(), size);
                    self.pending_error = Some((err, size));
                }
                Err(err) => self.pending_error = Some((err, size)),
            }
            self.report_progress();
        }
    }
}

impl<F: Target, I: Iterator<Item = F::Args>> Iterator for Imap<'_, F, I> {
    type Item = Result<F::Output>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.advance(None) {
            Poll::Ready(item) => item,
            // Blocking waits never leave a chunk pending.
            Poll::Pending => Some(Err(Error::new(
                ErrorKind::InvalidInput,
                "the imap iterator lost its place",
            ))),
        }
    }
}

/// An [`Imap`] as a [`Stream`](futures_core::Stream) ([`Imap::into_stream`]): a chunk not
/// there yet leaves the polling task's waker with it, woken by the pool's driver thread when
/// one arrives. The input is read (and chunks encoded and queued) within `poll_next`.
/// Dropping it cancels the rest, as dropping the `Imap` does.
///
/// ```no_run
/// use futures::StreamExt;
/// use multiproc::{process, Pool};
///
/// #[process]
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// async fn squares(pool: &Pool) -> multiproc::Result<Vec<u64>> {
///     pool.imap(square, 0..100).into_stream().collect::<Vec<_>>().await.into_iter().collect()
/// }
/// ```
pub struct ImapStream<'p, F: Target, I>(Imap<'p, F, I>);

impl<'p, F: Target, I: Iterator<Item = F::Args>> Imap<'p, F, I> {
    /// The iterator as a [`Stream`](futures_core::Stream) of the same items, for `.await`.
    pub fn into_stream(self) -> ImapStream<'p, F, I> {
        ImapStream(self)
    }
}

impl<'p, F: Target, I> ImapStream<'p, F, I> {
    /// The stream's [`Imap`] (to cancel it, say).
    pub fn get_mut(&mut self) -> &mut Imap<'p, F, I> {
        &mut self.0
    }
}

impl<F: Target, I> std::fmt::Debug for ImapStream<'_, F, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ImapStream").field(&self.0).finish()
    }
}

impl<F: Target, I: Iterator<Item = F::Args>> Stream for ImapStream<'_, F, I> {
    type Item = Result<F::Output>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().0.advance(Some(cx.waker()))
    }
}

impl<F: Target, I> Drop for Imap<'_, F, I> {
    fn drop(&mut self) {
        if let Some(job) = self.job {
            self.pool.shared.forget(job);
        }
    }
}
