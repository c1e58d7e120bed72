//! Arguments: binding a request's `args` and `kwargs` to a method's parameters.
//!
//! Each parameter can arrive positionally or by name, as in Nameko. A
//! missing, extra or mistyped argument gives `IncorrectSignature` with a
//! message in Python's words, naming the argument; a body that is not
//! `{"args": [...], "kwargs": {...}}` gives `MalformedRequest`.
//! `#[service]` generates the calls to [`Binder`]; users rarely need it.
//!
//! ```
//! use serde_json::json;
//! use shimeji::arguments::Binder;
//!
//! let body = json!({"args": [1], "kwargs": {"b": 2}});
//! let mut binder = Binder::new("add", &["a", "b"], body).unwrap();
//! let a: i64 = binder.take(0).unwrap();
//! let b: i64 = binder.take(1).unwrap();
//! assert_eq!(a + b, 3);
//!
//! let err = Binder::new("add", &["a", "b"], json!({"args": [], "kwargs": {"c": 1}})).unwrap_err();
//! assert_eq!(err.value, "add() got an unexpected keyword argument 'c'");
//! ```

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::RemoteError;

/// Takes a method's arguments out of a request body, one parameter at a time.
#[derive(Debug)]
pub struct Binder {
    method: &'static str,
    params: &'static [&'static str],
    args: Vec<Value>,
    kwargs: Map<String, Value>,
}

impl Binder {
    /// Checks the body's shape and the argument names and count.
    pub fn new(
        method: &'static str,
        params: &'static [&'static str],
        body: Value,
    ) -> Result<Self, RemoteError> {
        let Value::Object(mut body) = body else {
            return Err(RemoteError::malformed_request(
                "Message body must be a JSON object with `args` and `kwargs`",
            ));
        };
        let (Some(args), Some(kwargs)) = (body.remove("args"), body.remove("kwargs")) else {
            return Err(RemoteError::malformed_request(
                "Message missing `args` or `kwargs`",
            ));
        };
        let Value::Array(args) = args else {
            return Err(RemoteError::malformed_request("`args` must be a list"));
        };
        let Value::Object(kwargs) = kwargs else {
            return Err(RemoteError::malformed_request("`kwargs` must be an object"));
        };
        if args.len() > params.len() {
            let takes = match params.len() {
                1 => "1 positional argument".to_string(),
                n => format!("{n} positional arguments"),
            };
            let given = match args.len() {
                1 => "1 was".to_string(),
                n => format!("{n} were"),
            };
            return Err(RemoteError::incorrect_signature(format!(
                "{method}() takes {takes} but {given} given"
            )));
        }
        for key in kwargs.keys() {
            match params.iter().position(|p| p == key) {
                None => {
                    return Err(RemoteError::incorrect_signature(format!(
                        "{method}() got an unexpected keyword argument '{key}'"
                    )))
                }
                Some(i) if i < args.len() => {
                    return Err(RemoteError::incorrect_signature(format!(
                        "{method}() got multiple values for argument '{key}'"
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(Binder {
            method,
            params,
            args,
            kwargs,
        })
    }

    /// The value of parameter `index`, decoded.
    ///
    /// A parameter that did not arrive decodes from `null`, so `Option<T>`
    /// parameters are optional; any other type reports it missing.
    pub fn take<T: DeserializeOwned>(&mut self, index: usize) -> Result<T, RemoteError> {
        let name = self.params[index];
        let value = if index < self.args.len() {
            Some(std::mem::take(&mut self.args[index]))
        } else {
            self.kwargs.remove(name)
        };
        match value {
            Some(v) => serde_json::from_value(v).map_err(|e| {
                RemoteError::incorrect_signature(format!(
                    "{}() argument '{name}' has the wrong type: {e}",
                    self.method
                ))
            }),
            None => serde_json::from_value(Value::Null).map_err(|_| {
                RemoteError::incorrect_signature(format!(
                    "{}() missing 1 required positional argument: '{name}'",
                    self.method
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P: &[&str] = &["a", "b"];

    fn err(body: Value) -> RemoteError {
        match Binder::new("add", P, body) {
            Ok(mut b) => b
                .take::<i64>(0)
                .and_then(|_| b.take::<i64>(1))
                .expect_err("binding should fail"),
            Err(e) => e,
        }
    }

    #[test]
    fn positional_keyword_and_mixed() {
        for body in [
            json!({"args": [1, 2], "kwargs": {}}),
            json!({"args": [], "kwargs": {"a": 1, "b": 2}}),
            json!({"args": [1], "kwargs": {"b": 2}}),
        ] {
            let mut b = Binder::new("add", P, body).unwrap();
            assert_eq!(
                (b.take::<i64>(0).unwrap(), b.take::<i64>(1).unwrap()),
                (1, 2)
            );
        }
    }

    #[test]
    fn nameko_messages() {
        let e = err(json!({"args": [], "kwargs": {}}));
        assert_eq!(e.exc_type, "IncorrectSignature");
        assert_eq!(e.value, "add() missing 1 required positional argument: 'a'");
        let e = err(json!({"args": [1, 2, 3], "kwargs": {}}));
        assert_eq!(
            e.value,
            "add() takes 2 positional arguments but 3 were given"
        );
        let e = err(json!({"args": [1], "kwargs": {"c": 2}}));
        assert_eq!(e.value, "add() got an unexpected keyword argument 'c'");
        let e = err(json!({"args": [1], "kwargs": {"a": 2}}));
        assert_eq!(e.value, "add() got multiple values for argument 'a'");
        let e = err(json!({"args": [1, "two"], "kwargs": {}}));
        assert!(
            e.value.starts_with("add() argument 'b' has the wrong type"),
            "{}",
            e.value
        );
    }

    #[test]
    fn malformed_bodies() {
        for body in [
            json!([1, 2]),
            json!("x"),
            json!({"args": []}),
            json!({"args": 1, "kwargs": {}}),
            json!({"args": [], "kwargs": []}),
        ] {
            assert_eq!(err(body).exc_type, "MalformedRequest");
        }
    }

    #[test]
    fn option_parameters_are_optional() {
        let mut b = Binder::new("add", P, json!({"args": [1], "kwargs": {}})).unwrap();
        assert_eq!(b.take::<i64>(0).unwrap(), 1);
        assert_eq!(b.take::<Option<i64>>(1).unwrap(), None);
    }
}
