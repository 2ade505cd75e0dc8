//! Procedural macros of [multiproc](https://docs.rs/multiproc): `#[process]` and `#[main]`.
//!
//! Use them through the `multiproc` facade crate, which re-exports them.

mod args;
mod attrs;
mod carrier;
mod errors;
mod expand;
mod fallback;
mod parse;
mod valid;

use proc_macro::TokenStream;

/// Makes a function a worker that a child process can run, or a type a process class.
///
/// # On a function
///
/// ```ignore
/// #[multiproc::process]
/// pub fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// assert_eq!(add(2, 3), 5);                       // still a plain call
/// let p = multiproc::Process::new(add, (2, 3));   // and a value naming the worker
/// ```
///
/// The function becomes a zero-sized value `add` of a type that implements
/// [`Target`](https://docs.rs/multiproc/latest/multiproc/trait.Target.html) and derefs to the
/// original function, so `add(2, 3)` keeps working (a call expression derefs its callee). The
/// worker is registered under the name `module::path::add`; a child process finds it by that name,
/// never by address.
///
/// Equivalent code without `#[process]`:
///
/// ```ignore
/// #[allow(non_camel_case_types)]
/// #[derive(::core::clone::Clone, ::core::marker::Copy)]
/// pub struct add; // with the function's docs, `deprecated` and lint attributes
///
/// const _: () = {
///     // The body, unchanged, with the function's other attributes (`inline`, ...).
///     fn __multiproc_add(a: i64, b: i64) -> i64 {
///         a + b
///     }
///
///     impl ::core::ops::Deref for add {
///         type Target = fn(i64, i64) -> i64;
///         fn deref(&self) -> &fn(i64, i64) -> i64 {
///             const __MULTIPROC_FN: fn(i64, i64) -> i64 = __multiproc_add;
///             &__MULTIPROC_FN // a promoted constant: `&'static`
///         }
///     }
///
///     // `Target` is sealed: a hand-written impl, which would register nothing, does not build.
///     impl ::multiproc::__private::SealedTarget for add {}
///
///     impl ::multiproc::Target for add {
///         type Args = (i64, i64); // one argument `n: u64`: `u64`; none: `()`
///         type Output = i64; // no return type, or `!`: `()`
///         // How they are encoded: the plain old data the type checker finds (`Choice`,
///         // below), else the carrier the types as written give: `Plain` (as they are) unless
///         // an argument or the result is written `Vec<u8>`: then `Packed<Bytes>` for
///         // `fn f(v: Vec<u8>)`, and `Packed<(Held<u32>, Bytes)>` for
///         // `fn f(n: u32, v: Vec<u8>)`, so that the bytes travel as one run (a block of the
///         // pool's message when large), not one by one.
///         type ArgsCarrier = ::multiproc::__private::Chosen<
///             add, ::multiproc::__private::ArgsSide, ::multiproc::__private::Plain>;
///         type OutputCarrier = ::multiproc::__private::Chosen<
///             add, ::multiproc::__private::OutputSide, ::multiproc::__private::Plain>;
///         const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", "add");
///         fn call(args: Self::Args) -> Self::Output {
///             let (__arg0, __arg1) = args;
///             __multiproc_add(__arg0, __arg1)
///         }
///     }
///
///     // Asks the type checker, through any alias, whether the arguments (then the result)
///     // are plain old data (`Vec<E>` or `E` with `E: Pod`), which travels as its bytes: the
///     // first of three methods named `way` that applies to `&&&Probe<T>` is taken
///     // (autoref specialization). A tuple of several arguments is not: serde's way.
///     impl ::multiproc::__private::Choice<::multiproc::__private::ArgsSide, (i64, i64)> for add {
///         fn way() -> ::multiproc::__private::Way<(i64, i64)> {
///             use ::multiproc::__private::{PodItemWay as _, PodVecWay as _, SerdeWay as _};
///             (&&&::multiproc::__private::Probe::<(i64, i64)>::new()).way()
///         }
///     }
///     // ... and the same for `OutputSide` and `i64`.
///
///     // With several arguments, one per argument type, so that an unmet `Serialize` (...)
///     // bound is reported on the argument's type as written, not only on the tuple.
///     const _: () = ::multiproc::__private::assert_data::<i64>();
///     const _: () = ::multiproc::__private::assert_data::<i64>();
///
///     ::multiproc::__private::inventory::submit! {
///         ::multiproc::__private::Entry::target::<add>()
///     }
///
///     // Claims the name: a second worker registered as `module::path::add` is a duplicate
///     // symbol, so the build fails (see below).
///     #[unsafe(export_name = ::core::concat!(
///         "multiproc: two workers are registered as `",
///         ::core::concat!(::core::module_path!(), "::", "add"),
///         "`: rename one, or give it `#[process(name = \"...\")]`"
///     ))]
///     static __MULTIPROC_REGISTERED_NAME: u8 = 0;
/// };
/// ```
///
/// The function takes at most 12 arguments, each owned (no reference anywhere in the type) and
/// implementing `Serialize + DeserializeOwned + Send + 'static`, and so does its return type.
/// Patterns (`mut x: u32`, `(a, b): (u8, u8)`) work as usual. It cannot be generic, `async`,
/// `unsafe`, `extern` or take `self`. Because the types appear in the `Target` impl, they must be
/// at least as visible as the function (a `pub fn` cannot take a private type).
///
/// Calls go through `Deref`, so `add` is not itself a `fn` item: to get a function pointer, write
/// `*add`. And as a unit struct, `add` cannot be shadowed by a binding where it is in scope:
/// `let add = add(1, 2);` or an argument named `add` is a type error, so pick another name.
///
/// # On an impl block (the subclass style)
///
/// ```ignore
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct MyProcess {
///     id: u32,
/// }
///
/// #[multiproc::process]
/// impl MyProcess {
///     fn run(&mut self) { /* runs in the child */ }
/// }
/// ```
///
/// The impl block is kept as written, and the type implements
/// [`Runnable`](https://docs.rs/multiproc/latest/multiproc/trait.Runnable.html):
///
/// ```ignore
/// const _: () = {
///     impl ::multiproc::__private::SealedRunnable for MyProcess {} // `Runnable` is sealed
///     impl ::multiproc::Runnable for MyProcess {
///         type Format = ::multiproc::__private::Compact; // `codec = "msgpack"`: `SelfDescribing`
///         const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", "MyProcess");
///         const TYPE_NAME: &'static str = "MyProcess";
///         fn run_process(mut self) {
///             <MyProcess>::run(&mut self) // `run(self)`: `<MyProcess>::run(self)`
///         }
///     }
///     ::multiproc::__private::inventory::submit! {
///         ::multiproc::__private::Entry::runnable::<MyProcess>()
///     }
///     // And the same name-claiming static as for a function.
/// };
/// ```
///
/// `run` takes `&mut self`, `&self` or `self`, no other argument, and returns `()`. The impl
/// block is inherent and not generic.
///
/// # Arguments
///
/// - `name = "my_app::square"`: registers the worker under this exact name instead of
///   `module::path::ident`, so that it survives moving the function.
/// - `codec = "msgpack"`: how the worker's arguments and result are encoded, wherever they
///   travel (`Process`, every `Pool` call and the pool initializer, every start method).
///   `"bincode"`, the default, is compact and fast but not self-describing: `serde_json::Value`,
///   untagged and internally tagged enums, `#[serde(flatten)]` and `skip_serializing_if` fail
///   with an error that names the worker and the type. `"msgpack"` (MessagePack, with
///   `rmp-serde`) writes each value's type and each struct's field names, so those shapes work:
///
///   ```ignore
///   #[multiproc::process(codec = "msgpack")]
///   fn keys(doc: serde_json::Value) -> Vec<String> {
///       doc.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
///   }
///   ```
///
///   The carriers take the codec's format (`Plain<SelfDescribing>`, `Packed<.., SelfDescribing>`;
///   numbers still travel as their bytes, `Raw`), so the choice is part of the build
///   fingerprint. Any other name is an error at the string that lists the accepted ones. On an
///   impl block it is the format of the process type's value (its fields), encoded by
///   `Process::from` and decoded in the child (`type Format` of `Runnable`, hidden).
/// - `crate = "::my_crate::multiproc"`: the path of the multiproc crate in generated code, for
///   crates that re-export it. Default `::multiproc`.
///
/// # Unique names
///
/// Functions and process types share one namespace of registered names. Two of them registered
/// under one name (two `name = "..."` alike, or a `name` equal to another's module path) do not
/// build: in one crate rustc reports ``symbol `multiproc: two workers are registered as `app::job`:
/// ...` is already defined`` at the second attribute; in two crates linked into one binary the
/// linker reports a duplicate symbol of that name, with both definitions. The same function name
/// in two modules or two crates is two names, and builds.
///
/// # Rejected items
///
/// A rejected function still defines its name as a worker value whose types are the error, and
/// a rejected impl block still gives its type a `Runnable` impl, so the call sites
/// (`Process::new(f, ...)`, `pool.map(f, ...)`) add no error of their own: the attribute's message
/// is the one to fix. The function itself is kept, so its body is still checked.
#[proc_macro_attribute]
pub fn process(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::process(attr.into(), item.into()).into()
}

/// Makes `multiproc::init()` the first statement of `main` (after any items, which run nothing).
///
/// ```ignore
/// #[multiproc::main]
/// fn main() {
///     // ...
/// }
/// ```
///
/// is
///
/// ```ignore
/// fn main() {
///     ::multiproc::init();
///     // ...
/// }
/// ```
///
/// `init()` must run before anything else: in a child process it runs the requested worker and
/// exits. With glibc a constructor does all of this before `main` already, so the attribute
/// changes nothing there; it is needed with other C libraries. The function may return anything `main` may return; it cannot be `async` (start the
/// async runtime inside a plain `fn main`), generic, or take arguments. Accepts
/// `crate = "path"` like `#[process]`.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::main(attr.into(), item.into()).into()
}
