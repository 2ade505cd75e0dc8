//! `Value`: Python's docs example (a child sets a shared float, here pi), then 4 processes
//! each add 1 to a shared counter 10 000 times under its lock.
//!
//! ```text
//! 3.141592653589793
//! counter: 40000
//! ```
use multiproc::{process, Process, Value};

#[process]
fn f(n: Value<f64>) {
    n.set(std::f64::consts::PI).expect("set");
}

#[process]
fn count(counter: Value<i64>) {
    for _ in 0..10_000 {
        *counter.lock().expect("lock") += 1;
    }
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let num = Value::new(0.0f64)?;
    let p = Process::new(f, num.clone());
    p.start()?;
    p.join()?;
    println!("{}", num.get()?);

    let counter = Value::new(0i64)?;
    let workers: Vec<Process> = (0..4)
        .map(|_| Process::new(count, counter.clone()))
        .collect();
    for p in &workers {
        p.start()?;
    }
    for p in &workers {
        p.join()?;
    }
    println!("counter: {}", *counter.lock()?);
    Ok(())
}
