// `#[multiproc::main]` keeps `main` as written, with `multiproc::init()` first.
#[multiproc::process]
fn double(n: u32) -> u32 {
    n * 2
}

#[multiproc::main]
fn main() -> Result<(), String> {
    assert_eq!(double(2), 4);
    // Defined for the `crate` key; not called: `init` runs once, first in `main`.
    let _ = not_main as fn();
    Ok(())
}

#[multiproc::main(crate = "::multiproc")]
fn not_main() {}
