//! The event repository: cqrs-es's `PersistedEventRepository` on postgres-es's `events` and
//! `snapshots` tables, with inline projections written in the appending transaction.
//!
//! Appends are ours because postgres-es opens and commits its own transaction in `persist` and
//! cannot take part in a wider one: an inline read model written after it would commit apart
//! from its events (an event without its row, or a row refused after the event was in). Here
//! one transaction seals the events' personal fields (`personal`), inserts the events (one
//! multi-row statement, which also returns their log positions, with the keys of aggregates
//! they start), applies the inline projections that handle them, scrubs and shreds for an
//! erasure (`crate::erasure`), and commits: all or nothing. Concurrent commands' appends share
//! such a transaction (`super::appender`). An aggregate's load is ours too
//! (postgres-es's query with the aggregate's data key joined, to open its sealed fields);
//! snapshots and streams are postgres-es's own.

use std::cell::Cell;
use std::sync::Arc;

use aggregates::cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use aggregates::cqrs_es::Aggregate;
use chrono::{DateTime, Utc};
use postgres_es::PostgresEventRepository;
use projections::{Projection, ProjectionError, StoredEvent};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::appender::Appender;
use super::personal;
use crate::eventlog::LogPosition;

tokio::task_local! {
    /// Where the command being executed on this task appended its last event.
    pub(super) static APPENDED: Cell<Option<LogPosition>>;
}

/// An inline projection refused a command's events; nothing was written.
#[derive(Debug, thiserror::Error)]
#[error("{projection} refuses the events: {reason}")]
pub struct InlineRefusal {
    pub projection: &'static str,
    pub reason: &'static str,
}

pub struct EventRepository {
    pool: PgPool,
    reads: PostgresEventRepository,
    /// Where appends go: shared transactions with every inline projection (`appender`).
    appender: Arc<Appender>,
}

impl EventRepository {
    pub fn new(pool: PgPool, appender: Arc<Appender>) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool.clone()),
            pool,
            appender,
        }
    }

    /// Appends `events` (of one or many aggregates) with the inline projections that handle
    /// them, in a transaction shared with concurrent appends (`appender`); returns where each
    /// one is in the log, in order.
    pub(super) async fn append(
        &self,
        events: Vec<SerializedEvent>,
    ) -> Result<Vec<LogPosition>, PersistenceError> {
        self.appender.append(events).await
    }
}

/// Appends `events` (of one or many aggregates) in one transaction with the inline projections
/// that handle them; returns where each one is in the log, in order.
pub(super) async fn append_in_one(
    pool: &PgPool,
    inline: &[Arc<dyn Projection>],
    events: &[SerializedEvent],
) -> Result<Vec<LogPosition>, PersistenceError> {
    let mut tx = crate::db::begin(pool, crate::db::PoolName::Main)
        .await
        .map_err(connection)?;
    // Personal fields are stored encrypted (`personal`); the inline projections below see
    // them as the command wrote them.
    // Only events with personal fields are copied to be sealed (most are not: a Stripe
    // event's payload is stored as the command wrote it).
    let personal = events
        .iter()
        .any(|e| !personal::fields(&e.aggregate_type, &e.event_type).is_empty());
    let (sealed, new_keys) = if personal {
        let mut sealed: Vec<SerializedEvent> = events.to_vec();
        let new_keys = personal::seal(&mut tx, &mut sealed)
            .await
            .map_err(database)?;
        (std::borrow::Cow::Owned(sealed), new_keys)
    } else {
        (
            std::borrow::Cow::Borrowed(events),
            personal::NewKeys::default(),
        )
    };
    let stored = insert_events(&mut tx, events, &sealed, &new_keys).await?;
    for projection in inline {
        let handled = projections::handled(projection.as_ref(), &stored);
        if handled.is_empty() {
            continue;
        }
        projection
            .apply_batch(&mut tx, &handled)
            .await
            .map_err(|err| match err {
                ProjectionError::Refused { projection, reason } => {
                    PersistenceError::UnknownError(Box::new(InlineRefusal { projection, reason }))
                }
                ProjectionError::Database(err) => database(err),
                other => PersistenceError::UnknownError(Box::new(other)),
            })?;
    }
    // A member erased here: scrubbed outside the log and its data keys destroyed, with
    // the event.
    crate::erasure::in_erasing_transaction(&mut tx, &stored)
        .await
        .map_err(database)?;
    tx.commit().await.map_err(database)?;
    Ok(stored
        .iter()
        .map(|e| LogPosition {
            transaction_id: e.transaction_id,
            global_position: e.global_position,
        })
        .collect())
}

impl EventRepository {
    /// An aggregate's events after `after` (postgres-es's query), with the aggregate's data key
    /// in the same statement, their personal fields opened (`personal`).
    async fn aggregate_events(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        type Row = (String, i64, String, String, Value, Value, Option<Vec<u8>>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT e.aggregate_type, e.sequence, e.event_type, e.event_version, e.payload, e.metadata,
                    k.key
             FROM events e
             -- One row at most; joined to every event but read once.
             LEFT JOIN personal_data_keys k ON k.aggregate_type = $1 AND k.aggregate_id = $2
             WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 AND e.sequence > $3
             ORDER BY e.sequence",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        // No key (none made, or shredded): sealed fields read as erased.
        let key = rows.first().and_then(|r| r.6.clone());
        let mut events: Vec<SerializedEvent> = rows
            .into_iter()
            .map(
                |(t, sequence, event_type, version, payload, metadata, ..)| {
                    SerializedEvent::new(
                        aggregate_id.to_owned(),
                        usize::try_from(sequence).unwrap_or_default(),
                        t,
                        event_type,
                        version,
                        payload,
                        metadata,
                    )
                },
            )
            .collect();
        let subject = (aggregate_type.to_owned(), aggregate_id.to_owned());
        let keys = key.map(|k| (subject, Some(k))).into_iter().collect();
        personal::open_with(&keys, &mut events);
        Ok(events)
    }
}

/// Inserts the events in one statement; a duplicate `(aggregate_type, aggregate_id, sequence)`
/// is the optimistic-lock conflict (another writer appended first).
/// `sealed`: the same events with their personal fields encrypted, as they are stored;
/// `new_keys`: the data keys of aggregates they start, inserted by the same statement (a second
/// writer of the same new aggregate conflicts on either key).
async fn insert_events(
    conn: &mut PgConnection,
    events: &[SerializedEvent],
    sealed: &[SerializedEvent],
    new_keys: &personal::NewKeys,
) -> Result<Vec<StoredEvent>, PersistenceError> {
    let column = |f: fn(&SerializedEvent) -> String| events.iter().map(f).collect::<Vec<_>>();
    let sequences: Vec<i64> = events
        .iter()
        .map(|e| i64::try_from(e.sequence).unwrap_or(i64::MAX))
        .collect();
    let positions: Vec<(i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "WITH keys AS (
             INSERT INTO personal_data_keys (aggregate_type, aggregate_id, key)
             SELECT * FROM unnest($8::text[], $9::text[], $10::bytea[]))
         INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT t, i, s, et, ev, p::json, m::json
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
              WITH ORDINALITY AS e(t, i, s, et, ev, p, m, n)
         ORDER BY n
         RETURNING global_position, transaction_id::text::bigint, recorded_at",
    )
    .bind(column(|e| e.aggregate_type.clone()))
    .bind(column(|e| e.aggregate_id.clone()))
    .bind(&sequences)
    .bind(column(|e| e.event_type.clone()))
    .bind(column(|e| e.event_version.clone()))
    .bind(sealed.iter().map(|e| e.payload.to_string()).collect::<Vec<_>>())
    .bind(column(|e| e.metadata.to_string()))
    .bind(&new_keys.aggregate_types)
    .bind(&new_keys.aggregate_ids)
    .bind(&new_keys.keys)
    .fetch_all(&mut *conn)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db)
            if matches!(
                db.constraint(),
                Some("events_pkey" | "personal_data_keys_pkey")
            ) =>
        {
            PersistenceError::OptimisticLockError
        }
        _ => database(err),
    })?;
    // RETURNING gives no order guarantee: global positions are taken in insert order, so
    // sorting them pairs them with the events in order.
    let mut positions = positions;
    positions.sort_by_key(|(global_position, ..)| *global_position);
    Ok(events
        .iter()
        .zip(positions)
        .zip(sequences)
        .map(
            |((event, (global_position, transaction_id, recorded_at)), sequence)| StoredEvent {
                global_position,
                transaction_id,
                aggregate_type: event.aggregate_type.clone(),
                aggregate_id: event.aggregate_id.clone(),
                sequence,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                payload: Arc::new(event.payload.clone()),
                metadata: Arc::new(event.metadata.clone()),
                recorded_at,
            },
        )
        .collect())
}

fn connection(err: sqlx::Error) -> PersistenceError {
    PersistenceError::ConnectionError(Box::new(err))
}

/// A database error that says the database is unavailable for now (a statement timeout, a
/// lock not granted, a shutdown: `bounds::is_unavailable`) is a connection error, answered 503;
/// any other error from the database is unexpected.
fn database(err: sqlx::Error) -> PersistenceError {
    match err {
        sqlx::Error::Database(_) if !crate::bounds::is_unavailable(&err) => {
            PersistenceError::UnknownError(Box::new(err))
        }
        other => connection(other),
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.aggregate_events(A::TYPE, aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.aggregate_events(A::TYPE, aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.reads.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        // The command buses are event-sourced (`PersistedEventStore::new_event_store`): cqrs-es
        // asks for no snapshot.
        if snapshot_update.is_some() {
            return Err(PersistenceError::UnknownError(
                "this repository keeps no snapshots".into(),
            ));
        }
        if events.is_empty() {
            return Ok(());
        }
        let position = self.append(events.to_vec()).await?.last().copied();
        // Outside `CommandBus::execute` (no scope) nobody asked for the position.
        let _ = APPENDED.try_with(|cell| cell.set(position.or(cell.get())));
        Ok(())
    }

    // The streams are postgres-es's, as stored: personal fields sealed. Nothing here replays
    // through them (projections read the log with `eventlog::read_after`, which opens them).
    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_all_events::<A>().await
    }
}
