//! The messages service over HTTP, and the `updated_model` events of users
//! and messages, on SQLite and on PostgreSQL.

mod common;

use common::{eventually, App, Auth, Backend, Data};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

on_both!(messages, events, idempotent_posts);

async fn messages(backend: Backend) {
    let data = Data::new(backend);
    let app = App::start(data.config()).await;
    let susan = app.register("susan", "dog").await;
    app.register("david", "cat").await;
    let token = app.login("susan", "dog").await;
    let david = app.login("david", "cat").await;

    // Create: 201, Location, rendered HTML, links.
    let (status, headers, body) = app
        .call(
            Method::POST,
            "/api/messages",
            Auth::Bearer(&token),
            Some(json!({"source": "hello *world*!", "html": null, "id": null})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"].as_i64().unwrap();
    assert_eq!(headers["location"], format!("/api/messages/{id}").as_str());
    assert_eq!(body["user_id"], susan);
    assert_eq!(body["source"], "hello *world*!");
    assert_eq!(body["html"], "hello <em>world</em>!");
    assert_eq!(body["_links"]["self"], format!("/api/messages/{id}"));
    assert_eq!(body["_links"]["user"], format!("/api/users/{susan}"));
    assert_eq!(
        app.get(&format!("/api/messages/{id}"), Auth::None).await.1["html"],
        "hello <em>world</em>!"
    );

    // Bad input: 400 JSON; no token: 401.
    for bad in [
        json!({}),
        json!({"source": 3}),
        json!({"source": "  "}),
        json!([1]),
    ] {
        let (status, _, body) = app
            .call(
                Method::POST,
                "/api/messages",
                Auth::Bearer(&token),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body["error"].is_string());
    }
    let response = app
        .http
        .post(format!("{}/api/messages", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    let response = app
        .http
        .post(format!("{}/api/messages", app.base))
        .bearer_auth(&token)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // A body over the size limit: 413, in JSON too.
    // (A client of its own: the server closes that connection unread.)
    let big = json!({ "source": "x".repeat(3 * 1024 * 1024) });
    let response = reqwest::Client::new()
        .post(format!("{}/api/messages", app.base))
        .bearer_auth(&token)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(response.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    let (status, _, _) = app
        .call(
            Method::POST,
            "/api/messages",
            Auth::None,
            Some(json!({"source": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Edit: 204 and re-rendered; another's: 403; unknown: 404.
    let (status, _, _) = app
        .call(
            Method::PUT,
            &format!("/api/messages/{id}"),
            Auth::Bearer(&token),
            Some(json!({"source": "*hello* world!"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/messages/{id}"), Auth::None).await.1["html"],
        "<em>hello</em> world!"
    );
    let (status, _, _) = app
        .call(
            Method::PUT,
            &format!("/api/messages/{id}"),
            Auth::Bearer(&david),
            Some(json!({"source": "mine"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for missing in ["/api/messages/999", "/api/messages/x"] {
        let (status, _, body) = app
            .call(
                Method::PUT,
                missing,
                Auth::Bearer(&token),
                Some(json!({"source": "x"})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].is_string());
        assert_eq!(app.get(missing, Auth::None).await.0, StatusCode::NOT_FOUND);
    }

    // List: oldest change first, updated_since inclusive, bad value 400.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = app.post(&david, "second").await;
    let (_, body) = app.get("/api/messages", Auth::None).await;
    let ids = ids_of(&body);
    assert_eq!(ids, vec![id, second["id"].as_i64().unwrap()]);
    let since = second["updated_at"].as_i64().unwrap();
    let (_, body) = app
        .get(&format!("/api/messages?updated_since={since}"), Auth::None)
        .await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(body["messages"][0]["id"], second["id"]);
    let (_, body) = app
        .get(&format!("/api/messages?user_id={susan}"), Auth::None)
        .await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    let (status, body) = app
        .get("/api/messages?updated_since=yesterday", Auth::None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string());

    // The 24-hour window: a message last touched two days ago is not listed.
    // (The row is changed as another instance would change it: then its
    // `updated_model` event clears this instance's cached list.)
    {
        let pool = data.pool("MESSAGES_DATABASE_URL", "messages.sqlite").await;
        let old = microflack::api::now() - 2 * 86400;
        sqlx::query("UPDATE messages SET updated_at = $1 WHERE id = $2")
            .bind(old)
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    app.running
        .as_ref()
        .unwrap()
        .event_dispatcher("messages")
        .dispatch(
            "updated_model",
            json!({"class": "Message", "model": {"id": id}}),
        )
        .await
        .unwrap();
    let only_second = vec![second["id"].as_i64().unwrap()];
    let listed = eventually(Duration::from_secs(2), || async {
        let (_, body) = app.get("/api/messages?updated_since=0", Auth::None).await;
        let ids = ids_of(&body);
        ids == only_second
    })
    .await;
    assert!(listed, "the message two days old is no longer listed");

    // Errors are JSON everywhere, unknown routes too.
    let (status, body) = app.get("/api/nothing", Auth::None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
    // The ui's page.
    let page = app.http.get(format!("{}/", app.base)).send().await.unwrap();
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("MicroFlack!"));
    app.stop().await;
}

async fn events(backend: Backend) {
    let data = Data::new(backend);
    let app = App::start(data.config()).await;
    let id = app.register("susan", "dog").await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            !app.events_of("User").is_empty()
        })
        .await,
        "insert of a user is announced"
    );
    let first = &app.events_of("User")[0];
    assert_eq!(first["model"]["id"], id);
    assert_eq!(first["model"]["online"], false);
    let token = app.login("susan", "dog").await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            app.events_of("User")
                .iter()
                .any(|e| e["model"]["online"] == true)
        })
        .await,
        "a login (ping) is announced"
    );
    let message = app.post(&token, "first").await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            app.events_of("Message")
                .iter()
                .any(|e| e["model"]["id"] == message["id"] && e["model"]["html"] == "first")
        })
        .await,
        "insert of a message is announced"
    );
    app.call(
        Method::PUT,
        &format!("/api/messages/{}", message["id"]),
        Auth::Bearer(&token),
        Some(json!({"source": "*edited*"})),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            app.events_of("Message")
                .iter()
                .any(|e| e["model"]["html"] == "<em>edited</em>")
        })
        .await,
        "an edit is announced with its new HTML"
    );
    app.stop().await;
}

/// A post repeated with the same `client_key` (a resend after a lost
/// acknowledgement) is stored once, also when the repeats race.
async fn idempotent_posts(backend: Backend) {
    let data = Data::new(backend);
    let app = App::start(data.config()).await;
    app.register("susan", "dog").await;
    app.register("david", "cat").await;
    let susan = app.login("susan", "dog").await;
    let david = app.login("david", "cat").await;
    let post = |token: String, body: serde_json::Value| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/api/messages",
                Auth::Bearer(&token),
                Some(body),
            )
            .await
        }
    };

    let (status, _, first) =
        post(susan.clone(), json!({"source": "once", "client_key": "k1"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, again) =
        post(susan.clone(), json!({"source": "once", "client_key": "k1"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["id"], first["id"], "a repeat stores nothing new");
    // Another user's key space is their own; no key: a new message each time.
    let (_, _, davids) = post(david.clone(), json!({"source": "once", "client_key": "k1"})).await;
    assert_ne!(davids["id"], first["id"]);
    let (_, _, plain1) = post(susan.clone(), json!({"source": "twice"})).await;
    let (_, _, plain2) = post(susan.clone(), json!({"source": "twice"})).await;
    assert_ne!(plain1["id"], plain2["id"]);

    // Racing repeats: one message.
    let racing = (0..8).map(|_| post(susan.clone(), json!({"source": "race", "client_key": "k2"})));
    let answers = futures::future::join_all(racing).await;
    let ids: std::collections::HashSet<_> = answers
        .iter()
        .map(|(status, _, body)| {
            assert_eq!(*status, StatusCode::CREATED, "{body}");
            body["id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1, "racing repeats stored {} messages", ids.len());

    let (_, list) = app.get("/api/messages?updated_since=0", Auth::None).await;
    let sources: Vec<&str> = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources.iter().filter(|s| **s == "once").count(),
        2,
        "{sources:?}"
    );
    assert_eq!(
        sources.iter().filter(|s| **s == "race").count(),
        1,
        "{sources:?}"
    );

    // A key that is not a short string: 400.
    for bad in [json!(7), json!(""), json!("k".repeat(65))] {
        let (status, _, body) =
            post(susan.clone(), json!({"source": "x", "client_key": bad})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("client_key"),
            "{body}"
        );
    }
}

/// The ids of a `GET /api/messages` answer, in order.
fn ids_of(body: &serde_json::Value) -> Vec<i64> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}
