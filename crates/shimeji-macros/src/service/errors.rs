//! How an entrypoint's error reaches the caller and the metrics: the
//! conversion to a remote error, and the error types each entrypoint
//! declares.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Type;

use super::{Entrypoint, Service};

/// Converts `__error` to a remote error; a type that is not an `Exception`
/// is reported at the error type in the method's signature.
pub(super) fn to_remote(err: &Type) -> TokenStream {
    quote_spanned!(err.span()=> <#err as ::shimeji::Exception>::to_remote(&__error))
}

/// Turns a run's output `__out` into `Result<(), RemoteError>`, for the
/// entrypoints whose value nobody receives (event handlers, timers).
pub(super) fn outcome(ep: &Entrypoint) -> TokenStream {
    match &ep.result {
        Some((_, err)) => {
            let to_remote = to_remote(err);
            quote!(__out.map(|_| ()).map_err(|__error| #to_remote))
        }
        None => quote! {{ let _ = __out; ::core::result::Result::Ok(()) }},
    }
}

/// The `match` arm for an id no entrypoint of the kind has.
pub(super) fn not_found() -> TokenStream {
    quote! {
        _ => ::core::result::Result::Err(::shimeji::RemoteError::method_not_found(<Self as ::shimeji::Service>::entrypoint_name(__id))),
    }
}

/// `Service::declared_errors`: the error types of every entrypoint whose
/// result is a `Result` (an HTTP entrypoint's count as failures when they
/// make a 5xx).
pub(super) fn declared_errors(service: &Service) -> TokenStream {
    let arms = service.entrypoints.iter().filter_map(|ep| {
        let (_, err) = ep.result.as_ref()?;
        let name = ep.name();
        Some(quote_spanned!(err.span()=>
                #name => <#err as ::shimeji::Exception>::declared_types(),))
    });
    quote! {
        fn declared_errors(__entrypoint: &str) -> &'static [&'static str] {
            match __entrypoint {
                #(#arms)*
                _ => &[],
            }
        }
    }
}
