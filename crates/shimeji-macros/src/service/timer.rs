//! `#[timer]` entrypoints: `TIMERS` and the dispatch.

use proc_macro2::TokenStream;
use quote::quote;

use super::errors::{not_found, outcome};
use super::parse::{Kind, TimerArgs};
use super::{Entrypoint, Service};

/// The service's timers, in id order, with their arguments.
pub(super) fn timers(service: &Service) -> impl Iterator<Item = (&Entrypoint, &TimerArgs)> {
    service.entrypoints.iter().filter_map(|ep| match &ep.kind {
        Kind::Timer(args) => Some((ep, args)),
        _ => None,
    })
}

/// The `Service` items for timers: `TIMERS`, `dispatch_timer`.
pub(super) fn items(service: &Service) -> TokenStream {
    let specs = timers(service).map(|(ep, TimerArgs { interval_ms, eager })| {
        let id = ep.id();
        let method_name = ep.name();
        quote! {
            ::shimeji::__private::TimerSpec { id: #id, method: #method_name, interval_ms: #interval_ms, eager: #eager }
        }
    });
    let arms = timers(service).map(|(ep, _)| {
        let method = &ep.method;
        let done = outcome(ep);
        let id = ep.arm();
        quote! {
            #id => {
                let __out = self.#method().await;
                #done
            }
        }
    });
    let not_found = not_found();
    quote! {
        const TIMERS: &'static [::shimeji::__private::TimerSpec] = &[#(#specs),*];

        #[allow(unused_variables)]
        fn dispatch_timer(
            &self,
            __id: ::shimeji::__private::EntrypointId,
        ) -> impl ::core::future::Future<Output = ::core::result::Result<(), ::shimeji::RemoteError>> + ::core::marker::Send + '_ {
            async move {
                match __id.index() {
                    #(#arms)*
                    #not_found
                }
            }
        }
    }
}
