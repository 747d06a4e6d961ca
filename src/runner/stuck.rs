//! A projection stuck on an event it cannot apply: recording it in the checkpoint row, clearing
//! it once the runner gets past, and waiting to retry it (or for an operator to skip it,
//! `crate::dead_letters`).

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::{Cursor, Runner, STUCK_POLL};
use crate::eventlog::LogPosition;

impl Runner {
    /// Waits `wait` before retrying a stuck event, or less if the stored checkpoint moves (an
    /// operator skipped the event, or a rebuild swapped in). Returns false on shutdown.
    pub(super) async fn wait_to_retry(
        &self,
        conn: &mut PgConnection,
        cursor: &Cursor,
        wait: Duration,
    ) -> anyhow::Result<bool> {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(false),
                () = tokio::time::sleep(STUCK_POLL.min(wait)) => {}
            }
            let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
                "SELECT transaction_id::text::bigint, global_position FROM projection_checkpoints WHERE name = $1",
            )
            .bind(self.projection.name())
            .fetch_one(&mut *conn)
            .await?;
            let stored = LogPosition {
                transaction_id,
                global_position,
            };
            if cursor.stored != Some(stored) {
                break;
            }
        }
        Ok(true)
    }
}

/// Records the event `name` cannot apply; `stuck_since` keeps the time it first failed.
pub(super) async fn record_stuck(
    conn: &mut PgConnection,
    name: &str,
    position: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints
         SET last_error = $3, stuck_position = $2,
             stuck_since = CASE WHEN stuck_position = $2 THEN stuck_since ELSE now() END
         WHERE name = $1",
    )
    .bind(name)
    .bind(position)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Clears an error a step that went through has outlived (one not tied to an event, or an
/// event skipped meanwhile); a written batch clears it anyway.
pub(super) async fn clear_error(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints SET last_error = NULL, stuck_position = NULL, stuck_since = NULL
         WHERE name = $1 AND (last_error IS NOT NULL OR stuck_position IS NOT NULL)",
    )
    .bind(name)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a failure that is not tied to one event (the database unavailable, say).
pub(super) async fn record_error(pool: &PgPool, name: &str, error: &str) {
    let result = sqlx::query("UPDATE projection_checkpoints SET last_error = $2 WHERE name = $1")
        .bind(name)
        .bind(error)
        .execute(pool)
        .await;
    if let Err(err) = result {
        tracing::warn!(projection = name, error = %err, "could not record the projection error");
    }
}
