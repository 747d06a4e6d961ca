//! Fixed-window rate limits kept in PostgreSQL, so every server instance counts together.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Hits allowed per window.
    pub max: u32,
    pub window: Duration,
}

/// Counts a hit on `key`. `Ok(None)` when allowed; `Ok(Some(wait))` when over the limit, with
/// how long until the window resets.
pub async fn hit(pool: &PgPool, key: &str, limit: Limit) -> Result<Option<Duration>, sqlx::Error> {
    let window_secs = i64::try_from(limit.window.as_secs().max(1)).unwrap_or(i64::MAX);
    // The counter commits without waiting for its WAL flush (`set_config(..., true)` applies
    // to this statement's own transaction): a crash can forget the last fraction of a second
    // of hits, and a limited endpoint (a public read, most of them) does not wait for a disk.
    let (count, window_start): (i32, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO rate_limits (key, window_start, count)
         SELECT $1, to_timestamp(floor(extract(epoch FROM now()) / $2) * $2), 1
         FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
         ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limits.count + 1
         RETURNING count, window_start",
    )
    .bind(key)
    .bind(window_secs)
    .fetch_one(pool)
    .await?;
    if u32::try_from(count).unwrap_or(u32::MAX) <= limit.max {
        return Ok(None);
    }
    let reset = window_start + chrono::Duration::seconds(window_secs);
    let wait = (reset - Utc::now())
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_secs(1));
    Ok(Some(wait))
}

/// Forgets windows that ended over a day ago.
pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM rate_limits WHERE window_start < now() - interval '1 day'")
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
