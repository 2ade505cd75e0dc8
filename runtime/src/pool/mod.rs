//! `Pool`: a pool of worker processes, as Python's `multiprocessing.Pool`.
//!
//! The pool's driver thread owns the workers: it hands each idle worker one task (a chunk of
//! encoded arguments for a registered function), reads the reply, and notices deaths and
//! overdue tasks. Each worker talks to the driver over its own socket and its own two
//! shared-memory rings (`rings`; no shared queue, no shared lock: a killed worker cannot
//! wedge its siblings), so the driver always knows which
//! task a dead worker held. That task fails with an error naming the signal or exit code; the
//! worker is replaced; the pool goes on.

mod bulk;
mod driver;
mod imap;
mod jobs;
mod launcher;
mod lent;
mod link;
mod manage;
#[cfg(feature = "mpi")]
mod mpi;
mod reply;
mod result;
pub(crate) mod rings;
mod soft;
mod threads;
pub(crate) mod worker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use imap::{Imap, ImapStream};
pub(crate) use result::Watch;
pub use result::{AsyncResult, Progress};
pub use soft::{check_soft_timeout, soft_timeout_expired};

/// Under an MPI launcher, called before `main`: starts MPI, and on a rank other than 0 serves
/// an MPI pool's tasks and never returns (see `mpi`).
/// `before_serving` runs on such a rank first (the constructors after the runtime's).
#[cfg(feature = "mpi")]
pub(crate) fn enter_mpi_rank(before_serving: impl FnOnce()) {
    mpi::enter_before_main(before_serving);
}

use self::driver::Driver;
use self::jobs::{Lending, Lifecycle, Shared, Task};
use self::launcher::Launcher;
use self::link::Link;
use self::manage::{Limits, Managed};
use self::result::{ApplySink, ChunkSizes, MapSink, Slot, Told};
use self::worker::TaskHeader;
use self::worker::WorkerConfig;
use crate::carrier;
use crate::context;
use crate::context::StartMethod;
use crate::current::{self, cpu_count, current_process};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Encoded;
use crate::registry::Target;

/// A pool of worker processes.
///
/// ```no_run
/// use multiproc::{process, Pool};
///
/// #[process]
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let pool = Pool::new(4)?;
///     assert_eq!(pool.map(square, 0..5)?, vec![0, 1, 4, 9, 16]);
///     assert_eq!(pool.apply(square, 7)?, 49);
///     pool.close();
///     pool.join()
/// }
/// ```
///
/// Dropping a pool terminates it (as Python's `with Pool() as p:` does on exit): workers get
/// SIGTERM, then SIGKILL after a second, and are reaped; pending results fail with
/// [`ErrorKind::Terminated`]. To let queued work finish, call [`close`](Self::close) and
/// [`join`](Self::join) first. Workers are daemonic: they die with the parent even when it
/// is killed. Neither drop nor `terminate` waits on a fork server: a worker still being started
/// then is killed and reaped when it comes.
///
/// A task that writes on its worker's socket cannot pass anything for a reply: a message that
/// is not the reply to the task the worker holds (with that task's ticket), or a reply begun
/// and left unfinished for 10 seconds, kills and replaces that worker, and fails that task
/// alone with an error that names the worker.
pub struct Pool {
    shared: Arc<Shared>,
    driver: Mutex<Option<JoinHandle<()>>>,
    /// The number of workers, shared with the driver ([`resize`](Self::resize)).
    size: Arc<AtomicUsize>,
    limits: Limits,
    /// `false` for an MPI pool, whose workers are the job's ranks.
    resizable: bool,
}

/// Builds a [`Pool`]; see each method for its default.
#[derive(Debug)]
pub struct PoolBuilder {
    processes: Option<usize>,
    start_method: Option<StartMethod>,
    initializer: Option<(&'static str, std::result::Result<Encoded, String>)>,
    maxtasksperchild: Option<u64>,
    task_timeout: Option<Duration>,
    start_retry_limit: Option<Duration>,
    limits: Limits,
    #[cfg(feature = "mpi")]
    mpi: bool,
}

impl PoolBuilder {
    /// Number of worker processes; default [`cpu_count()`](crate::cpu_count). At least 1, at
    /// most 65536 (an MPI pool's, a cap on the ranks used, is not bounded).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Start method of the workers; default the global one
    /// ([`get_start_method`](crate::get_start_method)). With `Fork`, the pool forks a
    /// "zygote" of the current process when it is built (so the fork happens before the
    /// pool's own thread exists), and the zygote forks every worker, replacements included:
    /// workers see the memory of the process as it was when the pool was built.
    ///
    /// The zygote keeps a spare copy of itself: if the zygote is killed or dies, the spare
    /// takes its place (and makes a new spare), so replacement workers still see the pool's
    /// build-time memory. If the zygote and its spare are both gone, a new zygote is forked
    /// from the process as it is then (not as it was at build time), which the
    /// [`ForkPolicy`](crate::ForkPolicy) must allow: under the default `Refuse`, replacing a
    /// worker then fails with [`ErrorKind::ForkUnsafe`].
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = Some(method);
        self
    }

    /// A `#[process]` function and its arguments, run once in every worker before its first
    /// task (replacements included). If it panics or fails, the pool is broken: every call
    /// fails with [`ErrorKind::InitializerFailed`] (CPython respawns workers forever,
    /// gh-87472).
    pub fn initializer<F: Target>(mut self, _function: F, args: F::Args) -> Self {
        let encoded = carrier::encode_args::<F>(args);
        self.initializer = Some((F::NAME, encoded.map_err(|e| e.chain().to_string())));
        self
    }

    /// Replace each worker after this many tasks (a chunk of `map` is one task); default
    /// never. Must be at least 1.
    pub fn maxtasksperchild(mut self, n: u64) -> Self {
        self.maxtasksperchild = Some(n);
        self
    }

    /// Kill a worker whose task runs longer than this, fail that task with
    /// [`ErrorKind::Timeout`], and replace the worker; default no limit. The time counts from
    /// when the task is handed to the worker until its whole result is back, so it also ends a
    /// worker that stops in the middle of receiving its arguments or sending its result.
    /// Anything past a century (`Duration::MAX`) counts as a century: never, in effect.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(within_a_century(timeout));
        self
    }

    /// How long the pool goes on trying to start workers while it has none, before the tasks
    /// that wait for one fail; default 30 seconds.
    ///
    /// A worker that cannot be started (out of descriptors or processes for a moment, a fork
    /// server that does not answer) is tried again, after a wait that doubles from 20 ms up
    /// to 1 s, while tasks wait. Only when no worker runs and none could be started for this
    /// long do the waiting tasks fail, with the last start's error; the pool keeps trying, and
    /// serves again once a worker starts. (The workers of [`build`](Self::build) are started
    /// at once: their failure is `build`'s.) Anything past a century counts as a century.
    pub fn start_retry_limit(mut self, limit: Duration) -> Self {
        self.start_retry_limit = Some(within_a_century(limit));
        self
    }

    /// Let a worker go once it has been idle this long (loky's idle worker timeout); default
    /// never. Workers are started again as tasks come, up to [`processes`](Self::processes):
    /// a pool left alone shrinks to no process at all, and grows back on demand (the first
    /// task after a lull then waits for a worker to start). Must not be zero; anything past
    /// a century counts as a century.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn main() -> multiproc::Result<()> {
    /// let pool = multiproc::Pool::builder()
    ///     .processes(4)
    ///     .idle_timeout(Duration::from_secs(60))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.limits.idle_timeout = Some(within_a_century(timeout));
        self
    }

    /// Replace a worker whose resident size is above `bytes` after a task (billiard's
    /// `max_memory_per_child`); default no limit. The worker measures itself after each task
    /// (the resident size of `/proc/self/statm`: what it holds then, not its peak) and says
    /// so in its reply; the task's result is delivered as usual, and the worker, given no
    /// other task, exits and is replaced. A leak in a task thus costs a worker, not the
    /// machine's memory. Must not be zero.
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.limits.max_memory = Some(bytes);
        self
    }

    /// Ask a task to stop once it has run this long (billiard's soft time limit); default
    /// never. The pool sends its worker `SIGUSR1`, whose handler (installed in the workers of
    /// such a pool only) sets a flag the task reads with
    /// [`soft_timeout_expired`](crate::soft_timeout_expired) or
    /// [`check_soft_timeout`](crate::check_soft_timeout): a task that looks and returns
    /// delivers whatever it returns; one that does not is killed at the hard
    /// [`task_timeout`](Self::task_timeout), if there is one, as always. Must be shorter than
    /// the `task_timeout`. Calls of [`Pool::apply`] then go through the pool's driver (which
    /// sends the signal) rather than on a worker borrowed by the caller. Anything past a
    /// century counts as a century.
    pub fn soft_task_timeout(mut self, timeout: Duration) -> Self {
        self.limits.soft_timeout = Some(within_a_century(timeout));
        self
    }

    /// A pool whose workers are the other ranks of the MPI job this program runs in (feature
    /// `mpi`): launched with `mpirun -np N ./program`, rank 0 runs `main` and the `N - 1`
    /// others serve its tasks. [`processes`](Self::processes) caps the number of ranks used
    /// (default all); [`task_timeout`](Self::task_timeout) gives up on a rank whose task
    /// overruns it. No start method, initializer or `maxtasksperchild`: the ranks are
    /// started by the launcher and never replaced. See the README's "Beyond one machine".
    #[cfg(feature = "mpi")]
    pub fn mpi(mut self) -> Self {
        self.mpi = true;
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool> {
        #[cfg(feature = "mpi")]
        if self.mpi {
            return mpi::build(self);
        }
        let processes = worker_count(self.processes.unwrap_or_else(cpu_count))?;
        if self.maxtasksperchild == Some(0) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "maxtasksperchild must be a positive number",
            ));
        }
        if current_process().daemon() {
            return Err(Error::new(
                ErrorKind::DaemonicChildren,
                "daemonic processes are not allowed to have children (a pool worker cannot make a pool)",
            ));
        }
        let method = self.start_method.unwrap_or_else(context::get_start_method);
        current::require_init(method)?;
        let (initializer, init_fds) = match self.initializer {
            None => (None, Vec::new()),
            Some((name, Ok(encoded))) => (Some((name.to_string(), encoded.bytes)), encoded.fds),
            Some((name, Err(message))) => {
                return Err(Error::new(
                    ErrorKind::Codec,
                    format!("cannot encode the arguments of the initializer `{name}`: {message}"),
                ))
            }
        };
        let limits = self.limits;
        if limits.idle_timeout == Some(Duration::ZERO) || limits.max_memory == Some(0) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "idle_timeout and max_memory_per_child must not be zero",
            ));
        }
        if let (Some(soft), Some(hard)) = (limits.soft_timeout, self.task_timeout) {
            if soft >= hard {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "soft_task_timeout must be shorter than task_timeout",
                ));
            }
        }
        let config = WorkerConfig {
            initializer,
            maxtasks: self.maxtasksperchild,
            soft_timeout: limits.soft_timeout.is_some(),
            max_memory: limits.max_memory,
        };
        let size = Arc::new(AtomicUsize::new(processes));
        let shared = Shared::new()?;
        shared.set_lending(Lending {
            task_timeout: self.task_timeout,
            max_memory: limits.max_memory,
            soft_timeout: limits.soft_timeout.is_some(),
        });
        let launcher = Launcher::new(method)?;
        let driver = Driver::start(
            shared.clone(),
            launcher,
            method,
            config,
            init_fds,
            processes,
            self.task_timeout,
            self.start_retry_limit.unwrap_or(driver::START_RETRY_LIMIT),
            Managed::new(limits.clone(), size.clone()),
        )?;
        // The driver counts itself as one of the library's fork-safe threads, and `build`
        // returns only once it has.
        let handle = threads::spawn_counted("multiproc-pool", move || driver.run())
            .map_err(|err| Error::io("cannot start the pool's driver thread", err))?;
        Ok(Pool {
            shared,
            driver: Mutex::new(Some(handle)),
            size,
            limits,
            resizable: true,
        })
    }
}

impl Pool {
    /// A pool of `processes` workers with the global start method.
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A builder for the other settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            processes: None,
            start_method: None,
            initializer: None,
            maxtasksperchild: None,
            task_timeout: None,
            start_retry_limit: None,
            limits: Limits::default(),
            #[cfg(feature = "mpi")]
            mpi: false,
        }
    }

    /// The number of worker processes (as last set by [`resize`](Self::resize)).
    pub fn processes(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    /// Changes the number of workers while the pool runs (at least 1). Growing starts workers
    /// at once (on demand, with an [`idle_timeout`](PoolBuilder::idle_timeout)); shrinking lets
    /// idle workers go first, and busy ones after their task: no task is cut short. Fails with
    /// [`ErrorKind::NotRunning`] after `close` or `terminate`, and with
    /// [`ErrorKind::InvalidInput`] on an MPI pool (its workers are the job's ranks).
    ///
    /// ```no_run
    /// # fn main() -> multiproc::Result<()> {
    /// let pool = multiproc::Pool::new(2)?;
    /// pool.resize(8)?; // a burst of work ahead
    /// pool.resize(1)?; // and a quiet time after it
    /// # Ok(()) }
    /// ```
    pub fn resize(&self, processes: usize) -> Result<()> {
        let processes = worker_count(processes)?;
        if !self.resizable {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "an MPI pool cannot be resized: its workers are the job's ranks",
            ));
        }
        let state = self.shared.lock();
        if state.lifecycle != Lifecycle::Running {
            return Err(Error::new(ErrorKind::NotRunning, "the pool is not running"));
        }
        self.size.store(processes, Ordering::Release);
        drop(state);
        self.shared.wake();
        Ok(())
    }

    /// The pids of the pool's worker processes now: started and not yet exited (workers being
    /// let go included, until they exit). For monitoring; it changes as workers are replaced.
    pub fn worker_pids(&self) -> Vec<i32> {
        self.shared
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|link| link.pid)
            .collect()
    }

    /// Runs `function(args)` in a worker and waits for the result.
    pub fn apply<F: Target>(&self, function: F, args: F::Args) -> Result<F::Output> {
        self.check_not_in_callback()?;
        // With an idle worker at hand, this thread runs the round trip itself: two hand-offs
        // (here, worker, here) instead of four through the driver thread.
        // With a soft task timeout, the driver sends the signal: no worker is borrowed.
        let lent = match self.limits.soft_timeout {
            None => self.shared.lend(),
            Some(_) => None,
        };
        if let Some(link) = lent {
            let _give_back = lent::GiveBack(&self.shared, &link);
            return self.apply_on(&link, function, args);
        }
        self.apply_async(function, args).get()
    }

    /// One task on a borrowed worker, waited for by this thread.
    fn apply_on<F: Target>(
        &self,
        link: &Arc<Link>,
        _function: F,
        args: F::Args,
    ) -> Result<F::Output> {
        let payload = carrier::encode_args_chunk::<F>(vec![args])?;
        let header = TaskHeader {
            job: u64::MAX,
            chunk: 0,
            ticket: self.shared.ticket(),
            entry: F::NAME.to_string(),
            claim: 0,
        };
        // A job of its own no one can cancel.
        let result = lent::round_trip(&self.shared, link, header, payload, &|| false)?;
        // User code (a `Deserialize`) may panic: that fails this call, as on the driver thread.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            carrier::decode_outputs::<F>(result, 1)
        }))
        .unwrap_or_else(|payload| Err(reply::decoding_panicked(&*payload)));
        result::single(decoded?)
    }

    /// Runs `function(args)` in a worker; the result comes later.
    pub fn apply_async<F: Target>(&self, _function: F, args: F::Args) -> AsyncResult<F::Output> {
        let payload = match carrier::encode_args_chunk::<F>(vec![args]) {
            Ok(payload) => payload,
            Err(err) => return AsyncResult::failed(err),
        };
        let slot = Slot::new();
        let sink = Box::new(ApplySink {
            slot: slot.clone(),
            decode: carrier::decode_outputs::<F>,
        });
        let task = |job| {
            vec![Task {
                job,
                chunk: 0,
                entry: F::NAME,
                payload,
                queued: Instant::now(),
            }]
        };
        // On refusal the sink (and so the result) already holds the error.
        let _ = self.shared.submit(sink, task, false);
        self.result(slot).of_one_task()
    }

    /// Queues chunk `index` of the registered `job` of `entry`, just encoded.
    fn queue_chunk(
        &self,
        job: u64,
        entry: &'static str,
        index: u32,
        payload: Encoded,
    ) -> Result<()> {
        let task = Task {
            job,
            chunk: index,
            entry,
            payload,
            queued: Instant::now(),
        };
        self.shared.push(job, [task])
    }

    fn result<T>(&self, slot: Arc<Slot<T>>) -> AsyncResult<T> {
        AsyncResult::new(slot, Some(self.shared.clone()))
    }

    /// Blocking calls from a result callback would wait for the thread that runs them.
    fn check_not_in_callback(&self) -> Result<()> {
        if self.shared.in_driver() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "cannot wait for the pool in one of its result callbacks (they run on the pool's driver thread); \
                 submit with apply_async or map_async instead",
            ));
        }
        Ok(())
    }

    /// `function` over every item, in parallel; the results in input order. The input is split
    /// in chunks of `ceil(len / (4 * processes))` items (Python's default), one task each. An
    /// input whose `size_hint` gives its length (a range, a `Vec`, a `map` of either) is read
    /// as its chunks are encoded, and the workers start on the first chunk while the rest is
    /// read; any other input is collected first.
    ///
    /// Every chunk runs even when one fails; the error returned is then the first failure **in
    /// input order** (CPython returns the first to arrive).
    pub fn map<F: Target>(
        &self,
        function: F,
        items: impl IntoIterator<Item = F::Args>,
    ) -> Result<Vec<F::Output>> {
        self.check_not_in_callback()?;
        self.map_async(function, items).get()
    }

    /// [`map`](Self::map) with chunks of `chunksize` items (at least 1).
    pub fn map_chunked<F: Target>(
        &self,
        function: F,
        items: impl IntoIterator<Item = F::Args>,
        chunksize: usize,
    ) -> Result<Vec<F::Output>> {
        self.check_not_in_callback()?;
        self.map_async_chunked(function, items, chunksize).get()
    }

    /// [`map`](Self::map) without waiting: an [`AsyncResult`] of the whole list.
    pub fn map_async<F: Target>(
        &self,
        function: F,
        items: impl IntoIterator<Item = F::Args>,
    ) -> AsyncResult<Vec<F::Output>> {
        let items = items.into_iter();
        // An input that says its length (a range, a `Vec`, a `map` of either) is encoded as it
        // is read, with no list of its own.
        if let (len @ 1.., Some(upper)) = items.size_hint() {
            if len == upper {
                let chunksize = len.div_ceil(self.processes() * 4).max(1);
                return self.submit_map_iter(function, items, len, chunksize);
            }
        }
        let items = carrier::collect(items);
        let chunksize = items.len().div_ceil(self.processes() * 4).max(1);
        self.submit_map(function, items, chunksize, None)
    }

    /// [`map_async`](Self::map_async) with chunks of `chunksize` items (at least 1).
    pub fn map_async_chunked<F: Target>(
        &self,
        function: F,
        items: impl IntoIterator<Item = F::Args>,
        chunksize: usize,
    ) -> AsyncResult<Vec<F::Output>> {
        if chunksize < 1 {
            return AsyncResult::failed(Error::new(
                ErrorKind::InvalidInput,
                "chunksize must be at least 1",
            ));
        }
        let items = items.into_iter();
        match items.size_hint() {
            (len @ 1.., Some(upper)) if len == upper => {
                self.submit_map_iter(function, items, len, chunksize)
            }
            _ => self.submit_map(function, carrier::collect(items), chunksize, None),
        }
    }

    /// Python's `starmap`: `function(a, b)` for every tuple `(a, b)`. A function of several
    /// arguments already takes their tuple, so this is [`map`](Self::map) by another name.
    pub fn starmap<F: Target>(
        &self,
        function: F,
        items: impl IntoIterator<Item = F::Args>,
    ) -> Result<Vec<F::Output>> {
        self.map(function, items)
    }

    /// Python's `starmap_async`: [`map_async`](Self::map_async) by another name.
    pub fn starmap_async<F: Target>(
        &self,
        function: F,
        items: impl IntoIterator<Item = F::Args>,
    ) -> AsyncResult<Vec<F::Output>> {
        self.map_async(function, items)
    }

    /// [`map_async_chunked`](Self::map_async_chunked) (`chunksize` `None`: the default of
    /// [`map`](Self::map)) that calls `progress` as each chunk's result arrives, with the
    /// items done and the total (in the pool's driver thread: keep it short). For a progress
    /// bar of your own; the `progress` feature draws one (`multiproc::progress::bar`).
    pub fn map_async_progress<F: Target>(
        &self,
        function: F,
        items: impl IntoIterator<Item = F::Args>,
        chunksize: Option<usize>,
        progress: impl FnMut(Progress) + Send + 'static,
    ) -> AsyncResult<Vec<F::Output>> {
        let items = carrier::collect(items.into_iter());
        let chunksize = match chunksize {
            Some(0) => {
                return AsyncResult::failed(Error::new(
                    ErrorKind::InvalidInput,
                    "chunksize must be at least 1",
                ))
            }
            Some(n) => n,
            None => items.len().div_ceil(self.processes() * 4).max(1),
        };
        self.submit_map(function, items, chunksize, Some(Box::new(progress)))
    }

    fn submit_map<F: Target>(
        &self,
        _function: F,
        items: Vec<F::Args>,
        chunksize: usize,
        progress: Option<result::ProgressFn>,
    ) -> AsyncResult<Vec<F::Output>> {
        let slot = Slot::new();
        if items.is_empty() {
            slot.complete(Ok(Vec::new()));
            return self.result(slot);
        }
        let chunks = match chunk_count(items.len(), chunksize) {
            Ok(chunks) => chunks as usize,
            Err(err) => return AsyncResult::failed(err),
        };
        let decode = carrier::decode_outputs_into::<F>;
        let sizes = ChunkSizes::Even {
            chunksize,
            items: items.len(),
        };
        let mut sink = MapSink::new(slot.clone(), chunks, items.len(), sizes, decode);
        if let Some(progress) = progress {
            sink = sink.with_progress(chunksize, progress);
        }
        let sink = Box::new(sink);
        let Ok(job) = self.shared.submit(sink, |_| Vec::new(), false) else {
            return self.result(slot);
        };
        // Chunks are queued as they are encoded, so the workers start on the first at once.
        // The job is registered: a closed pool still runs it to the end.
        let mut forget = Forget(&self.shared, Some(job));
        let pushed = carrier::encode_args_chunks::<F>(items, chunksize, |index, payload| {
            self.queue_chunk(job, F::NAME, index, payload)
        });
        forget.1 = None;
        if let Err(err) = pushed {
            self.shared.forget(job);
            let mut sink =
                MapSink::<F::Output>::new(slot.clone(), 1, 0, ChunkSizes::none(), decode);
            jobs::Sink::fail(&mut sink, &err);
        }
        self.result(slot)
    }

    /// [`submit_map`](Self::submit_map) of an input that says it holds `len` items: chunks are
    /// encoded from it as it is read (one pass, no list of the items) and queued as they are
    /// encoded. The input's word is not trusted: when it ends early, the chunk that comes short
    /// (or empty, when it ends on a chunk's boundary) is the last, and the map has no chunk
    /// for the items it only claimed; when it goes on, the last chunk takes the rest.
    fn submit_map_iter<F: Target>(
        &self,
        _function: F,
        items: impl Iterator<Item = F::Args>,
        len: usize,
        chunksize: usize,
    ) -> AsyncResult<Vec<F::Output>> {
        let slot = Slot::new();
        let chunks = match chunk_count(len, chunksize) {
            Ok(chunks) => chunks as usize,
            Err(err) => return AsyncResult::failed(err),
        };
        let decode = carrier::decode_outputs_into::<F>;
        // The input's word is not trusted: each chunk's size is told as it is encoded, and
        // whether it is the last (the input may end early).
        let told = Arc::new(Mutex::new(Told::default()));
        let sizes = ChunkSizes::Told(told.clone());
        let sink = Box::new(MapSink::new(slot.clone(), chunks, len, sizes, decode));
        let Ok(job) = self.shared.submit(sink, |_| Vec::new(), false) else {
            return self.result(slot);
        };
        let mut forget = Forget(&self.shared, Some(job));
        let pushed = carrier::encode_args_iter::<F>(
            items,
            chunks,
            chunksize,
            |index, count, last, payload| {
                let mut told = told.lock().unwrap_or_else(PoisonError::into_inner);
                told.sizes.push(count);
                told.ended = last;
                drop(told);
                self.queue_chunk(job, F::NAME, index, payload)
            },
        );
        forget.1 = None;
        if let Err(err) = pushed {
            self.shared.forget(job);
            let mut sink =
                MapSink::<F::Output>::new(slot.clone(), 1, 0, ChunkSizes::none(), decode);
            jobs::Sink::fail(&mut sink, &err);
        }
        self.result(slot)
    }

    /// A lazy, ordered `map`: results come as an iterator in input order, and the input is
    /// consumed only as results are taken, with a bounded number of chunks in flight
    /// ([`Imap::buffersize`]). Chunks of 1 item unless [`Imap::chunksize`] says otherwise.
    pub fn imap<F: Target, I: IntoIterator<Item = F::Args>>(
        &self,
        function: F,
        items: I,
    ) -> Imap<'_, F, I::IntoIter> {
        Imap::new(self, function, items.into_iter(), true)
    }

    /// Like [`imap`](Self::imap), but results come in completion order.
    pub fn imap_unordered<F: Target, I: IntoIterator<Item = F::Args>>(
        &self,
        function: F,
        items: I,
    ) -> Imap<'_, F, I::IntoIter> {
        Imap::new(self, function, items.into_iter(), false)
    }

    /// Cancels every call that still has work in the queue (their results fail with
    /// [`ErrorKind::Cancelled`]); work a worker has finishes. The executor's
    /// `shutdown(cancel_futures)`. Returns how many calls were cancelled.
    pub(crate) fn cancel_queued(&self) -> usize {
        self.shared.cancel_queued()
    }

    /// No more work: already submitted work still runs, then the workers exit. Using the pool
    /// afterwards fails with [`ErrorKind::NotRunning`].
    pub fn close(&self) {
        let mut state = self.shared.lock();
        if state.lifecycle == Lifecycle::Running {
            state.lifecycle = Lifecycle::Closed;
        }
        drop(state);
        self.shared.wake();
    }

    /// Stops at once: workers are killed (SIGTERM, then SIGKILL), pending results fail with
    /// [`ErrorKind::Terminated`].
    pub fn terminate(&self) {
        self.shared.terminate();
    }

    /// Waits for the workers to exit, after [`close`](Self::close) or
    /// [`terminate`](Self::terminate); an [`ErrorKind::InvalidInput`] error before that.
    pub fn join(&self) -> Result<()> {
        self.check_not_in_callback()?;
        if self.shared.lock().lifecycle == Lifecycle::Running {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "pool is still running: call close() or terminate() before join()",
            ));
        }
        self.shared.joining();
        // The handle is joined under its lock: a second caller waits for the first one's join
        // to end (it used to find the handle gone and return at once, while the work went on).
        let mut driver = self.driver.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = driver.take() {
            handle.join().map_err(|_| {
                Error::new(ErrorKind::Panicked, "the pool's driver thread panicked")
            })?;
        }
        Ok(())
    }
}

/// Forgets a map's job if the input or an encoding panics while its chunks are queued: no
/// more chunks will come for it (left registered, a closed pool's `join` waited for them).
struct Forget<'a>(&'a Shared, Option<u64>);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Some(job) = self.1 {
            self.0.forget(job);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let running = self
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if running {
            self.terminate();
            let _ = self.join();
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Pool")
            .field("processes", &self.processes())
            .field("state", &state.lifecycle)
            .field("queued_tasks", &state.queue.len())
            .finish()
    }
}

/// The most workers a pool runs: more than any machine runs as one pool. A pool of more is
/// refused rather than tried (it would fork until the kernel refused, after reserving room
/// for each worker).
const MAX_PROCESSES: usize = 1 << 16;

/// `processes` if a pool can run that many workers: an [`ErrorKind::InvalidInput`] error for
/// none, or more than [`MAX_PROCESSES`].
fn worker_count(processes: usize) -> Result<usize> {
    if processes < 1 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "number of processes must be at least 1",
        ));
    }
    if processes > MAX_PROCESSES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("a pool runs at most {MAX_PROCESSES} processes, not {processes}"),
        ));
    }
    Ok(processes)
}

/// A pool's limit as the driver adds it to the time: at most a hundred years, which is never in
/// effect. `Duration::MAX` (a way to say never) added to an `Instant` overflows, which panicked
/// the driver thread.
fn within_a_century(limit: Duration) -> Duration {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
    limit.min(CENTURY)
}

/// The number of chunks of a map of `items` (as many as its input says it holds) in chunks of
/// `chunksize`, if a `u32` numbers them: an [`ErrorKind::InvalidInput`] error when there are
/// more.
fn chunk_count(items: usize, chunksize: usize) -> Result<u32> {
    let chunks = items.div_ceil(chunksize);
    u32::try_from(chunks).map_err(|_| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "an input of {items} items in chunks of {chunksize} makes {chunks} chunks, more \
                 than the {} a map can number: give a larger chunksize",
                u32::MAX
            ),
        )
    })
}
