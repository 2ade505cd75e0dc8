//! Compile-time behaviour of `#[multiproc::process]` and `#[multiproc::main]`: every rejected
//! mistake has its own file in `tests/ui/` with the expected diagnostics next to it, and the
//! accepted forms in `tests/ui/pass/` compile and run.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test --test ui`, then read them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
