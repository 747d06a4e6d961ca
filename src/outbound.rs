//! Outbound webhooks: our events, delivered signed to the endpoints an admin registered
//! (`/v1/webhooks`), as Ghost's member webhooks and Keygen's license webhooks do.
//!
//! - **Outbox.** The `outbound_webhooks` policy reads the log like any projection (its own
//!   checkpoint, exactly once) and writes one `webhook_deliveries` row per event and matching
//!   enabled endpoint, in its batch's transaction: a delivery exists if and only if its event
//!   was applied. An endpoint receives the events appended from about its registration on.
//! - **Delivery.** [`Deliverer`] claims due rows (`FOR UPDATE SKIP LOCKED`, so instances share
//!   the work) and POSTs each payload with `Memberledger-Signature: t=<unix>,v1=<hex>`, the
//!   HMAC-SHA256 with the endpoint's secret of `<t>.<body>`, as Stripe signs ours. A 2xx is
//!   delivered; anything else is retried with exponential backoff (`WEBHOOK_RETRY_BASE_MS`
//!   doubling, at most an hour) for a day, then `failed`. An endpoint whose deliveries fail
//!   `WEBHOOK_DISABLE_AFTER` times in a row is disabled with the last error as its reason; an
//!   admin enables it again. Order between events is not guaranteed (a retry comes later):
//!   receivers order by the payload's `position`.

use std::sync::Arc;
use std::time::Duration;

use aggregates::cqrs_es::Aggregate;
use aggregates::{License, Member, Newsletter, Offer, Subscription, Tier};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use projections::{Handles, Projection, ProjectionError, StoredEvent};
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::WebhookSettings;

/// The header a delivery's signature is in.
pub const SIGNATURE_HEADER: &str = "Memberledger-Signature";

/// `t=<unix>,v1=<hex HMAC-SHA256 of "<unix>.<body>">`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// What a receiver gets for one event.
pub fn payload(event: &StoredEvent) -> Value {
    json!({
        "id": format!("evt_{}", event.global_position),
        "position": event.global_position,
        "type": event.event_type,
        "version": event.event_version,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "sequence": event.sequence,
        "created_at": event.recorded_at,
        "data": event.payload.get(&event.event_type).cloned().unwrap_or(Value::Null),
    })
}

/// The policy that fills the outbox.
pub struct OutboundWebhooks;

#[async_trait]
impl Projection for OutboundWebhooks {
    fn name(&self) -> &'static str {
        "outbound_webhooks"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["webhook_deliveries"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[
            Handles::all(Member::TYPE),
            Handles::all(Subscription::TYPE),
            Handles::all(License::TYPE),
            Handles::all(Newsletter::TYPE),
            Handles::all(Tier::TYPE),
            Handles::all(Offer::TYPE),
        ];
        HANDLES
    }

    /// Deliveries already happened: a replay would send them again.
    fn rebuildable(&self) -> bool {
        false
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let endpoints: Vec<(Uuid, Vec<String>)> =
            sqlx::query_as("SELECT id, event_types FROM webhook_endpoints WHERE enabled")
                .fetch_all(&mut *conn)
                .await?;
        if endpoints.is_empty() {
            return Ok(());
        }
        let (mut ids, mut endpoint_ids, mut positions, mut types, mut payloads) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for event in events {
            for (endpoint, wanted) in &endpoints {
                if wanted.iter().any(|t| t == "*" || *t == event.event_type) {
                    ids.push(Uuid::now_v7());
                    endpoint_ids.push(*endpoint);
                    positions.push(event.global_position);
                    types.push(event.event_type.clone());
                    payloads.push(payload(event));
                }
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, endpoint_id, global_position, event_type, payload)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::jsonb[])
             ON CONFLICT (endpoint_id, global_position) DO NOTHING",
        )
        .bind(&ids)
        .bind(&endpoint_ids)
        .bind(&positions)
        .bind(&types)
        .bind(&payloads)
        .execute(&mut *conn)
        .await?;
        sqlx::query("SELECT pg_notify('webhook_delivery', '')")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    endpoint_id: Uuid,
    url: String,
    secret: String,
    payload: Value,
    attempts: i32,
    created_at: DateTime<Utc>,
}

/// Delivers the outbox.
pub struct Deliverer {
    pub pool: PgPool,
    pub settings: WebhookSettings,
    client: reqwest::Client,
}

impl Deliverer {
    pub fn new(pool: PgPool, settings: WebhookSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("memberledger/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            pool,
            settings,
            client,
        })
    }

    /// Delivers due rows until `shutdown`, woken by the policy's `webhook_delivery` notice or
    /// every second.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let poll = Duration::from_secs(1);
        crate::eventlog::drain_on_notice(
            &self.pool,
            "webhook_delivery",
            poll,
            &shutdown,
            "the webhook deliverer",
            || async { self.deliver_due().await.map(|n| n > 0) },
        )
        .await;
    }

    /// Claims up to 16 due deliveries (pushing them a lease ahead, so another instance leaves
    /// them) and sends them at once; returns how many.
    pub async fn deliver_due(&self) -> Result<usize, sqlx::Error> {
        let due: Vec<Due> = sqlx::query_as(
            "WITH claimed AS (
                 UPDATE webhook_deliveries d SET next_attempt_at = now() + interval '2 minutes'
                 WHERE d.id IN (SELECT d2.id FROM webhook_deliveries d2
                                JOIN webhook_endpoints e ON e.id = d2.endpoint_id
                                WHERE d2.status = 'pending' AND d2.next_attempt_at <= now()
                                  AND e.enabled
                                ORDER BY d2.next_attempt_at LIMIT 16
                                FOR UPDATE OF d2 SKIP LOCKED)
                 RETURNING d.id, d.endpoint_id, d.payload, d.attempts, d.created_at)
             SELECT c.id, c.endpoint_id, e.url, e.secret, c.payload, c.attempts, c.created_at
             FROM claimed c JOIN webhook_endpoints e ON e.id = c.endpoint_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let n = due.len();
        let results = futures::future::join_all(due.into_iter().map(|d| self.deliver(d))).await;
        for result in results {
            result?;
        }
        Ok(n)
    }

    async fn deliver(&self, due: Due) -> Result<(), sqlx::Error> {
        let body = due.payload.to_string();
        let signed = signature(&due.secret, Utc::now().timestamp(), &body);
        let sent = self
            .client
            .post(&due.url)
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, signed)
            .header("Memberledger-Delivery", due.id.to_string())
            .body(body)
            .send()
            .await;
        let (status, error) = match sent {
            Ok(resp) if resp.status().is_success() => (Some(resp.status().as_u16()), None),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text: String = resp.text().await.unwrap_or_default();
                let text: String = text.chars().take(500).collect();
                (Some(status), Some(format!("answered {status}: {text}")))
            }
            Err(err) => (None, Some(format!("not delivered: {err}"))),
        };
        let Some(error) = error else {
            crate::metrics::webhook_delivery("delivered");
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1,
                     last_status = $2, last_error = NULL, delivered_at = now()
                 WHERE id = $1",
            )
            .bind(due.id)
            .bind(status.map(i32::from))
            .execute(&self.pool)
            .await?;
            sqlx::query("UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1")
                .bind(due.endpoint_id)
                .execute(&self.pool)
                .await?;
            return Ok(());
        };
        crate::metrics::webhook_delivery("failed");
        tracing::warn!(delivery = %due.id, endpoint = %due.endpoint_id, %error, "a webhook delivery failed");
        let attempts = due.attempts + 1;
        let delay = self
            .settings
            .retry_base
            .saturating_mul(2u32.saturating_pow(u32::try_from(attempts - 1).unwrap_or(0).min(16)))
            .min(Duration::from_secs(3600));
        let give_up = Utc::now() - due.created_at
            >= chrono::Duration::from_std(self.settings.give_up_after)
                .unwrap_or(chrono::Duration::days(1));
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = $2, last_status = $3, last_error = $4,
                 status = CASE WHEN $5 THEN 'failed' ELSE 'pending' END,
                 next_attempt_at = now() + make_interval(secs => $6)
             WHERE id = $1",
        )
        .bind(due.id)
        .bind(attempts)
        .bind(status.map(i32::from))
        .bind(&error)
        .bind(give_up)
        .bind(delay.as_secs_f64())
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1,
                 enabled = CASE WHEN consecutive_failures + 1 >= $2 THEN false ELSE enabled END,
                 disabled_reason = CASE WHEN consecutive_failures + 1 >= $2
                     THEN format('disabled after %s failed deliveries in a row; the last: %s',
                                 consecutive_failures + 1, $3::text)
                     ELSE disabled_reason END
             WHERE id = $1",
        )
        .bind(due.endpoint_id)
        .bind(self.settings.disable_after)
        .bind(&error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_and_the_body() {
        // Python: hmac.new(b"whsec_test", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature("whsec_test", 1_700_000_000, "{\"a\":1}"),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }
}
