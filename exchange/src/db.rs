//! The ledger's PostgreSQL pool and its embedded migrations (`exchange/migrations/`).

use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseConfig;

/// The schema: journal tables (`assets`, `account_kinds`, `accounts`, `transfers`,
/// `entries`) and the deposit consumer's tables (`processed_messages`, `deposit_credits`,
/// `deposit_orphans`, `credit_reversal_alerts`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A pool that opens connections on first use, so a daemon can start while PostgreSQL is
/// down. Queries wait at most `acquire_timeout_ms` for a connection.
///
/// Errors: the URL does not parse.
pub fn connect_lazy(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(config.url.expose_secret())?
        .application_name("coinhub-exchange");
    Ok(pool_options(config).connect_lazy_with(options))
}

/// A pool with one connection already open, for one-shot commands that should fail fast.
///
/// Errors: the URL does not parse, or PostgreSQL is unreachable.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(config.url.expose_secret())?
        .application_name("coinhub-exchange");
    pool_options(config).connect_with(options).await
}

fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
}

/// Applies pending migrations. Idempotent; concurrent runs serialize on sqlx's advisory lock.
/// Safe to call again after a failure (`service::migrate_with_retry`).
///
/// Errors: PostgreSQL is unreachable, or a migration failed or was changed after it ran.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    let mut conn = pool.acquire().await?;
    let result = MIGRATOR.run(&mut *conn).await;
    if result.is_err() {
        // sqlx keeps its migration lock (a session advisory lock) when a migration fails:
        // end this session, or the next attempt would wait for it forever while it idles in
        // the pool.
        let _ = conn.close().await;
    }
    result
}
