//! `Executor`, Python's `ProcessPoolExecutor`, under every start method: every method of the
//! executor and of its `TaskFuture`s, cancel while queued versus while running, `as_completed`
//! order and timeout, each `wait` mode with and without a timeout, `shutdown` with and without
//! `cancel_futures`, and a worker killed mid-task (that task alone fails).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{read_when_ready, scratch, Outcome, LONG};
use multiproc::executor::{as_completed, wait, ReturnWhen};
use multiproc::{process, ErrorKind, Executor, Progress, StartMethod, TaskFuture};

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[process]
fn nap(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

#[process]
fn fails_after(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    panic!("deliberate panic: fails after {millis} ms");
}

#[process]
fn pid_of(_n: u64) -> u32 {
    std::process::id()
}

#[process]
fn pid_after(millis: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(millis));
    std::process::id()
}

/// Writes `dir/<n>` as it starts, then sleeps `millis`.
#[process]
fn marked_nap(dir: String, n: u64, millis: u64) -> u64 {
    common::write_line(&format!("{dir}/{n}"), &std::process::id().to_string());
    std::thread::sleep(Duration::from_millis(millis));
    n
}

/// Kills its own worker on item `bad`.
#[process]
fn dies_on(n: u64, bad: u64) -> u64 {
    if n == bad {
        // SAFETY: raising a signal in our own process.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
    n
}

static INITIALIZED: AtomicU64 = AtomicU64::new(0);

#[process]
fn set_initialized(value: u64) {
    INITIALIZED.store(value, Ordering::SeqCst);
}

#[process]
fn initialized(_n: u64) -> u64 {
    INITIALIZED.load(Ordering::SeqCst)
}

fn executor(m: StartMethod, workers: usize) -> Result<Executor, libtest_mimic::Failed> {
    Executor::builder()
        .max_workers(workers)
        .start_method(m)
        .build()
        .map_err(|err| format!("executor: {err}").into())
}

/// Waits (bounded) until the task of item `n` started.
fn started(dir: &Path, n: u64) -> Outcome {
    read_when_ready(&dir.join(n.to_string()), LONG).map(|_| ())
}

fn ran(dir: &Path, n: u64) -> bool {
    dir.join(n.to_string()).exists()
}

fn submit_and_result(m: StartMethod) -> Outcome {
    let ex = executor(m, 2)?;
    let f = ex.submit(square, 7);
    check_eq!(f.result()?, 49);
    check!(f.done() && !f.running() && !f.cancelled(), "{f:?}");
    // The value is taken once.
    check_eq!(f.result().unwrap_err().kind(), ErrorKind::InvalidInput);
    check!(f.exception()?.is_none(), "exception of a success");

    let slow = ex.submit(nap, 400);
    check_eq!(
        slow.result_timeout(Duration::from_millis(20))
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    check_eq!(
        slow.exception_timeout(Duration::from_millis(1))
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    check!(!slow.done(), "a 400 ms nap done at once");
    check_eq!(slow.result_timeout(LONG)?, 400);

    let failing = ex.submit(fails_after, 10);
    let err = failing.exception()?.ok_or("no exception")?;
    check_eq!(err.kind(), ErrorKind::Panicked);
    // An error is returned each time.
    check_eq!(failing.result().unwrap_err().kind(), ErrorKind::Panicked);
    check_eq!(failing.result().unwrap_err().kind(), ErrorKind::Panicked);

    // Done callbacks: registered before the end (called by the driver thread), and after (at
    // once, here).
    let (tx, rx) = mpsc::channel();
    let before = ex.submit(nap, 100);
    let tx2 = tx.clone();
    before.add_done_callback(move |outcome| {
        let _ = tx2.send(("before", outcome.copied().map_err(|e| e.kind())));
    });
    let failing2 = ex.submit(fails_after, 1);
    let tx3 = tx.clone();
    failing2.add_done_callback(move |outcome| {
        let _ = tx3.send(("failing", outcome.copied().map_err(|e| e.kind())));
    });
    check_eq!(before.result()?, 100);
    before.add_done_callback(move |outcome| {
        let _ = tx.send(("after", outcome.copied().map_err(|e| e.kind())));
    });
    let mut got: Vec<_> = (0..3)
        .map(|_| rx.recv_timeout(LONG))
        .collect::<Result<_, _>>()?;
    got.sort_by_key(|(name, _)| *name);
    check_eq!(
        got,
        vec![
            ("after", Err(ErrorKind::InvalidInput)), // its value was taken already
            ("before", Ok(100)),
            ("failing", Err(ErrorKind::Panicked)),
        ]
    );

    // A `std::future::Future` too.
    let f = ex.submit(square, 9);
    check_eq!(futures::executor::block_on(f)?, 81);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let f = ex.submit(nap, 50);
    check_eq!(tokio.block_on(f)?, 50);
    drop(tokio);

    // Builder options reach the pool.
    drop(ex);
    let ex = Executor::builder()
        .max_workers(1)
        .max_tasks_per_child(1)
        .initializer(set_initialized, 42)
        .start_method(m)
        .build()?;
    let pids: Vec<u32> = (0..3)
        .map(|n| ex.submit(pid_of, n).result())
        .collect::<Result<_, _>>()?;
    check!(
        pids[0] != pids[1] && pids[1] != pids[2],
        "max_tasks_per_child(1) kept a worker: {pids:?}"
    );
    check_eq!(ex.submit(initialized, 0).result()?, 42);
    Ok(())
}

fn cancel_while_queued_or_running(m: StartMethod) -> Outcome {
    let ex = executor(m, 1)?;
    let dir = scratch("exec-cancel");
    let d = dir.to_string_lossy().to_string();
    let running = ex.submit(marked_nap, (d.clone(), 0, 300));
    let queued = ex.submit(marked_nap, (d.clone(), 1, 10));
    let after = ex.submit(marked_nap, (d.clone(), 2, 10));
    started(&dir, 0)?;
    check!(
        running.running(),
        "the first task is not running: {running:?}"
    );
    check!(
        !queued.running() && !queued.done(),
        "the second task is not queued: {queued:?}"
    );
    let (tx, rx) = mpsc::channel();
    queued.add_done_callback(move |outcome| {
        let _ = tx.send(outcome.err().map(|e| e.kind()));
    });
    // Queued: cancelled, at once; again is still true.
    check!(queued.cancel(), "cancel of a queued task");
    check!(queued.cancel(), "a second cancel of a cancelled task");
    check!(queued.cancelled() && queued.done(), "{queued:?}");
    check_eq!(rx.recv_timeout(LONG)?, Some(ErrorKind::Cancelled));
    check_eq!(queued.result().unwrap_err().kind(), ErrorKind::Cancelled);
    check_eq!(queued.exception().unwrap_err().kind(), ErrorKind::Cancelled);
    // Running: not cancelled, it finishes.
    check!(!running.cancel(), "cancel of a running task");
    check!(!running.cancelled(), "{running:?}");
    check_eq!(running.result()?, 0);
    // Done: not cancelled either.
    check_eq!(after.result()?, 2);
    check!(!after.cancel(), "cancel of a finished task");
    // The cancelled one never ran; the one behind it did.
    check!(!ran(&dir, 1), "a cancelled task ran");
    check!(ran(&dir, 2), "the task after the cancelled one did not run");
    Ok(())
}

fn as_completed_order(m: StartMethod) -> Outcome {
    // One worker: the tasks end in the order submitted, whatever the order given.
    let ex = executor(m, 1)?;
    let fs: Vec<TaskFuture<u64>> = [30, 20, 10].map(|ms| ex.submit(nap, ms)).into();
    let given = [&fs[2], &fs[1], &fs[0]];
    let order: Vec<u64> = as_completed(given, None)
        .map(|f| f.and_then(|f| f.result()))
        .collect::<Result<_, _>>()?;
    check_eq!(order, vec![30, 20, 10]);
    // All done already: in the order given.
    let fs: Vec<TaskFuture<u64>> = (0..5).map(|n| ex.submit(square, n)).collect();
    for f in &fs {
        f.exception()?;
    }
    let order: Vec<u64> = as_completed(fs.iter().rev(), Some(LONG))
        .map(|f| f.and_then(|f| f.result()))
        .collect::<Result<_, _>>()?;
    check_eq!(order, vec![16, 9, 4, 1, 0]);
    // A timeout: what is done comes, then the timeout error, then the end.
    let fs = [ex.submit(nap, 10), ex.submit(nap, 3_000)];
    let mut it = as_completed(&fs, Some(Duration::from_millis(500)));
    check_eq!(it.next().ok_or("none")??.result()?, 10);
    check_eq!(
        it.next().ok_or("none")?.err().map(|e| e.kind()),
        Some(ErrorKind::Timeout)
    );
    check!(
        it.next().is_none(),
        "as_completed goes on after its timeout"
    );
    check!(!fs[1].done(), "the 3 s nap is done");
    ex.pool().terminate();
    let ex = executor(m, 1)?;
    // The same future given twice is yielded once, as Python's (it takes a set).
    let fs = [ex.submit(square, 7), ex.submit(square, 8)];
    let order: Vec<u64> = as_completed([&fs[0], &fs[1], &fs[0], &fs[1]], Some(LONG))
        .map(|f| f.and_then(|f| f.result()))
        .collect::<Result<_, _>>()?;
    check_eq!(order, vec![49, 64]);
    ex.pool().terminate();
    Ok(())
}

fn wait_modes(m: StartMethod) -> Outcome {
    let ex = executor(m, 2)?;
    let kinds = |fs: &[&TaskFuture<u64>]| fs.iter().map(|f| f.done()).collect::<Vec<_>>();
    // FirstCompleted, no timeout: the short one.
    let fs = [ex.submit(nap, 10_000), ex.submit(nap, 10)];
    let r = wait(&fs, ReturnWhen::FirstCompleted, None);
    check!(
        r.done.len() == 1 && std::ptr::eq(r.done[0], &fs[1]),
        "{r:?}"
    );
    check_eq!(kinds(&r.not_done), vec![false]);
    // FirstCompleted, with a timeout: the long one is still running.
    let r = wait(
        &fs[..1],
        ReturnWhen::FirstCompleted,
        Some(Duration::from_millis(100)),
    );
    check!(r.done.is_empty() && r.not_done.len() == 1, "{r:?}");
    ex.pool().terminate();

    let ex = executor(m, 2)?;
    // FirstException, no timeout: the failure, the long one not done.
    let fs = [ex.submit(nap, 10_000), ex.submit(fails_after, 100)];
    let r = wait(&fs, ReturnWhen::FirstException, None);
    check!(
        r.done.len() == 1 && std::ptr::eq(r.done[0], &fs[1]),
        "{r:?}"
    );
    // FirstException, with a timeout: nothing fails in time.
    let r = wait(
        &fs[..1],
        ReturnWhen::FirstException,
        Some(Duration::from_millis(100)),
    );
    check!(r.done.is_empty(), "{r:?}");
    ex.pool().terminate();

    let ex = executor(m, 1)?;
    // FirstException without a failure is AllCompleted; a cancelled task is no failure.
    let fs = [ex.submit(nap, 200), ex.submit(nap, 10), ex.submit(nap, 20)];
    check!(fs[1].cancel(), "cancel of a queued task");
    let r = wait(&fs, ReturnWhen::FirstException, Some(LONG));
    check_eq!(r.done.len(), 3);
    check_eq!(fs[0].result()?, 200);
    check_eq!(fs[2].result()?, 20);
    // AllCompleted, no timeout.
    let fs = [ex.submit(nap, 50), ex.submit(square, 3)];
    let r = wait(&fs, ReturnWhen::AllCompleted, None);
    check!(r.done.len() == 2 && r.not_done.is_empty(), "{r:?}");
    // AllCompleted, with a timeout: the short one only.
    let fs = [ex.submit(nap, 10), ex.submit(nap, 10_000)];
    let r = wait(
        &fs,
        ReturnWhen::AllCompleted,
        Some(Duration::from_millis(1_000)),
    );
    check!(
        r.done.len() == 1 && std::ptr::eq(r.done[0], &fs[0]),
        "{r:?}"
    );
    check!(std::ptr::eq(r.not_done[0], &fs[1]), "{r:?}");
    // Nothing to wait for.
    let none: [TaskFuture<u64>; 0] = [];
    let r = wait(&none, ReturnWhen::AllCompleted, None);
    check!(r.done.is_empty() && r.not_done.is_empty(), "{r:?}");
    ex.pool().terminate();

    let ex = executor(m, 2)?;
    // The same future given twice counts once, in `done` or `not_done`, as Python's (a set).
    let fs = [ex.submit(nap, 10), ex.submit(nap, 10_000)];
    let given = [&fs[0], &fs[1], &fs[0], &fs[1]];
    let r = wait(given, ReturnWhen::FirstCompleted, None);
    check!(
        r.done.len() == 1 && std::ptr::eq(r.done[0], &fs[0]),
        "{r:?}"
    );
    check!(
        r.not_done.len() == 1 && std::ptr::eq(r.not_done[0], &fs[1]),
        "{r:?}"
    );
    ex.pool().terminate();
    Ok(())
}

fn shutdown_modes(m: StartMethod) -> Outcome {
    // Without cancel_futures: everything submitted runs, then the workers exit.
    let ex = executor(m, 1)?;
    let fs: Vec<_> = (0..4).map(|_| ex.submit(nap, 50)).collect();
    ex.shutdown(true, false)?;
    for f in &fs {
        check!(f.done(), "shutdown(wait) returned before {f:?}");
        check_eq!(f.result()?, 50);
    }
    let late = ex.submit(square, 2);
    check_eq!(late.result().unwrap_err().kind(), ErrorKind::NotRunning);
    ex.shutdown(true, false)?;

    // With cancel_futures: the running task finishes, the queued ones are cancelled.
    let ex = executor(m, 1)?;
    let dir = scratch("exec-shutdown");
    let d = dir.to_string_lossy().to_string();
    let fs: Vec<_> = (0..4)
        .map(|n| ex.submit(marked_nap, (d.clone(), n, 200)))
        .collect();
    started(&dir, 0)?;
    ex.shutdown(true, true)?;
    check_eq!(fs[0].result()?, 0);
    for (n, f) in fs.iter().enumerate().skip(1) {
        check!(f.cancelled(), "task {n} was not cancelled: {f:?}");
        check!(!ran(&dir, n as u64), "cancelled task {n} ran");
    }

    // Without wait: returns at once; the work goes on, and the drop waits for it.
    let ex = executor(m, 1)?;
    let f = ex.submit(nap, 300);
    ex.shutdown(false, false)?;
    check!(!f.done(), "shutdown(wait=false) waited");
    drop(ex);
    check!(f.done(), "the drop did not wait for the work");
    check_eq!(f.result()?, 300);
    Ok(())
}

fn worker_killed_mid_task(m: StartMethod) -> Outcome {
    let ex = executor(m, 2)?;
    let fs: Vec<_> = (0..10).map(|n| ex.submit(dies_on, (n, 3))).collect();
    for (n, f) in fs.iter().enumerate() {
        match f.result() {
            Ok(v) => check_eq!(v, n as u64),
            Err(err) => {
                check_eq!(n, 3);
                check_eq!(err.kind(), ErrorKind::Died);
            }
        }
    }
    check_eq!(fs[3].exception()?.map(|e| e.kind()), Some(ErrorKind::Died));
    // The executor goes on, with its worker replaced (Python's would be broken).
    let again: Vec<u64> = (0..4)
        .map(|n| ex.submit(square, n).result())
        .collect::<Result<_, _>>()?;
    check_eq!(again, vec![0, 1, 4, 9]);
    Ok(())
}

/// An executor of 2 workers, both ready, whose driver thread is held in a done callback
/// until the returned sender sends (or `LONG` passes): the driver can dispatch nothing
/// meanwhile, and both workers are idle.
fn driver_held(
    m: StartMethod,
    task_timeout: Duration,
) -> Result<(Executor, mpsc::Sender<()>), libtest_mimic::Failed> {
    let ex = Executor::builder()
        .max_workers(2)
        .start_method(m)
        .task_timeout(task_timeout)
        .build()?;
    // Both workers ready: two naps at once ran on two workers.
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let fs: Vec<_> = (0..2).map(|_| ex.submit(pid_after, 50)).collect();
        let pids: Vec<u32> = fs
            .iter()
            .map(TaskFuture::result)
            .collect::<Result<_, _>>()?;
        if pids[0] != pids[1] {
            break;
        }
        check!(
            std::time::Instant::now() < deadline,
            "2 workers never served at once"
        );
    }
    let (release, held) = mpsc::channel::<()>();
    let (entered, in_callback) = mpsc::channel::<bool>();
    // A nap outlasts the registration of its callback, which then runs on the driver thread.
    let hold = ex.submit(nap, 100);
    hold.add_done_callback(move |_| {
        let on_driver = std::thread::current().name() == Some("multiproc-pool");
        let _ = entered.send(on_driver);
        if on_driver {
            let _ = held.recv_timeout(LONG);
        }
    });
    check!(
        in_callback.recv_timeout(LONG)?,
        "the callback ran on the test's thread"
    );
    Ok((ex, release))
}

/// `result()` of a task still queued runs it on an idle worker from the waiting thread: it
/// completes while the driver thread is held (in a done callback), and a panic, a dead worker
/// and a task timeout are that task's errors there as anywhere. A task with a done callback
/// is left to the driver, whose thread runs its callbacks.
fn result_runs_a_queued_task_here(m: StartMethod) -> Outcome {
    let (ex, release) = driver_held(m, Duration::from_millis(500))?;
    let waited = |f: TaskFuture<u64>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f.result());
        });
        rx.recv_timeout(LONG)
    };
    check_eq!(
        waited(ex.submit(square, 12))?.map_err(|e| e.kind()),
        Ok(144)
    );
    let err = waited(ex.submit(fails_after, 1))?.unwrap_err();
    check_eq!(err.kind(), ErrorKind::Panicked);
    check!(
        common::chain(&err).contains("fails after 1 ms"),
        "{}",
        common::chain(&err)
    );
    check_eq!(
        waited(ex.submit(dies_on, (5, 5)))?.map_err(|e| e.kind()),
        Err(ErrorKind::Died)
    );
    check_eq!(
        waited(ex.submit(nap, 10_000))?.map_err(|e| e.kind()),
        Err(ErrorKind::Timeout)
    );
    // With a callback, the driver completes it: not while it is held.
    let called = ex.submit(square, 3);
    let (tx, rx) = mpsc::channel();
    called.add_done_callback(move |outcome| {
        let _ = tx.send(outcome.copied().map_err(|e| e.kind()));
    });
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = done_tx.send(called.result().map_err(|e| e.kind()));
    });
    check!(
        done_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a task with a done callback completed while the driver was held"
    );
    release.send(())?;
    check_eq!(rx.recv_timeout(LONG)?, Ok(9));
    check_eq!(done_rx.recv_timeout(LONG)?, Ok(9));
    let _ = waiter.join();
    // The workers that died or timed out were replaced.
    let again: Vec<u64> = (0..4)
        .map(|n| ex.submit(square, n).result())
        .collect::<Result<_, _>>()?;
    check_eq!(again, vec![0, 1, 4, 9]);
    Ok(())
}

/// A task its waiter runs on a borrowed worker (the driver held, as above) can still be
/// cancelled: `cancel_and_kill` kills its worker and the waiter gets `Cancelled` at once; and
/// `join` after `close` waits for such a task.
fn cancel_a_task_its_waiter_runs(m: StartMethod) -> Outcome {
    let dir = scratch("cancel-borrowed");
    let path = dir.to_string_lossy().into_owned();
    let (ex, release) = driver_held(m, LONG)?;
    let pool = ex.pool();
    let running = pool.apply_async(marked_nap, (path.clone(), 1, 20_000));
    std::thread::scope(|scope| -> Outcome {
        let waiter = scope.spawn(|| running.wait());
        started(&dir, 1)?;
        check!(
            running.cancel_and_kill(),
            "cancel_and_kill of a running task refused"
        );
        let begun = std::time::Instant::now();
        let _ = waiter.join();
        check!(begun.elapsed() < LONG, "the waiter outlived the kill");
        Ok(())
    })?;
    check_eq!(
        running.get_timeout(LONG).map_err(|e| e.kind()),
        Err(ErrorKind::Cancelled)
    );
    // Closed and joined while a waiter runs a task: `join` returns after the task's end.
    let last = pool.apply_async(marked_nap, (path, 2, 300));
    std::thread::scope(|scope| -> Outcome {
        let waiter = scope.spawn(|| last.wait());
        started(&dir, 2)?;
        release.send(())?;
        pool.close();
        pool.join()?;
        check!(last.ready(), "join returned before a borrowed task ended");
        let _ = waiter.join();
        Ok(())
    })?;
    check_eq!(last.get_timeout(LONG)?, 2);
    Ok(())
}

fn map_lazy_chunked_timeout(m: StartMethod) -> Outcome {
    let ex = executor(m, 2)?;
    let squares: Vec<u64> = ex.map(square, 0..100).collect::<Result<_, _>>()?;
    check_eq!(squares, (0..100).map(|n| n * n).collect::<Vec<u64>>());
    let chunked: Vec<u64> = ex
        .map(square, 0..100)
        .chunksize(7)
        .collect::<Result<_, _>>()?;
    check_eq!(chunked, squares);
    // Lazy over its input: a few items read ahead of the results taken, not all.
    let read = Arc::new(AtomicUsize::new(0));
    let counted = read.clone();
    let input = (0..1_000_000u64).inspect(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let mut it = ex.map(square, input);
    check_eq!(it.next().ok_or("none")??, 0);
    let ahead = read.load(Ordering::SeqCst);
    check!(ahead <= 16, "map read {ahead} items for the first result");
    drop(it);
    // An overall timeout: what is ready in time, then a timeout error, then the end.
    let mut it = ex
        .map(nap, [10, 5_000, 10])
        .timeout(Duration::from_millis(800));
    check_eq!(it.next().ok_or("none")??, 10);
    check_eq!(
        it.next().ok_or("none")?.err().map(|e| e.kind()),
        Some(ErrorKind::Timeout)
    );
    check!(it.next().is_none(), "map goes on after its timeout");
    drop(it);
    ex.pool().terminate();
    Ok(())
}

fn progress_callbacks(m: StartMethod) -> Outcome {
    let ex = executor(m, 2)?;
    // The executor's map (an imap): once per chunk taken, the total once the input is read.
    let seen = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let record = seen.clone();
    let values: Vec<u64> = ex
        .map(square, 0..50)
        .chunksize(5)
        .on_progress(move |p| record.lock().unwrap().push(p))
        .collect::<Result<_, _>>()?;
    check_eq!(values, (0..50).map(|n| n * n).collect::<Vec<u64>>());
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let done: Vec<u64> = seen.iter().map(|p| p.done).collect();
    check_eq!(done, (1..=10).map(|c| c * 5).collect::<Vec<u64>>());
    check!(seen.iter().all(|p| p.known >= p.done), "{seen:?}");
    let last = seen.last().ok_or("no progress")?;
    check_eq!(last.total, Some(50));
    // The pool's map: once per chunk as it arrives (in the driver thread), total known.
    let seen = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let record = seen.clone();
    let squares = ex
        .pool()
        .map_async_progress(square, 0..47, Some(5), move |p| {
            record.lock().unwrap().push(p)
        })
        .get()?;
    check_eq!(squares, (0..47).map(|n| n * n).collect::<Vec<u64>>());
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    // Chunks come in any order: 9 of 5 items and one of 2, counted up to 47.
    let done: Vec<u64> = seen.iter().map(|p| p.done).collect();
    let mut steps: Vec<u64> = done
        .iter()
        .scan(0, |before, &d| Some(d - std::mem::replace(before, d)))
        .collect();
    steps.sort();
    let mut expected = vec![2];
    expected.extend([5; 9]);
    check_eq!(steps, expected);
    check_eq!(done.last().copied(), Some(47));
    check!(seen.iter().all(|p| p.total == Some(47)), "{seen:?}");
    Ok(())
}

/// In a child (so that a deadlock fails the trial instead of hanging the test process): one
/// of the done-callback scenarios below, by `case`, on an executor of `method`. Panics with
/// what went wrong; an executor whose driver thread is stuck is leaked, not dropped (its drop
/// would wait for the driver).
#[process]
fn done_callback_case(method: String, case: u8) {
    let method: StartMethod = method.parse().expect("method");
    let ex = Executor::builder()
        .max_workers(2)
        .start_method(method)
        .build()
        .expect("executor");
    let outcome = match case {
        0 => callback_adds_a_callback(&ex),
        1 => callback_on_a_done_future_uses_it(&ex),
        2 => callback_sees_its_future_done(&ex),
        3 => unbounded_waits_in_a_callback(&ex),
        4 => awaits_in_a_callback(&ex, method),
        _ => Err(format!("no case {case}")),
    };
    // The executor still runs tasks once the callbacks are over.
    let outcome = outcome.and_then(|()| match ex.submit(square, 2).result_timeout(CHILD_WAIT) {
        Ok(4) => Ok(()),
        other => Err(format!("a task after the callbacks: {other:?}")),
    });
    if let Err(err) = outcome {
        std::mem::forget(ex);
        panic!("{err}");
    }
}

/// The bound of each wait in [`done_callback_case`], below the parent's [`LONG`].
const CHILD_WAIT: Duration = Duration::from_secs(20);

/// A callback that adds a callback to its own future (Python allows it: the second runs too).
fn callback_adds_a_callback(ex: &Executor) -> Result<(), String> {
    let f = Arc::new(ex.submit(nap, 300));
    let (tx, rx) = mpsc::channel();
    let g = f.clone();
    f.add_done_callback(move |outcome| {
        let inner = tx.clone();
        g.add_done_callback(move |outcome| {
            let _ = inner.send(("inner", outcome.copied().map_err(|e| e.kind())));
        });
        let _ = tx.send(("outer", outcome.copied().map_err(|e| e.kind())));
    });
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(rx.recv_timeout(CHILD_WAIT).map_err(|_| {
            format!("a callback added in a callback: only {got:?} ran (the driver is stuck?)")
        })?);
    }
    got.sort_by_key(|(name, _)| *name);
    if got != [("inner", Ok(300)), ("outer", Ok(300))] {
        return Err(format!("callbacks ran with {got:?}"));
    }
    match f.result_timeout(CHILD_WAIT) {
        Ok(300) => Ok(()),
        other => Err(format!("the result after its callbacks: {other:?}")),
    }
}

/// A callback added to a finished future runs at once, and may ask that future anything; and
/// the "last one done" pattern: of callbacks that each look whether every future is done, the
/// last one's sees them all done. Registered on another thread, so that a deadlock there is
/// seen as a timeout here.
fn callback_on_a_done_future_uses_it(ex: &Executor) -> Result<(), String> {
    let f = Arc::new(ex.submit(square, 3));
    match f.exception_timeout(CHILD_WAIT) {
        Ok(None) => {}
        other => return Err(format!("exception of a square: {other:?}")),
    }
    let (tx, rx) = mpsc::channel();
    let (g, registrar) = (f.clone(), f.clone());
    std::thread::spawn(move || {
        registrar.add_done_callback(move |outcome| {
            let seen = (
                outcome.copied().map_err(|e| e.kind()),
                g.done(),
                g.cancelled(),
                g.running(),
                format!("{g:?}"),
                g.exception()
                    .map(|e| e.map(|e| e.kind()))
                    .map_err(|e| e.kind()),
                // Its value is this callback's argument, lent to it: not taken from under it.
                g.result().map_err(|e| e.kind()),
            );
            let _ = tx.send(seen);
        });
    });
    let seen = rx
        .recv_timeout(CHILD_WAIT)
        .map_err(|_| "a callback on a done future that touches it never ended".to_string())?;
    let expected = (
        Ok(9),
        true,
        false,
        false,
        "TaskFuture { state: \"finished\" }".to_string(),
        Ok(None),
        Err(ErrorKind::InvalidInput),
    );
    if seen != expected {
        return Err(format!("the callback saw {seen:?}, expected {expected:?}"));
    }
    // The value is still there for the future's owner.
    match f.result_timeout(CHILD_WAIT) {
        Ok(9) => {}
        other => return Err(format!("the result after the callback: {other:?}")),
    }

    let fs: Arc<Vec<TaskFuture<u64>>> = Arc::new((0..6).map(|n| ex.submit(nap, 50 * n)).collect());
    let (tx, rx) = mpsc::channel();
    let all = fs.clone();
    std::thread::spawn(move || {
        for f in all.iter() {
            let (all, tx) = (all.clone(), tx.clone());
            f.add_done_callback(move |_| {
                let _ = tx.send(all.iter().all(TaskFuture::done));
            });
        }
    });
    let seen: Vec<bool> = (0..6)
        .map(|_| rx.recv_timeout(CHILD_WAIT))
        .collect::<Result<_, _>>()
        .map_err(|_| "the callbacks of six naps did not all run".to_string())?;
    if !seen.contains(&true) {
        return Err(format!("no callback saw all six done: {seen:?}"));
    }
    Ok(())
}

/// A callback sees its future done (and cancelled, for a cancel) as Python's does, and so do
/// `wait` and `done()` elsewhere while it runs; its value is taken once it returns (`result()`
/// waits for it, an `.await` is woken by it).
fn callback_sees_its_future_done(ex: &Executor) -> Result<(), String> {
    type Seen = (&'static str, bool, bool, bool);
    let (tx, rx) = mpsc::channel::<Seen>();
    let seen = |tx: &mpsc::Sender<Seen>, name: &'static str, f: &Arc<TaskFuture<u64>>| {
        let (tx, g) = (tx.clone(), f.clone());
        move |_: Result<&u64, &multiproc::Error>| {
            let on_driver = std::thread::current().name() == Some("multiproc-pool");
            let _ = tx.send((name, g.done(), g.cancelled(), on_driver));
        }
    };
    // Completed by the driver thread, the callback registered before (a nap outlasts that).
    let f = Arc::new(ex.submit(nap, 300));
    f.add_done_callback(seen(&tx, "finished", &f));
    check_seen(rx.recv_timeout(CHILD_WAIT), ("finished", true, false, true))?;
    // Cancelled by this thread while queued behind four naps (on two workers): the callback
    // runs here, in `cancel`.
    let busy: Vec<_> = (0..4).map(|_| ex.submit(nap, 500)).collect();
    let queued = Arc::new(ex.submit(nap, 10));
    queued.add_done_callback(seen(&tx, "cancelled", &queued));
    if !queued.cancel() {
        return Err("cancel of a queued task refused".into());
    }
    check_seen(
        rx.recv_timeout(CHILD_WAIT),
        ("cancelled", true, true, false),
    )?;
    drop(busy);

    // Held in its callback: done for everyone meanwhile (`wait`, `done()`); `result()` gets
    // the value once the callback returns.
    let (f, release) = held_in_callback(ex)?;
    let r = wait([&*f], ReturnWhen::AllCompleted, Some(CHILD_WAIT));
    if !r.not_done.is_empty() || !f.done() {
        return Err("not done for `wait` while its callback runs".into());
    }
    let (got_tx, got) = mpsc::channel();
    let waiter = f.clone();
    std::thread::spawn(move || {
        let _ = got_tx.send(waiter.result().map_err(|e| e.kind()));
    });
    if let Ok(early) = got.recv_timeout(Duration::from_millis(300)) {
        return Err(format!(
            "`result()` gave {early:?} while the callback still ran"
        ));
    }
    let _ = release.send(());
    match got.recv_timeout(CHILD_WAIT) {
        Ok(Ok(300)) => {}
        other => return Err(format!("`result()` after the callback: {other:?}")),
    }
    // The same for an `.await`: woken once the callback returns.
    let (f, release) = held_in_callback(ex)?;
    let f = Arc::into_inner(f).ok_or("the future is still shared")?;
    let (got_tx, got) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = got_tx.send(futures::executor::block_on(f).map_err(|e| e.kind()));
    });
    if let Ok(early) = got.recv_timeout(Duration::from_millis(300)) {
        return Err(format!(
            "`.await` gave {early:?} while the callback still ran"
        ));
    }
    let _ = release.send(());
    match got.recv_timeout(CHILD_WAIT) {
        Ok(Ok(300)) => Ok(()),
        other => Err(format!("`.await` after the callback: {other:?}")),
    }
}

/// A 300 ms nap whose done callback holds the driver thread until the returned sender sends
/// (or [`CHILD_WAIT`] passes), once it is in that callback.
type Held = (Arc<TaskFuture<u64>>, mpsc::Sender<()>);
fn held_in_callback(ex: &Executor) -> Result<Held, String> {
    let (release, held) = mpsc::channel::<()>();
    let (entered, in_callback) = mpsc::channel::<bool>();
    // A nap outlasts the registration of its callback, which then runs on the driver thread.
    let f = Arc::new(ex.submit(nap, 300));
    f.add_done_callback(move |_| {
        let on_driver = std::thread::current().name() == Some("multiproc-pool");
        let _ = entered.send(on_driver);
        if on_driver {
            let _ = held.recv_timeout(CHILD_WAIT);
        }
    });
    match in_callback.recv_timeout(CHILD_WAIT) {
        Ok(true) => Ok((f, release)),
        Ok(false) => Err("the callback ran on the test's thread".into()),
        Err(_) => Err("the callback never ran".into()),
    }
}

fn check_seen(
    got: Result<(&'static str, bool, bool, bool), mpsc::RecvTimeoutError>,
    expected: (&'static str, bool, bool, bool),
) -> Result<(), String> {
    match got {
        Ok(seen) if seen == expected => Ok(()),
        Ok(seen) => Err(format!(
            "(name, done, cancelled, on the driver) in the callback: {seen:?}, expected {expected:?}"
        )),
        Err(_) => Err(format!("the {} callback never ran", expected.0)),
    }
}

/// `wait` and `as_completed` without a timeout, in a done callback (on the driver thread), for
/// another task of the same executor: they could never end (only that thread completes it),
/// so they return at once, as `result()` refuses with an error; a bounded wait just waits.
fn unbounded_waits_in_a_callback(ex: &Executor) -> Result<(), String> {
    let other = Arc::new(ex.submit(nap, 3_000));
    let first = ex.submit(nap, 100);
    let (tx, rx) = mpsc::channel();
    let o = other.clone();
    first.add_done_callback(move |_| {
        let on_driver = std::thread::current().name() == Some("multiproc-pool");
        let r = wait([&*o], ReturnWhen::AllCompleted, None);
        let waited = (r.done.len(), r.not_done.len());
        let r = wait([&*o], ReturnWhen::FirstCompleted, None);
        let first = (r.done.len(), r.not_done.len());
        let completed: Vec<_> = as_completed([&*o], None)
            .map(|f| f.map(|_| ()).map_err(|e| e.kind()))
            .collect();
        let r = wait(
            [&*o],
            ReturnWhen::AllCompleted,
            Some(Duration::from_millis(50)),
        );
        let bounded = (r.done.len(), r.not_done.len());
        let _ = tx.send((on_driver, waited, first, completed, bounded));
    });
    let got = rx
        .recv_timeout(CHILD_WAIT)
        .map_err(|_| "an unbounded wait in a done callback hung the driver".to_string())?;
    let expected = (
        true,
        (0, 1),
        (0, 1),
        vec![Err(ErrorKind::InvalidInput)],
        (0, 1),
    );
    if got != expected {
        return Err(format!(
            "(on the driver, wait, wait first, as_completed, bounded wait): {got:?}, expected {expected:?}"
        ));
    }
    match other.result_timeout(CHILD_WAIT) {
        Ok(3_000) => Ok(()),
        other => Err(format!("the task waited for: {other:?}")),
    }
}

/// `.await` of a pending result in a callback that runs on the driver thread, under a
/// blocking executor (as `futures::executor::block_on`): the await ends with an `InvalidInput`
/// error, as `result` and `get` do there, instead of holding the driver thread, which alone
/// could complete the result. The same for an `imap` polled as a stream there.
fn awaits_in_a_callback(ex: &Executor, method: StartMethod) -> Result<(), String> {
    let first = ex.submit(nap, 100);
    let other = ex.submit(nap, 1_000);
    let result = ex.pool().apply_async(nap, 1_000);
    let (tx, rx) = mpsc::channel();
    first.add_done_callback(move |_| {
        let awaited = futures::executor::block_on(other).map_err(|e| e.kind());
        let awaited_result = futures::executor::block_on(result).map_err(|e| e.kind());
        let _ = tx.send((awaited, awaited_result));
    });
    let got = rx
        .recv_timeout(CHILD_WAIT)
        .map_err(|_| "an .await in a done callback hung the driver".to_string())?;
    let expected = (Err(ErrorKind::InvalidInput), Err(ErrorKind::InvalidInput));
    if got != expected {
        return Err(format!(
            "(task future, async result): {got:?}, expected {expected:?}"
        ));
    }
    // A result callback of a pool (leaked: a stuck driver would hold its drop) that streams an
    // imap of the same pool.
    let pool: &'static multiproc::Pool = Box::leak(Box::new(
        multiproc::Pool::builder()
            .processes(1)
            .start_method(method)
            .build()
            .map_err(|e| e.to_string())?,
    ));
    let (tx, rx) = mpsc::channel();
    let _first = pool.apply_async(nap, 100).on_success(move |_| {
        use futures::StreamExt;
        let streamed: Vec<_> = futures::executor::block_on(
            pool.imap(nap, [1_000, 1_000])
                .into_stream()
                .collect::<Vec<_>>(),
        );
        let _ = tx.send(
            streamed
                .into_iter()
                .map(|r| r.map_err(|e| e.kind()))
                .collect::<Vec<_>>(),
        );
    });
    let got = rx
        .recv_timeout(CHILD_WAIT)
        .map_err(|_| "an imap streamed in a result callback hung the driver".to_string())?;
    if got != [Err(ErrorKind::InvalidInput)] {
        return Err(format!("the stream in a result callback: {got:?}"));
    }
    Ok(())
}

/// Runs case `case` of [`done_callback_case`] in a child of start method `m`.
fn done_callback_in_child(m: StartMethod, case: u8) -> Outcome {
    let p = common::start(m, done_callback_case, (m.to_string(), case))?;
    common::finish(&p)
}

/// A done callback that adds a callback to its own future: the driver thread deadlocked (it
/// waited for the future to be ready, which only it could make it), every later task hung.
fn done_callback_adds_callback(m: StartMethod) -> Outcome {
    done_callback_in_child(m, 0)
}

/// A callback added to a done future that touches it: deadlocked the registering thread (the
/// callback ran under the future's lock).
fn done_callback_on_a_done_future_uses_it(m: StartMethod) -> Outcome {
    done_callback_in_child(m, 1)
}

/// In its callback a future said it was not done (the callbacks ran before it was).
fn done_callback_sees_its_future_done(m: StartMethod) -> Outcome {
    done_callback_in_child(m, 2)
}

/// An unbounded `wait` / `as_completed` in a done callback hung the driver thread.
fn wait_in_a_done_callback(m: StartMethod) -> Outcome {
    done_callback_in_child(m, 3)
}

/// An `.await` (under a blocking executor) in a done callback hung the driver thread.
fn await_in_a_done_callback(m: StartMethod) -> Outcome {
    done_callback_in_child(m, 4)
}

/// `Executor::map` under way when `shutdown(false, true)` cancels the queued work: the items
/// already computed come in order, then the rest end in errors (its queued chunks cancelled,
/// its unread input refused), never a hang and never a wrong value; the drop then returns.
fn map_across_shutdown_cancel(m: StartMethod) -> Outcome {
    let ex = executor(m, 1)?;
    let mut results = ex.map(nap, std::iter::repeat_n(100, 30)).buffersize(4);
    check_eq!(results.next().transpose()?, Some(100));
    let t = std::time::Instant::now();
    ex.shutdown(false, true)?;
    let rest: Vec<Result<u64, ErrorKind>> = results.map(|r| r.map_err(|e| e.kind())).collect();
    check!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let ok = rest.iter().take_while(|r| r.is_ok()).count();
    check!(
        rest[..ok].iter().all(|r| *r == Ok(100)),
        "values before the errors: {rest:?}"
    );
    check!(ok < 29, "nothing was cancelled: {rest:?}");
    check!(
        rest[ok..]
            .iter()
            .all(|r| matches!(r, Err(ErrorKind::Cancelled | ErrorKind::NotRunning))),
        "after the cancel: {rest:?}"
    );
    let t = std::time::Instant::now();
    drop(ex);
    check!(
        t.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        t.elapsed()
    );
    Ok(())
}

fn main() {
    multiproc::init();
    let trials = trials!(each_method:
        submit_and_result,
        cancel_while_queued_or_running,
        as_completed_order,
        wait_modes,
        shutdown_modes,
        worker_killed_mid_task,
        result_runs_a_queued_task_here,
        cancel_a_task_its_waiter_runs,
        map_lazy_chunked_timeout,
        progress_callbacks,
        done_callback_adds_callback,
        done_callback_on_a_done_future_uses_it,
        done_callback_sees_its_future_done,
        wait_in_a_done_callback,
        await_in_a_done_callback,
        map_across_shutdown_cancel,
    );
    common::run(trials)
}
