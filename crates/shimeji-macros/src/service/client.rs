//! The typed client `{Struct}Client`: one async method per RPC entrypoint,
//! and a `Dependency` impl so a service can hold one as a field.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::rpc::{args_struct, rpcs};
use super::{Entrypoint, Service};

/// The client struct and its impls.
pub(super) fn client(service: &Service) -> TokenStream {
    let service_name = &service.name;
    let client_ident = format_ident!("{}Client", service.self_ident);
    let client_doc = format!(
        "Typed client for the `{}` service: one async method per RPC entrypoint.",
        service_name.value()
    );
    let methods = rpcs(service).map(|ep| method(service, ep));
    quote! {
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

            #(#methods)*
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
    }
}

/// The client method of one RPC entrypoint: same name, parameters and
/// docs; the call goes through a per-method call site.
fn method(service: &Service, ep: &Entrypoint) -> TokenStream {
    let service_name = &service.name;
    let method = &ep.method;
    let method_name = ep.name();
    let args_struct = args_struct(service, method);
    let names: Vec<_> = ep.params.iter().map(|p| &p.name).collect();
    let types = ep.params.iter().map(|p| &p.ty);
    let ok_ty = match &ep.result {
        Some((ok, _)) => ok,
        None => &ep.output,
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
    quote! {
        #(#docs)*
        pub async fn #method(&self, #(#names: #types),*) -> ::core::result::Result<#ok_ty, ::shimeji::CallError> {
            static SITE: ::shimeji::__private::CallSite = #site;
            self.client.call_at(&SITE, #args_struct { #(#names),* }).await
        }
    }
}
