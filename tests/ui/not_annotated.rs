fn takes<T: multiproc::Target>(_: T) {}

fn square(n: u64) -> u64 {
    n * n
}

fn main() {
    takes(square);
}
