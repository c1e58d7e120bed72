//! `#[http]` entrypoints: the `HttpService` impl (`HTTP_ROUTES` and the
//! dispatch, which runs the parameters' extractors and turns the result
//! into a response) and the `Service::plug_in` hook that serves them.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Ident;

use super::parse::{HttpArgs, Kind};
use super::{Entrypoint, Service};

/// The service's HTTP routes, in id order, with their arguments.
pub(super) fn routes(service: &Service) -> impl Iterator<Item = (&Entrypoint, &HttpArgs)> {
    service.entrypoints.iter().filter_map(|ep| match &ep.kind {
        Kind::Http(args) => Some((ep, args)),
        _ => None,
    })
}

/// The `Service` item for HTTP: the `plug_in` hook that hands the routes
/// to the runner's web server; nothing when the service has no route.
pub(super) fn items(service: &Service) -> TokenStream {
    if routes(service).next().is_none() {
        return quote!();
    }
    quote! {
        ::shimeji::__private::http_plug_in!();
    }
}

/// The `HttpService` impl: `HTTP_ROUTES` and `dispatch_http`; nothing when
/// the service has no route.
pub(super) fn http_service(service: &Service) -> TokenStream {
    let Some((_, first)) = routes(service).next() else {
        return quote!();
    };
    let self_ty = &service.self_ty;
    let specs = routes(service).map(|(ep, HttpArgs { verb, path, .. })| {
        let id = ep.id();
        let verb = verb.to_string();
        let method_name = ep.name();
        quote! {
            ::shimeji::http::HttpRouteSpec { id: #id, method: #verb, path: #path, name: #method_name }
        }
    });
    let arms = routes(service).map(|(ep, _)| arm(ep));
    let items = quote! {
        impl ::shimeji::http::HttpService for #self_ty {
            const HTTP_ROUTES: &'static [::shimeji::http::HttpRouteSpec] = &[#(#specs),*];

            fn dispatch_http(
                &self,
                __id: ::shimeji::__private::EntrypointId,
                __req: ::shimeji::http::Request,
            ) -> impl ::core::future::Future<Output = ::shimeji::http::Response> + ::core::marker::Send + '_ {
                async move {
                    match __id.index() {
                        #(#arms)*
                        _ => ::shimeji::http::not_found(<Self as ::shimeji::Service>::entrypoint_name(__id)),
                    }
                }
            }
        }
    };
    // One clear error at the first `#[http]` when the `http` feature is
    // off, instead of errors about traits that do not exist.
    quote_spanned! {first.span=>
        ::shimeji::__private::require_http_feature! { #items }
    }
}

/// The dispatch arm of one route: every parameter but the last extracts
/// from the request's parts, the last may take the body; call; respond.
fn arm(ep: &Entrypoint) -> TokenStream {
    let method = &ep.method;
    let n = ep.params.len();
    let names: Vec<&Ident> = ep.params.iter().map(|p| &p.name).collect();
    let extract = ep.params.iter().enumerate().map(|(i, p)| {
        let (name, ty) = (&p.name, &p.ty);
        if i + 1 < n {
            quote_spanned! {ty.span()=>
                let #name: #ty = match <#ty as ::shimeji::http::FromRequestParts<()>>::from_request_parts(&mut __parts, &()).await {
                    ::core::result::Result::Ok(v) => v,
                    ::core::result::Result::Err(r) => return ::shimeji::http::IntoResponse::into_response(r),
                };
            }
        } else {
            quote_spanned! {ty.span()=>
                let __req = ::shimeji::http::Request::from_parts(__parts, __body);
                let #name: #ty = match <#ty as ::shimeji::http::FromRequest<(), _>>::from_request(__req, &()).await {
                    ::core::result::Result::Ok(v) => v,
                    ::core::result::Result::Err(r) => return ::shimeji::http::IntoResponse::into_response(r),
                };
            }
        }
    });
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
    let id = ep.arm();
    quote! {
        #id => {
            #[allow(unused_mut, unused_variables)]
            let (mut __parts, __body) = __req.into_parts();
            #(#extract)*
            let __out = self.#method(#(#names),*).await;
            #respond
        }
    }
}
