//! Blue/green projection rebuilds: replay the whole log into shadow copies of a projection's
//! tables (a schema of their own, so the projection's SQL, which names its tables unqualified,
//! writes there through `search_path`) while the live tables keep serving reads and the runner
//! keeps applying new events to them; then, in one transaction that holds the projection's
//! apply lock (so the runner waits between two batches), apply the last events, swap the
//! tables in and move the checkpoint to where the shadow got. Replay is batched: thousands of
//! events per transaction.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use projections::{Mode, Projection, StoredEvent};
use sqlx::{PgConnection, PgPool};

use crate::eventlog::{apply_lock_key, last_below, lock_appends, read_after, Horizon, LogPosition};

const REBUILD_BATCH: i64 = 5000;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(String),
    #[error("{0} is a policy: replaying it would issue its commands again; it is not rebuilt")]
    NotRebuildable(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// How far a rebuild got, reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub applied: u64,
    pub total: u64,
    pub elapsed_secs: f64,
}

fn shadow_schema(name: &str) -> String {
    format!("rebuild_{name}")
}

fn rebuild_lock_key(name: &str) -> String {
    format!("memberledger.rebuild.{name}")
}

/// Rebuilds `projection` blue/green. `report` is called after each batch.
pub async fn rebuild(
    pool: &PgPool,
    projection: Arc<dyn Projection>,
    report: impl Fn(Progress) + Send,
) -> Result<u64, RebuildError> {
    let name = projection.name();
    if !projection.rebuildable() {
        return Err(RebuildError::NotRebuildable(name.to_owned()));
    }
    // One rebuild per projection at a time, across instances; the lock dies with the session.
    let mut lock = pool
        .acquire()
        .await
        .context("acquiring a connection")
        .map_err(RebuildError::Failed)?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
        .bind(rebuild_lock_key(name))
        .fetch_one(&mut *lock)
        .await
        .context("taking the rebuild lock")
        .map_err(RebuildError::Failed)?;
    if !locked {
        return Err(RebuildError::AlreadyRunning(name.to_owned()));
    }
    let result = run(pool, projection.as_ref(), &report).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(rebuild_lock_key(name))
        .execute(&mut *lock)
        .await;
    if let Err(err) = &result {
        let _ = sqlx::query(
            "UPDATE projection_rebuilds SET state = 'failed', error = $2, finished_at = now(), updated_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(format!("{err:#}"))
        .execute(pool)
        .await;
        let _ = sqlx::query(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            shadow_schema(name)
        ))
        .execute(pool)
        .await;
    }
    result.map_err(RebuildError::Failed)
}

async fn run(
    pool: &PgPool,
    projection: &dyn Projection,
    report: &(impl Fn(Progress) + Send),
) -> anyhow::Result<u64> {
    let name = projection.name();
    let schema = shadow_schema(name);
    let started = Instant::now();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    sqlx::query(
        "INSERT INTO projection_rebuilds (name, state, version, events_total)
         VALUES ($1, 'running', $2, $3)
         ON CONFLICT (name) DO UPDATE SET state = 'running', version = EXCLUDED.version, events_applied = 0,
             events_total = EXCLUDED.events_total, started_at = now(), updated_at = now(),
             finished_at = NULL, error = NULL",
    )
    .bind(name)
    .bind(projection.version())
    .bind(total)
    .execute(pool)
    .await?;

    let mut tx = pool.begin().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    for table in projection.tables() {
        sqlx::query(&format!(
            "CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("creating the shadow of {table}"))?;
    }
    tx.commit().await?;

    let mut position = LogPosition::default();
    let mut applied: u64 = 0;
    let progress = |applied: u64| Progress {
        applied,
        total: u64::try_from(total).unwrap_or(0).max(applied),
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    // Replay while the live tables serve.
    loop {
        let mut tx = pool.begin().await?;
        sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
            .execute(&mut *tx)
            .await?;
        let horizon = Horizon::now(&mut tx).await?;
        let n = apply_after(&mut tx, projection, &mut position, horizon).await?;
        tx.commit().await?;
        applied += n;
        record(pool, name, applied).await?;
        report(progress(applied));
        if i64::try_from(n).unwrap_or(i64::MAX) < REBUILD_BATCH {
            break;
        }
    }

    // Swap. An asynchronous projection's runner waits on the apply lock while the last events
    // go in and the tables move; an inline projection's writers are the appending transactions,
    // so appends wait (commands pause for the swap, they do not fail).
    let mut tx = pool.begin().await?;
    let horizon = match projection.mode() {
        Mode::Async => {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(apply_lock_key(name))
                .execute(&mut *tx)
                .await?;
            Horizon::now(&mut tx).await?
        }
        Mode::Inline => {
            lock_appends(&mut tx).await?;
            Horizon::Unbounded
        }
    };
    sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
        .execute(&mut *tx)
        .await?;
    loop {
        let n = apply_after(&mut tx, projection, &mut position, horizon).await?;
        applied += n;
        if i64::try_from(n).unwrap_or(i64::MAX) < REBUILD_BATCH {
            break;
        }
    }
    // Everything the projection handles below the horizon is in: its checkpoint goes to the
    // horizon, past the events it ignores.
    if let Some(end) = last_below(&mut tx, horizon).await? {
        position = position.max(end);
    }
    sqlx::query("SET LOCAL search_path TO public")
        .execute(&mut *tx)
        .await?;
    for table in projection.tables() {
        sqlx::query(&format!("DROP TABLE public.{table}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE {schema}.{table} SET SCHEMA public"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(&format!("DROP SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, version, transaction_id, global_position, events_applied, mode)
         VALUES ($1, $2, $3::text::xid8, $4, $5, $6)
         ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, transaction_id = EXCLUDED.transaction_id,
             global_position = EXCLUDED.global_position, events_applied = EXCLUDED.events_applied,
             mode = EXCLUDED.mode, updated_at = now(), last_error = NULL",
    )
    .bind(name)
    .bind(projection.version())
    .bind(position.transaction_id.to_string())
    .bind(position.global_position)
    .bind(i64::try_from(applied).unwrap_or(i64::MAX))
    .bind(mode_name(projection.mode()))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE projection_rebuilds SET state = 'done', events_applied = $2, finished_at = now(), updated_at = now()
         WHERE name = $1",
    )
    .bind(name)
    .bind(i64::try_from(applied).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    report(progress(applied));
    tracing::info!(
        projection = name,
        events = applied,
        secs = started.elapsed().as_secs_f64(),
        "projection rebuilt and swapped in"
    );
    Ok(applied)
}

/// How `projection_checkpoints.mode` names a mode.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Inline => "inline",
        Mode::Async => "async",
    }
}

/// Applies the next batch of the projection's events after `position`, below `horizon`, on
/// `conn` (whose search path picks the tables).
async fn apply_after(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    position: &mut LogPosition,
    horizon: Horizon,
) -> anyhow::Result<u64> {
    let events: Vec<StoredEvent> = read_after(
        conn,
        *position,
        REBUILD_BATCH,
        Some(projection.handles()),
        horizon,
    )
    .await?;
    projection
        .apply_batch(conn, &events)
        .await
        .with_context(|| format!("applying a batch of events to {}", projection.name()))?;
    if let Some(last) = events.last() {
        *position = LogPosition {
            transaction_id: last.transaction_id,
            global_position: last.global_position,
        };
    }
    Ok(u64::try_from(events.len()).unwrap_or(0))
}

async fn record(pool: &PgPool, name: &str, applied: u64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_rebuilds SET events_applied = $2, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(i64::try_from(applied).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// The latest rebuild of a projection.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct RebuildStatus {
    pub name: String,
    pub state: String,
    pub version: i32,
    pub events_applied: i64,
    pub events_total: i64,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub error: Option<String>,
}

pub async fn statuses(pool: &PgPool) -> Result<Vec<RebuildStatus>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, state, version, events_applied, events_total, started_at, updated_at, finished_at, error
         FROM projection_rebuilds ORDER BY name",
    )
    .fetch_all(pool)
    .await
}
