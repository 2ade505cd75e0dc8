//! Pool results as futures and streams, under tokio (current-thread and multi-thread runtimes)
//! and `futures::executor::block_on`, and the cancellation of one call, under every start
//! method: many concurrent awaits, dropped futures, no busy polling, `imap` as a `Stream`,
//! cancelled `map_async` / `imap` calls that leave other work alone.

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{is_gone, read_when_ready, scratch, Outcome, LONG};
use futures::StreamExt;
use multiproc::{process, ErrorKind, Pool, StartMethod};

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[process]
fn slow_square(n: u64, millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    n * n
}

/// Writes this worker's pid to `dir/<n>` as it starts, then sleeps `millis`.
#[process]
fn marked_sleep(dir: String, n: u64, millis: u64) -> u64 {
    common::write_line(&format!("{dir}/{n}"), &std::process::id().to_string());
    std::thread::sleep(Duration::from_millis(millis));
    n
}

fn pool(m: StartMethod, processes: usize) -> Result<Pool, libtest_mimic::Failed> {
    Pool::builder()
        .processes(processes)
        .start_method(m)
        .build()
        .map_err(|err| format!("pool: {err}").into())
}

/// The three executors every async scenario runs under.
#[derive(Debug, Clone, Copy)]
enum Exec {
    CurrentThread,
    MultiThread,
    BlockOn,
}

const EXECS: [Exec; 3] = [Exec::CurrentThread, Exec::MultiThread, Exec::BlockOn];

/// Runs `fut` to its end under `exec`; the runtime is gone (its threads joined) on return, so
/// the next fork start sees no thread of ours.
///
/// Bounded: a future that never completes (a lost wake-up) aborts the test binary after
/// [`LONG`], naming the executor, instead of hanging it.
fn run<T: Send + 'static>(exec: Exec, fut: impl Future<Output = T> + Send + 'static) -> T {
    let (done, watched) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watched.recv_timeout(LONG) {
            eprintln!("a future under {exec:?} did not complete within {LONG:?}");
            std::process::abort();
        }
    });
    let out = run_unbounded(exec, fut);
    drop(done);
    let _ = watchdog.join();
    out
}

fn run_unbounded<T: Send + 'static>(
    exec: Exec,
    fut: impl Future<Output = T> + Send + 'static,
) -> T {
    match exec {
        Exec::CurrentThread => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("tokio runtime");
            rt.block_on(fut)
        }
        Exec::MultiThread => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .expect("tokio runtime");
            let out = rt.block_on(async move {
                // On a worker thread of the runtime, not the thread that blocks.
                tokio::spawn(fut).await.expect("the spawned task panicked")
            });
            rt.shutdown_timeout(LONG);
            out
        }
        Exec::BlockOn => futures::executor::block_on(fut),
    }
}

/// The CPU time this process (every thread) used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct we own; RUSAGE_SELF is valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn thousand_awaits(m: StartMethod) -> Outcome {
    let pool = std::sync::Arc::new(pool(m, 2)?);
    for exec in EXECS {
        let results: Vec<_> = (0..1000u64).map(|n| pool.apply_async(square, n)).collect();
        let multi = matches!(exec, Exec::MultiThread);
        let values: Vec<multiproc::Result<u64>> = run(exec, async move {
            if multi {
                // Each awaited by a task of its own, on either of the runtime's threads.
                let tasks: Vec<_> = results.into_iter().map(tokio::spawn).collect();
                let mut values = Vec::new();
                for task in tasks {
                    values.push(task.await.expect("task"));
                }
                values
            } else {
                futures::future::join_all(results).await
            }
        });
        let values: multiproc::Result<Vec<u64>> = values.into_iter().collect();
        check_eq!(values?, (0..1000).map(|n| n * n).collect::<Vec<u64>>());
    }
    Ok(())
}

fn dropped_future_leaves_the_pool_usable(m: StartMethod) -> Outcome {
    let pool = std::sync::Arc::new(pool(m, 2)?);
    for exec in EXECS {
        // Polled once (its waker is kept in the result), then dropped while the task runs.
        let dropped = pool.apply_async(slow_square, (3, 300));
        let polled = run(exec, async move {
            let mut dropped = pin!(dropped);
            std::future::poll_fn(|cx: &mut Context<'_>| {
                Poll::Ready(dropped.as_mut().poll(cx).is_pending())
            })
            .await
        });
        check!(
            polled,
            "{exec:?}: the slow result was ready at its first poll"
        );
        // A stream dropped half way, its waker kept too.
        let p = pool.clone();
        let first = run(exec, async move {
            let mut stream = p.imap(slow_square, (0..50).map(|n| (n, 20))).into_stream();
            stream.next().await
        });
        check_eq!(first.map(|r| r.ok()), Some(Some(0)));
        let p = pool.clone();
        let all = run(exec, async move {
            futures::future::join_all((0..20).map(|n| p.apply_async(square, n))).await
        });
        let all: multiproc::Result<Vec<u64>> = all.into_iter().collect();
        check_eq!(all?, (0..20).map(|n| n * n).collect::<Vec<u64>>());
        check_eq!(
            pool.map(square, 0..10)?,
            (0..10).map(|n| n * n).collect::<Vec<u64>>()
        );
    }
    Ok(())
}

fn no_busy_polling(m: StartMethod) -> Outcome {
    let pool = std::sync::Arc::new(pool(m, 2)?);
    // Warm: every worker ready, nothing started while measuring.
    check_eq!(
        pool.map(square, 0..8)?,
        (0..8).map(|n| n * n).collect::<Vec<u64>>()
    );
    for exec in EXECS {
        let p = pool.clone();
        let (value, used) = run(exec, async move {
            let result = p.apply_async(slow_square, (5, 1000));
            let before = cpu_time();
            let value = result.await;
            (value, cpu_time().saturating_sub(before))
        });
        check_eq!(value?, 25);
        check!(
            used < Duration::from_millis(10),
            "{exec:?}: awaiting a 1 s task used {used:?} of CPU time"
        );
        let p = pool.clone();
        let (values, used) = run(exec, async move {
            let stream = p.imap(slow_square, [(1, 500), (2, 500)]).into_stream();
            let before = cpu_time();
            let values: Vec<multiproc::Result<u64>> = stream.collect().await;
            (values, cpu_time().saturating_sub(before))
        });
        let values: multiproc::Result<Vec<u64>> = values.into_iter().collect();
        check_eq!(values?, vec![1, 4]);
        check!(
            used < Duration::from_millis(10),
            "{exec:?}: streaming two 0.5 s tasks used {used:?} of CPU time"
        );
    }
    Ok(())
}

fn imap_as_a_stream(m: StartMethod) -> Outcome {
    let pool = std::sync::Arc::new(pool(m, 2)?);
    for exec in EXECS {
        let p = pool.clone();
        let (ordered, mut unordered) = run(exec, async move {
            let ordered: Vec<multiproc::Result<u64>> = p
                .imap(square, 0..300)
                .chunksize(7)
                .into_stream()
                .collect()
                .await;
            let unordered: Vec<multiproc::Result<u64>> = p
                .imap_unordered(slow_square, (0..20).map(|n| (n, 20 - n)))
                .into_stream()
                .collect()
                .await;
            (ordered, unordered)
        });
        let ordered: multiproc::Result<Vec<u64>> = ordered.into_iter().collect();
        check_eq!(ordered?, (0..300).map(|n| n * n).collect::<Vec<u64>>());
        let unordered: multiproc::Result<Vec<u64>> = unordered.drain(..).collect();
        let mut unordered = unordered?;
        unordered.sort();
        check_eq!(unordered, (0..20).map(|n| n * n).collect::<Vec<u64>>());
    }
    Ok(())
}

/// The numbers of the items whose task started, from the files `marked_sleep` wrote.
fn started(dir: &Path) -> Vec<u64> {
    let mut items: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    items.sort();
    items
}

/// Waits (bounded) until the task of item `n` started; its worker's pid.
fn started_pid(dir: &Path, n: u64) -> Result<i32, libtest_mimic::Failed> {
    let pid = read_when_ready(&dir.join(n.to_string()), LONG)?;
    pid.parse()
        .map_err(|err| format!("pid {pid:?}: {err}").into())
}

fn cancel_map_async(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let dir = scratch("cancel-map");
    let d = dir.to_string_lossy().to_string();
    // 40 chunks of one item, 300 ms each: 6 s of work on 2 workers.
    let cancelled = pool.map_async_chunked(marked_sleep, (0..40).map(|n| (d.clone(), n, 300)), 1);
    // Another call in flight, submitted before the cancel and queued behind the map.
    let other = pool.apply_async(slow_square, (7, 10));
    started_pid(&dir, 0)?;
    check!(cancelled.cancel(), "cancel of a running map_async");
    check!(!cancelled.cancel(), "a second cancel");
    check_eq!(
        cancelled.get_timeout(LONG).unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    // The other call is untouched, and the workers are free again: the work queued after the
    // cancel does not wait for the 40 chunks.
    check_eq!(other.get_timeout(LONG)?, 49);
    check_eq!(
        pool.map(square, 0..10)?,
        (0..10).map(|n| n * n).collect::<Vec<u64>>()
    );
    // At most the chunks handed out before the cancel ran (two workers: one each, and one
    // more each if they were just between two).
    let ran = started(&dir);
    check!(ran.len() <= 4, "chunks that ran after the cancel: {ran:?}");
    // A result already complete is not cancelled.
    let done = pool.map_async(square, 0..4);
    check_eq!(done.get_timeout(LONG).is_ok(), true);
    let done = pool.apply_async(square, 3);
    done.wait_timeout(LONG);
    check!(!done.cancel(), "cancel of a complete result");
    check_eq!(done.get()?, 9);
    Ok(())
}

fn cancel_and_kill_map_async(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let dir = scratch("cancel-kill");
    let d = dir.to_string_lossy().to_string();
    // A chunk that would run a minute.
    let long = pool.map_async_chunked(marked_sleep, [(d.clone(), 0, 60_000)], 1);
    let other = pool.apply_async(slow_square, (6, 200));
    let pid = started_pid(&dir, 0)?;
    check!(
        long.cancel_and_kill(),
        "cancel_and_kill of a running map_async"
    );
    check_eq!(
        long.get_timeout(LONG).unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    check_eq!(other.get_timeout(LONG)?, 36);
    // Its worker is killed (and reaped), and replaced: the pool still has two workers.
    let deadline = Instant::now() + LONG;
    while !is_gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    check!(
        is_gone(pid),
        "the worker {pid} of the cancelled chunk still runs"
    );
    let both = [
        pool.apply_async(slow_square, (2, 300)),
        pool.apply_async(slow_square, (3, 300)),
    ];
    for (r, want) in both.into_iter().zip([4, 9]) {
        check_eq!(r.get_timeout(LONG)?, want);
    }
    Ok(())
}

fn cancel_imap(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let dir = scratch("cancel-imap");
    let d = dir.to_string_lossy().to_string();
    let mut it = pool
        .imap(marked_sleep, (0..1000).map(|n| (d.clone(), n, 50)))
        .buffersize(2);
    let other = pool.apply_async(slow_square, (5, 10));
    check_eq!(it.next().map(|r| r.ok()), Some(Some(0)));
    check_eq!(it.next().map(|r| r.ok()), Some(Some(1)));
    it.cancel();
    check!(it.next().is_none(), "an imap cancelled goes on");
    check_eq!(other.get_timeout(LONG)?, 25);
    check_eq!(
        pool.map(square, 0..10)?,
        (0..10).map(|n| n * n).collect::<Vec<u64>>()
    );
    // Two taken, at most 2 workers + a buffer of 2 in flight then.
    let ran = started(&dir);
    check!(
        ran.len() <= 2 + 4,
        "items that ran after the cancel: {ran:?}"
    );
    // Killed on request while a worker runs a long chunk of it.
    let mut stream = pool
        .imap(marked_sleep, (1000..1010).map(|n| (d.clone(), n, 60_000)))
        .buffersize(0)
        .into_stream();
    // Polled once: the first chunks are submitted, nothing is ready.
    check!(
        futures::FutureExt::now_or_never(stream.next()).is_none(),
        "a one-minute task was ready at once"
    );
    let pid = started_pid(&dir, 1000)?;
    stream.get_mut().cancel_and_kill();
    check!(
        futures::executor::block_on(stream.next()).is_none(),
        "an imap cancelled goes on"
    );
    let deadline = Instant::now() + LONG;
    while !is_gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    check!(
        is_gone(pid),
        "the worker {pid} of the cancelled chunk still runs"
    );
    check_eq!(pool.apply(square, 12)?, 144);
    Ok(())
}

/// A waker that counts its wakes.
struct Counted(std::sync::atomic::AtomicUsize);

impl futures::task::ArcWake for Counted {
    fn wake_by_ref(this: &std::sync::Arc<Self>) {
        this.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn counted() -> (std::sync::Arc<Counted>, std::task::Waker) {
    let count = std::sync::Arc::new(Counted(std::sync::atomic::AtomicUsize::new(0)));
    let waker = futures::task::waker(count.clone());
    (count, waker)
}

fn wakes(count: &Counted) -> usize {
    count.0.load(std::sync::atomic::Ordering::SeqCst)
}

/// Polled by hand: the waker of the last poll is the one woken, a result polled again after
/// `Ready` is an error (not a panic, not a hang), a stream polled after its end stays ended,
/// and a future polled on one thread completes when awaited on another.
fn polled_by_hand(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    let mut result = pool.apply_async(slow_square, (3, 300));
    let (first, first_waker) = counted();
    let (second, second_waker) = counted();
    check!(
        std::pin::Pin::new(&mut result)
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending(),
        "ready at once"
    );
    check!(
        std::pin::Pin::new(&mut result)
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending(),
        "ready at the second poll"
    );
    check!(result.wait_timeout(LONG), "not ready");
    let deadline = Instant::now() + LONG;
    while wakes(&second) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    check_eq!(wakes(&second), 1);
    check_eq!(wakes(&first), 0);
    match std::pin::Pin::new(&mut result).poll(&mut Context::from_waker(&second_waker)) {
        Poll::Ready(value) => check_eq!(value?, 9),
        Poll::Pending => return Err("pending once ready".into()),
    }
    match std::pin::Pin::new(&mut result).poll(&mut Context::from_waker(&second_waker)) {
        Poll::Ready(Err(err)) => check_eq!(err.kind(), ErrorKind::InvalidInput),
        other => return Err(format!("polled after ready: {other:?}").into()),
    }
    // A stream to its end, then polled again.
    let mut stream = pool.imap(square, 0..3u64).chunksize(10).into_stream();
    let items: Vec<u64> = futures::executor::block_on(async {
        let mut items = Vec::new();
        while let Some(item) = stream.next().await {
            items.push(item?);
        }
        Ok::<_, multiproc::Error>(items)
    })?;
    check_eq!(items, vec![0, 1, 4]);
    for _ in 0..3 {
        let polled = futures::Stream::poll_next(
            std::pin::Pin::new(&mut stream),
            &mut Context::from_waker(&first_waker),
        );
        check!(
            matches!(polled, Poll::Ready(None)),
            "a stream polled after its end: {polled:?}"
        );
    }
    drop(stream);
    // Polled here, then awaited on another thread, under another executor.
    let mut moved = pool.apply_async(slow_square, (4, 200));
    check!(
        std::pin::Pin::new(&mut moved)
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending(),
        "ready at once"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(moved));
    });
    check_eq!(rx.recv_timeout(LONG).map_err(|e| format!("{e}"))??, 16);
    Ok(())
}

/// A pool dropped while its results are awaited on other threads: the awaits end with the
/// pool's end, and the stream of an `imap` ends too.
fn pool_dropped_while_awaited(m: StartMethod) -> Outcome {
    let pool = std::sync::Arc::new(pool(m, 1)?);
    let running = pool.apply_async(slow_square, (2, 5000));
    let queued = pool.apply_async(square, 3);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(async {
            (running.await, queued.await)
        }));
    });
    let p = pool.clone();
    let (stx, srx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let items: Vec<multiproc::Result<u64>> = futures::executor::block_on(
            p.imap(slow_square, (0..10).map(|n| (n, 500)))
                .into_stream()
                .collect(),
        );
        drop(p);
        let _ = stx.send(items);
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    pool.terminate();
    let (running, queued) = rx.recv_timeout(LONG).map_err(|e| format!("awaits: {e}"))?;
    check!(
        started.elapsed() < Duration::from_secs(4),
        "the awaits ended {:?} after terminate",
        started.elapsed()
    );
    check_eq!(running.map_err(|e| e.kind()), Err(ErrorKind::Terminated));
    check_eq!(queued.map_err(|e| e.kind()), Err(ErrorKind::Terminated));
    let items = srx.recv_timeout(LONG).map_err(|e| format!("stream: {e}"))?;
    check!(
        items.iter().any(|item| item.is_err()),
        "a terminated imap yielded no error: {items:?}"
    );
    let pool = std::sync::Arc::try_unwrap(pool).map_err(|_| "the pool is still shared")?;
    drop(pool);
    Ok(())
}

/// A result cancelled while a task awaits it, its work running on a worker: the task is woken
/// at once with `Cancelled` (the work's own end is not waited for); and the same for a map.
fn cancel_wakes_the_awaiting_task(m: StartMethod) -> Outcome {
    let pool = pool(m, 2)?;
    check_eq!(pool.apply(square, 2)?, 4);
    let mut one = pool.apply_async(slow_square, (1, 3000));
    let mut map = pool.map_async_chunked(slow_square, [(1, 3000), (2, 3000), (3, 3000)], 1);
    std::thread::sleep(Duration::from_millis(200));
    let (count, waker) = counted();
    let (map_count, map_waker) = counted();
    check!(
        std::pin::Pin::new(&mut one)
            .poll(&mut Context::from_waker(&waker))
            .is_pending(),
        "ready at once"
    );
    check!(
        std::pin::Pin::new(&mut map)
            .poll(&mut Context::from_waker(&map_waker))
            .is_pending(),
        "ready at once"
    );
    let t = Instant::now();
    check!(one.cancel(), "cancel of a running apply_async");
    check!(map.cancel(), "cancel of a running map");
    while (wakes(&count) == 0 || wakes(&map_count) == 0) && t.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(5));
    }
    check!(
        t.elapsed() < Duration::from_millis(1500),
        "woken {:?} after the cancel",
        t.elapsed()
    );
    match std::pin::Pin::new(&mut one).poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(Err(err)) => check_eq!(err.kind(), ErrorKind::Cancelled),
        other => return Err(format!("after the cancel: {other:?}").into()),
    }
    match std::pin::Pin::new(&mut map).poll(&mut Context::from_waker(&map_waker)) {
        Poll::Ready(Err(err)) => check_eq!(err.kind(), ErrorKind::Cancelled),
        other => return Err(format!("the map after the cancel: {other:?}").into()),
    }
    Ok(())
}

/// `cancel_and_kill` on a one-worker pool whose worker holds other calls' tasks queued behind
/// the cancelled chunk: the worker is killed, and those calls still complete, each with its
/// own value (not `Died`, not another's).
fn cancel_and_kill_with_work_queued_behind(m: StartMethod) -> Outcome {
    let pool = pool(m, 1)?;
    for round in 0..3u64 {
        let dir = scratch(&format!("kill-behind-{round}"));
        let d = dir.to_string_lossy().to_string();
        let long = pool.map_async_chunked(marked_sleep, [(d.clone(), 0, 60_000)], 1);
        let behind: Vec<_> = (0..6u64)
            .map(|n| pool.apply_async(slow_square, (n + 10 * round, 5)))
            .collect();
        let mut lazy = pool.imap(square, 0..20u64).chunksize(3);
        started_pid(&dir, 0)?;
        check!(long.cancel_and_kill(), "cancel_and_kill of a running map");
        check_eq!(
            long.get_timeout(LONG).unwrap_err().kind(),
            ErrorKind::Cancelled
        );
        for (n, r) in behind.into_iter().enumerate() {
            let n = n as u64 + 10 * round;
            check_eq!(r.get_timeout(LONG)?, n * n);
        }
        let got: Vec<u64> = lazy.by_ref().collect::<multiproc::Result<_>>()?;
        check_eq!(got, (0..20u64).map(|n| n * n).collect::<Vec<u64>>());
    }
    Ok(())
}

/// An imap stream polled by hand with one waker, then another: the last is woken when the
/// chunk comes; then finished on another thread, under another executor.
fn stream_wakers_replaced(m: StartMethod) -> Outcome {
    let pool = std::sync::Arc::new(pool(m, 2)?);
    let mut stream = pool
        .imap(slow_square, (0..6u64).map(|n| (n, 200)))
        .into_stream();
    let (first, first_waker) = counted();
    let (second, second_waker) = counted();
    let poll = |stream: &mut multiproc::ImapStream<'_, _, _>, waker: &std::task::Waker| {
        futures::Stream::poll_next(std::pin::Pin::new(stream), &mut Context::from_waker(waker))
    };
    check!(
        poll(&mut stream, &first_waker).is_pending(),
        "ready at once"
    );
    check!(
        poll(&mut stream, &second_waker).is_pending(),
        "ready at the second poll"
    );
    // Only the last waker is woken. A wake may come before the first item is in (a result
    // of a later item arrived first, as futures allow): poll again at each wake.
    let deadline = Instant::now() + LONG;
    let first_item = loop {
        let seen = wakes(&second);
        if let Poll::Ready(item) = poll(&mut stream, &second_waker) {
            break item;
        }
        while wakes(&second) == seen && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        check!(
            Instant::now() < deadline,
            "the second waker was never woken"
        );
    };
    check!(wakes(&second) >= 1, "ready without a wake");
    check_eq!(wakes(&first), 0);
    match first_item {
        Some(Ok(0)) => {}
        other => return Err(format!("the first item: {other:?}").into()),
    }
    let rest: Vec<multiproc::Result<u64>> = std::thread::scope(|scope| {
        scope
            .spawn(move || futures::executor::block_on(stream.collect::<Vec<_>>()))
            .join()
    })
    .map_err(|_| "the other thread panicked")?;
    let rest: multiproc::Result<Vec<u64>> = rest.into_iter().collect();
    check_eq!(rest?, vec![1, 4, 9, 16, 25]);
    Ok(())
}

fn main() {
    multiproc::init();
    let trials = trials!(each_method:
        thousand_awaits,
        dropped_future_leaves_the_pool_usable,
        no_busy_polling,
        imap_as_a_stream,
        cancel_map_async,
        cancel_and_kill_map_async,
        cancel_imap,
        polled_by_hand,
        pool_dropped_while_awaited,
        cancel_wakes_the_awaiting_task,
        cancel_and_kill_with_work_queued_behind,
        stream_wakers_replaced,
    );
    common::run(trials)
}
