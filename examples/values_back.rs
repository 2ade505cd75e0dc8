//! Values back from a process: `multiproc::spawn` starts a `#[process]` function in a child
//! process and `join` returns what it returned, as `std::thread::spawn` does for a thread. A
//! panic, an exit code or a signal in the child is an `Err` that says what happened.

use multiproc::{process, ErrorKind, ProcessBuilder, StartMethod};

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Stats {
    count: usize,
    mean: f64,
}

#[process]
fn stats(values: Vec<f64>) -> Stats {
    Stats {
        count: values.len(),
        mean: values.iter().sum::<f64>() / values.len() as f64,
    }
}

#[process]
fn inverse(n: u64) -> f64 {
    if n == 0 {
        panic!("deliberate panic: zero has no inverse");
    }
    1.0 / n as f64
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    // One child per number, all running at once; each join gives back its value.
    let handles = (1..=4)
        .map(|n| multiproc::spawn(square, n))
        .collect::<multiproc::Result<Vec<_>>>()?;
    let squares = handles
        .into_iter()
        .map(|handle| handle.join())
        .collect::<multiproc::Result<Vec<u64>>>()?;
    println!("squares: {squares:?}");

    // A name and a start method of its own; any serde type comes back.
    let summary = ProcessBuilder::new()
        .name("stats")
        .start_method(StartMethod::Spawn)
        .spawn(stats, vec![1.0, 2.0, 4.5])?
        .join()?;
    println!("stats: {} values, mean {:.2}", summary.count, summary.mean);

    // A panic in the child is an error in the parent, with its message and location.
    match multiproc::spawn(inverse, 0)?.join() {
        Ok(value) => println!("inverse: {value}"),
        Err(err) if err.kind() == ErrorKind::Panicked => {
            let panic = err.remote_panic().expect("a panic carries its report");
            println!("the child panicked: {}", panic.message);
        }
        Err(err) => return Err(err),
    }
    Ok(())
}
