//! The synchronization primitives under every start method: ports of CPython's `_TestLock`,
//! `_TestSemaphore`, `_TestCondition`, `_TestEvent` and `_TestBarrier`, a holder of each lock
//! kind SIGKILLed while it holds it, a waiter killed while it waits, every type passed to a
//! process, a pool initializer, a pool task and back as a result, and no leaked descriptor or
//! mapping after 1000 create/drop cycles.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{finish, finish_with, kill_self, start, Outcome, LONG};
use libtest_mimic::Failed;
use multiproc::{
    process, Barrier, BoundedSemaphore, Condition, ErrorKind, Event, Lock, Pool, Process, RLock,
    RawArray, Semaphore, StartMethod, Value,
};

/// CPython's `TIMEOUT1`-`TIMEOUT3` and `DELTA`.
const TIMEOUT: Duration = Duration::from_millis(100);
const DELTA: Duration = Duration::from_millis(100);
/// Slack for a wait that must return "promptly".
const PROMPT: Duration = Duration::from_secs(5);

/// Waits (polling, bounded) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> Outcome {
    let deadline = Instant::now() + LONG;
    while !cond() {
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {LONG:?}").into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Runs `f`, which is expected to panic, without printing the panic.
fn quiet_panic<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result
}

fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Lock and RLock (_TestLock)

#[process]
fn lock_is_busy(lock: Lock) {
    assert!(lock.try_acquire().unwrap().is_none(), "try_acquire");
    let (got, took) = timed(|| lock.acquire_timeout(TIMEOUT).unwrap());
    assert!(got.is_none(), "acquire_timeout succeeded on a held lock");
    assert!(took >= TIMEOUT, "acquire_timeout returned after {took:?}");
}

#[process]
fn lock_is_free(lock: Lock) {
    let guard = lock.acquire().unwrap();
    assert!(lock.try_acquire().unwrap().is_none());
    drop(guard);
}

fn lock(m: StartMethod) -> Outcome {
    let lock = Lock::new()?;
    let guard = lock.acquire()?;
    check!(
        lock.try_acquire()?.is_none(),
        "acquire(False) of a held lock"
    );
    check_eq!(lock.acquire().unwrap_err().kind(), ErrorKind::InvalidInput);
    check_eq!(
        lock.acquire_timeout(TIMEOUT).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    finish(&start(m, lock_is_busy, lock.clone())?)?;
    drop(guard);
    finish(&start(m, lock_is_free, lock.clone())?)?;
    // `with lock:` and a guard dropped by a panic both release it.
    let unwound = quiet_panic(|| {
        let _guard = lock.acquire().unwrap();
        panic!("deliberate panic: while holding the lock");
    });
    check!(unwound.is_err(), "the closure panicked");
    check!(
        lock.try_acquire()?.is_some(),
        "released by the unwinding guard"
    );
    Ok(())
}

#[process]
fn rlock_is_busy(rlock: RLock) {
    assert!(rlock.try_acquire().unwrap().is_none());
    assert!(rlock.acquire_timeout(TIMEOUT).unwrap().is_none());
}

#[process]
fn rlock_is_free(rlock: RLock) {
    let a = rlock.acquire().unwrap();
    let b = rlock.try_acquire().unwrap().expect("recursive");
    drop((b, a));
}

fn rlock(m: StartMethod) -> Outcome {
    let rlock = RLock::new()?;
    let a = rlock.acquire()?;
    let b = rlock.acquire()?;
    let c = rlock.try_acquire()?.ok_or("recursive try_acquire")?;
    let d = rlock
        .acquire_timeout(TIMEOUT)?
        .ok_or("recursive acquire_timeout")?;
    drop((d, c));
    finish(&start(m, rlock_is_busy, rlock.clone())?)?;
    drop(b);
    finish(&start(m, rlock_is_busy, rlock.clone())?)?; // still held once
    drop(a);
    finish(&start(m, rlock_is_free, rlock.clone())?)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Semaphore and BoundedSemaphore (_TestSemaphore)

/// CPython's `_test_semaphore`, on a semaphore of value 2.
fn semaphore_steps(
    value: &dyn Fn() -> u32,
    acquire: &dyn Fn() -> bool,
    try_acquire: &dyn Fn() -> bool,
    release: &dyn Fn() -> multiproc::Result<()>,
) -> Outcome {
    check_eq!(value(), 2);
    check!(acquire(), "acquire");
    check_eq!(value(), 1);
    check!(acquire(), "acquire");
    check_eq!(value(), 0);
    check!(!try_acquire(), "acquire(False) at 0");
    check_eq!(value(), 0);
    release()?;
    check_eq!(value(), 1);
    release()?;
    check_eq!(value(), 2);
    Ok(())
}

#[process]
fn sem_take(sem: Semaphore, n: u32) {
    for _ in 0..n {
        sem.acquire_timeout(LONG)
            .unwrap()
            .expect("a unit within the timeout")
            .forget();
    }
}

#[process]
fn sem_give(sem: Semaphore, n: u32) {
    for _ in 0..n {
        sem.release().unwrap();
    }
}

fn semaphore(m: StartMethod) -> Outcome {
    let sem = Semaphore::new(2)?;
    semaphore_steps(
        &|| sem.get_value(),
        &|| sem.acquire().map(|g| g.forget()).is_ok(),
        &|| sem.try_acquire().map(|g| g.forget()).is_some(),
        &|| sem.release(),
    )?;
    sem.release()?;
    check_eq!(sem.get_value(), 3);
    sem.release()?;
    check_eq!(sem.get_value(), 4);
    // Guards give their unit back.
    {
        let _a = sem.acquire()?;
        let _b = sem.try_acquire().ok_or("a unit")?;
        check_eq!(sem.get_value(), 2);
    }
    check_eq!(sem.get_value(), 4);
    // Across processes: a child blocks until the parent releases, and the other way round.
    let empty = Semaphore::new(0)?;
    let taker = start(m, sem_take, (empty.clone(), 3))?;
    std::thread::sleep(DELTA);
    check!(taker.is_alive(), "the child waits for units");
    for _ in 0..3 {
        empty.release()?;
    }
    finish(&taker)?;
    check_eq!(empty.get_value(), 0);
    let giver = start(m, sem_give, (empty.clone(), 2))?;
    for _ in 0..2 {
        empty
            .acquire_timeout(LONG)?
            .ok_or("a unit from the child")?
            .forget();
    }
    finish(&giver)?;
    check!(
        Semaphore::new(multiproc::SEM_VALUE_MAX + 1).is_err(),
        "past SEM_VALUE_MAX"
    );
    Ok(())
}

fn semaphore_timeout(_m: StartMethod) -> Outcome {
    let sem = Semaphore::new(0)?;
    check!(sem.try_acquire().is_none(), "acquire(False)");
    let (got, took) = timed(|| sem.acquire_timeout(Duration::ZERO));
    check!(got?.is_none(), "acquire(timeout=0)");
    check!(took < PROMPT, "acquire(timeout=0) took {took:?}");
    for _ in 0..3 {
        let (got, took) = timed(|| sem.acquire_timeout(TIMEOUT));
        check!(got?.is_none(), "acquire(timeout)");
        check!(
            took >= TIMEOUT && took < TIMEOUT + PROMPT,
            "acquire(timeout={TIMEOUT:?}) took {took:?}"
        );
    }
    Ok(())
}

#[process]
fn bounded_over_release(sem: BoundedSemaphore) {
    let err = sem.release().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    sem.acquire().unwrap().forget();
}

fn bounded_semaphore(m: StartMethod) -> Outcome {
    let sem = BoundedSemaphore::new(2)?;
    semaphore_steps(
        &|| sem.get_value(),
        &|| sem.acquire().map(|g| g.forget()).is_ok(),
        &|| sem.try_acquire().map(|g| g.forget()).is_some(),
        &|| sem.release(),
    )?;
    check_eq!(sem.max_value(), 2);
    // ValueError in Python: released more than acquired.
    check_eq!(sem.release().unwrap_err().kind(), ErrorKind::InvalidInput);
    check_eq!(sem.get_value(), 2);
    finish(&start(m, bounded_over_release, sem.clone())?)?;
    check_eq!(sem.get_value(), 1);
    sem.release()?;
    check!(sem.release().is_err(), "bounded at 2");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Event (_TestEvent)

#[process]
fn set_event_later(event: Event, delay_ms: u64) {
    std::thread::sleep(Duration::from_millis(delay_ms));
    event.set();
}

#[process]
fn wait_event(event: Event, done: Event) {
    assert!(event.wait_timeout(LONG).unwrap(), "set within the timeout");
    done.set();
}

fn event(m: StartMethod) -> Outcome {
    let event = Event::new()?;
    check!(!event.is_set(), "a new event is clear");
    let (set, took) = timed(|| event.wait_timeout(Duration::ZERO));
    check!(!set? && took < PROMPT, "wait(0.0) took {took:?}");
    let (set, took) = timed(|| event.wait_timeout(TIMEOUT));
    check!(
        !set? && took >= TIMEOUT && took < TIMEOUT + PROMPT,
        "wait({TIMEOUT:?}) took {took:?}"
    );
    event.set();
    check!(event.is_set(), "set");
    event.wait()?;
    let (set, took) = timed(|| event.wait_timeout(TIMEOUT));
    check!(set? && took < TIMEOUT, "wait on a set event took {took:?}");
    event.clear();
    check!(!event.is_set(), "clear");
    // Set by another process while this one waits.
    let p = start(
        m,
        set_event_later,
        (event.clone(), 2 * TIMEOUT.as_millis() as u64),
    )?;
    check!(event.wait_timeout(LONG)?, "set by the child");
    finish(&p)?;
    // Several processes wait; one set wakes them all.
    event.clear();
    let dones: Vec<Event> = (0..3).map(|_| Event::new()).collect::<Result<_, _>>()?;
    let waiters: Vec<Process> = dones
        .iter()
        .map(|done| start(m, wait_event, (event.clone(), done.clone())))
        .collect::<Result<_, _>>()?;
    std::thread::sleep(DELTA);
    check!(
        dones.iter().all(|d| !d.is_set()),
        "nobody passed a clear event"
    );
    event.set();
    for p in &waiters {
        finish(p)?;
    }
    check!(dones.iter().all(Event::is_set), "every waiter woke");
    // A set followed at once by a clear still wakes the processes that waited.
    event.clear();
    let ready = Semaphore::new(0)?;
    let done = Event::new()?;
    let p = start(
        m,
        pulse_waiter,
        (event.clone(), ready.clone(), done.clone()),
    )?;
    ready.acquire_timeout(LONG)?.ok_or("waiter ready")?.forget();
    std::thread::sleep(DELTA);
    event.set();
    event.clear();
    finish(&p)?;
    check!(done.is_set(), "the pulse woke the waiter");
    Ok(())
}

#[process]
fn pulse_waiter(event: Event, ready: Semaphore, done: Event) {
    ready.release().unwrap();
    assert!(event.wait_timeout(LONG).unwrap(), "woken by the set");
    done.set();
}

// ---------------------------------------------------------------------------------------------
// Condition (_TestCondition)

/// CPython's `_TestCondition.f`: says it sleeps, waits (with a timeout or not), says it woke.
#[process]
fn cond_waiter(cond: Condition, sleeping: Semaphore, woken: Semaphore, timeout_ms: Option<u64>) {
    let guard = cond.acquire().unwrap();
    sleeping.release().unwrap();
    let guard = match timeout_ms {
        Some(ms) => {
            cond.wait_timeout(guard, Duration::from_millis(ms))
                .unwrap()
                .0
        }
        None => cond.wait(guard).unwrap(),
    };
    woken.release().unwrap();
    drop(guard);
}

/// Waits until `n` units are available, then checks that no more come within `DELTA`.
fn exactly(sem: &Semaphore, n: u32, what: &str) -> Outcome {
    eventually(what, || sem.get_value() >= n)?;
    std::thread::sleep(DELTA);
    check_eq!(sem.get_value(), n);
    Ok(())
}

struct Waiters {
    sleeping: Semaphore,
    woken: Semaphore,
    procs: Vec<Process>,
}

fn start_waiters(
    m: StartMethod,
    cond: &Condition,
    n: usize,
    timeout_ms: Option<u64>,
    into: Option<Waiters>,
) -> Result<Waiters, Failed> {
    let mut w = match into {
        Some(w) => w,
        None => Waiters {
            sleeping: Semaphore::new(0)?,
            woken: Semaphore::new(0)?,
            procs: Vec::new(),
        },
    };
    for _ in 0..n {
        w.procs.push(start(
            m,
            cond_waiter,
            (
                cond.clone(),
                w.sleeping.clone(),
                w.woken.clone(),
                timeout_ms,
            ),
        )?);
    }
    // Each says it sleeps with the lock held: once the parent gets the lock, it waits.
    for _ in 0..n {
        w.sleeping
            .acquire_timeout(LONG)?
            .ok_or("a waiter did not start")?
            .forget();
    }
    Ok(w)
}

fn condition_notify(m: StartMethod) -> Outcome {
    let cond = Condition::new()?;
    let w = start_waiters(m, &cond, 2, None, None)?;
    drop(cond.acquire()?); // both are in wait now
    std::thread::sleep(DELTA);
    check_eq!(w.woken.get_value(), 0);
    cond.notify_one()?;
    exactly(&w.woken, 1, "one notify wakes one waiter")?;
    let guard = cond.acquire()?;
    cond.notify_one()?; // with the lock held
    drop(guard);
    exactly(&w.woken, 2, "the second notify wakes the other")?;
    for p in &w.procs {
        finish(p)?;
    }
    Ok(())
}

fn condition_notify_all(m: StartMethod) -> Outcome {
    let cond = Condition::new()?;
    // Three that time out...
    let w = start_waiters(m, &cond, 3, Some(TIMEOUT.as_millis() as u64), None)?;
    exactly(&w.woken, 3, "waiters with a timeout wake by themselves")?;
    for _ in 0..3 {
        w.woken.try_acquire().ok_or("woken")?.forget();
    }
    // ...then three that do not.
    let w = start_waiters(m, &cond, 3, None, Some(w))?;
    drop(cond.acquire()?);
    std::thread::sleep(DELTA);
    check_eq!(w.woken.get_value(), 0);
    cond.notify_all()?;
    exactly(&w.woken, 3, "notify_all wakes every waiter")?;
    for p in &w.procs {
        finish(p)?;
    }
    Ok(())
}

fn condition_notify_n(m: StartMethod) -> Outcome {
    let cond = Condition::new()?;
    let w = start_waiters(m, &cond, 3, None, None)?;
    drop(cond.acquire()?);
    cond.notify(2)?;
    exactly(&w.woken, 2, "notify(2) wakes two")?;
    cond.notify(5)?;
    exactly(&w.woken, 3, "notify(5) wakes the last one")?;
    cond.notify(5)?; // nobody left: nothing happens
    for p in &w.procs {
        finish(p)?;
    }
    Ok(())
}

#[process]
fn wait_for_four(cond: Condition, state: Value<i32>, sleeping: Semaphore) {
    let guard = state.lock().unwrap();
    sleeping.release().unwrap();
    let guard = cond.wait_for(guard, |s| **s == 4).unwrap();
    assert_eq!(*guard, 4);
    drop(guard);
    // wait_for with a timeout that runs out: the predicate's last value, false.
    let (guard, ok) = cond
        .wait_for_timeout(state.lock().unwrap(), TIMEOUT, |s| **s == 5)
        .unwrap();
    assert!(!ok, "a predicate that never holds");
    assert_eq!(*guard, 4);
}

fn condition_timeout_and_wait_for(m: StartMethod) -> Outcome {
    let cond = Condition::new()?;
    let (waited, took) = timed(|| cond.wait_timeout(cond.acquire().unwrap(), TIMEOUT));
    let (guard, notified) = waited?;
    check!(!notified, "wait(timeout) with nobody to notify");
    check!(
        took >= TIMEOUT && took < TIMEOUT + PROMPT,
        "wait(timeout) took {took:?}"
    );
    let (guard, ok) = cond.wait_for_timeout(guard, TIMEOUT, |_| false)?;
    check!(!ok, "wait_for_timeout of a false predicate");
    drop(guard);
    // CPython's test_waitfor: the child waits for a shared state the parent advances.
    let state = Value::new(0i32)?;
    let cond = Condition::with_lock(state.get_lock().clone())?;
    let sleeping = Semaphore::new(0)?;
    let p = start(
        m,
        wait_for_four,
        (cond.clone(), state.clone(), sleeping.clone()),
    )?;
    sleeping
        .acquire_timeout(LONG)?
        .ok_or("child did not start")?
        .forget();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(10));
        let mut s = state.lock()?;
        *s += 1;
        cond.notify_all()?;
    }
    finish(&p)?;
    // A guard of another lock is refused.
    let other = Lock::new()?;
    let err = cond.wait(other.acquire()?).unwrap_err();
    check_eq!(err.kind(), ErrorKind::InvalidInput);
    check!(
        other.try_acquire()?.is_some(),
        "the refused guard was dropped"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Barrier (_TestBarrier)

const PASSES: usize = 5;

#[process]
fn count_pass(passes: Value<u32>) {
    *passes.lock().unwrap() += 1;
}

#[process]
fn panicking_action() {
    panic!("deliberate panic: the barrier action failed");
}

#[process]
fn die_in_action() {
    kill_self();
}

/// A party: `passes` waits, writing its index of each pass at `indexes[pass * parties + slot]`.
#[process]
fn barrier_party(barrier: Barrier, indexes: RawArray<u32>, slot: usize, passes: usize) {
    let parties = barrier.parties();
    for pass in 0..passes {
        let index = barrier.wait().unwrap();
        indexes.set(pass * parties + slot, index as u32).unwrap();
    }
}

#[process]
fn barrier_expect_broken(barrier: Barrier) {
    let err = barrier.wait().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenBarrier, "{err}");
}

#[process]
fn barrier_thousand(barrier: Barrier, n: usize) {
    for _ in 0..n {
        barrier.wait().unwrap();
    }
}

fn barrier(m: StartMethod) -> Outcome {
    // test_barrier, test_wait_return, test_action: 3 parties, PASSES passes.
    let passes = Value::new(0u32)?;
    let barrier = Barrier::builder(3)
        .action(count_pass, passes.clone())
        .timeout(LONG)
        .build()?;
    check_eq!((barrier.parties(), barrier.n_waiting()), (3, 0));
    let indexes = RawArray::<u32>::new(3 * PASSES)?;
    let children: Vec<Process> = (1..3)
        .map(|slot| {
            start(
                m,
                barrier_party,
                (barrier.clone(), indexes.clone(), slot, PASSES),
            )
        })
        .collect::<Result<_, _>>()?;
    for pass in 0..PASSES {
        let index = barrier.wait()?;
        indexes.set(pass * 3, index as u32)?;
    }
    for p in &children {
        finish(p)?;
    }
    check_eq!(passes.get()?, PASSES as u32);
    let all = indexes.to_vec();
    for pass in all.chunks(3) {
        let mut pass = pass.to_vec();
        pass.sort();
        check_eq!(pass, vec![0, 1, 2]);
    }
    check!(!barrier.broken(), "not broken");
    check_eq!(barrier.n_waiting(), 0);
    Ok(())
}

fn barrier_abort_and_reset(m: StartMethod) -> Outcome {
    // test_abort: a waiting party fails once the barrier is aborted, and so do later ones.
    let barrier = Barrier::builder(2).timeout(LONG).build()?;
    let p = start(m, barrier_expect_broken, barrier.clone())?;
    eventually("the child waits", || barrier.n_waiting() == 1)?;
    barrier.abort()?;
    finish(&p)?;
    check!(barrier.broken(), "aborted");
    check_eq!(barrier.wait().unwrap_err().kind(), ErrorKind::BrokenBarrier);
    // test_reset: usable again.
    barrier.reset()?;
    check!(!barrier.broken(), "reset");
    let indexes = RawArray::<u32>::new(2)?;
    let p = start(m, barrier_party, (barrier.clone(), indexes.clone(), 1, 1))?;
    barrier.wait()?;
    finish(&p)?;
    // reset while a party waits: that party fails, the barrier is usable after.
    let p = start(m, barrier_expect_broken, barrier.clone())?;
    eventually("the child waits", || barrier.n_waiting() == 1)?;
    barrier.reset()?;
    finish(&p)?;
    check!(!barrier.broken(), "reset is not broken");
    let p = start(m, barrier_party, (barrier.clone(), indexes.clone(), 1, 1))?;
    barrier.wait()?;
    finish(&p)?;
    Ok(())
}

fn barrier_timeout_and_action_panic(m: StartMethod) -> Outcome {
    // test_timeout / test_default_timeout: the wait that runs out breaks the barrier.
    let barrier = Barrier::builder(2).timeout(TIMEOUT).build()?;
    let (err, took) = timed(|| barrier.wait().unwrap_err());
    check_eq!(err.kind(), ErrorKind::BrokenBarrier);
    check!(
        took >= TIMEOUT && took < TIMEOUT + PROMPT,
        "default timeout took {took:?}"
    );
    check!(barrier.broken(), "broken by the timeout");
    barrier.reset()?;
    let (err, took) = timed(|| barrier.wait_timeout(2 * TIMEOUT).unwrap_err());
    check_eq!(err.kind(), ErrorKind::BrokenBarrier);
    check!(took >= 2 * TIMEOUT, "explicit timeout took {took:?}");
    // test_action with an exception: the last party's wait panics, the others break.
    let barrier = Barrier::builder(2)
        .action(panicking_action, ())
        .timeout(LONG)
        .build()?;
    let p = start(m, barrier_expect_broken, barrier.clone())?;
    eventually("the child waits", || barrier.n_waiting() == 1)?;
    let panicked = quiet_panic(|| barrier.wait());
    check!(panicked.is_err(), "the action's panic propagates");
    finish(&p)?;
    check!(barrier.broken(), "a failed action breaks the barrier");
    // test_single_thread
    let single = Barrier::new(1)?;
    for _ in 0..3 {
        check_eq!(single.wait()?, 0);
    }
    check!(Barrier::new(0).is_err(), "zero parties");
    Ok(())
}

fn barrier_thousand_passes(m: StartMethod) -> Outcome {
    let barrier = Barrier::builder(2).timeout(LONG).build()?;
    let p = start(m, barrier_thousand, (barrier.clone(), 1000))?;
    for _ in 0..1000 {
        barrier.wait()?;
    }
    finish(&p)
}

// ---------------------------------------------------------------------------------------------
// Owner death: a holder SIGKILLed while it holds the lock

#[process]
fn die_holding_lock(lock: Lock, ready: Event) {
    let _guard = lock.acquire().unwrap();
    ready.set();
    std::thread::sleep(DELTA);
    kill_self();
}

#[process]
fn die_holding_rlock(rlock: RLock, ready: Event) {
    let _a = rlock.acquire().unwrap();
    let _b = rlock.acquire().unwrap(); // twice: recursion does not hide the death
    ready.set();
    std::thread::sleep(DELTA);
    kill_self();
}

#[process]
fn die_holding_condition(cond: Condition, ready: Event) {
    let _guard = cond.acquire().unwrap();
    ready.set();
    cond.notify_all().unwrap(); // wake the parent's wait, which then needs the lock
    std::thread::sleep(DELTA);
    kill_self();
}

/// The parent blocks in an acquire while the child holds the lock and dies: the acquire must
/// return OwnerDied promptly, and the lock must work after.
fn expect_owner_died<G>(what: &str, acquire: impl FnOnce() -> multiproc::Result<G>) -> Outcome {
    let (got, took) = timed(acquire);
    match got {
        Ok(_) => {
            Err(format!("{what}: returned (acquired, or timed out), expected OwnerDied").into())
        }
        Err(err) if err.kind() == ErrorKind::OwnerDied => {
            check!(took < PROMPT, "{what}: OwnerDied after {took:?}");
            Ok(())
        }
        Err(err) => Err(format!("{what}: {err:?}, expected OwnerDied").into()),
    }
}

fn owner_died_lock(m: StartMethod) -> Outcome {
    let lock = Lock::new()?;
    let ready = Event::new()?;
    let p = start(m, die_holding_lock, (lock.clone(), ready.clone()))?;
    check!(ready.wait_timeout(LONG)?, "the child took the lock");
    expect_owner_died("Lock::acquire_timeout", || lock.acquire_timeout(LONG))?;
    finish_with(&p, -libc::SIGKILL)?;
    drop(lock.acquire()?);
    check!(lock.try_acquire()?.is_some(), "usable after recovery");
    // try_acquire and acquire see it too, once per death, and so do acquires that wait less
    // than the lock's first look at its owner (1 ms): a caller that polls with them used to
    // time out for good.
    let short = |wait: Duration| move |lock: &Lock| lock.acquire_timeout(wait).map(|g| g.is_some());
    type Acquire<'a> = &'a dyn Fn(&Lock) -> multiproc::Result<bool>;
    let ways: [(&str, Acquire); 4] = [
        ("try_acquire", &|lock| {
            lock.try_acquire().map(|g| g.is_some())
        }),
        ("acquire", &|lock| lock.acquire().map(|_| true)),
        ("acquire_timeout(0)", &short(Duration::ZERO)),
        ("acquire_timeout(200us)", &short(Duration::from_micros(200))),
    ];
    for (how, acquire) in ways {
        ready.clear();
        let p = start(m, die_holding_lock, (lock.clone(), ready.clone()))?;
        check!(ready.wait_timeout(LONG)?, "the child took the lock");
        finish_with(&p, -libc::SIGKILL)?;
        expect_owner_died(how, || acquire(&lock))?;
        drop(lock.acquire()?);
    }
    Ok(())
}

/// A thread of the child takes the lock and ends without releasing it; the child lives on
/// until `done` is set.
#[process]
fn thread_ends_holding_lock(lock: Lock, ready: Event, done: Event) {
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(lock.acquire().unwrap()));
    });
    ready.set();
    done.wait_timeout(LONG).unwrap();
}

fn owner_thread_ended(m: StartMethod) -> Outcome {
    // The owner is a thread that ended, in a process that still runs: the lock is as good as
    // orphaned, and the next acquire says so.
    let lock = Lock::new()?;
    let (ready, done) = (Event::new()?, Event::new()?);
    let p = start(
        m,
        thread_ends_holding_lock,
        (lock.clone(), ready.clone(), done.clone()),
    )?;
    check!(
        ready.wait_timeout(LONG)?,
        "the child's thread took the lock"
    );
    expect_owner_died("Lock::acquire", || lock.acquire())?;
    drop(lock.acquire()?);
    done.set();
    finish(&p)
}

fn owner_died_rlock(m: StartMethod) -> Outcome {
    let rlock = RLock::new()?;
    let ready = Event::new()?;
    let p = start(m, die_holding_rlock, (rlock.clone(), ready.clone()))?;
    check!(ready.wait_timeout(LONG)?, "the child took the lock");
    expect_owner_died("RLock::acquire", || rlock.acquire())?;
    finish_with(&p, -libc::SIGKILL)?;
    let a = rlock.acquire()?;
    let b = rlock.acquire()?;
    drop((b, a));
    finish(&start(m, rlock_is_free, rlock.clone())?)?;
    Ok(())
}

fn owner_died_condition(m: StartMethod) -> Outcome {
    let cond = Condition::new()?;
    let ready = Event::new()?;
    // The parent waits on the condition; the child takes the lock, notifies, and dies holding
    // it: the wait cannot take the lock back, and says why.
    let guard = cond.acquire()?;
    let p = start(m, die_holding_condition, (cond.clone(), ready.clone()))?;
    let (waited, took) = timed(|| cond.wait_timeout(guard, LONG));
    check_eq!(waited.map(|_| ()).unwrap_err().kind(), ErrorKind::OwnerDied);
    check!(took < PROMPT, "Condition::wait_timeout took {took:?}");
    check!(ready.is_set(), "the child ran");
    finish_with(&p, -libc::SIGKILL)?;
    // The condition works after: acquire, notify, a timed wait.
    let (guard, notified) = cond.wait_timeout(cond.acquire()?, Duration::from_millis(10))?;
    check!(!notified, "nobody notified");
    drop(guard);
    cond.notify_all()?;
    // A plain acquire of the condition's lock sees the next death too.
    ready.clear();
    let p = start(m, die_holding_condition, (cond.clone(), ready.clone()))?;
    check!(ready.wait_timeout(LONG)?, "the child took the lock");
    expect_owner_died("Condition::acquire", || cond.acquire_timeout(LONG))?;
    finish_with(&p, -libc::SIGKILL)?;
    // And notify, which takes the lock, too.
    ready.clear();
    let p = start(m, die_holding_condition, (cond.clone(), ready.clone()))?;
    check!(ready.wait_timeout(LONG)?, "the child took the lock");
    finish_with(&p, -libc::SIGKILL)?;
    expect_owner_died("Condition::notify_all", || cond.notify_all())?;
    cond.notify_all()?;
    Ok(())
}

#[process]
fn die_holding_condition_silently(cond: Condition, ready: Event) {
    let _guard = cond.acquire().unwrap();
    ready.set();
    kill_self();
}

/// A waiter (no timeout) whose condition's lock is taken by a process that dies holding it,
/// without notifying: the wait ends promptly with OwnerDied (it used to sleep for good), and
/// the condition works after.
fn condition_waiter_sees_the_holder_die(m: StartMethod) -> Outcome {
    let cond = Condition::new()?;
    let ready = Event::new()?;
    let guard = cond.acquire()?;
    let p = start(
        m,
        die_holding_condition_silently,
        (cond.clone(), ready.clone()),
    )?;
    let watchdog = cond.clone();
    let (waited, took) = timed(|| {
        // Bounded all the same: a failure must not hang the suite.
        let (done, stop) = std::sync::mpsc::channel::<()>();
        let watch = std::thread::spawn(move || {
            if stop.recv_timeout(LONG).is_err() {
                // Still asleep: wake it by hand (the first notify takes the dead holder's
                // lock over and fails), and the check below fails.
                for _ in 0..3 {
                    if watchdog.notify_all().is_ok() {
                        break;
                    }
                }
            }
        });
        let waited = cond.wait(guard).map(drop);
        let _ = done.send(());
        let _ = watch.join();
        waited
    });
    check_eq!(waited.unwrap_err().kind(), ErrorKind::OwnerDied);
    check!(took < PROMPT, "Condition::wait took {took:?}");
    check!(ready.is_set(), "the child took the lock");
    finish_with(&p, -libc::SIGKILL)?;
    let (guard, notified) = cond.wait_timeout(cond.acquire()?, Duration::from_millis(10))?;
    check!(!notified, "nobody notified");
    drop(guard);
    Ok(())
}

#[process]
fn arrive_last(barrier: Barrier) {
    let deadline = Instant::now() + LONG;
    while barrier.n_waiting() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = barrier.wait(); // runs the action, which kills this process
}

fn owner_died_barrier(m: StartMethod) -> Outcome {
    // The last party dies inside the action, holding the barrier's lock: the other party's
    // wait breaks at once instead of sleeping until its timeout, for good without one (nobody
    // is left to wake it: its condition wait sees the lock's holder die).
    // (The timeout only bounds a failure.)
    let barrier = Barrier::builder(2)
        .action(die_in_action, ())
        .timeout(LONG)
        .build()?;
    let p = start(m, arrive_last, barrier.clone())?;
    let (err, took) = timed(|| barrier.wait().unwrap_err());
    check_eq!(err.kind(), ErrorKind::BrokenBarrier);
    check!(took < PROMPT, "the wait took {took:?}");
    finish_with(&p, -libc::SIGKILL)?;
    check!(barrier.broken(), "broken");
    check_eq!(barrier.wait().unwrap_err().kind(), ErrorKind::BrokenBarrier);
    Ok(())
}

#[process]
fn wait_forever(cond: Condition, sleeping: Semaphore) {
    let guard = cond.acquire().unwrap();
    sleeping.release().unwrap();
    let _guard = cond.wait(guard).unwrap();
}

fn killed_waiter_does_not_wedge_the_condition(m: StartMethod) -> Outcome {
    // glibc's process-shared pthread_cond_t hangs the next notifier after a waiter is killed
    // (which is why Condition is built on a futex): three rounds of kill, notify, wake.
    let cond = Condition::new()?;
    for _ in 0..3 {
        let sleeping = Semaphore::new(0)?;
        let doomed = start(m, wait_forever, (cond.clone(), sleeping.clone()))?;
        sleeping.acquire_timeout(LONG)?.ok_or("waiting")?.forget();
        drop(cond.acquire()?); // it sleeps in wait now
        doomed.kill()?;
        finish_with(&doomed, -libc::SIGKILL)?;
        for _ in 0..5 {
            cond.notify_one()?;
        }
        let w = start_waiters(m, &cond, 1, None, None)?;
        drop(cond.acquire()?);
        let (_, took) = timed(|| cond.notify_all());
        check!(took < PROMPT, "notify_all took {took:?}");
        exactly(&w.woken, 1, "a live waiter wakes after a dead one")?;
        finish(&w.procs[0])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Every type as a pool initializer argument, a pool task argument, and a task result

type Everything = (
    Lock,
    RLock,
    Semaphore,
    BoundedSemaphore,
    Event,
    Condition,
    Barrier,
    Value<i64>,
);

fn everything() -> multiproc::Result<Everything> {
    Ok((
        Lock::new()?,
        RLock::new()?,
        Semaphore::new(0)?,
        BoundedSemaphore::new(1)?,
        Event::new()?,
        Condition::new()?,
        Barrier::new(1)?,
        Value::new(0i64)?,
    ))
}

/// Uses each object once; the parent checks the traces.
fn exercise(all: &Everything) {
    let (lock, rlock, sem, bsem, event, cond, barrier, counter) = all;
    let _l = lock.acquire().unwrap();
    let _r1 = rlock.acquire().unwrap();
    let _r2 = rlock.acquire().unwrap();
    assert!(
        event.wait_timeout(LONG).unwrap(),
        "the parent set the event"
    );
    let permit = bsem.acquire_timeout(LONG).unwrap().expect("bounded unit");
    drop(permit);
    let (guard, _) = cond
        .wait_timeout(cond.acquire().unwrap(), Duration::ZERO)
        .unwrap();
    drop(guard);
    cond.notify_all().unwrap();
    assert_eq!(barrier.wait().unwrap(), 0);
    *counter.lock().unwrap() += 1;
    sem.release().unwrap();
}

static STATE: OnceLock<Everything> = OnceLock::new();

#[process]
fn init_everything(all: Everything) {
    let _ = STATE.set(all);
}

#[process]
fn use_state(n: u32) -> u32 {
    exercise(STATE.get().expect("the initializer ran"));
    n
}

#[process]
fn use_args(all: Everything, n: u32) -> u32 {
    exercise(&all);
    n
}

#[process]
fn make_everything(_n: u32) -> Everything {
    let all = everything().unwrap();
    all.4.set();
    *all.7.lock().unwrap() = 7;
    all
}

fn check_traces(all: &Everything, tasks: u32) -> Outcome {
    let (lock, rlock, sem, bsem, _, _, barrier, counter) = all;
    check_eq!(counter.get()?, i64::from(tasks));
    check_eq!(sem.get_value(), tasks);
    check_eq!(bsem.get_value(), 1);
    check!(lock.try_acquire()?.is_some(), "lock released");
    check!(rlock.try_acquire()?.is_some(), "rlock released");
    check!(!barrier.broken(), "barrier fine");
    Ok(())
}

fn pool_initializer_task_and_result(m: StartMethod) -> Outcome {
    let all = everything()?;
    all.4.set();
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .initializer(init_everything, all.clone())
        .build()?;
    let done = pool.map(use_state, 0..6)?;
    check_eq!(done, (0..6).collect::<Vec<_>>());
    check_traces(&all, 6)?;
    // As task arguments.
    let fresh = everything()?;
    fresh.4.set();
    let done = pool.map(use_args, (0..4).map(|n| (fresh.clone(), n)))?;
    check_eq!(done.len(), 4);
    check_traces(&fresh, 4)?;
    // As a result: made in a worker, used here.
    let made = pool.apply(make_everything, 0)?;
    check!(made.4.is_set(), "the worker set the event");
    check_eq!(made.7.get()?, 7);
    drop(made.0.acquire()?);
    made.2.release()?;
    check_eq!(made.2.get_value(), 1);
    pool.close();
    pool.join()?;
    // And to a plain Process.
    let p = start(m, use_args, (fresh.clone(), 9))?;
    finish(&p)?;
    check_traces(&fresh, 5)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// No leaks

#[process]
fn touch_everything(all: Everything) {
    let _ = all.0.try_acquire();
    let _ = all.7.get();
}

fn no_leaks(m: StartMethod) -> Outcome {
    let warm = everything()?;
    finish(&start(m, touch_everything, warm.clone())?)?;
    drop(warm);
    let (fds, maps) = (common::open_fds(), common::shared_mappings());
    for _ in 0..1000 {
        let all = everything()?;
        let copy = all.clone();
        drop(copy.0.acquire()?);
        let _ = copy.4.wait_timeout(Duration::ZERO)?;
        drop((all, copy));
    }
    check_eq!(common::open_fds(), fds);
    check_eq!(common::shared_mappings(), maps);
    for _ in 0..10 {
        let all = everything()?;
        finish(&start(m, touch_everything, all)?)?;
    }
    check_eq!(common::open_fds(), fds);
    check_eq!(common::shared_mappings(), maps);
    Ok(())
}

fn serializing_outside_a_process_message_fails(_m: StartMethod) -> Outcome {
    let lock = Lock::new()?;
    // Any serde format other than a process message: JSON.
    let err = serde_json::to_string(&lock).unwrap_err();
    check!(
        err.to_string()
            .contains("can only be sent to a multiproc process"),
        "{err}"
    );
    Ok(())
}

/// Every type is a cheap handle that can cross a process boundary (checked at compile time).
fn handles_are_data() {
    fn data<T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static>() {}
    data::<Lock>();
    data::<RLock>();
    data::<Semaphore>();
    data::<BoundedSemaphore>();
    data::<Event>();
    data::<Condition>();
    data::<Barrier>();
}

fn main() {
    multiproc::init();
    handles_are_data();
    let trials = trials!(each_method:
        lock,
        rlock,
        semaphore,
        semaphore_timeout,
        bounded_semaphore,
        event,
        condition_notify,
        condition_notify_all,
        condition_notify_n,
        condition_timeout_and_wait_for,
        barrier,
        barrier_abort_and_reset,
        barrier_timeout_and_action_panic,
        barrier_thousand_passes,
        owner_died_lock,
        owner_died_rlock,
        condition_waiter_sees_the_holder_die,
        owner_thread_ended,
        owner_died_condition,
        owner_died_barrier,
        killed_waiter_does_not_wedge_the_condition,
        pool_initializer_task_and_result,
        no_leaks,
        serializing_outside_a_process_message_fails,
    );
    common::run(trials)
}
