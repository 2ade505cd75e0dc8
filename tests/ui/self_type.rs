// `Self` in a free function's signature: one error of the macro's and rustc's own, both at
// `Self`. It used to name the worker's generated struct, and rustc then also said that the
// struct (`f`) is not `Serialize` nor `Deserialize`.
use multiproc::process;

#[process]
fn f(x: Vec<Self>) -> usize {
    x.len()
}

fn main() {
    let _ = multiproc::Process::new(f, Vec::new());
}
