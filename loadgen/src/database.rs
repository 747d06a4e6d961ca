//! The benchmark database: connecting, what a run cost it, and whether the projections have
//! caught up.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::cli::Db;

/// A point in the database's history: the next transaction id to be assigned and the WAL
/// insert position. Both are exact, unlike the cumulative statistics views.
pub struct DbMark {
    pub next_xid: i64,
    pub lsn: String,
}

/// Writing transactions (each one a commit that waits for its WAL flush, with
/// `synchronous_commit=on`) and WAL bytes between two marks, and per unit of work.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DbCost {
    pub write_txns: i64,
    pub wal_bytes: i64,
    pub write_txns_per_unit: f64,
    pub wal_bytes_per_unit: f64,
}

pub async fn db_mark(pool: &PgPool) -> Result<DbMark> {
    let (next_xid, lsn): (i64, String) = sqlx::query_as(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, pg_current_wal_lsn()::text",
    )
    .fetch_one(pool)
    .await
    .context("reading the transaction id and WAL position")?;
    Ok(DbMark { next_xid, lsn })
}

pub async fn db_cost(pool: &PgPool, from: &DbMark, units: u64) -> Result<DbCost> {
    let to = db_mark(pool).await?;
    let wal_bytes: i64 =
        sqlx::query_scalar("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint")
            .bind(&to.lsn)
            .bind(&from.lsn)
            .fetch_one(pool)
            .await?;
    let write_txns = to.next_xid - from.next_xid;
    let units = units.max(1) as f64;
    Ok(DbCost {
        write_txns,
        wal_bytes,
        write_txns_per_unit: write_txns as f64 / units,
        wal_bytes_per_unit: wal_bytes as f64 / units,
    })
}

pub async fn connect(db: &Db, max: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&db.database_url)
        .await
        .context("connecting to the benchmark database")
}

/// Projections behind the end of the log. Cheap (an index probe per projection), unlike
/// `/readyz`, which counts each projection's unapplied events (up to 10,000; in builds
/// before eae0c3c, every one of them).
///
/// Inline projections are written with their events, and their checkpoint stays where they
/// turned inline: they are never behind. (`mode` is read through `to_jsonb` so that a build
/// from before inline projections, without the column, is measured too.)
pub async fn projections_behind(pool: &PgPool) -> Result<i64> {
    let behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projection_checkpoints c
         WHERE coalesce(to_jsonb(c)->>'mode', 'async') <> 'inline'
           AND EXISTS (SELECT 1 FROM events e
                       WHERE (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position))",
    )
    .fetch_one(pool)
    .await?;
    let checkpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_checkpoints")
        .fetch_one(pool)
        .await?;
    Ok(if checkpoints == 0 { 1 } else { behind })
}

pub async fn wait_caught_up(pool: &PgPool, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut clean = 0;
    while started.elapsed() < timeout {
        if projections_behind(pool).await? == 0 {
            clean += 1;
            if clean >= 2 {
                return Ok(started.elapsed());
            }
        } else {
            clean = 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stuck: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT name, last_error FROM projection_checkpoints WHERE last_error IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    bail!(
        "the projections did not catch up within {} s (errors: {stuck:?})",
        timeout.as_secs()
    )
}
