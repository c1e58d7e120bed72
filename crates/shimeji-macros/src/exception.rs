//! `#[derive(Exception)]`: a Rust error that crosses the wire with its type.
//!
//! `exc_type` is the struct's name, or for an enum the variant's name;
//! `#[exception(name = "…")]` on the type or a variant overrides it.
//! `exc_path` is `{module}.{exc_type}`, the module being the Rust module path
//! with dots, or `#[exception(module = "…")]` on the type.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Attribute, Data, DeriveInput, LitStr};

#[derive(Default)]
struct Options {
    name: Option<LitStr>,
    module: Option<LitStr>,
    status: Option<syn::LitInt>,
}

fn options(attrs: &[Attribute], allow_module: bool) -> syn::Result<Options> {
    let mut options = Options::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("exception")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                options.name = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("module") && allow_module {
                options.module = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("status") {
                let status: syn::LitInt = meta.value()?.parse()?;
                match status.base10_parse::<u16>() {
                    Ok(100..=599) => {
                        options.status = Some(status);
                        Ok(())
                    }
                    _ => Err(syn::Error::new_spanned(
                        status,
                        "an HTTP status is a number from 100 to 599",
                    )),
                }
            } else if allow_module {
                Err(meta.error("expected `name = \"…\"`, `module = \"…\"` or `status = 404`"))
            } else {
                Err(meta.error("expected `name = \"…\"` or `status = 404`"))
            }
        })?;
    }
    Ok(options)
}

pub fn expand(item: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(item)?;
    let ident = &input.ident;
    let type_options = options(&input.attrs, true)?;
    let default_status = type_options
        .status
        .as_ref()
        .map(|s| quote!(#s))
        .unwrap_or_else(|| quote!(400));
    // One pass over the variants: each one's name and status.
    let mut declared = Vec::new();
    let (exc_type, status) = match &input.data {
        Data::Struct(_) => {
            let name = type_options
                .name
                .clone()
                .unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
            declared.push(name.clone());
            (quote!(#name), default_status)
        }
        Data::Enum(data) => {
            let mut names = Vec::new();
            let mut statuses = Vec::new();
            for v in &data.variants {
                let variant = &v.ident;
                let options = options(&v.attrs, false)?;
                let name = options
                    .name
                    .unwrap_or_else(|| LitStr::new(&variant.to_string(), variant.span()));
                if !declared.iter().any(|d: &LitStr| d.value() == name.value()) {
                    declared.push(name.clone());
                }
                let status = options
                    .status
                    .map(|s| quote!(#s))
                    .unwrap_or_else(|| default_status.clone());
                names.push(quote!(Self::#variant { .. } => #name,));
                statuses.push(quote!(Self::#variant { .. } => #status,));
            }
            if names.is_empty() {
                return Err(syn::Error::new_spanned(
                    ident,
                    "`#[derive(Exception)]` needs at least one variant",
                ));
            }
            (
                quote!(match self { #(#names)* }),
                quote!(match self { #(#statuses)* }),
            )
        }
        Data::Union(_) => {
            return Err(syn::Error::new_spanned(
                ident,
                "`#[derive(Exception)]` works on structs and enums",
            ))
        }
    };
    let module = match &type_options.module {
        Some(m) => quote!(::std::string::String::from(#m)),
        None => quote!(::core::module_path!().replace("::", ".")),
    };
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::shimeji::Exception for #ident #ty_generics #where_clause {
            fn exc_type(&self) -> ::std::string::String {
                ::std::string::String::from(#exc_type)
            }
            fn exc_path(&self) -> ::std::string::String {
                ::std::format!("{}.{}", #module, #exc_type)
            }
            fn message(&self) -> ::std::string::String {
                ::std::string::ToString::to_string(self)
            }
            fn http_status(&self) -> u16 {
                #status
            }
            fn declared_types() -> &'static [&'static str] {
                &[#(#declared),*]
            }
        }
    })
}
