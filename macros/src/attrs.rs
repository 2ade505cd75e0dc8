//! Where each attribute of a `#[process]` function goes: the worker's unit struct, the inner
//! function that holds the body, or both.

use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Meta, Token};

/// Where an attribute of the user's function goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Docs and `deprecated`: the public face of the worker, the unit struct.
    Struct,
    /// `cfg`: the struct and the `const _` block.
    Cfg,
    /// `allow`, `warn`, `deny`, `forbid`: both the struct and the inner function.
    Both,
    /// `expect`: the inner function, and as `allow` on the struct (an `expect` on both would
    /// report the one that did not fire).
    Expect,
    /// Anything else (`inline`, `must_use`, `track_caller`, other attribute macros, ...): the
    /// inner function, which holds the body.
    Fn,
}

fn place_of_path(path: &syn::Path) -> Place {
    let Some(ident) = path.get_ident() else {
        return Place::Fn;
    };
    match ident.to_string().as_str() {
        "doc" | "deprecated" => Place::Struct,
        "cfg" => Place::Cfg,
        "allow" | "warn" | "deny" | "forbid" => Place::Both,
        "expect" => Place::Expect,
        _ => Place::Fn,
    }
}

fn place(attr: &Attribute) -> Place {
    if !attr.path().is_ident("cfg_attr") {
        return place_of_path(attr.path());
    }
    // `cfg_attr(pred, a, b)`: the struct if every attribute goes there, else the function.
    let nested = attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated);
    let places: Vec<Place> = match nested {
        Ok(nested) => nested
            .iter()
            .skip(1)
            .map(|meta| place_of_path(meta.path()))
            .collect(),
        Err(_) => return Place::Fn,
    };
    if !places.is_empty() && places.iter().all(|p| *p == Place::Struct) {
        Place::Struct
    } else if !places.is_empty() && places.iter().all(|p| *p == Place::Both) {
        Place::Both
    } else {
        Place::Fn
    }
}

/// The attributes of the user's function, sorted by where they go.
#[derive(Default)]
pub(crate) struct FnAttrs {
    pub on_struct: Vec<Attribute>,
    pub on_fn: Vec<Attribute>,
    pub cfg: Vec<Attribute>,
}

pub(crate) fn split_attrs(attrs: Vec<Attribute>) -> FnAttrs {
    let mut out = FnAttrs::default();
    for attr in attrs {
        match place(&attr) {
            Place::Struct => out.on_struct.push(attr),
            Place::Cfg => out.cfg.push(attr),
            Place::Both => {
                out.on_struct.push(attr.clone());
                out.on_fn.push(attr);
            }
            Place::Expect => {
                let mut allow = attr.clone();
                if let Meta::List(list) = &mut allow.meta {
                    list.path = syn::Path::from(syn::Ident::new("allow", list.path.span()));
                }
                out.on_struct.push(allow);
                out.on_fn.push(attr);
            }
            Place::Fn => out.on_fn.push(attr),
        }
    }
    out
}
