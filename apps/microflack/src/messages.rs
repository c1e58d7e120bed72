//! The messages service at `/api/messages`: post, read, edit and list chat
//! messages. Markdown is rendered when a message is stored; link previews
//! are fetched afterwards, at most [`RENDERERS`] messages at a time, and are
//! durable: a message whose previews are still due (`previews_due`) when
//! its instance stops gets them from whichever instance runs next.
//! Every insert and update dispatches `updated_model`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shimeji::dependency::{Dependency, DependencyError, SetupContext};
use shimeji::prelude::*;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::Semaphore;

use crate::api::{created, int_query, json_body, now, path_id, Api, ApiError};
use crate::auth::{Auth, Revocation};
use crate::db::{Database, Step};
use crate::list_cache::{ListCache, Lookup, Snapshot};
use crate::preview::{Previewer, ALLOW_PRIVATE_KEY};
use crate::tokens::TokensClient;

/// Config key of the messages database URL.
pub const DATABASE_KEY: &str = "MESSAGES_DATABASE_URL";
/// Messages whose previews are fetched at once, per instance.
pub const RENDERERS: usize = 4;
/// The list never goes back further than this, in seconds.
pub const WINDOW: i64 = 24 * 3600;
/// Longest message source, in bytes.
pub const MAX_SOURCE: usize = 16 * 1024;
/// Previews due for this long are taken over by the sweep (their instance
/// is presumed gone).
pub const STALE_AFTER: i64 = 30;

const MIGRATIONS: &[Step] = &[
    Step {
        version: 1,
        description: "messages",
        sqlite: "CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        source TEXT NOT NULL,
        html TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        revision INTEGER NOT NULL DEFAULT 0,
        previews_due INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX messages_updated_at ON messages (updated_at);
    CREATE INDEX messages_previews_due ON messages (previews_due);",
        postgres: "CREATE TABLE messages (
        id BIGSERIAL PRIMARY KEY,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        source TEXT NOT NULL,
        html TEXT NOT NULL,
        user_id BIGINT NOT NULL,
        revision BIGINT NOT NULL DEFAULT 0,
        previews_due BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX messages_updated_at ON messages (updated_at);
    CREATE INDEX messages_previews_due ON messages (previews_due);",
    },
    Step {
        version: 2,
        description: "idempotent posts: the key a client picked for a post",
        sqlite: "ALTER TABLE messages ADD COLUMN client_key TEXT;
    CREATE UNIQUE INDEX messages_client_key ON messages (user_id, client_key);",
        postgres: "ALTER TABLE messages ADD COLUMN client_key TEXT;
    CREATE UNIQUE INDEX messages_client_key ON messages (user_id, client_key);",
    },
];

/// The longest `client_key` a post may carry.
pub const MAX_CLIENT_KEY: usize = 64;

/// The columns of a [`Message`], in the order `Message::from_row` reads them.
const COLUMNS: &str = "id, created_at, updated_at, source, html, user_id, revision";

/// A message as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// Its id.
    pub id: i64,
    /// Posted, UNIX seconds.
    pub created_at: i64,
    /// Last changed, UNIX seconds.
    pub updated_at: i64,
    /// The markdown as typed.
    pub source: String,
    /// The rendered, sanitised HTML (and link previews).
    pub html: String,
    /// Its author.
    pub user_id: i64,
    /// `self` and `user`.
    #[serde(rename = "_links")]
    pub links: HashMap<String, String>,
    #[serde(skip)]
    revision: i64,
}

impl Message {
    /// A message with its links.
    pub(crate) fn new(
        id: i64,
        created_at: i64,
        updated_at: i64,
        source: String,
        html: String,
        user_id: i64,
        revision: i64,
    ) -> Message {
        Message {
            id,
            created_at,
            updated_at,
            source,
            html,
            user_id,
            links: HashMap::from([
                ("self".to_string(), format!("/api/messages/{id}")),
                ("user".to_string(), format!("/api/users/{user_id}")),
            ]),
            revision,
        }
    }

    /// A row of [`COLUMNS`], read by position.
    fn from_row(row: &AnyRow) -> Result<Message, sqlx::Error> {
        Ok(Message::new(
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
            row.try_get(5)?,
            row.try_get(6)?,
        ))
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("/api/messages/{}", self.id)
    }
}

/// What the messages service's RPC can fail with.
#[derive(Debug, thiserror::Error, Exception)]
pub enum MessagesError {
    /// The message is not acceptable (empty, too long).
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
}

impl From<ApiError> for MessagesError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::BadRequest(m) => MessagesError::Invalid(m),
            other => MessagesError::Database(other.to_string()),
        }
    }
}

#[derive(Deserialize)]
struct NewMessage {
    source: Option<serde_json::Value>,
    /// Makes a post idempotent: a post repeated with the same key (after
    /// a lost acknowledgement, a cut connection) returns the message the
    /// first one stored instead of storing it twice.
    client_key: Option<serde_json::Value>,
}

fn valid_client_key(key: Option<serde_json::Value>) -> Api<Option<String>> {
    match key {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(k)) if !k.is_empty() && k.len() <= MAX_CLIENT_KEY => {
            Ok(Some(k))
        }
        Some(_) => Err(ApiError::BadRequest(format!(
            "`client_key` must be a string of 1 to {MAX_CLIENT_KEY} bytes"
        ))),
    }
}

fn valid_source(source: Option<serde_json::Value>) -> Api<String> {
    let source = match source {
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(ApiError::BadRequest("`source` must be a string".into())),
        None => return Err(ApiError::BadRequest("`source` is required".into())),
    };
    if source.trim().is_empty() {
        return Err(ApiError::BadRequest("the message is empty".into()));
    }
    if source.len() > MAX_SOURCE {
        return Err(ApiError::BadRequest(format!(
            "the message is longer than {MAX_SOURCE} bytes"
        )));
    }
    Ok(source)
}

/// The preview fetcher of an instance and what bounds it: a dependency,
/// set up from `LINK_PREVIEWS_ALLOW_PRIVATE`.
#[derive(Clone, Default)]
pub struct Previews {
    previewer: Arc<OnceLock<Previewer>>,
    permits: Arc<OnceLock<Arc<Semaphore>>>,
    resumed: Arc<AtomicBool>,
}

impl Dependency for Previews {
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        Box::pin(async move {
            let allow = ctx
                .config()
                .get::<serde_json::Value>(ALLOW_PRIVATE_KEY)
                .ok()
                .flatten()
                .is_some_and(|v| matches!(v.to_string().trim_matches('"'), "1" | "true"));
            if allow {
                tracing::warn!("link previews may fetch private addresses ({ALLOW_PRIVATE_KEY})");
            }
            let previewer = Previewer::new(allow)
                .map_err(|e| DependencyError::new("previews", e.to_string()))?;
            let _ = self.previewer.set(previewer);
            let _ = self.permits.set(Arc::new(Semaphore::new(RENDERERS)));
            Ok(())
        })
    }
}

/// The messages service.
#[derive(Dependencies)]
pub struct Messages {
    db: Database,
    auth: Auth,
    events: EventDispatcher,
    tokens: TokensClient,
    previews: Previews,
    list: ListCache,
}

impl Default for Messages {
    fn default() -> Self {
        Messages {
            db: Database::new(DATABASE_KEY, "messages.sqlite", MIGRATIONS),
            auth: Auth::default(),
            events: EventDispatcher::default(),
            tokens: TokensClient::default(),
            previews: Previews::default(),
            list: ListCache::default(),
        }
    }
}

#[service(name = "messages", events = ["updated_model"])]
impl Messages {
    /// `POST /api/messages` `{"source": …, "client_key": …}`: 201 with
    /// `Location`. `client_key` (optional) makes the post idempotent.
    #[http(POST, "/api/messages")]
    async fn create(
        &self,
        headers: HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Api<Response> {
        let claims = self.auth.required(&headers)?;
        let new: NewMessage = json_body(&crate::api::body(body)?)?;
        let source = valid_source(new.source)?;
        let key = valid_client_key(new.client_key)?;
        let message = self.insert(claims.user_id, source, key).await?;
        Ok(created(&message.url(), &message))
    }

    /// `GET /api/messages?updated_since=&user_id=`: at most a day back,
    /// oldest change first; answered from the [`ListCache`].
    #[http(GET, "/api/messages")]
    async fn list(
        &self,
        headers: HeaderMap,
        Query(query): Query<HashMap<String, String>>,
    ) -> Api<Response> {
        self.auth.optional(&headers)?;
        let floor = now() - WINDOW;
        let since = int_query(&query, "updated_since")?.unwrap_or(0).max(floor);
        let user_id = int_query(&query, "user_id")?;
        let body = match self.list.lookup(since, user_id) {
            Lookup::Hit(body) => body,
            Lookup::Load(ticket) => {
                let messages = self.select(floor, None).await?;
                self.list
                    .store(ticket, floor, &messages)
                    .map_err(ApiError::internal)?
                    .answer(since, user_id)
            }
            Lookup::Direct => {
                let messages = self.select(since, user_id).await?;
                Snapshot::new(since, &messages)
                    .map_err(ApiError::internal)?
                    .answer(since, None)
            }
        };
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    }

    /// `GET /api/messages/{id}`.
    #[http(GET, "/api/messages/{id}")]
    async fn get(&self, headers: HeaderMap, Path(id): Path<String>) -> Api<Json<Message>> {
        self.auth.optional(&headers)?;
        let id = path_id(&id, "message")?;
        Ok(Json(self.find(id).await?.ok_or_else(|| {
            ApiError::NotFound(format!("no message {id}"))
        })?))
    }

    /// `PUT /api/messages/{id}` `{"source": …}`: edits the token's own
    /// message; 204.
    #[http(PUT, "/api/messages/{id}")]
    async fn update(
        &self,
        headers: HeaderMap,
        Path(id): Path<String>,
        body: Result<Bytes, BytesRejection>,
    ) -> Api<Response> {
        let claims = self.auth.required(&headers)?;
        let id = path_id(&id, "message")?;
        let message = self
            .find(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no message {id}")))?;
        if message.user_id != claims.user_id {
            return Err(ApiError::Forbidden("this is another user's message".into()));
        }
        let change: NewMessage = json_body(&crate::api::body(body)?)?;
        if change.source.is_some() {
            let source = valid_source(change.source)?;
            let html = crate::render::render(&source);
            let due = i64::from(!crate::preview::links(&html).is_empty());
            let row = sqlx::query(&format!(
                "UPDATE messages SET source = $1, html = $2, previews_due = $3,
                     revision = revision + 1, updated_at = $4
                 WHERE id = $5 RETURNING {COLUMNS}"
            ))
            .bind(&source)
            .bind(&html)
            .bind(due)
            .bind(now())
            .bind(id)
            .fetch_optional(self.db.pool()?)
            .await?;
            if let Some(row) = row {
                let message = Message::from_row(&row)?;
                self.changed(&message).await;
                if due == 1 {
                    self.preview_later(message);
                }
            }
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    /// Over RPC, for the push service: posts a message for `user_id`;
    /// `client_key` as for `POST /api/messages`.
    #[rpc]
    async fn post(
        &self,
        user_id: i64,
        source: String,
        client_key: Option<String>,
    ) -> Result<Message, MessagesError> {
        let source = valid_source(Some(serde_json::Value::String(source)))?;
        let key = valid_client_key(client_key.map(serde_json::Value::String))?;
        Ok(self.insert(user_id, source, key).await?)
    }

    /// At start, then every 10 s: previews still due from a stopped
    /// instance (at start: all of them; later: those due for a while).
    #[timer(interval = "10s", eager = true)]
    async fn resume_previews(&self) {
        let first = !self.previews.resumed.swap(true, Ordering::SeqCst);
        let before = if first { i64::MAX } else { now() - STALE_AFTER };
        let rows = match self.db.pool() {
            Ok(pool) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM messages WHERE previews_due = 1 AND updated_at <= $1
                     ORDER BY id LIMIT 100"
                ))
                .bind(before)
                .fetch_all(pool)
                .await
            }
            Err(e) => Err(e),
        };
        match rows {
            Ok(rows) => {
                for row in rows {
                    if let Ok(message) = Message::from_row(&row) {
                        self.fetch_previews(message).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for due previews"),
        }
    }

    /// A message changed, in this instance or in another one sharing the
    /// database: the cached list is stale.
    #[event_handler("messages", "updated_model", handler_type = "broadcast")]
    async fn message_changed(&self, _event: serde::de::IgnoredAny) {
        self.list.clear();
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

impl Messages {
    /// The messages updated at `since` or later (of `user_id`, if given),
    /// in list order.
    async fn select(&self, since: i64, user_id: Option<i64>) -> Result<Vec<Message>, sqlx::Error> {
        let mut sql = format!("SELECT {COLUMNS} FROM messages WHERE updated_at >= $1");
        if user_id.is_some() {
            sql.push_str(" AND user_id = $2");
        }
        sql.push_str(" ORDER BY updated_at ASC, id ASC");
        let mut q = sqlx::query(&sql).bind(since);
        if let Some(user_id) = user_id {
            q = q.bind(user_id);
        }
        q.fetch_all(self.db.pool()?)
            .await?
            .iter()
            .map(Message::from_row)
            .collect()
    }

    async fn find(&self, id: i64) -> Result<Option<Message>, sqlx::Error> {
        self.find_one(
            sqlx::query(&format!("SELECT {COLUMNS} FROM messages WHERE id = $1")).bind(id),
        )
        .await
    }

    /// The message `user_id` posted with `key`.
    async fn find_by_key(&self, user_id: i64, key: &str) -> Result<Option<Message>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM messages WHERE user_id = $1 AND client_key = $2");
        self.find_one(sqlx::query(&sql).bind(user_id).bind(key))
            .await
    }

    /// The message `query` selects ([`COLUMNS`]), if any.
    async fn find_one<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Option<Message>, sqlx::Error> {
        query
            .fetch_optional(self.db.pool()?)
            .await?
            .as_ref()
            .map(Message::from_row)
            .transpose()
    }

    /// Stores a new message, rendered; its previews follow. With a `key`
    /// already used by `user_id`, the message stored then.
    async fn insert(&self, user_id: i64, source: String, key: Option<String>) -> Api<Message> {
        if let Some(key) = &key {
            if let Some(stored) = self.find_by_key(user_id, key).await? {
                return Ok(stored);
            }
        }
        let html = crate::render::render(&source);
        let due = i64::from(!crate::preview::links(&html).is_empty());
        let now = now();
        let row = sqlx::query(&format!(
            "INSERT INTO messages
                 (created_at, updated_at, source, html, user_id, revision, previews_due, client_key)
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7)
             ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
        ))
        .bind(now)
        .bind(now)
        .bind(&source)
        .bind(&html)
        .bind(user_id)
        .bind(due)
        .bind(key.as_deref())
        .fetch_optional(self.db.pool()?)
        .await?;
        let Some(row) = row else {
            // The same key, posted at the same moment through another
            // instance: that one stored it.
            let key = key.as_deref().unwrap_or_default();
            return self.find_by_key(user_id, key).await?.ok_or_else(|| {
                ApiError::Unavailable("the message could not be stored; try again".into())
            });
        };
        let message = Message::from_row(&row)?;
        self.changed(&message).await;
        if due == 1 {
            self.preview_later(message.clone());
        }
        Ok(message)
    }

    /// Fetches the previews of `message` in a task of its own.
    fn preview_later(&self, message: Message) {
        let this = PreviewJob {
            db: self.db.clone(),
            events: self.events.clone(),
            previews: self.previews.clone(),
            list: self.list.clone(),
        };
        shimeji::spawn(async move { this.run(message).await });
    }

    async fn fetch_previews(&self, message: Message) {
        PreviewJob {
            db: self.db.clone(),
            events: self.events.clone(),
            previews: self.previews.clone(),
            list: self.list.clone(),
        }
        .run(message)
        .await
    }

    async fn changed(&self, message: &Message) {
        announce(&self.events, &self.list, message).await;
    }
}

/// A message was written: the cached list is cleared, then
/// `updated_model` dispatched (before the write is acknowledged).
async fn announce(events: &EventDispatcher, list: &ListCache, message: &Message) {
    list.clear();
    let event = json!({ "class": "Message", "model": message });
    if let Err(e) = events.dispatch("updated_model", event).await {
        tracing::warn!(error = %e, "could not dispatch updated_model");
    }
}

/// What fetching a message's previews needs, owned, for a task.
struct PreviewJob {
    db: Database,
    events: EventDispatcher,
    previews: Previews,
    list: ListCache,
}

impl PreviewJob {
    async fn run(self, message: Message) {
        let (Some(previewer), Some(permits)) =
            (self.previews.previewer.get(), self.previews.permits.get())
        else {
            return;
        };
        let Ok(_permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let base = crate::render::render(&message.source);
        let extra = previewer.previews(&base).await;
        let Ok(pool) = self.db.pool() else { return };
        let result = if extra.is_empty() {
            sqlx::query("UPDATE messages SET previews_due = 0 WHERE id = $1 AND revision = $2")
                .bind(message.id)
                .bind(message.revision)
                .execute(pool)
                .await
                .map(|_| None)
        } else {
            sqlx::query(&format!(
                "UPDATE messages SET html = $1, previews_due = 0, updated_at = $2
                 WHERE id = $3 AND revision = $4 RETURNING {COLUMNS}"
            ))
            .bind(format!("{base}{extra}"))
            .bind(now())
            .bind(message.id)
            .bind(message.revision)
            .fetch_optional(pool)
            .await
            .and_then(|row| row.as_ref().map(Message::from_row).transpose())
        };
        match result {
            Ok(Some(updated)) => announce(&self.events, &self.list, &updated).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(message = message.id, error = %e, "cannot store previews"),
        }
    }
}
