//! The tokens service over HTTP: logins, the exact 401, revocation seen
//! by every service and kept across a restart, on SQLite and PostgreSQL.

mod common;

use common::{eventually, App, Auth, Backend, Data};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

on_both!(tokens, revocation);

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
    // Every service refuses it within a second (the revocation reaches the
    // others by an event); the other token still works.
    for path in ["/api/users", "/api/messages"] {
        let refused = eventually(Duration::from_secs(1), || async {
            app.get(path, Auth::Bearer(&token)).await.0 == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(refused, "{path} still accepts the revoked token after 1 s");
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
