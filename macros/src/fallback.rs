//! What `#[process]` and `#[main]` emit when they reject an item.
//!
//! A rejected function or impl block must leave its name usable, or every call site adds an error
//! of its own (`greet` is not a multiproc worker ... not annotated with `#[multiproc::process]`)
//! that contradicts the attribute the user did write. So, as thiserror's fallback does, a rejected
//! item still gets the trait impl, a stub that never runs:
//!
//! - a function becomes the worker's unit struct, with a `Target` impl whose `Args` type is the
//!   first error itself (a `compile_error!` in type position is an error type, which the compiler
//!   accepts everywhere without a further message: `Process::new(greet, "x")` and
//!   `pool.map(greet, ...)` type-check) and a `Deref` to that same type, so `greet("x")` is quiet
//!   too. The user's function stays, unchanged and under its own name, in a block of its own,
//!   so that its body is still checked and the IDE still sees it;
//! - an impl block stays as written and its type gets a `Runnable` impl that holds only when the
//!   type is data (`Serialize`, `Deserialize`, `Send`): a type that is not is reported at the call
//!   site as it would be with a valid impl block.
//!
//! The stub needs the crate's path: when the attribute's `crate = "..."` is itself rejected (or
//! a syntax error may hide one), and for what cannot take a stub (a method, whose `self` shows
//! that the item is inside an impl block; an impl block of something other than a named type),
//! the item is emitted unchanged before the errors, as it is for `#[main]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{parse_quote, ItemFn, ItemImpl, Type};

use crate::attrs::{split_attrs, FnAttrs};
use crate::errors::Errors;

/// The user's item unchanged, then the errors.
pub(crate) fn with_errors(item: TokenStream, errors: Errors) -> TokenStream {
    let errors = errors
        .finish()
        .err()
        .map(|e| e.to_compile_error())
        .unwrap_or_default();
    quote!(#item #errors)
}

/// The first error as a `compile_error!` (usable in type position), and the others.
fn split_errors(errors: Errors) -> Option<(TokenStream, TokenStream)> {
    let mut all = errors.finish().err()?.into_iter();
    let first = all.next()?.to_compile_error();
    let rest = all.map(|e| e.to_compile_error()).collect();
    Some((first, rest))
}

/// A rejected `#[process] fn`: the worker's struct with a stub `Target`, the function kept in a
/// block, then the errors.
pub(crate) fn process_fn(item: ItemFn, krate: &TokenStream, errors: Errors) -> TokenStream {
    if item.sig.receiver().is_some() {
        // A method: a struct cannot stand inside the impl block.
        return with_errors(quote!(#item), errors);
    }
    let Some((first, rest)) = split_errors(errors) else {
        return quote!(#item);
    };
    let FnAttrs { on_struct, cfg, .. } = split_attrs(item.attrs.clone());
    let vis = &item.vis;
    let ident = &item.sig.ident;
    quote! {
        #(#cfg)*
        #(#on_struct)*
        #[allow(non_camel_case_types)]
        #[derive(::core::clone::Clone, ::core::marker::Copy)]
        #vis struct #ident;

        #(#cfg)*
        const _: () = {
            // In this block the function's name is the function again: its body (a recursive
            // call, an argument named like it) reads as written.
            #[allow(dead_code)]
            #item

            #[allow(deprecated)]
            impl ::core::ops::Deref for #ident {
                type Target = <#ident as #krate::Target>::Args;
                fn deref(&self) -> &Self::Target {
                    ::core::unreachable!()
                }
            }

            #[allow(deprecated)]
            impl #krate::__private::SealedTarget for #ident {}

            #[allow(deprecated)]
            impl #krate::Target for #ident {
                type Args = [(); #first];
                type Output = Self::Args;
                type ArgsCarrier = #krate::__private::Plain;
                type OutputCarrier = #krate::__private::Plain;
                const NAME: &'static str = "";
                fn call(_: Self::Args) -> Self::Output {
                    ::core::unreachable!()
                }
            }
        };

        #rest
    }
}

/// A rejected `#[process] impl`: the block unchanged, a stub `Runnable` for its type, then the
/// errors.
pub(crate) fn process_impl(item: ItemImpl, krate: &TokenStream, errors: Errors) -> TokenStream {
    let named = match &*item.self_ty {
        Type::Path(path) => path.qself.is_none(),
        _ => false,
    };
    if !named {
        return with_errors(quote!(#item), errors);
    }
    let self_ty = &item.self_ty;
    let cfg = item.attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let mut where_clause = where_clause.cloned().unwrap_or_else(|| parse_quote!(where));
    // A bound that names no parameter of the impl is checked where the impl is used, not where
    // it is declared, only when it is higher-ranked (rust-lang/rust#48214).
    where_clause.predicates.push(parse_quote! {
        for<'__multiproc> #self_ty: #krate::__private::serde::Serialize
            + #krate::__private::serde::de::DeserializeOwned
            + ::core::marker::Send
            + 'static
    });
    let errors = with_errors(TokenStream::new(), errors);
    quote! {
        #item

        #(#cfg)*
        #[allow(deprecated)]
        const _: () = {
            impl #impl_generics #krate::__private::SealedRunnable for #self_ty #where_clause {}

            impl #impl_generics #krate::Runnable for #self_ty #where_clause {
                type Format = #krate::__private::Compact;
                const NAME: &'static str = "";
                const TYPE_NAME: &'static str = "";
                fn run_process(self) {
                    ::core::unreachable!()
                }
            }
        };

        #errors
    }
}

#[cfg(test)]
mod tests {
    use quote::{quote, ToTokens};

    use crate::expand::process;

    fn norm(tokens: impl ToTokens) -> String {
        tokens.to_token_stream().to_string()
    }

    #[test]
    fn a_rejected_fn_keeps_its_name_as_a_worker() {
        let item = quote!(
            pub fn greet(name: &str) -> String {
                greet(name)
            }
        );
        let out = process(quote!(), item.clone());
        let file: syn::File = syn::parse2(out.clone()).expect("the fallback parses");
        let syn::Item::Struct(s) = &file.items[0] else {
            panic!("expected the struct first: {}", norm(&out));
        };
        assert_eq!(s.ident, "greet");
        assert_eq!(norm(&s.vis), "pub");
        let text = norm(&out);
        // The function itself, unchanged, in the block.
        assert!(text.contains(&norm(&item)), "{text}");
        assert!(text.contains(&norm(quote!(impl ::multiproc::Target for greet))));
        // The error is the type of the arguments, and only once.
        assert!(
            text.contains("type Args = [() ; :: core :: compile_error !"),
            "{text}"
        );
        assert_eq!(text.matches("compile_error").count(), 1, "{text}");
    }

    #[test]
    fn later_errors_follow_the_stub() {
        let out = norm(process(
            quote!(crate = "::re::mp"),
            quote!(
                async fn f<T>(a: &T) {}
            ),
        ));
        assert_eq!(out.matches("compile_error").count(), 3, "{out}");
        assert!(out.contains(&norm(quote!(impl ::re::mp::Target for f))));
        let first = out.find("cannot be `async`").expect("the async error");
        let generic = out.find("cannot be generic").expect("the generic error");
        assert!(first < out.find("const NAME").unwrap() && generic > first);
    }

    #[test]
    fn bad_arguments_other_than_the_crate_get_the_stub() {
        for attr in [
            quote!(nope = 1),
            quote!(name = "", crate = "::re::mp"),
            quote!(name = 3),
        ] {
            let out = norm(process(
                attr,
                quote!(
                    fn f(n: u64) {}
                ),
            ));
            assert!(out.contains("Target for f"), "{out}");
        }
    }

    #[test]
    fn a_method_and_an_unsure_crate_keep_the_item_alone() {
        let f = quote!(
            fn f(s: &str) {}
        );
        for (attr, item) in [
            (
                quote!(),
                quote!(
                    fn bump(&mut self) {}
                ),
            ),
            // An invalid path, two of them, a syntax error that may hide one.
            (quote!(crate = "not a path"), f.clone()),
            (quote!(crate = "::a", crate = "::b"), f.clone()),
            (quote!(name = "x" crate = "::a"), f),
        ] {
            let out = norm(process(attr, item.clone()));
            assert!(out.starts_with(&norm(&item)), "{out}");
            assert!(!out.contains("Target"), "{out}");
        }
    }

    #[test]
    fn a_rejected_impl_gets_a_guarded_runnable() {
        let item = quote!(
            impl<T> P<T> {
                fn run(&mut self) {}
            }
        );
        let out = norm(process(quote!(), item.clone()));
        assert!(out.starts_with(&norm(&item)), "{out}");
        assert!(out.contains(&norm(quote!(impl<T> ::multiproc::Runnable for P<T>))));
        assert!(out.contains(&norm(
            quote!(for<'__multiproc> P<T>: ::multiproc::__private::serde::Serialize)
        )));
        assert!(out.contains("cannot be generic"));

        let unnamed = quote!(
            impl [u8] {
                fn start(&self) {}
            }
        );
        let out = norm(process(quote!(), unnamed.clone()));
        assert!(
            out.starts_with(&norm(&unnamed)) && !out.contains("Runnable"),
            "{out}"
        );
    }
}
