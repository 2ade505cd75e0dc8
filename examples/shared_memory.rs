//! `SharedMemory`: a pool worker fills a 16 MiB segment and returns it (the bytes are not
//! copied back: the parent maps the worker's pages), then a named segment that a child opens
//! by name.
//!
//! ```text
//! a worker filled 16777216 bytes; the parent reads byte 12345: 45
//! the child wrote into "multiproc-example-<pid>": hello, parent
//! ```
use multiproc::{process, Pool, Process, SharedMemory};

#[process]
fn fill(len: usize) -> SharedMemory {
    let shm = SharedMemory::new(len).expect("segment");
    let bytes: Vec<u8> = (0..len).map(|i| (i % 100) as u8).collect();
    shm.write_at(0, &bytes).expect("write");
    shm
}

#[process]
fn greet(name: String) {
    let shm = SharedMemory::open_named(&name).expect("open");
    shm.write_at(0, b"hello, parent").expect("write");
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let pool = Pool::new(1)?;
    let shm = pool.apply(fill, 16 << 20)?;
    let mut byte = [0u8];
    shm.read_at(12345, &mut byte)?;
    println!(
        "a worker filled {} bytes; the parent reads byte 12345: {}",
        shm.len(),
        byte[0]
    );
    pool.close();
    pool.join()?;

    let name = format!("multiproc-example-{}", std::process::id());
    let named = SharedMemory::create_named(&name, 64)?;
    let p = Process::new(greet, name.clone());
    p.start()?;
    p.join()?;
    named.unlink()?; // named segments live until unlinked
    let mut text = [0u8; 13];
    named.read_at(0, &mut text)?;
    println!(
        "the child wrote into {name:?}: {}",
        String::from_utf8_lossy(&text)
    );
    Ok(())
}
