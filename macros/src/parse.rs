//! The annotated item: a function or an impl block.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream, Parser};
use syn::{Attribute, ItemFn, ItemImpl, LitStr, Token, Visibility};

/// What `#[process]` is applied to.
pub(crate) enum Item {
    /// A free function: becomes a worker (`Target`).
    Fn(ItemFn),
    /// An inherent impl block with `run`: the subclass style (`Runnable`).
    Impl(ItemImpl),
}

/// What kind of item starts the stream, decided on a fork without consuming it.
enum Kind {
    Fn,
    Impl(Span),
    /// Something else. Both carry the span of the first token after attributes and visibility.
    Other(Span),
}

fn kind(input: ParseStream) -> syn::Result<Kind> {
    let fork = input.fork();
    fork.call(Attribute::parse_outer)?;
    fork.parse::<Visibility>()?;
    let start = fork.span();
    // Qualifiers that may precede `fn` or `impl`: `const`, `async`, `unsafe`, `extern "abi"`,
    // `default`. A `const NAME` or `unsafe trait` falls through to "other" below.
    while fork.peek(Token![const])
        || fork.peek(Token![async])
        || fork.peek(Token![unsafe])
        || fork.peek(Token![extern])
        || fork.peek(Token![default])
        || fork.peek(LitStr)
    {
        fork.parse::<proc_macro2::TokenTree>()?;
    }
    let lookahead = fork.lookahead1();
    Ok(if lookahead.peek(Token![fn]) {
        Kind::Fn
    } else if lookahead.peek(Token![impl]) {
        Kind::Impl(start)
    } else {
        Kind::Other(start)
    })
}

impl Parse for Item {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        match kind(input)? {
            Kind::Fn => input.parse().map(Item::Fn),
            Kind::Impl(_) => input.parse().map(Item::Impl),
            Kind::Other(span) => Err(syn::Error::new(
                span,
                "`#[process]` applies to a function or to an impl block with a `run` method",
            )),
        }
    }
}

/// Parses the item of `#[process]`.
pub(crate) fn process_item(tokens: TokenStream) -> syn::Result<Item> {
    syn::parse2(tokens)
}

/// Parses the item of `#[main]`: a function.
pub(crate) fn main_item(tokens: TokenStream) -> syn::Result<ItemFn> {
    let parser = |input: ParseStream| match kind(input)? {
        Kind::Fn => input.parse::<ItemFn>(),
        Kind::Impl(span) | Kind::Other(span) => Err(syn::Error::new(
            span,
            "`#[multiproc::main]` applies to a function, e.g. `fn main() { ... }`",
        )),
    };
    parser.parse2(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn chooses_fn() {
        for tokens in [
            quote!(
                fn f() {}
            ),
            quote!(
                #[doc = "x"]
                pub(crate) fn f(a: u8) -> u8 {
                    a
                }
            ),
            quote!(
                const fn f() {}
            ),
            quote!(
                async fn f() {}
            ),
            quote!(
                unsafe extern "C" fn f() {}
            ),
        ] {
            assert!(matches!(process_item(tokens), Ok(Item::Fn(_))));
        }
    }

    #[test]
    fn chooses_impl() {
        for tokens in [
            quote!(impl A { fn run(&mut self) {} }),
            quote!(
                unsafe impl T for A {}
            ),
            quote!(
                impl<T> A<T> {}
            ),
        ] {
            assert!(matches!(process_item(tokens), Ok(Item::Impl(_))));
        }
    }

    #[test]
    fn rejects_other_items() {
        for tokens in [
            quote!(
                struct A;
            ),
            quote!(
                pub mod m {}
            ),
            quote!(
                const X: u8 = 1;
            ),
            quote!(
                unsafe trait T {}
            ),
        ] {
            let err = process_item(tokens).err().unwrap();
            assert_eq!(
                err.to_string(),
                "`#[process]` applies to a function or to an impl block with a `run` method"
            );
        }
    }

    #[test]
    fn main_needs_fn() {
        assert!(main_item(quote!(
            fn main() {}
        ))
        .is_ok());
        assert!(main_item(quote!(impl A {})).is_err());
        assert!(main_item(quote!(
            struct A;
        ))
        .is_err());
    }
}
