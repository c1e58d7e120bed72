//! `Service::describe`: the machine-readable `ServiceDescription`, with
//! types and doc comments as written in the source.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{Attribute, Expr, ExprLit, Lit, Meta, Type};

use super::event::handlers;
use super::parse::{EventArgs, TimerArgs};
use super::rpc::rpcs;
use super::timer::timers;
use super::{Entrypoint, Service};

/// The `describe` item of the `Service` impl.
pub(super) fn describe(service: &Service) -> TokenStream {
    let service_name = &service.name;
    let rpc = rpcs(service).map(rpc);
    let event_handlers = handlers(service).map(|(ep, args)| event_handler(ep, args));
    let timers = timers(service).map(|(ep, args)| timer(ep, args));
    let events = &service.events;
    quote! {
        fn describe() -> ::shimeji::ServiceDescription {
            ::shimeji::ServiceDescription {
                name: ::std::string::String::from(#service_name),
                rpc: ::std::vec![#(#rpc),*],
                event_handlers: ::std::vec![#(#event_handlers),*],
                events: ::std::vec![#(::std::string::String::from(#events)),*],
                timers: ::std::vec![#(#timers),*],
            }
        }
    }
}

fn rpc(ep: &Entrypoint) -> TokenStream {
    let method_name = ep.name();
    let arg_names = ep.params.iter().map(|p| p.name.to_string());
    let arg_types = ep.params.iter().map(|p| type_string(&p.ty));
    let returns = type_string(match &ep.result {
        Some((ok, _)) => ok,
        None => &ep.output,
    });
    let error = match &ep.result {
        Some((_, err)) => {
            let e = type_string(err);
            quote!(::core::option::Option::Some(::std::string::String::from(#e)))
        }
        None => quote!(::core::option::Option::None),
    };
    let doc = doc_string(&ep.docs);
    quote! {
        ::shimeji::__private::RpcDescription {
            name: ::std::string::String::from(#method_name),
            args: ::std::vec![#(::shimeji::__private::ArgDescription {
                name: ::std::string::String::from(#arg_names),
                ty: ::std::string::String::from(#arg_types),
            }),*],
            returns: ::std::string::String::from(#returns),
            error: #error,
            doc: ::std::string::String::from(#doc),
        }
    }
}

fn event_handler(ep: &Entrypoint, args: &EventArgs) -> TokenStream {
    let EventArgs {
        source,
        event_type,
        handler_type,
        reliable_delivery,
    } = args;
    let method_name = ep.name();
    let payload = type_string(&ep.params[0].ty);
    quote! {
        ::shimeji::__private::EventHandlerDescription {
            name: ::std::string::String::from(#method_name),
            source: ::std::string::String::from(#source),
            event_type: ::std::string::String::from(#event_type),
            handler_type: ::shimeji::HandlerType::#handler_type,
            reliable_delivery: #reliable_delivery,
            payload: ::std::string::String::from(#payload),
        }
    }
}

fn timer(ep: &Entrypoint, args: &TimerArgs) -> TokenStream {
    let TimerArgs { interval_ms, eager } = args;
    let method_name = ep.name();
    quote! {
        ::shimeji::__private::TimerDescription {
            name: ::std::string::String::from(#method_name),
            interval_ms: #interval_ms,
            eager: #eager,
        }
    }
}

/// A type as written, with the spaces token printing adds taken out.
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

/// The doc comment's lines, trimmed.
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
