//! `#[rpc]` entrypoints: `RPC_METHODS`, the method-name lookup, the
//! dispatch, and one hidden argument struct per method (the typed fast
//! path, shared with the typed client).

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use super::errors::{not_found, to_remote};
use super::parse::Kind;
use super::{Entrypoint, Service};

/// The service's RPC entrypoints, in id order.
pub(super) fn rpcs(service: &Service) -> impl Iterator<Item = &Entrypoint> {
    service
        .entrypoints
        .iter()
        .filter(|ep| matches!(ep.kind, Kind::Rpc))
}

/// The name of the argument struct of RPC method `method`.
pub(super) fn args_struct(service: &Service, method: &Ident) -> Ident {
    format_ident!(
        "__{}{}Args",
        service.self_ident,
        upper_camel(&method.to_string())
    )
}

/// One argument struct per RPC method: what the typed client sends and,
/// in process, what the dispatch takes without a JSON round trip.
pub(super) fn arg_structs(service: &Service) -> TokenStream {
    rpcs(service)
        .map(|ep| {
            let args_struct = args_struct(service, &ep.method);
            let names = ep.params.iter().map(|p| &p.name);
            let types = ep.params.iter().map(|p| &p.ty);
            quote! {
                #[doc(hidden)]
                #[allow(non_camel_case_types, dead_code, private_interfaces)]
                #[derive(::shimeji::__private::serde::Serialize)]
                #[serde(crate = "::shimeji::__private::serde")]
                pub struct #args_struct { #(pub #names: #types,)* }
            }
        })
        .collect()
}

/// The `Service` items for RPC: `RPC_METHODS`, `rpc_entrypoint`,
/// `dispatch_rpc`.
pub(super) fn items(service: &Service) -> TokenStream {
    let names: Vec<String> = rpcs(service).map(Entrypoint::name).collect();
    let ids = rpcs(service).map(Entrypoint::id);
    let arms = rpcs(service).map(|ep| arm(service, ep));
    let local_checks = rpcs(service).map(|ep| local_check(service, ep));
    let local_arms = rpcs(service).map(|ep| local_arm(service, ep));
    let not_found = not_found();
    quote! {
        const RPC_METHODS: &'static [&'static str] = &[#(#names),*];

        fn rpc_entrypoint(__method: &str) -> ::core::option::Option<::shimeji::__private::EntrypointId> {
            match __method {
                #(#names => ::core::option::Option::Some(#ids),)*
                _ => ::core::option::Option::None,
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
                    #(#arms)*
                    #not_found
                }
            }
        }

        fn accepts_local(
            __id: ::shimeji::__private::EntrypointId,
            __call: &dyn ::core::any::Any,
        ) -> bool {
            match __id.index() {
                #(#local_checks)*
                _ => false,
            }
        }

        #[allow(unused_variables)]
        fn dispatch_local<'__a>(
            &'__a self,
            __id: ::shimeji::__private::EntrypointId,
            __call: &'__a mut (dyn ::core::any::Any + ::core::marker::Send),
        ) -> impl ::core::future::Future<Output = ::core::result::Result<(), ::shimeji::RemoteError>> + ::core::marker::Send + '__a {
            async move {
                match __id.index() {
                    #(#local_arms)*
                    #not_found
                }
            }
        }
    }
}

/// The in-process hand-over type of `ep`: its argument struct in, the
/// value its client returns out.
fn local_call(service: &Service, ep: &Entrypoint) -> TokenStream {
    let args_struct = args_struct(service, &ep.method);
    let ok_ty = match &ep.result {
        Some((ok, _)) => ok,
        None => &ep.output,
    };
    quote!(::shimeji::__private::LocalCall<#args_struct, #ok_ty>)
}

/// `accepts_local`'s arm for `ep`.
fn local_check(service: &Service, ep: &Entrypoint) -> TokenStream {
    let id = ep.arm();
    let call = local_call(service, ep);
    quote!(#id => __call.is::<#call>(),)
}

/// `dispatch_local`'s arm for `ep`: the arguments out of the hand-over,
/// the method called, its value (or its error, as on the wire) back.
fn local_arm(service: &Service, ep: &Entrypoint) -> TokenStream {
    let method = &ep.method;
    let names: Vec<&Ident> = ep.params.iter().map(|p| &p.name).collect();
    let call = local_call(service, ep);
    let id = ep.arm();
    let finish = match &ep.result {
        Some((_, err)) => {
            let to_remote = to_remote(err);
            quote! {
                match __out {
                    ::core::result::Result::Ok(__value) => {
                        __call.set_reply(__value);
                        ::core::result::Result::Ok(())
                    }
                    ::core::result::Result::Err(__error) => ::core::result::Result::Err(#to_remote),
                }
            }
        }
        None => quote! {
            __call.set_reply(__out);
            ::core::result::Result::Ok(())
        },
    };
    quote! {
        #id => {
            let ::core::option::Option::Some(__call) = __call.downcast_mut::<#call>() else {
                return ::core::result::Result::Err(::shimeji::RemoteError::malformed_request("in-process arguments of another type"));
            };
            let ::core::option::Option::Some(__args) = __call.take_args() else {
                return ::core::result::Result::Err(::shimeji::RemoteError::malformed_request("in-process arguments taken twice"));
            };
            let __out = self.#method(#(__args.#names),*).await;
            #finish
        }
    }
}

/// The dispatch arm of one RPC method: bind the arguments (typed or from
/// `args`/`kwargs`), call, reply.
fn arm(service: &Service, ep: &Entrypoint) -> TokenStream {
    let method = &ep.method;
    let method_name = ep.name();
    let args_struct = args_struct(service, method);
    let names: Vec<&Ident> = ep.params.iter().map(|p| &p.name).collect();
    let name_strings = names.iter().map(|n| n.to_string());
    let indices = 0..names.len();
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
    let id = ep.arm();
    quote! {
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
    }
}

/// `snake_case` → `SnakeCase`.
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
