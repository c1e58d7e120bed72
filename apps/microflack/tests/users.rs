//! The users service over HTTP: accounts, validation, `_links`, presence
//! (pings, sign-off, the sweep), on SQLite and on PostgreSQL.

mod common;

use common::{eventually, App, Auth, Backend, Data};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

on_both!(users, presence_sweep);

async fn users(backend: Backend) {
    let data = Data::new(backend);
    let app = App::start(data.config()).await;

    // Create: 201, Location, the user JSON with correct links.
    let (status, headers, body) = app
        .call(
            Method::POST,
            "/api/users",
            Auth::None,
            Some(json!({"nickname": "susan", "password": "dog"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"].as_i64().unwrap();
    assert_eq!(headers["location"], format!("/api/users/{id}").as_str());
    assert_eq!(body["nickname"], "susan");
    assert_eq!(body["online"], false);
    assert!(body.get("password").is_none() && body.get("password_hash").is_none());
    assert_eq!(body["_links"]["self"], format!("/api/users/{id}"));
    assert_eq!(
        body["_links"]["messages"],
        format!("/api/messages?user_id={id}")
    );
    assert_eq!(body["_links"]["tokens"], "/api/tokens");
    for field in ["created_at", "updated_at", "last_seen_at"] {
        assert!(body[field].is_i64(), "{field} is an integer");
    }

    // Validation: duplicate, missing, empty, too long, no body: 400 JSON.
    for bad in [
        json!({"nickname": "susan", "password": "cat"}),
        json!({"nickname": "david"}),
        json!({"password": "x"}),
        json!({"nickname": "", "password": "x"}),
        json!({"nickname": "  ", "password": "x"}),
        json!({"nickname": "d", "password": ""}),
        json!({"nickname": "x".repeat(33), "password": "x"}),
        json!({"nickname": "y", "password": "x".repeat(129)}),
        // Basic auth could never carry it.
        json!({"nickname": "a:b", "password": "x"}),
    ] {
        let (status, _, body) = app
            .call(Method::POST, "/api/users", Auth::None, Some(bad.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body["error"].is_string(), "{body}");
    }
    let response = app
        .http
        .post(format!("{}/api/users", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.json::<serde_json::Value>().await.unwrap()["error"].is_string());

    // Get: 200; unknown and non-numeric: 404 JSON.
    let (status, body) = app.get(&format!("/api/users/{id}"), Auth::None).await;
    assert_eq!(
        (status, body["nickname"].as_str()),
        (StatusCode::OK, Some("susan"))
    );
    for missing in ["/api/users/999", "/api/users/abc"] {
        let (status, body) = app.get(missing, Auth::None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].is_string());
    }

    // Rename and password change of one's own account; 403 for another's;
    // a taken nickname is 400.
    let david = app.register("david", "cat").await;
    let token = app.login("susan", "dog").await;
    let (status, _, _) = app
        .call(
            Method::PUT,
            &format!("/api/users/{id}"),
            Auth::Bearer(&token),
            Some(json!({"nickname": "sue", "password": "wolf"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/users/{id}"), Auth::None).await.1["nickname"],
        "sue"
    );
    app.login("sue", "wolf").await;
    let (status, _, _) = app
        .call(
            Method::PUT,
            &format!("/api/users/{david}"),
            Auth::Bearer(&token),
            Some(json!({"nickname": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = app
        .call(
            Method::PUT,
            &format!("/api/users/{id}"),
            Auth::Bearer(&token),
            Some(json!({"nickname": "david"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = app
        .call(
            Method::PUT,
            "/api/users/999",
            Auth::Bearer(&token),
            Some(json!({"nickname": "z"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = app
        .call(
            Method::PUT,
            &format!("/api/users/{id}"),
            Auth::None,
            Some(json!({"nickname": "z"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // GET /api/users/me with Basic: the user, online.
    let (status, body) = app.get("/api/users/me", Auth::Basic("david", "cat")).await;
    assert_eq!(
        (status, body["id"].as_i64(), body["online"].as_bool()),
        (StatusCode::OK, Some(david), Some(true))
    );
    let (status, body) = app.get("/api/users/me", Auth::Basic("david", "dog")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"error": "authentication required"}));

    // DELETE /api/users/me: offline, even though a token counts as a ping.
    let david_token = app.login("david", "cat").await;
    let (status, _, _) = app
        .call(
            Method::DELETE,
            "/api/users/me",
            Auth::Bearer(&david_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/users/{david}"), Auth::None).await.1["online"],
        false
    );
    // PUT /api/users/me: online again.
    let (status, _, _) = app
        .call(
            Method::PUT,
            "/api/users/me",
            Auth::Bearer(&david_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/users/{david}"), Auth::None).await.1["online"],
        true
    );
    // A token on any users request counts as a ping.
    app.call(
        Method::DELETE,
        "/api/users/me",
        Auth::Bearer(&david_token),
        None,
    )
    .await;
    app.get("/api/users", Auth::Bearer(&david_token)).await;
    assert_eq!(
        app.get(&format!("/api/users/{david}"), Auth::None).await.1["online"],
        true
    );

    // List: online filter, updated_since inclusive, ordered by updated_at then nickname.
    app.call(Method::DELETE, "/api/users/me", Auth::Bearer(&token), None)
        .await;
    let (_, body) = app.get("/api/users", Auth::None).await;
    let users = body["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    let stamps: Vec<(i64, String)> = users
        .iter()
        .map(|u| {
            (
                u["updated_at"].as_i64().unwrap(),
                u["nickname"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted);
    let online: Vec<_> = app.get("/api/users?online=1", Auth::None).await.1["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["nickname"].clone())
        .collect();
    assert_eq!(online, vec![json!("david")]);
    let offline: Vec<_> = app.get("/api/users?online=0", Auth::None).await.1["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["nickname"].clone())
        .collect();
    assert_eq!(offline, vec![json!("sue")]);
    let last = stamps.last().unwrap().0;
    let since = app
        .get(&format!("/api/users?updated_since={last}"), Auth::None)
        .await
        .1;
    assert!(since["users"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["updated_at"].as_i64().unwrap() >= last));
    assert!(
        !since["users"].as_array().unwrap().is_empty(),
        "the bound is inclusive"
    );
    assert!(app
        .get(
            &format!("/api/users?updated_since={}", last + 1000),
            Auth::None
        )
        .await
        .1["users"]
        .as_array()
        .unwrap()
        .is_empty());
    let (status, body) = app.get("/api/users?updated_since=abc", Auth::None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string());
    // An invalid token is 401 even where a token is optional.
    let (status, _) = app.get("/api/users", Auth::Bearer("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    app.stop().await;
}

/// A user not pinged for a minute goes offline, announced once even with
/// two users instances sweeping.
async fn presence_sweep(backend: Backend) {
    let data = Data::new(backend);
    let app = App::start_services(data.config(), &["users", "users", "tokens"]).await;
    let id = app.register("susan", "dog").await;
    app.login("susan", "dog").await;
    assert_eq!(
        app.get(&format!("/api/users/{id}"), Auth::None).await.1["online"],
        true
    );
    {
        let pool = data.pool("USERS_DATABASE_URL", "users.sqlite").await;
        let old = microflack::api::now() - 61;
        sqlx::query("UPDATE users SET last_seen_at = $1 WHERE id = $2")
            .bind(old)
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let offline = eventually(Duration::from_secs(8), || async {
        app.get(&format!("/api/users/{id}"), Auth::None).await.1["online"] == false
    })
    .await;
    assert!(offline, "swept offline");
    // Both instances swept at least once since.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let offline_events = app
        .events_of("User")
        .iter()
        .filter(|e| e["model"]["id"] == id && e["model"]["online"] == false)
        .count();
    // One for the insert (offline at creation), one for the sweep.
    assert_eq!(offline_events, 2, "the sweep changed the user once");
    app.stop().await;
}
