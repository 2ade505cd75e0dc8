"""mpi4py side of `cargo bench --features mpi --bench mpi`: the same workloads on
`mpi4py.futures.MPIPoolExecutor`, run under the same launcher, same Open MPI, same ranks:

    mpirun -np 3 python3 -m mpi4py.futures benches/mpi_cpython.py MAP_ITERS APPLY_CALLS PRIME_ITERS PRIME_N

(`-m mpi4py.futures`: rank 0 runs this script, the other ranks serve its executor, as with
multiproc). Prints one line per measurement, `<name> <value>` (seconds, medians):

    map_s        executor.map(square, range(1_000_000), chunksize=125_000) (multiproc's chunks)
    apply_s      executor.submit(square, n).result(), per call
    primes_s     executor.starmap(count_primes, 64 chunks of range(PRIME_N))
"""

import statistics
import sys
import time

from mpi4py.futures import MPIPoolExecutor

from cpython_common import count_primes, emit, prime_chunks, timed

MAP_ITEMS = 1_000_000
APPLY_WARMUP = 200
CHUNKS = 64


def square(n):
    return n * n


def main():
    map_iters, apply_calls, prime_iters, prime_n = (int(a) for a in sys.argv[1:5])
    with MPIPoolExecutor() as executor:
        emit("ranks", executor.num_workers)
        workers = executor.num_workers
        chunksize = -(-MAP_ITEMS // (4 * workers))
        expected = (MAP_ITEMS - 1) ** 2

        def map_all():
            assert list(executor.map(square, range(MAP_ITEMS), chunksize=chunksize))[-1] == expected

        emit("map_s", timed(map_all, map_iters))

        for n in range(APPLY_WARMUP):
            assert executor.submit(square, n).result() == n * n
        samples = []
        for n in range(apply_calls):
            t0 = time.perf_counter()
            v = executor.submit(square, n).result()
            samples.append(time.perf_counter() - t0)
            assert v == n * n
        emit("apply_s", statistics.median(samples))

        chunks = prime_chunks(prime_n, CHUNKS)
        total = sum(executor.starmap(count_primes, chunks))

        def primes():
            assert sum(executor.starmap(count_primes, chunks)) == total

        emit("primes_s", timed(primes, prime_iters, warmup=0))
        emit("primes", total)


if __name__ == "__main__":
    main()
