//! `#[service(name = "…")]` on an `impl` block.
//!
//! Generates, for `impl Greeter`:
//! * `impl shimeji::Service for Greeter`: dispatch by method name, argument
//!   binding from `args`/`kwargs` or the typed fast path, error conversion,
//!   the service description;
//! * `GreeterClient`: a typed client whose async methods mirror the RPC
//!   entrypoints;
//! * one hidden argument struct per RPC method, for the typed fast path.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, ExprLit, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemImpl, Lit,
    LitBool, LitStr, Meta, Pat, PathArguments, ReturnType, Token, Type,
};

struct ServiceArgs {
    name: LitStr,
    events: Vec<LitStr>,
    websocket: bool,
}

fn parse_service_args(attr: TokenStream) -> syn::Result<ServiceArgs> {
    let metas = syn::parse::Parser::parse2(Punctuated::<Meta, Token![,]>::parse_terminated, attr)?;
    let mut name = None;
    let mut events = Vec::new();
    let mut websocket = false;
    for meta in metas {
        match &meta {
            Meta::Path(p) if p.is_ident("websocket") => websocket = true,
            Meta::NameValue(nv) if nv.path.is_ident("name") => {
                let lit = string_literal(
                    &nv.value,
                    "`name` must be a string, e.g. `name = \"greeter\"`",
                )?;
                let value = lit.value();
                if value.is_empty()
                    || !value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(syn::Error::new_spanned(
                        lit,
                        "a service name may hold letters, digits, `_` and `-` only: it is a routing key",
                    ));
                }
                name = Some(lit);
            }
            Meta::NameValue(nv) if nv.path.is_ident("events") => {
                let Expr::Array(array) = &nv.value else {
                    return Err(syn::Error::new_spanned(
                        &nv.value,
                        "`events` must be a list of event types, e.g. `events = [\"greeted\"]`",
                    ));
                };
                for elem in &array.elems {
                    events.push(string_literal(elem, "event types must be strings")?);
                }
            }
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "expected `name = \"…\"`, `events = [\"…\"]` or `websocket`",
                ))
            }
        }
    }
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

fn string_literal(expr: &Expr, message: &str) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(syn::Error::new_spanned(other, message)),
    }
}

fn bool_literal(expr: &Expr, message: &str) -> syn::Result<LitBool> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.clone()),
        other => Err(syn::Error::new_spanned(other, message)),
    }
}

enum Kind {
    Rpc,
    Http {
        method: Ident,
        path: LitStr,
    },
    Timer {
        interval_ms: u64,
        eager: bool,
    },
    Event {
        source: LitStr,
        event_type: LitStr,
        handler_type: Ident,
        reliable_delivery: bool,
    },
}

struct Param {
    name: Ident,
    ty: Type,
}

struct Entrypoint {
    kind: Kind,
    method: Ident,
    params: Vec<Param>,
    /// The method's output type (`()` when none).
    output: Type,
    /// `Some((ok, err))` when the output is written as a `Result`.
    result: Option<(Type, Type)>,
    docs: Vec<Attribute>,
}

fn entrypoint_kind(attr: &Attribute) -> syn::Result<Option<Kind>> {
    let Some(ident) = attr.path().segments.last().map(|s| &s.ident) else {
        return Ok(None);
    };
    if ident == "rpc" {
        if !matches!(attr.meta, Meta::Path(_)) {
            return Err(syn::Error::new_spanned(attr, "`#[rpc]` takes no arguments"));
        }
        return Ok(Some(Kind::Rpc));
    }
    if ident == "timer" {
        return timer_kind(attr).map(Some);
    }
    if ident == "http" {
        return http_kind(attr).map(Some);
    }
    if ident != "event_handler" {
        return Ok(None);
    }
    let usage = "expected `#[event_handler(\"source_service\", \"event_type\")]`, optionally followed by `handler_type = \"service_pool\" | \"singleton\" | \"broadcast\"` and `reliable_delivery = true | false`";
    let Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(attr, usage));
    };
    let args = list.parse_args_with(Punctuated::<Expr, Token![,]>::parse_terminated)?;
    let mut positional = Vec::new();
    let mut handler_type = Ident::new("ServicePool", Span::call_site());
    let mut reliable_delivery = true;
    for arg in args {
        match arg {
            Expr::Assign(assign) => {
                let key = assign.left.to_token_stream().to_string();
                match key.as_str() {
                    "handler_type" => {
                        let value = string_literal(
                            &assign.right,
                            "`handler_type` must be \"service_pool\", \"singleton\" or \"broadcast\"",
                        )?;
                        let variant = match value.value().as_str() {
                            "service_pool" => "ServicePool",
                            "singleton" => "Singleton",
                            "broadcast" => "Broadcast",
                            _ => {
                                return Err(syn::Error::new_spanned(
                                    value,
                                    "`handler_type` must be \"service_pool\", \"singleton\" or \"broadcast\"",
                                ))
                            }
                        };
                        handler_type = Ident::new(variant, value.span());
                    }
                    "reliable_delivery" => {
                        reliable_delivery = bool_literal(
                            &assign.right,
                            "`reliable_delivery` must be `true` or `false`",
                        )?
                        .value;
                    }
                    _ => {
                        return Err(syn::Error::new_spanned(
                            &assign.left,
                            "unknown option: expected `handler_type` or `reliable_delivery`",
                        ))
                    }
                }
            }
            other if positional.len() < 2 => positional.push(string_literal(&other, usage)?),
            other => return Err(syn::Error::new_spanned(other, usage)),
        }
    }
    let given = positional.len();
    let [source, event_type]: [LitStr; 2] = positional.try_into().map_err(|_| {
        let what = if given == 1 {
            "missing the event type: write `#[event_handler(\"source_service\", \"event_type\")]`"
        } else {
            usage
        };
        syn::Error::new_spanned(&list.tokens, what)
    })?;
    Ok(Some(Kind::Event {
        source,
        event_type,
        handler_type,
        reliable_delivery,
    }))
}

fn http_kind(attr: &Attribute) -> syn::Result<Kind> {
    let usage = "expected `#[http(GET, \"/path/{param}\")]` with GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS";
    let Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(attr, usage));
    };
    let args = list.parse_args_with(Punctuated::<Expr, Token![,]>::parse_terminated)?;
    let mut args = args.into_iter();
    let (Some(Expr::Path(method)), Some(path), None) = (args.next(), args.next(), args.next())
    else {
        return Err(syn::Error::new_spanned(&list.tokens, usage));
    };
    let method = method
        .path
        .get_ident()
        .filter(|m| {
            ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
                .contains(&m.to_string().as_str())
        })
        .cloned()
        .ok_or_else(|| syn::Error::new_spanned(&method, usage))?;
    let path = string_literal(&path, usage)?;
    if !path.value().starts_with('/') {
        return Err(syn::Error::new_spanned(
            &path,
            "an HTTP path starts with `/`",
        ));
    }
    Ok(Kind::Http { method, path })
}

fn timer_kind(attr: &Attribute) -> syn::Result<Kind> {
    let usage = "expected `#[timer(interval = \"5s\")]`, optionally with `eager = true`; intervals in ms, s, m or h";
    let Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(attr, usage));
    };
    let args = list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)?;
    let mut interval_ms = None;
    let mut eager = false;
    for arg in args {
        match &arg {
            Meta::NameValue(nv) if nv.path.is_ident("interval") => {
                let lit = string_literal(&nv.value, usage)?;
                interval_ms = Some(parse_interval(&lit.value()).ok_or_else(|| {
                    syn::Error::new_spanned(&lit, "not an interval: write e.g. \"500ms\", \"5s\", \"1m\" or \"1h\" (more than zero)")
                })?);
            }
            Meta::NameValue(nv) if nv.path.is_ident("eager") => {
                eager = bool_literal(&nv.value, "`eager` must be `true` or `false`")?.value;
            }
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "unknown option: expected `interval` or `eager`",
                ))
            }
        }
    }
    let interval_ms = interval_ms.ok_or_else(|| syn::Error::new_spanned(attr, usage))?;
    Ok(Kind::Timer { interval_ms, eager })
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

fn result_types(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    Some((types.next()?, types.next()?))
}

fn has_reference(ty: &Type) -> bool {
    match ty {
        Type::Reference(_) => true,
        Type::Path(p) => p.path.segments.iter().any(|s| match &s.arguments {
            PathArguments::AngleBracketed(a) => a.args.iter().any(|g| match g {
                GenericArgument::Type(t) => has_reference(t),
                GenericArgument::Lifetime(_) => true,
                _ => false,
            }),
            _ => false,
        }),
        Type::Tuple(t) => t.elems.iter().any(has_reference),
        Type::Array(a) => has_reference(&a.elem),
        Type::Slice(_) | Type::TraitObject(_) | Type::ImplTrait(_) => true,
        _ => false,
    }
}

fn parse_entrypoint(method: &mut ImplItemFn) -> syn::Result<Option<Entrypoint>> {
    let mut kind = None;
    let mut error: Option<syn::Error> = None;
    method.attrs.retain(|attr| match entrypoint_kind(attr) {
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
    if let Some(e) = error {
        return Err(e);
    }
    let Some(kind) = kind else { return Ok(None) };
    let what = match kind {
        Kind::Rpc => "`#[rpc]`",
        Kind::Event { .. } => "`#[event_handler]`",
        Kind::Timer { .. } => "`#[timer]`",
        Kind::Http { .. } => "`#[http]`",
    };
    let sig = &method.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            format!("{what} methods must be `async fn`"),
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            format!("{what} methods cannot be generic: their arguments cross the wire"),
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        Some(other) => {
            return Err(syn::Error::new_spanned(
                other,
                format!("{what} methods take `&self`: many workers run at once"),
            ))
        }
        None => {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                format!("{what} methods take `&self`"),
            ))
        }
    }
    let mut params = Vec::new();
    for input in inputs {
        let FnArg::Typed(pat_type) = input else {
            continue;
        };
        if matches!(kind, Kind::Http { .. }) {
            // HTTP parameters are axum extractors: any pattern will do.
            params.push(Param {
                name: format_ident!("__p{}", params.len()),
                ty: (*pat_type.ty).clone(),
            });
            continue;
        }
        let Pat::Ident(pat) = &*pat_type.pat else {
            return Err(syn::Error::new_spanned(
                &pat_type.pat,
                "entrypoint arguments must be plain names (`name: Type`): the name is the keyword argument",
            ));
        };
        if has_reference(&pat_type.ty) {
            return Err(syn::Error::new_spanned(
                &pat_type.ty,
                "entrypoint arguments must be owned types (`String`, not `&str`): they may cross the wire",
            ));
        }
        params.push(Param {
            name: pat.ident.clone(),
            ty: (*pat_type.ty).clone(),
        });
    }
    if matches!(kind, Kind::Timer { .. }) && !params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            "`#[timer]` methods take `&self` only",
        ));
    }
    if matches!(kind, Kind::Event { .. }) && params.len() > 1 {
        return Err(syn::Error::new_spanned(
            &params[1].name,
            "`#[event_handler]` methods take `&self` and one argument, the event payload: this one is extra",
        ));
    }
    if matches!(kind, Kind::Event { .. }) && params.len() != 1 {
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            "`#[event_handler]` methods take `&self` and one argument: the event payload",
        ));
    }
    let output: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    if has_reference(&output) && !matches!(kind, Kind::Http { .. }) {
        return Err(syn::Error::new_spanned(
            &output,
            "entrypoints must return owned types: the result may cross the wire",
        ));
    }
    let result = result_types(&output);
    let docs = method
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    Ok(Some(Entrypoint {
        kind,
        method: sig.ident.clone(),
        params,
        output,
        result,
        docs,
    }))
}

fn type_string(ty: &Type) -> String {
    let raw = ty.to_token_stream().to_string();
    raw.replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace("& ", "&")
}

fn doc_string(docs: &[Attribute]) -> String {
    docs.iter()
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => Some(s.value().trim().to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = parse_service_args(attr)?;
    let mut block: ItemImpl = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "`#[service]` goes on an `impl` block: `#[service(name = \"…\")] impl MyService { … }`",
        )
    })?;
    if let Some((_, path, _)) = &block.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "`#[service]` goes on an inherent `impl` block, not a trait impl",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &block.generics,
            "a service cannot be generic",
        ));
    }
    let Type::Path(self_path) = &*block.self_ty else {
        return Err(syn::Error::new_spanned(
            &block.self_ty,
            "`#[service]` needs a named struct",
        ));
    };
    let self_ident = self_path
        .path
        .segments
        .last()
        .map(|s| s.ident.clone())
        .ok_or_else(|| {
            syn::Error::new_spanned(&block.self_ty, "`#[service]` needs a named struct")
        })?;
    let mut entrypoints = Vec::new();
    for item in &mut block.items {
        if let ImplItem::Fn(method) = item {
            if let Some(ep) = parse_entrypoint(method)? {
                entrypoints.push(ep);
            }
        }
    }

    let self_ty = &block.self_ty;
    let service_name = &args.name;
    let client_ident = format_ident!("{}Client", self_ident);
    let args_ident =
        |m: &Ident| format_ident!("__{}{}Args", self_ident, upper_camel(&m.to_string()));

    let rpcs: Vec<&Entrypoint> = entrypoints
        .iter()
        .filter(|e| matches!(e.kind, Kind::Rpc))
        .collect();
    let events: Vec<&Entrypoint> = entrypoints
        .iter()
        .filter(|e| matches!(e.kind, Kind::Event { .. }))
        .collect();

    let rpc_names: Vec<String> = rpcs.iter().map(|e| e.method.to_string()).collect();
    // Entrypoint ids: positions in the order RPC methods, event handlers,
    // timers, HTTP routes (the order of `Service::ENTRYPOINTS`).
    let timers: Vec<&Entrypoint> = entrypoints
        .iter()
        .filter(|e| matches!(e.kind, Kind::Timer { .. }))
        .collect();
    let https: Vec<&Entrypoint> = entrypoints
        .iter()
        .filter(|e| matches!(e.kind, Kind::Http { .. }))
        .collect();
    let ordered: Vec<&Entrypoint> = rpcs
        .iter()
        .chain(&events)
        .chain(&timers)
        .chain(&https)
        .copied()
        .collect();
    if ordered.len() > usize::from(u16::MAX) {
        return Err(syn::Error::new(
            Span::call_site(),
            "a service has at most 65535 entrypoints",
        ));
    }
    let entrypoint_names: Vec<String> = ordered.iter().map(|e| e.method.to_string()).collect();
    let id_of = |ep: &Entrypoint| -> usize {
        ordered
            .iter()
            .position(|o| std::ptr::eq(*o, ep))
            .unwrap_or_default()
    };
    let id_lit = |ep: &Entrypoint| proc_macro2::Literal::usize_unsuffixed(id_of(ep));
    let id_u16 = |ep: &Entrypoint| proc_macro2::Literal::u16_suffixed(id_of(ep) as u16);
    let rpc_ids: Vec<proc_macro2::Literal> = rpcs.iter().map(|e| id_u16(e)).collect();

    let mut arg_structs = Vec::new();
    let mut rpc_arms = Vec::new();
    let mut client_methods = Vec::new();
    let mut rpc_descriptions = Vec::new();
    for ep in &rpcs {
        let method = &ep.method;
        let method_name = method.to_string();
        let args_struct = args_ident(method);
        let names: Vec<&Ident> = ep.params.iter().map(|p| &p.name).collect();
        let name_strings: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let types: Vec<&Type> = ep.params.iter().map(|p| &p.ty).collect();
        let indices: Vec<usize> = (0..names.len()).collect();
        arg_structs.push(quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types, dead_code, private_interfaces)]
            #[derive(::shimeji::__private::serde::Serialize)]
            #[serde(crate = "::shimeji::__private::serde")]
            pub struct #args_struct { #(pub #names: #types,)* }
        });
        let reply = match &ep.result {
            Some((_, err)) => {
                let to_remote = to_remote(err);
                quote! {
                    match __out {
                        ::core::result::Result::Ok(__value) => ::shimeji::__private::Payload::reply(__value, __typed),
                        ::core::result::Result::Err(__error) => ::core::result::Result::Err(#to_remote),
                    }
                }
            }
            None => quote!(::shimeji::__private::Payload::reply(__out, __typed)),
        };
        let id = id_lit(ep);
        rpc_arms.push(quote! {
            #id => {
                const __PARAMS: &[&str] = &[#(#name_strings),*];
                let (__args, __typed) = ::shimeji::__private::Payload::take_args::<#args_struct>(__payload, |__body| {
                    #[allow(unused_mut, unused_variables)]
                    let mut __binder = ::shimeji::__private::Binder::new(#method_name, __PARAMS, __body)?;
                    ::core::result::Result::Ok(#args_struct { #(#names: __binder.take(#indices)?,)* })
                })?;
                let __out = self.#method(#(__args.#names),*).await;
                #reply
            }
        });
        let ok_ty = match &ep.result {
            Some((ok, _)) => ok.clone(),
            None => ep.output.clone(),
        };
        let docs = &ep.docs;
        let site = match &ep.result {
            Some((_, err)) => quote_spanned!(err.span()=>
            ::shimeji::__private::CallSite::with_errors(
                #service_name,
                #method_name,
                <#err as ::shimeji::Exception>::declared_types,
            )),
            None => quote!(::shimeji::__private::CallSite::new(#service_name, #method_name)),
        };
        client_methods.push(quote! {
            #(#docs)*
            pub async fn #method(&self, #(#names: #types),*) -> ::core::result::Result<#ok_ty, ::shimeji::CallError> {
                static SITE: ::shimeji::__private::CallSite = #site;
                self.client.call_at(&SITE, #args_struct { #(#names),* }).await
            }
        });
        let arg_types: Vec<String> = types.iter().map(|t| type_string(t)).collect();
        let returns = type_string(&ok_ty);
        let error = match &ep.result {
            Some((_, err)) => {
                let e = type_string(err);
                quote!(::core::option::Option::Some(::std::string::String::from(#e)))
            }
            None => quote!(::core::option::Option::None),
        };
        let doc = doc_string(&ep.docs);
        rpc_descriptions.push(quote! {
            ::shimeji::__private::RpcDescription {
                name: ::std::string::String::from(#method_name),
                args: ::std::vec![#(::shimeji::__private::ArgDescription {
                    name: ::std::string::String::from(#name_strings),
                    ty: ::std::string::String::from(#arg_types),
                }),*],
                returns: ::std::string::String::from(#returns),
                error: #error,
                doc: ::std::string::String::from(#doc),
            }
        });
    }

    let mut event_arms = Vec::new();
    let mut event_specs = Vec::new();
    let mut event_descriptions = Vec::new();
    for ep in &events {
        let Kind::Event {
            source,
            event_type,
            handler_type,
            reliable_delivery,
        } = &ep.kind
        else {
            continue;
        };
        let method = &ep.method;
        let method_name = method.to_string();
        let payload_ty = &ep.params[0].ty;
        let done = match &ep.result {
            Some((_, err)) => {
                let to_remote = to_remote(err);
                quote!(__out.map(|_| ()).map_err(|__error| #to_remote))
            }
            None => quote! {{ let _ = __out; ::core::result::Result::Ok(()) }},
        };
        let id = id_lit(ep);
        let id16 = id_u16(ep);
        event_arms.push(quote! {
            #id => {
                let __event: #payload_ty = ::shimeji::__private::serde_json::from_value(__payload).map_err(|__e| {
                    ::shimeji::RemoteError::malformed_request(::std::format!("event payload for `{}`: {}", #method_name, __e))
                })?;
                let __out = self.#method(__event).await;
                #done
            }
        });
        event_specs.push(quote! {
            ::shimeji::__private::EventHandlerSpec {
                id: ::shimeji::__private::EntrypointId::new(#id16),
                method: #method_name,
                source: #source,
                event_type: #event_type,
                handler_type: ::shimeji::HandlerType::#handler_type,
                reliable_delivery: #reliable_delivery,
            }
        });
        let payload = type_string(payload_ty);
        event_descriptions.push(quote! {
            ::shimeji::__private::EventHandlerDescription {
                name: ::std::string::String::from(#method_name),
                source: ::std::string::String::from(#source),
                event_type: ::std::string::String::from(#event_type),
                handler_type: ::shimeji::HandlerType::#handler_type,
                reliable_delivery: #reliable_delivery,
                payload: ::std::string::String::from(#payload),
            }
        });
    }
    let mut timer_arms = Vec::new();
    let mut timer_specs = Vec::new();
    let mut timer_descriptions = Vec::new();
    for ep in timers.iter().copied() {
        let Kind::Timer { interval_ms, eager } = &ep.kind else {
            continue;
        };
        let method = &ep.method;
        let method_name = method.to_string();
        let done = match &ep.result {
            Some((_, err)) => {
                let to_remote = to_remote(err);
                quote!(__out.map(|_| ()).map_err(|__error| #to_remote))
            }
            None => quote! {{ let _ = __out; ::core::result::Result::Ok(()) }},
        };
        let id = id_lit(ep);
        let id16 = id_u16(ep);
        timer_arms.push(quote! {
            #id => {
                let __out = self.#method().await;
                #done
            }
        });
        timer_specs.push(quote! {
            ::shimeji::__private::TimerSpec { id: ::shimeji::__private::EntrypointId::new(#id16), method: #method_name, interval_ms: #interval_ms, eager: #eager }
        });
        timer_descriptions.push(quote! {
            ::shimeji::__private::TimerDescription {
                name: ::std::string::String::from(#method_name),
                interval_ms: #interval_ms,
                eager: #eager,
            }
        });
    }
    let mut http_arms = Vec::new();
    let mut http_specs = Vec::new();
    for ep in https.iter().copied() {
        let Kind::Http { method: verb, path } = &ep.kind else {
            continue;
        };
        let method = &ep.method;
        let method_name = method.to_string();
        let verb = verb.to_string();
        let n = ep.params.len();
        let mut extract = Vec::new();
        let names: Vec<&Ident> = ep.params.iter().map(|p| &p.name).collect();
        for (i, p) in ep.params.iter().enumerate() {
            let (name, ty) = (&p.name, &p.ty);
            if i + 1 < n {
                extract.push(quote_spanned! {ty.span()=>
                    let #name: #ty = match <#ty as ::shimeji::http::FromRequestParts<()>>::from_request_parts(&mut __parts, &()).await {
                        ::core::result::Result::Ok(v) => v,
                        ::core::result::Result::Err(r) => return ::shimeji::http::IntoResponse::into_response(r),
                    };
                });
            } else {
                extract.push(quote_spanned! {ty.span()=>
                    let __req = ::shimeji::http::Request::from_parts(__parts, __body);
                    let #name: #ty = match <#ty as ::shimeji::http::FromRequest<(), _>>::from_request(__req, &()).await {
                        ::core::result::Result::Ok(v) => v,
                        ::core::result::Result::Err(r) => return ::shimeji::http::IntoResponse::into_response(r),
                    };
                });
            }
        }
        let respond = match &ep.result {
            Some((_, err)) => {
                let error =
                    quote_spanned!(err.span()=> ::shimeji::http::error_response::<#err>(&__error));
                quote! {
                    match __out {
                        ::core::result::Result::Ok(__value) => {
                            #[allow(unused_imports)]
                            use ::shimeji::http::__respond::{ViaIntoResponse, ViaJson};
                            (&&::shimeji::http::__respond::Responder::new(__value)).respond()
                        }
                        ::core::result::Result::Err(__error) => #error,
                    }
                }
            }
            None => quote! {{
                #[allow(unused_imports)]
                use ::shimeji::http::__respond::{ViaIntoResponse, ViaJson};
                (&&::shimeji::http::__respond::Responder::new(__out)).respond()
            }},
        };
        let id = id_lit(ep);
        let id16 = id_u16(ep);
        http_arms.push(quote! {
            #id => {
                #[allow(unused_mut, unused_variables)]
                let (mut __parts, __body) = __req.into_parts();
                #(#extract)*
                let __out = self.#method(#(#names),*).await;
                #respond
            }
        });
        http_specs.push(quote! {
            ::shimeji::http::HttpRouteSpec { id: ::shimeji::__private::EntrypointId::new(#id16), method: #verb, path: #path, name: #method_name }
        });
    }
    // HTTP routes: listed and served by `HttpService`, and
    // plugged into the runner's web server by `Service::plug_in`.
    let (http_items, http_impl) = if http_specs.is_empty() {
        (quote!(), quote!())
    } else {
        let items = quote! {
            fn plug_in(__plug_ins: &mut dyn ::core::any::Any) {
                ::shimeji::http::__plug_in::<Self>(__plug_ins)
            }
        };
        let service_impl = quote! {
            impl ::shimeji::http::HttpService for #self_ty {
                const HTTP_ROUTES: &'static [::shimeji::http::HttpRouteSpec] = &[#(#http_specs),*];

                fn dispatch_http(
                    &self,
                    __id: ::shimeji::__private::EntrypointId,
                    __req: ::shimeji::http::Request,
                ) -> impl ::core::future::Future<Output = ::shimeji::http::Response> + ::core::marker::Send + '_ {
                    async move {
                        match __id.index() {
                            #(#http_arms)*
                            _ => ::shimeji::http::not_found(<Self as ::shimeji::Service>::entrypoint_name(__id)),
                        }
                    }
                }
            }
        };
        (items, service_impl)
    };
    // The error types of every entrypoint whose result is a `Result`
    // (HTTP entrypoints answer their errors themselves: not counted).
    let declared_error_arms: Vec<TokenStream> = entrypoints
        .iter()
        .filter(|ep| !matches!(ep.kind, Kind::Http { .. }))
        .filter_map(|ep| {
            let (_, err) = ep.result.as_ref()?;
            let name = ep.method.to_string();
            Some(quote_spanned!(err.span()=>
                #name => <#err as ::shimeji::Exception>::declared_types(),))
        })
        .collect();
    let websocket = args.websocket;
    let declared_events = &args.events;
    let client_doc = format!(
        "Typed client for the `{}` service: one async method per RPC entrypoint.",
        service_name.value()
    );

    Ok(quote! {
        #block

        #(#arg_structs)*

        #http_impl

        impl ::shimeji::Service for #self_ty {
            const NAME: &'static str = #service_name;
            const ENTRYPOINTS: &'static [&'static str] = &[#(#entrypoint_names),*];
            const RPC_METHODS: &'static [&'static str] = &[#(#rpc_names),*];
            const EVENT_HANDLERS: &'static [::shimeji::__private::EventHandlerSpec] = &[#(#event_specs),*];
            const TIMERS: &'static [::shimeji::__private::TimerSpec] = &[#(#timer_specs),*];
            const WEBSOCKET_RPC: bool = #websocket;
            #http_items

            fn rpc_entrypoint(__method: &str) -> ::core::option::Option<::shimeji::__private::EntrypointId> {
                match __method {
                    #(#rpc_names => ::core::option::Option::Some(::shimeji::__private::EntrypointId::new(#rpc_ids)),)*
                    _ => ::core::option::Option::None,
                }
            }

            fn declared_errors(__entrypoint: &str) -> &'static [&'static str] {
                match __entrypoint {
                    #(#declared_error_arms)*
                    _ => &[],
                }
            }

            fn describe() -> ::shimeji::ServiceDescription {
                ::shimeji::ServiceDescription {
                    name: ::std::string::String::from(#service_name),
                    rpc: ::std::vec![#(#rpc_descriptions),*],
                    event_handlers: ::std::vec![#(#event_descriptions),*],
                    events: ::std::vec![#(::std::string::String::from(#declared_events)),*],
                    timers: ::std::vec![#(#timer_descriptions),*],
                }
            }

            #[allow(unused_variables)]
            fn dispatch_rpc(
                &self,
                __id: ::shimeji::__private::EntrypointId,
                __payload: ::shimeji::__private::Payload,
            ) -> impl ::core::future::Future<Output = ::core::result::Result<::shimeji::__private::Payload, ::shimeji::RemoteError>> + ::core::marker::Send + '_ {
                async move {
                    match __id.index() {
                        #(#rpc_arms)*
                        _ => ::core::result::Result::Err(::shimeji::RemoteError::method_not_found(<Self as ::shimeji::Service>::entrypoint_name(__id))),
                    }
                }
            }

            #[allow(unused_variables)]
            fn dispatch_event(
                &self,
                __id: ::shimeji::__private::EntrypointId,
                __payload: ::shimeji::__private::serde_json::Value,
            ) -> impl ::core::future::Future<Output = ::core::result::Result<(), ::shimeji::RemoteError>> + ::core::marker::Send + '_ {
                async move {
                    match __id.index() {
                        #(#event_arms)*
                        _ => ::core::result::Result::Err(::shimeji::RemoteError::method_not_found(<Self as ::shimeji::Service>::entrypoint_name(__id))),
                    }
                }
            }

            #[allow(unused_variables)]
            fn dispatch_timer(
                &self,
                __id: ::shimeji::__private::EntrypointId,
            ) -> impl ::core::future::Future<Output = ::core::result::Result<(), ::shimeji::RemoteError>> + ::core::marker::Send + '_ {
                async move {
                    match __id.index() {
                        #(#timer_arms)*
                        _ => ::core::result::Result::Err(::shimeji::RemoteError::method_not_found(<Self as ::shimeji::Service>::entrypoint_name(__id))),
                    }
                }
            }

            fn dependencies(&self) -> ::std::vec::Vec<&dyn ::shimeji::Dependency> {
                #[allow(unused_imports)]
                use ::shimeji::__private::probe::{HasDependencies, NoDependencies, Probe};
                (&&Probe(self)).list()
            }
        }

        #[doc = #client_doc]
        #[derive(Clone, Default, Debug)]
        #[allow(dead_code)]
        pub struct #client_ident {
            client: ::shimeji::Client,
        }

        #[allow(dead_code, private_interfaces)]
        impl #client_ident {
            /// A client like this one whose calls time out after `timeout`.
            pub fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {
                Self { client: self.client.with_timeout(timeout) }
            }

            #(#client_methods)*
        }

        impl ::core::convert::From<::shimeji::Client> for #client_ident {
            fn from(client: ::shimeji::Client) -> Self {
                Self { client }
            }
        }

        impl ::shimeji::ServiceClient for #client_ident {
            const SERVICE: &'static str = #service_name;
            fn client(&self) -> &::shimeji::Client {
                &self.client
            }
        }

        impl ::shimeji::Dependency for #client_ident {
            fn setup<'a>(
                &'a self,
                ctx: &'a ::shimeji::dependency::SetupContext,
            ) -> ::shimeji::__private::BoxFuture<'a, ::core::result::Result<(), ::shimeji::dependency::DependencyError>> {
                ::shimeji::Dependency::setup(&self.client, ctx)
            }
        }
    })
}

/// Converts `__error` to a remote error; a type that is not an `Exception`
/// is reported at the error type in the method's signature.
fn to_remote(err: &Type) -> TokenStream {
    quote_spanned!(err.span()=> <#err as ::shimeji::Exception>::to_remote(&__error))
}

fn upper_camel(s: &str) -> String {
    s.split('_')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}
