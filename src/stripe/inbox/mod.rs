//! The inbox: verified Stripe events, stored, then claimed and processed.
//!
//! **Claiming** ([`claim`]): one task per process (the dispatcher, [`dispatch`]) claims on a
//! connection of its own, in two statements: it picks the customers of the oldest due events
//! and takes a session advisory lock per customer (`pg_try_advisory_lock`, skipping customers
//! another connection holds), then marks *all* due events of the customers it locked
//! (`created` order, a bounded number each) `processing` with a lease, and returns them. One
//! group per customer: a customer's events are processed one after the other in Stripe's
//! `created` order, different customers' concurrently. Why groups of a customer and not one
//! event of many customers: a burst delivers a customer's lifecycle together, and a group
//! runs it in one claim instead of one claim per event, with no other worker able to slip in
//! between (nor a need to re-check the order per event).
//!
//! **Why it is safe across instances**: a customer's events are touched only by the
//! connection holding its advisory lock, from the claim until its outcomes are committed
//! ([`claim::finish`], then [`claim::unlock`]). The lock is a session lock, so it lives as long
//! as the claiming connection, not a timer: a slow Stripe call never lets a second worker in.
//! If the process or its connection dies, the lock goes with it and, once the lease has run
//! out, another instance claims the events again (a customer whose events are still under an
//! unexpired lease is skipped meanwhile, so a later event does not overtake them). Commands are
//! idempotent, so a run after a partial one is safe. Session locks are re-entrant, so the
//! dispatcher also skips the customers it has in flight itself.
//!
//! **Outcomes** are written in one statement for every group finished at the time. An event
//! that needs another event of its customer first (the translator's
//! [`Outcome::Deferred`](super::translate::Outcome::Deferred)) is run again right after a later
//! event of its group is processed, and otherwise stored `deferred`: when an event of the
//! customer is processed, the same statement makes its deferred events due now. A deferred
//! event still waiting `defer_limit` after it first waited becomes `failed`, which means an
//! operator should look; failures are retried with exponential backoff.
//!
//! **Workers**: the dispatcher runs up to `workers` groups at once, each in a task of its own,
//! so the number of running tasks follows the number of customers with due events. It claims
//! once at most `workers` groups are running or queued, and then up to `2 × workers` less
//! those: a claim costs a scan of the due events, so one claim feeds many groups rather than
//! the one slot a finished group freed. Queued groups hold their customers' locks like running
//! ones; a stopping dispatcher gives them back ([`claim::release`]). When nothing is due it
//! waits for a wake-up (`NOTIFY stripe_event_received`, sent after an event is stored) or a
//! 1 s poll.

mod claim;
mod dispatch;
mod intake;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

pub use claim::{claim, claim_groups, finish, release, retry_delay, unlock, Finished, Group};
pub use dispatch::spawn;
pub use intake::Intake;

use super::webhook::EventHead;
use crate::eventlog::{Wakeups, STRIPE_EVENT_RECEIVED};

/// Stores a verified event, `payload` being its JSON as received; false when it was stored
/// before (a duplicate delivery).
pub async fn store(
    pool: &PgPool,
    received: &Arc<Wakeups>,
    head: &EventHead,
    payload: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = !intake::insert(pool, &[(head, payload)]).await?.is_empty();
    if inserted {
        received.announce("stripe", std::iter::empty()).await;
    }
    Ok(inserted)
}

/// An event a worker holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedEvent {
    pub id: String,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub customer_id: Option<String>,
    /// Stored as the text Stripe sent, parsed here.
    #[sqlx(try_from = "JsonText")]
    pub payload: Value,
    pub attempts: i32,
    pub created: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

/// JSON read as the `text` it is stored as: parsed by the server, not by PostgreSQL.
#[derive(sqlx::Type)]
#[sqlx(transparent)]
pub struct JsonText(String);

impl TryFrom<JsonText> for Value {
    type Error = serde_json::Error;

    fn try_from(text: JsonText) -> Result<Self, Self::Error> {
        serde_json::from_str(&text.0)
    }
}

/// A stored event, as operators list it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredStripeEvent {
    pub id: String,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub created: DateTime<Utc>,
    pub customer_id: Option<String>,
    pub object_id: Option<String>,
    /// The event as stored: the body as Stripe sent it.
    pub payload: String,
    pub received_at: DateTime<Utc>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
}

const LIST_COLUMNS: &str =
    "id, type, created, customer_id, object_id, payload::text AS payload, received_at, status, attempts, \
     next_attempt_at, last_error, processed_at";

/// Newest received first; `before` is the `received_at`/`id` of the last row of the previous page.
pub async fn list(
    pool: &PgPool,
    status: Option<&str>,
    before: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<StoredStripeEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {LIST_COLUMNS} FROM stripe_events
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::timestamptz IS NULL OR (received_at, id) < ($2, $3))
         ORDER BY received_at DESC, id DESC
         LIMIT $4"
    ))
    .bind(status)
    .bind(before.as_ref().map(|(t, _)| *t))
    .bind(before.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<StoredStripeEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {LIST_COLUMNS} FROM stripe_events WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// What asking to retry an event did.
#[derive(Debug)]
pub enum Retry {
    /// Due now; a worker will pick it up.
    Queued(StoredStripeEvent),
    /// Processed already, or being processed: left alone.
    NotRetryable(StoredStripeEvent),
    NotFound,
}

/// Makes a failed, deferred, ignored or pending event due now (a deferred one gets its full
/// time to wait again).
pub async fn retry(pool: &PgPool, id: &str) -> Result<Retry, sqlx::Error> {
    let queued: Option<StoredStripeEvent> = sqlx::query_as(&format!(
        "UPDATE stripe_events SET status = 'pending', next_attempt_at = now(), deferred_since = NULL
         WHERE id = $1 AND status IN ('failed', 'deferred', 'ignored', 'pending')
         RETURNING {LIST_COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    if let Some(event) = queued {
        crate::eventlog::notify(pool, STRIPE_EVENT_RECEIVED).await;
        return Ok(Retry::Queued(event));
    }
    Ok(get(pool, id)
        .await?
        .map_or(Retry::NotFound, Retry::NotRetryable))
}

/// Makes every failed event due now; returns how many.
pub async fn retry_all_failed(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let queued = sqlx::query("UPDATE stripe_events SET status = 'pending', next_attempt_at = now(), deferred_since = NULL
         WHERE status = 'failed'")
        .execute(pool)
        .await?
        .rows_affected();
    if queued > 0 {
        crate::eventlog::notify(pool, STRIPE_EVENT_RECEIVED).await;
    }
    Ok(queued)
}
