//! The kernel calls the primitives are built on: a robust process-shared mutex on a futex
//! word, the shared futex itself, and the `CLOCK_MONOTONIC` deadlines both take. Every `unsafe`
//! system call of `sync` and `shared` is in this file.
//!
//! Why a futex and not a `pthread_cond_t`: glibc's process-shared condition variable (2.25 and
//! later, 2.36 here) keeps per-group waiter references in the shared object. A waiter killed
//! while blocked never drops its reference, and the next `pthread_cond_signal` that needs to
//! switch groups waits for it forever: a SIGKILLed waiter hangs every later notifier (checked
//! with a C reproduction on this glibc). A futex word holds no per-waiter state, so a waiter
//! that dies leaves nothing behind; the condition built on it (`condition.rs`) keeps its
//! counters under the mutex.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A point on `CLOCK_MONOTONIC`, or never. Waits take absolute deadlines, so a wait that is
/// interrupted and resumed never waits longer than asked, and a wall-clock jump changes nothing.
#[derive(Clone, Copy)]
pub(crate) struct Deadline(Option<libc::timespec>);

impl Deadline {
    /// No deadline: wait as long as it takes.
    pub(crate) const NEVER: Deadline = Deadline(None);

    /// `timeout` from now (never, when that does not fit a `timespec`).
    #[allow(clippy::useless_conversion)] // `time_t` and `c_long` are `i32` on some targets
    pub(crate) fn after(timeout: Duration) -> Deadline {
        let now = monotonic_now();
        let mut nsec = i64::from(now.tv_nsec) + i64::from(timeout.subsec_nanos());
        let mut carry = 0;
        if nsec >= 1_000_000_000 {
            nsec -= 1_000_000_000;
            carry = 1;
        }
        let sec = i64::try_from(timeout.as_secs())
            .ok()
            .and_then(|s| i64::from(now.tv_sec).checked_add(s))
            .and_then(|s| s.checked_add(carry))
            .and_then(|s| libc::time_t::try_from(s).ok());
        match (sec, libc::c_long::try_from(nsec)) {
            (Some(tv_sec), Ok(tv_nsec)) => Deadline(Some(libc::timespec { tv_sec, tv_nsec })),
            // Past the end of time: as good as never.
            _ => Deadline::NEVER,
        }
    }

    /// `after(timeout)`, or never for `None`.
    pub(crate) fn from_timeout(timeout: Option<Duration>) -> Deadline {
        timeout.map_or(Deadline::NEVER, Deadline::after)
    }

    /// Whichever of the two comes first.
    pub(crate) fn earlier(self, other: Deadline) -> Deadline {
        match (self.0, other.0) {
            (None, _) => other,
            (_, None) => self,
            (Some(a), Some(b)) => {
                if (a.tv_sec, a.tv_nsec) <= (b.tv_sec, b.tv_nsec) {
                    self
                } else {
                    other
                }
            }
        }
    }

    /// Whether the deadline has passed.
    pub(crate) fn expired(&self) -> bool {
        match &self.0 {
            None => false,
            Some(d) => {
                let now = monotonic_now();
                (now.tv_sec, now.tv_nsec) >= (d.tv_sec, d.tv_nsec)
            }
        }
    }

    fn as_ptr(&self) -> *const libc::timespec {
        self.0
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec)
    }
}

fn monotonic_now() -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, exclusively borrowed timespec; CLOCK_MONOTONIC always exists
    // on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now
}

/// How a mutex behaves when its owner locks it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MutexKind {
    /// Locking it again is an error (`Locked::Mine`), unlocking by a non-owner too.
    ErrorCheck,
    /// The owner may lock it again; it is released by as many unlocks.
    Recursive,
}

/// What a lock attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The caller holds the mutex.
    Yes,
    /// The caller holds the mutex, whose previous owner died holding it: the data it
    /// protects may be half-updated.
    OwnerDied,
    /// The deadline passed (or, for `try_lock`, the mutex is held).
    No,
    /// An error-checking mutex that the calling thread already holds.
    Mine,
}

/// The owner field of [`RawMutex::word`]: a thread id (Linux thread ids fit in 30 bits).
const TID_MASK: u32 = 0x3fff_ffff;
/// Set in [`RawMutex::word`] while a thread may sleep on it: the unlock must wake one.
const WAITERS: u32 = 0x8000_0000;
/// Spins on a held mutex before sleeping: a holder on another core often lets go sooner
/// than a sleep and a wake-up would take.
const SPINS: u32 = 100;
/// The first and the longest sleep between two looks at whether the owner still lives.
pub(crate) const FIRST_CHECK: Duration = Duration::from_millis(1);
pub(crate) const LAST_CHECK: Duration = Duration::from_millis(50);

/// A robust, process-shared mutex that lives in shared memory: one futex word that holds the
/// owner's thread id.
///
/// Robust: a waiter that sleeps on a held mutex wakes up now and then (after 1 ms, then less
/// and less often, at least every 50 ms) and looks whether the owner thread still lives; when
/// it is gone (its process was killed, say) or is a zombie, the waiter takes the mutex over and
/// gets [`Locked::OwnerDied`]. So a dead owner costs the next locker at most ~50 ms, never a
/// hang.
///
/// Why not glibc's robust `pthread_mutex_t` (which this replaced): its uncontended lock and
/// unlock cost ~25 ns, and a held robust mutex is linked into a per-thread list *inside the
/// mutex*, so its pages must stay mapped while it is held; every guard had to keep the mapping
/// alive with a reference count. This mutex's uncontended path is one compare-and-swap and one
/// swap, and a leaked guard leaves nothing but a held word behind.
///
/// The limits of looking at the owner instead of being told by the kernel: the owner's thread
/// id must be visible in this process's `/proc` (processes that share a lock are in one pid
/// namespace), and if the owner dies and its thread id is handed to a new thread before
/// anybody next tries the lock, waiters wait for that thread instead (thread ids are handed
/// out in turn up to `pid_max`, 4 million here, so that takes millions of new threads or
/// processes while the lock sits untried; where `pid_max` is 32768, as in some containers,
/// far fewer).
#[repr(C)]
pub(crate) struct RawMutex {
    /// 0 when free; otherwise the owner's thread id, and [`WAITERS`].
    word: AtomicU32,
    /// 1 for [`MutexKind::Recursive`].
    recursive: AtomicU32,
    /// The levels the owner holds beyond the first (recursive kind); only the owner touches it.
    depth: AtomicU32,
}

impl RawMutex {
    /// Initializes the mutex in place: free, of `kind`. Only for a mutex nobody uses yet (in
    /// memory this process just created and has not shared): a held one would be freed.
    pub(crate) fn init(&self, kind: MutexKind) {
        self.word.store(0, Ordering::Relaxed);
        self.depth.store(0, Ordering::Relaxed);
        self.recursive
            .store(u32::from(kind == MutexKind::Recursive), Ordering::Release);
    }

    fn is_recursive(&self) -> bool {
        self.recursive.load(Ordering::Relaxed) == 1
    }

    /// The calling thread holds it already: what a lock attempt comes to.
    fn again(&self) -> Locked {
        if self.is_recursive() {
            self.depth.fetch_add(1, Ordering::Relaxed);
            Locked::Yes
        } else {
            Locked::Mine
        }
    }

    /// One attempt by thread `me`: the outcome, or the word held by another thread.
    #[inline]
    fn attempt(&self, me: u32) -> std::result::Result<Locked, u32> {
        match self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => Ok(Locked::Yes),
            Err(seen) if seen & TID_MASK == me => Ok(self.again()),
            Err(seen) => Err(seen),
        }
    }

    /// Locks, waiting until `deadline` at most.
    #[inline]
    pub(crate) fn lock(&self, deadline: Deadline) -> io::Result<Locked> {
        let me = this_thread();
        match self.attempt(me) {
            Ok(locked) => Ok(locked),
            Err(_) => self.lock_slow(me, deadline),
        }
    }

    #[cold]
    fn lock_slow(&self, me: u32, deadline: Deadline) -> io::Result<Locked> {
        for _ in 0..SPINS {
            std::hint::spin_loop();
            if self.word.load(Ordering::Relaxed) == 0
                && self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok(Locked::Yes);
            }
        }
        let mut interval = FIRST_CHECK;
        let mut check = Deadline::after(interval);
        loop {
            let seen = self.word.load(Ordering::Relaxed);
            if seen & TID_MASK == 0 {
                // Free. Take it with WAITERS set: others may sleep on it still, and whoever
                // unlocks must wake the next one.
                if self
                    .word
                    .compare_exchange(seen, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(Locked::Yes);
                }
                continue;
            }
            if deadline.expired() {
                // A wait that is over before it sleeps (a zero timeout, say) is a try: no
                // sleep (the kernel's timer slack made one cost ~50 us) and no WAITERS bit
                // (which would cost the holder's unlock a wake-up call).
                return Ok(self
                    .take_from_dead(seen, me | (seen & WAITERS))
                    .unwrap_or(Locked::No));
            }
            if seen & WAITERS == 0
                && self
                    .word
                    .compare_exchange(seen, seen | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let until = deadline.earlier(check);
            match futex_wait(&self.word, seen | WAITERS, until)? {
                Wake::Maybe => {}
                Wake::TimedOut if deadline.expired() => {
                    // A last look at the owner before giving up: a caller that polls with
                    // waits shorter than the first check (`FIRST_CHECK`) would otherwise
                    // never see that the owner died.
                    return Ok(self
                        .take_from_dead(seen | WAITERS, me | WAITERS)
                        .unwrap_or(Locked::No));
                }
                Wake::TimedOut => {
                    if let Some(locked) = self.take_from_dead(seen | WAITERS, me | WAITERS) {
                        return Ok(locked);
                    }
                    interval = (interval * 2).min(LAST_CHECK);
                    check = Deadline::after(interval);
                }
            }
        }
    }

    /// Whether the mutex is held by a thread that has ended: the next `lock` or `try_lock`
    /// takes it over, with [`Locked::OwnerDied`].
    pub(crate) fn holder_ended(&self) -> bool {
        let owner = self.word.load(Ordering::Relaxed) & TID_MASK;
        owner != 0 && thread_ended(owner)
    }

    /// When the owner named in `seen` has ended and the word still says `seen`: takes the
    /// mutex over, as `mine`.
    fn take_from_dead(&self, seen: u32, mine: u32) -> Option<Locked> {
        if !thread_ended(seen & TID_MASK) {
            return None;
        }
        self.word
            .compare_exchange(seen, mine, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| {
                self.depth.store(0, Ordering::Relaxed);
                Locked::OwnerDied
            })
    }

    /// Locks if nobody holds the mutex: `Locked::No` when another thread holds it,
    /// `Locked::Mine` when the calling thread does (error-checking kind), `Locked::OwnerDied`
    /// when its owner has ended.
    pub(crate) fn try_lock(&self) -> io::Result<Locked> {
        let me = this_thread();
        match self.attempt(me) {
            Ok(locked) => Ok(locked),
            Err(seen) => Ok(self
                .take_from_dead(seen, me | (seen & WAITERS))
                .unwrap_or(Locked::No)),
        }
    }

    /// Unlocks; an error when the calling thread does not hold the mutex.
    #[inline]
    pub(crate) fn unlock(&self) -> io::Result<()> {
        let me = this_thread();
        if self.word.load(Ordering::Relaxed) & TID_MASK != me {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "cannot unlock a mutex that this thread does not hold",
            ));
        }
        if self.is_recursive() {
            let depth = self.depth.load(Ordering::Relaxed);
            if depth > 0 {
                self.depth.store(depth - 1, Ordering::Relaxed);
                return Ok(());
            }
        }
        if self.word.swap(0, Ordering::Release) & WAITERS != 0 {
            futex_wake(&self.word, 1);
        }
        Ok(())
    }
}

thread_local! {
    /// This thread's id, and the fork generation it was read in (`crate::fd`'s fork hook
    /// bumps it in every forked child, whose thread has a new id: the cached ids are stale
    /// there).
    static THREAD_ID: Cell<(u64, u32)> = const { Cell::new((0, 0)) };
}

/// The calling thread's id (`gettid`), cached.
#[inline]
fn this_thread() -> u32 {
    let (generation, tid) = THREAD_ID.with(Cell::get);
    if tid != 0 && generation == crate::fd::generation() {
        tid
    } else {
        read_thread_id()
    }
}

#[cold]
fn read_thread_id() -> u32 {
    let hooked = crate::fd::fork_hooked();
    let generation = crate::fd::generation();
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::gettid() } as u32 & TID_MASK;
    // Without the fork hook (pthread_atfork fails only without memory) a cached id could
    // outlive a fork: then it is read every time.
    if hooked {
        THREAD_ID.with(|cell| cell.set((generation, tid)));
    }
    tid
}

/// Whether thread `tid` has ended: gone, or a zombie that its parent has not reaped yet (whose
/// id `kill` still accepts).
fn thread_ended(tid: u32) -> bool {
    let Ok(id) = libc::pid_t::try_from(tid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the id exists; nothing is sent.
    if unsafe { libc::kill(id, 0) } == -1
        && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    {
        return true;
    }
    // Alive or a zombie: the state is the field after the command name, which is in
    // parentheses and may itself hold any character, so it is found from the last ')'.
    match std::fs::read(format!("/proc/{tid}/stat")) {
        Ok(stat) => stat
            .iter()
            .rposition(|&b| b == b')')
            .and_then(|at| stat.get(at + 2))
            .is_some_and(|state| matches!(state, b'Z' | b'X')),
        Err(_) => false,
    }
}

/// What a futex wait came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken by a `futex_wake`, or the word no longer held the expected value, or a signal
    /// interrupted the wait: look at the word again.
    Maybe,
    /// The deadline passed.
    TimedOut,
}

/// Waits while `word` holds `expected`, until a [`futex_wake`] on it or `deadline`.
///
/// The futex is shared (not `FUTEX_PRIVATE_FLAG`): the kernel keys it by the file and offset
/// of the mapping, so every process that maps the region waits on the same word, whatever
/// address it is mapped at.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> io::Result<Wake> {
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; the timeout pointer
    // is null or points to a valid timespec (an absolute CLOCK_MONOTONIC time, which
    // FUTEX_WAIT_BITSET expects without FUTEX_CLOCK_REALTIME).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            deadline.as_ptr(),
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if rc == 0 {
        return Ok(Wake::Maybe);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(Wake::Maybe),
        Some(libc::ETIMEDOUT) => Ok(Wake::TimedOut),
        _ => Err(io::Error::new(err.kind(), format!("futex wait: {err}"))),
    }
}

/// Wakes up to `count` waiters of `word`.
pub(crate) fn futex_wake(word: &AtomicU32, count: u32) {
    let count = count.min(i32::MAX as u32);
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE only reads the address as a key.
    // It cannot fail on a mapped, aligned word; a failure would only mean nobody is woken.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, count) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_mutex(kind: MutexKind) -> Box<RawMutex> {
        let m = Box::new(RawMutex {
            word: AtomicU32::new(0),
            recursive: AtomicU32::new(0),
            depth: AtomicU32::new(0),
        });
        m.init(kind);
        m
    }

    #[test]
    fn errorcheck_reports_relock_and_foreign_unlock() {
        let m = new_mutex(MutexKind::ErrorCheck);
        assert_eq!(m.lock(Deadline::NEVER).unwrap(), Locked::Yes);
        assert_eq!(m.lock(Deadline::NEVER).unwrap(), Locked::Mine);
        assert_eq!(m.try_lock().unwrap(), Locked::Mine);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(
                    m.lock(Deadline::after(Duration::from_millis(20))).unwrap(),
                    Locked::No
                );
                assert!(m.unlock().is_err());
            });
        });
        m.unlock().unwrap();
        assert!(m.unlock().is_err());
    }

    #[test]
    fn recursive_counts() {
        let m = new_mutex(MutexKind::Recursive);
        for _ in 0..3 {
            assert_eq!(m.lock(Deadline::NEVER).unwrap(), Locked::Yes);
        }
        for _ in 0..3 {
            m.unlock().unwrap();
        }
        assert!(m.unlock().is_err());
    }

    #[test]
    fn a_dead_owner_is_taken_over() {
        let m = new_mutex(MutexKind::ErrorCheck);
        // A thread that ends holding the mutex. A scope ends when the thread's closure has
        // returned, a moment before the thread itself is gone: until then a try finds the
        // owner alive.
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(m.lock(Deadline::NEVER).unwrap(), Locked::Yes));
        });
        let give_up = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match m.try_lock().unwrap() {
                Locked::OwnerDied => break,
                Locked::No if std::time::Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                other => panic!("try_lock: {other:?}"),
            }
        }
        m.unlock().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(m.lock(Deadline::NEVER).unwrap(), Locked::Yes));
        });
        let t = std::time::Instant::now();
        assert_eq!(m.lock(Deadline::NEVER).unwrap(), Locked::OwnerDied);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        m.unlock().unwrap();
        assert_eq!(m.lock(Deadline::NEVER).unwrap(), Locked::Yes);
        m.unlock().unwrap();
    }

    #[test]
    fn a_live_owner_is_waited_for() {
        let m = new_mutex(MutexKind::ErrorCheck);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(m.lock(Deadline::NEVER).unwrap(), Locked::Yes);
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(120));
                m.unlock().unwrap();
            });
            rx.recv().unwrap();
            // Held past several liveness checks: a timed lock times out, then a plain one
            // waits for the unlock and gets a consistent mutex.
            assert_eq!(
                m.lock(Deadline::after(Duration::from_millis(30))).unwrap(),
                Locked::No
            );
            assert_eq!(m.try_lock().unwrap(), Locked::No);
            assert_eq!(m.lock(Deadline::NEVER).unwrap(), Locked::Yes);
            m.unlock().unwrap();
        });
    }

    #[test]
    fn contended_counting_is_exact() {
        struct Counter(Box<RawMutex>, std::cell::UnsafeCell<u64>);
        // SAFETY: the u64 is only touched with the mutex held.
        unsafe impl Sync for Counter {}
        let c = Counter(
            new_mutex(MutexKind::Recursive),
            std::cell::UnsafeCell::new(0),
        );
        let c = &c;
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(move || {
                    for _ in 0..20_000 {
                        assert_eq!(c.0.lock(Deadline::NEVER).unwrap(), Locked::Yes);
                        // SAFETY: held.
                        unsafe { *c.1.get() += 1 };
                        c.0.unlock().unwrap();
                    }
                });
            }
        });
        // SAFETY: every thread is done.
        assert_eq!(unsafe { *c.1.get() }, 80_000);
    }

    #[test]
    fn futex_times_out_and_sees_changes() {
        let word = AtomicU32::new(0);
        let t = std::time::Instant::now();
        assert_eq!(
            futex_wait(&word, 0, Deadline::after(Duration::from_millis(30))).unwrap(),
            Wake::TimedOut
        );
        assert!(t.elapsed() >= Duration::from_millis(30));
        word.store(1, Ordering::SeqCst);
        assert_eq!(futex_wait(&word, 0, Deadline::NEVER).unwrap(), Wake::Maybe);
        assert!(Deadline::after(Duration::ZERO).expired());
        assert!(!Deadline::after(Duration::MAX).expired());
    }
}
