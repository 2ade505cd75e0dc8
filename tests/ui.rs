//! Compile-time behaviour of `#[multiproc::process]` and `#[multiproc::main]`: every rejected
//! mistake has its own file in `tests/ui/` with the expected diagnostics next to it, and the
//! accepted forms in `tests/ui/pass/` compile and run.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test --test ui`, then read them.
//!
//! The `duplicate_name*` cases fail at code generation, which trybuild reaches only when a pass
//! case is in the run (it then builds instead of checking): to run them alone, add a pass case to
//! the filter, `cargo test --test ui -- ui trybuild=duplicate_name trybuild=same_name`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
