//! [`Imap`]: the lazy iterator of [`Pool::imap`] and [`Pool::imap_unordered`].

use std::sync::{Arc, PoisonError};
use std::time::Instant;

use super::jobs::Task;
use super::result::{ImapSink, ImapState};
use super::Pool;
use crate::carrier;
use crate::error::{Error, Result};
use crate::registry::Target;

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: yields each result (or its
/// error) lazily. A failed chunk yields its error once for each of its items, so positions stay
/// aligned with the input; the iteration goes on after it.
pub struct Imap<'p, F: Target, I> {
    pool: &'p Pool,
    input: I,
    ordered: bool,
    chunksize: usize,
    buffersize: usize,
    job: Option<u64>,
    refused: Option<Error>,
    state: Arc<ImapState<F::Output>>,
    sizes: Vec<u32>,
    received: u32,
    next_chunk: u32,
    exhausted: bool,
    current: std::vec::IntoIter<F::Output>,
    pending_error: Option<(Error, u32)>,
    /// Why no more chunks can be submitted (the pool was closed and joined, terminated, a
    /// chunk did not encode): yielded once, after the results of every chunk submitted.
    stopped: Option<Error>,
    done: bool,
}

impl<F: Target, I> std::fmt::Debug for Imap<'_, F, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("function", &F::NAME)
            .field("ordered", &self.ordered)
            .field("chunksize", &self.chunksize)
            .field("buffersize", &self.buffersize)
            .field("received", &self.received)
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
            buffersize: pool.processes * 2,
            job,
            refused,
            state,
            sizes: Vec::new(),
            received: 0,
            next_chunk: 0,
            exhausted: false,
            current: Vec::new().into_iter(),
            pending_error: None,
            stopped: None,
            done: false,
        }
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

    fn submitted(&self) -> u32 {
        self.sizes.len() as u32
    }

    /// Submits chunks until the bound is reached or the input ends.
    fn fill(&mut self) -> Result<()> {
        if let Some(err) = self.refused.take() {
            return Err(err);
        }
        let Some(job) = self.job else {
            return Ok(());
        };
        let bound = (self.pool.processes + self.buffersize) as u32;
        while !self.exhausted && self.submitted() - self.received < bound {
            let chunk: Vec<F::Args> = self.input.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                self.exhausted = true;
                break;
            }
            let index = self.submitted();
            let size = chunk.len() as u32;
            let payload = carrier::encode_args_chunk::<F>(chunk)?;
            let task = Task {
                job,
                chunk: index,
                entry: F::NAME,
                payload,
                queued: Instant::now(),
            };
            self.pool.shared.push(job, [task])?;
            self.sizes.push(size);
        }
        Ok(())
    }

    /// Waits for the next chunk to take (in order, or any); `None` when all are taken.
    fn take_chunk(&mut self) -> Option<(u32, Result<Vec<F::Output>>)> {
        if self.received == self.submitted() {
            return None;
        }
        let mut inner = self.state.lock();
        loop {
            let key = if self.ordered {
                inner
                    .chunks
                    .contains_key(&self.next_chunk)
                    .then_some(self.next_chunk)
            } else {
                inner.chunks.keys().next().copied()
            };
            if let Some(key) = key {
                let result = inner.chunks.remove(&key)?;
                return Some((key, result));
            }
            if let Some(err) = &inner.failed {
                let err = err.duplicate();
                let key = self.next_chunk;
                return Some((key, Err(err)));
            }
            inner = self
                .state
                .cond
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl<F: Target, I: Iterator<Item = F::Args>> Iterator for Imap<'_, F, I> {
    type Item = Result<F::Output>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(value) = self.current.next() {
                return Some(Ok(value));
            }
            if let Some((err, left)) = &mut self.pending_error {
                if *left > 0 {
                    *left -= 1;
                    return Some(Err(err.duplicate()));
                }
                self.pending_error = None;
            }
            if self.done {
                return None;
            }
            if let Err(err) = self.pool.check_not_in_callback() {
                self.done = true;
                return Some(Err(err));
            }
            if self.stopped.is_none() {
                if let Err(err) = self.fill() {
                    // Results already computed (or failed in place) still come first.
                    self.stopped = Some(err);
                }
            }
            let Some((chunk, result)) = self.take_chunk() else {
                self.done = true;
                return self.stopped.take().map(Err);
            };
            self.received += 1;
            if self.ordered {
                self.next_chunk += 1;
            }
            match result {
                Ok(values) => self.current = values.into_iter(),
                Err(err) => {
                    let size = self.sizes.get(chunk as usize).copied().unwrap_or(1);
                    self.pending_error = Some((err, size));
                }
            }
        }
    }
}

impl<F: Target, I> Drop for Imap<'_, F, I> {
    fn drop(&mut self) {
        if let Some(job) = self.job {
            self.pool.shared.forget(job);
        }
    }
}
