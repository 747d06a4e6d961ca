//! The projection runner: applies the event log to each read model in log order, exactly once.
//!
//! The log is read by `(transaction_id, global_position)`, only below the oldest transaction
//! still in progress (`pg_snapshot_xmin`), so an event whose transaction commits after a later
//! one is never skipped. Each batch and the checkpoint that follows it commit together. A
//! session advisory lock per projection keeps one active runner across server instances.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use projections::Projection;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgListener;
use sqlx::{Acquire, PgConnection, PgPool, Postgres};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::eventlog::{apply_lock_key, read_after, LogPosition, EVENTS_APPENDED};

const BATCH_SIZE: i64 = 500;
/// Fallback when a notification is lost (or the listener is reconnecting).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How soon to look again when committed events wait behind an older open transaction.
const BLOCKED_RETRY: Duration = Duration::from_millis(5);
const MAX_BLOCKED_RETRY: Duration = Duration::from_millis(200);
const LOCK_RETRY: Duration = Duration::from_secs(2);
/// Shared between the runners and the code that waits for them.
#[derive(Clone)]
pub struct Projections {
    pool: PgPool,
    /// Read models and policies, in the order they are reported.
    list: Vec<Arc<dyn Projection>>,
    /// Bumped whenever a runner here commits a batch.
    progress: watch::Sender<u64>,
}

impl Projections {
    pub fn new(pool: PgPool, list: Vec<Arc<dyn Projection>>) -> Self {
        Self {
            pool,
            list,
            progress: watch::Sender::new(0),
        }
    }

    pub fn list(&self) -> &[Arc<dyn Projection>] {
        &self.list
    }

    /// Starts the notification listener and one runner per projection. Each runner keeps one
    /// connection of `background` (it holds the projection's advisory lock), so that pool
    /// needs `list().len() + 1` connections.
    pub fn spawn(
        &self,
        background: &PgPool,
        shutdown: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let (wake_tx, wake_rx) = watch::channel(0u64);
        let mut tasks = vec![tokio::spawn(listen(
            background.clone(),
            wake_tx,
            shutdown.clone(),
        ))];
        for projection in &self.list {
            let runner = Runner {
                pool: background.clone(),
                projection: projection.clone(),
                wake: wake_rx.clone(),
                progress: self.progress.clone(),
                shutdown: shutdown.clone(),
            };
            tasks.push(tokio::spawn(runner.run()));
        }
        tasks
    }

    /// Waits (at most `timeout`) until every named projection has applied the log up to
    /// `position`. Works whichever server instance runs the projections: it reads the stored
    /// checkpoints, and is woken early by this instance's runners. Returns whether they caught up.
    pub async fn wait_for(
        &self,
        names: &[&str],
        position: LogPosition,
        timeout: Duration,
    ) -> Result<bool, sqlx::Error> {
        let mut progress = self.progress.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let behind: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM unnest($1::text[]) AS p(name)
                 LEFT JOIN projection_checkpoints c USING (name)
                 WHERE c.name IS NULL
                    OR (c.transaction_id, c.global_position) < ($2::text::xid8, $3)",
            )
            .bind(names)
            .bind(position.transaction_id.to_string())
            .bind(position.global_position)
            .fetch_one(&self.pool)
            .await?;
            if behind == 0 {
                return Ok(true);
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Ok(false),
                _ = progress.changed() => {}
                // Another instance may be the one running them.
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}

/// Relays `NOTIFY events_appended` to the runners; reconnects after errors.
async fn listen(pool: PgPool, wake: watch::Sender<u64>, shutdown: CancellationToken) {
    loop {
        let result: anyhow::Result<()> = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(EVENTS_APPENDED).await?;
            // Events appended while we were not listening.
            wake.send_modify(|n| *n += 1);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    notification = listener.recv() => {
                        notification?;
                        wake.send_modify(|n| *n += 1);
                    }
                }
            }
        }
        .await;
        match result {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "event listener failed; reconnecting"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

struct Runner {
    pool: PgPool,
    projection: Arc<dyn Projection>,
    wake: watch::Receiver<u64>,
    progress: watch::Sender<u64>,
    shutdown: CancellationToken,
}

enum Step {
    /// A batch was applied; maybe more are waiting.
    Applied,
    /// Committed events exist past the checkpoint but an older transaction is still open.
    Blocked,
    /// Nothing to do.
    Idle,
}

impl Runner {
    async fn run(mut self) {
        let name = self.projection.name();
        let mut backoff = Duration::from_millis(500);
        while !self.shutdown.is_cancelled() {
            match self.run_while_locked().await {
                Ok(()) => {}
                Err(err) => {
                    tracing::error!(
                        projection = name,
                        error = format!("{err:#}"),
                        "projection stalled; retrying"
                    );
                    record_error(&self.pool, name, &format!("{err:#}")).await;
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Takes the projection's lock, then applies batches until shutdown or an error.
    async fn run_while_locked(&mut self) -> anyhow::Result<()> {
        let name = self.projection.name();
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("acquiring a connection")?;
        while !try_lock(&mut conn, name).await? {
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(LOCK_RETRY) => {}
            }
        }
        let result = self.apply_until_shutdown(&mut conn).await;
        // The lock goes with the session; release it so the pooled connection is clean.
        let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(lock_key(name))
            .execute(&mut *conn)
            .await;
        result
    }

    async fn apply_until_shutdown(
        &mut self,
        conn: &mut PoolConnection<Postgres>,
    ) -> anyhow::Result<()> {
        let version_changed = ensure_version(conn, self.projection.as_ref()).await?;
        if version_changed && !self.projection.rebuildable() {
            // A policy keeps its state and goes on from its checkpoint under the new code.
            tracing::warn!(
                projection = self.projection.name(),
                "policy version changed; continuing from its checkpoint"
            );
            sqlx::query("UPDATE projection_checkpoints SET version = $2 WHERE name = $1")
                .bind(self.projection.name())
                .bind(self.projection.version())
                .execute(&mut **conn)
                .await?;
        } else if version_changed {
            // Rebuilt blue/green in the background while this runner keeps the live tables
            // current; the rebuild swaps its tables in and moves the checkpoint.
            let (pool, projection) = (self.pool.clone(), self.projection.clone());
            tracing::warn!(
                projection = projection.name(),
                "projection version changed; rebuilding from the log"
            );
            tokio::spawn(async move {
                match crate::rebuild::rebuild(&pool, projection.clone(), |_| {}).await {
                    Ok(_) | Err(crate::rebuild::RebuildError::AlreadyRunning(_)) => {}
                    Err(err) => tracing::error!(
                        projection = projection.name(),
                        error = format!("{err:#}"),
                        "rebuild failed"
                    ),
                }
            });
        }
        let mut blocked_wait = BLOCKED_RETRY;
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            // Mark the wake-ups seen before reading, so one arriving mid-batch is not lost.
            self.wake.borrow_and_update();
            match apply_batch(conn, self.projection.as_ref()).await? {
                Step::Applied => {
                    blocked_wait = BLOCKED_RETRY;
                    self.progress.send_modify(|n| *n += 1);
                }
                // Back off while a long transaction holds the horizon back.
                Step::Blocked => {
                    tokio::time::sleep(blocked_wait).await;
                    blocked_wait = (blocked_wait * 2).min(MAX_BLOCKED_RETRY);
                }
                Step::Idle => {
                    blocked_wait = BLOCKED_RETRY;
                    tokio::select! {
                        () = self.shutdown.cancelled() => return Ok(()),
                        _ = self.wake.changed() => {}
                        () = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
            }
        }
    }
}

fn lock_key(name: &str) -> String {
    format!("memberledger.projection.{name}")
}

async fn try_lock(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
        .bind(lock_key(name))
        .fetch_one(conn)
        .await
}

/// Creates the checkpoint on first run; returns whether the stored version differs from the
/// projection's code version (its tables then need a rebuild).
async fn ensure_version(
    conn: &mut PgConnection,
    projection: &dyn Projection,
) -> anyhow::Result<bool> {
    let name = projection.name();
    let version = projection.version();
    let mut tx = conn.begin().await?;
    sqlx::query("INSERT INTO projection_checkpoints (name, version) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    let stored: i32 =
        sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(stored != version)
}

async fn apply_batch(conn: &mut PgConnection, projection: &dyn Projection) -> anyhow::Result<Step> {
    let name = projection.name();
    let mut tx = conn.begin().await?;
    // The batch commits with its checkpoint without waiting for the WAL flush: a crash can
    // lose only whole recent batches, read model and checkpoint together, and they are applied
    // again from the (durable) log. It spares every runner an fsync per batch.
    sqlx::query(
        "SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock(hashtext($1))",
    )
    .bind(apply_lock_key(name))
    .execute(&mut *tx)
    .await?;
    let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM projection_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await
    .context("reading the checkpoint")?;
    let checkpoint = LogPosition {
        transaction_id,
        global_position,
    };
    let events = read_after(&mut tx, checkpoint, BATCH_SIZE)
        .await
        .context("reading events")?;

    let Some(last) = events.last() else {
        // Not `EXISTS (...)`: PostgreSQL drops the ORDER BY and LIMIT inside an EXISTS, and the
        // generic plan then scans the whole log. Ordered and limited, it walks the log-order
        // index from the checkpoint.
        let pending = sqlx::query_scalar::<_, i32>(
            "SELECT 1 FROM events e
             WHERE (e.transaction_id, e.global_position) > ($1::text::xid8, $2)
             ORDER BY e.transaction_id, e.global_position LIMIT 1",
        )
        .bind(transaction_id.to_string())
        .bind(global_position)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        tx.rollback().await?;
        return Ok(if pending { Step::Blocked } else { Step::Idle });
    };
    let last_position = (last.transaction_id, last.global_position);
    for event in &events {
        projection
            .apply(&mut tx, event)
            .await
            .with_context(|| format!("applying event {} to {name}", event.global_position))?;
    }
    sqlx::query(
        "UPDATE projection_checkpoints
         SET transaction_id = $2::text::xid8, global_position = $3,
             events_applied = events_applied + $4, updated_at = now(), last_error = NULL
         WHERE name = $1",
    )
    .bind(name)
    .bind(last_position.0.to_string())
    .bind(last_position.1)
    .bind(i64::try_from(events.len()).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Step::Applied)
}

async fn record_error(pool: &PgPool, name: &str, error: &str) {
    let result = sqlx::query("UPDATE projection_checkpoints SET last_error = $2 WHERE name = $1")
        .bind(name)
        .bind(error)
        .execute(pool)
        .await;
    if let Err(err) = result {
        tracing::warn!(projection = name, error = %err, "could not record the projection error");
    }
}

/// One projection's state, for `projections status` and `/readyz`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    pub version: i32,
    pub code_version: i32,
    pub global_position: i64,
    pub transaction_id: i64,
    pub events_applied: i64,
    /// Events in the log the projection has not applied yet.
    pub lag_events: i64,
    /// Age of the oldest event not applied yet, in milliseconds (0 when caught up).
    pub lag_ms: i64,
    pub last_error: Option<String>,
}

pub async fn status(
    pool: &PgPool,
    list: &[Arc<dyn Projection>],
) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let mut out = Vec::new();
    for projection in list {
        let row: Option<(i32, i64, i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT version, transaction_id::text::bigint, global_position, events_applied, last_error
             FROM projection_checkpoints WHERE name = $1",
        )
        .bind(projection.name())
        .fetch_optional(pool)
        .await?;
        let (version, transaction_id, global_position, events_applied, last_error) =
            row.unwrap_or((0, 0, 0, 0, None));
        let (lag_events, lag_ms): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), (extract(epoch FROM now() - min(recorded_at)) * 1000)::float8
             FROM events WHERE (transaction_id, global_position) > ($1::text::xid8, $2)",
        )
        .bind(transaction_id.to_string())
        .bind(global_position)
        .fetch_one(pool)
        .await?;
        out.push(ProjectionStatus {
            name: projection.name().to_owned(),
            version,
            code_version: projection.version(),
            global_position,
            transaction_id,
            events_applied,
            lag_events,
            #[expect(clippy::cast_possible_truncation, reason = "milliseconds fit in i64")]
            lag_ms: lag_ms.map_or(0, |ms| ms.max(0.0) as i64),
            last_error,
        });
    }
    Ok(out)
}
