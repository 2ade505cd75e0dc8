//! Shared state under every start method: ports of CPython's `_TestValue` and `_TestArray`,
//! the counter (4 processes x 10 000 increments), `SharedMemory` anonymous and named,
//! through processes and pools (zero-copy results), a holder of a value's lock SIGKILLed
//! while it holds it, and no leaked descriptor, mapping or `/dev/shm` entry after 1000
//! create/drop cycles.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{finish, finish_with, kill_self, start, Outcome, LONG};
use multiproc::{
    process, Array, ErrorKind, Event, Pool, Process, RawArray, RawValue, SharedMemory, StartMethod,
    Value,
};

const DELTA: Duration = Duration::from_millis(100);
const PROMPT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Value (_TestValue)

/// CPython's `codes_values`: ('i', 4, 5), ('d', 3.625, -4.25), ('h', -232, 234),
/// ('q', 2**33, 2**34), ('c', b'x', b'y').
type Locked = (Value<i32>, Value<f64>, Value<i16>, Value<i64>, Value<u8>);
type Raw = (
    RawValue<i32>,
    RawValue<f64>,
    RawValue<i16>,
    RawValue<i64>,
    RawValue<u8>,
);

#[process]
fn set_values(v: Locked) {
    v.0.set(5).unwrap();
    v.1.set(-4.25).unwrap();
    v.2.set(234).unwrap();
    *v.3.lock().unwrap() = 1 << 34;
    *v.4.lock().unwrap() = b'y';
}

#[process]
fn set_raw_values(v: Raw) {
    v.0.store(5);
    v.1.store(-4.25);
    v.2.store(234);
    v.3.store(1 << 34);
    v.4.store(b'y');
}

fn value(m: StartMethod) -> Outcome {
    let v: Locked = (
        Value::new(4)?,
        Value::new(3.625)?,
        Value::new(-232)?,
        Value::new(1 << 33)?,
        Value::new(b'x')?,
    );
    check_eq!(
        (v.0.get()?, v.1.get()?, v.2.get()?, v.3.get()?, v.4.get()?),
        (4, 3.625, -232, 1 << 33, b'x')
    );
    finish(&start(m, set_values, v.clone())?)?;
    check_eq!(
        (v.0.get()?, v.1.get()?, v.2.get()?, v.3.get()?, v.4.get()?),
        (5, -4.25, 234, 1 << 34, b'y')
    );
    let r: Raw = (
        Value::raw(4)?,
        Value::raw(3.625)?,
        Value::raw(-232)?,
        Value::raw(1 << 33)?,
        Value::raw(b'x')?,
    );
    check_eq!(
        (r.0.load(), r.1.load(), r.2.load(), r.3.load(), r.4.load()),
        (4, 3.625, -232, 1 << 33, b'x')
    );
    finish(&start(m, set_raw_values, r.clone())?)?;
    check_eq!(
        (r.0.load(), r.1.load(), r.2.load(), r.3.load(), r.4.load()),
        (5, -4.25, 234, 1 << 34, b'y')
    );
    Ok(())
}

fn value_get_lock(_m: StartMethod) -> Outcome {
    // test_getobj_getlock: the value's lock is the lock that `lock()` takes.
    let v = Value::new(5i32)?;
    let held = v.get_lock().acquire()?;
    check!(v.try_lock()?.is_none(), "the value's lock is held");
    check_eq!(
        v.lock_timeout(DELTA).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    drop(held);
    let guard = v.lock()?;
    check!(v.get_lock().try_acquire()?.is_none(), "held through lock()");
    drop(guard);
    // Value::raw has no lock at all: `RawValue` has no `get_lock` (a compile-time fact).
    Ok(())
}

#[process]
fn count_to(counter: Value<i64>, n: u32) {
    for _ in 0..n {
        *counter.lock().unwrap() += 1;
    }
}

fn counter_4x10000(m: StartMethod) -> Outcome {
    let counter = Value::new(0i64)?;
    let workers: Vec<Process> = (0..4)
        .map(|_| start(m, count_to, (counter.clone(), 10_000)))
        .collect::<Result<_, _>>()?;
    for p in &workers {
        finish(p)?;
    }
    check_eq!(*counter.lock()?, 40_000);
    Ok(())
}

#[process]
fn hammer_raw(v: RawValue<u64>, n: u32) {
    for i in 0..n {
        v.store(if i % 2 == 0 { 0 } else { u64::MAX });
    }
}

fn raw_value_is_never_torn(m: StartMethod) -> Outcome {
    let v = RawValue::new(0u64)?;
    let p = start(m, hammer_raw, (v.clone(), 2_000_000))?;
    let deadline = Instant::now() + LONG;
    while p.is_alive() && Instant::now() < deadline {
        for _ in 0..1000 {
            let x = v.load();
            check!(x == 0 || x == u64::MAX, "torn read {x:#x}");
        }
    }
    finish(&p)
}

// ---------------------------------------------------------------------------------------------
// Array (_TestArray)

const SEQ: [i32; 10] = [680, 626, 934, 821, 150, 233, 548, 982, 714, 831];

#[process]
fn cumulate(a: Array<i32>) {
    let mut xs = a.lock().unwrap();
    for i in 1..xs.len() {
        xs[i] += xs[i - 1];
    }
}

#[process]
fn cumulate_raw(a: RawArray<i32>) {
    for i in 1..a.len() {
        let sum = a.get(i).unwrap() + a.get(i - 1).unwrap();
        a.set(i, sum).unwrap();
    }
}

fn cumulated() -> Vec<i32> {
    SEQ.iter()
        .scan(0, |sum, x| {
            *sum += x;
            Some(*sum)
        })
        .collect()
}

fn array(m: StartMethod) -> Outcome {
    let a = Array::from_slice(&SEQ)?;
    check_eq!(a.len(), SEQ.len());
    check_eq!(a.lock()?[3], SEQ[3]);
    check_eq!(a.lock()?[2..5].to_vec(), SEQ[2..5].to_vec());
    check_eq!(a.to_vec()?, SEQ.to_vec());
    finish(&start(m, cumulate, a.clone())?)?;
    check_eq!(a.to_vec()?, cumulated());
    // test_array_from_size
    let z = Array::<i32>::new(10)?;
    check_eq!(z.to_vec()?, vec![0; 10]);
    for (i, x) in z.lock()?.iter_mut().enumerate() {
        *x = i as i32;
    }
    check_eq!(z.to_vec()?, (0..10).collect::<Vec<_>>());
    check!(Array::<u8>::new(0)?.is_empty(), "an empty array");
    // test_rawarray
    let r = RawArray::from_slice(&SEQ)?;
    finish(&start(m, cumulate_raw, r.clone())?)?;
    check_eq!(r.to_vec(), cumulated());
    check_eq!(r.get(10), None);
    check_eq!(r.set(10, 0).unwrap_err().kind(), ErrorKind::InvalidInput);
    check_eq!(
        r.copy_from_slice(&[1]).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Owner death

#[process]
fn die_holding_value(v: Value<i64>, ready: Event) {
    let mut guard = v.lock().unwrap();
    *guard += 1; // half-way through an update
    ready.set();
    std::thread::sleep(DELTA);
    kill_self();
}

#[process]
fn die_holding_array(a: Array<u8>, ready: Event) {
    let mut guard = a.lock().unwrap();
    guard[0] = 1;
    ready.set();
    std::thread::sleep(DELTA);
    kill_self();
}

fn owner_died_value_and_array(m: StartMethod) -> Outcome {
    let v = Value::new(41i64)?;
    let ready = Event::new()?;
    let p = start(m, die_holding_value, (v.clone(), ready.clone()))?;
    check!(ready.wait_timeout(LONG)?, "the child took the lock");
    let t = Instant::now();
    let err = v.lock_timeout(LONG).map(|_| ()).unwrap_err();
    check_eq!(err.kind(), ErrorKind::OwnerDied);
    check!(t.elapsed() < PROMPT, "OwnerDied after {:?}", t.elapsed());
    check!(common::chain(&err).contains("died"), "{err}");
    finish_with(&p, -libc::SIGKILL)?;
    check_eq!(*v.lock()?, 42); // what the dead holder left
    v.set(0)?;
    // Both ways of asking: get() too.
    ready.clear();
    let p = start(m, die_holding_value, (v.clone(), ready.clone()))?;
    check!(ready.wait_timeout(LONG)?, "the child took the lock");
    finish_with(&p, -libc::SIGKILL)?;
    check_eq!(v.get().unwrap_err().kind(), ErrorKind::OwnerDied);
    check_eq!(v.get()?, 1);

    let a = Array::<u8>::new(4)?;
    ready.clear();
    let p = start(m, die_holding_array, (a.clone(), ready.clone()))?;
    check!(ready.wait_timeout(LONG)?, "the child took the lock");
    let err = a.lock().map(|_| ()).unwrap_err();
    check_eq!(err.kind(), ErrorKind::OwnerDied);
    finish_with(&p, -libc::SIGKILL)?;
    check_eq!(a.to_vec()?, vec![1, 0, 0, 0]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SharedMemory

#[process]
fn fill_segment(shm: SharedMemory, byte: u8) {
    shm.write_at(0, &vec![byte; shm.len()]).unwrap();
}

#[process]
fn make_segment(len: usize) -> SharedMemory {
    let shm = SharedMemory::new(len).unwrap();
    let pattern: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    shm.write_at(0, &pattern).unwrap();
    shm
}

#[process]
fn write_slot(shm: SharedMemory, slot: usize) -> usize {
    shm.write_at(slot * 8, &(slot as u64).to_le_bytes())
        .unwrap();
    slot
}

#[process]
fn open_and_write(name: String, text: String) {
    let shm = SharedMemory::open_named(&name).unwrap();
    assert_eq!(shm.name(), Some(name.as_str()));
    shm.write_at(0, text.as_bytes()).unwrap();
}

fn shared_memory(m: StartMethod) -> Outcome {
    // An argument: the child writes, the parent reads the same pages.
    let shm = SharedMemory::new(10_000)?;
    finish(&start(m, fill_segment, (shm.clone(), 0xAB))?)?;
    let mut buf = vec![0u8; shm.len()];
    shm.read_at(0, &mut buf)?;
    check!(buf.iter().all(|&b| b == 0xAB), "the child's bytes");
    // A result: a pool worker fills a segment and returns it (the bytes are not copied).
    let pool = Pool::builder().processes(2).start_method(m).build()?;
    let len = 1 << 20;
    let made = pool.apply(make_segment, len)?;
    check_eq!(made.len(), len);
    check!(made.name().is_none(), "anonymous");
    // SAFETY: the worker that wrote it is done with it (its task returned); nothing writes it.
    let bytes = unsafe { made.as_slice() };
    check!(
        bytes.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
        "the worker's pattern"
    );
    // Task arguments: workers write their slots of one segment.
    let slots = SharedMemory::new(8 * 16)?;
    let done = pool.map(write_slot, (0..16).map(|i| (slots.clone(), i)))?;
    check_eq!(done, (0..16).collect::<Vec<_>>());
    for i in 0..16 {
        let mut word = [0u8; 8];
        slots.read_at(i * 8, &mut word)?;
        check_eq!(u64::from_le_bytes(word), i as u64);
    }
    pool.close();
    pool.join()?;
    // Named, for processes that find it by name.
    let name = format!("multiproc-test-{}-{m}", std::process::id());
    let before = common::dev_shm_entries(&name);
    let named = SharedMemory::create_named(&name, 64)?;
    check_eq!(common::dev_shm_entries(&name), before + 1);
    check!(
        SharedMemory::create_named(&name, 64).is_err(),
        "O_EXCL: it exists"
    );
    finish(&start(
        m,
        open_and_write,
        (name.clone(), "hello from the child".to_string()),
    )?)?;
    let mut text = [0u8; 20];
    named.read_at(0, &mut text)?;
    check_eq!(&text, b"hello from the child");
    let mode = std::fs::metadata(format!("/dev/shm/{name}"))
        .map(|meta| std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777)?;
    check_eq!(mode, 0o600);
    // Sent as an argument: a named segment cannot be sealed against shrinking as an anonymous
    // one is, and is mapped all the same.
    finish(&start(m, fill_segment, (named.clone(), b'n'))?)?;
    let mut all = [0u8; 64];
    named.read_at(0, &mut all)?;
    check_eq!(all, [b'n'; 64]);
    named.unlink()?;
    check_eq!(common::dev_shm_entries(&name), before);
    check!(
        SharedMemory::open_named(&name).is_err(),
        "unlinked: cannot be opened"
    );
    named.write_at(0, b"still mapped")?;
    check_eq!(
        SharedMemory::new(1)?.unlink().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    check_eq!(
        SharedMemory::new(0).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    check!(
        SharedMemory::create_named("a/b", 1).is_err(),
        "a name with a slash"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pool initializer and task arguments

type SharedSet = (
    Value<u64>,
    Array<u32>,
    RawValue<u32>,
    RawArray<u8>,
    SharedMemory,
);

static STATE: OnceLock<SharedSet> = OnceLock::new();

#[process]
fn init_shared(set: SharedSet) {
    let _ = STATE.set(set);
}

fn touch(set: &SharedSet, n: u32) {
    *set.0.lock().unwrap() += 1;
    set.1.lock().unwrap()[n as usize] = n + 1;
    set.2.store(n);
    set.3.set(n as usize, 1).unwrap();
    set.4.write_at(n as usize, &[n as u8 + 1]).unwrap();
}

#[process]
fn touch_state(n: u32) {
    touch(STATE.get().expect("the initializer ran"), n);
}

#[process]
fn touch_args(set: SharedSet, n: u32) {
    touch(&set, n);
}

fn shared_set() -> multiproc::Result<SharedSet> {
    Ok((
        Value::new(0)?,
        Array::new(8)?,
        RawValue::new(0)?,
        RawArray::new(8)?,
        SharedMemory::new(8)?,
    ))
}

fn check_set(set: &SharedSet) -> Outcome {
    check_eq!(set.0.get()?, 8);
    check_eq!(set.1.to_vec()?, (1..=8).collect::<Vec<u32>>());
    check!(set.2.load() < 8, "a task's index");
    check_eq!(set.3.to_vec(), vec![1u8; 8]);
    let mut bytes = [0u8; 8];
    set.4.read_at(0, &mut bytes)?;
    check_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8]);
    Ok(())
}

fn pool_initializer_and_tasks(m: StartMethod) -> Outcome {
    let set = shared_set()?;
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .initializer(init_shared, set.clone())
        .build()?;
    pool.map(touch_state, 0..8)?;
    check_set(&set)?;
    let fresh = shared_set()?;
    pool.map(touch_args, (0..8).map(|n| (fresh.clone(), n)))?;
    check_set(&fresh)?;
    pool.close();
    pool.join()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// No leaks

#[process]
fn touch_set(set: SharedSet) {
    let _ = set.0.get();
}

fn no_leaks(m: StartMethod) -> Outcome {
    finish(&start(m, touch_set, shared_set()?)?)?;
    let name = format!("multiproc-leak-{}-{m}", std::process::id());
    let (fds, maps, shm) = (
        common::open_fds(),
        common::shared_mappings(),
        common::dev_shm_entries(&name),
    );
    for _ in 0..1000 {
        let set = shared_set()?;
        let copy = set.clone();
        *copy.0.lock()? += 1;
        copy.1.lock()?[0] = 1;
        let named = SharedMemory::create_named(&name, 16)?;
        let opened = SharedMemory::open_named(&name)?;
        opened.write_at(0, b"x")?;
        named.unlink()?;
        drop((set, copy, named, opened));
    }
    check_eq!(common::open_fds(), fds);
    check_eq!(common::shared_mappings(), maps);
    check_eq!(common::dev_shm_entries(&name), shm);
    for _ in 0..10 {
        finish(&start(m, touch_set, shared_set()?)?)?;
    }
    check_eq!(common::open_fds(), fds);
    check_eq!(common::shared_mappings(), maps);
    Ok(())
}

/// Every type is a cheap handle that can cross a process boundary (checked at compile time).
fn handles_are_data() {
    fn data<T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static>() {}
    data::<Value<i64>>();
    data::<RawValue<f64>>();
    data::<Array<u8>>();
    data::<RawArray<u32>>();
    data::<SharedMemory>();
}

fn main() {
    multiproc::init();
    handles_are_data();
    let trials = trials!(each_method:
        value,
        value_get_lock,
        counter_4x10000,
        raw_value_is_never_torn,
        array,
        owner_died_value_and_array,
        shared_memory,
        pool_initializer_and_tasks,
        no_leaks,
    );
    common::run(trials)
}
