//! Claiming due events by customer, and writing how they ended. The SQL of the inbox's
//! protocol; [`super::dispatch`] runs it. Why it is safe: the module docs of [`super`].

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use sqlx::PgConnection;

use super::ClaimedEvent;
use crate::config::StripeSettings;
use crate::stripe::translate::Outcome;

/// Prefix of a customer's advisory lock key (`hashtext(prefix || customer_id)`).
const LOCK_PREFIX: &str = "memberledger.stripe.customer.";

/// How many of the oldest open events a claim looks at to choose customers. A customer whose
/// due events all lie beyond them waits for the older ones to be done.
const SCAN: i64 = 512;

/// Events due now: pending, failed or deferred events whose time has come, and events whose
/// worker's lease ran out. Written as the open statuses (the predicate of the partial indexes
/// `stripe_events_due` and `stripe_events_open_customer`) and a per-row condition, so that a
/// claim walks `stripe_events_due` in `created` order and stops at its limit; the same
/// condition as two `OR`ed status tests made PostgreSQL read every open event and sort them
/// (15 ms a claim under a backlog of a few thousand events, 2 ms now).
const DUE: &str = "(e.status IN ('pending', 'failed', 'deferred', 'processing')
     AND CASE WHEN e.status = 'processing' THEN e.lease_until < now()
              ELSE e.next_attempt_at <= now() END)";

/// Customers held by a live lease (a worker that died a moment ago keeps its customer until
/// the lease runs out): read once per claim, a handful of rows through `stripe_events_status`,
/// rather than probed for every due event.
const HELD: &str = "held AS MATERIALIZED (
     SELECT DISTINCT customer_id FROM stripe_events
     WHERE status = 'processing' AND lease_until >= now() AND customer_id IS NOT NULL)";

/// One customer's claimed events, oldest first (Stripe's `created`), to be processed one after
/// the other; or one event that has no customer.
#[derive(Debug)]
pub struct Group {
    /// The customer whose advisory lock this connection holds; `None` for an event without one.
    pub customer_id: Option<String>,
    pub events: Vec<ClaimedEvent>,
}

/// Claims the due events of up to `max_groups` customers, `per_group` at most each, skipping
/// `busy` customers (this process's own groups in flight: session advisory locks are
/// re-entrant, so the lock cannot keep this connection from taking a customer twice).
///
/// Two statements. The first chooses customers among the oldest due events and takes their
/// advisory locks (`pg_try_advisory_lock`; a customer locked by another connection is
/// skipped). The second, whose snapshot is taken once the locks are held, marks the chosen
/// customers' due events `processing` with a lease and returns them: nobody else changes a
/// locked customer's events meanwhile, so they are a prefix of its due events in `created`
/// order. Events without a customer are claimed by the same statement, row by row.
pub async fn claim_groups(
    conn: &mut PgConnection,
    busy: &[String],
    max_groups: usize,
    per_group: usize,
    lease: Duration,
) -> Result<Vec<Group>, sqlx::Error> {
    if max_groups == 0 {
        return Ok(Vec::new());
    }
    let chosen: Vec<(Option<String>, Option<String>, bool)> = sqlx::query_as(&format!(
        "WITH {HELD}
         SELECT g.customer_id, g.loose_id,
                CASE WHEN g.customer_id IS NULL THEN true
                     ELSE pg_try_advisory_lock(hashtext('{LOCK_PREFIX}' || g.customer_id)) END
         FROM (
             SELECT o.customer_id, o.loose_id, min(o.created) AS first
             FROM (
                 SELECT e.customer_id, CASE WHEN e.customer_id IS NULL THEN e.id END AS loose_id,
                        e.created
                 FROM stripe_events e
                 WHERE {DUE}
                   AND (e.customer_id IS NULL OR NOT e.customer_id = ANY($1))
                   AND NOT EXISTS (SELECT 1 FROM held h WHERE h.customer_id = e.customer_id)
                 ORDER BY e.created, e.received_at
                 LIMIT $2
             ) o
             GROUP BY o.customer_id, o.loose_id
             ORDER BY first
             LIMIT $3
         ) g"
    ))
    .bind(busy)
    .bind(SCAN)
    .bind(i64::try_from(max_groups).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let customers: Vec<String> = chosen
        .iter()
        .filter(|(_, _, locked)| *locked)
        .filter_map(|(customer, _, _)| customer.clone())
        .collect();
    let loose: Vec<String> = chosen
        .into_iter()
        .filter_map(|(_, loose, _)| loose)
        .collect();
    if customers.is_empty() && loose.is_empty() {
        return Ok(Vec::new());
    }
    let claimed: Vec<ClaimedEvent> = sqlx::query_as(&format!(
        "WITH {HELD}, ordered AS (
             SELECT e.id,
                    row_number() OVER (PARTITION BY e.customer_id
                                       ORDER BY e.created, e.received_at, e.id) AS nth
             FROM stripe_events e
             WHERE e.customer_id = ANY($1) AND {DUE}
               AND NOT EXISTS (SELECT 1 FROM held h WHERE h.customer_id = e.customer_id)
         ), targets AS (
             SELECT id FROM ordered WHERE nth <= $3
             UNION ALL
             -- `cardinality` first: with no such event (the usual case) the scan never runs,
             -- where an empty `ANY` could still be planned as a sequential scan.
             SELECT l.id FROM stripe_events l
             WHERE cardinality($2::text[]) > 0 AND l.id = ANY($2) AND l.customer_id IS NULL
         )
         -- Joined on the primary key: the table keeps every event ever received, and a
         -- condition with an OR here made PostgreSQL scan all of it on every claim.
         UPDATE stripe_events e
         SET status = 'processing', lease_until = now() + $4, attempts = e.attempts + 1
         FROM targets t
         WHERE e.id = t.id AND {DUE}
         RETURNING e.id, e.type, e.customer_id, e.payload, e.attempts, e.created, e.received_at"
    ))
    .bind(&customers)
    .bind(&loose)
    .bind(i64::try_from(per_group).unwrap_or(i64::MAX))
    .bind(lease)
    .fetch_all(&mut *conn)
    .await?;

    let mut by_customer: BTreeMap<String, Vec<ClaimedEvent>> = BTreeMap::new();
    let mut groups = Vec::new();
    for event in claimed {
        match &event.customer_id {
            Some(customer) => by_customer.entry(customer.clone()).or_default().push(event),
            None => groups.push(Group {
                customer_id: None,
                events: vec![event],
            }),
        }
    }
    // Locked, but nothing left to claim (another instance finished it meanwhile).
    let idle: Vec<String> = customers
        .into_iter()
        .filter(|c| !by_customer.contains_key(c))
        .collect();
    unlock(conn, &idle).await?;
    for (customer, mut events) in by_customer {
        events.sort_by(|a, b| {
            (a.created, a.received_at, &a.id).cmp(&(b.created, b.received_at, &b.id))
        });
        groups.push(Group {
            customer_id: Some(customer),
            events,
        });
    }
    groups.sort_by_key(|g| g.events.first().map(|e| (e.created, e.received_at)));
    Ok(groups)
}

/// Claims the oldest due event whose customer no other connection holds; the customer's
/// advisory lock stays held on `conn` until [`unlock`]. (One event; the workers claim groups.)
pub async fn claim(
    conn: &mut PgConnection,
    lease: Duration,
) -> Result<Option<ClaimedEvent>, sqlx::Error> {
    let groups = claim_groups(conn, &[], 1, 1, lease).await?;
    Ok(groups.into_iter().flat_map(|g| g.events).next())
}

/// Makes claimed events that were not run due again at once, their attempt uncounted (a
/// stopping dispatcher's queue). The caller then releases their customers ([`unlock`]).
pub async fn release(conn: &mut PgConnection, ids: &[String]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE stripe_events
         SET status = 'pending', lease_until = NULL, attempts = greatest(attempts - 1, 0)
         WHERE id = ANY($1) AND status = 'processing'",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Releases the customers' advisory locks held on `conn`.
pub async fn unlock(conn: &mut PgConnection, customers: &[String]) -> Result<(), sqlx::Error> {
    if customers.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "SELECT pg_advisory_unlock(hashtext('{LOCK_PREFIX}' || c)) FROM unnest($1::text[]) c"
    ))
    .bind(customers)
    .execute(conn)
    .await?;
    Ok(())
}

/// How one claimed event ended, to be written.
#[derive(Debug)]
pub struct Finished {
    pub id: String,
    pub customer_id: Option<String>,
    /// Attempts so far, counting the runs after the claim (a deferred event run again).
    pub attempts: i32,
    pub outcome: Result<Outcome, String>,
}

/// Writes the outcomes of finished events in one statement, and makes the deferred events of
/// every customer who had an event processed due now (they may have waited for it). Returns
/// how many it woke. The caller then releases the customers' locks ([`unlock`]): after this
/// commit, so whoever takes a customer next sees its events' outcomes.
///
/// A deferred event past its bound (`defer_limit` after it first waited) becomes `failed`
/// instead, and a failed one is retried after [`retry_delay`].
pub async fn finish(
    conn: &mut PgConnection,
    finished: &[&Finished],
    settings: &StripeSettings,
) -> Result<u64, sqlx::Error> {
    if finished.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(finished.len());
    let mut statuses = Vec::with_capacity(finished.len());
    let mut errors = Vec::with_capacity(finished.len());
    let mut attempts = Vec::with_capacity(finished.len());
    let mut retry_secs = Vec::with_capacity(finished.len());
    let mut processed_customers = HashSet::new();
    for f in finished {
        let (status, error) = match &f.outcome {
            Ok(Outcome::Processed) => ("processed", None),
            Ok(Outcome::Ignored(reason)) => ("ignored", Some(reason.clone())),
            Ok(Outcome::Deferred(reason)) => ("deferred", Some(reason.clone())),
            Err(err) => ("failed", Some(err.clone())),
        };
        if status == "processed" {
            if let Some(customer) = &f.customer_id {
                processed_customers.insert(customer.clone());
            }
        }
        ids.push(f.id.clone());
        statuses.push(status);
        errors.push(error);
        attempts.push(f.attempts);
        retry_secs.push(retry_delay(settings, f.attempts).as_secs_f64());
    }
    let processed_customers: Vec<String> = processed_customers.into_iter().collect();
    // `gave_up`: deferred, and waiting since longer than the bound.
    let woken: i64 = sqlx::query_scalar(
        "WITH outcome AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::float8[])
                 AS o(id, status, error, attempts, retry_secs)
         ), done AS (
             UPDATE stripe_events e SET
                 status = CASE WHEN o.status = 'deferred'
                                    AND coalesce(e.deferred_since, now()) + $6 <= now()
                               THEN 'failed' ELSE o.status END,
                 last_error = CASE WHEN o.status = 'deferred'
                                        AND coalesce(e.deferred_since, now()) + $6 <= now()
                                   THEN 'gave up waiting after ' || $7 || ' for another event of the customer: ' || o.error
                                   ELSE o.error END,
                 next_attempt_at = CASE
                     WHEN o.status = 'deferred' AND coalesce(e.deferred_since, now()) + $6 > now()
                         THEN coalesce(e.deferred_since, now()) + $6
                     WHEN o.status IN ('deferred', 'failed')
                         THEN now() + make_interval(secs => o.retry_secs)
                     ELSE e.next_attempt_at END,
                 deferred_since = CASE WHEN o.status = 'deferred'
                                       THEN coalesce(e.deferred_since, now()) END,
                 attempts = o.attempts,
                 lease_until = NULL,
                 processed_at = CASE WHEN o.status IN ('processed', 'ignored') THEN now()
                                     ELSE e.processed_at END
             FROM outcome o
             -- `id = ANY` as well: the join alone was planned as a sequential scan of the
             -- whole table whenever its statistics lagged behind a burst (12 ms at 6,500
             -- events, growing with every event ever received), the primary key now.
             WHERE e.id = o.id AND e.id = ANY($1)
         ), woken AS (
             UPDATE stripe_events e SET status = 'pending', next_attempt_at = now()
             WHERE e.status = 'deferred' AND e.customer_id = ANY($8)
             RETURNING 1
         )
         SELECT count(*) FROM woken",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&errors)
    .bind(&attempts)
    .bind(&retry_secs)
    .bind(settings.defer_limit)
    .bind(format!("{}s", settings.defer_limit.as_secs()))
    .bind(&processed_customers)
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(woken).unwrap_or(0))
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
