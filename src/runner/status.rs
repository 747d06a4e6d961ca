//! Where each projection stands, for `projections status`, `/readyz`, `/metrics` and the
//! admin API.

use std::sync::Arc;

use projections::{Mode, Projection};
use sqlx::PgPool;

use crate::eventlog::LogPosition;

/// One projection's state, for `projections status` and `/readyz`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    pub version: i32,
    pub code_version: i32,
    pub global_position: i64,
    pub transaction_id: i64,
    pub events_applied: i64,
    /// `inline` (written with its events: never behind) or `async` (applied by a runner).
    pub mode: String,
    /// Events in the log the projection handles and has not applied yet, counted up to
    /// [`crate::eventlog::BACKLOG_COUNTED_UP_TO`] (that many or more).
    pub lag_events: i64,
    /// Age of the oldest event not applied yet, in milliseconds (0 when caught up).
    pub lag_ms: i64,
    pub last_error: Option<String>,
    /// The global position of the event it is stuck on (cannot apply), if it is: retried
    /// with backoff until it applies or an operator skips it.
    pub stuck_position: Option<i64>,
    pub stuck_since: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn status(
    pool: &PgPool,
    list: &[Arc<dyn Projection>],
) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let mut out = Vec::new();
    for projection in list {
        type Row = (
            i32,
            i64,
            i64,
            i64,
            Option<String>,
            Option<i64>,
            Option<chrono::DateTime<chrono::Utc>>,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT version, transaction_id::text::bigint, global_position, events_applied, last_error,
                    stuck_position, stuck_since
             FROM projection_checkpoints WHERE name = $1",
        )
        .bind(projection.name())
        .fetch_optional(pool)
        .await?;
        let (
            version,
            transaction_id,
            global_position,
            events_applied,
            last_error,
            stuck_position,
            stuck_since,
        ) = row.unwrap_or((0, 0, 0, 0, None, None, None));
        let mode = projection.mode();
        let (lag_events, lag_ms) = match mode {
            Mode::Inline => (0, None),
            Mode::Async => {
                let checkpoint = LogPosition {
                    transaction_id,
                    global_position,
                };
                crate::eventlog::backlog(pool, checkpoint, projection.handles()).await?
            }
        };
        out.push(ProjectionStatus {
            name: projection.name().to_owned(),
            version,
            code_version: projection.version(),
            global_position,
            transaction_id,
            events_applied,
            mode: crate::rebuild::mode_name(mode).to_owned(),
            lag_events,
            #[expect(clippy::cast_possible_truncation, reason = "milliseconds fit in i64")]
            lag_ms: lag_ms.map_or(0, |ms| ms.max(0.0) as i64),
            last_error,
            stuck_position,
            stuck_since,
        });
    }
    Ok(out)
}
