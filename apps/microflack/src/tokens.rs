//! The tokens service at `/api/tokens`: logs in with Basic auth (checking
//! the password with the users service over RPC) and revokes tokens.
//! Revocations are kept in its database until the token would have expired,
//! announced to every instance of every service by the `token_revoked`
//! event, and listed over RPC for instances that start later.

use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::json;
use shimeji::prelude::*;
use sqlx::Row;

use crate::api::{now, Api, ApiError};
use crate::auth::{signature_of, Auth, Revocation};
use crate::db::{Database, Step};
use crate::users::UsersClient;

/// Config key of the tokens database URL.
pub const DATABASE_KEY: &str = "TOKENS_DATABASE_URL";

const MIGRATIONS: &[Step] = &[Step {
    version: 1,
    description: "revoked tokens",
    sqlite: "CREATE TABLE revoked_tokens (
        signature TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    );",
    postgres: "CREATE TABLE revoked_tokens (
        signature TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );",
}];

/// What the tokens service's RPC can fail with.
#[derive(Debug, thiserror::Error, Exception)]
pub enum TokensError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for TokensError {
    fn from(e: sqlx::Error) -> Self {
        TokensError::Database(e.to_string())
    }
}

/// The tokens service.
#[derive(Dependencies)]
pub struct Tokens {
    db: Database,
    auth: Auth,
    users: UsersClient,
    events: EventDispatcher,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            db: Database::new(DATABASE_KEY, "tokens.sqlite", MIGRATIONS),
            auth: Auth::default(),
            users: UsersClient::default(),
            events: EventDispatcher::default(),
        }
    }
}

#[service(name = "tokens", events = ["token_revoked"])]
impl Tokens {
    /// `POST /api/tokens` with Basic auth: `{"token": …}`; a wrong
    /// nickname or password is 401.
    #[http(POST, "/api/tokens")]
    async fn login(&self, headers: HeaderMap) -> Api<Json<serde_json::Value>> {
        let (nickname, password) = crate::auth::basic(&headers).ok_or(ApiError::Unauthorized)?;
        if nickname.is_empty() || password.is_empty() {
            return Err(ApiError::Unauthorized);
        }
        let user_id = self
            .users
            .check_password(nickname, password)
            .await
            .map_err(|e| ApiError::Unavailable(format!("users: {e}")))?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Json(json!({ "token": self.auth.issue(user_id)? })))
    }

    /// `DELETE /api/tokens`: revokes the bearer token; 204. Every instance
    /// of every service refuses it from then on.
    #[http(DELETE, "/api/tokens")]
    async fn revoke(&self, headers: HeaderMap) -> Api<StatusCode> {
        let claims = self.auth.required(&headers)?;
        let token = crate::auth::bearer(&headers).ok_or(ApiError::Unauthorized)?;
        let revocation = Revocation {
            signature: signature_of(token).to_string(),
            expires_at: claims.exp,
        };
        sqlx::query(
            "INSERT INTO revoked_tokens (signature, expires_at) VALUES ($1, $2)
             ON CONFLICT (signature) DO NOTHING",
        )
        .bind(&revocation.signature)
        .bind(revocation.expires_at)
        .execute(self.db.pool()?)
        .await?;
        self.auth.revoke(&revocation);
        self.events
            .dispatch("token_revoked", &revocation)
            .await
            .map_err(ApiError::internal)?;
        Ok(StatusCode::NO_CONTENT)
    }

    /// Over RPC: every revocation of a token that has not expired yet.
    #[rpc]
    async fn revocations(&self) -> Result<Vec<Revocation>, TokensError> {
        Ok(self.stored().await?)
    }

    /// Another tokens instance revoked a token.
    #[event_handler("tokens", "token_revoked", handler_type = "broadcast")]
    async fn token_revoked(&self, revocation: Revocation) {
        self.auth.revoke(&revocation);
    }

    /// At start and every 10 s: the revocations in the database (some
    /// written by other instances), and expired ones deleted.
    #[timer(interval = "10s", eager = true)]
    async fn reload(&self) {
        match self.stored().await {
            Ok(list) => self.auth.load(&list),
            Err(e) => tracing::warn!(error = %e, "cannot read revocations"),
        }
        if let Ok(pool) = self.db.pool() {
            if let Err(e) = sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1")
                .bind(now())
                .execute(pool)
                .await
            {
                tracing::warn!(error = %e, "cannot delete expired revocations");
            }
        }
    }
}

impl Tokens {
    async fn stored(&self) -> Result<Vec<Revocation>, sqlx::Error> {
        sqlx::query("SELECT signature, expires_at FROM revoked_tokens WHERE expires_at >= $1")
            .bind(now())
            .fetch_all(self.db.pool()?)
            .await?
            .iter()
            .map(|row| {
                Ok(Revocation {
                    signature: row.try_get("signature")?,
                    expires_at: row.try_get("expires_at")?,
                })
            })
            .collect()
    }
}

/// Loads the revocation list from the tokens service into `auth` when it
/// is due: until a first load succeeds, then every [`RESYNC`]. Services
/// call it from a 1 s eager timer, so an instance started next to (or
/// before) the tokens service has the list within a second of tokens
/// answering, and a stop never waits on a retry loop.
pub async fn sync_revocations(auth: &Auth, tokens: &TokensClient) {
    if !auth.sync_due(RESYNC) {
        return;
    }
    match tokens.revocations().await {
        Ok(list) => auth.load(&list),
        Err(e) => tracing::debug!(error = %e, "revocation list not loaded (tokens unreachable)"),
    }
}

/// How often a service reloads the whole revocation list (events bring
/// each revocation at once; this repairs what an instance missed).
pub const RESYNC: std::time::Duration = std::time::Duration::from_secs(10);
