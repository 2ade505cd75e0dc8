//! The settings of a self-managing pool, shared by its handle and its driver thread: the
//! number of workers it keeps ([`Pool::resize`](super::Pool::resize) changes it at run time),
//! the idle timeout after which a worker is let go, the memory limit above which a worker is
//! replaced after its task, and the soft task timeout (see `Driver::manage`).

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the pool's builder asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    /// A worker idle this long is let go; workers are started again as tasks come.
    pub idle_timeout: Option<Duration>,
    /// A task running this long is sent the soft timeout's signal.
    pub soft_timeout: Option<Duration>,
    /// A worker whose resident size is above this after a task is replaced.
    pub max_memory: Option<u64>,
}

/// The driver's side: the limits, the size asked for, and what it watches per worker.
pub(super) struct Managed {
    pub limits: Limits,
    /// The number of workers the pool keeps (at most, with an idle timeout).
    pub size: Arc<AtomicUsize>,
    /// Per worker (by pid): since when it has been idle, and its count of tasks done then (a
    /// caller of `apply` may have borrowed it meanwhile).
    pub idle: HashMap<i32, (Instant, u64)>,
    /// Per worker (by pid): the ticket of the task it runs, when that task's soft timeout
    /// comes, and whether the worker was signalled.
    pub soft: HashMap<i32, (u64, Instant, bool)>,
}

impl Managed {
    pub(super) fn new(limits: Limits, size: Arc<AtomicUsize>) -> Managed {
        Managed {
            limits,
            size,
            idle: HashMap::new(),
            soft: HashMap::new(),
        }
    }
}
