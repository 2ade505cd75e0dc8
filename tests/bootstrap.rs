//! Starting a child safely: fork starts beside threads that are initialising the library's
//! one-time state, the bootstrap refused to a parent that is not the child's own, and the build
//! identity that `set_executable` is checked against.
//!
//! Several scenarios need a fresh process (state that is initialised once per process, or a
//! parent that is not multiproc): the test runs this binary again, with `SCENARIO` in its
//! environment, in its own process group so that whatever a failed scenario leaves stuck is
//! killed with it.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{scratch, Outcome};
use libtest_mimic::Trial;
use multiproc::{process, BuildId, ForkPolicy, Pool, Process, StartMethod};

const SCENARIO: &str = "MULTIPROC_TEST_SCENARIO";
const DELAY: &str = "MULTIPROC_TEST_DELAY_US";

#[process]
fn square(n: u64) -> u64 {
    n * n
}

/// A forked child that reads the build identity, which the parent may have been initialising
/// in another thread at the moment of the fork.
#[process]
fn read_build_id() {
    let _ = BuildId::current();
}

// ---------------------------------------------------------------------------------------------
// Scenarios, each in a fresh process

/// Threads initialise the build identity (and the registry under it) for the first time in
/// this process, `DELAY` microseconds after the main thread forks, about:
/// a fork pool (`pool`, whose zygote's workers read the identity in their bootstrap) or a
/// `fork` child that reads it (`process`). Exits 0 when the child answered.
fn lazy_fork_scenario(mode: &str) -> i32 {
    let delay = std::env::var(DELAY)
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(0);
    multiproc::set_fork_policy(ForkPolicy::Allow);
    let threads = 3;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let racers: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                spin(delay);
                let _ = BuildId::current();
            })
        })
        .collect();
    barrier.wait();
    let code = match mode {
        "pool" => match Pool::builder()
            .processes(1)
            .start_method(StartMethod::Fork)
            .build()
            .and_then(|pool| pool.apply(square, 7))
        {
            Ok(49) => 0,
            Ok(other) => {
                eprintln!("wrong answer {other}");
                1
            }
            Err(err) => {
                eprintln!("pool failed: {err}");
                1
            }
        },
        _ => {
            let p = Process::new(read_build_id, ()).with_start_method(StartMethod::Fork);
            match p
                .start()
                .and_then(|()| p.join_timeout(Duration::from_secs(30)))
            {
                Ok(Some(0)) => 0,
                other => {
                    eprintln!("fork child: {other:?}");
                    1
                }
            }
        }
    };
    for racer in racers {
        let _ = racer.join();
    }
    code
}

fn spin(micros: u64) {
    let until = Instant::now() + Duration::from_micros(micros);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------------------------
// Running scenarios

/// Runs this binary with `SCENARIO=name` and `env`, in its own process group; returns its exit
/// code, or `None` if it had not ended after `timeout` (then the whole group is killed).
fn run_scenario(
    name: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<Option<i32>, libtest_mimic::Failed> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .env(SCENARIO, name)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .process_group(0);
    let mut child = command.spawn()?;
    let group = child.id() as i32;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            // Whatever the scenario left behind (a child stuck in its bootstrap) goes too.
            // SAFETY: a signal to the process group this test made.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            return Ok(Some(status.code().unwrap_or(-1)));
        }
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Forks beside threads that initialise the build identity, at delays swept across the time
/// they take: no forked child may wait for good on a one-time initialisation that the fork
/// cut in half.
fn lazy_fork(mode: &'static str) -> impl FnOnce() -> Outcome {
    move || {
        // The window is a few microseconds wide, and where it falls varies from run to run:
        // before the fix, about one run in 25 (pool) or in 80 (process) hung.
        for run in 0..400u64 {
            let delay = run % 200;
            let env = [(DELAY, delay.to_string())];
            match run_scenario(&format!("lazy_{mode}"), &env, Duration::from_secs(20))? {
                Some(0) => {}
                Some(code) => {
                    return Err(
                        format!("the scenario failed (code {code}) at delay {delay} us").into(),
                    )
                }
                None => {
                    return Err(format!(
                        "a forked child hung on a one-time initialisation (delay {delay} us)"
                    )
                    .into())
                }
            }
        }
        Ok(())
    }
}

fn main() {
    multiproc::init();
    if let Ok(scenario) = std::env::var(SCENARIO) {
        let code = match scenario.as_str() {
            "lazy_pool" => lazy_fork_scenario("pool"),
            "lazy_process" => lazy_fork_scenario("process"),
            other => {
                eprintln!("unknown scenario {other}");
                2
            }
        };
        std::process::exit(code);
    }
    let _ = scratch;
    let trials = vec![
        Trial::test("fork_pool_beside_lazy_initialisation", lazy_fork("pool")),
        Trial::test(
            "fork_process_beside_lazy_initialisation",
            lazy_fork("process"),
        ),
    ];
    common::run(trials)
}
