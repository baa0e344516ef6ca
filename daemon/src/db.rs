//! PostgreSQL pool and embedded migrations (`daemon/migrations`).

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseConfig;

/// Connects to PostgreSQL (5 s connect timeout) and applies pending migrations.
///
/// Errors: unreachable server, bad credentials, or a failed migration (the URL is never
/// part of the message).
pub async fn connect_and_migrate(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(config.connections_max)
        .acquire_timeout(Duration::from_secs(5))
        .connect(config.url.expose_secret())
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL ([database] url): {e}"))?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("database migration failed: {e}"))?;
    Ok(pool)
}
