"""CPython side of `cargo bench --bench pool`: the same Pool workloads with multiprocessing.

Usage: python3 pool_cpython.py W2_ITERS W3_CALLS W4_ITERS W5_ITERS W5_N W5_CHUNKS
       python3 pool_cpython.py exec CALLS SUBMITS RUNS

The `exec` part measures concurrent.futures.ProcessPoolExecutor (forkserver too):

    exec_round_trip_s    ProcessPoolExecutor(1).submit(square, n).result(), per call
    exec_submits_s       SUBMITS submits on ProcessPoolExecutor(2), then as_completed, per run

W3's latency is bimodal in CPython: a call that needs the GIL handed between the pool's
handler threads can wait up to sys.getswitchinterval() (5 ms), so the median moves a lot
between runs; min and p90 are printed too.

Every pool uses the forkserver start method (multiproc's default) and is created outside the
timed region. Prints one line per measurement, `<name> <value>` (times in seconds, medians):

    start_method forkserver
    w2_map_s 0.41        Pool(2).map(square, range(1_000_000))
    w2s_map_s 1.2       Pool(2).map(square_pair, [Pair(i, i + 1) for i in range(1_000_000)])
    w3_apply_s 0.00009   Pool(1).apply(square, (n,)), per call
    w3_apply_min_s ...   (and w3_apply_p90_s: the spread, which is wide: see below)
    w4_apply_s 0.08      Pool(1).apply(len, (b'\\0' * 64 MiB,))
    w5_1_s 1.9           Pool(1).starmap(count_primes, 64 chunks of range(W5_N))
    w5_2_s 1.0           the same on Pool(2)
"""

import multiprocessing
import statistics
import sys
import time

from cpython_common import count_primes, emit, prime_chunks, timed

METHOD = "forkserver"
W2_ITEMS = 1_000_000
W3_WARMUP = 200
W4_BYTES = 64 << 20
WARMUP = 2


def square(n):
    return n * n


class Pair:
    """W2s's item: two ints, as the Rust side's `struct Pair { a: u64, b: u64 }`."""

    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a = a
        self.b = b


def square_pair(p):
    return Pair(p.a * p.a, p.b * p.b)




def main():
    w2_iters, w3_calls, w4_iters, w5_iters, w5_n, w5_chunks = (int(a) for a in sys.argv[1:7])
    ctx = multiprocessing.get_context(METHOD)
    emit("start_method", ctx.get_start_method())

    with ctx.Pool(2) as pool:
        expected = (W2_ITEMS - 1) ** 2
        def w2():
            assert pool.map(square, range(W2_ITEMS))[-1] == expected
        emit("w2_map_s", timed(w2, w2_iters, warmup=WARMUP))

        pairs = [Pair(i, i + 1) for i in range(W2_ITEMS)]
        last = W2_ITEMS - 1
        def w2s():
            assert pool.map(square_pair, pairs)[-1].b == (last + 1) ** 2
        # About 4 s a run here: fewer runs than W2.
        emit("w2s_map_s", timed(w2s, min(w2_iters, 5), warmup=1))

    with ctx.Pool(1) as pool:
        for n in range(W3_WARMUP):
            assert pool.apply(square, (n,)) == n * n
        samples = []
        for n in range(w3_calls):
            t0 = time.perf_counter()
            v = pool.apply(square, (n,))
            samples.append(time.perf_counter() - t0)
            assert v == n * n
        samples.sort()
        emit("w3_apply_s", statistics.median(samples))
        emit("w3_apply_min_s", samples[0])
        emit("w3_apply_p90_s", samples[int(0.9 * (len(samples) - 1))])

        data = b"\0" * W4_BYTES
        def w4():
            assert pool.apply(len, (data,)) == W4_BYTES
        emit("w4_apply_s", timed(w4, w4_iters, warmup=WARMUP))

        chunks = prime_chunks(w5_n, w5_chunks)
        expected = sum(count_primes(lo, hi) for lo, hi in chunks[:1])
        def w5():
            counts = pool.starmap(count_primes, chunks)
            assert counts[0] == expected
            return counts
        total = sum(w5())
        emit("w5_1_s", timed(w5, w5_iters, warmup=0))

    with ctx.Pool(2) as pool:
        def w5():
            assert sum(pool.starmap(count_primes, chunks)) == total
        emit("w5_2_s", timed(w5, w5_iters, warmup=0))
    emit("w5_primes", total)


def exec_main():
    import concurrent.futures as cf

    calls, submits, runs = (int(a) for a in sys.argv[2:5])
    ctx = multiprocessing.get_context(METHOD)
    emit("start_method", ctx.get_start_method())
    with cf.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        for n in range(W3_WARMUP):
            assert ex.submit(square, n).result() == n * n
        samples = []
        for n in range(calls):
            t0 = time.perf_counter()
            v = ex.submit(square, n).result()
            samples.append(time.perf_counter() - t0)
            assert v == n * n
        emit("exec_round_trip_s", statistics.median(samples))

    expected = sum(n * n for n in range(submits))
    with cf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        def run():
            futures = [ex.submit(square, n) for n in range(submits)]
            assert sum(f.result() for f in cf.as_completed(futures)) == expected
        emit("exec_submits_s", timed(run, runs, warmup=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["exec"]:
        exec_main()
    else:
        main()
