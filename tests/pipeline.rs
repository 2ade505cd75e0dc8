//! The pool's pipelining: a worker holds a second task in its ring behind the one it runs. A
//! worker killed, stopped or timed out fails only the task it runs; the one queued behind goes
//! to another worker; a cancel revokes a queued task before it runs. Under every start method.

mod common;

use std::time::Duration;

use common::{read_when_ready, scratch, write_line, Outcome, LONG};
use multiproc::{process, AsyncResult, ErrorKind, Pool, StartMethod};

/// Writes its pid to `dir/started-n`, sleeps `millis`, then writes `dir/ran-n`; returns `n`.
#[process]
fn marked_nap(dir: String, n: u64, millis: u64) -> u64 {
    write_line(
        &format!("{dir}/started-{n}"),
        &std::process::id().to_string(),
    );
    std::thread::sleep(Duration::from_millis(millis));
    write_line(&format!("{dir}/ran-{n}"), "1");
    n
}

#[process]
fn pid_of(_n: u64) -> u32 {
    std::process::id()
}

fn one_worker(m: StartMethod, timeout: Option<Duration>) -> Result<Pool, libtest_mimic::Failed> {
    let mut builder = Pool::builder().processes(1).start_method(m);
    if let Some(timeout) = timeout {
        builder = builder.task_timeout(timeout);
    }
    Ok(builder.build()?)
}

fn started(dir: &std::path::Path, n: u64) -> Result<i32, libtest_mimic::Failed> {
    Ok(read_when_ready(&dir.join(format!("started-{n}")), LONG)?.parse()?)
}

/// On `pool`'s one worker: a task that naps `millis` (marked in `dir` as it starts) and three
/// tasks behind it; once it runs, and the driver had time to put the next in the worker's
/// ring, its result, theirs, and the worker's pid.
#[allow(clippy::type_complexity)]
fn running_with_three_behind(
    pool: &Pool,
    dir: &std::path::Path,
    millis: u64,
) -> Result<(AsyncResult<u64>, Vec<AsyncResult<u32>>, i32), libtest_mimic::Failed> {
    let d = dir.to_string_lossy().to_string();
    let running = pool.apply_async(marked_nap, (d, 0, millis));
    let queued = (1..4).map(|n| pool.apply_async(pid_of, n)).collect();
    let pid = started(dir, 0)?;
    std::thread::sleep(Duration::from_millis(100));
    Ok((running, queued, pid))
}

/// A worker killed while it runs one task with two more behind it (the second in its ring):
/// only the running task fails; the others complete, on its replacement.
fn killed_with_tasks_queued(m: StartMethod) -> Outcome {
    let pool = one_worker(m, None)?;
    let dir = scratch("pipe-killed");
    let (running, queued, pid) = running_with_three_behind(&pool, &dir, 60_000)?;
    // SAFETY: a signal to the pool's worker, which runs the sleeping task.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    check_eq!(
        running.get_timeout(LONG).unwrap_err().kind(),
        ErrorKind::Died
    );
    for q in &queued {
        let other = q.get_timeout(LONG)?;
        check!(
            other as i32 != pid,
            "a queued task ran on the killed worker"
        );
    }
    check!(
        pool.apply(pid_of, 9)? as i32 != pid,
        "the killed worker answered"
    );
    Ok(())
}

/// A stopped worker (SIGSTOP) with tasks queued behind the one it runs, and a task timeout:
/// only the running task times out; the queued ones complete on the replacement. Then a task
/// that times out after the one before it finished (its time runs from that reply).
fn stopped_with_tasks_queued(m: StartMethod) -> Outcome {
    let pool = one_worker(m, Some(Duration::from_millis(1500)))?;
    let dir = scratch("pipe-stopped");
    let (running, queued, pid) = running_with_three_behind(&pool, &dir, 500)?;
    let d = dir.to_string_lossy().to_string();
    // SAFETY: a signal to the pool's worker, which runs the sleeping task.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let err = running.get_timeout(LONG).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Timeout);
    for q in &queued {
        check!(
            q.get_timeout(LONG)? as i32 != pid,
            "ran on the stopped worker"
        );
    }
    // Quick, slow (times out), quick: only the slow one fails.
    let first = pool.apply_async(marked_nap, (d.clone(), 10, 1));
    let slow = pool.apply_async(marked_nap, (d.clone(), 11, 60_000));
    let last = pool.apply_async(marked_nap, (d.clone(), 12, 1));
    check_eq!(first.get_timeout(LONG)?, 10);
    check_eq!(
        slow.get_timeout(LONG).unwrap_err().kind(),
        ErrorKind::Timeout
    );
    check_eq!(last.get_timeout(LONG)?, 12);
    Ok(())
}

/// Cancelling work whose task waits in a worker's ring: it is cancelled at once and never
/// runs; the task behind it does. With `cancel_and_kill` too: the worker, which runs another
/// job's task, is not killed.
fn cancel_queued_in_ring(m: StartMethod) -> Outcome {
    let pool = one_worker(m, None)?;
    let dir = scratch("pipe-cancel");
    let d = dir.to_string_lossy().to_string();
    let running = pool.apply_async(marked_nap, (d.clone(), 0, 400));
    let queued = pool.apply_async(marked_nap, (d.clone(), 1, 1));
    let killed = pool.apply_async(marked_nap, (d.clone(), 2, 1));
    let after = pool.apply_async(marked_nap, (d.clone(), 3, 1));
    let pid = started(&dir, 0)?;
    std::thread::sleep(Duration::from_millis(100));
    check!(queued.cancel(), "cancel of a queued task");
    check_eq!(
        queued.get_timeout(LONG).unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    check!(killed.cancel_and_kill(), "cancel_and_kill of a queued task");
    check_eq!(running.get_timeout(LONG)?, 0);
    check_eq!(after.get_timeout(LONG)?, 3);
    check!(!dir.join("ran-1").exists(), "a cancelled task ran");
    check!(!dir.join("ran-2").exists(), "a cancelled task ran");
    check!(
        !dir.join("started-1").exists() && !dir.join("started-2").exists(),
        "a cancelled task started"
    );
    check_eq!(pool.apply(pid_of, 0)? as i32, pid);
    Ok(())
}

/// Many small tasks on two workers, in order, with a worker killed now and then by a task:
/// every other task completes once.
fn many_small_tasks(m: StartMethod) -> Outcome {
    let pool = Pool::builder().processes(2).start_method(m).build()?;
    let results: Vec<_> = (0..2000u64).map(|n| pool.apply_async(pid_of, n)).collect();
    let mut pids = std::collections::HashSet::new();
    for r in results {
        pids.insert(r.get_timeout(LONG)?);
    }
    check!(!pids.is_empty(), "no result");
    let squares = pool.map(pid_of, 0..10_000u64)?;
    check_eq!(squares.len(), 10_000);
    Ok(())
}

fn main() {
    let trials = trials!(each_method:
        killed_with_tasks_queued,
        stopped_with_tasks_queued,
        cancel_queued_in_ring,
        many_small_tasks,
    );
    common::run(trials);
}
