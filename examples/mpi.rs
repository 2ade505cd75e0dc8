//! The tutorial's pool over MPI ranks, and a rank that runs a local pool of its own (one rank
//! per machine, a process per core). Build with `--features mpi`, run under an MPI launcher:
//!
//! ```text
//! $ cargo build --release --features mpi --example mpi
//! $ mpirun -np 3 target/release/examples/mpi
//! Pool : [0, 1, 4, 9, 16]
//! hybrid: 2 ranks x 2 processes, sum of squares below 20000 = 2666466670000
//! ```
//!
//! Rank 0 runs `main`; ranks 1 and 2 never do: they serve the pool's tasks.
use multiproc::{process, Pool};

#[process]
fn square(n: u64) -> u64 {
    n * n
}

/// One part of the work, given to a rank, which shares it among processes of its own.
#[process]
fn sum_of_squares(range: (u64, u64)) -> Result<u64, String> {
    let run = || -> multiproc::Result<u64> {
        let local = Pool::new(2)?;
        let squares = local.map(square, range.0..range.1)?;
        local.close();
        local.join()?;
        Ok(squares.iter().sum())
    };
    run().map_err(|err| err.to_string())
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let inputs: Vec<u64> = (0..5).collect();
    let pool = Pool::builder().mpi().build()?;
    let outputs = pool.map(square, inputs)?;
    println!("Pool : {outputs:?}");

    let ranks = pool.processes() as u64;
    let step = 20_000 / ranks;
    let parts: Vec<(u64, u64)> = (0..ranks)
        .map(|i| {
            (
                i * step,
                if i + 1 == ranks {
                    20_000
                } else {
                    (i + 1) * step
                },
            )
        })
        .collect();
    let sums = pool.map(sum_of_squares, parts)?;
    let total: u64 = sums
        .into_iter()
        .map(|sum| sum.unwrap_or_else(|err| panic!("a rank's local pool failed: {err}")))
        .sum();
    println!("hybrid: {ranks} ranks x 2 processes, sum of squares below 20000 = {total}");
    pool.close();
    pool.join()
}
