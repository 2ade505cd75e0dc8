//! Code generation, on `proc_macro2` so it can be tested.
//!
//! Each entry point runs the stages in order: attribute arguments (`args`), item (`parse`),
//! semantic checks (`valid`), then codegen. How each argument and result travels is decided in
//! `carrier`; what an error yields instead of the expansion, in `fallback`.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ItemImpl, ReturnType, Type};

use crate::args::{self, Args};
use crate::attrs::{split_attrs, FnAttrs};
use crate::carrier::{carrier, split_args};
use crate::errors::Errors;
use crate::fallback::{self, with_errors};
use crate::parse::{self, Item};
use crate::valid::{self, Receiver, Run};

/// `#[process]`.
pub(crate) fn process(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let (args, krate) = args::parse_with_crate(attr, args::PROCESS_KEYS);
    let args = args.map_err(|e| errors.push(e)).ok();
    let parsed = match parse::process_item(item.clone()) {
        Ok(parsed) => parsed,
        Err(e) => {
            errors.push(e);
            return with_errors(item, errors);
        }
    };
    match parsed {
        Item::Fn(f) => {
            let checked = valid::check_fn(&f).map_err(|e| errors.push(e));
            match (args, checked, krate) {
                (Some(args), Ok(()), _) => expand_fn(f, &args),
                (_, _, Some(krate)) => fallback::process_fn(f, &krate, errors),
                (_, _, None) => with_errors(item, errors),
            }
        }
        Item::Impl(i) => {
            let checked = valid::check_impl(&i).map_err(|e| errors.push(e));
            match (args, checked, krate) {
                (Some(args), Ok(run), _) => expand_impl(i, &run, &args),
                (_, _, Some(krate)) => fallback::process_impl(i, &krate, errors),
                (_, _, None) => with_errors(item, errors),
            }
        }
    }
}

/// `#[main]`.
pub(crate) fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = args::parse(attr, args::MAIN_KEYS)
        .map_err(|e| errors.push(e))
        .ok();
    let parsed = match parse::main_item(item.clone()) {
        Ok(parsed) => parsed,
        Err(e) => {
            errors.push(e);
            return with_errors(item, errors);
        }
    };
    let checked = valid::check_main(&parsed).map_err(|e| errors.push(e));
    match (args, checked) {
        (Some(args), Ok(())) => expand_main(parsed, &args),
        _ => with_errors(item, errors),
    }
}

// ---------------------------------------------------------------------------------------------
// `#[process] fn`

/// Every token of `tokens`, groups included, at `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(group) = &tt {
                let mut new = Group::new(group.delimiter(), respan(group.stream(), span));
                new.set_span(span);
                tt = TokenTree::Group(new);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

/// `const _: () = krate::__private::assert_data::<ty>();`, all at the type's span, so an unmet
/// `Serialize` (...) bound is reported on the user's type.
fn assert_data(krate: &TokenStream, ty: &Type) -> TokenStream {
    let span = ty.span();
    let krate = respan(krate.clone(), span);
    quote_spanned! {span=>
        const _: () = #krate::__private::assert_data::<#ty>();
    }
}

fn registered_name(args: &Args, ident: &syn::Ident) -> TokenStream {
    match &args.name {
        Some(name) => quote!(#name),
        None => {
            let ident = ident.unraw().to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #ident))
        }
    }
}

/// `#[no_mangle]` (or `#[unsafe(no_mangle)]`) of the user's function, for the inner function
/// that holds its body: the symbol of the user's name, as `#[export_name]`, not of the inner
/// function's (`__multiproc_name`). At the user's span, for the edition's rules. Any other
/// attribute as it is.
fn exported_as(attr: syn::Attribute, ident: &syn::Ident) -> syn::Attribute {
    let name = ident.unraw().to_string();
    let span = attr.span();
    match &attr.meta {
        syn::Meta::Path(path) if path.is_ident("no_mangle") => {
            syn::parse_quote_spanned!(span=> #[export_name = #name])
        }
        syn::Meta::List(list)
            if list.path.is_ident("unsafe") && list.tokens.to_string() == "no_mangle" =>
        {
            syn::parse_quote_spanned!(span=> #[unsafe(export_name = #name)])
        }
        _ => attr,
    }
}

/// A static whose symbol is the registered name, so that two workers registered under one name
/// are a build error, not a child that cannot tell which one it was asked to run.
///
/// The symbol is the message: in one crate rustc reports "symbol `multiproc: two workers are
/// registered as ...` is already defined" at the second attribute; across crates the linker
/// reports a duplicate symbol of that name (with both source lines in a debug build), and fat LTO
/// "linking globals named '...': symbol multiply defined". The static sits in the same `const`
/// block as the `inventory` entry, so in the same object file: a registration that is linked in
/// claims its name. It cannot fire for two names the registry tells apart: the same function
/// name in two modules or two crates has two module paths. (Two semver-incompatible versions of
/// one crate with workers in one binary do clash: their registered names are the same.)
///
/// At the attribute's span (the macro's), not the user's tokens: `export_name` trips the
/// `unsafe_code` lint in the user's crate otherwise, as any generated `unsafe` would.
fn claim_name(name: &TokenStream) -> TokenStream {
    // Sound: nothing reads the static or names its symbol, which is unique by design (a second
    // one is the build error this is for).
    quote! {
        #[unsafe(export_name = ::core::concat!(
            "multiproc: two workers are registered as `",
            #name,
            "`: rename one, or give it `#[process(name = \"...\")]`"
        ))]
        static __MULTIPROC_REGISTERED_NAME: u8 = 0;
    }
}

/// The expansion of a valid `#[process] fn`.
pub(crate) fn expand_fn(item: ItemFn, args: &Args) -> TokenStream {
    let krate = args.krate();
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;
    let FnAttrs {
        on_struct,
        on_fn,
        cfg,
    } = split_attrs(attrs);

    let ident = sig.ident.clone();
    let on_fn: Vec<syn::Attribute> = on_fn
        .into_iter()
        .map(|attr| exported_as(attr, &ident))
        .collect();
    let inner = format_ident!("__multiproc_{}", ident, span = ident.span());
    let mut inner_sig = sig.clone();
    inner_sig.ident = inner.clone();

    let types: Vec<&Type> = sig
        .inputs
        .iter()
        .map(|arg| match arg {
            FnArg::Typed(pat_type) => &*pat_type.ty,
            FnArg::Receiver(_) => unreachable!("receivers are rejected by `valid`"),
        })
        .collect();
    let output: Option<&Type> = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => Some(ty),
    };

    // The function pointer the struct derefs to: the user's signature, types only.
    let arrow = output.map(|ty| quote!(-> #ty));
    let fn_ptr = quote!(fn(#(#types),*) #arrow);

    // An unmet bound on a tuple of arguments is reported on the tuple's parentheses: the name.
    let name_span = ident.span();
    let args_ty = match types.as_slice() {
        [] => quote!(()),
        [one] => quote!(#one),
        many => quote_spanned!(name_span=> (#(#many),*)),
    };
    let output_ty = match output {
        // A worker that never returns reports `()`: `!` is not a stable type.
        None | Some(Type::Never(_)) => quote!(()),
        Some(ty) => quote!(#ty),
    };
    let args_var = syn::Ident::new("args", Span::mixed_site());
    let call = match types.len() {
        1 => quote!(#inner(#args_var)),
        n => {
            let vars: Vec<syn::Ident> = (0..n)
                .map(|i| format_ident!("__arg{}", i, span = Span::mixed_site()))
                .collect();
            quote! {
                let (#(#vars),*) = #args_var;
                #inner(#(#vars),*)
            }
        }
    };

    let name = registered_name(args, &ident);
    let claim = claim_name(&name);
    // An unmet bound on `type Args = T;` or `type Output = T;` is reported on `T` as written,
    // which is the user's type when there is one argument, and for the return type. A tuple of
    // arguments is reported on the function's name: check each element for an error on its own
    // type.
    let asserts = match types.as_slice() {
        [_, _, ..] => types.iter().map(|ty| assert_data(&krate, ty)).collect(),
        _ => Vec::new(),
    };
    // `private type in public interface` (a `pub fn` taking a private type) is reported on the
    // associated type items: put them on the function's name, not on the attribute.
    let args_item = quote_spanned!(name_span=> type Args = #args_ty;);
    let output_item = quote_spanned!(name_span=> type Output = #output_ty;);
    let codec = args.codec();
    // The carrier chosen from the types as written, inside the one the type checker picks
    // for plain old data (`Choice`, below): an alias or a path the syntax does not know still
    // travels as bytes when it is a `Pod` type or a vector of one.
    let private = quote!(#krate::__private);
    let args_carrier =
        split_args(&krate, &ident, &types, codec).unwrap_or_else(|| carrier(&krate, &types, codec));
    let args_carrier = quote!(#private::Chosen<#ident, #private::ArgsSide, #args_carrier>);
    let output_carrier = match output {
        Some(ty) => carrier(&krate, &[ty], codec),
        None => carrier(&krate, &[], codec),
    };
    let output_carrier = quote!(#private::Chosen<#ident, #private::OutputSide, #output_carrier>);
    let choice = |side: TokenStream, ty: &TokenStream| {
        quote! {
            #[allow(deprecated)]
            impl #private::Choice<#private::#side, #ty> for #ident {
                #[inline]
                fn way() -> #private::Way<#ty> {
                    #[allow(unused_imports)]
                    use #private::{PodItemWay as _, PodVecWay as _, SerdeWay as _};
                    (&&&#private::Probe::<#ty>::new()).way()
                }
            }
        }
    };
    let args_choice = choice(quote!(ArgsSide), &args_ty);
    let output_choice = choice(quote!(OutputSide), &output_ty);
    // Each of several arguments on its own, for `Split`.
    let arg_choices: Vec<TokenStream> = match split_args(&krate, &ident, &types, codec) {
        Some(_) => types
            .iter()
            .enumerate()
            .map(|(i, ty)| {
                let i = proc_macro2::Literal::usize_unsuffixed(i);
                choice(quote!(Arg<#i>), &quote!(#ty))
            })
            .collect(),
        None => Vec::new(),
    };
    let target_item = quote_spanned!(name_span=> type Target = #fn_ptr;);

    quote! {
        #(#cfg)*
        #(#on_struct)*
        #[allow(non_camel_case_types)]
        #[derive(::core::clone::Clone, ::core::marker::Copy)]
        #vis struct #ident;

        #(#cfg)*
        const _: () = {
            #(#on_fn)*
            #[allow(non_snake_case)]
            #inner_sig #block

            // The struct carries the function's `deprecated`, if any: not a reason to warn here.
            #[allow(deprecated)]
            impl ::core::ops::Deref for #ident {
                #target_item
                #[inline]
                fn deref(&self) -> &#fn_ptr {
                    const __MULTIPROC_FN: #fn_ptr = #inner;
                    &__MULTIPROC_FN
                }
            }

            #[allow(deprecated)]
            impl #krate::__private::SealedTarget for #ident {}

            #[allow(deprecated)]
            impl #krate::Target for #ident {
                #args_item
                #output_item
                type ArgsCarrier = #args_carrier;
                type OutputCarrier = #output_carrier;
                const NAME: &'static str = #name;
                #[inline]
                fn call(#args_var: Self::Args) -> Self::Output {
                    #call
                }
            }

            #args_choice
            #output_choice
            #(#arg_choices)*

            #(#asserts)*

            #claim

            #[allow(deprecated)]
            const _: () = {
                #krate::__private::inventory::submit! {
                    #krate::__private::Entry::target::<#ident>()
                }
            };
        };
    }
}

// ---------------------------------------------------------------------------------------------
// `#[process] impl`

/// The expansion of a valid `#[process] impl` block: the block unchanged, plus `Runnable`.
pub(crate) fn expand_impl(item: ItemImpl, run: &Run, args: &Args) -> TokenStream {
    let krate = args.krate();
    let self_ty = &item.self_ty;
    let cfg = item.attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let name = registered_name(args, &run.type_ident);
    let claim = claim_name(&name);
    let type_name = run.type_ident.unraw().to_string();
    let format = args
        .codec()
        .format(&krate)
        .unwrap_or_else(|| quote!(#krate::__private::Compact));
    let this = syn::Ident::new("self", Span::call_site());
    let (binding, call) = match run.receiver {
        Receiver::Value => (quote!(#this), quote!(#this)),
        Receiver::Ref => (quote!(#this), quote!(&#this)),
        Receiver::RefMut => (quote!(mut #this), quote!(&mut #this)),
    };
    // An unmet `Serialize` (...) bound is reported on the self type as written: no
    // `assert_data`, which would repeat each error.
    quote! {
        #item

        #(#cfg)*
        #[allow(deprecated)]
        const _: () = {
            impl #krate::__private::SealedRunnable for #self_ty {}

            impl #krate::Runnable for #self_ty {
                type Format = #format;
                const NAME: &'static str = #name;
                const TYPE_NAME: &'static str = #type_name;
                fn run_process(#binding) {
                    <#self_ty>::run(#call)
                }
            }

            #krate::__private::inventory::submit! {
                #krate::__private::Entry::runnable::<#self_ty>()
            }

            #claim
        };
    }
}

// ---------------------------------------------------------------------------------------------
// `#[main]`

/// The expansion of a valid `#[main] fn`: `init()` before the first statement that runs.
///
/// Items (`fn`, `use`, `struct` ...) at the top of the body stay above it: they run nothing, and
/// a statement before them would trip `clippy::items_after_statements`.
pub(crate) fn expand_main(mut item: ItemFn, args: &Args) -> TokenStream {
    let krate = args.krate();
    let at = item
        .block
        .stmts
        .iter()
        .position(|stmt| !matches!(stmt, syn::Stmt::Item(_)))
        .unwrap_or(item.block.stmts.len());
    item.block
        .stmts
        .insert(at, syn::parse_quote!(#krate::init();));
    item.into_token_stream()
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::{Attribute, ImplItem, ItemConst, ItemStruct};

    fn file(tokens: TokenStream) -> syn::File {
        syn::parse2(tokens).unwrap_or_else(|e| panic!("expansion does not parse: {e}"))
    }

    fn norm(tokens: impl ToTokens) -> String {
        tokens.to_token_stream().to_string()
    }

    /// The items inside the `const _: () = { ... };` of an expansion.
    fn block_items(item: &syn::Item) -> Vec<syn::Item> {
        let syn::Item::Const(ItemConst { expr, .. }) = item else {
            panic!("expected `const _`, got {}", norm(item));
        };
        let syn::Expr::Block(block) = &**expr else {
            panic!("expected a block");
        };
        block
            .block
            .stmts
            .iter()
            .filter_map(|s| match s {
                syn::Stmt::Item(item) => Some(item.clone()),
                _ => None,
            })
            .collect()
    }

    fn target_impl(items: &[syn::Item]) -> syn::ItemImpl {
        items
            .iter()
            .find_map(|item| match item {
                syn::Item::Impl(i)
                    if i.trait_
                        .as_ref()
                        .is_some_and(|(_, p, _)| p.segments.last().unwrap().ident == "Target") =>
                {
                    Some(i.clone())
                }
                _ => None,
            })
            .expect("no `impl Target`")
    }

    fn assoc_type(imp: &syn::ItemImpl, name: &str) -> String {
        imp.items
            .iter()
            .find_map(|item| match item {
                ImplItem::Type(t) if t.ident == name => Some(norm(&t.ty)),
                _ => None,
            })
            .unwrap()
    }

    fn expand(attr: TokenStream, item: TokenStream) -> syn::File {
        file(process(attr, item))
    }

    #[test]
    fn two_arguments() {
        let out = expand(
            quote!(),
            quote! {
                /// Adds.
                #[inline]
                pub fn add(a: i64, b: i64) -> i64 { a + b }
            },
        );
        assert_eq!(out.items.len(), 2);
        let syn::Item::Struct(ItemStruct {
            ident, attrs, vis, ..
        }) = &out.items[0]
        else {
            panic!("expected the struct first");
        };
        assert_eq!(ident, "add");
        assert_eq!(norm(vis), "pub");
        assert!(attrs.iter().any(|a| a.path().is_ident("doc")));
        assert!(!attrs.iter().any(|a| a.path().is_ident("inline")));

        let items = block_items(&out.items[1]);
        let syn::Item::Fn(inner) = &items[0] else {
            panic!("expected the inner fn first");
        };
        assert_eq!(inner.sig.ident, "__multiproc_add");
        assert!(inner.attrs.iter().any(|a| a.path().is_ident("inline")));
        assert!(!inner.attrs.iter().any(|a| a.path().is_ident("doc")));

        let imp = target_impl(&items);
        assert_eq!(assoc_type(&imp, "Args"), norm(quote!((i64, i64))));
        assert_eq!(assoc_type(&imp, "Output"), "i64");
        let text = norm(&out);
        assert!(text.contains(&norm(quote!(::core::concat!(
            ::core::module_path!(),
            "::",
            "add"
        )))));
        assert!(text.contains(&norm(
            quote!(::multiproc::__private::Entry::target::<add>())
        )));
        assert!(text.contains(&norm(quote!(
            type Target = fn(i64, i64) -> i64;
        ))));
    }

    #[test]
    fn argument_counts() {
        let cases = [
            (
                quote!(
                    fn f() {}
                ),
                quote!(()),
                quote!(()),
            ),
            (
                quote!(
                    fn f(n: u64) -> u64 {
                        n
                    }
                ),
                quote!(u64),
                quote!(u64),
            ),
            (
                quote!(
                    fn f(mut x: u32, (a, b): (u8, u8)) -> String {
                        String::new()
                    }
                ),
                quote!((u32, (u8, u8))),
                quote!(String),
            ),
            (
                quote!(
                    fn f() -> ! {
                        loop {}
                    }
                ),
                quote!(()),
                quote!(()),
            ),
        ];
        for (item, args_ty, output_ty) in cases {
            let out = expand(quote!(), item);
            let imp = target_impl(&block_items(&out.items[1]));
            assert_eq!(assoc_type(&imp, "Args"), norm(args_ty));
            assert_eq!(assoc_type(&imp, "Output"), norm(output_ty));
        }
    }

    #[test]
    fn byte_vectors_get_a_packed_carrier() {
        let p = quote!(::multiproc::__private);
        let cases = [
            (
                quote!(
                    fn f(n: String) -> String {
                        n
                    }
                ),
                quote!(#p::Plain),
                quote!(#p::Plain),
            ),
            (
                quote!(
                    fn f() {}
                ),
                quote!(#p::Plain),
                quote!(#p::Plain),
            ),
            (
                quote!(
                    fn f(v: Vec<u8>) -> Vec<u8> {
                        v
                    }
                ),
                quote!(#p::Packed<#p::Bytes>),
                quote!(#p::Packed<#p::Bytes>),
            ),
            // Several arguments: each vector of plain old data as its bytes.
            (
                quote!(
                    fn f(n: u32, v: std::vec::Vec<u8>) {}
                ),
                split(None),
                quote!(#p::Plain),
            ),
            (
                quote!(
                    fn f(v: ::alloc::vec::Vec<u8>) {}
                ),
                quote!(#p::Packed<#p::Bytes>),
                quote!(#p::Plain),
            ),
            // Not literally `Vec<u8>`: element by element, as serde does.
            (
                quote!(
                    fn f(v: Vec<i8>) {}
                ),
                quote!(#p::Plain),
                quote!(#p::Plain),
            ),
            (
                quote!(
                    fn f(v: Option<Vec<u8>>) {}
                ),
                quote!(#p::Plain),
                quote!(#p::Plain),
            ),
            (
                quote!(
                    fn f(v: my::Vec<u8>) {}
                ),
                quote!(#p::Plain),
                quote!(#p::Plain),
            ),
            (
                quote!(
                    fn f(v: Vec<Vec<u8>>) {}
                ),
                quote!(#p::Plain),
                quote!(#p::Plain),
            ),
        ];
        check_carriers(cases);
    }

    #[test]
    fn primitive_numbers_get_a_raw_carrier() {
        let p = quote!(::multiproc::__private);
        let cases = [
            (
                quote!(
                    fn f(n: u64) -> u64 {
                        n
                    }
                ),
                quote!(#p::Raw),
                quote!(#p::Raw),
            ),
            (
                quote!(
                    fn f(x: f64) -> i8 {
                        0
                    }
                ),
                quote!(#p::Raw),
                quote!(#p::Raw),
            ),
            (
                quote!(
                    fn f(x: core::primitive::usize) -> ::std::primitive::isize {
                        0
                    }
                ),
                quote!(#p::Raw),
                quote!(#p::Raw),
            ),
            (
                quote!(
                    fn f(v: Vec<u8>) -> u32 {
                        0
                    }
                ),
                quote!(#p::Packed<#p::Bytes>),
                quote!(#p::Raw),
            ),
            // Two to four numbers, as arguments or as a tuple, are raw too.
            (
                quote!(
                    fn f(lo: u64, hi: u64) -> (f32, i8, usize) {
                        (0.0, 0, 0)
                    }
                ),
                quote!(#p::Raw),
                quote!(#p::Raw),
            ),
            (
                quote!(
                    fn f(pair: (u8, i64)) -> (u64, u64, u64, u64) {
                        (0, 0, 0, 0)
                    }
                ),
                quote!(#p::Raw),
                quote!(#p::Raw),
            ),
            // Five numbers, a tuple with a non-number, a bool, a char, a path that is not the
            // primitive's, an alias or a reference are not.
            (
                quote!(
                    fn f(a: u8, b: u8, c: u8, d: u8, e: u8) -> (u64, bool) {
                        (0, true)
                    }
                ),
                split(None),
                quote!(#p::Plain),
            ),
            (
                quote!(
                    fn f(lo: u64, hi: u64) -> bool {
                        true
                    }
                ),
                quote!(#p::Raw),
                quote!(#p::Plain),
            ),
            (
                quote!(
                    fn f(c: char) -> my::u64 {
                        0
                    }
                ),
                quote!(#p::Plain),
                quote!(#p::Plain),
            ),
            (
                quote!(
                    fn f(n: ::u64) -> Word {
                        0
                    }
                ),
                quote!(#p::Plain),
                quote!(#p::Plain),
            ),
            (
                quote!(
                    fn f(n: (u64,)) -> Option<u64> {
                        None
                    }
                ),
                quote!(#p::Plain),
                quote!(#p::Plain),
            ),
        ];
        check_carriers(cases);
    }

    /// Each function `f` (item) gets the argument and result carriers given with it, as
    /// written, inside the carrier the type checker chooses for plain old data.
    fn check_carriers<const N: usize>(cases: [(TokenStream, TokenStream, TokenStream); N]) {
        for (item, args, output) in cases {
            let out = expand(quote!(), item);
            let imp = target_impl(&block_items(&out.items[1]));
            let text = norm(&out);
            assert_eq!(
                assoc_type(&imp, "ArgsCarrier"),
                norm(chosen(quote!(ArgsSide), args)),
                "{text}"
            );
            assert_eq!(
                assoc_type(&imp, "OutputCarrier"),
                norm(chosen(quote!(OutputSide), output)),
                "{text}"
            );
        }
    }

    /// The carrier of several arguments of `f`.
    fn split(format: Option<TokenStream>) -> TokenStream {
        let p = quote!(::multiproc::__private);
        let format = format.map(|f| quote!(, #f));
        quote!(#p::Split<f #format>)
    }

    /// `carrier` inside the one `f`'s `Choice` of `side` picks.
    fn chosen(side: TokenStream, carrier: TokenStream) -> TokenStream {
        let p = quote!(::multiproc::__private);
        quote!(#p::Chosen<f, #p::#side, #carrier>)
    }

    #[test]
    fn the_type_checker_chooses_for_each_side() {
        let out = expand(
            quote!(),
            quote!(
                fn f(v: Samples, n: u8) -> Points {
                    v
                }
            ),
        );
        let text = norm(&out);
        let p = quote!(::multiproc::__private);
        for (side, ty) in [
            (quote!(ArgsSide), quote!((Samples, u8))),
            (quote!(OutputSide), quote!(Points)),
        ] {
            let choice = norm(quote!(impl #p::Choice<#p::#side, #ty> for f));
            assert!(text.contains(&choice), "{text}");
            let probe = norm(quote!(#p::Probe::<#ty>::new()));
            assert!(text.contains(&probe), "{text}");
        }
    }

    #[test]
    fn a_codec_gives_plain_and_packed_its_format_not_raw() {
        let p = quote!(::multiproc::__private);
        let plain = quote!(#p::Plain<#p::SelfDescribing>);
        let packed = split(Some(quote!(#p::SelfDescribing)));
        let cases = [
            (
                quote!(
                    fn f(v: Value) -> Value {}
                ),
                plain.clone(),
                plain,
            ),
            (
                quote!(
                    fn f(a: u32, v: Vec<u8>) -> u64 {}
                ),
                packed,
                quote!(#p::Raw),
            ),
        ];
        for (item, args, output) in cases {
            let out = expand(quote!(codec = "msgpack"), item);
            let imp = target_impl(&block_items(&out.items[1]));
            assert_eq!(
                assoc_type(&imp, "ArgsCarrier"),
                norm(chosen(quote!(ArgsSide), args))
            );
            assert_eq!(
                assoc_type(&imp, "OutputCarrier"),
                norm(chosen(quote!(OutputSide), output))
            );
        }
        // The default, named: as if not named.
        let out = expand(
            quote!(codec = "bincode"),
            quote!(
                fn f(v: Value) {}
            ),
        );
        let imp = target_impl(&block_items(&out.items[1]));
        assert_eq!(
            assoc_type(&imp, "ArgsCarrier"),
            norm(chosen(quote!(ArgsSide), quote!(#p::Plain)))
        );
    }

    #[test]
    fn one_argument_is_not_a_tuple() {
        let text = norm(process(
            quote!(),
            quote!(
                fn f(n: u64) {}
            ),
        ));
        assert!(text.contains(&norm(quote!(__multiproc_f(args)))));
    }

    #[test]
    fn name_and_crate_override() {
        let text = norm(process(
            quote!(name = "stable::sq", crate = "::re::mp"),
            quote!(
                fn sq(n: u64) -> u64 {
                    n * n
                }
            ),
        ));
        assert!(text.contains(&norm(quote!(
            const NAME: &'static str = "stable::sq";
        ))));
        assert!(text.contains(&norm(quote!(impl ::re::mp::Target for sq))));
        // The seal goes through the same path.
        assert!(text.contains(&norm(
            quote!(impl ::re::mp::__private::SealedTarget for sq {})
        )));
        assert!(!text.contains("multiproc ::"));
    }

    #[test]
    fn the_registered_name_is_claimed_as_a_symbol() {
        for (attr, item) in [
            (
                quote!(name = "stable::sq"),
                quote!(
                    fn sq() {}
                ),
            ),
            (
                quote!(name = "stable::sq"),
                quote!(impl P {
                    fn run(&self) {}
                }),
            ),
        ] {
            let text = norm(process(attr, item));
            let claim = text.find("export_name").expect("a name-claiming static");
            assert!(text[claim..].contains("\"stable::sq\""), "{text}");
            assert_eq!(text.matches("export_name").count(), 1, "{text}");
        }
    }

    #[test]
    fn raw_ident() {
        let text = norm(process(
            quote!(),
            quote!(
                fn r#type() {}
            ),
        ));
        assert!(text.contains("struct r#type"));
        assert!(text.contains("__multiproc_type"));
        assert!(text.contains("\"type\""));
    }

    #[test]
    fn attributes_are_routed() {
        let out = expand(
            quote!(),
            quote! {
                #[cfg(unix)]
                #[deprecated]
                #[allow(clippy::all)]
                #[expect(unused_variables)]
                #[must_use]
                #[cfg_attr(docsrs, doc = "x")]
                fn f() -> u8 { 0 }
            },
        );
        let paths =
            |attrs: &[Attribute]| -> Vec<String> { attrs.iter().map(|a| norm(a.path())).collect() };
        let syn::Item::Struct(s) = &out.items[0] else {
            panic!()
        };
        assert_eq!(
            paths(&s.attrs),
            [
                "cfg",
                "deprecated",
                "allow",
                "allow",
                "cfg_attr",
                "allow",
                "derive"
            ]
        );
        let syn::Item::Const(c) = &out.items[1] else {
            panic!()
        };
        assert_eq!(paths(&c.attrs), ["cfg"]);
        let syn::Item::Fn(inner) = &block_items(&out.items[1])[0] else {
            panic!()
        };
        assert_eq!(
            paths(&inner.attrs),
            ["allow", "expect", "must_use", "allow"]
        );
    }

    #[test]
    fn errors_keep_the_item() {
        let item = quote!(
            fn f(s: &str) -> usize {
                s.len()
            }
        );
        let out = process(quote!(nope = 1), item.clone());
        let text = norm(&out);
        // Kept whole in the fallback (see `fallback`), with every error.
        assert!(text.contains(&norm(&item)));
        assert!(text.contains("unknown attribute key `nope`"));
        assert!(text.contains("must be owned"));
    }

    #[test]
    fn other_items_are_rejected() {
        let text = norm(process(
            quote!(),
            quote!(
                struct S;
            ),
        ));
        assert!(text.starts_with("struct S ;"));
        assert!(text.contains("applies to a function or to an impl block"));
    }

    #[test]
    fn impl_block() {
        let item = quote! {
            impl MyProcess {
                fn run(&mut self) {}
                fn helper(&self) {}
            }
        };
        let out = expand(quote!(), item.clone());
        assert_eq!(norm(&out.items[0]), norm(&item));
        let text = norm(&out.items[1]);
        assert!(text.contains(&norm(quote!(impl ::multiproc::Runnable for MyProcess))));
        assert!(text.contains(&norm(quote!(
            impl ::multiproc::__private::SealedRunnable for MyProcess {}
        ))));
        assert!(text.contains(&norm(quote!(
            const TYPE_NAME: &'static str = "MyProcess";
        ))));
        assert!(text.contains(&norm(quote!(
            fn run_process(mut self) {
                <MyProcess>::run(&mut self)
            }
        ))));
        let submit = quote!(::multiproc::__private::Entry::runnable::<MyProcess>());
        assert!(text.contains(&norm(submit)));
        // bincode by default, named or not; the codec named on the block otherwise.
        for (attr, format) in [
            (quote!(), quote!(::multiproc::__private::Compact)),
            (
                quote!(codec = "bincode"),
                quote!(::multiproc::__private::Compact),
            ),
            (
                quote!(codec = "msgpack"),
                quote!(::multiproc::__private::SelfDescribing),
            ),
        ] {
            let text = norm(&expand(attr, item.clone()).items[1]);
            assert!(
                text.contains(&norm(quote!(type Format = #format;))),
                "{text}"
            );
        }
    }

    #[test]
    fn impl_receivers() {
        for (run, expected) in [
            (
                quote!(
                    fn run(self) {}
                ),
                quote!(
                    fn run_process(self) {
                        <m::P>::run(self)
                    }
                ),
            ),
            (
                quote!(
                    fn run(mut self) {}
                ),
                quote!(
                    fn run_process(self) {
                        <m::P>::run(self)
                    }
                ),
            ),
            (
                quote!(
                    fn run(&self) {}
                ),
                quote!(
                    fn run_process(self) {
                        <m::P>::run(&self)
                    }
                ),
            ),
        ] {
            let text = norm(process(quote!(), quote!(impl m::P { #run })));
            assert!(text.contains(&norm(&expected)), "{text}");
            assert!(text.contains("\"P\""));
        }
    }

    #[test]
    fn main_inserts_init() {
        let out = main(
            quote!(),
            quote!(
                fn main() {
                    let x = 1;
                }
            ),
        );
        assert_eq!(
            norm(out),
            norm(quote!(
                fn main() {
                    ::multiproc::init();
                    let x = 1;
                }
            ))
        );
        let out = main(
            quote!(crate = "mp"),
            quote!(
                fn main() -> Result<(), ()> {
                    Ok(())
                }
            ),
        );
        assert!(norm(out).contains(&norm(quote!({
            mp::init();
            Ok(())
        }))));
    }

    #[test]
    fn main_keeps_leading_items_first() {
        let out = main(
            quote!(),
            quote!(
                fn main() {
                    use std::fmt;
                    fn helper() {}
                    println!("x");
                    let y = 1;
                }
            ),
        );
        assert_eq!(
            norm(out),
            norm(quote!(
                fn main() {
                    use std::fmt;
                    fn helper() {}
                    ::multiproc::init();
                    println!("x");
                    let y = 1;
                }
            ))
        );
        let out = main(
            quote!(),
            quote!(
                fn main() {
                    fn only() {}
                }
            ),
        );
        assert_eq!(
            norm(out),
            norm(quote!(
                fn main() {
                    fn only() {}
                    ::multiproc::init();
                }
            ))
        );
    }

    #[test]
    fn main_errors_keep_the_item() {
        let out = norm(main(
            quote!(name = "x"),
            quote!(
                async fn main() {}
            ),
        ));
        assert!(out.starts_with("async fn main () { }"));
        assert!(out.contains("unknown attribute key `name`, expected `crate`"));
        assert!(out.contains("cannot be applied to an `async fn`"));
    }
}
