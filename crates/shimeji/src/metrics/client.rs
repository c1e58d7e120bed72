//! The series of calls clients of this process make: one [`CallMetrics`]
//! per `(service, method)`, and the rules that keep their labels bounded.

use super::errors::{Errors, OTHER};
use super::histogram::Histogram;
use super::{global, lock, read, write};
use std::borrow::Cow;

/// The handles of what clients call: one per `(service, method)`.
pub(crate) struct CallMetrics {
    pub(super) service: Cow<'static, str>,
    pub(super) method: Cow<'static, str>,
    pub(super) duration: Histogram,
    pub(super) errors: Errors,
}

impl CallMetrics {
    /// Records a call: `nanos` as the client timed it, or `None` when the
    /// entrypoint that served it inline recorded the time for both (see
    /// [`handover`](super::handover)); `error` is the outcome's error
    /// type, if any.
    pub(crate) fn record(&self, nanos: Option<u64>, error: Option<&str>) {
        if let Some(nanos) = nanos {
            self.duration.observe(nanos);
        }
        if let Some(exc_type) = error {
            self.errors.add(exc_type);
        }
    }
}

/// The handles of calls to `service.method`, found in the registry's map
/// (generated clients keep theirs per call site and look once). `errors`
/// are the error types the method declares, when the caller knows them
/// (a generated client does).
///
/// Names become label values only when they are declared: written in the
/// code (borrowed `'static` names, as generated clients and
/// [`Client::call_typed`](crate::Client::call_typed) give), or naming an
/// entrypoint of a service running in this process. Any other call (names
/// made at run time, from a WebSocket frame say) counts under method
/// `other` of its service, or of service `other` when that is not known
/// either: a peer cannot add series.
#[allow(clippy::ptr_arg)]
pub(crate) fn call(
    service: &Cow<'static, str>,
    method: &Cow<'static, str>,
    errors: &'static [&'static str],
) -> &'static CallMetrics {
    if let Some(found) = find_call(service, method) {
        if !errors.is_empty() {
            found.errors.declare(errors);
        }
        return found;
    }
    let (service, method, errors) = call_labels(service, method, errors);
    if let Some(found) = find_call(&service, &method) {
        return found;
    }
    let mut calls = write(&global().calls);
    let methods = calls.entry(service.clone()).or_default();
    methods.entry(method.clone()).or_insert_with(|| {
        // Lives as long as the process, like the registry that lists it.
        Box::leak(Box::new(CallMetrics {
            service,
            method,
            duration: Histogram::new(),
            errors: Errors::new(errors),
        }))
    })
}

fn find_call(service: &str, method: &str) -> Option<&'static CallMetrics> {
    read(&global().calls)
        .get(service)
        .and_then(|methods| methods.get(method))
        .copied()
}

/// The labels (and declared errors) of a call not seen before; see [`call`].
/// Takes the `Cow`s to tell names written in the code (borrowed) from
/// names made at run time.
#[allow(clippy::ptr_arg)]
fn call_labels(
    service: &Cow<'static, str>,
    method: &Cow<'static, str>,
    errors: &'static [&'static str],
) -> (
    Cow<'static, str>,
    Cow<'static, str>,
    &'static [&'static str],
) {
    let entrypoints = lock(&global().entrypoints);
    let local = entrypoints
        .iter()
        .find(|m| m.service == service && m.entrypoint == method);
    if let (Cow::Borrowed(_), Cow::Borrowed(_)) = (service, method) {
        let errors = match local {
            Some(m) if errors.is_empty() => m.declared,
            _ => errors,
        };
        return (service.clone(), method.clone(), errors);
    }
    if let Some(m) = local {
        return (
            Cow::Borrowed(m.service),
            Cow::Borrowed(m.entrypoint),
            m.declared,
        );
    }
    let known = entrypoints
        .iter()
        .map(|m| m.service)
        .find(|s| *s == service)
        .or_else(
            || match read(&global().calls).get_key_value(service.as_ref()) {
                Some((Cow::Borrowed(s), _)) => Some(*s),
                _ => None,
            },
        );
    (
        Cow::Borrowed(known.unwrap_or(OTHER)),
        Cow::Borrowed(OTHER),
        &[],
    )
}
