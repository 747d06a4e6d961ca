//! The projection runner: applies the event log to each asynchronous read model in log order,
//! exactly once. (Inline read models are written by the appending transactions; see
//! `crate::inline`.)
//!
//! The log is read by `(transaction_id, global_position)`, only below the oldest transaction
//! still in progress (`pg_snapshot_xmin`), so an event whose transaction commits after a later
//! one is never skipped. A runner reads only the events its projection handles, and is woken
//! only by appends of such events. Each batch and the checkpoint that follows it commit
//! together; past events it ignores, the checkpoint moves in memory and is written at most
//! once a second. A session advisory lock per projection keeps one active runner across
//! server instances.
//!
//! A batch the projection cannot apply is narrowed down to its first failing event: the
//! runner applies the batch's events one at a time, so those before the culprit are applied,
//! and stops at it. That event's position and error are stored in the checkpoint row (shown by
//! `projections status`, `/readyz`, `GET /v1/projections` and, read from that row at
//! each scrape, the `memberledger_projection_stalled` gauge) and it is retried with backoff, so a transient
//! failure heals by itself. The runner never skips it: an operator does
//! (`crate::dead_letters`).

mod status;
mod stuck;

pub use status::{status, ProjectionStatus};
use stuck::{clear_error, record_error, record_stuck};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use projections::{Mode, Projection, ProjectionError};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgListener;
use sqlx::{Acquire, PgConnection, PgPool, Postgres};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::eventlog::{
    any_after, apply_lock_key, last_below, next_local, read_after, wakes, Horizon, LogPosition,
    Wakeups, EVENTS_APPENDED,
};

const BATCH_SIZE: i64 = 500;
/// Fallback when a notification is lost (or the listener is reconnecting).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How soon to look again when committed events wait behind an older open transaction.
const BLOCKED_RETRY: Duration = Duration::from_millis(5);
const MAX_BLOCKED_RETRY: Duration = Duration::from_millis(200);
const LOCK_RETRY: Duration = Duration::from_secs(2);
/// Retrying an event the projection cannot apply: first after this, doubling up to the max.
const STUCK_RETRY: Duration = Duration::from_millis(500);
const MAX_STUCK_RETRY: Duration = Duration::from_secs(30);
/// While waiting to retry a stuck event, how often to look whether an operator skipped it.
const STUCK_POLL: Duration = Duration::from_secs(1);
/// The least time from one round (a batch read, maybe applied) to the next when the runner
/// was woken or found more events arriving, not behind. Under load, appends wake a runner far
/// more often than it needs to look: waiting out the rest of the interval lets the next round
/// take what arrived meanwhile in one batch, where it took a round each (a round is about ten
/// statements, however few events it carries). At rest the previous round is older than this,
/// and nothing waits.
const MIN_ROUND_INTERVAL: Duration = Duration::from_millis(10);
/// The interval grows with the last batch, 10 ms per event, up to this: a runner handling more
/// than a hundred events a second lets them gather into batches of a tenth of a second, which
/// a round costs little more to apply than one event, and a runner that finds one event goes
/// back to the least interval after one round. The lag it adds under load is at most this; at
/// rest, none.
const MAX_ROUND_INTERVAL: Duration = Duration::from_millis(100);
const ROUND_INTERVAL_PER_EVENT: Duration = Duration::from_millis(10);

/// The time to leave between rounds after a batch of `events`.
fn round_interval(events: usize) -> Duration {
    ROUND_INTERVAL_PER_EVENT
        .saturating_mul(u32::try_from(events).unwrap_or(u32::MAX))
        .clamp(MIN_ROUND_INTERVAL, MAX_ROUND_INTERVAL)
}
/// How often a checkpoint that only moved past ignored events is written.
const IGNORED_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Shared between the runners and the code that waits for them.
#[derive(Clone)]
pub struct Projections {
    pool: PgPool,
    /// Read models and policies, in the order they are reported.
    list: Vec<Arc<dyn Projection>>,
    /// Bumped whenever a runner here commits a batch.
    progress: watch::Sender<u64>,
    /// This instance's appends, announced at once.
    wakeups: Arc<Wakeups>,
}

impl Projections {
    pub fn new(pool: PgPool, list: Vec<Arc<dyn Projection>>, wakeups: Arc<Wakeups>) -> Self {
        Self {
            pool,
            list,
            progress: watch::Sender::new(0),
            wakeups,
        }
    }

    pub fn list(&self) -> &[Arc<dyn Projection>] {
        &self.list
    }

    /// Starts the notification listener and one runner per asynchronous projection. Each
    /// runner keeps one connection of `background` (it holds the projection's advisory lock),
    /// so that pool needs `list().len() + 1` connections.
    pub fn spawn(
        &self,
        background: &PgPool,
        shutdown: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut wake_ups = Vec::new();
        let mut runners = Vec::new();
        for projection in self.list.iter().filter(|p| p.mode() == Mode::Async) {
            let (wake_tx, wake_rx) = watch::channel(0u64);
            wake_ups.push((projection.clone(), wake_tx));
            let runner = Runner {
                pool: background.clone(),
                projection: projection.clone(),
                wake: wake_rx,
                progress: self.progress.clone(),
                shutdown: shutdown.clone(),
            };
            runners.push(tokio::spawn(runner.run()));
        }
        let mut tasks = vec![tokio::spawn(listen(
            background.clone(),
            self.wakeups.subscribe(),
            wake_ups,
            shutdown.clone(),
        ))];
        tasks.extend(runners);
        tasks
    }

    /// Waits (at most `timeout`) until every named asynchronous projection has applied the log
    /// up to `position` (an inline one always has). Works whichever server instance runs the
    /// projections: it reads the stored checkpoints, and is woken early by this instance's
    /// runners. Returns whether they caught up.
    pub async fn wait_for(
        &self,
        names: &[&str],
        position: LogPosition,
        timeout: Duration,
    ) -> Result<bool, sqlx::Error> {
        let names: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| {
                self.list
                    .iter()
                    .any(|p| p.name() == *name && p.mode() == Mode::Async)
            })
            .collect();
        if names.is_empty() {
            return Ok(true);
        }
        let mut progress = self.progress.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let behind: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM unnest($1::text[]) AS p(name)
                 LEFT JOIN projection_checkpoints c USING (name)
                 WHERE c.name IS NULL
                    OR (c.transaction_id, c.global_position) < ($2::text::xid8, $3)",
            )
            .bind(&names)
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

/// Relays this instance's appends and `NOTIFY events_appended` (every instance's) to the
/// runners whose projections handle the appended events; reconnects after errors.
async fn listen(
    pool: PgPool,
    local: broadcast::Receiver<String>,
    runners: Vec<(Arc<dyn Projection>, watch::Sender<u64>)>,
    shutdown: CancellationToken,
) {
    let mut local = Some(local);
    let wake = |payload: &str| {
        for (projection, wake) in &runners {
            if wakes(projection.handles(), payload) {
                wake.send_modify(|n| *n += 1);
            }
        }
    };
    let wake_all = || {
        for (_, wake) in &runners {
            wake.send_modify(|n| *n += 1);
        }
    };
    loop {
        let result: anyhow::Result<()> = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(EVENTS_APPENDED).await?;
            // Events appended while we were not listening.
            wake_all();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    notification = listener.recv() => wake(notification?.payload()),
                    payload = next_local(&mut local) => match payload {
                        Some(payload) => wake(&payload),
                        None => wake_all(),
                    },
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
    /// A batch was applied; `full`: it was as large as allowed, so more may be waiting.
    Applied { full: bool },
    /// The projection failed on a batch of several events: it is applied again one event at a
    /// time, up to its last event, to find the one at fault.
    Narrowing,
    /// The projection failed on this one event; recorded, retried after a backoff.
    Stuck { position: i64 },
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
        let mut conn = crate::db::acquire(&self.pool, crate::db::PoolName::Background)
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
        let mut stuck_wait = STUCK_RETRY;
        // Whether an error may still be reported (by an earlier run, or a stuck event): the
        // first step that goes through clears it.
        let mut failed = true;
        let mut cursor = Cursor::default();
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            // Mark the wake-ups seen before reading, so one arriving mid-batch is not lost.
            self.wake.borrow_and_update();
            let round_started = tokio::time::Instant::now();
            let mut step = apply_batch(conn, self.projection.as_ref(), &mut cursor).await?;
            if failed && matches!(step, Step::Applied { .. } | Step::Idle | Step::Blocked) {
                failed = false;
                stuck_wait = STUCK_RETRY;
                clear_error(conn, self.projection.name()).await?;
            }
            if let Step::Applied { full } = step {
                blocked_wait = BLOCKED_RETRY;
                self.progress.send_modify(|n| *n += 1);
                // A batch smaller than allowed read every handled event below the horizon: the
                // runner is idle now (or blocked), which one statement tells, not another round.
                if !full {
                    step = drained(conn, self.projection.as_ref(), cursor.read).await?;
                }
            }
            match step {
                Step::Applied { .. } => {}
                Step::Narrowing => {}
                Step::Stuck { position } => {
                    failed = true;
                    if !self.wait_to_retry(conn, &cursor, stuck_wait).await? {
                        return Ok(());
                    }
                    tracing::info!(
                        projection = self.projection.name(),
                        position,
                        "retrying the event the projection is stuck on"
                    );
                    stuck_wait = (stuck_wait * 2).min(MAX_STUCK_RETRY);
                }
                // Back off while a long transaction holds the horizon back. Under a steady
                // stream of appends it mostly means that more arrived since the batch was read:
                // the round interval lets the next batch take them together.
                Step::Blocked => {
                    let next = (tokio::time::Instant::now() + blocked_wait)
                        .max(round_started + round_interval(cursor.last_batch));
                    tokio::time::sleep_until(next).await;
                    blocked_wait = (blocked_wait * 2).min(MAX_BLOCKED_RETRY);
                }
                Step::Idle => {
                    blocked_wait = BLOCKED_RETRY;
                    tokio::select! {
                        () = self.shutdown.cancelled() => return Ok(()),
                        _ = self.wake.changed() => {
                            tokio::select! {
                                () = self.shutdown.cancelled() => return Ok(()),
                                () = tokio::time::sleep_until(round_started + round_interval(cursor.last_batch)) => {}
                            }
                        }
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

/// How far a runner has read, and what it last read or wrote as the stored checkpoint.
#[derive(Debug, Default)]
struct Cursor {
    /// Every event the projection handles up to here is applied (possibly not written yet:
    /// past ignored events the checkpoint moves here first).
    read: LogPosition,
    /// The stored checkpoint as this runner last saw or wrote it; `None` before the first batch.
    stored: Option<LogPosition>,
    /// When the checkpoint was last written because of ignored events only.
    written_at: Option<tokio::time::Instant>,
    /// After a batch failed: its last event. Up to it, events are applied one at a time.
    narrow_until: Option<LogPosition>,
    /// How many events the last round applied.
    last_batch: usize,
}

impl Cursor {
    fn batch_size(&mut self) -> i64 {
        match self.narrow_until {
            Some(until) if self.read < until => 1,
            Some(_) => {
                self.narrow_until = None;
                BATCH_SIZE
            }
            None => BATCH_SIZE,
        }
    }
}

async fn apply_batch(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    cursor: &mut Cursor,
) -> anyhow::Result<Step> {
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
    // The checkpoint, read now that the lock is held, and the horizon, from the same
    // statement's snapshot (taken after the lock: a horizon can only be lower than one taken
    // later, which reads less, never an event still in flight).
    let (transaction_id, global_position, xmin): (i64, i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position,
                pg_snapshot_xmin(pg_current_snapshot())::text::bigint
         FROM projection_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await
    .context("reading the checkpoint")?;
    let stored = LogPosition {
        transaction_id,
        global_position,
    };
    // Someone else moved the checkpoint (a rebuild swapped its tables in): go on from there.
    if cursor.stored != Some(stored) {
        cursor.read = stored;
        cursor.stored = Some(stored);
    }
    let horizon = Horizon::Below(xmin);
    let handles = projection.handles();
    let limit = cursor.batch_size();
    let events = read_after(&mut tx, cursor.read, limit, Some(handles), horizon)
        .await
        .context("reading events")?;
    // Below the horizon, everything after the last event read was ignored: read up to there.
    let full = i64::try_from(events.len()).unwrap_or(i64::MAX) >= limit;
    let mut read_to = events
        .last()
        .map(|e| LogPosition {
            transaction_id: e.transaction_id,
            global_position: e.global_position,
        })
        .unwrap_or(cursor.read);
    if !full {
        if let Some(end) = last_below(&mut tx, horizon).await? {
            read_to = read_to.max(end);
        }
    }

    cursor.last_batch = 0;
    if events.is_empty() {
        cursor.read = read_to;
        let due = cursor
            .written_at
            .is_none_or(|at| at.elapsed() >= IGNORED_CHECKPOINT_EVERY);
        if cursor.read > stored && due {
            write_checkpoint(&mut tx, name, cursor.read, 0).await?;
            tx.commit().await?;
            cursor.stored = Some(cursor.read);
            cursor.written_at = Some(tokio::time::Instant::now());
        } else {
            tx.rollback().await?;
        }
        return drained(conn, projection, cursor.read).await;
    }
    if let Err(err) = projection.apply_batch(&mut tx, &events).await {
        // The database being unavailable is no event's fault: retried as a whole.
        if matches!(&err, ProjectionError::Database(e) if crate::bounds::is_unavailable(e)) {
            return Err(err).context(format!("applying events to {name}"));
        }
        tx.rollback().await?;
        let (first, last) = (&events[0], &events[events.len() - 1]);
        if events.len() > 1 {
            tracing::warn!(
                projection = name,
                error = format!("{err:#}"),
                from = first.global_position,
                to = last.global_position,
                "a batch failed; applying its events one at a time to find the one at fault"
            );
            cursor.narrow_until = Some(LogPosition {
                transaction_id: last.transaction_id,
                global_position: last.global_position,
            });
            return Ok(Step::Narrowing);
        }
        let error = format!(
            "applying event {} ({}/{} {}) to {name}: {:#}",
            first.global_position,
            first.aggregate_type,
            first.event_type,
            first.aggregate_id,
            anyhow::Error::from(err)
        );
        tracing::error!(
            projection = name,
            position = first.global_position,
            error,
            "projection stuck on an event it cannot apply; retrying with backoff (an operator may skip it: `memberledger projections skip`)"
        );
        record_stuck(conn, name, first.global_position, &error).await?;
        // Up to here the events are applied; the culprit is retried alone.
        cursor.narrow_until = Some(LogPosition {
            transaction_id: first.transaction_id,
            global_position: first.global_position,
        });
        return Ok(Step::Stuck {
            position: first.global_position,
        });
    }
    write_checkpoint(&mut tx, name, read_to, events.len()).await?;
    tx.commit().await?;
    crate::metrics::projection_batch(name, events.len());
    cursor.last_batch = events.len();
    cursor.read = read_to;
    cursor.stored = Some(read_to);
    Ok(Step::Applied { full })
}

/// After every handled event below the horizon is applied up to `read`: idle, or blocked when
/// handled events wait above the horizon (behind an older open transaction).
async fn drained(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    read: LogPosition,
) -> anyhow::Result<Step> {
    // Only handled events count: others never block.
    Ok(if any_after(conn, read, projection.handles()).await? {
        Step::Blocked
    } else {
        Step::Idle
    })
}

async fn write_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    position: LogPosition,
    applied: usize,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints
         SET transaction_id = $2::text::xid8, global_position = $3,
             events_applied = events_applied + $4, updated_at = now(), last_error = NULL,
             stuck_position = NULL, stuck_since = NULL
         WHERE name = $1",
    )
    .bind(name)
    .bind(position.transaction_id.to_string())
    .bind(position.global_position)
    .bind(i64::try_from(applied).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_interval_grows_with_the_last_batch_between_its_bounds() {
        assert_eq!(round_interval(0), MIN_ROUND_INTERVAL);
        assert_eq!(round_interval(1), Duration::from_millis(10));
        assert_eq!(round_interval(4), Duration::from_millis(40));
        assert_eq!(round_interval(10), MAX_ROUND_INTERVAL);
        assert_eq!(round_interval(500), MAX_ROUND_INTERVAL);
        assert_eq!(round_interval(usize::MAX), MAX_ROUND_INTERVAL);
    }
}
