//! The rules a service and its entrypoint methods follow, each with the
//! diagnostic that says how to fix a break.

use proc_macro2::Span;
use quote::format_ident;
use syn::{
    FnArg, GenericArgument, Ident, ImplItemFn, ItemImpl, Pat, PathArguments, ReturnType, Type,
};

use super::parse::Kind;
use super::{Entrypoint, Param};

/// Checks the `impl` block itself: inherent, not generic, on a named
/// struct. Returns the struct's name.
pub(super) fn impl_block(block: &ItemImpl) -> syn::Result<Ident> {
    if let Some((_, path, _)) = &block.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "`#[service]` goes on an inherent `impl` block, not a trait impl",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &block.generics,
            "a service cannot be generic",
        ));
    }
    let Type::Path(self_path) = &*block.self_ty else {
        return Err(syn::Error::new_spanned(
            &block.self_ty,
            "`#[service]` needs a named struct",
        ));
    };
    self_path
        .path
        .segments
        .last()
        .map(|s| s.ident.clone())
        .ok_or_else(|| syn::Error::new_spanned(&block.self_ty, "`#[service]` needs a named struct"))
}

/// An entrypoint id is a `u16`.
pub(super) fn entrypoint_count(count: usize) -> syn::Result<()> {
    if count > usize::from(u16::MAX) {
        return Err(syn::Error::new(
            Span::call_site(),
            "a service has at most 65535 entrypoints",
        ));
    }
    Ok(())
}

/// Checks the signature of an entrypoint method of kind `kind` and reads
/// its parameters and result. The entrypoint's id is set later, once all
/// are known.
pub(super) fn entrypoint(kind: Kind, method: &ImplItemFn) -> syn::Result<Entrypoint> {
    let what = kind.attribute();
    let sig = &method.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            format!("{what} methods must be `async fn`"),
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            format!("{what} methods cannot be generic: their arguments cross the wire"),
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        Some(other) => {
            return Err(syn::Error::new_spanned(
                other,
                format!("{what} methods take `&self`: many workers run at once"),
            ))
        }
        None => {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                format!("{what} methods take `&self`"),
            ))
        }
    }
    let mut params = Vec::new();
    for input in inputs {
        let FnArg::Typed(pat_type) = input else {
            continue;
        };
        if matches!(kind, Kind::Http(_)) {
            // HTTP parameters are axum extractors: any pattern will do.
            params.push(Param {
                name: format_ident!("__p{}", params.len()),
                ty: (*pat_type.ty).clone(),
            });
            continue;
        }
        let Pat::Ident(pat) = &*pat_type.pat else {
            return Err(syn::Error::new_spanned(
                &pat_type.pat,
                "entrypoint arguments must be plain names (`name: Type`): the name is the keyword argument",
            ));
        };
        if has_reference(&pat_type.ty) {
            return Err(syn::Error::new_spanned(
                &pat_type.ty,
                "entrypoint arguments must be owned types (`String`, not `&str`): they may cross the wire",
            ));
        }
        params.push(Param {
            name: pat.ident.clone(),
            ty: (*pat_type.ty).clone(),
        });
    }
    if matches!(kind, Kind::Timer(_)) && !params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            "`#[timer]` methods take `&self` only",
        ));
    }
    if matches!(kind, Kind::Event(_)) && params.len() > 1 {
        return Err(syn::Error::new_spanned(
            &params[1].name,
            "`#[event_handler]` methods take `&self` and one argument, the event payload: this one is extra",
        ));
    }
    if matches!(kind, Kind::Event(_)) && params.len() != 1 {
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            "`#[event_handler]` methods take `&self` and one argument: the event payload",
        ));
    }
    let output: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    if has_reference(&output) && !matches!(kind, Kind::Http(_)) {
        return Err(syn::Error::new_spanned(
            &output,
            "entrypoints must return owned types: the result may cross the wire",
        ));
    }
    let result = result_types(&output);
    let docs = method
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    Ok(Entrypoint {
        id: 0,
        kind,
        method: sig.ident.clone(),
        params,
        output,
        result,
        docs,
    })
}

/// `Result<T, E>` → `(T, E)`.
fn result_types(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    Some((types.next()?, types.next()?))
}

/// Whether `ty` borrows: such a value cannot cross the wire.
fn has_reference(ty: &Type) -> bool {
    match ty {
        Type::Reference(_) => true,
        Type::Path(p) => p.path.segments.iter().any(|s| match &s.arguments {
            PathArguments::AngleBracketed(a) => a.args.iter().any(|g| match g {
                GenericArgument::Type(t) => has_reference(t),
                GenericArgument::Lifetime(_) => true,
                _ => false,
            }),
            _ => false,
        }),
        Type::Tuple(t) => t.elems.iter().any(has_reference),
        Type::Array(a) => has_reference(&a.elem),
        Type::Slice(_) | Type::TraitObject(_) | Type::ImplTrait(_) => true,
        _ => false,
    }
}
