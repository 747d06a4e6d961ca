//! The inbox: verified Stripe events, stored, then claimed and processed by workers.
//!
//! A worker claims an event by marking it `processing` with a lease, holding a session
//! advisory lock on the event's customer so no two events of one customer are processed at
//! once. If the worker dies, the lock goes with its connection and the lease expires, and the
//! event is claimed again. Failures are recorded and retried with exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgListener;
use sqlx::{Acquire, PgConnection, PgPool, Postgres};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::translate::{Outcome, Translator};
use super::webhook::EventHead;
use crate::config::StripeSettings;
use crate::eventlog::STRIPE_EVENT_RECEIVED;

const POLL_INTERVAL: Duration = Duration::from_secs(1);
const CLAIM_CANDIDATES: i64 = 16;

/// Stores a verified event; false when it was stored before (a duplicate delivery).
pub async fn store(
    pool: &PgPool,
    head: &EventHead,
    raw: &Value,
    parsed: bool,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO stripe_events (id, type, created, livemode, customer_id, object_id, payload, parsed)
         VALUES ($1, $2, to_timestamp($3::bigint), $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&head.id)
    .bind(&head.event_type)
    .bind(head.created)
    .bind(head.livemode)
    .bind(&head.customer_id)
    .bind(&head.object_id)
    .bind(raw)
    .bind(parsed)
    .execute(pool)
    .await?;
    let inserted = result.rows_affected() == 1;
    if inserted {
        crate::eventlog::notify(pool, STRIPE_EVENT_RECEIVED).await;
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
    pub payload: Value,
    pub attempts: i32,
}

fn customer_lock_key(customer_id: &str) -> String {
    format!("memberledger.stripe.customer.{customer_id}")
}

/// Claims the oldest due event whose customer no other worker is processing. The customer's
/// advisory lock stays held on `conn` until [`finish`] releases it.
pub async fn claim(
    conn: &mut PgConnection,
    lease: Duration,
) -> Result<Option<ClaimedEvent>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let candidates: Vec<ClaimedEvent> = sqlx::query_as(
        "SELECT id, type, customer_id, payload, attempts FROM stripe_events
         WHERE (status IN ('pending', 'failed') AND next_attempt_at <= now())
            OR (status = 'processing' AND lease_until < now())
         ORDER BY created, received_at
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(CLAIM_CANDIDATES)
    .fetch_all(&mut *tx)
    .await?;
    for candidate in candidates {
        if let Some(customer) = &candidate.customer_id {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(customer_lock_key(customer))
                .fetch_one(&mut *tx)
                .await?;
            if !locked {
                continue;
            }
        }
        sqlx::query(
            "UPDATE stripe_events
             SET status = 'processing', lease_until = now() + $2, attempts = attempts + 1
             WHERE id = $1",
        )
        .bind(&candidate.id)
        .bind(lease)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Some(ClaimedEvent {
            attempts: candidate.attempts + 1,
            ..candidate
        }));
    }
    tx.commit().await?;
    Ok(None)
}

/// Records how processing ended and releases the customer's lock.
pub async fn finish(
    conn: &mut PgConnection,
    event: &ClaimedEvent,
    result: &Result<Outcome, anyhow::Error>,
    settings: &StripeSettings,
) -> Result<(), sqlx::Error> {
    match result {
        Ok(Outcome::Processed) => {
            sqlx::query(
                "UPDATE stripe_events SET status = 'processed', lease_until = NULL, last_error = NULL,
                     processed_at = now()
                 WHERE id = $1",
            )
            .bind(&event.id)
            .execute(&mut *conn)
            .await?;
        }
        Ok(Outcome::Ignored(reason)) => {
            sqlx::query(
                "UPDATE stripe_events SET status = 'ignored', lease_until = NULL, last_error = $2,
                     processed_at = now()
                 WHERE id = $1",
            )
            .bind(&event.id)
            .bind(reason)
            .execute(&mut *conn)
            .await?;
        }
        Err(err) => {
            let delay = retry_delay(settings, event.attempts);
            sqlx::query(
                "UPDATE stripe_events SET status = 'failed', lease_until = NULL, last_error = $2,
                     next_attempt_at = now() + $3
                 WHERE id = $1",
            )
            .bind(&event.id)
            .bind(format!("{err:#}"))
            .bind(delay)
            .execute(&mut *conn)
            .await?;
        }
    }
    if let Some(customer) = &event.customer_id {
        sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(customer_lock_key(customer))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// `retry_base * 2^(attempts-1)`, capped.
pub fn retry_delay(settings: &StripeSettings, attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    settings
        .retry_base
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(settings.max_retry_delay)
}

/// Starts the workers (and the listener that wakes them).
pub fn spawn(
    pool: PgPool,
    translator: Arc<Translator>,
    settings: StripeSettings,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    if settings.workers == 0 {
        return Vec::new();
    }
    let (wake_tx, wake_rx) = watch::channel(0u64);
    let mut tasks = vec![tokio::spawn(listen(
        pool.clone(),
        wake_tx,
        shutdown.clone(),
    ))];
    for n in 0..settings.workers {
        let worker = Worker {
            pool: pool.clone(),
            translator: translator.clone(),
            settings: settings.clone(),
            wake: wake_rx.clone(),
            shutdown: shutdown.clone(),
        };
        tasks.push(tokio::spawn(async move { worker.run(n).await }));
    }
    tasks
}

async fn listen(pool: PgPool, wake: watch::Sender<u64>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let result: Result<(), sqlx::Error> = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(STRIPE_EVENT_RECEIVED).await?;
            wake.send_modify(|n| *n += 1);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    n = listener.recv() => { n?; wake.send_modify(|n| *n += 1); }
                }
            }
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "stripe inbox listener failed; reconnecting");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

struct Worker {
    pool: PgPool,
    translator: Arc<Translator>,
    settings: StripeSettings,
    wake: watch::Receiver<u64>,
    shutdown: CancellationToken,
}

impl Worker {
    async fn run(mut self, n: usize) {
        while !self.shutdown.is_cancelled() {
            if let Err(err) = self.work().await {
                tracing::warn!(worker = n, error = %err, "stripe inbox worker failed; restarting");
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    /// Claims and processes events on one connection until shutdown or a database error.
    async fn work(&mut self) -> Result<(), sqlx::Error> {
        let mut conn: PoolConnection<Postgres> = self.pool.acquire().await?;
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            self.wake.borrow_and_update();
            match claim(&mut conn, self.settings.lease).await? {
                Some(event) => {
                    let span = tracing::info_span!("stripe_event", event_id = %event.id, event_type = %event.event_type, attempt = event.attempts);
                    let result = tracing::Instrument::instrument(
                        self.translator.handle(&event),
                        span.clone(),
                    )
                    .await;
                    span.in_scope(|| match &result {
                        Ok(Outcome::Processed) => tracing::info!("stripe event processed"),
                        Ok(Outcome::Ignored(reason)) => {
                            tracing::info!(reason = %reason, "stripe event ignored")
                        }
                        Err(err) => tracing::warn!(
                            error = format!("{err:#}"),
                            "stripe event failed; will retry"
                        ),
                    });
                    finish(&mut conn, &event, &result, &self.settings).await?;
                }
                None => {
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

/// A stored event, as operators list it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredStripeEvent {
    pub id: String,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub created: DateTime<Utc>,
    pub customer_id: Option<String>,
    pub object_id: Option<String>,
    pub parsed: bool,
    pub received_at: DateTime<Utc>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
}

const LIST_COLUMNS: &str =
    "id, type, created, customer_id, object_id, parsed, received_at, status, attempts, \
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

/// Makes a failed, ignored or pending event due now.
pub async fn retry(pool: &PgPool, id: &str) -> Result<Retry, sqlx::Error> {
    let queued: Option<StoredStripeEvent> = sqlx::query_as(&format!(
        "UPDATE stripe_events SET status = 'pending', next_attempt_at = now()
         WHERE id = $1 AND status IN ('failed', 'ignored', 'pending')
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
    let queued = sqlx::query("UPDATE stripe_events SET status = 'pending', next_attempt_at = now() WHERE status = 'failed'")
        .execute(pool)
        .await?
        .rows_affected();
    if queued > 0 {
        crate::eventlog::notify(pool, STRIPE_EVENT_RECEIVED).await;
    }
    Ok(queued)
}
