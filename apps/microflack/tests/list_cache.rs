//! The cached messages list: a write of this instance is in the next
//! `GET`, a write of another instance once its `updated_model` event
//! arrives, every query shape is answered as the database would, and
//! `MESSAGES_LIST_CACHE_MS=0` turns the cache off. On SQLite and on
//! PostgreSQL.

mod common;

use common::{eventually, App, Auth, Backend, Data};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

on_both!(writes_and_events, cache_off);

fn sources(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| m["source"].as_str().expect("a source").to_string())
        .collect()
}

async fn listed(app: &App, query: &str) -> Vec<String> {
    let (status, body) = app.get(&format!("/api/messages{query}"), Auth::None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    sources(&body)
}

/// Changes a message's source behind the service's back, as another
/// instance sharing the database would.
async fn change_behind(data: &Data, id: i64, source: &str) {
    let pool = data.pool("MESSAGES_DATABASE_URL", "messages.sqlite").await;
    sqlx::query("UPDATE messages SET source = $1 WHERE id = $2")
        .bind(source)
        .bind(id)
        .execute(&pool)
        .await
        .expect("row updated");
    pool.close().await;
}

async fn writes_and_events(backend: Backend) {
    let data = Data::new(backend);
    // A maximum age far longer than the test: only clears refresh the list.
    let app = App::start(data.config().set("MESSAGES_LIST_CACHE_MS", "600000")).await;
    let susan = app.register("susan", "dog").await;
    let david_id = app.register("david", "cat").await;
    let token = app.login("susan", "dog").await;
    let david = app.login("david", "cat").await;
    assert!(listed(&app, "").await.is_empty());

    // A post is in the very next GET (the list was cached, empty).
    let first = app.post(&token, "one").await;
    assert_eq!(listed(&app, "").await, ["one"]);
    app.post(&david, "two").await;
    assert_eq!(listed(&app, "").await, ["one", "two"]);

    // So is an edit, which moves the message last once a second passed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let id = first["id"].as_i64().expect("an id");
    let (status, _, _) = app
        .call(
            Method::PUT,
            &format!("/api/messages/{id}"),
            Auth::Bearer(&token),
            Some(json!({"source": "one, edited"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(listed(&app, "").await, ["two", "one, edited"]);

    // Every query shape, from the cached list.
    let since = app.get(&format!("/api/messages/{id}"), Auth::None).await.1["updated_at"]
        .as_i64()
        .expect("updated_at");
    assert_eq!(
        listed(&app, &format!("?updated_since={since}")).await,
        ["one, edited"]
    );
    assert_eq!(
        listed(&app, &format!("?updated_since={}", since + 1)).await,
        Vec::<String>::new()
    );
    assert_eq!(listed(&app, &format!("?user_id={david_id}")).await, ["two"]);
    assert_eq!(
        listed(&app, &format!("?user_id={susan}&updated_since={since}")).await,
        ["one, edited"]
    );
    assert_eq!(
        listed(
            &app,
            &format!("?user_id={susan}&updated_since={}", since + 1)
        )
        .await,
        Vec::<String>::new()
    );
    let (status, _) = app.get("/api/messages?user_id=x", Auth::None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A write of another instance: not seen until its event arrives…
    change_behind(&data, id, "changed elsewhere").await;
    assert_eq!(
        listed(&app, "").await,
        ["two", "one, edited"],
        "the list is cached"
    );
    // …then seen.
    app.running
        .as_ref()
        .expect("running")
        .event_dispatcher("messages")
        .dispatch(
            "updated_model",
            json!({"class": "Message", "model": {"id": id}}),
        )
        .await
        .expect("event dispatched");
    let seen = eventually(Duration::from_secs(5), || async {
        listed(&app, "").await == ["two", "changed elsewhere"]
    })
    .await;
    assert!(seen, "updated_model from another instance clears the list");
    app.stop().await;
}

async fn cache_off(backend: Backend) {
    let data = Data::new(backend);
    let app = App::start(data.config().set("MESSAGES_LIST_CACHE_MS", "0")).await;
    app.register("susan", "dog").await;
    let token = app.login("susan", "dog").await;
    let first = app.post(&token, "one").await;
    assert_eq!(listed(&app, "").await, ["one"]);
    change_behind(&data, first["id"].as_i64().expect("an id"), "changed").await;
    assert_eq!(
        listed(&app, "").await,
        ["changed"],
        "no cache: the database"
    );
    app.stop().await;
}
