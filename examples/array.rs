//! `Array`: Python's docs example, a child negates a shared array in place.
//!
//! ```text
//! [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]
//! ```
use multiproc::{process, Array, Process};

#[process]
fn f(a: Array<i32>) {
    for x in a.lock().expect("lock").iter_mut() {
        *x = -*x;
    }
}

#[multiproc::main]
fn main() -> multiproc::Result<()> {
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>())?;
    let p = Process::new(f, arr.clone());
    p.start()?;
    p.join()?;
    println!("{:?}", arr.to_vec()?);
    Ok(())
}
