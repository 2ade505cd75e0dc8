//! A pool's results awaited under tokio: `apply_async` and the executor's `submit` are
//! futures, `imap` is a stream, all woken by the pool's own thread (no polling, no thread per
//! future).
//!
//! ```text
//! squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
//! sum of the cubes streamed: 2025
//! first to finish: 10 ms
//! ```
use std::time::Duration;

use futures::StreamExt;
use multiproc::{process, Executor};

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[process]
fn cube(n: u64) -> u64 {
    n * n * n
}

#[process]
fn nap(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

#[multiproc::main]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The workers first: the runtime's threads come after (a fork start never sees them).
    let executor = Executor::new(2)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Ten futures awaited together.
        let squares = futures::future::join_all((0..10).map(|n| executor.submit(square, n))).await;
        let squares: Vec<u64> = squares.into_iter().collect::<Result<_, _>>()?;
        println!("squares: {squares:?}");
        // A lazy map as a stream.
        let mut cubes = executor.pool().imap(cube, 0..10).into_stream();
        let mut sum = 0;
        while let Some(value) = cubes.next().await {
            sum += value?;
        }
        println!("sum of the cubes streamed: {sum}");
        // Whichever finishes first; the other is cancelled, its worker killed and replaced.
        let mut slow = executor.pool().apply_async(nap, 10_000);
        let mut fast = executor.pool().apply_async(nap, 10);
        let first = tokio::select! {
            done = &mut fast => done?,
            done = &mut slow => done?,
        };
        println!("first to finish: {first} ms");
        slow.cancel_and_kill();
        Ok::<(), multiproc::Error>(())
    })?;
    drop(runtime);
    executor.shutdown(true, true)?;
    Ok(())
}
