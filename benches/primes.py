"""The prime-count workload of pool_cpython.py and mpi_cpython.py (the same as the Rust
benches' `common::is_prime`): trial division by 2 and the odd numbers up to the square root."""


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
