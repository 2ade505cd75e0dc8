//! crossmist's side of the peers benchmark: one-shot `run`, and a `Duplex` round trip.

use multiproc_peers::{median_per, report, scaled, STARTS, TRIPS};

#[crossmist::func]
fn ident(n: u64) -> u64 {
    std::hint::black_box(n)
}

#[crossmist::func]
fn echo(mut chan: crossmist::Duplex<u64, u64>) {
    while let Some(n) = chan.recv().expect("recv") {
        if chan.send(&n).is_err() {
            break;
        }
    }
}

#[crossmist::main]
fn main() {
    let secs = median_per(scaled(STARTS), 1, || {
        assert_eq!(ident.run(7).expect("run"), 7);
    });
    report("start", "crossmist", secs);

    let (mut ours, theirs) = crossmist::duplex::<u64, u64>().expect("duplex");
    let child = echo.spawn(theirs).expect("spawn echo");
    for n in 0..1000 {
        assert_eq!(ours.request(&n).expect("request"), n);
    }
    let secs = median_per(scaled(TRIPS), 1, || {
        assert_eq!(ours.request(&5).expect("request"), 5);
    });
    report("rtt", "crossmist", secs);
    drop(ours);
    child.join().expect("join echo");
}
