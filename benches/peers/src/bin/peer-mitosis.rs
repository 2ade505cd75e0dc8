//! mitosis's side of the peers benchmark: one-shot `spawn` + `join`.

use multiproc_peers::{median_per, report, scaled, STARTS};

fn main() {
    mitosis::init();
    let secs = median_per(scaled(STARTS), 1, || {
        let h = mitosis::spawn(7u64, std::hint::black_box);
        assert_eq!(h.join().expect("join"), 7);
    });
    report("start", "mitosis", secs);
}
