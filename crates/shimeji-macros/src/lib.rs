//! Procedural macros for shimeji. Use them through the `shimeji` crate:
//! `#[shimeji::service]`, `#[derive(shimeji::Dependencies)]`,
//! `#[derive(shimeji::Exception)]`.

use proc_macro::TokenStream;

mod dependencies;
mod exception;
mod service;

/// Turns an `impl` block into a service; see the `shimeji` crate.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::expand(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Lists a service struct's dependency fields; see the `shimeji` crate.
#[proc_macro_derive(Dependencies)]
pub fn derive_dependencies(item: TokenStream) -> TokenStream {
    dependencies::expand(item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Implements `shimeji::Exception`; see the `shimeji` crate.
#[proc_macro_derive(Exception, attributes(exception))]
pub fn derive_exception(item: TokenStream) -> TokenStream {
    exception::expand(item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
