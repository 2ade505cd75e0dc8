//! What `#[process]` and `#[main]` emit when they reject an item.

use proc_macro2::TokenStream;
use quote::quote;

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
