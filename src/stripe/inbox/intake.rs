//! Storing verified deliveries: the webhook endpoint's inserts, committed together.
//!
//! A delivery that arrives while another is being stored waits for the next statement and
//! shares it: one multi-row `INSERT ... ON CONFLICT DO NOTHING` and one commit for all that
//! queued meanwhile, as the command bus does for creations (`store::group_commit`). A burst
//! of webhooks costs PostgreSQL a statement and a WAL flush per batch instead of per event;
//! nothing waits for a batch to fill, so a delivery to an idle server is stored at once.
//!
//! Each delivery gets its own answer: stored, or a duplicate (Stripe delivered it before,
//! or it was twice in the batch: the first is stored). A batch PostgreSQL refuses (say, a
//! checkout whose payload has a `\u0000` in a string: the expression index on a checkout's
//! subscription cannot read it) is stored again one delivery at a time, so one bad event
//! cannot turn the others away; a batch that finds no database (an outage) is answered 503
//! at once, all of it.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::store;
use crate::eventlog::Wakeups;
use crate::stripe::webhook::EventHead;

/// The most deliveries one statement carries.
const MAX_BATCH: usize = 128;

/// Statements in flight at once: while one commits, the next is built.
const WORKERS: usize = 2;

/// A delivery waiting to be stored.
struct Delivery {
    head: EventHead,
    payload: String,
    stored: oneshot::Sender<Result<bool, Arc<sqlx::Error>>>,
}

/// Where the webhook endpoint stores verified events.
pub struct Intake {
    pool: PgPool,
    received: Arc<Wakeups>,
    /// Unbounded: each waiting delivery is a request awaiting its answer, so the requests in
    /// flight bound it.
    queue: mpsc::UnboundedSender<Delivery>,
}

impl Intake {
    /// Starts the workers; they stop when the intake is dropped. Needs a Tokio runtime.
    pub fn new(pool: PgPool, received: Arc<Wakeups>) -> Self {
        let queue = {
            let (pool, received) = (pool.clone(), received.clone());
            crate::batch_queue::start(WORKERS, MAX_BATCH, move |batch| {
                let (pool, received) = (pool.clone(), received.clone());
                async move { store_batch(&pool, &received, batch).await }
            })
        };
        Self {
            pool,
            received,
            queue,
        }
    }

    /// Stores a verified event, `payload` being its JSON as received; false when it was
    /// stored before (a duplicate delivery). Once this returns `Ok`, the event is committed.
    pub async fn store(&self, head: EventHead, payload: String) -> Result<bool, Arc<sqlx::Error>> {
        let (stored, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(delivery)) = self.queue.send(Delivery {
            head,
            payload,
            stored,
        }) {
            // No worker left (the runtime is shutting down): store it here.
            return store(
                &self.pool,
                &self.received,
                &delivery.head,
                &delivery.payload,
            )
            .await
            .map_err(Arc::new);
        }
        answer.await.unwrap_or_else(|_| {
            Err(Arc::new(sqlx::Error::Protocol(
                "the webhook intake stopped before storing the event".to_owned(),
            )))
        })
    }
}

/// Stores a batch of deliveries with one statement (one at a time if PostgreSQL refuses it)
/// and answers each.
async fn store_batch(pool: &PgPool, received: &Arc<Wakeups>, mut batch: Vec<Delivery>) {
    let events: Vec<_> = batch
        .iter()
        .map(|d| (&d.head, d.payload.as_str()))
        .collect();
    match insert(pool, &events).await {
        Ok(inserted) => {
            if !inserted.is_empty() {
                received.announce("stripe", std::iter::empty()).await;
            }
            let mut answered = HashSet::new();
            for delivery in batch.drain(..) {
                // Twice in one batch: the first copy is the one stored.
                let fresh = inserted.contains(delivery.head.id.as_str())
                    && answered.insert(delivery.head.id.clone());
                let _ = delivery.stored.send(Ok(fresh));
            }
        }
        // PostgreSQL refused the statement: perhaps for one delivery's sake.
        Err(err @ sqlx::Error::Database(_)) if batch.len() > 1 => {
            tracing::debug!(error = %err, deliveries = batch.len(), "a batch of Stripe events was refused; storing them one at a time");
            let mut lost: Option<Arc<sqlx::Error>> = None;
            for delivery in batch.drain(..) {
                let result = match &lost {
                    // The database went away meanwhile: not one timeout per delivery.
                    Some(err) => Err(err.clone()),
                    None => store(pool, received, &delivery.head, &delivery.payload)
                        .await
                        .map_err(Arc::new),
                };
                if let Err(err) = &result {
                    if !matches!(**err, sqlx::Error::Database(_)) {
                        lost = Some(err.clone());
                    }
                }
                let _ = delivery.stored.send(result);
            }
        }
        // No database (an outage, the pool exhausted): the same for every delivery, and
        // answered at once, not once per delivery after a timeout each.
        Err(err) => {
            let err = Arc::new(err);
            for delivery in batch.drain(..) {
                let _ = delivery.stored.send(Err(err.clone()));
            }
        }
    }
}

/// Inserts events (their indexed fields and JSON) in one statement; the ids it stored.
pub(super) async fn insert(
    pool: &PgPool,
    events: &[(&EventHead, &str)],
) -> Result<HashSet<String>, sqlx::Error> {
    let heads = || events.iter().map(|(head, _)| *head);
    let ids: Vec<String> = sqlx::query_scalar(
        "INSERT INTO stripe_events (id, type, created, livemode, customer_id, object_id, payload)
         SELECT id, type, to_timestamp(created), livemode, customer_id, object_id, payload
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bool[], $5::text[], $6::text[],
                     $7::text[])
              AS d(id, type, created, livemode, customer_id, object_id, payload)
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(heads().map(|h| h.id.as_str()).collect::<Vec<_>>())
    .bind(heads().map(|h| h.event_type.as_str()).collect::<Vec<_>>())
    .bind(heads().map(|h| h.created).collect::<Vec<_>>())
    .bind(heads().map(|h| h.livemode).collect::<Vec<_>>())
    .bind(
        heads()
            .map(|h| h.customer_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(heads().map(|h| h.object_id.as_deref()).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|(_, payload)| *payload)
            .collect::<Vec<_>>(),
    )
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().collect())
}
