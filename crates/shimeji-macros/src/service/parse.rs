//! Reading what the user wrote: the `#[service(…)]` arguments, the `impl`
//! block, and the entrypoint attribute on each method.
//!
//! Named options are read with `parse_nested_meta`; the attributes that
//! also take positional arguments (`#[event_handler("source", "type", …)]`,
//! `#[http(GET, "/path")]`) have a small parser each.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{
    Attribute, Expr, ExprLit, Ident, ImplItemFn, ItemImpl, Lit, LitBool, LitStr, Meta, Token,
};

/// The arguments of `#[service(name = "…", events = ["…"], websocket)]`.
pub(super) struct ServiceArgs {
    /// The service's name, checked to be a routing key.
    pub name: LitStr,
    /// The event types it declares it dispatches.
    pub events: Vec<LitStr>,
    /// Whether its RPC entrypoints answer on the WebSocket hub.
    pub websocket: bool,
}

/// What kind of entrypoint a method is, with its attribute's arguments.
pub(super) enum Kind {
    /// `#[rpc]`.
    Rpc,
    /// `#[event_handler("source", "event_type", …)]`.
    Event(EventArgs),
    /// `#[timer(interval = "5s", eager = true)]`.
    Timer(TimerArgs),
    /// `#[http(GET, "/path")]`.
    Http(HttpArgs),
}

impl Kind {
    /// Entrypoints are numbered in this order of kinds: RPC methods, event
    /// handlers, timers, HTTP routes (the order of `Service::ENTRYPOINTS`).
    pub fn rank(&self) -> u8 {
        match self {
            Kind::Rpc => 0,
            Kind::Event(_) => 1,
            Kind::Timer(_) => 2,
            Kind::Http(_) => 3,
        }
    }

    /// The attribute, as diagnostics name it.
    pub fn attribute(&self) -> &'static str {
        match self {
            Kind::Rpc => "`#[rpc]`",
            Kind::Event(_) => "`#[event_handler]`",
            Kind::Timer(_) => "`#[timer]`",
            Kind::Http(_) => "`#[http]`",
        }
    }
}

/// The arguments of `#[event_handler(…)]`.
pub(super) struct EventArgs {
    /// The service that dispatches the event.
    pub source: LitStr,
    /// The event type.
    pub event_type: LitStr,
    /// The `HandlerType` variant: `ServicePool`, `Singleton` or `Broadcast`.
    pub handler_type: Ident,
    /// Keep undelivered events while no instance runs.
    pub reliable_delivery: bool,
}

/// The arguments of `#[timer(…)]`.
pub(super) struct TimerArgs {
    /// Time between runs, in milliseconds.
    pub interval_ms: u64,
    /// Run once at start.
    pub eager: bool,
}

/// The arguments of `#[http(…)]`.
pub(super) struct HttpArgs {
    /// The HTTP method: `GET`, `POST`, ….
    pub verb: Ident,
    /// The route, starting with `/`.
    pub path: LitStr,
    /// Where the attribute is, for errors about the route as a whole.
    pub span: Span,
}

/// Parses the arguments of `#[service(…)]`.
pub(super) fn service_args(attr: TokenStream) -> syn::Result<ServiceArgs> {
    let mut name = None;
    let mut events = Vec::new();
    let mut websocket = false;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("websocket") && !has_value(&meta) {
            websocket = true;
        } else if meta.path.is_ident("name") && meta.input.peek(Token![=]) {
            let value: Expr = meta.value()?.parse()?;
            name = Some(service_name(&value)?);
        } else if meta.path.is_ident("events") && meta.input.peek(Token![=]) {
            let value: Expr = meta.value()?.parse()?;
            let Expr::Array(array) = &value else {
                return Err(syn::Error::new_spanned(
                    &value,
                    "`events` must be a list of event types, e.g. `events = [\"greeted\"]`",
                ));
            };
            for elem in &array.elems {
                events.push(string_literal(elem, "event types must be strings")?);
            }
        } else {
            return Err(whole_option(
                &meta,
                "expected `name = \"…\"`, `events = [\"…\"]` or `websocket`",
            ));
        }
        Ok(())
    });
    parser.parse2(attr)?;
    let name = name.ok_or_else(|| {
        syn::Error::new(
            Span::call_site(),
            "missing the service name: write `#[service(name = \"greeter\")]`",
        )
    })?;
    Ok(ServiceArgs {
        name,
        events,
        websocket,
    })
}

/// The service name: a string that can be a routing key.
fn service_name(value: &Expr) -> syn::Result<LitStr> {
    let lit = string_literal(value, "`name` must be a string, e.g. `name = \"greeter\"`")?;
    let text = lit.value();
    if text.is_empty()
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(syn::Error::new_spanned(
            lit,
            "a service name may hold letters, digits, `_` and `-` only: it is a routing key",
        ));
    }
    Ok(lit)
}

/// Parses the item `#[service]` is on: an `impl` block.
pub(super) fn impl_block(item: TokenStream) -> syn::Result<ItemImpl> {
    syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "`#[service]` goes on an `impl` block: `#[service(name = \"…\")] impl MyService { … }`",
        )
    })
}

/// Takes the entrypoint attribute off `method` and parses it: `None` when
/// the method is not an entrypoint.
pub(super) fn entrypoint_kind(method: &mut ImplItemFn) -> syn::Result<Option<Kind>> {
    let mut kind = None;
    let mut error: Option<syn::Error> = None;
    method.attrs.retain(|attr| match kind_of(attr) {
        Ok(Some(k)) => {
            if kind.is_some() {
                error = Some(syn::Error::new_spanned(
                    attr,
                    "a method can be one entrypoint only",
                ));
            }
            kind = Some(k);
            false
        }
        Ok(None) => true,
        Err(e) => {
            error = Some(e);
            false
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok(kind),
    }
}

/// The entrypoint `attr` declares, if it is an entrypoint attribute.
fn kind_of(attr: &Attribute) -> syn::Result<Option<Kind>> {
    let Some(ident) = attr.path().segments.last().map(|s| &s.ident) else {
        return Ok(None);
    };
    let kind = if ident == "rpc" {
        if !matches!(attr.meta, Meta::Path(_)) {
            return Err(syn::Error::new_spanned(attr, "`#[rpc]` takes no arguments"));
        }
        Kind::Rpc
    } else if ident == "event_handler" {
        Kind::Event(event_args(attr)?)
    } else if ident == "timer" {
        Kind::Timer(timer_args(attr)?)
    } else if ident == "http" {
        Kind::Http(http_args(attr)?)
    } else {
        return Ok(None);
    };
    Ok(Some(kind))
}

const EVENT_USAGE: &str = "expected `#[event_handler(\"source_service\", \"event_type\")]`, optionally followed by `handler_type = \"service_pool\" | \"singleton\" | \"broadcast\"` and `reliable_delivery = true | false`";

/// `#[event_handler("source", "event_type", handler_type = "…", reliable_delivery = …)]`:
/// two strings, and the options in any place.
fn event_args(attr: &Attribute) -> syn::Result<EventArgs> {
    let Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(attr, EVENT_USAGE));
    };
    let mut positional = Vec::new();
    let mut handler_type = Ident::new("ServicePool", Span::call_site());
    let mut reliable_delivery = true;
    list.parse_args_with(|input: ParseStream| {
        while !input.is_empty() {
            if input.peek(Ident::peek_any) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
                let key = input.call(Ident::parse_any)?;
                input.parse::<Token![=]>()?;
                let value: Expr = input.parse()?;
                if key == "handler_type" {
                    handler_type = handler_type_variant(&value)?;
                } else if key == "reliable_delivery" {
                    reliable_delivery =
                        bool_literal(&value, "`reliable_delivery` must be `true` or `false`")?
                            .value;
                } else {
                    return Err(unknown_event_option(&key));
                }
            } else {
                match input.parse::<Expr>()? {
                    Expr::Assign(assign) => return Err(unknown_event_option(&assign.left)),
                    other if positional.len() < 2 => {
                        positional.push(string_literal(&other, EVENT_USAGE)?)
                    }
                    other => return Err(syn::Error::new_spanned(other, EVENT_USAGE)),
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(())
    })?;
    let given = positional.len();
    let [source, event_type]: [LitStr; 2] = positional.try_into().map_err(|_| {
        let what = if given == 1 {
            "missing the event type: write `#[event_handler(\"source_service\", \"event_type\")]`"
        } else {
            EVENT_USAGE
        };
        syn::Error::new_spanned(&list.tokens, what)
    })?;
    Ok(EventArgs {
        source,
        event_type,
        handler_type,
        reliable_delivery,
    })
}

fn unknown_event_option(key: &impl ToTokens) -> syn::Error {
    syn::Error::new_spanned(
        key,
        "unknown option: expected `handler_type` or `reliable_delivery`",
    )
}

/// `handler_type = "service_pool" | "singleton" | "broadcast"` → the
/// `HandlerType` variant.
fn handler_type_variant(value: &Expr) -> syn::Result<Ident> {
    let message = "`handler_type` must be \"service_pool\", \"singleton\" or \"broadcast\"";
    let value = string_literal(value, message)?;
    let variant = match value.value().as_str() {
        "service_pool" => "ServicePool",
        "singleton" => "Singleton",
        "broadcast" => "Broadcast",
        _ => return Err(syn::Error::new_spanned(value, message)),
    };
    Ok(Ident::new(variant, value.span()))
}

const TIMER_USAGE: &str =
    "expected `#[timer(interval = \"5s\")]`, optionally with `eager = true`; intervals in ms, s, m or h";

/// `#[timer(interval = "5s", eager = true)]`.
fn timer_args(attr: &Attribute) -> syn::Result<TimerArgs> {
    if !matches!(attr.meta, Meta::List(_)) {
        return Err(syn::Error::new_spanned(attr, TIMER_USAGE));
    }
    let mut interval_ms = None;
    let mut eager = false;
    attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("interval") && meta.input.peek(Token![=]) {
            let lit = string_literal(&meta.value()?.parse()?, TIMER_USAGE)?;
            interval_ms = Some(parse_interval(&lit.value()).ok_or_else(|| {
                syn::Error::new_spanned(
                    &lit,
                    "not an interval: write e.g. \"500ms\", \"5s\", \"1m\" or \"1h\" (more than zero)",
                )
            })?);
        } else if meta.path.is_ident("eager") && meta.input.peek(Token![=]) {
            let value: Expr = meta.value()?.parse()?;
            eager = bool_literal(&value, "`eager` must be `true` or `false`")?.value;
        } else {
            return Err(whole_option(
                &meta,
                "unknown option: expected `interval` or `eager`",
            ));
        }
        Ok(())
    })?;
    let interval_ms = interval_ms.ok_or_else(|| syn::Error::new_spanned(attr, TIMER_USAGE))?;
    Ok(TimerArgs { interval_ms, eager })
}

/// `"500ms"`, `"5s"`, `"2m"`, `"1h"` → milliseconds.
fn parse_interval(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    let ms = (number * factor).round();
    (ms >= 1.0 && ms.is_finite()).then_some(ms as u64)
}

const HTTP_USAGE: &str =
    "expected `#[http(GET, \"/path/{param}\")]` with GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS";
const HTTP_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// `#[http(GET, "/path/{param}")]`.
fn http_args(attr: &Attribute) -> syn::Result<HttpArgs> {
    let Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(attr, HTTP_USAGE));
    };
    let args = list.parse_args_with(Punctuated::<Expr, Token![,]>::parse_terminated)?;
    let mut args = args.into_iter();
    let (Some(Expr::Path(verb)), Some(path), None) = (args.next(), args.next(), args.next()) else {
        return Err(syn::Error::new_spanned(&list.tokens, HTTP_USAGE));
    };
    let verb = verb
        .path
        .get_ident()
        .filter(|v| HTTP_METHODS.contains(&v.to_string().as_str()))
        .cloned()
        .ok_or_else(|| syn::Error::new_spanned(&verb, HTTP_USAGE))?;
    let path = string_literal(&path, HTTP_USAGE)?;
    if !path.value().starts_with('/') {
        return Err(syn::Error::new_spanned(
            &path,
            "an HTTP path starts with `/`",
        ));
    }
    let span = attr
        .path()
        .segments
        .last()
        .map_or_else(Span::call_site, |s| s.ident.span());
    Ok(HttpArgs { verb, path, span })
}

/// Whether the option being read has a value (`= …` or `(…)`).
fn has_value(meta: &ParseNestedMeta) -> bool {
    meta.input.peek(Token![=]) || meta.input.peek(syn::token::Paren)
}

/// An error about the option being read, spanning all of it (`key`,
/// `key = value` or `key(…)`); reads the rest of the option to find its end.
fn whole_option(meta: &ParseNestedMeta, message: &str) -> syn::Error {
    let mut option = meta.path.to_token_stream();
    let rest: syn::Result<TokenStream> = if meta.input.peek(Token![=]) {
        meta.input.parse::<Token![=]>().and_then(|eq| {
            let value: Expr = meta.input.parse()?;
            Ok(quote::quote!(#eq #value))
        })
    } else if meta.input.peek(syn::token::Paren) {
        meta.input
            .step(|cursor| match cursor.token_tree() {
                Some((group, rest)) => Ok((group, rest)),
                None => Err(cursor.error("expected `(…)`")),
            })
            .map(TokenStream::from)
    } else {
        Ok(TokenStream::new())
    };
    match rest {
        Ok(rest) => {
            option.extend(rest);
            syn::Error::new_spanned(option, message)
        }
        Err(e) => e,
    }
}

/// The string literal `expr` is, or an error with `message` at it.
fn string_literal(expr: &Expr, message: &str) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        // A literal passed through a `macro_rules!` fragment.
        Expr::Group(group) => string_literal(&group.expr, message),
        other => Err(syn::Error::new_spanned(other, message)),
    }
}

/// The `true` or `false` `expr` is, or an error with `message` at it.
fn bool_literal(expr: &Expr, message: &str) -> syn::Result<LitBool> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.clone()),
        Expr::Group(group) => bool_literal(&group.expr, message),
        other => Err(syn::Error::new_spanned(other, message)),
    }
}
