//! `#[event_handler]` entrypoints: `EVENT_HANDLERS` and the dispatch.

use proc_macro2::TokenStream;
use quote::quote;

use super::errors::{not_found, outcome};
use super::parse::{EventArgs, Kind};
use super::{Entrypoint, Service};

/// The service's event handlers, in id order, with their arguments.
pub(super) fn handlers(service: &Service) -> impl Iterator<Item = (&Entrypoint, &EventArgs)> {
    service.entrypoints.iter().filter_map(|ep| match &ep.kind {
        Kind::Event(args) => Some((ep, args)),
        _ => None,
    })
}

/// The `Service` items for events: `EVENT_HANDLERS`, `dispatch_event`.
pub(super) fn items(service: &Service) -> TokenStream {
    let specs = handlers(service).map(|(ep, args)| spec(ep, args));
    let arms = handlers(service).map(|(ep, _)| arm(ep));
    let not_found = not_found();
    quote! {
        const EVENT_HANDLERS: &'static [::shimeji::__private::EventHandlerSpec] = &[#(#specs),*];

        #[allow(unused_variables)]
        fn dispatch_event(
            &self,
            __id: ::shimeji::__private::EntrypointId,
            __payload: ::shimeji::__private::serde_json::Value,
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

/// What the container and the transports need to know of one handler.
fn spec(ep: &Entrypoint, args: &EventArgs) -> TokenStream {
    let EventArgs {
        source,
        event_type,
        handler_type,
        reliable_delivery,
    } = args;
    let id = ep.id();
    let method_name = ep.name();
    quote! {
        ::shimeji::__private::EventHandlerSpec {
            id: #id,
            method: #method_name,
            source: #source,
            event_type: #event_type,
            handler_type: ::shimeji::HandlerType::#handler_type,
            reliable_delivery: #reliable_delivery,
        }
    }
}

/// The dispatch arm of one handler: decode the payload, call.
fn arm(ep: &Entrypoint) -> TokenStream {
    let method = &ep.method;
    let method_name = ep.name();
    let payload_ty = &ep.params[0].ty;
    let done = outcome(ep);
    let id = ep.arm();
    quote! {
        #id => {
            let __event: #payload_ty = ::shimeji::__private::serde_json::from_value(__payload).map_err(|__e| {
                ::shimeji::RemoteError::malformed_request(::std::format!("event payload for `{}`: {}", #method_name, __e))
            })?;
            let __out = self.#method(__event).await;
            #done
        }
    }
}
