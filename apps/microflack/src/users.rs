//! The users service: accounts, passwords (argon2) and presence, at
//! `/api/users`. Every insert and update dispatches `updated_model`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shimeji::prelude::*;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashMap;

use crate::api::{created, int_query, json_body, now, path_id, Api, ApiError};
use crate::auth::{Auth, Revocation};
use crate::db::{Database, Step};
use crate::tokens::TokensClient;

/// Config key of the users database URL.
pub const DATABASE_KEY: &str = "USERS_DATABASE_URL";
/// Longest nickname, in characters.
pub const MAX_NICKNAME: usize = 32;
/// Longest password, in characters.
pub const MAX_PASSWORD: usize = 128;
/// A user is offline this many seconds after their last ping.
pub const ONLINE_FOR: i64 = 60;

const MIGRATIONS: &[Step] = &[Step {
    version: 1,
    description: "users",
    sqlite: "CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        nickname TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        online INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX users_updated_at ON users (updated_at);
    CREATE INDEX users_online ON users (online, last_seen_at);",
    postgres: "CREATE TABLE users (
        id BIGSERIAL PRIMARY KEY,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        last_seen_at BIGINT NOT NULL,
        nickname VARCHAR(32) NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        online BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX users_updated_at ON users (updated_at);
    CREATE INDEX users_online ON users (online, last_seen_at);",
}];

const COLUMNS: &str = "id, created_at, updated_at, last_seen_at, nickname, online";

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    /// Its id.
    pub id: i64,
    /// Created, UNIX seconds.
    pub created_at: i64,
    /// Last changed (pings included), UNIX seconds.
    pub updated_at: i64,
    /// The nickname.
    pub nickname: String,
    /// Last ping, UNIX seconds.
    pub last_seen_at: i64,
    /// Pinged within the last minute and not signed off.
    pub online: bool,
    /// `self`, `messages` (this user's messages) and `tokens`.
    #[serde(rename = "_links")]
    pub links: HashMap<String, String>,
}

impl User {
    fn from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
        let id: i64 = row.try_get("id")?;
        Ok(User {
            id,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            nickname: row.try_get("nickname")?,
            last_seen_at: row.try_get("last_seen_at")?,
            online: row.try_get::<i64, _>("online")? != 0,
            links: HashMap::from([
                ("self".to_string(), format!("/api/users/{id}")),
                (
                    "messages".to_string(),
                    format!("/api/messages?user_id={id}"),
                ),
                ("tokens".to_string(), "/api/tokens".to_string()),
            ]),
        })
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("/api/users/{}", self.id)
    }
}

/// What the users service's RPC can fail with.
#[derive(Debug, thiserror::Error, Exception)]
pub enum UsersError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for UsersError {
    fn from(e: sqlx::Error) -> Self {
        UsersError::Database(e.to_string())
    }
}

#[derive(Deserialize)]
struct NewUser {
    nickname: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
struct UserChange {
    nickname: Option<String>,
    password: Option<String>,
}

fn valid_nickname(nickname: &str) -> Api<String> {
    let nickname = nickname.trim();
    if nickname.is_empty() {
        return Err(ApiError::BadRequest("the nickname is empty".into()));
    }
    if nickname.chars().count() > MAX_NICKNAME {
        return Err(ApiError::BadRequest(format!(
            "the nickname is longer than {MAX_NICKNAME} characters"
        )));
    }
    if nickname.contains(':') {
        // Basic auth (`POST /api/tokens`) splits at the first colon: such a
        // user could never sign in.
        return Err(ApiError::BadRequest(
            "the nickname cannot contain `:`".into(),
        ));
    }
    if nickname.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "the nickname has control characters".into(),
        ));
    }
    Ok(nickname.to_string())
}

fn valid_password(password: &str) -> Api<()> {
    if password.is_empty() {
        return Err(ApiError::BadRequest("the password is empty".into()));
    }
    if password.chars().count() > MAX_PASSWORD {
        return Err(ApiError::BadRequest(format!(
            "the password is longer than {MAX_PASSWORD} characters"
        )));
    }
    Ok(())
}

/// Hashes a password with argon2id and a random salt, off the async threads.
async fn hash_password(password: String) -> Api<String> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

/// Checks a password against its hash (constant time), off the async threads.
async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// The users service.
#[derive(Dependencies)]
pub struct Users {
    db: Database,
    auth: Auth,
    events: EventDispatcher,
    tokens: TokensClient,
}

impl Default for Users {
    fn default() -> Self {
        Users {
            db: Database::new(DATABASE_KEY, "users.sqlite", MIGRATIONS),
            auth: Auth::default(),
            events: EventDispatcher::default(),
            tokens: TokensClient::default(),
        }
    }
}

#[service(name = "users", events = ["updated_model"])]
impl Users {
    /// `POST /api/users`: registers a user; 201 with `Location`.
    #[http(POST, "/api/users")]
    async fn create(&self, body: Result<Bytes, BytesRejection>) -> Api<Response> {
        let new: NewUser = json_body(&crate::api::body(body)?)?;
        let (Some(nickname), Some(password)) = (new.nickname, new.password) else {
            return Err(ApiError::BadRequest(
                "nickname and password are required".into(),
            ));
        };
        let nickname = valid_nickname(&nickname)?;
        valid_password(&password)?;
        let hash = hash_password(password).await?;
        let now = now();
        let row = sqlx::query(&format!(
            "INSERT INTO users (created_at, updated_at, last_seen_at, nickname, password_hash, online)
             VALUES ($1, $2, $3, $4, $5, 0) RETURNING {COLUMNS}"
        ))
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(&nickname)
        .bind(&hash)
        .fetch_one(self.db.pool()?)
        .await;
        let user = match row {
            Ok(row) => User::from_row(&row)?,
            Err(e) if is_unique_violation(&e) => {
                return Err(ApiError::BadRequest("the nickname is taken".into()))
            }
            Err(e) => return Err(e.into()),
        };
        self.changed(&user).await;
        Ok(created(&user.url(), &user))
    }

    /// `GET /api/users?online=&updated_since=`.
    #[http(GET, "/api/users")]
    async fn list(
        &self,
        headers: HeaderMap,
        Query(query): Query<HashMap<String, String>>,
    ) -> Api<Json<serde_json::Value>> {
        self.token_ping(&headers).await?;
        let updated_since = int_query(&query, "updated_since")?;
        let online = query
            .get("online")
            .filter(|v| !v.is_empty())
            .map(|v| i64::from(v != "0"));
        let mut sql = format!("SELECT {COLUMNS} FROM users WHERE 1 = 1");
        let mut binds = Vec::new();
        if let Some(online) = online {
            binds.push(online);
            sql.push_str(&format!(" AND online = ${}", binds.len()));
        }
        if let Some(since) = updated_since {
            binds.push(since);
            sql.push_str(&format!(" AND updated_at >= ${}", binds.len()));
        }
        sql.push_str(" ORDER BY updated_at ASC, nickname ASC");
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        let users = q
            .fetch_all(self.db.pool()?)
            .await?
            .iter()
            .map(User::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Json(json!({ "users": users })))
    }

    /// `GET /api/users/me` with Basic auth: the user, pinged.
    #[http(GET, "/api/users/me")]
    async fn me(&self, headers: HeaderMap) -> Api<Json<User>> {
        let (nickname, password) = crate::auth::basic(&headers).ok_or(ApiError::Unauthorized)?;
        let id = self
            .check(nickname, password)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let user = self
            .set_online(id, true)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Json(user))
    }

    /// `PUT /api/users/me`: a ping.
    #[http(PUT, "/api/users/me")]
    async fn ping_me(&self, headers: HeaderMap) -> Api<StatusCode> {
        let claims = self.auth.required(&headers)?;
        self.set_online(claims.user_id, true).await?;
        Ok(StatusCode::NO_CONTENT)
    }

    /// `DELETE /api/users/me`: signs off (offline now).
    #[http(DELETE, "/api/users/me")]
    async fn sign_off(&self, headers: HeaderMap) -> Api<StatusCode> {
        let claims = self.auth.required(&headers)?;
        self.set_online(claims.user_id, false).await?;
        Ok(StatusCode::NO_CONTENT)
    }

    /// `GET /api/users/{id}`.
    #[http(GET, "/api/users/{id}")]
    async fn get(&self, headers: HeaderMap, Path(id): Path<String>) -> Api<Json<User>> {
        self.token_ping(&headers).await?;
        let id = path_id(&id, "user")?;
        Ok(Json(self.find(id).await?.ok_or_else(|| {
            ApiError::NotFound(format!("no user {id}"))
        })?))
    }

    /// `PUT /api/users/{id}`: renames and/or changes the password of the
    /// token's own account; 204.
    #[http(PUT, "/api/users/{id}")]
    async fn update(
        &self,
        headers: HeaderMap,
        Path(id): Path<String>,
        body: Result<Bytes, BytesRejection>,
    ) -> Api<Response> {
        let claims = self
            .token_ping(&headers)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let id = path_id(&id, "user")?;
        if self.find(id).await?.is_none() {
            return Err(ApiError::NotFound(format!("no user {id}")));
        }
        if claims.user_id != id {
            return Err(ApiError::Forbidden("this is another user's account".into()));
        }
        let change: UserChange = json_body(&crate::api::body(body)?)?;
        let nickname = change.nickname.as_deref().map(valid_nickname).transpose()?;
        let hash = match change.password {
            Some(p) => {
                valid_password(&p)?;
                Some(hash_password(p).await?)
            }
            None => None,
        };
        let row = sqlx::query(&format!(
            "UPDATE users SET nickname = COALESCE($1, nickname),
                 password_hash = COALESCE($2, password_hash), updated_at = $3
             WHERE id = $4 RETURNING {COLUMNS}"
        ))
        .bind(nickname)
        .bind(hash)
        .bind(now())
        .bind(id)
        .fetch_optional(self.db.pool()?)
        .await;
        match row {
            Ok(Some(row)) => self.changed(&User::from_row(&row)?).await,
            Ok(None) => return Err(ApiError::NotFound(format!("no user {id}"))),
            Err(e) if is_unique_violation(&e) => {
                return Err(ApiError::BadRequest("the nickname is taken".into()))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    /// Over RPC, for the tokens service: the id of the user with this
    /// nickname and password (pinged), or `None`.
    #[rpc]
    async fn check_password(
        &self,
        nickname: String,
        password: String,
    ) -> Result<Option<i64>, UsersError> {
        let Some(id) = self.check(nickname, password).await? else {
            return Ok(None);
        };
        Ok(self.set_online(id, true).await?.map(|u| u.id))
    }

    /// Over RPC, for the push service: pings a user; false if there is no
    /// such user.
    #[rpc]
    async fn ping(&self, user_id: i64) -> Result<bool, UsersError> {
        Ok(self.set_online(user_id, true).await?.is_some())
    }

    /// Over RPC, for the push service: marks a user offline.
    #[rpc]
    async fn sign_out(&self, user_id: i64) -> Result<bool, UsersError> {
        Ok(self.set_online(user_id, false).await?.is_some())
    }

    /// Every 5 s: users not pinged for a minute go offline. Each row is
    /// switched by one `UPDATE … RETURNING`, so however many instances
    /// sweep, each change happens (and is announced) once.
    #[timer(interval = "5s")]
    async fn sweep(&self) {
        let now = now();
        let rows = match self.db.pool() {
            Ok(pool) => {
                sqlx::query(&format!(
                    "UPDATE users SET online = 0, updated_at = $1
                     WHERE online = 1 AND last_seen_at < $2 RETURNING {COLUMNS}"
                ))
                .bind(now)
                .bind(now - ONLINE_FOR)
                .fetch_all(pool)
                .await
            }
            Err(e) => Err(e),
        };
        match rows {
            Ok(rows) => {
                for row in rows {
                    if let Ok(user) = User::from_row(&row) {
                        self.changed(&user).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
        }
    }

    /// A token was revoked: every instance learns it at once.
    #[event_handler("tokens", "token_revoked", handler_type = "broadcast")]
    async fn token_revoked(&self, revocation: Revocation) {
        self.auth.revoke(&revocation);
    }

    /// The whole revocation list: at start (retried every second until
    /// the tokens service answers), then every 10 s.
    #[timer(interval = "1s", eager = true)]
    async fn sync_revocations(&self) {
        crate::tokens::sync_revocations(&self.auth, &self.tokens).await;
    }
}

impl Users {
    /// A valid bearer token on a users request counts as a ping of its
    /// owner (before the route runs). Returns its claims.
    async fn token_ping(&self, headers: &HeaderMap) -> Api<Option<crate::auth::Claims>> {
        let claims = self.auth.optional(headers)?;
        if let Some(c) = &claims {
            self.set_online(c.user_id, true).await?;
        }
        Ok(claims)
    }

    async fn find(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool()?)
            .await?
            .as_ref()
            .map(User::from_row)
            .transpose()
    }

    /// The id of the user if the password is theirs.
    async fn check(&self, nickname: String, password: String) -> Result<Option<i64>, sqlx::Error> {
        if nickname.is_empty() || password.is_empty() {
            return Ok(None);
        }
        let row = sqlx::query("SELECT id, password_hash FROM users WHERE nickname = $1")
            .bind(&nickname)
            .fetch_optional(self.db.pool()?)
            .await?;
        let Some(row) = row else {
            // As long as a real check, so timing does not tell who exists.
            let _ = verify_password(password, DUMMY_HASH.to_string()).await;
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        let hash: String = row.try_get("password_hash")?;
        Ok(verify_password(password, hash).await.then_some(id))
    }

    /// Pings (online) or signs off (offline) a user; `None` if there is no
    /// such user.
    async fn set_online(&self, id: i64, online: bool) -> Result<Option<User>, sqlx::Error> {
        let now = now();
        let pool = self.db.pool()?;
        let row = if online {
            sqlx::query(&format!(
                "UPDATE users SET online = 1, last_seen_at = $1, updated_at = $2
                 WHERE id = $3 RETURNING {COLUMNS}"
            ))
            .bind(now)
            .bind(now)
            .bind(id)
            .fetch_optional(pool)
            .await?
        } else {
            sqlx::query(&format!(
                "UPDATE users SET online = 0, updated_at = $1 WHERE id = $2 RETURNING {COLUMNS}"
            ))
            .bind(now)
            .bind(id)
            .fetch_optional(pool)
            .await?
        };
        let user = row.as_ref().map(User::from_row).transpose()?;
        if let Some(user) = &user {
            self.changed(user).await;
        }
        Ok(user)
    }

    /// Tells every push instance (and anyone listening) about a change.
    async fn changed(&self, user: &User) {
        let event = json!({ "class": "User", "model": user });
        if let Err(e) = self.events.dispatch("updated_model", event).await {
            tracing::warn!(error = %e, "could not dispatch updated_model");
        }
    }
}

/// An argon2 hash of a password nobody has, checked when the nickname is
/// unknown.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0uY7wVtm+pX0Ix2P7VZ4L+gz6hEXwWd2R9r+B5Yyq0k";
