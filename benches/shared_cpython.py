"""CPython side of `cargo bench --bench shared`: channels, locks and shared state.

Usage: python3 shared_cpython.py QUEUE_RUNS QUEUE_ITEMS PIPE_TRIPS LOCK_RUNS LOCK_LOOP \
           COUNTER_RUNS SHM_ITERS

Every child and pool uses the fork start method (the one the issue's CPython figures were
measured with, and the one the Rust side uses). Prints one line per measurement,
`<name> <value>` (times in seconds, medians unless said otherwise):

    start_method fork
    queue_s 1.4             QUEUE_ITEMS ints put by one producer process, got by this one
    pipe_rt_s 0.00005       Connection send/recv ping-pong with a child, per round trip
    pipe_rt_min_s ...       (and pipe_rt_p90_s)
    lock_pair_s 1.5e-07     lock.acquire(); lock.release(), per pair, loop overhead included
    empty_loop_s 1.5e-08    the same for loop with an empty body, per iteration
    counter_s 0.5           4 processes x 50_000 `with v.get_lock(): v.value += 1`, start to join
    shm_touch_s 0.001       Pool(1).apply(touch_len, (shm,)) with a 64 MiB SharedMemory
    shm_fill_s 0.05         Pool(1).apply(fill_new, (64 MiB,)): the worker creates and fills one
    bytes_apply_s 0.17      Pool(1).apply(len, (b'\\0' * 64 MiB,)), for reference
"""

import multiprocessing
import statistics
import sys
import time
from multiprocessing import shared_memory

from cpython_common import emit

METHOD = "fork"
WARMUP = 1
PIPE_WARMUP = 1000
COUNTER_PROCS = 4
COUNTER_INCS = 50_000
SHM_BYTES = 64 << 20
PAGE = 4096

# Created before the pool, so that the fork workers inherit it: the bytes `fill_new` copies
# into a new segment (the Rust worker memsets; a copy of prepared bytes is CPython's fastest).
FILL = b"\x07" * SHM_BYTES


def producer(q, ready, go, n):
    ready.set()
    go.wait()
    for i in range(n):
        q.put(i)


def echo(conn, parent_end):
    parent_end.close()  # a fork child inherits it: keep it open and recv never sees EOF
    while True:
        try:
            x = conn.recv()
        except EOFError:
            break
        conn.send(x)


def count(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def touch_len(shm):
    # One byte of every page: the worker maps the whole segment, as the Rust worker does.
    view = shm.buf[::PAGE]
    total = sum(view)
    view.release()
    size = shm.size
    shm.close()
    assert total == 7 * (size // PAGE)
    return size


def fill_new(n):
    shm = shared_memory.SharedMemory(create=True, size=n)
    shm.buf[:n] = FILL[:n]
    shm.close()
    return shm  # pickled as its name: the parent opens the same segment


def bench_queue(ctx, runs, items):
    q = ctx.Queue()

    def once():
        ready, go = ctx.Event(), ctx.Event()
        p = ctx.Process(target=producer, args=(q, ready, go, items))
        p.start()
        ready.wait()
        t0 = time.perf_counter()
        go.set()
        last = None
        for _ in range(items):
            last = q.get()
        elapsed = time.perf_counter() - t0
        p.join()
        assert last == items - 1 and p.exitcode == 0
        return elapsed

    for _ in range(WARMUP):
        once()
    return statistics.median(once() for _ in range(runs))


def bench_pipe(ctx, trips):
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=echo, args=(theirs, mine))
    p.start()
    theirs.close()
    for i in range(PIPE_WARMUP):
        mine.send(i)
        assert mine.recv() == i
    samples = []
    for i in range(trips):
        t0 = time.perf_counter()
        mine.send(i)
        v = mine.recv()
        samples.append(time.perf_counter() - t0)
        assert v == i
    mine.close()
    p.join()
    samples.sort()
    return samples


def lock_loop(lock, n):
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire(); lock.release()  # noqa: E702 (the issue's loop, as written)
    return time.perf_counter() - t0


def empty_loop(n):
    t0 = time.perf_counter()
    for _ in range(n):
        pass
    return time.perf_counter() - t0


def bench_counter(ctx, runs):
    def once():
        v = ctx.Value("q", 0)
        procs = [ctx.Process(target=count, args=(v, COUNTER_INCS)) for _ in range(COUNTER_PROCS)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - t0
        assert v.value == COUNTER_PROCS * COUNTER_INCS, v.value
        assert all(p.exitcode == 0 for p in procs)
        return elapsed

    for _ in range(WARMUP):
        once()
    return statistics.median(once() for _ in range(runs))


def bench_shm(ctx, iters):
    # The segment first: it starts the resource tracker, which the fork workers then share
    # (a worker that started its own would unlink the segments it saw at its exit).
    shm = shared_memory.SharedMemory(create=True, size=SHM_BYTES)
    shm.buf[:] = FILL
    data = b"\0" * SHM_BYTES
    touch, fill, apply_bytes = [], [], []
    try:
        with ctx.Pool(1) as pool:
            for i in range(WARMUP + iters):
                t0 = time.perf_counter()
                n = pool.apply(touch_len, (shm,))
                d_touch = time.perf_counter() - t0
                assert n == SHM_BYTES

                t0 = time.perf_counter()
                got = pool.apply(fill_new, (SHM_BYTES,))
                view = got.buf[::PAGE]
                total = sum(view)
                d_fill = time.perf_counter() - t0
                view.release()
                assert total == 7 * (SHM_BYTES // PAGE) and got.size == SHM_BYTES
                got.close()
                got.unlink()

                t0 = time.perf_counter()
                n = pool.apply(len, (data,))
                d_bytes = time.perf_counter() - t0
                assert n == SHM_BYTES
                if i >= WARMUP:
                    touch.append(d_touch)
                    fill.append(d_fill)
                    apply_bytes.append(d_bytes)
    finally:
        shm.close()
        shm.unlink()
    return statistics.median(touch), statistics.median(fill), statistics.median(apply_bytes)


def main():
    (queue_runs, queue_items, pipe_trips, lock_runs, lock_n, counter_runs,
     shm_iters) = (int(a) for a in sys.argv[1:8])
    ctx = multiprocessing.get_context(METHOD)
    emit("start_method", ctx.get_start_method())

    emit("queue_s", bench_queue(ctx, queue_runs, queue_items))

    samples = bench_pipe(ctx, pipe_trips)
    emit("pipe_rt_s", statistics.median(samples))
    emit("pipe_rt_min_s", samples[0])
    emit("pipe_rt_p90_s", samples[int(0.9 * (len(samples) - 1))])

    lock = ctx.Lock()
    lock_loop(lock, lock_n // 10)
    emit("lock_pair_s", statistics.median(lock_loop(lock, lock_n) / lock_n for _ in range(lock_runs)))
    emit("empty_loop_s", statistics.median(empty_loop(lock_n) / lock_n for _ in range(lock_runs)))

    emit("counter_s", bench_counter(ctx, counter_runs))

    touch, fill, apply_bytes = bench_shm(ctx, shm_iters)
    emit("shm_touch_s", touch)
    emit("shm_fill_s", fill)
    emit("bytes_apply_s", apply_bytes)


if __name__ == "__main__":
    main()
