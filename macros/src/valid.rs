//! Semantic checks: everything that parses but cannot be a worker or a process type.
//!
//! Each check reports at the offending token and keeps going, so one compile shows every mistake.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{
    FnArg, GenericArgument, Generics, Ident, ImplItem, ImplItemFn, ItemFn, ItemImpl, Pat,
    PathArguments, ReturnType, Signature, Type, TypeReference,
};

use crate::errors::Errors;

/// The most arguments a `#[process]` function takes.
pub(crate) const MAX_ARGS: usize = 12;

// ---------------------------------------------------------------------------------------------
// `#[process] fn`

/// Checks a `#[process]` function.
pub(crate) fn check_fn(item: &ItemFn) -> syn::Result<()> {
    let mut errors = Errors::default();
    let sig = &item.sig;

    if let Some(token) = &sig.asyncness {
        errors.spanned(
            token,
            "`#[process]` functions cannot be `async`: make it a plain `fn` that runs the future \
             to completion, e.g. with the `block_on` of your async runtime",
        );
    }
    if let Some(token) = &sig.unsafety {
        errors.spanned(
            token,
            "`#[process]` functions cannot be `unsafe`: the child process calls it with no caller \
             to uphold its safety contract; move the `unsafe` block inside a safe function",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(
            abi,
            "`#[process]` functions cannot have an explicit ABI: remove the `extern`",
        );
    }
    check_fn_generics(&sig.generics, &mut errors);

    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(receiver) => errors.spanned(
                receiver,
                "`#[process]` applies to free functions, not methods: a `self` receiver cannot \
                 cross a process boundary; for a process type, put `#[process]` on its impl block \
                 with `fn run(&mut self)`",
            ),
            FnArg::Typed(pat_type) => {
                for attr in &pat_type.attrs {
                    if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
                        errors.spanned(
                            attr,
                            "`#[process]` does not support `cfg` on arguments: the argument tuple \
                             must be the same in every build",
                        );
                    }
                }
                check_pattern(&pat_type.pat, &sig.ident, &mut errors);
                check_type(&pat_type.ty, Position::Argument, &mut errors);
            }
        }
    }
    if sig.inputs.len() > MAX_ARGS {
        let extra: TokenStream = sig
            .inputs
            .iter()
            .skip(MAX_ARGS)
            .map(ToTokens::to_token_stream)
            .collect();
        errors.spanned(
            extra,
            format!(
                "`#[process]` functions take at most {MAX_ARGS} arguments, `{}` takes {}: pass a \
                 struct that derives `Serialize` and `Deserialize` instead",
                sig.ident,
                sig.inputs.len()
            ),
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "`#[process]` functions cannot be variadic");
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        check_type(ty, Position::Return, &mut errors);
    }
    errors.finish()
}

/// Rejects a binding named like the function: the name is the worker's unit struct, which a
/// binding cannot shadow (rustc would report a type mismatch on the pattern).
fn check_pattern(pat: &Pat, fn_ident: &Ident, errors: &mut Errors) {
    match pat {
        Pat::Ident(binding) => {
            if binding.ident == *fn_ident {
                errors.spanned(
                    &binding.ident,
                    format!(
                        "an argument cannot be named `{fn_ident}` like its `#[process]` function: \
                         `{fn_ident}` is the worker value, which a binding cannot shadow; rename \
                         the argument"
                    ),
                );
            }
            if let Some((_, sub)) = &binding.subpat {
                check_pattern(sub, fn_ident, errors);
            }
        }
        Pat::Tuple(tuple) => {
            for elem in &tuple.elems {
                check_pattern(elem, fn_ident, errors);
            }
        }
        Pat::TupleStruct(tuple) => {
            for elem in &tuple.elems {
                check_pattern(elem, fn_ident, errors);
            }
        }
        Pat::Slice(slice) => {
            for elem in &slice.elems {
                check_pattern(elem, fn_ident, errors);
            }
        }
        Pat::Struct(strukt) => {
            for field in &strukt.fields {
                check_pattern(&field.pat, fn_ident, errors);
            }
        }
        Pat::Paren(paren) => check_pattern(&paren.pat, fn_ident, errors),
        Pat::Reference(reference) => check_pattern(&reference.pat, fn_ident, errors),
        Pat::Type(typed) => check_pattern(&typed.pat, fn_ident, errors),
        _ => {}
    }
}

fn check_fn_generics(generics: &Generics, errors: &mut Errors) {
    if generics.params.is_empty() {
        return;
    }
    let only_lifetimes = generics
        .params
        .iter()
        .all(|p| matches!(p, syn::GenericParam::Lifetime(_)));
    let message = if only_lifetimes {
        "`#[process]` functions cannot have lifetime parameters: arguments and the return value \
         cross a process boundary and must be owned"
    } else {
        "`#[process]` functions cannot be generic: a child process finds the function by its \
         registered name, which stands for one concrete signature; write one `#[process]` \
         function per type"
    };
    errors.spanned(generics, message);
}

/// Where a type appears, for messages.
#[derive(Clone, Copy)]
enum Position {
    Argument,
    Return,
}

impl Position {
    fn must_be_owned(self) -> &'static str {
        match self {
            Position::Argument => "arguments cross a process boundary and must be owned",
            Position::Return => "the return value crosses a process boundary and must be owned",
        }
    }

    fn needs_concrete_type(self) -> &'static str {
        match self {
            Position::Argument => "arguments cross a process boundary and need a concrete type",
            Position::Return => {
                "the return value crosses a process boundary and needs a concrete type"
            }
        }
    }
}

/// Rejects references and `impl Trait` anywhere in an argument or return type.
fn check_type(ty: &Type, pos: Position, errors: &mut Errors) {
    match ty {
        Type::Reference(reference) => {
            let message = match owned_suggestion(reference) {
                Some(owned) => format!(
                    "{}: use `{owned}` instead of `{}`",
                    pos.must_be_owned(),
                    display(ty)
                ),
                None => format!("{}, not borrowed", pos.must_be_owned()),
            };
            errors.spanned(reference, message);
        }
        Type::ImplTrait(impl_trait) => errors.spanned(
            impl_trait,
            format!(
                "`impl Trait` is not allowed in `#[process]` functions: {} that implements \
                 `Serialize` and `Deserialize`",
                pos.needs_concrete_type()
            ),
        ),
        Type::Array(array) => check_type(&array.elem, pos, errors),
        Type::Slice(slice) => check_type(&slice.elem, pos, errors),
        Type::Group(group) => check_type(&group.elem, pos, errors),
        Type::Paren(paren) => check_type(&paren.elem, pos, errors),
        Type::Ptr(ptr) => check_type(&ptr.elem, pos, errors),
        Type::Tuple(tuple) => {
            for elem in &tuple.elems {
                check_type(elem, pos, errors);
            }
        }
        Type::Path(path) => {
            if let Some(qself) = &path.qself {
                check_type(&qself.ty, pos, errors);
            }
            // Outside an impl block `Self` names nothing; in the code generated beside the
            // function it would name the worker's unit struct, and rustc then reported that
            // struct as not `Serialize`, after the error about `Self` itself.
            if path.qself.is_none() && path.path.leading_colon.is_none() {
                if let Some(first) = path.path.segments.first().filter(|s| s.ident == "Self") {
                    errors.spanned(
                        &first.ident,
                        "`Self` has no meaning outside an impl block: name the type itself",
                    );
                }
            }
            for segment in &path.path.segments {
                if let PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        match arg {
                            GenericArgument::Type(ty) => check_type(ty, pos, errors),
                            GenericArgument::AssocType(assoc) => check_type(&assoc.ty, pos, errors),
                            _ => {}
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The owned counterpart of a borrowed type, when there is an obvious one.
fn owned_suggestion(reference: &TypeReference) -> Option<String> {
    match &*reference.elem {
        Type::Slice(slice) => Some(format!("Vec<{}>", display(&slice.elem))),
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last()?;
            let owned = match last.ident.to_string().as_str() {
                "str" => "String",
                "Path" => "PathBuf",
                "OsStr" => "OsString",
                "CStr" => "CString",
                _ => return Some(display(&reference.elem)),
            };
            Some(owned.to_owned())
        }
        Type::TraitObject(_) | Type::ImplTrait(_) => None,
        other => Some(display(other)),
    }
}

/// A type as the user would write it: `Vec<&'a str>`, not `Vec < & 'a str >`.
pub(crate) fn display(tokens: &impl ToTokens) -> String {
    let mut s = tokens.to_token_stream().to_string();
    for (from, to) in [
        (" < ", "<"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        (" ::", "::"),
        (":: ", "::"),
        (" ,", ","),
        ("& ", "&"),
        ("[ ", "["),
        (" ]", "]"),
        ("( ", "("),
        (" )", ")"),
        (" ;", ";"),
    ] {
        s = s.replace(from, to);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// `#[process] impl`

/// How `run` takes its receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Receiver {
    /// `self` or `mut self`.
    Value,
    /// `&self`.
    Ref,
    /// `&mut self`.
    RefMut,
}

/// What the expansion needs to know about a valid `#[process]` impl block.
pub(crate) struct Run {
    /// How `run` takes `self`.
    pub receiver: Receiver,
    /// The last path segment of the self type: `MyProcess`.
    pub type_ident: Ident,
}

/// Checks a `#[process]` impl block and finds its `run` method.
pub(crate) fn check_impl(item: &ItemImpl) -> syn::Result<Run> {
    let mut errors = Errors::default();
    let type_text = display(&item.self_ty);

    if let Some((_, path, _)) = &item.trait_ {
        errors.spanned(
            path,
            format!(
                "`#[process]` applies to an inherent impl block, not a trait impl: put \
                 `fn run(&mut self)` in `impl {type_text} {{ ... }}`"
            ),
        );
        // Without an inherent impl, what `run` means is moot.
        return Err(errors.finish().unwrap_err());
    }
    let type_ident = if item.generics.params.is_empty() {
        self_type_ident(&item.self_ty, &mut errors)
    } else {
        // `impl<T> P<T>`: one error for the generics, not another for `<T>`.
        errors.spanned(
            &item.generics,
            "`#[process]` impl blocks cannot be generic: a child process rebuilds the value from \
             its registered name, which stands for one concrete type",
        );
        None
    };

    let run = item.items.iter().find_map(|item| match item {
        ImplItem::Fn(f) if f.sig.ident == "run" => Some(f),
        _ => None,
    });
    let receiver = match run {
        Some(run) => check_run(run, &type_text, &mut errors),
        None => {
            errors.spanned(
                &item.self_ty,
                "`#[process]` impl block needs a `fn run(&mut self)`",
            );
            None
        }
    };

    errors.finish()?;
    match (receiver, type_ident) {
        (Some(receiver), Some(type_ident)) => Ok(Run {
            receiver,
            type_ident,
        }),
        // Every `None` above pushed an error.
        _ => unreachable!("an invalid impl block reported no error"),
    }
}

/// The ident of a plain, non-generic named type.
fn self_type_ident(ty: &Type, errors: &mut Errors) -> Option<Ident> {
    let path = match ty {
        Type::Path(path) if path.qself.is_none() => &path.path,
        Type::Group(group) => return self_type_ident(&group.elem, errors),
        Type::Paren(paren) => return self_type_ident(&paren.elem, errors),
        other => {
            errors.spanned(
                other,
                "`#[process]` impl block needs a named type, e.g. `impl MyProcess { ... }`",
            );
            return None;
        }
    };
    let mut ok = true;
    for segment in &path.segments {
        if !segment.arguments.is_none() {
            errors.spanned(
                &segment.arguments,
                "`#[process]` impl blocks cannot have a generic self type: a child process \
                 rebuilds the value from its registered name, which stands for one concrete \
                 type; define a non-generic type for the process",
            );
            ok = false;
        }
    }
    let last = path.segments.last()?;
    ok.then(|| last.ident.clone())
}

fn check_run(run: &ImplItemFn, type_text: &str, errors: &mut Errors) -> Option<Receiver> {
    let sig: &Signature = &run.sig;
    if !sig.generics.params.is_empty() {
        errors.spanned(&sig.generics, "`run` cannot be generic");
    }
    if let Some(token) = &sig.asyncness {
        errors.spanned(
            token,
            "`run` cannot be `async`: make it a plain `fn` that runs the future to completion, \
             e.g. with the `block_on` of your async runtime",
        );
    }
    if let Some(token) = &sig.unsafety {
        errors.spanned(
            token,
            "`run` cannot be `unsafe`: the child process calls it with no caller to uphold its \
             safety contract",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(
            abi,
            "`run` cannot have an explicit ABI: remove the `extern`",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "`run` cannot be variadic");
    }
    match &sig.output {
        ReturnType::Default => {}
        ReturnType::Type(_, ty) => match &**ty {
            Type::Tuple(t) if t.elems.is_empty() => {}
            Type::Never(_) => {}
            other => errors.spanned(
                other,
                "`run` must return `()`: nothing carries its result back to the parent; panic to \
                 make the process fail",
            ),
        },
    }

    let mut inputs = sig.inputs.iter();
    let receiver = match inputs.next() {
        Some(FnArg::Receiver(receiver)) => {
            let kind = receiver_kind(&receiver.ty);
            if kind.is_none() {
                errors.spanned(receiver, "`run` must take `self`, `&self` or `&mut self`");
            }
            kind
        }
        _ => {
            errors.spanned(
                &sig.ident,
                "`run` needs a receiver: `fn run(&mut self)`, `fn run(&self)` or `fn run(self)`",
            );
            None
        }
    };
    let extra: TokenStream = sig
        .inputs
        .iter()
        .filter(|arg| matches!(arg, FnArg::Typed(_)))
        .map(ToTokens::to_token_stream)
        .collect();
    if !extra.is_empty() {
        errors.spanned(
            extra,
            format!(
                "`run` takes no arguments besides `self`: the data of the process travels in the \
                 fields of `{type_text}`"
            ),
        );
    }
    receiver
}

/// `Self`, `&Self`, `&mut Self`: what syn makes of `self`, `&self`, `&mut self` (and of the
/// explicit `self: Self`, ...).
fn receiver_kind(ty: &Type) -> Option<Receiver> {
    fn is_self(ty: &Type) -> bool {
        matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident("Self"))
    }
    match ty {
        Type::Reference(r) if is_self(&r.elem) => Some(if r.mutability.is_some() {
            Receiver::RefMut
        } else {
            Receiver::Ref
        }),
        ty if is_self(ty) => Some(Receiver::Value),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// `#[main]`

/// Checks a `#[main]` function.
pub(crate) fn check_main(item: &ItemFn) -> syn::Result<()> {
    let mut errors = Errors::default();
    let sig = &item.sig;
    if let Some(token) = &sig.asyncness {
        errors.spanned(
            token,
            "`#[multiproc::main]` cannot be applied to an `async fn`: `multiproc::init()` must \
             run before an async runtime starts; use it on a plain `fn main` that starts the \
             runtime",
        );
    }
    if let Some(token) = &sig.constness {
        errors.spanned(
            token,
            "`#[multiproc::main]` cannot be applied to a `const fn`",
        );
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            "`#[multiproc::main]` cannot be applied to a generic function",
        );
    }
    if !sig.inputs.is_empty() {
        errors.spanned(
            &sig.inputs,
            "`#[multiproc::main]` functions take no arguments: read them with `std::env::args()`",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "`#[multiproc::main]` functions take no arguments");
    }
    errors.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn fn_errors(item: ItemFn) -> Vec<String> {
        match check_fn(&item) {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn impl_errors(item: ItemImpl) -> Vec<String> {
        match check_impl(&item) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn valid_fns() {
        for item in [
            parse_quote!(
                fn f() {}
            ),
            parse_quote!(
                pub fn add(a: i64, b: i64) -> i64 {
                    a + b
                }
            ),
            parse_quote!(
                const fn f(mut x: u32, (a, b): (u8, u8)) -> u32 {
                    x
                }
            ),
            parse_quote!(
                fn f(x: Vec<String>, y: ::std::collections::HashMap<u8, Box<str>>) {}
            ),
            parse_quote!(
                fn f(x: std::borrow::Cow<'static, str>) -> ! {
                    loop {}
                }
            ),
        ] {
            assert_eq!(fn_errors(item), Vec::<String>::new());
        }
    }

    #[test]
    fn borrowed_arguments_get_an_owned_suggestion() {
        let errs = fn_errors(parse_quote!(
            fn f(a: &str, b: &'static [u8], c: Vec<&str>, d: &mut Foo, e: &dyn Tr) {}
        ));
        assert_eq!(
            errs,
            [
                "arguments cross a process boundary and must be owned: use `String` instead of `&str`",
                "arguments cross a process boundary and must be owned: use `Vec<u8>` instead of `&'static [u8]`",
                "arguments cross a process boundary and must be owned: use `String` instead of `&str`",
                "arguments cross a process boundary and must be owned: use `Foo` instead of `&mut Foo`",
                "arguments cross a process boundary and must be owned, not borrowed",
            ]
        );
    }

    #[test]
    fn borrowed_return() {
        assert_eq!(
            fn_errors(parse_quote!(fn f() -> Option<&'static std::path::Path> { None })),
            ["the return value crosses a process boundary and must be owned: use `PathBuf` instead of `&'static std::path::Path`"]
        );
    }

    #[test]
    fn impl_trait() {
        let errs = fn_errors(parse_quote!(
            fn f(a: impl Into<u8>) -> impl Copy {}
        ));
        assert_eq!(errs.len(), 2);
        assert!(errs[0].contains("arguments cross a process boundary and need a concrete type"));
        assert!(errs[1]
            .contains("the return value crosses a process boundary and needs a concrete type"));
    }

    #[test]
    fn signature_errors_are_all_reported() {
        let errs = fn_errors(parse_quote!(
            async unsafe extern "C" fn f<T>(&self, x: T) {}
        ));
        assert_eq!(errs.len(), 5, "{errs:#?}");
    }

    #[test]
    fn argument_named_like_the_function() {
        let errs = fn_errors(parse_quote!(
            fn count(mut count: u32, (a, Some(count)): (u8, Option<u8>)) {}
        ));
        assert_eq!(errs.len(), 2);
        assert!(errs[0].starts_with("an argument cannot be named `count`"));
        assert!(check_fn(&parse_quote!(
            fn count(n: u32, counter: u8) {}
        ))
        .is_ok());
    }

    #[test]
    fn lifetimes_only() {
        let errs = fn_errors(parse_quote!(
            fn f<'a>(x: u8) {}
        ));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("lifetime parameters"));
    }

    #[test]
    fn too_many_arguments() {
        let ok: ItemFn = parse_quote!(
            fn many(
                a: u8,
                b: u8,
                c: u8,
                d: u8,
                e: u8,
                f: u8,
                g: u8,
                h: u8,
                i: u8,
                j: u8,
                k: u8,
                l: u8,
            ) {
            }
        );
        assert!(check_fn(&ok).is_ok());
        let errs = fn_errors(parse_quote!(
            fn many(
                a: u8,
                b: u8,
                c: u8,
                d: u8,
                e: u8,
                f: u8,
                g: u8,
                h: u8,
                i: u8,
                j: u8,
                k: u8,
                l: u8,
                m: u8,
            ) {
            }
        ));
        assert_eq!(errs.len(), 1);
        assert!(errs[0]
            .starts_with("`#[process]` functions take at most 12 arguments, `many` takes 13"));
    }

    #[test]
    fn valid_impls() {
        for (item, receiver) in [
            (
                parse_quote!(impl P { fn run(&mut self) {} fn other(&self, x: u8) {} }),
                Receiver::RefMut,
            ),
            (
                parse_quote!(impl P { fn run(&self) -> () {} }),
                Receiver::Ref,
            ),
            (
                parse_quote!(impl m::P { fn run(mut self) -> ! { loop {} } }),
                Receiver::Value,
            ),
            (
                parse_quote!(impl P { fn run(self: Self) {} }),
                Receiver::Value,
            ),
        ] {
            let run = check_impl(&item).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(run.receiver, receiver);
            assert_eq!(run.type_ident, "P");
        }
    }

    #[test]
    fn invalid_impls() {
        let cases: Vec<(ItemImpl, &str)> = vec![
            (
                parse_quote!(impl P { fn other(&self) {} }),
                "`#[process]` impl block needs a `fn run(&mut self)`",
            ),
            (
                parse_quote!(impl Tr for P { fn run(&mut self) {} }),
                "`#[process]` applies to an inherent impl block, not a trait impl",
            ),
            (
                parse_quote!(
                    impl<T> P<T> {
                        fn run(&mut self) {}
                    }
                ),
                "`#[process]` impl blocks cannot be generic",
            ),
            (
                parse_quote!(impl P<u8> { fn run(&mut self) {} }),
                "`#[process]` impl blocks cannot have a generic self type",
            ),
            (
                parse_quote!(impl P { fn run() {} }),
                "`run` needs a receiver",
            ),
            (
                parse_quote!(impl P { fn run(&mut self, x: u8) {} }),
                "`run` takes no arguments besides `self`",
            ),
            (
                parse_quote!(impl P { async fn run(&mut self) {} }),
                "`run` cannot be `async`",
            ),
            (
                parse_quote!(impl P { fn run<T>(&mut self) {} }),
                "`run` cannot be generic",
            ),
            (
                parse_quote!(impl P { fn run(self: Box<Self>) {} }),
                "`run` must take `self`, `&self` or `&mut self`",
            ),
            (
                parse_quote!(impl P { fn run(&mut self) -> u8 { 0 } }),
                "`run` must return `()`",
            ),
        ];
        for (item, expected) in cases {
            let errs = impl_errors(item);
            assert!(
                errs.len() == 1 && errs[0].starts_with(expected),
                "expected {expected:?}, got {errs:#?}"
            );
        }
    }

    #[test]
    fn main_checks() {
        assert!(check_main(&parse_quote!(
            fn main() {}
        ))
        .is_ok());
        assert!(check_main(&parse_quote!(
            fn main() -> Result<(), Box<dyn std::error::Error>> {
                Ok(())
            }
        ))
        .is_ok());
        assert!(check_main(&parse_quote!(
            async fn main() {}
        ))
        .is_err());
        assert!(check_main(&parse_quote!(
            fn main(x: u8) {}
        ))
        .is_err());
        assert!(check_main(&parse_quote!(
            fn main<T>() {}
        ))
        .is_err());
    }

    #[test]
    fn display_types() {
        let ty: Type = parse_quote!(::std::collections::HashMap<&'a str, Vec<(u8, [u8; 4])>>);
        assert_eq!(
            display(&ty),
            "::std::collections::HashMap<&'a str, Vec<(u8, [u8; 4])>>"
        );
    }
}
