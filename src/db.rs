//! Connecting to PostgreSQL (an external one, or the local cluster) and migrating it.

use std::time::Duration;

use anyhow::Context;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres, Transaction};

use crate::config::DatabaseConfig;
use crate::localpg::LocalPostgres;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The database the server uses, and the local cluster behind it when there is one.
pub struct Database {
    pub pool: PgPool,
    pub local: Option<LocalPostgres>,
}

/// Which of the server's pools a connection is taken from: the `pool` label of the pool
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolName {
    /// The API's pool (bounded, `bounds::api_pool`), which the commands, the sign-in and the
    /// mailer use too.
    Main,
    /// The projection runners', the Stripe inbox's and the start-up catch-ups' pool.
    Background,
}

impl PoolName {
    pub fn label(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Background => "background",
        }
    }
}

/// A connection from `pool`, counted: sqlx does not say how many tasks wait for one, so our
/// explicit acquisitions go through here and through [`begin`], which count the waiting tasks
/// and how long each waited (`crate::metrics::PoolWait`). Executor-style queries on `&pool`
/// are not counted.
pub async fn acquire(
    pool: &PgPool,
    name: PoolName,
) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    let _wait = crate::metrics::pool_wait(name.label());
    pool.acquire().await
}

/// A transaction on a connection from `pool`, counted like [`acquire`] (the wait includes the
/// `BEGIN`'s round trip).
pub async fn begin(
    pool: &PgPool,
    name: PoolName,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let _wait = crate::metrics::pool_wait(name.label());
    pool.begin().await
}

/// Name of the database created in the local cluster.
const LOCAL_DATABASE: &str = "memberledger";

impl Database {
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let (url, local) = match &config.database_url {
            Some(url) => (url.expose().to_owned(), None),
            None => {
                let dir = config.data_dir.join("pg");
                let local = LocalPostgres::start(&dir).await.with_context(|| {
                    format!("starting the local PostgreSQL under {}", dir.display())
                })?;
                create_database_if_missing(local.url(), LOCAL_DATABASE).await?;
                tracing::info!(port = local.port(), dir = %dir.display(), "using the local PostgreSQL cluster");
                (local.url_for(LOCAL_DATABASE), Some(local))
            }
        };
        // No statement timeout: commands and migrations may run long; `serve` bounds the API's
        // own pool (`bounds::api_pool`).
        let pool = pool_with(
            &url,
            config.database_max_connections,
            config.bounds.bounds().acquire_timeout,
        )
        .await?;
        Ok(Self { pool, local })
    }

    /// Closes the pool, then stops the local cluster if this process started it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(local) = self.local {
            local.stop().await?;
        }
        Ok(())
    }
}

pub async fn pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    pool_with(url, max_connections, Duration::from_secs(5)).await
}

/// A pool whose requests wait at most `acquire_timeout` for a connection.
pub async fn pool_with(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse::<PgConnectOptions>()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
    check_reachable(&options).await?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")
}

/// How long the first connection may take before the server is reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects once, outside the pool: the pool retries until its timeout and then reports only
/// "pool timed out", while an operator needs the cause (refused, unknown host, bad password)
/// and where it tried.
async fn check_reachable(options: &PgConnectOptions) -> anyhow::Result<()> {
    let target = describe(options);
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            tracing::debug!("PostgreSQL at {target} answers");
            Ok(())
        }
        // sqlx's own message already names the cause; its source would repeat it.
        Ok(Err(err)) => Err(anyhow::anyhow!(
            "cannot connect to PostgreSQL at {target}: {err}"
        )),
        Err(_) => anyhow::bail!(
            "cannot connect to PostgreSQL at {target}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ),
    }
}

/// `host:port, database NAME as USER` (or the socket), for messages; never the password.
fn describe(options: &PgConnectOptions) -> String {
    let place = match options.get_socket() {
        Some(socket) => format!("socket {}", socket.display()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    format!(
        "{place}, database {} as {}",
        options.get_database().unwrap_or("(default)"),
        options.get_username()
    )
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")
}

/// Creates `name` on the server behind `admin_url` unless it exists.
pub async fn create_database_if_missing(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await
        .context("connecting to the maintenance database")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        // Another process may win the race; "already exists" is fine then.
        if let Err(err) = sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&admin)
            .await
        {
            let duplicate = err
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "42P04" || code == "23505");
            if !duplicate {
                return Err(err).with_context(|| format!("creating database {name}"));
            }
        }
    }
    admin.close().await;
    Ok(())
}

/// A `LIKE` pattern matching any text that contains `text`: its `\`, `%` and `_` escaped (the
/// default escape character), between two `%`.
pub fn like_containing(text: &str) -> String {
    format!(
        "%{}%",
        text.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}
