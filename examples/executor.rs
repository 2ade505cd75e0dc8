//! Python's `ProcessPoolExecutor` example (the `concurrent.futures` docs): which of six large
//! numbers are prime, checked in parallel by an executor's `map`. With the `progress` feature
//! (`cargo run --example executor --features progress`) a progress bar is drawn on standard
//! error as the answers come.
//!
//! ```text
//! 112272535095293 is prime: True
//! 112582705942171 is prime: True
//! 112272535095293 is prime: True
//! 115280095190773 is prime: True
//! 115797848077099 is prime: True
//! 1099726899285419 is prime: False
//! ```
use multiproc::{process, Executor};

const PRIMES: [u64; 6] = [
    112272535095293,
    112582705942171,
    112272535095293,
    115280095190773,
    115797848077099,
    1099726899285419,
];

#[process]
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n == 2 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let sqrt_n = (n as f64).sqrt().floor() as u64;
    (3..=sqrt_n).step_by(2).all(|i| !n.is_multiple_of(i))
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let executor = Executor::new(multiproc::cpu_count())?;
    let answers = executor.map(is_prime, PRIMES);
    #[cfg(feature = "progress")]
    let answers = answers.on_progress(multiproc::progress::bar());
    for (number, prime) in PRIMES.iter().zip(answers) {
        let prime = if prime? { "True" } else { "False" };
        println!("{number} is prime: {prime}");
    }
    Ok(())
}
