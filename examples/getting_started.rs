//! The first program of the README's "Getting started": a `#[process]` worker over a serde
//! struct, mapped on a pool of every core. `main` needs no `init()` on glibc.
//!
//! Prints:
//!
//! ```text
//! job 0: 3 words
//! job 1: 6 words
//! job 2: 9 words
//! job 3: 12 words
//! ```

use multiproc::{process, Pool};

#[derive(serde::Serialize, serde::Deserialize)]
struct Job {
    id: u32,
    text: String,
}

#[process]
fn words(job: Job) -> (u32, usize) {
    (job.id, job.text.split_whitespace().count())
}

fn main() -> multiproc::Result<()> {
    let pool = Pool::new(multiproc::cpu_count())?;
    let jobs = (0..4).map(|id| Job {
        id,
        text: "a few words ".repeat(id as usize + 1),
    });
    for (id, n) in pool.map(words, jobs)? {
        println!("job {id}: {n} words");
    }
    Ok(())
}
