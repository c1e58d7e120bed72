//! `#[service(name = "…")]` on an `impl` block.
//!
//! Generates, for `impl Greeter`:
//! * `impl shimeji::Service for Greeter`: dispatch by entrypoint id, argument
//!   binding from `args`/`kwargs` or the typed fast path, error conversion,
//!   the service description;
//! * `GreeterClient`: a typed client whose async methods mirror the RPC
//!   entrypoints;
//! * one hidden argument struct per RPC method, for the typed fast path.
//!
//! The struct's dependencies come from `#[derive(Dependencies)]`:
//! `Dependencies` is a supertrait of `Service`, so a struct without the
//! derive is an error at the `impl` that says to add it.
//!
//! The work goes parse (`parse`) → check (`check`) → generate: one
//! generator per entrypoint kind (`rpc`, `event`, `timer`, `http`), each
//! writing its part of the `Service` impl, plus the typed client (`client`),
//! the description (`describe`) and the error plumbing (`errors`). A new
//! kind of entrypoint is a `Kind` variant and its attribute in `parse`, and
//! a generator here.

mod check;
mod client;
mod describe;
mod errors;
mod event;
mod http;
mod parse;
mod rpc;
mod timer;

use proc_macro2::{Literal, TokenStream};
use quote::quote;
use syn::{Attribute, Ident, ImplItem, LitStr, Type};

use parse::Kind;

/// A service, parsed and checked: what the generators read.
struct Service {
    /// `name = "…"`.
    name: LitStr,
    /// `events = […]`.
    events: Vec<LitStr>,
    /// `websocket`.
    websocket: bool,
    /// The type the `impl` block is for.
    self_ty: Type,
    /// That type's name.
    self_ident: Ident,
    /// The entrypoints, in id order: RPC methods, event handlers, timers,
    /// HTTP routes, each kind in source order.
    entrypoints: Vec<Entrypoint>,
}

/// One entrypoint method.
struct Entrypoint {
    /// Its position in the service's entrypoint order.
    id: u16,
    kind: Kind,
    method: Ident,
    params: Vec<Param>,
    /// The method's output type (`()` when none).
    output: Type,
    /// `Some((ok, err))` when the output is written as a `Result`.
    result: Option<(Type, Type)>,
    docs: Vec<Attribute>,
}

/// One parameter of an entrypoint method (after `&self`).
struct Param {
    name: Ident,
    ty: Type,
}

impl Entrypoint {
    /// The method's name.
    fn name(&self) -> String {
        self.method.to_string()
    }

    /// The id as a `match` pattern on `EntrypointId::index()`.
    fn arm(&self) -> Literal {
        Literal::usize_unsuffixed(usize::from(self.id))
    }

    /// The id as an `EntrypointId` expression.
    fn id(&self) -> TokenStream {
        let id = Literal::u16_suffixed(self.id);
        quote!(::shimeji::__private::EntrypointId::new(#id))
    }
}

pub fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = parse::service_args(attr)?;
    let mut block = parse::impl_block(item)?;
    let self_ident = check::impl_block(&block)?;
    let mut entrypoints = Vec::new();
    for item in &mut block.items {
        if let ImplItem::Fn(method) = item {
            if let Some(kind) = parse::entrypoint_kind(method)? {
                entrypoints.push(check::entrypoint(kind, method)?);
            }
        }
    }
    check::entrypoint_count(entrypoints.len())?;
    entrypoints.sort_by_key(|ep| ep.kind.rank());
    for (id, ep) in (0u16..).zip(&mut entrypoints) {
        ep.id = id;
    }
    let service = Service {
        name: args.name,
        events: args.events,
        websocket: args.websocket,
        self_ty: (*block.self_ty).clone(),
        self_ident,
        entrypoints,
    };

    let self_ty = &service.self_ty;
    let service_name = &service.name;
    let entrypoint_names = service.entrypoints.iter().map(Entrypoint::name);
    let websocket = service.websocket;
    let arg_structs = rpc::arg_structs(&service);
    let rpc = rpc::items(&service);
    let event = event::items(&service);
    let timer = timer::items(&service);
    let http = http::items(&service);
    let http_service = http::http_service(&service);
    let declared_errors = errors::declared_errors(&service);
    let describe = describe::describe(&service);
    let client = client::client(&service);
    Ok(quote! {
        #block

        #arg_structs

        #http_service

        impl ::shimeji::Service for #self_ty {
            const NAME: &'static str = #service_name;
            const ENTRYPOINTS: &'static [&'static str] = &[#(#entrypoint_names),*];
            const WEBSOCKET_RPC: bool = #websocket;
            const VERSION: &'static str = match ::core::option_env!("CARGO_PKG_VERSION") {
                ::core::option::Option::Some(version) => version,
                ::core::option::Option::None => "",
            };
            #rpc
            #event
            #timer
            #http
            #declared_errors
            #describe
        }

        #client
    })
}
