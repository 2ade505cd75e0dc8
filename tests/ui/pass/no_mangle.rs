// `#[no_mangle]` on a worker exports the function under the worker's name, as without
// `#[process]`: it exported `__multiproc_exported`, the generated function that holds the
// body, and a caller of `exported` failed to link.
#[multiproc::process]
#[no_mangle]
fn exported(x: u32) -> u32 {
    x + 1
}

#[multiproc::process]
#[unsafe(no_mangle)]
fn exported_unsafe(x: u32) -> u32 {
    x + 2
}

extern "Rust" {
    #[link_name = "exported"]
    fn by_symbol(x: u32) -> u32;
    #[link_name = "exported_unsafe"]
    fn by_symbol_unsafe(x: u32) -> u32;
}

fn main() {
    // SAFETY: the symbols are the workers' functions, of these signatures.
    unsafe {
        assert_eq!(by_symbol(1), 2);
        assert_eq!(by_symbol_unsafe(1), 3);
    }
    assert_eq!(exported(1), 2);
}
