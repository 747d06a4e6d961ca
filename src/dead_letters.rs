//! Fixing a stuck projection: an operator, having inspected the event an asynchronous
//! projection or policy cannot apply (`projections status` shows its position and error),
//! skips it. The event is recorded in `projection_dead_letters` with the projection, its
//! position and the error, the projection's checkpoint moves past it, and its runner goes on.
//! The event stays in `events`: the runner never skips on its own, and nothing is deleted.

use projections::{Mode, Projection};
use sqlx::{Acquire, PgPool};

use crate::eventlog::{apply_lock_key, read_after, Horizon, LogPosition};

/// An event an operator skipped for a projection.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct DeadLetter {
    pub projection: String,
    pub global_position: i64,
    pub transaction_id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    /// The error the projection failed with.
    pub error: String,
    /// `cli` or `api`.
    pub skipped_by: String,
    pub skipped_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum SkipError {
    /// Inline projections are never stuck: an event they cannot apply fails its command.
    #[error("{0} is an inline projection: its events are applied by the command that appends them, so it is never stuck")]
    Inline(String),
    /// Only the event the projection reports being stuck on can be skipped.
    #[error("{projection} is not stuck at position {position}{}", match .stuck { Some(p) => format!(" (it is stuck at {p})"), None => " (it is not stuck)".to_owned() })]
    NotStuckThere {
        projection: String,
        position: i64,
        stuck: Option<i64>,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Skips the event at `position`, the one `projection` is stuck on, into the dead-letter
/// table; returns its record. Holds the projection's apply lock, so no batch of its runner
/// (on any instance) is in flight meanwhile; the runner sees its checkpoint moved and goes on.
pub async fn skip(
    pool: &PgPool,
    projection: &dyn Projection,
    position: i64,
    skipped_by: &str,
) -> Result<DeadLetter, SkipError> {
    let name = projection.name();
    if projection.mode() != Mode::Async {
        return Err(SkipError::Inline(name.to_owned()));
    }
    let not_stuck = |stuck| SkipError::NotStuckThere {
        projection: name.to_owned(),
        position,
        stuck,
    };
    let mut conn = crate::db::acquire(pool, crate::db::PoolName::Main).await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(apply_lock_key(name))
        .execute(&mut *tx)
        .await?;
    let row: Option<(i64, i64, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position, stuck_position, last_error
         FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((transaction_id, global_position, stuck, error)) = row else {
        return Err(not_stuck(None));
    };
    if stuck != Some(position) {
        return Err(not_stuck(stuck));
    }
    // The runner stopped right before it: it must be the next event the projection handles,
    // or moving the checkpoint to it would skip others too.
    let checkpoint = LogPosition {
        transaction_id,
        global_position,
    };
    let next = read_after(
        &mut tx,
        checkpoint,
        1,
        Some(projection.handles()),
        Horizon::Unbounded,
    )
    .await?;
    let Some(event) = next.first().filter(|e| e.global_position == position) else {
        return Err(not_stuck(stuck));
    };
    let letter: DeadLetter = sqlx::query_as(
        "INSERT INTO projection_dead_letters
             (projection, global_position, transaction_id, aggregate_type, aggregate_id, event_type,
              error, skipped_by)
         VALUES ($1, $2, $3::text::xid8, $4, $5, $6, $7, $8)
         RETURNING projection, global_position, transaction_id::text::bigint AS transaction_id,
                   aggregate_type, aggregate_id, event_type, error, skipped_by, skipped_at",
    )
    .bind(name)
    .bind(event.global_position)
    .bind(event.transaction_id.to_string())
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(&event.event_type)
    .bind(error.unwrap_or_default())
    .bind(skipped_by)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE projection_checkpoints
         SET transaction_id = $2::text::xid8, global_position = $3, updated_at = now(),
             last_error = NULL, stuck_position = NULL, stuck_since = NULL
         WHERE name = $1",
    )
    .bind(name)
    .bind(event.transaction_id.to_string())
    .bind(event.global_position)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::warn!(
        projection = name,
        position,
        skipped_by,
        "skipped an event the projection could not apply into projection_dead_letters"
    );
    Ok(letter)
}

/// The skipped events, newest first; of one projection when `projection` is set.
pub async fn list(pool: &PgPool, projection: Option<&str>) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT projection, global_position, transaction_id::text::bigint AS transaction_id,
                aggregate_type, aggregate_id, event_type, error, skipped_by, skipped_at
         FROM projection_dead_letters
         WHERE $1::text IS NULL OR projection = $1
         ORDER BY skipped_at DESC, global_position DESC",
    )
    .bind(projection)
    .fetch_all(pool)
    .await
}
