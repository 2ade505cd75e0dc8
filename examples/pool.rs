//! The tutorial's "Pool class": the squares of 0..5 computed by a pool of 4 processes.
//!
//! ```text
//! Pool : [0, 1, 4, 9, 16]
//! ```
use multiproc::{process, Pool};

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let inputs: Vec<u64> = (0..5).collect();
    let pool = Pool::new(4)?;
    let outputs = pool.map(square, inputs)?;
    println!("Pool : {outputs:?}");
    pool.close();
    pool.join()
}
