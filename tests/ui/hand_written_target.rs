// `Target` and `Runnable` are sealed: an impl written by hand registers no entry point, so it
// would compile and then fail in the child with `UnknownEntry`. It must not compile.

#[derive(Clone, Copy)]
struct Square;

impl multiproc::Target for Square {
    type Args = u64;
    type Output = u64;
    type ArgsCarrier = multiproc::__private::Plain;
    type OutputCarrier = multiproc::__private::Plain;
    const NAME: &'static str = "square";
    fn call(n: u64) -> u64 {
        n * n
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Job;

impl multiproc::Runnable for Job {
    type Format = multiproc::__private::Compact;
    const NAME: &'static str = "job";
    const TYPE_NAME: &'static str = "Job";
    fn run_process(self) {}
}

fn main() {}
