//! Activations (machines) and their heartbeats. The licensed software on a domain may say it is
//! alive (`POST /v1/licenses/heartbeat`); under a policy with `heartbeat_minutes`, an activation
//! not seen for longer frees itself: the sweeper expires it (`LicenseMachineExpired`), and an
//! activation that needs its slot expires it first. Heartbeats are rows in
//! `license_heartbeats`, not events: only an activation's end is.

use std::sync::Arc;
use std::time::Duration;

use aggregates::{License, LicenseCommand};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{Actor, CommandBus, EventMetadata};

/// When each activation was last seen: its heartbeat, or its activation if later or alone.
const LAST_SEEN: &str = "greatest((m->>'activated_at')::timestamptz, h.seen_at)";

/// The activations of `license_id` not seen for longer than `heartbeat_minutes`, with when each
/// was last seen.
pub async fn stale(
    pool: &PgPool,
    license_id: Uuid,
    heartbeat_minutes: i32,
) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT m->>'domain', {LAST_SEEN}
         FROM licenses l CROSS JOIN LATERAL jsonb_array_elements(l.machines) m
         LEFT JOIN license_heartbeats h ON h.license_id = l.id AND h.domain = m->>'domain'
         WHERE l.id = $1 AND {LAST_SEEN} < now() - make_interval(mins => $2)"
    ))
    .bind(license_id)
    .bind(heartbeat_minutes)
    .fetch_all(pool)
    .await
}

/// Records a heartbeat of the activation on `domain` (as stored: a pattern for a pattern).
pub async fn beat(pool: &PgPool, license_id: Uuid, domain: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO license_heartbeats (license_id, domain, seen_at) VALUES ($1, $2, now())
         ON CONFLICT (license_id, domain) DO UPDATE SET seen_at = EXCLUDED.seen_at",
    )
    .bind(license_id)
    .bind(domain)
    .execute(pool)
    .await?;
    Ok(())
}

/// Expires every activation, of every license, not seen for longer than its policy allows (up
/// to 500 a round); returns how many. Each is an idempotent command, so instances sweeping at
/// once expire each activation once.
pub async fn sweep(pool: &PgPool, licenses: &CommandBus<License>) -> anyhow::Result<usize> {
    let stale: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(&format!(
        "SELECT l.id, m->>'domain', {LAST_SEEN}
         FROM licenses l JOIN license_policies p ON p.id = l.policy_id
         CROSS JOIN LATERAL jsonb_array_elements(l.machines) m
         LEFT JOIN license_heartbeats h ON h.license_id = l.id AND h.domain = m->>'domain'
         WHERE p.heartbeat_minutes IS NOT NULL AND l.machines <> '[]'
           AND {LAST_SEEN} < now() - make_interval(mins => p.heartbeat_minutes)
         LIMIT 500"
    ))
    .fetch_all(pool)
    .await?;
    let count = stale.len();
    for (license_id, domain, last_seen_at) in stale {
        let command = LicenseCommand::ExpireMachine {
            domain,
            last_seen_at,
            at: Utc::now(),
        };
        let metadata = EventMetadata {
            correlation_id: format!("heartbeat-sweep:{license_id}"),
            causation_id: "heartbeat-sweep".into(),
            actor: Actor::System,
        };
        licenses
            .execute(&license_id.to_string(), command, metadata)
            .await?;
    }
    Ok(count)
}

/// Sweeps every `every` until `shutdown`.
pub async fn sweeper(
    pool: PgPool,
    licenses: Arc<CommandBus<License>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match sweep(&pool, &licenses).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "freed activations whose heartbeat stopped"),
            Err(err) => tracing::warn!(error = format!("{err:#}"), "heartbeat sweep failed"),
        }
    }
}
