//! `Barrier`: three processes meet at a barrier three times; the last to arrive runs the
//! action, which counts the rounds in a shared `Value`.
//!
//! ```text
//! process 0 passed round 0 as arrival 2
//! ...
//! 3 rounds, the action ran 3 times
//! ```
use std::time::Duration;

use multiproc::{process, Barrier, Process, Value};

#[process]
fn round_done(rounds: Value<u32>) {
    *rounds.lock().expect("lock") += 1;
}

#[process]
fn party(barrier: Barrier, id: u32) {
    for round in 0..3 {
        let index = barrier.wait().expect("barrier");
        println!("process {id} passed round {round} as arrival {index}");
    }
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let rounds = Value::new(0u32)?;
    let barrier = Barrier::builder(3)
        .action(round_done, rounds.clone())
        .timeout(Duration::from_secs(30))
        .build()?;
    let parties: Vec<Process> = (0..3)
        .map(|id| Process::new(party, (barrier.clone(), id)))
        .collect();
    for p in &parties {
        p.start()?;
    }
    for p in &parties {
        p.join()?;
    }
    println!("3 rounds, the action ran {} times", rounds.get()?);
    Ok(())
}
