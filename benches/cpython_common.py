"""What the CPython sides of the benchmarks share: timing, output, and the prime-count workload
(the same as the Rust benches' `common::is_prime`: trial division by 2 and the odd numbers up
to the square root)."""

import statistics
import time


def timed(f, iters, warmup=1):
    for _ in range(warmup):
        f()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        f()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def emit(name, value):
    print(f"{name} {value}", flush=True)


def is_prime(n):
    if n < 2:
        return False
    if n < 4:
        return True
    if n % 2 == 0:
        return False
    d = 3
    while d * d <= n:
        if n % d == 0:
            return False
        d += 2
    return True


def count_primes(lo, hi):
    return sum(1 for n in range(lo, hi) if is_prime(n))


def prime_chunks(n, chunks):
    step = -(-n // chunks)
    return [(min(i * step, n), min((i + 1) * step, n)) for i in range(chunks)]
