//! The event log as its readers see it: positions in log order, reading a batch after a
//! position, and the wake-up channels. The store, the projection runner, rebuilds and exports
//! all build on this module; it builds on nothing of theirs.
//!
//! Readers must not skip events that commit out of order: a `global_position` is taken at
//! insert, commits happen later. So the log is read by `(transaction_id, global_position)`,
//! only from transactions below the oldest one still in progress (`pg_snapshot_xmin`).

use projections::StoredEvent;
use sqlx::{PgConnection, PgPool};

/// A point in the log, in the order readers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct LogPosition {
    pub transaction_id: i64,
    pub global_position: i64,
}

/// Wakes the projection runners: sent after every command that appended events.
pub const EVENTS_APPENDED: &str = "events_appended";
/// Wakes the Stripe inbox workers: sent after a Stripe event is stored or set to retry.
pub const STRIPE_EVENT_RECEIVED: &str = "stripe_event_received";

/// Columns of `events` in the shape of [`StoredEvent`].
pub const EVENT_COLUMNS: &str = "global_position, transaction_id::text::bigint AS transaction_id, \
     aggregate_type, aggregate_id, sequence, event_type, event_version, payload::jsonb AS payload, \
     metadata::jsonb AS metadata, recorded_at";

/// Up to `limit` events after `after`, in log order, only from transactions that can no longer
/// be followed by an earlier-positioned commit (below the snapshot xmin), upcast to their
/// current versions.
pub async fn read_after(
    conn: &mut PgConnection,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut events: Vec<StoredEvent> = sqlx::query_as(&format!(
        // Qualified: a bare `transaction_id` in ORDER BY would name the bigint output column,
        // and the sort would not use the (transaction_id, global_position) index.
        "SELECT {EVENT_COLUMNS} FROM events e
         WHERE (e.transaction_id, e.global_position) > ($1::text::xid8, $2)
           AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY e.transaction_id, e.global_position
         LIMIT $3"
    ))
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    for event in &mut events {
        event.event_version = aggregates::upcast::upcast(
            &event.aggregate_type,
            &event.event_type,
            &event.event_version,
            &mut event.payload,
        );
    }
    Ok(events)
}

/// The lock a runner holds (per transaction) while it applies a batch, and a rebuild while it
/// swaps tables in: they never overlap.
pub fn apply_lock_key(name: &str) -> String {
    format!("memberledger.projection.apply.{name}")
}

/// `NOTIFY channel`, sent after the change it announces has committed, in a transaction of its
/// own that does not wait for its WAL flush (losing a wake-up is harmless: listeners also
/// poll). A failure is logged, not returned: the change itself is done.
pub async fn notify(pool: &PgPool, channel: &str) {
    let sent =
        sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')")
            .bind(channel)
            .execute(pool)
            .await;
    if let Err(err) = sent {
        tracing::warn!(channel, error = %err, "could not send a wake-up; listeners will poll");
    }
}
