//! procspawn's side of the peers benchmark: one-shot `spawn` + `join`, and its `Pool`.

use multiproc_peers::{median_per, report, scaled, APPLIES, MAP_ITEMS, STARTS};

/// Tasks submitted before their results are collected, in `map`.
const IN_FLIGHT: u64 = 256;

fn main() {
    procspawn::init();
    let secs = median_per(scaled(STARTS), 1, || {
        let h = procspawn::spawn(7u64, std::hint::black_box);
        assert_eq!(h.join().expect("join"), 7);
    });
    report("start", "procspawn", secs);

    let pool = procspawn::Pool::new(1).expect("pool of 1");
    for n in 0..200u64 {
        assert_eq!(pool.spawn(n, |n| n * n).join().expect("join"), n * n);
    }
    let secs = median_per(scaled(APPLIES), 1, || {
        assert_eq!(pool.spawn(9u64, |n| n * n).join().expect("join"), 81);
    });
    report("apply", "procspawn", secs);
    pool.shutdown();

    let pool = procspawn::Pool::new(2).expect("pool of 2");
    let secs = median_per(5, 1, || {
        // At most IN_FLIGHT handles at once: each pending task holds descriptors (its
        // ipc-channel pair), and all 10_000 at once exceed the usual limit of 1024.
        let mut squares = Vec::with_capacity(MAP_ITEMS as usize);
        let mut next = 0;
        while next < MAP_ITEMS {
            let end = (next + IN_FLIGHT).min(MAP_ITEMS);
            let handles: Vec<_> = (next..end).map(|n| pool.spawn(n, |n| n * n)).collect();
            squares.extend(handles.into_iter().map(|h| h.join().expect("join")));
            next = end;
        }
        assert_eq!(squares.len() as u64, MAP_ITEMS);
    });
    report("map", "procspawn", secs);
    pool.shutdown();
}
