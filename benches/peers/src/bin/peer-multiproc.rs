//! multiproc's side of the peers benchmark.

use multiproc::{process, Connection, Pipe, Pool, Process, StartMethod};
use multiproc_peers::{median_per, report, scaled, APPLIES, MAP_ITEMS, STARTS, TRIPS};

#[process]
fn noop(n: u64) {
    std::hint::black_box(n);
}

#[process]
fn square(n: u64) -> u64 {
    n * n
}

#[process]
fn echo(conn: Connection<u64, u64>) {
    while let Ok(n) = conn.recv() {
        if conn.send(n).is_err() {
            break;
        }
    }
}

fn main() {
    multiproc::init();
    let starts = scaled(STARTS);
    for method in [
        StartMethod::Spawn,
        StartMethod::ForkServer,
        StartMethod::Fork,
    ] {
        let secs = median_per(starts, 1, || {
            let p = Process::new(noop, 7).with_start_method(method);
            p.start().expect("start");
            assert_eq!(p.join().expect("join"), 0);
        });
        report("start", &format!("multiproc-{method}"), secs);
    }

    let trips = scaled(TRIPS);
    let (ours, theirs) = Pipe::<u64, u64>::duplex().expect("Pipe::duplex");
    let child = Process::new(echo, theirs).with_start_method(StartMethod::ForkServer);
    child.start().expect("start echo");
    for n in 0..1000 {
        ours.send(n).expect("send");
        assert_eq!(ours.recv().expect("recv"), n);
    }
    let secs = median_per(trips, 1, || {
        ours.send(5).expect("send");
        assert_eq!(ours.recv().expect("recv"), 5);
    });
    report("rtt", "multiproc", secs);
    drop(ours);
    child.join().expect("join echo");

    let pool = Pool::builder()
        .processes(1)
        .start_method(StartMethod::ForkServer)
        .build()
        .expect("pool of 1");
    for n in 0..200 {
        assert_eq!(pool.apply(square, n).expect("apply"), n * n);
    }
    let secs = median_per(scaled(APPLIES), 1, || {
        assert_eq!(pool.apply(square, 9).expect("apply"), 81);
    });
    report("apply", "multiproc", secs);
    drop(pool);

    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::ForkServer)
        .build()
        .expect("pool of 2");
    let items = MAP_ITEMS;
    let secs = median_per(5, 1, || {
        let squares = pool.map(square, 0..items).expect("map");
        assert_eq!(squares.len() as u64, items);
    });
    report("map", "multiproc", secs);
}
