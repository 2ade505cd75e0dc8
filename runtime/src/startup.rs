//! How a process that links multiproc starts: [`init`], and a constructor that does the same
//! before `main`, so that no `main` has to mention multiproc (a plain binary, the user of a
//! library that uses a pool inside, a libtest test binary).
//!
//! # A spawned child, entered before `main`
//!
//! `spawn` and the fork server re-execute the binary with
//! [`CHILD_FLAG`](crate::bootstrap::CHILD_FLAG) as `argv[1]`. That child must run its entry point
//! and never the program's `main`: not the user's, and not libtest's (which would take the
//! flag for a test filter and run the suite). On glibc the constructor below, in
//! `.init_array`, recognises such a child from the `argv` that glibc passes to constructors,
//! and enters it there; `main` is never reached, since a child ends with `_exit`. In any other
//! process the constructor registers the exit function, as [`init`] does; `init` in `main`
//! then changes nothing.
//!
//! procspawn solves the same problem for tests differently (`enable_test_support!`): its
//! constructor only marks test mode, and a child re-executes the test binary with libtest
//! arguments that select a generated `#[test]` whose body enters the child; libtest's output
//! is then silenced with the child's own, and a plain binary still needs `init()` in `main`.
//! Entering before `main` needs neither the generated test nor the silencing.
//!
//! ## The order of constructors
//!
//! A child finds its entry point in the registry that [`inventory`] fills, and inventory
//! registers each `#[process]` worker from a constructor of its own, in plain `.init_array`
//! sections of the crate that defines it. The linker concatenates those sections in the order
//! of its input (prioritised `.init_array.N` sections first; rust-lld, the default linker
//! here, and GNU ld agree), and glibc calls them in that order: no priority puts a
//! constructor after every plain one, and nothing orders the codegen units of one crate (the
//! runtime registers its own pool worker). A child entered from this constructor before some
//! worker had registered would not find it, or would fingerprint an incomplete registry and
//! refuse the parent's build: a failure that depends on the link.
//!
//! So a child does not depend on that order: before it enters, the constructor calls every
//! constructor that comes after its own slot in this object's `.init_array` (its bounds are
//! `__init_array_start` and `__init_array_end`, which the linker defines; glibc and musl use
//! them for static binaries), the way glibc would have, then enters the child, which never
//! returns, so glibc never calls them a second time. Constructors before its slot have run
//! already (those of shared libraries ran before any of the executable's). Linked into a
//! shared library rather than the executable (a Rust `dylib` that bundles it), or found
//! nowhere in the array (an unusual link), the constructor leaves the child alone, and `spawn`
//! and `forkserver` require [`init`] in `main`, as before. `tests/constructor_order.rs` runs this
//! constructor before every registration, and its children still find workers of three crates.
//! Not supported: two semver-incompatible copies of this runtime in one binary, whose
//! constructors would each enter the child.
//!
//! A child entered here differs from one entered in `main` in what Rust's own start-up does
//! before `main`: `SIGPIPE` is ignored here too, but the main thread has no name and no
//! stack-overflow message (an overflow is a plain `SIGSEGV`).

use crate::{child, current, process, start};

/// What [`crate::init`] does: in a spawned child, runs it and never returns; in the parent,
/// registers the exit function.
pub(crate) fn init() {
    current::set_exit_function(process::shutdown_children);
    if current::mark_initialized() {
        return;
    }
    child::enter_if_child(start::forkserver::serve);
    current::register_exit_function();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) mod constructor {
    use std::ffi::{c_char, c_int, CStr, OsStr};
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::{child, current};

    /// A constructor as glibc calls it: `argc`, `argv`, `envp`.
    type Constructor = unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char);

    #[used]
    #[link_section = ".init_array"]
    static CONSTRUCTOR: Constructor = construct;

    extern "C" {
        // Defined by the linker: the bounds of this object's `.init_array`.
        static __init_array_start: [usize; 0];
        static __init_array_end: [usize; 0];
    }

    /// This object's `.init_array` from just after the first slot that holds `construct`;
    /// `None` when no slot holds it.
    fn after_own_slot() -> Option<&'static [usize]> {
        // SAFETY: the linker defines both symbols (hidden, so they are this object's own) as
        // the bounds of its `.init_array`: an array of function addresses, filled in by the
        // dynamic loader's relocations before any constructor runs and never written again.
        let array = unsafe {
            let start = std::ptr::addr_of!(__init_array_start).cast::<usize>();
            let end = std::ptr::addr_of!(__init_array_end).cast::<usize>();
            let len = (end as usize).saturating_sub(start as usize) / size_of::<usize>();
            std::slice::from_raw_parts(start, len)
        };
        let own = construct as Constructor as usize;
        let slot = array.iter().position(|&f| f == own)?;
        Some(&array[slot + 1..])
    }

    /// Whether this code is linked into the main executable, not into a shared library (a Rust
    /// `dylib` that bundles it): only an executable's `.init_array` comes after every
    /// other, so that every worker has registered once it has run. A library's constructors
    /// run before the executable's, whose workers would then be missing.
    fn in_main_executable() -> bool {
        fn object_base(address: *const std::ffi::c_void) -> Option<usize> {
            let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
            // SAFETY: `dladdr` only reads the loader's tables and fills `info`; it returns 0
            // when no loaded object holds `address`.
            let found = unsafe { libc::dladdr(address, info.as_mut_ptr()) };
            // SAFETY: filled by `dladdr`, which found the object.
            (found != 0).then(|| unsafe { info.assume_init() }.dli_fbase as usize)
        }
        // SAFETY: reads the auxiliary vector, which the kernel gave this process.
        let program_headers = unsafe { libc::getauxval(libc::AT_PHDR) };
        program_headers != 0
            && object_base(program_headers as *const std::ffi::c_void)
                == object_base(construct as Constructor as *const std::ffi::c_void)
    }

    static RAN: AtomicBool = AtomicBool::new(false);

    /// The constructor (see the module's docs). Public to the crate's facade for
    /// `tests/constructor_order.rs`, which puts it in a slot before every registration.
    ///
    /// # Safety
    ///
    /// Called by the C library as a constructor, with the arguments glibc passes.
    pub unsafe extern "C" fn construct(
        argc: c_int,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) {
        if RAN.swap(true, Ordering::SeqCst) {
            return;
        }
        // Named before any child code runs: a spawned child registers it (see
        // `child::exit_function_of`).
        current::set_exit_function(crate::process::shutdown_children);
        let later = after_own_slot().filter(|_| in_main_executable());
        current::set_children_enter_before_main(later.is_some());
        // SAFETY: glibc passes `argc` and the `argv` of `main`: `argc` valid C strings.
        let arg = |i: c_int| unsafe {
            (i < argc && !argv.is_null() && !(*argv.add(i as usize)).is_null())
                .then(|| OsStr::from_bytes(CStr::from_ptr(*argv.add(i as usize)).to_bytes()))
        };
        let Some(later) =
            later.filter(|_| arg(1) == Some(OsStr::new(crate::bootstrap::CHILD_FLAG)))
        else {
            // The parent (or a child left to `init`): what `init` does in the parent.
            current::register_exit_function();
            // Under an MPI launcher, MPI starts here, and a rank other than 0 serves the
            // pool's tasks instead of running `main` (see `pool::mpi`).
            // A rank runs the constructors after this one first, as a child does: it looks
            // workers up in the registry that they fill.
            #[cfg(feature = "mpi")]
            if let Some(later) = later {
                // SAFETY: as for a child below; called only on a rank that never returns.
                crate::pool::enter_mpi_rank(|| unsafe { run_later(later, argc, argv, envp) });
            }
            return;
        };
        // SAFETY: the constructors after this one, with glibc's arguments; a child never
        // returns, so glibc never calls them a second time.
        unsafe { run_later(later, argc, argv, envp) };
        // What Rust's start-up does before `main`, which a child entered here never reaches.
        // SAFETY: sets a signal's disposition to "ignore", as std does before `main`.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        current::mark_initialized();
        child::enter_flagged(arg(1), arg(2), crate::start::forkserver::serve);
        // A child whose flag is refused has ended (`_exit`) in `enter_flagged`.
    }

    /// Calls the constructors in `later` (this object's `.init_array` after this constructor's
    /// slot) with glibc's arguments, as glibc would have.
    ///
    /// # Safety
    ///
    /// `later` comes from [`after_own_slot`], the arguments from glibc; the caller never
    /// returns to glibc, which would call them a second time.
    unsafe fn run_later(
        later: &[usize],
        argc: c_int,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) {
        for &address in later {
            // Sentinels of the older `.ctors` layout, which some linkers merge in.
            if address == 0 || address == usize::MAX {
                continue;
            }
            // SAFETY: an entry of this object's `.init_array`, the address of a constructor
            // that glibc would call next, with these very arguments (and will not call, since
            // a child never returns from here).
            unsafe {
                let later = std::mem::transmute::<usize, Constructor>(address);
                later(argc, argv, envp);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_constructor_is_found_in_this_executable() {
            assert!(in_main_executable());
            assert!(after_own_slot().is_some());
            assert!(RAN.load(Ordering::SeqCst), "glibc ran it before main");
            assert!(current::CHILDREN_ENTER_BEFORE_MAIN.load(Ordering::Relaxed));
        }
    }
}
