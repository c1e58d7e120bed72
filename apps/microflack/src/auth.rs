//! Tokens: HS256 JWTs with exactly `user_id` and `exp`, verified locally in
//! every service, and the revocations every service keeps in memory (so no
//! request waits on the network to learn whether its token was revoked).
//!
//! A revocation reaches every running instance through the tokens service's
//! `token_revoked` event (broadcast: each instance gets it); an instance
//! that starts later, or missed events while it was cut off, loads the whole
//! list from the tokens service at start and then every few seconds.

use base64::Engine;
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use shimeji::dependency::{Dependency, DependencyError, SetupContext};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::api::{now, ApiError};

/// The config key of the signing secret.
pub const SECRET_KEY: &str = "JWT_SECRET_KEY";
/// A token's lifetime, in seconds.
pub const TOKEN_LIFETIME: i64 = 3600;

/// The claims of a MicroFlack token: the original's `user_id` and `exp`,
/// and a random `jti`, so that two logins in the same second get two
/// tokens (the original's were identical: revoking one revoked both).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user the token was issued to.
    pub user_id: i64,
    /// When it expires, in UNIX seconds.
    pub exp: i64,
    /// A random id of this token (absent from the original's tokens, which
    /// are accepted too).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
}

/// A revoked token: the signature part of the token (which names it) and
/// when the token would have expired.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revocation {
    /// The token's signature (its third part).
    pub signature: String,
    /// The token's `exp`.
    pub expires_at: i64,
}

/// The signature part of a compact JWS.
pub fn signature_of(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The token verifier and issuer of a service: a dependency that reads the
/// secret (`JWT_SECRET_KEY`) at setup and holds the revocations it learnt.
#[derive(Clone, Default)]
pub struct Auth {
    keys: Arc<OnceLock<Keys>>,
    revoked: Arc<RwLock<HashMap<String, i64>>>,
    synced_at: Arc<Mutex<Option<Instant>>>,
    synced: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl Auth {
    /// An `Auth` with `secret` already set (tests, tools).
    pub fn with_secret(secret: &str) -> Self {
        let auth = Auth::default();
        auth.set_secret(secret);
        auth
    }

    fn set_secret(&self, secret: &str) {
        let _ = self.keys.set(Keys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        });
    }

    /// A token for `user_id`, valid for [`TOKEN_LIFETIME`].
    pub fn issue(&self, user_id: i64) -> Result<String, ApiError> {
        let keys = self
            .keys
            .get()
            .ok_or_else(|| ApiError::internal("no JWT secret"))?;
        let claims = Claims {
            user_id,
            exp: now() + TOKEN_LIFETIME,
            jti: format!("{:016x}", fastrand::u64(..)),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
            .map_err(ApiError::internal)
    }

    /// The claims of `token` if it is signed with the secret, unexpired and
    /// not revoked.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let keys = self.keys.get()?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
        let claims = jsonwebtoken::decode::<Claims>(token, &keys.decoding, &validation)
            .ok()?
            .claims;
        if claims.exp <= now() || self.is_revoked(token) {
            return None;
        }
        Some(claims)
    }

    /// Whether `token` was revoked.
    pub fn is_revoked(&self, token: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(signature_of(token))
    }

    /// Records a revocation.
    pub fn revoke(&self, revocation: &Revocation) {
        if revocation.expires_at < now() {
            return;
        }
        self.revoked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(revocation.signature.clone(), revocation.expires_at);
    }

    /// Records every revocation of `list` and forgets the expired ones.
    pub fn load(&self, list: &[Revocation]) {
        let now = now();
        let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        revoked.retain(|_, exp| *exp >= now);
        for r in list.iter().filter(|r| r.expires_at >= now) {
            revoked.insert(r.signature.clone(), r.expires_at);
        }
        *self.synced_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.synced.notify_waiters();
    }

    /// Whether the whole list should be loaded again: never loaded, or
    /// loaded more than `every` ago.
    pub fn sync_due(&self, every: Duration) -> bool {
        self.synced_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= every)
    }

    /// The claims of the `Authorization: Bearer` token: `Ok(None)` when
    /// there is none (another scheme, no token part), 401 when there is one
    /// that does not verify.
    pub fn optional(&self, headers: &axum::http::HeaderMap) -> Result<Option<Claims>, ApiError> {
        match bearer(headers) {
            None => Ok(None),
            Some(token) => self.verify(token).map(Some).ok_or(ApiError::Unauthorized),
        }
    }

    /// The claims of a valid `Authorization: Bearer` token, else 401.
    pub fn required(&self, headers: &axum::http::HeaderMap) -> Result<Claims, ApiError> {
        self.optional(headers)?.ok_or(ApiError::Unauthorized)
    }
}

impl Dependency for Auth {
    /// Ready once the revocation list was loaded (the service's eager timer
    /// loads it at start), so an instance started after a revocation does
    /// not register — and take requests through a router — before it knows.
    fn ready(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let synced = self.synced.notified();
                if !self.sync_due(Duration::MAX) {
                    return;
                }
                synced.await;
            }
        })
    }

    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        Box::pin(async move {
            if self.keys.get().is_some() {
                return Ok(());
            }
            let secret = ctx
                .config()
                .get::<String>(SECRET_KEY)
                .map_err(|e| DependencyError::new(SECRET_KEY, e.to_string()))?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| DependencyError::new(SECRET_KEY, "no JWT secret is configured"))?;
            self.set_secret(&secret);
            Ok(())
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme compared
/// without case); `None` for another scheme or no token part.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The nickname and password of an `Authorization: Basic` header.
pub fn basic(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (nickname, password) = text.split_once(':')?;
    Some((nickname.to_string(), password.to_string()))
}

/// A random secret for a process started without `JWT_SECRET_KEY`.
pub fn random_secret() -> String {
    (0..48).map(|_| fastrand::alphanumeric()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_revoke() {
        let auth = Auth::with_secret("s3");
        let token = auth.issue(7).unwrap();
        assert_eq!(auth.verify(&token).unwrap().user_id, 7);
        assert!(Auth::with_secret("other").verify(&token).is_none());
        assert!(auth.verify("garbage").is_none());
        auth.revoke(&Revocation {
            signature: signature_of(&token).into(),
            expires_at: now() + 10,
        });
        assert!(auth.verify(&token).is_none());
    }

    #[test]
    fn expired_tokens_fail() {
        let auth = Auth::with_secret("s3");
        let keys = auth.keys.get().unwrap();
        let old = Claims {
            user_id: 1,
            exp: now() - 1,
            jti: String::new(),
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &old, &keys.encoding).unwrap();
        assert!(auth.verify(&token).is_none());
    }

    #[test]
    fn headers() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("authorization", "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "Basic YTpiOmM=".parse().unwrap());
        assert_eq!(bearer(&h), None);
        assert_eq!(basic(&h), Some(("a".into(), "b:c".into())));
    }
}
