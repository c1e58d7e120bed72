//! Errors that cross the wire, and the errors a caller sees.
//!
//! A service method returns its own error type; shimeji turns it into a
//! [`RemoteError`] carrying Nameko's four fields (`exc_type`, `exc_path`,
//! `exc_args`, `value`). The caller gets a [`CallError`] and can test for a
//! remote type by name with [`CallError::is`].
//!
//! ```
//! use shimeji::{CallError, Exception};
//!
//! #[derive(Debug, thiserror::Error, Exception)]
//! enum GreetError {
//!     #[error("nobody to greet")]
//!     Empty,
//! }
//!
//! let remote = GreetError::Empty.to_remote();
//! assert_eq!(remote.exc_type, "Empty");
//! assert_eq!(remote.value, "nobody to greet");
//! let err = CallError::from_remote(remote);
//! assert!(err.is("Empty"));
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// An error as it travels between services: Nameko's error body.
///
/// `exc_type` is the short name a caller matches on; `exc_path` the full
/// path of the type; `exc_args` its arguments (JSON); `value` its message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteError {
    /// Short type name, e.g. `MethodNotFound` or `NotFound`.
    pub exc_type: String,
    /// Full path of the type, e.g. `nameko.exceptions.MethodNotFound`.
    pub exc_path: String,
    /// The error's arguments; items that are not JSON-safe are strings.
    #[serde(default)]
    pub exc_args: Vec<Value>,
    /// The error's message.
    #[serde(default)]
    pub value: String,
}

impl RemoteError {
    /// A remote error with one string argument, equal to its message.
    pub fn new(
        exc_type: impl Into<String>,
        exc_path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        RemoteError {
            exc_type: exc_type.into(),
            exc_path: exc_path.into(),
            exc_args: vec![Value::String(message.clone())],
            value: message,
        }
    }

    /// Nameko's `MethodNotFound`: the service has no RPC entrypoint of that name.
    pub fn method_not_found(method: &str) -> Self {
        Self::new("MethodNotFound", "nameko.exceptions.MethodNotFound", method)
    }

    /// Nameko's `IncorrectSignature`: missing, extra or mistyped arguments.
    pub fn incorrect_signature(message: impl Into<String>) -> Self {
        Self::new(
            "IncorrectSignature",
            "nameko.exceptions.IncorrectSignature",
            message,
        )
    }

    /// Nameko's `MalformedRequest`: the request could not be understood.
    pub fn malformed_request(message: impl Into<String>) -> Self {
        Self::new(
            "MalformedRequest",
            "nameko.exceptions.MalformedRequest",
            message,
        )
    }

    /// Nameko's `UnserializableValueError`: the result could not be encoded.
    pub fn unserializable(message: impl Into<String>) -> Self {
        Self::new(
            "UnserializableValueError",
            "nameko.exceptions.UnserializableValueError",
            message,
        )
    }

    /// The entrypoint panicked; the service keeps serving.
    pub fn panicked(message: impl Into<String>) -> Self {
        Self::new("WorkerPanic", "shimeji.WorkerPanic", message)
    }

    /// The service instance is stopping and did not take the request.
    pub fn service_stopping(service: &str) -> Self {
        Self::new(
            "ServiceStopping",
            "shimeji.ServiceStopping",
            format!("service `{service}` is stopping"),
        )
    }

    /// The worker was still running when the drain timeout ran out.
    pub fn worker_killed(service: &str) -> Self {
        Self::new(
            "WorkerKilled",
            "shimeji.WorkerKilled",
            format!("service `{service}` stopped before the worker finished"),
        )
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.exc_type, self.value)
    }
}

impl std::error::Error for RemoteError {}

/// What a caller sees when a call does not return a result.
///
/// Nameko's built-in errors get their own variants; any other remote error is
/// [`CallError::Remote`]. [`CallError::is`] tests for a type by name whatever
/// the variant.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No instance of the service is serving.
    #[error("Unknown service `{0}`")]
    UnknownService(String),
    /// The service has no RPC entrypoint of that name.
    #[error("method not found: {}", .0.value)]
    MethodNotFound(RemoteError),
    /// Missing, extra or mistyped arguments.
    #[error("incorrect signature: {}", .0.value)]
    IncorrectSignature(RemoteError),
    /// The service could not understand the request.
    #[error("malformed request: {}", .0.value)]
    MalformedRequest(RemoteError),
    /// The method returned an error, or failed in another way.
    #[error("remote error: {0}")]
    Remote(RemoteError),
    /// No reply came within the call's timeout.
    #[error("no reply from `{service}.{method}` within {timeout:?}")]
    Timeout {
        /// The service called.
        service: String,
        /// The method called.
        method: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The arguments could not be encoded.
    #[error("could not encode the arguments: {0}")]
    Encode(String),
    /// The reply could not be decoded into the expected type.
    #[error("could not decode the reply: {0}")]
    Decode(String),
    /// The transport failed to carry the call.
    #[error("transport error: {0}")]
    Transport(String),
}

impl CallError {
    /// Turns a remote error body into the matching variant.
    pub fn from_remote(error: RemoteError) -> Self {
        match error.exc_type.as_str() {
            "MethodNotFound" => CallError::MethodNotFound(error),
            "IncorrectSignature" => CallError::IncorrectSignature(error),
            "MalformedRequest" => CallError::MalformedRequest(error),
            "UnknownService" => CallError::UnknownService(
                error
                    .exc_args
                    .first()
                    .and_then(Value::as_str)
                    .unwrap_or(&error.value)
                    .to_string(),
            ),
            _ => CallError::Remote(error),
        }
    }

    /// The remote error body, when the error came from the service.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            CallError::MethodNotFound(e)
            | CallError::IncorrectSignature(e)
            | CallError::MalformedRequest(e)
            | CallError::Remote(e) => Some(e),
            _ => None,
        }
    }

    /// The error's type name: the remote `exc_type`, or the variant's name
    /// for errors raised on the caller's side (`UnknownService`, `Timeout`, …).
    pub fn exc_type(&self) -> &str {
        match self {
            CallError::UnknownService(_) => "UnknownService",
            CallError::Timeout { .. } => "Timeout",
            CallError::Encode(_) => "Encode",
            CallError::Decode(_) => "Decode",
            CallError::Transport(_) => "Transport",
            other => other.remote().map(|e| e.exc_type.as_str()).unwrap_or(""),
        }
    }

    /// True when the error's type is `exc_type`.
    ///
    /// ```
    /// # use shimeji::{CallError, RemoteError};
    /// let err = CallError::from_remote(RemoteError::method_not_found("nope"));
    /// assert!(err.is("MethodNotFound"));
    /// ```
    pub fn is(&self, exc_type: &str) -> bool {
        self.exc_type() == exc_type
    }
}

/// A Rust error that can cross the wire as a [`RemoteError`].
///
/// Derive it: `#[derive(Exception)]` on a struct uses the struct's name as
/// `exc_type`; on an enum, each variant's name. `exc_path` is the module path
/// with dots, the message is the error's `Display`. Override the path with
/// `#[exception(path = "my.Error")]` on the type.
///
/// ```
/// use shimeji::Exception;
///
/// #[derive(Debug, thiserror::Error, Exception)]
/// #[error("user {0} not found")]
/// struct NotFound(u64);
///
/// let remote = NotFound(7).to_remote();
/// assert_eq!(remote.exc_type, "NotFound");
/// assert_eq!(remote.value, "user 7 not found");
/// assert!(remote.exc_path.ends_with(".NotFound"));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross the wire as a remote error",
    label = "this error type does not implement `shimeji::Exception`",
    note = "derive it: `#[derive(Debug, thiserror::Error, shimeji::Exception)]`, or return `shimeji::RemoteError`"
)]
pub trait Exception {
    /// The short type name callers match on.
    fn exc_type(&self) -> String;
    /// The full path of the type.
    fn exc_path(&self) -> String;
    /// The error's message (`value` on the wire).
    fn message(&self) -> String;
    /// The error's arguments; by default its message alone.
    fn exc_args(&self) -> Vec<Value> {
        vec![Value::String(self.message())]
    }
    /// The HTTP status an HTTP entrypoint answers with when it returns this
    /// error (default 400; `#[exception(status = 404)]` to choose). A 5xx
    /// status sends no details to the client.
    fn http_status(&self) -> u16 {
        400
    }
    /// Every `exc_type` a value of this type can have. Metrics count an
    /// entrypoint's (or a generated client's) errors under these names;
    /// any other type counts as `other`, so that a peer's error types
    /// cannot add label values. `#[derive(Exception)]` lists them; by
    /// default there are none.
    fn declared_types() -> &'static [&'static str]
    where
        Self: Sized,
    {
        &[]
    }
    /// The wire form of the error.
    fn to_remote(&self) -> RemoteError {
        RemoteError {
            exc_type: self.exc_type(),
            exc_path: self.exc_path(),
            exc_args: self.exc_args(),
            value: self.message(),
        }
    }
}

impl Exception for RemoteError {
    /// A remote error is unexpected unless the method says otherwise: 500.
    fn http_status(&self) -> u16 {
        500
    }
    fn exc_type(&self) -> String {
        self.exc_type.clone()
    }
    fn exc_path(&self) -> String {
        self.exc_path.clone()
    }
    fn message(&self) -> String {
        self.value.clone()
    }
    fn exc_args(&self) -> Vec<Value> {
        self.exc_args.clone()
    }
    fn to_remote(&self) -> RemoteError {
        self.clone()
    }
}

/// A call that failed inside an entrypoint passes on as it came: a remote
/// error keeps its type, a local one (timeout, unknown service) gets a
/// `shimeji.` path.
impl Exception for CallError {
    fn exc_type(&self) -> String {
        CallError::exc_type(self).to_string()
    }
    fn exc_path(&self) -> String {
        match self.remote() {
            Some(e) => e.exc_path.clone(),
            None => format!("shimeji.{}", CallError::exc_type(self)),
        }
    }
    fn message(&self) -> String {
        match self.remote() {
            Some(e) => e.value.clone(),
            None => self.to_string(),
        }
    }
    fn exc_args(&self) -> Vec<Value> {
        match self.remote() {
            Some(e) => e.exc_args.clone(),
            None => vec![Value::String(self.to_string())],
        }
    }
    /// A failed downstream call is the server's problem: 502/503/504, or
    /// 500 for a remote error.
    fn http_status(&self) -> u16 {
        match self {
            CallError::Timeout { .. } => 504,
            CallError::UnknownService(_) => 503,
            CallError::Transport(_) => 502,
            _ => 500,
        }
    }
}

/// Implements [`Exception`] for one of shimeji's own errors, named after its
/// Rust type under the `shimeji.` path. Each module invokes it next to its
/// own error type.
macro_rules! shimeji_exception {
    ($($ty:ty => $name:literal),* $(,)?) => {$(
        impl $crate::error::Exception for $ty {
            fn exc_type(&self) -> String {
                $name.to_string()
            }
            fn exc_path(&self) -> String {
                concat!("shimeji.", $name).to_string()
            }
            fn message(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

pub(crate) use shimeji_exception;

/// A failed call inside an entrypoint passes on with its remote type: write
/// `Err(RemoteError::from(err))`, or `?` in a method returning `RemoteError`.
impl From<CallError> for RemoteError {
    fn from(error: CallError) -> Self {
        error.to_remote()
    }
}
