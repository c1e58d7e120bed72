//! Error counts by type, and the outcome labels they are counted under:
//! shimeji's own error types and those an entrypoint declares get a label
//! of their own, anything else folds into [`OTHER`].

use super::lock;
use std::sync::Mutex;

/// The outcome every error type not declared folds into.
pub(crate) const OTHER: &str = "other";

/// The error types shimeji itself raises: always outcomes of their own.
const BUILT_IN_ERRORS: &[&str] = &[
    "MethodNotFound",
    "IncorrectSignature",
    "MalformedRequest",
    "UnserializableValueError",
    "WorkerPanic",
    "ServiceStopping",
    "WorkerKilled",
    "UnknownService",
    "Timeout",
    "Encode",
    "Decode",
    "Transport",
    "DispatchError",
    "ConfigError",
    HTTP_SERVER_ERROR,
    CANCELLED,
];

/// The outcome of an HTTP entrypoint that answered a 5xx of its own
/// making (not an error type it returned).
pub(crate) const HTTP_SERVER_ERROR: &str = "HttpServerError";

/// The outcome of a run dropped before it finished (its caller went away:
/// an in-process call that timed out, say).
pub(super) const CANCELLED: &str = "Cancelled";

/// Error counts by type; touched only when a run fails. Only declared
/// types get a count of their own: shimeji's [`BUILT_IN_ERRORS`] and those
/// the entrypoint's error type declares (see
/// [`Exception::declared_types`](crate::Exception::declared_types)). Any
/// other type (a remote error passed on, a `RemoteError` made up at run
/// time) counts as [`OTHER`], so a peer cannot add label values.
pub(super) struct Errors(Mutex<ErrorCounts>);

struct ErrorCounts {
    declared: &'static [&'static str],
    counts: Vec<(&'static str, u64)>,
}

impl Errors {
    pub(super) fn new(declared: &'static [&'static str]) -> Self {
        Errors(Mutex::new(ErrorCounts {
            declared,
            counts: Vec::new(),
        }))
    }

    /// The outcome label of error type `exc_type`.
    fn label(declared: &'static [&'static str], exc_type: &str) -> &'static str {
        BUILT_IN_ERRORS
            .iter()
            .chain(declared)
            .find(|t| **t == exc_type)
            .copied()
            .unwrap_or(OTHER)
    }

    pub(super) fn add(&self, exc_type: &str) {
        let mut errors = lock(&self.0);
        let label = Self::label(errors.declared, exc_type);
        match errors.counts.iter_mut().find(|(t, _)| *t == label) {
            Some((_, n)) => *n += 1,
            None => errors.counts.push((label, 1)),
        }
    }

    /// Declares the error types of a caller that knows them, when the
    /// series was made by one that did not.
    pub(super) fn declare(&self, declared: &'static [&'static str]) {
        let mut errors = lock(&self.0);
        if errors.declared.is_empty() {
            errors.declared = declared;
        }
    }

    pub(super) fn snapshot(&self) -> Vec<(&'static str, u64)> {
        lock(&self.0).counts.clone()
    }
}
