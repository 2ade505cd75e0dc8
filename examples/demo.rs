//! A walk through multiproc, in the order of the tutorial it comes from: processes started with
//! each start method, the current process, a daemon, terminate, the subclass style, and the
//! pool (map, apply, apply_async, imap, starmap; a worker that dies does not hang it), and
//! the objects processes share: a queue, an event, a pipe, a counter in shared memory, and a
//! lock whose holder dies.
//!
//! Run it with `cargo run --example demo`.
use std::time::Duration;

use multiproc::{
    current_process, get_context, parent_process, process, Pool, Process, StartMethod,
};
use serde::{Deserialize, Serialize};

#[process]
fn spawn_process(i: u32) {
    let me = current_process();
    let method = me.start_method().map_or("?", StartMethod::as_str);
    println!(
        "  This is process: {i} ({}, pid {}, started by {method})",
        me.name(),
        me.pid()
    );
}

#[process]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[process]
fn non_daemon_process() {
    println!("  starting my Process");
    std::thread::sleep(Duration::from_millis(200));
    println!("  ending my Process");
}

#[process]
fn daemon_process() {
    loop {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[process]
fn child_process() {
    std::thread::sleep(Duration::from_secs(5));
    println!("  Finished function");
}

#[process]
fn crash(message: String) {
    panic!("{message}");
}

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[process]
fn die_on(n: u64, bad: u64) -> u64 {
    if n == bad {
        // SAFETY: a deliberate crash of this worker process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    n
}

#[process]
fn producer(q: multiproc::Queue<String>, done: multiproc::Event) {
    q.put("hello".to_string()).expect("put");
    done.set();
}

#[process]
fn bump(counter: multiproc::Value<i64>, n: u32) {
    for _ in 0..n {
        *counter.lock().expect("lock") += 1;
    }
}

#[process]
fn echo_upper(conn: multiproc::Connection<String, String>) {
    while let Ok(text) = conn.recv() {
        if conn.send(text.to_uppercase()).is_err() {
            break;
        }
    }
}

#[process]
fn die_holding(lock: multiproc::Lock) {
    let _held = lock.acquire().expect("acquire");
    // SAFETY: a deliberate death of this process while it holds the lock.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

#[derive(Serialize, Deserialize)]
struct MyProcess {
    id: u32,
}

#[process]
impl MyProcess {
    fn run(&mut self) {
        let parent = parent_process()
            .map(|p| p.name().to_string())
            .unwrap_or_default();
        println!(
            "  called run method in process: {} (id {}, parent {parent})",
            current_process().name(),
            self.id
        );
    }
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    println!("PID of Main process is: {}", current_process().pid());
    println!(
        "an annotated function stays callable: add(2, 3) = {}",
        add(2, 3)
    );

    for method in [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::ForkServer,
    ] {
        println!("start method {method}:");
        let ctx = get_context(method);
        for i in 0..3 {
            let p = ctx.process(spawn_process, i);
            p.start()?;
            p.join()?;
        }
    }

    println!("daemon:");
    let daemon = Process::new(daemon_process, ()).with_daemon(true);
    let non_daemon = Process::new(non_daemon_process, ());
    daemon.start()?;
    non_daemon.start()?;
    non_daemon.join()?;
    println!("  the daemon is still alive: {}", daemon.is_alive());

    println!("terminate:");
    let p = Process::new(child_process, ());
    p.start()?;
    p.terminate()?;
    println!(
        "  Child Process successfully terminated, exit code {}",
        p.join()?
    );

    println!("a panic in a child is data:");
    let p = Process::new(crash, "deliberate panic: something went wrong".to_string());
    p.start()?;
    let code = p.join()?;
    if let Some(panic) = p.remote_panic() {
        println!("  exit code {code}; the parent read: {panic}");
    }

    println!("subclass style:");
    for id in 0..5 {
        let p = Process::from(MyProcess { id });
        p.start()?;
        p.join()?;
    }

    println!("pool:");
    let pool = Pool::new(4)?;
    println!("  Pool : {:?}", pool.map(square, 0..5)?);
    println!("  apply(square, 7) = {}", pool.apply(square, 7)?);
    let later = pool.apply_async(square, 8);
    let total: u64 = pool
        .imap(square, 0..1_000_000)
        .chunksize(10_000)
        .sum::<multiproc::Result<u64>>()?;
    println!("  sum of imap(square, 0..1_000_000) = {total}");
    println!(
        "  starmap(add, [(1, 2), (3, 4)]) = {:?}",
        pool.starmap(add, vec![(1, 2), (3, 4)])?
    );
    println!("  apply_async(square, 8).get() = {}", later.get()?);
    match pool.map(die_on, (0..20).map(|n| (n, 13))) {
        Ok(_) => println!("  the worker should have died"),
        Err(err) => println!(
            "  a worker was SIGKILLed mid-map; the map fails instead of hanging:\n    {err}"
        ),
    }
    println!(
        "  the pool replaced it and goes on: {:?}",
        pool.map(square, 0..5)?
    );
    pool.close();
    pool.join()?;

    println!("shared objects:");
    let q = multiproc::Queue::<String>::new()?;
    let done = multiproc::Event::new()?;
    let p = Process::new(producer, (q.clone(), done.clone()));
    p.start()?;
    println!("  queue: {:?}", q.get_timeout(Duration::from_secs(5))?);
    println!(
        "  event set by the producer: {}",
        done.wait_timeout(Duration::from_secs(5))?
    );
    p.join()?;

    let counter = multiproc::Value::new(0i64)?;
    let bumpers: Vec<_> = (0..4)
        .map(|_| Process::new(bump, (counter.clone(), 10_000)))
        .collect();
    for p in &bumpers {
        p.start()?;
    }
    for p in &bumpers {
        p.join()?;
    }
    println!(
        "  4 processes x 10000 locked increments: {}",
        *counter.lock()?
    );

    let (here, there) = multiproc::Pipe::<String, String>::duplex()?;
    let p = Process::new(echo_upper, there);
    p.start()?;
    here.send("hello, pipe".to_string())?;
    println!("  pipe: {}", here.recv_timeout(Duration::from_secs(5))?);
    drop(here);
    p.join()?;

    let lock = multiproc::Lock::new()?;
    let p = Process::new(die_holding, lock.clone());
    p.start()?;
    p.join()?;
    match lock.acquire() {
        Ok(_) => println!("  the dead holder's lock was free?"),
        Err(err) => {
            println!("  a process died holding a lock; the next acquire says so:\n    {err}")
        }
    }
    println!("  and the lock works again: {}", lock.acquire().is_ok());

    println!(
        "leaving main: the daemon ({}) is terminated now",
        daemon.name()
    );
    Ok(())
}
