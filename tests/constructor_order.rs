//! A spawned child is entered before `main` by a constructor, and workers register from
//! constructors of their own (inventory's, one per worker, in the crate that defines it),
//! which the linker orders as it likes. The child must not depend on that order.
//!
//! Here the library's constructor is made to run before every registration: from a slot of
//! its own in `.init_array.00200`, which the linker puts before every plain `.init_array`
//! section (where inventory registers). Its children must still find workers of three crates
//! (this one, `fixture-squares`, and the runtime's own pool worker) and agree with the parent on
//! the registry's fingerprint: they would not if the child looked a name up before every
//! registration had run. Another slot just before it records how many workers were registered
//! then (none), so that this test cannot pass because the slot ran late.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::ffi::{c_char, c_int};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use multiproc::__private::{inventory, Entry};
use multiproc::{process, Pool, Process, StartMethod};

type Constructor = unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char);

/// The library's constructor, run before every registration.
#[used]
#[link_section = ".init_array.00200"]
static EARLY: Constructor = multiproc::__private::child_constructor;

/// How many workers were registered just before [`EARLY`] ran (`usize::MAX`: not run).
static REGISTERED_BEFORE: AtomicUsize = AtomicUsize::new(usize::MAX);

unsafe extern "C" fn count_registered(_: c_int, _: *const *const c_char, _: *const *const c_char) {
    REGISTERED_BEFORE.store(inventory::iter::<Entry>().count(), Ordering::SeqCst);
}

#[used]
#[link_section = ".init_array.00199"]
static COUNT: Constructor = count_registered;

const LONG: Duration = Duration::from_secs(60);

#[process]
fn cube(x: u64) -> u64 {
    x * x * x
}

#[process]
fn exit_with(code: i32) {
    std::process::exit(code);
}

fn registered() -> Vec<&'static str> {
    inventory::iter::<Entry>().map(Entry::name).collect()
}

#[test]
fn the_early_slot_runs_before_every_registration() {
    assert_eq!(REGISTERED_BEFORE.load(Ordering::SeqCst), 0);
    let names = registered();
    for name in [
        "constructor_order::cube",
        "fixture_squares::square",
        "multiproc::pool::worker",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
}

fn workers_of_three_crates(method: StartMethod) {
    let p = Process::new(exit_with, 5).with_start_method(method);
    p.start().expect("start");
    assert_eq!(p.join_timeout(LONG).expect("join"), Some(5), "{method}");
    let pool = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .expect("pool");
    assert_eq!(pool.apply(cube, 3).expect("this crate's worker"), 27);
    assert_eq!(
        pool.apply(fixture_squares::square, 7)
            .expect("fixture-squares' worker"),
        49
    );
    pool.close();
    pool.join().expect("join");
    assert_eq!(fixture_squares::sum_of_squares(4, method.as_str()), Ok(14));
}

#[test]
fn spawned_children_find_workers_of_three_crates() {
    workers_of_three_crates(StartMethod::Spawn);
}

#[test]
fn forkserver_children_find_workers_of_three_crates() {
    workers_of_three_crates(StartMethod::ForkServer);
}
