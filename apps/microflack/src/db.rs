//! A service's database: SQLite under the data folder by default, or the
//! PostgreSQL (or SQLite) URL its config key names; migrations applied at
//! start. One code path for both through sqlx's `Any` driver: queries use
//! `$1, $2, …` placeholders in order, integers are `i64`, booleans 0/1.

use futures::future::BoxFuture;
use shimeji::config::redact_uri;
use shimeji::dependency::{Dependency, DependencyError, SetupContext};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::AnyPool;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

/// The config key of the data folder.
pub const DATA_KEY: &str = "MICROFLACK_DATA";
/// The data folder when `MICROFLACK_DATA` is unset.
pub const DEFAULT_DATA: &str = "./microflack-data";

/// One migration, written for each backend.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Its version (1, 2, …).
    pub version: i64,
    /// What it does.
    pub description: &'static str,
    /// Its SQL for SQLite.
    pub sqlite: &'static str,
    /// Its SQL for PostgreSQL.
    pub postgres: &'static str,
}

/// A database a service owns: a dependency that connects and migrates at
/// setup and closes at stop.
#[derive(Clone)]
pub struct Database {
    url_key: &'static str,
    file: &'static str,
    steps: &'static [Step],
    pool: Arc<OnceLock<AnyPool>>,
}

impl Database {
    /// The database named by config key `url_key`, else the SQLite `file`
    /// in the data folder, migrated by `steps`.
    pub fn new(url_key: &'static str, file: &'static str, steps: &'static [Step]) -> Self {
        Database {
            url_key,
            file,
            steps,
            pool: Arc::new(OnceLock::new()),
        }
    }

    /// The connection pool; an error before setup.
    pub fn pool(&self) -> Result<&AnyPool, sqlx::Error> {
        self.pool.get().ok_or(sqlx::Error::PoolClosed)
    }

    fn url(&self, ctx: &SetupContext) -> Result<String, DependencyError> {
        let error = |m: String| DependencyError::new(self.url_key, m);
        if let Some(url) = ctx
            .config()
            .get::<String>(self.url_key)
            .map_err(|e| error(e.to_string()))?
            .filter(|u| !u.is_empty())
        {
            return Ok(url);
        }
        let folder = ctx
            .config()
            .get::<String>(DATA_KEY)
            .map_err(|e| error(e.to_string()))?
            .unwrap_or_else(|| DEFAULT_DATA.to_string());
        std::fs::create_dir_all(&folder)
            .map_err(|e| error(format!("cannot create the data folder `{folder}`: {e}")))?;
        let path = std::path::Path::new(&folder).join(self.file);
        Ok(format!("sqlite://{}?mode=rwc", path.display()))
    }

    fn migrator(&self, postgres: bool) -> Migrator {
        let migrations: Vec<Migration> = self
            .steps
            .iter()
            .map(|s| {
                let sql = if postgres { s.postgres } else { s.sqlite };
                Migration::new(
                    s.version,
                    Cow::Borrowed(s.description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect();
        Migrator {
            migrations: Cow::Owned(migrations),
            ..Migrator::DEFAULT
        }
    }

    async fn connect(&self, url: &str) -> Result<AnyPool, String> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres");
        let pool = AnyPoolOptions::new()
            .max_connections(if postgres { 10 } else { 5 })
            .connect(url)
            .await
            .map_err(|e| format!("cannot open {}: {e}", redact_uri(url)))?;
        if !postgres {
            // Readers do not wait for the writer; several processes may
            // share the file.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .map_err(|e| format!("cannot set WAL mode: {e}"))?;
        }
        self.migrator(postgres)
            .run(&pool)
            .await
            .map_err(|e| format!("migrations of {} failed: {e}", redact_uri(url)))?;
        Ok(pool)
    }
}

impl Dependency for Database {
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        Box::pin(async move {
            if self.pool.get().is_some() {
                return Ok(());
            }
            let url = self.url(ctx)?;
            let pool = self
                .connect(&url)
                .await
                .map_err(|e| DependencyError::new(self.url_key, e))?;
            tracing::info!(service = ctx.service(), database = %redact_uri(&url), "database ready");
            let _ = self.pool.set(pool);
            Ok(())
        })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(pool) = self.pool.get() {
                pool.close().await;
            }
        })
    }
}
