//! Attribute arguments: `#[process(name = "...", codec = "...", crate = "...")]` and
//! `#[main(crate = "...")]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

use crate::errors::Errors;

/// One key an attribute accepts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Key {
    /// `name = "stable::name"`: the registered name.
    Name,
    /// `crate = "path"`: the path of the multiproc crate in generated code.
    Crate,
    /// `codec = "msgpack"`: how the worker's arguments and result are encoded.
    Codec,
}

/// How a worker's arguments and result are encoded: `codec = "..."`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) enum Codec {
    /// `"bincode"`, the default: compact, not self-describing.
    #[default]
    Bincode,
    /// `"msgpack"`: MessagePack, self-describing.
    MsgPack,
}

impl Codec {
    /// Every codec, by the name `codec = "..."` gives it.
    const ALL: &'static [(&'static str, Codec)] =
        &[("bincode", Codec::Bincode), ("msgpack", Codec::MsgPack)];

    /// The runtime's format type, or `None` for the default (the carriers' default parameter).
    pub(crate) fn format(self, krate: &TokenStream) -> Option<TokenStream> {
        match self {
            Codec::Bincode => None,
            Codec::MsgPack => Some(quote!(#krate::__private::SelfDescribing)),
        }
    }
}

impl Key {
    fn as_str(self) -> &'static str {
        match self {
            Key::Name => "name",
            Key::Crate => "crate",
            Key::Codec => "codec",
        }
    }
}

/// The keys `#[process]` accepts.
pub(crate) const PROCESS_KEYS: &[Key] = &[Key::Name, Key::Codec, Key::Crate];
/// The keys `#[main]` accepts.
pub(crate) const MAIN_KEYS: &[Key] = &[Key::Crate];

/// The parsed arguments of an attribute.
#[derive(Default)]
pub(crate) struct Args {
    /// `name = "..."`, checked to be non-empty.
    pub name: Option<LitStr>,
    /// `crate = "..."`, parsed as a path.
    pub krate: Option<Path>,
    /// `codec = "..."`, with the literal that named it.
    pub codec: Option<(Codec, LitStr)>,
}

impl Args {
    /// The codec of the worker's arguments and result: `codec = "..."`, or bincode.
    pub(crate) fn codec(&self) -> Codec {
        self.codec
            .as_ref()
            .map_or(Codec::default(), |(codec, _)| *codec)
    }

    /// The path of the multiproc crate: `crate = "..."`, or `::multiproc`.
    pub(crate) fn krate(&self) -> TokenStream {
        match &self.krate {
            Some(path) => quote!(#path),
            None => quote!(::multiproc),
        }
    }
}

/// Parses the tokens inside `#[attr(...)]`, accepting only `accepted` keys.
///
/// Every mistake that leaves the rest parseable (unknown or duplicate key, value that is not a
/// string literal, invalid path) is collected; a token that breaks the syntax stops the parse.
pub(crate) fn parse(tokens: TokenStream, accepted: &[Key]) -> syn::Result<Args> {
    parse_with_crate(tokens, accepted).0
}

/// [`parse`], and the path of the multiproc crate (see [`Args::krate`]) also when the arguments
/// are rejected, if the mistakes leave it certain: every key was read, and `crate` was given at
/// most once and then validly. The fallback of a rejected item needs it.
pub(crate) fn parse_with_crate(
    tokens: TokenStream,
    accepted: &[Key],
) -> (syn::Result<Args>, Option<TokenStream>) {
    let mut understood = Understood::default();
    let parser = |input: ParseStream| parse_args(input, accepted, &mut understood);
    let result = parser.parse2(tokens);
    let krate = match &result {
        Ok(args) => Some(args.krate()),
        Err(_) => {
            let certain = understood.read_all
                && (understood.crate_keys == 0
                    || (understood.crate_keys == 1 && understood.args.krate.is_some()));
            certain.then(|| understood.args.krate())
        }
    };
    (result, krate)
}

/// What `parse_args` understood, kept when it fails.
#[derive(Default)]
struct Understood {
    args: Args,
    /// The parse reached the end: no key is hidden behind a syntax error.
    read_all: bool,
    /// How many keys were spelled `crate`.
    crate_keys: usize,
}

fn parse_args(
    input: ParseStream,
    accepted: &[Key],
    understood: &mut Understood,
) -> syn::Result<Args> {
    let args = &mut understood.args;
    let mut seen: Vec<Key> = Vec::new();
    let mut errors = Errors::default();

    while !input.is_empty() {
        let key = input.call(Ident::parse_any).map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected an attribute key, one of {}", list(accepted)),
            )
        })?;
        let known = accepted.iter().copied().find(|k| key == k.as_str());
        if key == "crate" {
            understood.crate_keys += 1;
        }

        // The value: `= expr`, or a stray group such as `foo(...)` for an unknown key.
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse::<Expr>()?)
        } else {
            if input.peek(syn::token::Paren)
                || input.peek(syn::token::Bracket)
                || input.peek(syn::token::Brace)
            {
                input.parse::<proc_macro2::TokenTree>()?;
            }
            None
        };

        match known {
            None => errors.push(syn::Error::new(
                key.span(),
                format!("unknown attribute key `{key}`, expected {}", list(accepted)),
            )),
            Some(k) if seen.contains(&k) => errors.push(syn::Error::new(
                key.span(),
                format!("duplicate attribute key `{key}`"),
            )),
            Some(k) => {
                seen.push(k);
                match value {
                    None => errors.push(syn::Error::new(
                        key.span(),
                        format!("expected `=` after `{key}`, e.g. {}", example(k)),
                    )),
                    Some(value) => match string_value(&value, k) {
                        Ok(lit) => match k {
                            Key::Name => match check_name(&lit) {
                                Ok(()) => args.name = Some(lit),
                                Err(e) => errors.push(e),
                            },
                            Key::Codec => match check_codec(&lit) {
                                Ok(codec) => args.codec = Some((codec, lit)),
                                Err(e) => errors.push(e),
                            },
                            Key::Crate => match lit.parse::<Path>() {
                                Ok(path) => args.krate = Some(path),
                                Err(_) => errors.push(syn::Error::new(
                                    lit.span(),
                                    format!(
                                        "`crate` must be a path, e.g. {}, not {:?}",
                                        example(k),
                                        lit.value()
                                    ),
                                )),
                            },
                        },
                        Err(e) => errors.push(e),
                    },
                }
            }
        }

        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    understood.read_all = true;

    errors.finish()?;
    Ok(std::mem::take(&mut understood.args))
}

fn string_value(value: &Expr, key: Key) -> syn::Result<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit.clone()),
        other => Err(syn::Error::new_spanned(
            other,
            format!(
                "expected a string literal for `{}`, e.g. {}",
                key.as_str(),
                example(key)
            ),
        )),
    }
}

fn check_name(lit: &LitStr) -> syn::Result<()> {
    let value = lit.value();
    if value.trim().is_empty() {
        return Err(syn::Error::new(
            lit.span(),
            "`name` must not be empty, e.g. `name = \"my_app::square\"`",
        ));
    }
    if value.contains('\0') {
        return Err(syn::Error::new(
            lit.span(),
            "`name` must not contain a NUL character, e.g. `name = \"my_app::square\"`",
        ));
    }
    if value.chars().any(char::is_whitespace) {
        return Err(syn::Error::new(
            lit.span(),
            "`name` must not contain whitespace, e.g. `name = \"my_app::square\"`",
        ));
    }
    // The library registers its own entries (the pool's worker) there, without a claim a
    // second one would collide with at build time: a user's entry of the same name made
    // every pool fail at run time, its entry "registered twice".
    if value.starts_with("multiproc::") {
        return Err(syn::Error::new(
            lit.span(),
            "names under `multiproc::` are the library's own, e.g. `name = \"my_app::square\"`",
        ));
    }
    Ok(())
}

/// The codec named by `lit`; an unknown name is an error at it that lists the known ones.
fn check_codec(lit: &LitStr) -> syn::Result<Codec> {
    let value = lit.value();
    Codec::ALL
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, codec)| *codec)
        .ok_or_else(|| {
            let names: Vec<String> = Codec::ALL
                .iter()
                .map(|(name, _)| format!("`\"{name}\"`"))
                .collect();
            syn::Error::new(
                lit.span(),
                format!(
                    "unknown codec {value:?}, expected one of {} (`\"msgpack\"` is self-describing: it carries `#[serde(flatten)]`, untagged enums and `serde_json::Value`)",
                    names.join(", ")
                ),
            )
        })
}

fn example(key: Key) -> &'static str {
    match key {
        Key::Name => "`name = \"my_app::square\"`",
        Key::Codec => "`codec = \"msgpack\"`",
        Key::Crate => "`crate = \"::my_crate::multiproc\"`",
    }
}

/// "`crate`" or "one of `name`, `crate`".
fn list(accepted: &[Key]) -> String {
    let keys: Vec<String> = accepted
        .iter()
        .map(|k| format!("`{}`", k.as_str()))
        .collect();
    match keys.as_slice() {
        [one] => one.clone(),
        _ => format!("one of {}", keys.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(tokens: TokenStream, accepted: &[Key]) -> Vec<String> {
        match parse(tokens, accepted) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn empty() {
        let args = parse(TokenStream::new(), PROCESS_KEYS).unwrap();
        assert!(args.name.is_none() && args.krate.is_none());
        assert_eq!(args.krate().to_string(), quote!(::multiproc).to_string());
    }

    #[test]
    fn name_and_crate() {
        let args = parse(quote!(name = "a::b", crate = "::re::mp"), PROCESS_KEYS).unwrap();
        assert_eq!(args.name.as_ref().unwrap().value(), "a::b");
        assert_eq!(args.krate().to_string(), quote!(::re::mp).to_string());
    }

    #[test]
    fn the_library_names_are_reserved() {
        let errs = errors(quote!(name = "multiproc::pool::worker"), PROCESS_KEYS);
        assert_eq!(
            errs,
            ["names under `multiproc::` are the library's own, e.g. `name = \"my_app::square\"`"]
        );
        assert!(parse(quote!(name = "multiprocessing::x"), PROCESS_KEYS).is_ok());
    }

    #[test]
    fn trailing_comma() {
        assert!(parse(quote!(name = "x",), PROCESS_KEYS).is_ok());
    }

    #[test]
    fn several_errors_are_combined() {
        let errs = errors(
            quote!(foo = 1, name = "a", name = "b", crate = 3),
            PROCESS_KEYS,
        );
        assert_eq!(
            errs,
            [
                "unknown attribute key `foo`, expected one of `name`, `codec`, `crate`",
                "duplicate attribute key `name`",
                "expected a string literal for `crate`, e.g. `crate = \"::my_crate::multiproc\"`",
            ]
        );
    }

    #[test]
    fn main_accepts_crate_only() {
        assert_eq!(
            errors(quote!(name = "x"), MAIN_KEYS),
            ["unknown attribute key `name`, expected `crate`"]
        );
    }

    #[test]
    fn missing_value() {
        assert_eq!(
            errors(quote!(name), PROCESS_KEYS),
            ["expected `=` after `name`, e.g. `name = \"my_app::square\"`"]
        );
    }

    #[test]
    fn bad_values() {
        assert_eq!(
            errors(quote!(name = ""), PROCESS_KEYS),
            ["`name` must not be empty, e.g. `name = \"my_app::square\"`"]
        );
        assert_eq!(errors(quote!(crate = "not a path"), PROCESS_KEYS).len(), 1);
    }

    #[test]
    fn codec() {
        assert_eq!(
            parse(TokenStream::new(), PROCESS_KEYS).unwrap().codec(),
            Codec::Bincode
        );
        let args = parse(quote!(codec = "msgpack"), PROCESS_KEYS).unwrap();
        assert_eq!(args.codec(), Codec::MsgPack);
        let args = parse(quote!(codec = "bincode"), PROCESS_KEYS).unwrap();
        assert_eq!(args.codec(), Codec::Bincode);
        assert_eq!(
            errors(quote!(codec = "json"), PROCESS_KEYS),
            ["unknown codec \"json\", expected one of `\"bincode\"`, `\"msgpack\"` (`\"msgpack\"` is self-describing: it carries `#[serde(flatten)]`, untagged enums and `serde_json::Value`)"]
        );
        assert_eq!(
            errors(quote!(codec = msgpack), PROCESS_KEYS),
            ["expected a string literal for `codec`, e.g. `codec = \"msgpack\"`"]
        );
        assert_eq!(
            errors(quote!(codec = "msgpack"), MAIN_KEYS),
            ["unknown attribute key `codec`, expected `crate`"]
        );
    }

    #[test]
    fn unknown_key_with_group() {
        assert_eq!(
            errors(quote!(foo(bar), name = "x"), PROCESS_KEYS),
            ["unknown attribute key `foo`, expected one of `name`, `codec`, `crate`"]
        );
    }
}
