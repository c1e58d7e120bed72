//! HTTP request bodies into an entrypoint call: the dispatch `#[service]`
//! generates for `#[http]` methods (axum's `Json` and `Query` extractors,
//! the entrypoint's expected error as a 4xx), called the way the web server
//! calls it, with a request a client chose.
//!
//! Input (structured): which route, a content type, a query string and the
//! body bytes.
//!
//! Checked besides "no crash": no request a client can send gets a 5xx; a
//! JSON body with a JSON content type reaches the entrypoint and comes back
//! as it was sent; anything else is refused with a 4xx; a typed body that
//! decodes is served and echoed, one that breaks the method's own rule gets
//! its declared error as JSON.
#![no_main]

use axum::body::Body;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shimeji::http::{HttpService, Json, Query, Request, Response};
use shimeji::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    item: String,
    qty: u32,
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Filter {
    #[allow(dead_code)]
    limit: Option<u32>,
}

#[derive(Debug, thiserror::Error, Exception)]
#[error("quantity must be positive")]
struct BadOrder;

#[derive(Default, Dependencies)]
struct Shop;

#[service(name = "shop")]
impl Shop {
    #[http(POST, "/echo")]
    async fn echo(&self, Json(body): Json<Value>) -> Json<Value> {
        Json(body)
    }

    #[http(POST, "/orders")]
    async fn order(
        &self,
        Query(_filter): Query<Filter>,
        Json(order): Json<Order>,
    ) -> Result<Json<Order>, BadOrder> {
        if order.qty == 0 {
            Err(BadOrder)
        } else {
            Ok(Json(order))
        }
    }
}

/// Content types: (value, whether axum's `Json` takes it).
const CONTENT_TYPES: &[(&str, bool)] = &[
    ("application/json", true),
    ("application/json; charset=utf-8", true),
    ("application/vnd.api+json", true),
    ("text/plain", false),
    ("application/x-www-form-urlencoded", false),
    ("application/jsonx", false),
];

#[derive(Arbitrary, Debug)]
enum ContentType {
    None,
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    orders: bool,
    content_type: ContentType,
    query: String,
    body: Vec<u8>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    })
}

fn send(
    name: &'static str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Option<(u16, Vec<u8>)> {
    let mut builder = Request::builder().method("POST").uri(path);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    // A request line or header the HTTP layer would never let through.
    let request = builder.body(Body::from(body)).ok()?;
    let rt = runtime();
    let id = Shop::HTTP_ROUTES.iter().find(|r| r.name == name)?.id;
    let response: Response = rt.block_on(Shop.dispatch_http(id, request));
    let status = response.status().as_u16();
    let bytes = rt
        .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .expect("a response body");
    Some((status, bytes.to_vec()))
}

fuzz_target!(|input: Input| {
    let (content_type, json_type) = match &input.content_type {
        ContentType::None => (None, Some(false)),
        ContentType::Known(i) => {
            let (ct, ok) = CONTENT_TYPES[*i as usize % CONTENT_TYPES.len()];
            (Some(ct.to_string()), Some(ok))
        }
        ContentType::Other(s) => (Some(s.clone()), None),
    };
    let (name, path) = if input.orders {
        ("order", format!("/orders?{}", input.query))
    } else {
        ("echo", "/echo".to_string())
    };
    let Some((status, reply)) = send(name, &path, content_type.as_deref(), input.body.clone())
    else {
        return;
    };
    assert!(
        (200..500).contains(&status),
        "{name}: status {status} for {input:?}: {}",
        String::from_utf8_lossy(&reply)
    );

    if !input.orders {
        let sent = serde_json::from_slice::<Value>(&input.body).ok();
        if status == 200 {
            assert_ne!(
                json_type,
                Some(false),
                "took a body that is not declared JSON"
            );
            let sent = sent.expect("took a body that is not JSON");
            let back: Value = serde_json::from_slice(&reply).expect("a JSON reply");
            assert_eq!(back, sent);
        } else {
            assert!((400..500).contains(&status));
            if json_type == Some(true) {
                assert!(
                    sent.is_none(),
                    "refused JSON with a JSON content type: {status}"
                );
            }
        }
        return;
    }

    // `/orders`: a typed body, and the method's own rule.
    let sent = serde_json::from_slice::<Order>(&input.body).ok();
    match status {
        200 => {
            let sent = sent.expect("took a body that is not an order");
            assert!(sent.qty > 0);
            let back: Order = serde_json::from_slice(&reply).expect("an order back");
            assert_eq!(back, sent);
        }
        400 if sent.as_ref().is_some_and(|o| o.qty == 0) && json_type == Some(true) => {
            // The query may have been refused first; if not, this is the method's error.
            if let Ok(Value::Object(error)) = serde_json::from_slice::<Value>(&reply) {
                assert_eq!(error.get("error"), Some(&Value::from("BadOrder")));
            }
        }
        _ => assert!((400..500).contains(&status)),
    }
});
