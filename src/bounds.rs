//! Bounded waits: how long an API statement may run and a request may wait for a pooled
//! connection before it is answered 503 with `Retry-After`, and how long a stop may take.
//! Also which database errors mean "unavailable, retry later" rather than a bug.
//!
//! Only the API's pool gets the statement timeout. Migrations, the catch-up of inline read
//! models at start, rebuilds and the background runners legitimately run long statements
//! (building an index over the whole log, waiting for a projection's apply lock), and a
//! runner cancelled mid-batch would only retry the same batch: they run on pools derived from
//! the API pool's connect options, which do not carry the timeout (it is set per connection
//! after connecting, see [`api_pool`]).
//!
//! The lowest floor with `config`: it imports nothing of the crate.

use std::time::Duration;

use clap::Args;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};

/// How long a client is told to wait before retrying a 503.
pub const RETRY_AFTER_SECS: u64 = 2;

/// The database timeouts, from the environment (flattened into `DatabaseConfig`).
#[derive(Debug, Clone, Args)]
pub struct DatabaseBoundsConfig {
    /// Longest an API request's statement may run, lock waits included, in milliseconds; past
    /// it the request is answered 503 with `Retry-After`. 0: no limit. Background work
    /// (runners, rebuilds, migrations) has none.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub database_statement_timeout_ms: u64,
    /// Longest a request waits for a pooled connection, in milliseconds; past it the request
    /// is answered 503 with `Retry-After`.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 5_000)]
    pub database_acquire_timeout_ms: u64,
}

impl DatabaseBoundsConfig {
    pub fn bounds(&self) -> DatabaseBounds {
        DatabaseBounds {
            statement_timeout: (self.database_statement_timeout_ms > 0)
                .then(|| Duration::from_millis(self.database_statement_timeout_ms)),
            acquire_timeout: Duration::from_millis(self.database_acquire_timeout_ms.max(1)),
        }
    }
}

/// The bounds the API pool runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseBounds {
    /// `None`: statements may run as long as they take.
    pub statement_timeout: Option<Duration>,
    pub acquire_timeout: Duration,
}

impl Default for DatabaseBounds {
    fn default() -> Self {
        Self {
            statement_timeout: Some(Duration::from_secs(10)),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// How long a stop may take (flattened into `ServeConfig`).
#[derive(Debug, Clone, Args)]
pub struct ShutdownConfig {
    /// After a stop signal: how long in-flight requests get to finish, and then how long the
    /// projection runners, the Stripe inbox and the mailer get to finish their current work,
    /// in seconds. What is still running then is abandoned (it is retried by the next start).
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

impl ShutdownConfig {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// The API's pool: the connections of `base` (same server, same size) with `bounds`. The
/// statement timeout is set by `SET` after connecting rather than in the connect options, so
/// a pool derived from this one's `connect_options()` (the background pool) has none.
pub fn api_pool(base: &PgPool, bounds: DatabaseBounds) -> PgPool {
    let statement_timeout = bounds.statement_timeout.map_or(0, |t| t.as_millis().max(1));
    PgPoolOptions::new()
        .max_connections(base.options().get_max_connections())
        .acquire_timeout(bounds.acquire_timeout)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute(format!("SET statement_timeout = {statement_timeout}").as_str())
                    .await?;
                Ok(())
            })
        })
        .connect_lazy_with((*base.connect_options()).clone())
}

/// A pool on the same server as `pool`, without its statement timeout (see the module docs).
pub fn unbounded_pool(pool: &PgPool, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// Whether `err` says the database is unavailable for now (a client should retry later)
/// rather than that the statement is wrong: no connection free in time, none possible, a
/// statement cancelled by its timeout, a lock not granted, a server shutting down or out of
/// resources, a serialization failure or deadlock.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources; 57: operator
            // intervention (57014 query_canceled is the statement timeout, 57P01 a shutdown);
            // 55P03 lock_not_available; 40001 serialization_failure; 40P01 deadlock_detected.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || matches!(code.as_ref(), "55P03" | "40001" | "40P01")
        }),
        _ => false,
    }
}

/// Whether `err` or any error in its source chain is a database error that
/// [`is_unavailable`] (errors that crates wrap, such as postgres-es's, keep it as a source).
pub fn caused_by_unavailable(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err
            .downcast_ref::<sqlx::Error>()
            .is_some_and(is_unavailable)
        {
            return true;
        }
        next = err.source();
    }
    false
}
