//! Blue/green projection rebuilds: replay the log into shadow copies of projections' tables (a
//! schema per projection, so its SQL, which names its tables unqualified, writes there through
//! `search_path`) while the live tables keep serving reads and keep being written (by the
//! runner, or by the appending transactions for an inline projection); then swap each in.
//!
//! Set-based: the log is read once for every projection being rebuilt (batches of
//! [`REBUILD_BATCH`] events, each projection given those it handles and applying them with its
//! multi-row `apply_batch`), into shadow tables that carry only their constraints and unique
//! indexes (and the indexes a projection's own statements look rows up by); the other
//! secondary indexes are built once the rows are in, then the tables analyzed. The swap of a
//! projection happens in one transaction that holds its apply lock (an asynchronous
//! projection: the runner waits between two batches) or the lock on appends (an inline one:
//! commands wait, they do not fail): it applies the last events, moves the tables in and the
//! checkpoint to where the shadow got.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use projections::{Handles, Mode, Projection, StoredEvent};
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;

use crate::eventlog::{apply_lock_key, last_below, lock_appends, read_after, Horizon, LogPosition};

/// Events read and applied per transaction.
const REBUILD_BATCH: i64 = 2_500;
/// How often a projection's progress (`projection_rebuilds.events_applied`) is written while
/// it loads, at most; the swap writes the final count.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// Batches read ahead of the slowest projection: the reader goes on while a projection's
/// larger batch (say, a run of the events only it handles) is being written.
const READ_AHEAD: usize = 2;
/// Statements run at once after loading (deferred index builds, then `ANALYZE`s): one core each.
const PARALLEL_STATEMENTS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(String),
    #[error("{0} is a policy: replaying it would issue its commands again; it is not rebuilt")]
    NotRebuildable(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// How far a rebuild got, reported after every batch: `applied` counts the log's events read
/// so far (of those some projection being rebuilt handles), `total` the log's size.
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

/// Rebuilds `projection` blue/green; returns how many events it applied. `report` is called
/// after each batch.
pub async fn rebuild(
    pool: &PgPool,
    projection: Arc<dyn Projection>,
    report: impl Fn(Progress) + Send,
) -> Result<u64, RebuildError> {
    let applied = rebuild_many(pool, &[projection], report).await?;
    Ok(applied.first().map_or(0, |(_, n)| *n))
}

/// Rebuilds every projection of `list` blue/green from one pass over the log; returns each
/// one's name and the events it applied.
pub async fn rebuild_many(
    pool: &PgPool,
    list: &[Arc<dyn Projection>],
    report: impl Fn(Progress) + Send,
) -> Result<Vec<(&'static str, u64)>, RebuildError> {
    if let Some(policy) = list.iter().find(|p| !p.rebuildable()) {
        return Err(RebuildError::NotRebuildable(policy.name().to_owned()));
    }
    // One rebuild per projection at a time, across instances; the locks die with the session.
    let mut lock = pool
        .acquire()
        .await
        .context("acquiring a connection")
        .map_err(RebuildError::Failed)?;
    let mut held = Vec::new();
    for projection in list {
        let name = projection.name();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(rebuild_lock_key(name))
            .fetch_one(&mut *lock)
            .await
            .context("taking the rebuild lock")
            .map_err(RebuildError::Failed)?;
        if !locked {
            unlock(&mut lock, &held).await;
            return Err(RebuildError::AlreadyRunning(name.to_owned()));
        }
        held.push(name);
    }
    let result = run(pool, list, &report).await;
    unlock(&mut lock, &held).await;
    if let Err(err) = &result {
        for name in held {
            let _ = sqlx::query(
                "UPDATE projection_rebuilds SET state = 'failed', error = $2, finished_at = now(), updated_at = now()
                 WHERE name = $1 AND state = 'running'",
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
    }
    result.map_err(RebuildError::Failed)
}

async fn unlock(conn: &mut PgConnection, names: &[&str]) {
    for name in names {
        let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(rebuild_lock_key(name))
            .execute(&mut *conn)
            .await;
    }
}

/// A projection being rebuilt: where its shadow got, and how many events it applied.
struct Shadow {
    projection: Arc<dyn Projection>,
    schema: String,
    /// Secondary indexes built once the rows are in (`CREATE INDEX` statements).
    deferred_indexes: Vec<String>,
    position: LogPosition,
    applied: u64,
}

async fn run(
    pool: &PgPool,
    list: &[Arc<dyn Projection>],
    report: &(impl Fn(Progress) + Send),
) -> anyhow::Result<Vec<(&'static str, u64)>> {
    let started = Instant::now();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    let mut shadows = Vec::new();
    for projection in list {
        sqlx::query(
            "INSERT INTO projection_rebuilds (name, state, version, events_total)
             VALUES ($1, 'running', $2, $3)
             ON CONFLICT (name) DO UPDATE SET state = 'running', version = EXCLUDED.version, events_applied = 0,
                 events_total = EXCLUDED.events_total, started_at = now(), updated_at = now(),
                 finished_at = NULL, error = NULL",
        )
        .bind(projection.name())
        .bind(projection.version())
        .bind(total)
        .execute(pool)
        .await?;
        shadows.push(create_shadow(pool, projection.clone()).await?);
    }

    // Every event some projection handles, read once by this task, while each projection
    // applies the previous batch on a connection of its own: reading, decoding and the
    // projections' writes overlap, on both sides of the connection.
    let handles: Vec<Handles> = list
        .iter()
        .flat_map(|p| p.handles().iter().copied())
        .collect();
    let mut feeds = Vec::new();
    let mut workers = Vec::new();
    for shadow in shadows {
        let (feed, batches) = mpsc::channel::<Arc<Vec<StoredEvent>>>(READ_AHEAD);
        feeds.push(feed);
        workers.push(tokio::spawn(shadow.load(pool.clone(), batches)));
    }
    let mut position = LogPosition::default();
    let mut read: u64 = 0;
    let progress = |read: u64| Progress {
        applied: read,
        total: u64::try_from(total).unwrap_or(0).max(read),
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    let mut conn = pool.acquire().await?;
    let reading: anyhow::Result<()> = async {
        loop {
            let horizon = Horizon::now(&mut conn).await?;
            let events =
                read_after(&mut conn, position, REBUILD_BATCH, Some(&handles), horizon).await?;
            let Some(last) = events.last() else {
                return Ok(());
            };
            position = LogPosition {
                transaction_id: last.transaction_id,
                global_position: last.global_position,
            };
            let n = events.len();
            let batch = Arc::new(events);
            for feed in &feeds {
                // A worker that stopped has an error to report: collected below.
                if feed.send(batch.clone()).await.is_err() {
                    return Ok(());
                }
            }
            read += u64::try_from(n).unwrap_or(0);
            report(progress(read));
            if i64::try_from(n).unwrap_or(i64::MAX) < REBUILD_BATCH {
                return Ok(());
            }
        }
    }
    .await;
    drop(conn);
    drop(feeds);
    let mut shadows = Vec::new();
    for worker in workers {
        shadows.push(worker.await.context("a projection's loader panicked")??);
    }
    reading?;

    // The indexes left for after loading, built a few at a time (one statement uses one core),
    // then the planner's statistics of every shadow table (the live tables have theirs: without
    // them the first queries after the swap would be planned blind until autovacuum analyzes the
    // tables), then each shadow swapped in.
    let indexes: Vec<String> = shadows
        .iter()
        .flat_map(|s| s.deferred_indexes.iter().cloned())
        .collect();
    let analyses: Vec<String> = shadows
        .iter()
        .flat_map(|s| {
            let schema = &s.schema;
            s.projection
                .tables()
                .iter()
                .map(move |table| format!("ANALYZE {schema}.{table}"))
        })
        .collect();
    for statements in [indexes, analyses] {
        futures::stream::iter(statements)
            .map(|statement| after_loading(pool.clone(), statement))
            .buffer_unordered(PARALLEL_STATEMENTS)
            .try_collect::<Vec<()>>()
            .await?;
    }
    let mut done = Vec::new();
    for shadow in shadows {
        let name = shadow.projection.name();
        let applied = shadow
            .swap(pool)
            .await
            .with_context(|| format!("swapping in the rebuilt {name}"))?;
        tracing::info!(
            projection = name,
            events = applied,
            secs = started.elapsed().as_secs_f64(),
            "projection rebuilt and swapped in"
        );
        done.push((name, applied));
    }
    report(progress(read));
    Ok(done)
}

/// One of the statements run once the rows are in: an index build or an `ANALYZE`.
async fn after_loading(pool: PgPool, statement: String) -> anyhow::Result<()> {
    sqlx::query(&statement)
        .execute(&pool)
        .await
        .with_context(|| format!("after loading: {statement}"))?;
    Ok(())
}

/// Creates the projection's shadow schema: its tables with their columns, defaults, checks,
/// primary keys, unique constraints and unique indexes, and the indexes its own statements
/// look rows up by; the other indexes are returned, to be built after loading.
async fn create_shadow(pool: &PgPool, projection: Arc<dyn Projection>) -> anyhow::Result<Shadow> {
    let schema = shadow_schema(projection.name());
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    let mut deferred_indexes = Vec::new();
    for table in projection.tables() {
        sqlx::query(&format!(
            "CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL EXCLUDING INDEXES)"
        ))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("creating the shadow of {table}"))?;
        // Constraints backed by an index (primary keys, unique, exclusion), under their names.
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
             WHERE conrelid = ('public.' || $1)::regclass AND contype IN ('p', 'u', 'x')",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        for (name, definition) in constraints {
            sqlx::query(&format!(
                "ALTER TABLE {schema}.{table} ADD CONSTRAINT {name} {definition}"
            ))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("adding {name} to the shadow of {table}"))?;
        }
        // The other indexes, under their names (they follow the table into `public`).
        let indexes: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT i.relname::text, pg_get_indexdef(x.indexrelid), x.indisunique
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid = ('public.' || $1)::regclass
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        for (name, definition, unique) in indexes {
            let definition = definition.replacen(
                &format!(" ON public.{table} "),
                &format!(" ON {schema}.{table} "),
                1,
            );
            if unique || projection.looked_up_by().contains(&name.as_str()) {
                sqlx::query(&definition)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("creating {name} on the shadow of {table}"))?;
            } else {
                deferred_indexes.push(definition);
            }
        }
    }
    tx.commit().await?;
    Ok(Shadow {
        projection,
        schema,
        deferred_indexes,
        position: LogPosition::default(),
        applied: 0,
    })
}

impl Shadow {
    /// Applies each batch it is fed to the shadow tables, one transaction a batch (without a
    /// WAL flush: a crash loses only the shadow, which a rebuild starts again); returns the
    /// shadow once the feed ends.
    async fn load(
        mut self,
        pool: PgPool,
        mut batches: mpsc::Receiver<Arc<Vec<StoredEvent>>>,
    ) -> anyhow::Result<Self> {
        let mut recorded = (0, Instant::now());
        while let Some(batch) = batches.recv().await {
            let Some(last) = batch.last() else { continue };
            // A batch with nothing for this projection costs it no transaction.
            let mine = projections::handled(self.projection.as_ref(), &batch);
            if !mine.is_empty() {
                let mut tx = pool.begin().await?;
                sqlx::query("SET LOCAL synchronous_commit = off")
                    .execute(&mut *tx)
                    .await?;
                self.apply(&mut tx, &mine).await?;
                tx.commit().await?;
            }
            self.position = LogPosition {
                transaction_id: last.transaction_id,
                global_position: last.global_position,
            };
            if self.applied != recorded.0 && recorded.1.elapsed() >= PROGRESS_EVERY {
                record(&pool, self.projection.name(), self.applied).await?;
                recorded = (self.applied, Instant::now());
            }
        }
        Ok(self)
    }

    /// Applies `events`, each one the projection handles (its loader filtered them, the swap
    /// read only those), to its shadow tables.
    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!("SET LOCAL search_path TO {}, public", self.schema))
            .execute(&mut *conn)
            .await?;
        self.projection
            .apply_batch(conn, events)
            .await
            .with_context(|| format!("applying a batch of events to {}", self.projection.name()))?;
        self.applied += u64::try_from(events.len()).unwrap_or(0);
        sqlx::query("SET LOCAL search_path TO public")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Swaps the shadow in, its deferred indexes built (see the module docs); returns how many
    /// events the projection applied in all.
    async fn swap(mut self, pool: &PgPool) -> anyhow::Result<u64> {
        let name = self.projection.name();
        let mut tx = pool.begin().await?;
        let horizon = match self.projection.mode() {
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
        // The events appended since the replay's last batch.
        loop {
            let events = read_after(
                &mut tx,
                self.position,
                REBUILD_BATCH,
                Some(self.projection.handles()),
                horizon,
            )
            .await?;
            self.apply(&mut tx, &events).await?;
            let Some(last) = events.last() else { break };
            self.position = LogPosition {
                transaction_id: last.transaction_id,
                global_position: last.global_position,
            };
        }
        // Everything the projection handles below the horizon is in: its checkpoint goes to the
        // horizon, past the events it ignores.
        if let Some(end) = last_below(&mut tx, horizon).await? {
            self.position = self.position.max(end);
        }
        for table in self.projection.tables() {
            sqlx::query(&format!("DROP TABLE public.{table}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "ALTER TABLE {}.{table} SET SCHEMA public",
                self.schema
            ))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&format!("DROP SCHEMA {}", self.schema))
            .execute(&mut *tx)
            .await?;
        let applied = i64::try_from(self.applied).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO projection_checkpoints (name, version, transaction_id, global_position, events_applied, mode)
             VALUES ($1, $2, $3::text::xid8, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, transaction_id = EXCLUDED.transaction_id,
                 global_position = EXCLUDED.global_position, events_applied = EXCLUDED.events_applied,
                 mode = EXCLUDED.mode, updated_at = now(), last_error = NULL",
        )
        .bind(name)
        .bind(self.projection.version())
        .bind(self.position.transaction_id.to_string())
        .bind(self.position.global_position)
        .bind(applied)
        .bind(mode_name(self.projection.mode()))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE projection_rebuilds SET state = 'done', events_applied = $2, finished_at = now(), updated_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(applied)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(self.applied)
    }
}

/// How `projection_checkpoints.mode` names a mode.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Inline => "inline",
        Mode::Async => "async",
    }
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
