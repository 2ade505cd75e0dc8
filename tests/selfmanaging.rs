//! The self-managing pool, under every start method: idle workers let go and started again on
//! demand (`idle_timeout`), `resize` at run time, workers replaced above a memory limit
//! (`max_memory_per_child`), and tasks asked to stop before their hard timeout
//! (`soft_task_timeout`).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Outcome, LONG};
use multiproc::{process, ErrorKind, Executor, Pool, StartMethod};

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[process]
fn pid_of(_n: u32) -> u32 {
    std::process::id()
}

#[process]
fn slow_square(n: u64, millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    n * n
}

/// Allocates and touches `mib` MiB and keeps them (a leak); returns its pid.
#[process]
fn leak(mib: usize) -> u32 {
    let block = vec![1u8; mib << 20];
    std::mem::forget(block);
    std::process::id()
}

/// The worker's resident size, in bytes (`/proc/self/statm`).
#[process]
fn resident(_n: u32) -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages");
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// Works in 10 ms steps until its soft timeout passes (`Some(steps)`), or gives up after
/// `max_steps` (`None`).
#[process]
fn patient(max_steps: u64) -> Option<u64> {
    for step in 0..max_steps {
        if multiproc::soft_timeout_expired() {
            return Some(step);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The same with `check_soft_timeout`: the error's kind and message as the task's error.
#[process]
fn checking(max_steps: u64) -> Result<u64, String> {
    for _ in 0..max_steps {
        multiproc::check_soft_timeout().map_err(|err| format!("{:?}: {err}", err.kind()))?;
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(max_steps)
}

/// Whether the soft timeout shows at the start of a task (it must not: it is per task).
#[process]
fn expired_at_start(_n: u32) -> bool {
    multiproc::soft_timeout_expired()
}

/// Ignores its soft timeout.
#[process]
fn stubborn(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

/// Shuts its control socket for writing (the driver sees its end), then sleeps `millis`:
/// a worker going, with a task.
#[process]
fn hang_up(millis: u64) -> u64 {
    use std::os::fd::AsRawFd;
    let control = common::only_socket();
    // SAFETY: shutdown(2) of this worker's own socket, which stays open.
    unsafe { libc::shutdown(control.as_raw_fd(), libc::SHUT_WR) };
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

/// The CPU clock ticks the pool driver threads of this process take in a second.
fn driver_ticks_in_a_second() -> Result<u64, libtest_mimic::Failed> {
    let drivers = common::pool_driver_threads()?;
    let ticks = || {
        drivers
            .iter()
            .map(|driver| common::cpu_ticks(&format!("{driver}/stat")).unwrap_or(0))
            .sum::<u64>()
    };
    let before = ticks();
    std::thread::sleep(Duration::from_secs(1));
    Ok(ticks() - before)
}

/// A self-managing pool sleeps too: while a task runs past its soft timeout (ignored, or its
/// worker already going), and once its idle workers are gone.
fn managed_pool_sleeps(m: StartMethod) -> Outcome {
    let pool = Pool::builder()
        .processes(1)
        .start_method(m)
        .idle_timeout(Duration::from_millis(200))
        .soft_task_timeout(Duration::from_millis(100))
        .task_timeout(Duration::from_secs(4))
        .build()?;
    // A clock tick is 10 ms: a thread that spins takes 50 to 100 of them in a second.
    let ignoring = pool.apply_async(stubborn, 2500);
    std::thread::sleep(Duration::from_millis(300));
    let spent = driver_ticks_in_a_second()?;
    check!(
        spent <= 10,
        "the driver took {spent} ticks in a second beside a task past its soft timeout"
    );
    check_eq!(ignoring.get()?, 2500);
    let going = pool.apply_async(hang_up, 2500);
    std::thread::sleep(Duration::from_millis(300));
    let spent = driver_ticks_in_a_second()?;
    check!(
        spent <= 10,
        "the driver took {spent} ticks in a second beside a worker going with a task"
    );
    // Its worker hung up: the task fails (at the latest at its hard timeout).
    check!(
        going.get().is_err(),
        "a task whose worker hung up succeeded"
    );
    workers_until(&pool, "let go", |pids| pids.is_empty())?;
    let spent = driver_ticks_in_a_second()?;
    check!(
        spent <= 10,
        "an empty pool's driver took {spent} ticks in a second"
    );
    check_eq!(
        pool.map(square, 0..10)?,
        (0..10).map(|n| n * n).collect::<Vec<u64>>()
    );
    Ok(())
}

/// Waits (bounded by `LONG`) until `pool`'s workers satisfy `ok`.
fn workers_until(pool: &Pool, what: &str, ok: impl Fn(&[i32]) -> bool) -> Outcome {
    let deadline = Instant::now() + LONG;
    loop {
        let pids = pool.worker_pids();
        if ok(&pids) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("workers never {what}: {pids:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until the workers `pids` have exited and been reaped (no `/proc` entry, not
/// even a zombie's), then until this process's descriptor count holds still for 100 ms (the
/// pool closes a worker's descriptors once it is buried); returns that count.
fn settled(pids: &[i32]) -> Result<usize, libtest_mimic::Failed> {
    let deadline = Instant::now() + LONG;
    while pids
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
    {
        check!(
            Instant::now() < deadline,
            "idle workers {pids:?} never exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut last = common::open_fds();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = common::open_fds();
        if now == last {
            return Ok(now);
        }
        check!(Instant::now() < deadline, "descriptors never settled");
        last = now;
    }
}

fn idle_timeout_retires_and_restarts(m: StartMethod) -> Outcome {
    // The fork server of this process runs (its descriptors are not the pool's).
    drop(Pool::builder().processes(1).start_method(m).build()?);
    let fds = common::open_fds();
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .idle_timeout(Duration::from_millis(300))
        .build()?;
    let expected: Vec<u64> = (0..100).map(|n| n * n).collect();
    check_eq!(pool.map(square, 0..100)?, expected);
    let before = pool.worker_pids();
    check!(!before.is_empty(), "no worker after a map");
    workers_until(&pool, "let go", |pids| pids.is_empty())?;
    let lull = settled(&before)?;
    // Started again on demand.
    check_eq!(pool.map(square, 0..100)?, expected);
    check_eq!(pool.apply(square, 9)?, 81);
    let after = pool.worker_pids();
    check!(
        !after.is_empty() && after.len() <= 2,
        "workers after the lull: {after:?}"
    );
    check!(
        after.iter().all(|pid| !before.contains(pid)),
        "{after:?} are not new workers ({before:?})"
    );
    // And let go again, with what was theirs.
    workers_until(&pool, "let go a second time", |pids| pids.is_empty())?;
    settled(&after)?;
    let deadline = Instant::now() + LONG;
    while common::open_fds() != lull {
        check!(
            Instant::now() < deadline,
            "{} descriptors open after the second lull, {lull} after the first",
            common::open_fds()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pool.close();
    pool.join()?;
    drop(pool);
    check_eq!(common::open_fds(), fds);
    check_eq!(common::zombie_children(), Vec::<i32>::new());
    Ok(())
}

fn resize_while_mapping(m: StartMethod) -> Outcome {
    let pool = Pool::builder().processes(2).start_method(m).build()?;
    check_eq!(pool.resize(0).unwrap_err().kind(), ErrorKind::InvalidInput);
    let expected: Vec<u64> = (0..60).map(|n| n * n).collect();
    let items = || (0..60).map(|n| (n, 50));
    let running = pool.map_async_chunked(slow_square, items(), 1);
    pool.resize(4)?;
    check_eq!(pool.processes(), 4);
    workers_until(&pool, "grew to 4", |pids| pids.len() == 4)?;
    let grown: HashSet<i32> = pool.worker_pids().into_iter().collect();
    pool.resize(1)?;
    workers_until(&pool, "shrank to 1", |pids| pids.len() == 1)?;
    check_eq!(running.get()?, expected);
    // The one left was one of the four: no task was cut short, none replaced.
    check!(
        pool.worker_pids().iter().all(|pid| grown.contains(pid)),
        "the worker left is not one of {grown:?}"
    );
    // Grown again while a map runs, and shrunk while it runs.
    let running = pool.map_async_chunked(slow_square, items(), 1);
    pool.resize(3)?;
    workers_until(&pool, "grew to 3", |pids| pids.len() == 3)?;
    pool.resize(2)?;
    check_eq!(running.get()?, expected);
    workers_until(&pool, "shrank to 2", |pids| pids.len() == 2)?;
    check_eq!(pool.map(square, 0..60)?, expected);
    pool.close();
    check_eq!(pool.resize(2).unwrap_err().kind(), ErrorKind::NotRunning);
    pool.join()?;
    check_eq!(common::zombie_children(), Vec::<i32>::new());
    Ok(())
}

fn memory_limit_replaces_worker(m: StartMethod) -> Outcome {
    // A worker's size without a leak, whatever this test process holds (a forked worker
    // starts with its memory): the limit is 48 MiB above it, the leak 96 MiB.
    let baseline = Pool::builder()
        .processes(1)
        .start_method(m)
        .build()?
        .apply(resident, 0)?;
    let pool = Pool::builder()
        .processes(1)
        .start_method(m)
        .max_memory_per_child(baseline + (48 << 20))
        .build()?;
    // Below the limit: the same worker serves on.
    let first = pool.apply(pid_of, 0)?;
    check_eq!(pool.apply(pid_of, 1)?, first);
    check_eq!(pool.map(pid_of, 0..4)?, vec![first; 4]);
    // A task that keeps 96 MiB: its result comes, then its worker is replaced.
    check_eq!(pool.apply(leak, 96)?, first);
    let second = pool.apply(pid_of, 2)?;
    check!(second != first, "worker {first} kept after its leak");
    // The same through the driver (a map).
    check_eq!(pool.map_chunked(leak, vec![96, 1], 2)?, vec![second; 2]);
    let third = pool.map(pid_of, 0..4)?;
    check!(
        third.iter().all(|&pid| pid != second && pid != first),
        "worker {second} kept after its leak: {third:?}"
    );
    check_eq!(
        pool.map(square, 0..10)?,
        (0..10).map(|n| n * n).collect::<Vec<u64>>()
    );
    pool.close();
    pool.join()?;
    check_eq!(common::zombie_children(), Vec::<i32>::new());
    Ok(())
}

fn soft_timeout_asks_then_hard_timeout_kills(m: StartMethod) -> Outcome {
    let pool = Pool::builder()
        .processes(1)
        .start_method(m)
        .soft_task_timeout(Duration::from_millis(200))
        .task_timeout(Duration::from_secs(5))
        .build()?;
    // Observed: the task returns early with what it has, its worker serves on.
    let worker = pool.worker_pids();
    let steps = pool.apply(patient, 3000)?;
    check!(steps.is_some(), "the task never saw its soft timeout");
    check_eq!(pool.apply(expired_at_start, 0)?, false);
    let results = pool.map_chunked(patient, vec![3000, 3000], 1)?;
    check!(
        results.iter().all(Option::is_some),
        "a task never saw its soft timeout: {results:?}"
    );
    let checked = pool.apply(checking, 3000)?;
    check!(
        checked
            .as_ref()
            .is_err_and(|message| message.starts_with("SoftTimeout")),
        "check_soft_timeout gave {checked:?}"
    );
    check_eq!(pool.worker_pids(), worker);
    // A short task is left alone.
    check_eq!(pool.apply(stubborn, 10)?, 10);
    // Ignored: killed at the hard timeout, and replaced.
    let err = pool.apply(stubborn, 60_000).unwrap_err();
    check_eq!(err.kind(), ErrorKind::Timeout);
    check_eq!(
        pool.map(square, 0..10)?,
        (0..10).map(|n| n * n).collect::<Vec<u64>>()
    );
    check!(
        pool.worker_pids() != worker,
        "the stubborn task's worker was not replaced"
    );
    // Builder rules.
    let refused = Pool::builder()
        .processes(1)
        .start_method(m)
        .soft_task_timeout(Duration::from_secs(2))
        .task_timeout(Duration::from_secs(1))
        .build();
    check_eq!(refused.unwrap_err().kind(), ErrorKind::InvalidInput);
    pool.close();
    pool.join()?;
    check_eq!(common::zombie_children(), Vec::<i32>::new());
    Ok(())
}

/// The executor's builder passes the options on: an idle executor lets its workers go and
/// takes them back for new work; `resize` grows it.
fn executor_options(m: StartMethod) -> Outcome {
    let executor = Executor::builder()
        .max_workers(2)
        .start_method(m)
        .idle_timeout(Duration::from_millis(300))
        .max_memory_per_child(256 << 20)
        .soft_task_timeout(Duration::from_secs(20))
        .build()?;
    check_eq!(executor.submit(square, 7).result()?, 49);
    workers_until(executor.pool(), "let go", |pids| pids.is_empty())?;
    let futures: Vec<_> = (0..10).map(|n| executor.submit(square, n)).collect();
    let results: Vec<u64> = futures
        .iter()
        .map(|future| future.result())
        .collect::<multiproc::Result<_>>()?;
    check_eq!(results, (0..10).map(|n| n * n).collect::<Vec<u64>>());
    executor.resize(3)?;
    check_eq!(executor.pool().processes(), 3);
    executor.shutdown(true, false)?;
    Ok(())
}

/// Exits with code 3 on item `bad`.
#[process]
fn exits_on(n: u64, bad: u64) -> u64 {
    if n == bad {
        std::process::exit(3);
    }
    n
}

/// A self-managing pool under churn at once: workers let go between the calls of a thread
/// that naps, an `imap` whose consumer is slower than its idle timeout, workers that die and
/// live for two tasks, and resizes up and down meanwhile. Every result comes, in its place,
/// and every wait ends.
fn churn(m: StartMethod) -> Outcome {
    let pool = Pool::builder()
        .processes(3)
        .start_method(m)
        .idle_timeout(Duration::from_millis(100))
        .maxtasksperchild(2)
        .build()?;
    let started = Instant::now();
    let outcome: Result<(), String> = std::thread::scope(|scope| {
        let napper = scope.spawn(|| -> Result<(), String> {
            for n in 0..10u64 {
                let got = pool
                    .apply(square, n)
                    .map_err(|e| format!("apply {n}: {e}"))?;
                if got != n * n {
                    return Err(format!("apply {n}: {got}"));
                }
                std::thread::sleep(Duration::from_millis(150));
            }
            Ok(())
        });
        let slow_reader = scope.spawn(|| -> Result<(), String> {
            let mut imap = pool.imap(square, 0..12u64).buffersize(1);
            for n in 0..12u64 {
                let got = imap
                    .next()
                    .ok_or(format!("imap ended before {n}"))?
                    .map_err(|e| format!("imap {n}: {e}"))?;
                if got != n * n {
                    return Err(format!("imap {n}: {got}"));
                }
                std::thread::sleep(Duration::from_millis(130));
            }
            match imap.next() {
                None => Ok(()),
                Some(extra) => Err(format!("imap past its end: {extra:?}")),
            }
        });
        let dying = scope.spawn(|| -> Result<(), String> {
            for round in 0..4u64 {
                let bad = 5 + round;
                let got: Vec<Result<u64, ErrorKind>> = pool
                    .imap(exits_on, (0..20).map(|n| (n, bad)))
                    .map(|r| r.map_err(|e| e.kind()))
                    .collect();
                let expected: Vec<Result<u64, ErrorKind>> = (0..20)
                    .map(|n| {
                        if n == bad {
                            Err(ErrorKind::Died)
                        } else {
                            Ok(n)
                        }
                    })
                    .collect();
                if got != expected {
                    return Err(format!("round {round}: {got:?}"));
                }
                std::thread::sleep(Duration::from_millis(120));
            }
            Ok(())
        });
        for size in [1, 4, 2, 5, 1, 3] {
            pool.resize(size)
                .map_err(|e| format!("resize {size}: {e}"))?;
            std::thread::sleep(Duration::from_millis(200));
        }
        for (name, handle) in [
            ("napper", napper),
            ("slow reader", slow_reader),
            ("dying", dying),
        ] {
            handle.join().map_err(|_| format!("{name} panicked"))??;
        }
        Ok(())
    });
    outcome?;
    check!(started.elapsed() < LONG, "took {:?}", started.elapsed());
    check_eq!(
        pool.map(square, 0..50)?,
        (0..50).map(|n| n * n).collect::<Vec<u64>>()
    );
    pool.close();
    pool.join()?;
    check_eq!(common::zombie_children(), Vec::<i32>::new());
    Ok(())
}

fn main() {
    multiproc::init();
    let trials = trials!(each_method:
        idle_timeout_retires_and_restarts,
        resize_while_mapping,
        memory_limit_replaces_worker,
        soft_timeout_asks_then_hard_timeout_kills,
        executor_options,
        managed_pool_sleeps,
        churn,
    );
    common::run(trials)
}
