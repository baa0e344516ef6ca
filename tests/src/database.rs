//! A fresh PostgreSQL database per test on the local server, dropped on drop.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The local server (trust authentication), overridable with `COINHUB_TEST_POSTGRES_URL`
/// (a URL of the server without a database path, e.g. `postgres://postgres@127.0.0.1:5432`).
pub fn server_url() -> String {
    std::env::var("COINHUB_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database created for one test.
pub struct Database {
    name: String,
    server: String,
}

impl Database {
    /// Creates `<prefix>_<random>`.
    ///
    /// Errors: the server is down or refuses (the message says how to start it).
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        let name = format!(
            "{prefix}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let server = server_url();
        let mut admin = connect_admin(&server).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(Self { name, server })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://.../<name>`.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// A connection to the database, for assertions on stored state.
    pub async fn connect(&self) -> anyhow::Result<PgConnection> {
        Ok(PgConnection::connect(&self.url()).await?)
    }
}

async fn connect_admin(server: &str) -> anyhow::Result<PgConnection> {
    PgConnection::connect(&format!("{server}/postgres"))
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot connect to PostgreSQL at {server} ({error}); start it, e.g. \
             pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
            )
        })
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = self.server.clone();
        // Drop runs inside the test's runtime, which must not block on itself: use a
        // thread with its own small runtime.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = connect_admin(&server).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("note: cannot drop database {}: {error:#}", self.name),
            Err(_) => eprintln!("note: dropping database {} panicked", self.name),
        }
    }
}
