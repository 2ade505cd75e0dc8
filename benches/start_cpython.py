"""CPython side of `cargo bench --bench start`: start + join of a no-op child.

Usage: python3 start_cpython.py FORK_ITERS [FORKSERVER_ITERS [SPAWN_ITERS]]

Prints one line per measurement, `<name> <median in microseconds>`:

    fork 2931.5
    forkserver 41234.0
    spawn 98765.4
    startup 60123.0         (python3 -c pass)
    startup_nosite 20456.0  (python3 -S -c pass)

The last two show what the `site` start-up hooks of this interpreter cost every new
interpreter (spawn children and the fork server are new interpreters; fork children are not).
"""

import multiprocessing
import statistics
import subprocess
import sys
import time

WARMUP = 3


def noop():
    pass


def median_us(samples):
    return statistics.median(samples) * 1e6


def bench_method(method, iters):
    ctx = multiprocessing.get_context(method)
    # Warm-up; for forkserver the first start also brings up the server.
    for _ in range(WARMUP):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        samples.append(time.perf_counter() - t0)
        if p.exitcode != 0:
            raise SystemExit(f"{method} child exited with {p.exitcode}")
    return median_us(samples)


def bench_startup(extra, iters=7):
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *extra, "-c", "pass"], check=True)
        samples.append(time.perf_counter() - t0)
    return median_us(samples)


def main():
    counts = [int(a) for a in sys.argv[1:4]] or [100]
    while len(counts) < 3:
        counts.append(counts[-1])
    fork_n, forkserver_n, spawn_n = counts
    for method, n in (("fork", fork_n), ("forkserver", forkserver_n), ("spawn", spawn_n)):
        print(f"{method} {bench_method(method, n):.1f}", flush=True)
    print(f"startup {bench_startup([]):.1f}", flush=True)
    print(f"startup_nosite {bench_startup(['-S']):.1f}", flush=True)


if __name__ == "__main__":
    main()
