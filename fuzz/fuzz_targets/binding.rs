//! Binding a request body's `args` and `kwargs` to a method's parameters:
//! `Payload::from_request_bytes` (what a network transport does with the
//! bytes), `binding::Binder` directly, and the dispatch `#[service]`
//! generates for methods with typed parameters.
//!
//! Input: the request body bytes.
//!
//! Checked besides "no crash": `Binder::new` accepts exactly the bodies
//! Nameko accepts (an object with a list `args` no longer than the
//! parameters and an object `kwargs` naming only parameters not already
//! given by position) and refuses the others with the right error type;
//! each parameter is bound from its position, else its name, else `null`;
//! a typed parameter of the wrong type is an `IncorrectSignature` naming
//! it; a generated method answers with the value its arguments give.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shimeji::arguments::Binder;
use shimeji::payload::Payload;
use shimeji::prelude::*;

const PARAMS: &[&str] = &["a", "b", "c"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    name: String,
    qty: u32,
    tags: Option<Vec<String>>,
}

#[derive(Default, Dependencies)]
struct Calc;

#[service(name = "calc")]
impl Calc {
    #[rpc]
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    #[rpc]
    async fn greet(&self, name: String, punct: Option<String>) -> String {
        format!("{name}{}", punct.unwrap_or_default())
    }

    #[rpc]
    async fn total(&self, items: Vec<Item>, c: Option<f64>) -> (u64, Option<f64>) {
        (items.iter().map(|i| u64::from(i.qty)).sum(), c)
    }
}

/// What Nameko says about a body, before any parameter is decoded:
/// `Ok((args, kwargs))` or the error type.
fn expected_shape(
    body: &Value,
) -> Result<(Vec<Value>, serde_json::Map<String, Value>), &'static str> {
    let Value::Object(map) = body else {
        return Err("MalformedRequest");
    };
    let (Some(args), Some(kwargs)) = (map.get("args"), map.get("kwargs")) else {
        return Err("MalformedRequest");
    };
    let (Value::Array(args), Value::Object(kwargs)) = (args, kwargs) else {
        return Err("MalformedRequest");
    };
    if args.len() > PARAMS.len() {
        return Err("IncorrectSignature");
    }
    for key in kwargs.keys() {
        match PARAMS.iter().position(|p| p == key) {
            Some(i) if i >= args.len() => {}
            _ => return Err("IncorrectSignature"),
        }
    }
    Ok((args.clone(), kwargs.clone()))
}

fn check_binder(body: &Value) {
    let expected = expected_shape(body);
    match (Binder::new("method", PARAMS, body.clone()), &expected) {
        (Err(e), Err(kind)) => {
            assert_eq!(e.exc_type, *kind, "{}", e.value);
            if e.exc_type == "IncorrectSignature" {
                assert!(e.value.starts_with("method() "), "{}", e.value);
            }
        }
        (Ok(_), Err(kind)) => panic!("accepted a body Nameko refuses with {kind}: {body}"),
        (Err(e), Ok(_)) => panic!("refused a good body: {} {}", e.exc_type, e.value),
        (Ok(mut as_values), Ok((args, kwargs))) => {
            let mut as_ints = Binder::new("method", PARAMS, body.clone()).expect("bound once");
            for (i, name) in PARAMS.iter().enumerate() {
                let given = args.get(i).or_else(|| kwargs.get(*name));
                let value: Value = as_values.take(i).expect("anything binds to a Value");
                assert_eq!(&value, given.unwrap_or(&Value::Null), "parameter {name}");
                match (as_ints.take::<i64>(i), given.and_then(Value::as_i64)) {
                    (Ok(n), Some(m)) => assert_eq!(n, m),
                    (Ok(n), None) => panic!("bound {n} to {name} from {given:?}"),
                    (Err(e), Some(_)) => panic!("refused an integer for {name}: {}", e.value),
                    (Err(e), None) => {
                        assert_eq!(e.exc_type, "IncorrectSignature");
                        assert!(e.value.contains(&format!("'{name}'")), "{}", e.value);
                    }
                }
            }
        }
    }
}

/// The argument `name` (at `index`) of a body `expected_shape` accepted.
fn arg<'a>(
    args: &'a [Value],
    kwargs: &'a serde_json::Map<String, Value>,
    index: usize,
    name: &str,
) -> Option<&'a Value> {
    args.get(index).or_else(|| kwargs.get(name))
}

fn check_service(rt: &tokio::runtime::Runtime, body: &Value) {
    let calc = Calc;
    for method in Calc::RPC_METHODS {
        let id = Calc::rpc_entrypoint(method).expect("a declared method has an id");
        let outcome = rt.block_on(calc.dispatch_rpc(id, Payload::Json(body.clone())));
        let reply = match outcome {
            Err(e) => {
                assert!(
                    matches!(
                        e.exc_type.as_str(),
                        "MalformedRequest" | "IncorrectSignature"
                    ),
                    "{method}: {} {}",
                    e.exc_type,
                    e.value
                );
                continue;
            }
            Ok(reply) => reply.into_json().expect("a JSON reply"),
        };
        // It was accepted: the body must have Nameko's shape, and the reply
        // must be what the arguments give.
        let Value::Object(map) = body else {
            panic!("{method} accepted a body that is not an object: {body}");
        };
        let (Some(Value::Array(args)), Some(Value::Object(kwargs))) =
            (map.get("args"), map.get("kwargs"))
        else {
            panic!("{method} accepted a body without args and kwargs: {body}");
        };
        match *method {
            "add" => {
                let a = arg(args, kwargs, 0, "a")
                    .and_then(Value::as_i64)
                    .expect("a");
                let b = arg(args, kwargs, 1, "b")
                    .and_then(Value::as_i64)
                    .expect("b");
                assert_eq!(reply, json!(a.wrapping_add(b)));
            }
            "greet" => {
                let name = arg(args, kwargs, 0, "name")
                    .and_then(Value::as_str)
                    .expect("name");
                let punct = arg(args, kwargs, 1, "punct")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                assert_eq!(reply, json!(format!("{name}{punct}")));
            }
            "total" => {
                let items: Vec<Item> =
                    serde_json::from_value(arg(args, kwargs, 0, "items").cloned().expect("items"))
                        .expect("items decode");
                let sum: u64 = items.iter().map(|i| u64::from(i.qty)).sum();
                assert_eq!(reply[0], json!(sum));
            }
            other => panic!("unknown method {other}"),
        }
    }
    // A name no entrypoint has gets no id: the container answers
    // MethodNotFound without dispatching.
    assert!(Calc::rpc_entrypoint("no_such_method").is_none());
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    // Bytes that are not JSON never reach the binder: the transport
    // answers them (the `amqp_request` target covers that).
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    check_binder(&body);
    check_service(runtime(), &body);
});
