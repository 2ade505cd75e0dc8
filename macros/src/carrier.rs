//! The carrier policy: how a worker's arguments and result travel, chosen from their types as
//! written (`Raw` for primitive numbers, `Packed` with `Bytes` for `Vec<u8>`, `Plain` serde
//! otherwise), and in which serde format (`codec = "..."`: the carriers' default, bincode, or
//! `SelfDescribing`).

use proc_macro2::TokenStream;
use quote::quote;
use syn::Type;

use crate::args::Codec;

/// Whether `ty` is written `Vec<u8>` (or `std::vec::Vec<u8>`, `alloc::vec::Vec<u8>`): such
/// arguments and results travel as one run of bytes (a block of a pool message when large),
/// not element by element. An alias or a `Vec<u8>` inside another type is not recognized.
fn is_byte_vec(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    if path.qself.is_some() {
        return false;
    }
    let segments: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let vec_path = match segments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["Vec"] => path.path.leading_colon.is_none(),
        ["std" | "alloc", "vec", "Vec"] => true,
        _ => false,
    };
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    let only_u8 = matches!(
        args.args.iter().collect::<Vec<_>>()[..],
        [syn::GenericArgument::Type(Type::Path(elem))]
            if elem.qself.is_none() && elem.path.is_ident("u8")
    );
    vec_path && only_u8
}

/// The primitive numbers whose chunks travel as their bytes in memory (`bool` and `char` are
/// not: not every byte pattern is one).
const NUMBERS: &[&str] = &[
    "u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize", "f32", "f64",
];

/// Whether `ty` is written as a primitive number: `u64`, or `core::primitive::u64` (or
/// `std::primitive::u64`). An alias is not recognized.
fn is_number(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    if path.qself.is_some()
        || path
            .path
            .segments
            .iter()
            .any(|s| !matches!(s.arguments, syn::PathArguments::None))
    {
        return false;
    }
    let segments: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let name = match segments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [name] if path.path.leading_colon.is_none() => name,
        ["std" | "core", "primitive", name] => name,
        _ => return false,
    };
    NUMBERS.contains(&name)
}

/// Whether `types` are two to four primitive numbers, the tuples `Raw` carries.
fn are_numbers(types: &[&Type]) -> bool {
    (2..=4).contains(&types.len()) && types.iter().all(|ty| is_number(ty))
}

/// The carrier of two or more arguments that are not two to four primitive numbers (`Raw`
/// carries those): `Split`, which carries each argument that the type checker finds a vector
/// of plain old data (the worker's `Choice` of side `Arg<i>`, which the caller implements) as
/// its bytes, and the rest through serde. `None` for one argument or none.
pub(crate) fn split_args(
    krate: &TokenStream,
    worker: &syn::Ident,
    types: &[&Type],
    codec: Codec,
) -> Option<TokenStream> {
    if types.len() < 2 || are_numbers(types) {
        return None;
    }
    let private = quote!(#krate::__private);
    let format = codec.format(krate).map(|format| quote!(, #format));
    Some(quote!(#private::Split<#worker #format>))
}

/// The carrier of the arguments (`types`) or of the result (one type): `Packed` when a type is
/// written `Vec<u8>`; `Raw` when there is one type written as a primitive number or as a tuple
/// of two to four of them, or two to four types written as primitive numbers; `Plain`
/// otherwise. `Plain` and `Packed` take the `codec`'s format when it is not the default; `Raw`
/// carries numbers as their bytes, whatever the codec.
pub(crate) fn carrier(krate: &TokenStream, types: &[&Type], codec: Codec) -> TokenStream {
    let private = quote!(#krate::__private);
    let format = codec.format(krate).map(|format| quote!(, #format));
    let plain_format = codec.format(krate).map(|format| quote!(<#format>));
    let raw = match types {
        [Type::Tuple(tuple)] => are_numbers(&tuple.elems.iter().collect::<Vec<_>>()),
        [one] => is_number(one),
        many => are_numbers(many),
    };
    if raw {
        return quote!(#private::Raw);
    }
    if !types.iter().any(|ty| is_byte_vec(ty)) {
        return quote!(#private::Plain #plain_format);
    }
    let part = |ty: &Type| {
        if is_byte_vec(ty) {
            quote!(#private::Bytes)
        } else {
            quote!(#private::Held<#ty>)
        }
    };
    match types {
        [one] => {
            let one = part(one);
            quote!(#private::Packed<#one #format>)
        }
        many => {
            let parts = many.iter().map(|ty| part(ty));
            quote!(#private::Packed<(#(#parts),*) #format>)
        }
    }
}
