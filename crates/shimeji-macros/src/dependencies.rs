//! `#[derive(Dependencies)]`: every field whose type implements
//! `Dependency` is a dependency; other fields are left alone.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Index};

pub fn expand(item: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(item)?;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "`#[derive(Dependencies)]` works on structs: a service is a struct whose fields are its dependencies",
        ));
    };
    let fields = data.fields.iter().enumerate().map(|(i, field)| {
        let access = match &field.ident {
            Some(ident) => quote!(#ident),
            None => {
                let index = Index::from(i);
                quote!(#index)
            }
        };
        quote! {
            if let ::core::option::Option::Some(dep) = (&&Probe(&self.#access)).as_dependency() {
                deps.push(dep);
            }
        }
    });
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::shimeji::Dependencies for #ident #ty_generics #where_clause {
            fn dependencies(&self) -> ::std::vec::Vec<&dyn ::shimeji::Dependency> {
                #[allow(unused_imports)]
                use ::shimeji::__private::probe::{IsDependency, NotDependency, Probe};
                #[allow(unused_mut)]
                let mut deps: ::std::vec::Vec<&dyn ::shimeji::Dependency> = ::std::vec::Vec::new();
                #(#fields)*
                deps
            }
        }
    })
}
