//! [`Executor`]: Python's `concurrent.futures.ProcessPoolExecutor`, on the pool's own machinery.
//!
//! An executor is a [`Pool`] seen through the `concurrent.futures` API: [`Executor::submit`]
//! is `apply_async` with a [`TaskFuture`] for a handle, [`Executor::map`] is a lazy `imap`, and
//! [`wait`] and [`as_completed`] wait over many handles at once, woken by the pool's driver
//! thread as each completes (the same wake-up that ends a `get`, or an `.await`).
//!
//! | Python | multiproc |
//! |---|---|
//! | `ProcessPoolExecutor(max_workers=4)` | [`Executor::new(4)`](Executor::new) |
//! | `ProcessPoolExecutor(max_workers, mp_context, initializer, initargs, max_tasks_per_child)` | [`Executor::builder()`](Executor::builder) |
//! | `ex.submit(fn, *args)` | [`ex.submit(f, args)`](Executor::submit) |
//! | `ex.map(fn, xs, timeout=, chunksize=)` | [`ex.map(f, xs)`](Executor::map)`.timeout(d).chunksize(n)` |
//! | `ex.shutdown(wait, cancel_futures=)` | [`ex.shutdown(wait, cancel_futures)`](Executor::shutdown) |
//! | `with ProcessPoolExecutor() as ex:` | the executor's `Drop` (it waits) |
//! | `fut.result(timeout=)` | [`result`](TaskFuture::result), [`result_timeout`](TaskFuture::result_timeout) |
//! | `fut.exception(timeout=)` | [`exception`](TaskFuture::exception), [`exception_timeout`](TaskFuture::exception_timeout) |
//! | `fut.done()`, `running()`, `cancelled()`, `cancel()` | the same names on [`TaskFuture`] |
//! | `fut.add_done_callback(fn)` | [`add_done_callback`](TaskFuture::add_done_callback) |
//! | `concurrent.futures.wait(fs, timeout, return_when)` | [`wait(&fs, ReturnWhen::…, timeout)`](wait) |
//! | `concurrent.futures.as_completed(fs, timeout)` | [`as_completed(&fs, timeout)`](as_completed) |
//! | `await asyncio.wrap_future(fut)` | `fut.await` ([`TaskFuture`] is a `Future`) |
//! | `BrokenProcessPool` after a worker dies | only that task fails ([`ErrorKind::Died`]); the worker is replaced |

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::context::StartMethod;
use crate::error::{Error, ErrorKind, Result};
use crate::pool::{AsyncResult, Imap, Pool, PoolBuilder, Watch};
use crate::registry::Target;

/// A pool of worker processes with Python's `ProcessPoolExecutor` API.
///
/// ```no_run
/// use multiproc::{process, Executor};
/// use multiproc::executor::as_completed;
///
/// #[process]
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let ex = Executor::new(2)?;
///     let futures: Vec<_> = (0..10).map(|n| ex.submit(square, n)).collect();
///     let mut total = 0;
///     for done in as_completed(&futures, None) {
///         total += done?.result()?;
///     }
///     assert_eq!(total, 285);
///     // Lazy over its input, results in order.
///     let squares: Vec<u64> = ex.map(square, 0..5).collect::<Result<_, _>>()?;
///     assert_eq!(squares, [0, 1, 4, 9, 16]);
///     ex.shutdown(true, false)
/// }
/// ```
///
/// Dropping an executor shuts it down and waits for the work submitted, as leaving Python's
/// `with ProcessPoolExecutor() as ex:` block does; call
/// [`shutdown(true, true)`](Self::shutdown) first to drop what has not started. A worker that
/// dies in a task fails that task alone with [`ErrorKind::Died`] and is replaced (Python's
/// executor breaks: every pending future fails with `BrokenProcessPool`).
pub struct Executor {
    pool: Pool,
}

/// Builds an [`Executor`]; see each method for its default (they are the pool's).
#[derive(Debug)]
pub struct ExecutorBuilder {
    pool: PoolBuilder,
}

impl ExecutorBuilder {
    /// Number of worker processes; default [`cpu_count()`](crate::cpu_count).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.pool = self.pool.processes(n);
        self
    }

    /// Replace each worker after this many tasks; default never (see
    /// [`PoolBuilder::maxtasksperchild`]).
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.pool = self.pool.maxtasksperchild(n);
        self
    }

    /// A function run once in every worker before its first task (see
    /// [`PoolBuilder::initializer`]).
    pub fn initializer<F: Target>(mut self, function: F, args: F::Args) -> Self {
        self.pool = self.pool.initializer(function, args);
        self
    }

    /// Start method of the workers (Python's `mp_context`); default the global one (see
    /// [`PoolBuilder::start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.pool = self.pool.start_method(method);
        self
    }

    /// Kill a worker whose task runs longer than this and fail that task with
    /// [`ErrorKind::Timeout`]; default no limit (see [`PoolBuilder::task_timeout`]).
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.pool = self.pool.task_timeout(timeout);
        self
    }

    /// Let a worker go once it has been idle this long, and start workers again as tasks come
    /// (loky's idle worker `timeout`); default never (see [`PoolBuilder::idle_timeout`]).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool = self.pool.idle_timeout(timeout);
        self
    }

    /// Replace a worker whose resident size is above `bytes` after a task; default no limit
    /// (see [`PoolBuilder::max_memory_per_child`]).
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.pool = self.pool.max_memory_per_child(bytes);
        self
    }

    /// Ask a task to stop once it has run this long, before the hard
    /// [`task_timeout`](Self::task_timeout); default never (see
    /// [`PoolBuilder::soft_task_timeout`] and [`soft_timeout_expired`](crate::soft_timeout_expired)).
    pub fn soft_task_timeout(mut self, timeout: Duration) -> Self {
        self.pool = self.pool.soft_task_timeout(timeout);
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Executor> {
        Ok(Executor {
            pool: self.pool.build()?,
        })
    }
}

impl Executor {
    /// An executor of `max_workers` worker processes, started with the global start method.
    pub fn new(max_workers: usize) -> Result<Executor> {
        Executor::builder().max_workers(max_workers).build()
    }

    /// A builder for the executor's options.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder {
            pool: Pool::builder(),
        }
    }

    /// Changes the number of workers while the executor runs (loky's reusable executor asked
    /// for another `max_workers`); see [`Pool::resize`]: no running task is cut short.
    pub fn resize(&self, max_workers: usize) -> Result<()> {
        self.pool.resize(max_workers)
    }

    /// Runs `function(args)` in a worker; its [`TaskFuture`] at once. After
    /// [`shutdown`](Self::shutdown) the handle holds an [`ErrorKind::NotRunning`] error (where
    /// Python raises `RuntimeError`).
    pub fn submit<F: Target>(&self, function: F, args: F::Args) -> TaskFuture<F::Output> {
        TaskFuture {
            result: self.pool.apply_async(function, args),
        }
    }

    /// `function` over every item, lazily: the input is read as results are taken (a bounded
    /// number of tasks in flight), results come in input order. Chunks of one item unless
    /// [`Imap::chunksize`] says otherwise; [`Imap::timeout`] bounds the whole iteration (as
    /// `map(timeout=)`); [`Imap::into_stream`] makes it a `Stream`. Dropping it, or
    /// [`Imap::cancel`], cancels the tasks not yet started.
    ///
    /// Unlike Python's `map`, which submits every item at the call, the items not yet read
    /// when [`shutdown`](Self::shutdown)`(true, _)` returns are never run: their results are
    /// [`ErrorKind::NotRunning`] errors that say so (those submitted still complete). Take the
    /// results before a shutdown that waits; `shutdown(false, _)` lets the map go on.
    pub fn map<F: Target, I: IntoIterator<Item = F::Args>>(
        &self,
        function: F,
        items: I,
    ) -> Imap<'_, F, I::IntoIter> {
        self.pool.imap(function, items)
    }

    /// Takes no more work. With `cancel_futures`, tasks not yet started are cancelled (their
    /// handles say [`cancelled`](TaskFuture::cancelled)); with `wait`, returns once every
    /// task started or kept has finished and the workers have exited. Without `wait` it
    /// returns at once, and the work goes on until the executor is dropped (which waits for
    /// it). Calling it again is harmless.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) -> Result<()> {
        self.pool.close();
        if cancel_futures {
            self.pool.cancel_queued();
        }
        if wait {
            self.pool.join()?;
        }
        Ok(())
    }

    /// The pool underneath (for `apply`, `imap_unordered` and the like).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Drop for Executor {
    /// Shuts down and waits for the work submitted (Python's `shutdown(wait=True)`).
    fn drop(&mut self) {
        let _ = self.shutdown(true, false);
    }
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("pool", &self.pool)
            .finish()
    }
}

/// The handle of a task submitted to an [`Executor`], as Python's `concurrent.futures.Future`
/// (named so that it does not clash with [`std::future::Future`], which it also implements:
/// `.await` it under any async runtime).
///
/// ```no_run
/// use multiproc::{process, ErrorKind, Executor};
///
/// #[process]
/// fn slow(n: u64) -> u64 {
///     std::thread::sleep(std::time::Duration::from_secs(1));
///     n
/// }
///
/// # fn main() -> multiproc::Result<()> {
/// let ex = Executor::new(1)?;
/// let running = ex.submit(slow, 1);
/// let queued = ex.submit(slow, 2);
/// // The one worker has the first; the second still waits, and can be cancelled.
/// assert!(queued.cancel());
/// assert_eq!(queued.result().unwrap_err().kind(), ErrorKind::Cancelled);
/// assert_eq!(running.result()?, 1);
/// # Ok(())
/// # }
/// ```
pub struct TaskFuture<T> {
    result: AsyncResult<T>,
}

impl<T> TaskFuture<T> {
    /// Waits for the task and returns its value, or its error (a remote panic, a dead
    /// worker, [`ErrorKind::Cancelled`]). The value can be taken once: later calls fail with
    /// [`ErrorKind::InvalidInput`]; an error is returned each time. While done callbacks run
    /// with the value (their argument), it is taken once they return; in one of them (or in
    /// the thread that runs them) it cannot be: an [`ErrorKind::InvalidInput`] error.
    pub fn result(&self) -> Result<T> {
        self.wait_until(None)?;
        self.take(None)
    }

    /// [`result`](Self::result), waiting at most `timeout`: an [`ErrorKind::Timeout`] error if
    /// the task is not done by then (it goes on; ask again later).
    pub fn result_timeout(&self, timeout: Duration) -> Result<T> {
        let deadline = deadline_after(timeout);
        if !self.wait_until(Some(deadline))? {
            return Err(not_done(timeout));
        }
        self.take(Some(deadline))
    }

    fn take(&self, deadline: Option<Instant>) -> Result<T> {
        self.result
            .slot()
            .take_value(deadline)
            .unwrap_or_else(|| Err(Error::new(ErrorKind::InvalidInput, "the task is not done")))
    }

    /// Waits; whether the task is done by `deadline`. Refuses to wait in a done callback of
    /// the same executor: it runs on the driver thread, which alone can complete the task.
    fn wait_until(&self, deadline: Option<Instant>) -> Result<bool> {
        if self.result.would_deadlock() {
            return Err(in_callback());
        }
        if deadline.is_none() {
            self.result.run_here_if_queued();
        }
        Ok(self.result.slot().wait_until(deadline))
    }

    /// The task's error once it is done (`None` if it succeeded); an
    /// [`ErrorKind::Cancelled`] error if it was cancelled, as Python's `exception()` raises
    /// `CancelledError`.
    pub fn exception(&self) -> Result<Option<Error>> {
        self.exception_until(None)
    }

    /// [`exception`](Self::exception), waiting at most `timeout` ([`ErrorKind::Timeout`]
    /// error if the task is not done by then).
    pub fn exception_timeout(&self, timeout: Duration) -> Result<Option<Error>> {
        if !self.wait_until(Some(deadline_after(timeout)))? {
            return Err(not_done(timeout));
        }
        self.error()
    }

    fn exception_until(&self, deadline: Option<Instant>) -> Result<Option<Error>> {
        self.wait_until(deadline)?;
        self.error()
    }

    fn error(&self) -> Result<Option<Error>> {
        match self.result.slot().error() {
            Some(err) if err.kind() == ErrorKind::Cancelled => Err(err),
            error => Ok(error),
        }
    }

    /// Whether the task is done: finished, failed, or cancelled.
    pub fn done(&self) -> bool {
        self.result.ready()
    }

    /// Whether a worker runs the task now (it can no longer be cancelled).
    pub fn running(&self) -> bool {
        !self.result.ready() && !self.result.queued()
    }

    /// Cancels the task if no worker has it yet, as Python's `cancel()`: `true` when it was
    /// cancelled (now, or before), `false` when it runs or is done.
    pub fn cancel(&self) -> bool {
        self.cancelled() || self.result.cancel_if_queued()
    }

    /// Whether the task was cancelled ([`cancel`](Self::cancel), or
    /// [`Executor::shutdown`] with `cancel_futures`).
    pub fn cancelled(&self) -> bool {
        self.result.slot().failed_with(ErrorKind::Cancelled)
    }

    /// Calls `callback` with the task's outcome once it is done: at once (in this thread) if it
    /// is, else in the thread that completes it (the pool's driver thread, or one that cancels
    /// it), after the task shows as done and its waiters are woken, as Python's. A panic in it
    /// is logged and ignored, as Python does. Keep it short: on the driver thread it holds up
    /// the other tasks' results, and it cannot wait there for a task of the same executor
    /// ([`result`](Self::result) fails, [`wait`] and [`as_completed`] without a timeout
    /// return at once).
    ///
    /// It may use this future: it is [`done`](Self::done) (and [`cancelled`](Self::cancelled)
    /// if it was), and a callback added to it from the callback runs too. Its value is lent to
    /// the callbacks (their argument) until the last returns: [`result`](Self::result) waits
    /// for them in another thread and fails in theirs, and a callback added meanwhile runs in
    /// their thread, after them. Unlike Python's, then, a callback must not wait for what a
    /// thread that takes this future's result may hold (a lock it took before calling
    /// `result`, say, or another future's value lent to that thread's callbacks): the two
    /// would wait for each other, and with the driver thread every task of the executor.
    pub fn add_done_callback(
        &self,
        callback: impl FnOnce(std::result::Result<&T, &Error>) + Send + 'static,
    ) {
        self.result.slot().on_done(Box::new(callback));
    }
}

impl<T> Future for TaskFuture<T> {
    type Output = Result<T>;

    /// Ready once the task is done; the waker is kept in the handle until then and woken by
    /// the thread that completes it. Polled in a done callback of the same executor while
    /// not done, it is ready with an [`ErrorKind::InvalidInput`] error, as
    /// [`result`](Self::result) there: an executor that blocks on it would hold the driver
    /// thread, which alone can complete the task.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        if self.result.would_deadlock() {
            return Poll::Ready(Err(in_callback()));
        }
        self.result.slot().poll_take(cx)
    }
}

impl<T> fmt::Debug for TaskFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.cancelled() {
            "cancelled"
        } else if self.done() {
            "finished"
        } else if self.running() {
            "running"
        } else {
            "pending"
        };
        f.debug_struct("TaskFuture").field("state", &state).finish()
    }
}

/// The error of an unbounded wait in a done callback of the same executor.
fn in_callback() -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        "cannot wait for a task in a done callback of the same executor (they run on its driver thread)",
    )
}

fn not_done(timeout: Duration) -> Error {
    Error::timeout(format!("the task was not done within {timeout:?}"))
}

fn deadline_after(timeout: Duration) -> Instant {
    // A timeout too large for an `Instant` is as good as none: a year.
    Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600))
}

/// When [`wait`] returns, as Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`, `ALL_COMPLETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as one task is done (or cancelled).
    FirstCompleted,
    /// As soon as one task fails (a cancelled task does not count); else when all are done.
    FirstException,
    /// When every task is done.
    AllCompleted,
}

/// What [`wait`] found: the handles done, and the others, each in the order given (a handle
/// given more than once is in one of them once).
#[derive(Debug)]
pub struct Done<'a, T> {
    /// Done (finished, failed, or cancelled) when `wait` returned.
    pub done: Vec<&'a TaskFuture<T>>,
    /// Not done then.
    pub not_done: Vec<&'a TaskFuture<T>>,
}

/// Watches every handle of `futures` (as index `i`); stops watching on drop.
struct Watching<'a, T> {
    /// Each handle once, at its first place: Python's functions take a set.
    futures: Vec<&'a TaskFuture<T>>,
    watch: Arc<Watch>,
}

impl<'a, T> Watching<'a, T> {
    fn new(futures: impl IntoIterator<Item = &'a TaskFuture<T>>) -> Self {
        let mut seen = HashSet::new();
        let futures: Vec<_> = futures
            .into_iter()
            .filter(|&f| seen.insert(f as *const TaskFuture<T>))
            .collect();
        let watch = Watch::new();
        for (i, future) in futures.iter().enumerate() {
            future.result.slot().watch(&watch, i);
        }
        Watching { futures, watch }
    }

    /// Whether waiting for a future not done could never end: this is a done callback of its
    /// executor (on the driver thread, which alone completes it).
    fn would_deadlock(&self) -> bool {
        self.futures.iter().any(|f| f.result.would_deadlock())
    }
}

impl<T> Drop for Watching<'_, T> {
    fn drop(&mut self) {
        for future in &self.futures {
            future.result.slot().unwatch(&self.watch);
        }
    }
}

/// Waits until `return_when` holds for `futures`, or `timeout` passes (`None`: no limit);
/// Python's `concurrent.futures.wait`. Woken by each task as it completes: no polling.
///
/// Without a timeout, in a done callback of the executor of a future not done, it returns at
/// once: it would wait for the very thread that runs the callback.
///
/// ```no_run
/// use std::time::Duration;
/// use multiproc::{process, Executor};
/// use multiproc::executor::{wait, ReturnWhen};
///
/// #[process]
/// fn nap(millis: u64) -> u64 {
///     std::thread::sleep(Duration::from_millis(millis));
///     millis
/// }
///
/// # fn main() -> multiproc::Result<()> {
/// let ex = Executor::new(2)?;
/// let futures = [ex.submit(nap, 10), ex.submit(nap, 5_000)];
/// let first = wait(&futures, ReturnWhen::FirstCompleted, None);
/// assert_eq!(first.done.len(), 1);
/// let all = wait(&futures, ReturnWhen::AllCompleted, Some(Duration::from_millis(100)));
/// assert_eq!(all.not_done.len(), 1); // the 5 s nap, still running at the timeout
/// # Ok(())
/// # }
/// ```
pub fn wait<'a, T: 'a>(
    futures: impl IntoIterator<Item = &'a TaskFuture<T>>,
    return_when: ReturnWhen,
    timeout: Option<Duration>,
) -> Done<'a, T> {
    let watching = Watching::new(futures);
    let deadline = match timeout {
        Some(timeout) => Some(deadline_after(timeout)),
        None if watching.would_deadlock() => Some(Instant::now()),
        None => None,
    };
    let mut left = watching.futures.len();
    while left > 0 {
        let ready = watching.watch.next_ready(deadline);
        if ready.is_empty() {
            break; // the deadline passed
        }
        left -= ready.len();
        let stop = match return_when {
            ReturnWhen::FirstCompleted => true,
            ReturnWhen::FirstException => ready.iter().any(|&i| {
                watching.futures[i]
                    .result
                    .slot()
                    .error()
                    .is_some_and(|err| err.kind() != ErrorKind::Cancelled)
            }),
            ReturnWhen::AllCompleted => false,
        };
        if stop {
            break;
        }
    }
    let (done, not_done) = watching.futures.iter().partition(|f| f.done());
    Done { done, not_done }
}

/// An iterator over `futures` that yields each as it completes (those already done first);
/// Python's `concurrent.futures.as_completed`. A handle given more than once is yielded once.
/// If `timeout` passes first, it yields an [`ErrorKind::Timeout`] error and ends. Woken by
/// each task as it completes: no polling.
///
/// Without a timeout, in a done callback of the executor of a future not done, it yields the
/// futures done and then an [`ErrorKind::InvalidInput`] error, and ends: it would wait for the
/// very thread that runs the callback.
pub fn as_completed<'a, T: 'a>(
    futures: impl IntoIterator<Item = &'a TaskFuture<T>>,
    timeout: Option<Duration>,
) -> AsCompleted<'a, T> {
    let watching = Watching::new(futures);
    AsCompleted {
        left: watching.futures.len(),
        watching,
        ready: VecDeque::new(),
        deadline: timeout.map(deadline_after),
        timeout,
    }
}

/// The iterator of [`as_completed`].
pub struct AsCompleted<'a, T> {
    watching: Watching<'a, T>,
    ready: VecDeque<usize>,
    left: usize,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
}

impl<'a, T> Iterator for AsCompleted<'a, T> {
    type Item = Result<&'a TaskFuture<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let mut blocked = false;
        if self.ready.is_empty() {
            blocked = self.deadline.is_none() && self.watching.would_deadlock();
            let deadline = if blocked {
                Some(Instant::now())
            } else {
                self.deadline
            };
            self.ready.extend(self.watching.watch.next_ready(deadline));
        }
        let Some(index) = self.ready.pop_front() else {
            let pending = self.left;
            self.left = 0;
            if blocked {
                return Some(Err(in_callback()));
            }
            return Some(Err(Error::timeout(format!(
                "{pending} of the tasks were not done within {:?}",
                self.timeout.unwrap_or_default()
            ))));
        };
        self.left -= 1;
        Some(Ok(self.watching.futures[index]))
    }
}

impl<T> fmt::Debug for AsCompleted<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}
