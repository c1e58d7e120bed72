//! What a request or a reply carries: JSON, or a typed value in-process.
//!
//! Every network transport moves JSON. Inside one process a typed client
//! hands the service its argument struct and gets the typed result back, with
//! no serialization; [`Payload::Typed`] is that fast path. Both forms carry
//! the same meaning: a typed value can always be turned into its JSON form.
//!
//! A typed client whose service serves in this process does better still:
//! it hands over a [`LocalCall`], a place on its own stack that holds the
//! arguments on the way in and the reply on the way out, so the call boxes
//! neither.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::any::{Any, TypeId};

use crate::error::{CallError, RemoteError};

/// A value that can travel in-process as itself, or as JSON when it must.
///
/// Implemented for every `Serialize + Send + 'static` type.
pub trait TypedValue: Send + 'static {
    /// The JSON form of the value.
    fn to_json(&self) -> Result<Value, serde_json::Error>;
    /// The value as `Any`, to downcast.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
    /// The value's type id.
    fn value_type_id(&self) -> TypeId;
}

impl<T: Serialize + Send + 'static> TypedValue for T {
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
    fn value_type_id(&self) -> TypeId {
        TypeId::of::<T>()
    }
}

/// The body of a request or a reply.
///
/// A request's JSON form is Nameko's `{"args": [...], "kwargs": {...}}`; a
/// typed request holds the argument struct that a generated client built.
/// A reply's JSON form is the result value itself.
pub enum Payload {
    /// JSON, as every network transport carries it.
    Json(Value),
    /// A typed value handed over in-process.
    Typed(Box<dyn TypedValue>),
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Json(v) => f.debug_tuple("Json").field(v).finish(),
            Payload::Typed(_) => f.write_str("Typed(..)"),
        }
    }
}

impl Payload {
    /// A request body from positional and keyword arguments.
    pub fn request(args: Vec<Value>, kwargs: serde_json::Map<String, Value>) -> Self {
        Payload::Json(json!({ "args": args, "kwargs": kwargs }))
    }

    /// The JSON form of a reply (for a typed payload, its value encoded).
    pub fn into_json(self) -> Result<Value, serde_json::Error> {
        match self {
            Payload::Json(v) => Ok(v),
            Payload::Typed(t) => t.to_json(),
        }
    }

    /// The JSON form of a request: a typed argument struct becomes `kwargs`.
    pub fn into_request_json(self) -> Result<Value, serde_json::Error> {
        match self {
            Payload::Json(v) => Ok(v),
            Payload::Typed(t) => Ok(json!({ "args": [], "kwargs": t.to_json()? })),
        }
    }

    /// The reply for a method's result: typed when the request was typed,
    /// JSON otherwise.
    pub fn reply<T: Serialize + Send + 'static>(
        value: T,
        typed: bool,
    ) -> Result<Self, RemoteError> {
        if typed {
            Ok(Payload::Typed(Box::new(value)))
        } else {
            serde_json::to_value(value)
                .map(Payload::Json)
                .map_err(|e| RemoteError::unserializable(e.to_string()))
        }
    }

    /// A request's arguments as the struct `A`: taken as they are from a
    /// typed request, bound by `bind` from a JSON one. Also tells whether the
    /// request was typed, so the reply can be too.
    pub fn take_args<A: 'static>(
        self,
        bind: impl FnOnce(Value) -> Result<A, RemoteError>,
    ) -> Result<(A, bool), RemoteError> {
        match self {
            Payload::Typed(t) if t.value_type_id() == TypeId::of::<A>() => t
                .into_any()
                .downcast::<A>()
                .map(|a| (*a, true))
                .map_err(|_| RemoteError::malformed_request("typed arguments of another type")),
            other => {
                let body = other
                    .into_request_json()
                    .map_err(|e| RemoteError::malformed_request(e.to_string()))?;
                bind(body).map(|a| (a, false))
            }
        }
    }

    /// A typed value of type `T`, whichever form the payload has.
    pub fn decode<T: DeserializeOwned + 'static>(self) -> Result<T, CallError> {
        match self {
            Payload::Typed(t) if t.value_type_id() == TypeId::of::<T>() => t
                .into_any()
                .downcast::<T>()
                .map(|b| *b)
                .map_err(|_| CallError::Decode("typed reply of another type".into())),
            other => {
                let json = other
                    .into_json()
                    .map_err(|e| CallError::Decode(e.to_string()))?;
                serde_json::from_value(json).map_err(|e| CallError::Decode(e.to_string()))
            }
        }
    }
}

/// A typed call handed over in process: the arguments go in, the reply
/// comes back in the same place, neither boxed nor serialized.
///
/// The caller keeps it (on its stack) and lends it, as `&mut dyn Any`, to
/// the transport and the service; the service recognises its own argument
/// struct and reply type by downcasting, and anything else is declined, so
/// the caller can send the arguments the usual way instead.
#[doc(hidden)]
pub struct LocalCall<A, R> {
    args: Option<A>,
    reply: Option<R>,
}

impl<A, R> LocalCall<A, R> {
    /// A call of `args`, with no reply yet.
    pub fn new(args: A) -> Self {
        LocalCall {
            args: Some(args),
            reply: None,
        }
    }

    /// The arguments, the first time they are asked for.
    pub fn take_args(&mut self) -> Option<A> {
        self.args.take()
    }

    /// Puts the reply in place.
    pub fn set_reply(&mut self, reply: R) {
        self.reply = Some(reply);
    }

    /// The reply, once the service has put it in place.
    pub fn take_reply(&mut self) -> Option<R> {
        self.reply.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_survive_a_json_round_trip() {
        // Printed shortest-first, this float reads back as 9.199e94 with a
        // parser that is not correctly rounded.
        let x = 9.199000000000001e94_f64;
        let body = serde_json::to_vec(&json!({ "args": [x], "kwargs": {} })).unwrap();
        let back = Payload::Json(serde_json::from_slice(&body).unwrap())
            .into_json()
            .unwrap();
        assert_eq!(back["args"][0].as_f64(), Some(x), "{back}");
    }
}
