//! The HTTP API against the compatibility contract and its fixes, on SQLite
//! and on PostgreSQL, all services in one process.

mod common;

use common::{eventually, App, Auth, Backend, Data};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

on_both!(users, tokens, revocation, messages, events);

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

async fn tokens(backend: Backend) {
    let data = Data::new(backend);
    let app = App::start(data.config()).await;
    let id = app.register("susan", "dog").await;

    let token = app.login("susan", "dog").await;
    let claims = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["user_id"], id);
    let exp = claims["exp"].as_i64().unwrap();
    let now = microflack::api::now();
    assert!((now + 3590..=now + 3610).contains(&exp), "lifetime 3600 s");
    assert_eq!(claims.as_object().unwrap().len(), 3, "user_id, exp and jti");
    assert_ne!(
        token,
        app.login("susan", "dog").await,
        "two logins, two tokens"
    );

    // Wrong password, unknown user, no credentials, empty parts: 401 with
    // the exact body and header.
    for auth in [
        Auth::Basic("susan", "cat"),
        Auth::Basic("nobody", "dog"),
        Auth::None,
        Auth::Basic("", "dog"),
        Auth::Bearer(&token),
    ] {
        let (status, headers, body) = app.call(Method::POST, "/api/tokens", auth, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, json!({"error": "authentication required"}));
        assert_eq!(
            headers["www-authenticate"],
            "Bearer realm=\"Authentication Required\""
        );
    }
    // The login pinged the user.
    assert_eq!(
        app.get(&format!("/api/users/{id}"), Auth::None).await.1["online"],
        true
    );
    app.stop().await;
}

async fn revocation(backend: Backend) {
    let data = Data::new(backend);
    let app = App::start(data.config()).await;
    app.register("susan", "dog").await;
    let token = app.login("susan", "dog").await;
    let other = app.login("susan", "dog").await;
    assert_ne!(token, other);
    let (status, _, _) = app
        .call(Method::DELETE, "/api/tokens", Auth::Bearer(&token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Every service refuses it at once; the other token still works.
    for path in ["/api/users", "/api/messages"] {
        let (status, body) = app.get(path, Auth::Bearer(&token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(body, json!({"error": "authentication required"}));
        assert_eq!(app.get(path, Auth::Bearer(&other)).await.0, StatusCode::OK);
    }
    let (status, _, _) = app
        .call(Method::DELETE, "/api/tokens", Auth::Bearer(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked already");
    app.stop().await;

    // After a restart (same databases) the revocation holds: in tokens,
    // and in users and messages, which load the list at start.
    let app = App::start(data.config()).await;
    let refused = eventually(Duration::from_secs(5), || async {
        app.get("/api/users", Auth::Bearer(&token)).await.0 == StatusCode::UNAUTHORIZED
            && app.get("/api/messages", Auth::Bearer(&token)).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused, "a revocation outlives a restart");
    let (status, _, _) = app
        .call(Method::DELETE, "/api/tokens", Auth::Bearer(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.get("/api/users", Auth::Bearer(&other)).await.0,
        StatusCode::OK
    );
    app.stop().await;
}

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
    let ids: Vec<i64> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
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
    {
        use sqlx::any::AnyPoolOptions;
        sqlx::any::install_default_drivers();
        let url = data
            .databases
            .iter()
            .find(|(k, _)| k == "MESSAGES_DATABASE_URL")
            .map(|(_, n)| format!("postgres://postgres@127.0.0.1:5432/{n}"))
            .unwrap_or_else(|| {
                format!("sqlite://{}", data.folder.join("messages.sqlite").display())
            });
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let old = microflack::api::now() - 2 * 86400;
        sqlx::query("UPDATE messages SET updated_at = $1 WHERE id = $2")
            .bind(old)
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let (_, body) = app.get("/api/messages?updated_since=0", Auth::None).await;
    let ids: Vec<i64> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![second["id"].as_i64().unwrap()]);

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

on_both!(presence_sweep);

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
        use sqlx::any::AnyPoolOptions;
        sqlx::any::install_default_drivers();
        let url = data
            .databases
            .iter()
            .find(|(k, _)| k == "USERS_DATABASE_URL")
            .map(|(_, n)| format!("postgres://postgres@127.0.0.1:5432/{n}"))
            .unwrap_or_else(|| format!("sqlite://{}", data.folder.join("users.sqlite").display()));
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
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
