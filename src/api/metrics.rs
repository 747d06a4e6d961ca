//! `GET /metrics` (Prometheus text format; a plain route like `/openapi.json`, outside the
//! spec) and the middleware counting every request by its route template.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::http::StatusCode;
use poem::web::Data;
use poem::PathPattern;
use poem::{handler, Endpoint, IntoResponse, Request, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::problem::Problem;
use super::state::State;
use sqlx::PgPool;

use crate::db::PoolName;
use crate::metrics::{self, PoolGauge, ProjectionGauge, Snapshot, UNMATCHED_ROUTE};
use crate::runner;

/// How long a scrape waits for the gauges it reads from the database.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// The Prometheus text exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the metrics; with `METRICS_TOKEN` set, only to `Authorization: Bearer <token>`.
#[handler]
pub async fn scrape(req: &Request, state: Data<&State>) -> Response {
    if let Some(expected) = &state.metrics_token {
        if !bearer_matches(req, expected) {
            return Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "GET /metrics needs the METRICS_TOKEN as a bearer token",
            )
            .into_response();
        }
    }
    // The counters are still worth having without the database: its gauges keep their last
    // values then. Bounded, so an exhausted pool (when the waiters gauge matters most) does not
    // hang the scrape.
    let snapshot = match tokio::time::timeout(SNAPSHOT_WAIT, read_snapshot(&state)).await {
        Ok(Ok(snapshot)) => Some(snapshot),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "reading the metrics' gauges from the database");
            None
        }
        Err(_) => {
            tracing::warn!(
                wait_secs = SNAPSHOT_WAIT.as_secs(),
                "reading the metrics' gauges from the database took too long; skipped"
            );
            None
        }
    };
    // The pools' gauges come from the pools themselves: there even when the database is not.
    let pools = pool_gauges(&state);
    let body = metrics::render(|| {
        metrics::set_pool_gauges(&pools);
        if let Some(snapshot) = &snapshot {
            metrics::set_gauges(snapshot);
        }
    });
    Response::builder().content_type(CONTENT_TYPE).body(body)
}

/// The SHA-256 of the expected token, compared in constant time with the presented one's.
fn bearer_matches(req: &Request, expected: &[u8; 32]) -> bool {
    req.headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| bool::from(token_hash(token.trim()).ct_eq(expected)))
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The gauges read from the database: two statements and each projection's lag (as `/readyz`
/// reads it).
async fn read_snapshot(state: &State) -> Result<Snapshot, sqlx::Error> {
    let pool = &state.pool;
    // Only open events: the partial index on them answers, however many are processed.
    let (pending, processing, deferred, failed, oldest): (i64, i64, i64, i64, Option<f64>) =
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'pending'),
                    count(*) FILTER (WHERE status = 'processing'),
                    count(*) FILTER (WHERE status = 'deferred'),
                    count(*) FILTER (WHERE status = 'failed'),
                    extract(epoch FROM now() - min(received_at) FILTER (WHERE
                        (status IN ('pending', 'failed', 'deferred') AND next_attempt_at <= now())
                        OR (status = 'processing' AND lease_until < now())))::float8
             FROM stripe_events WHERE status IN ('pending', 'processing', 'deferred', 'failed')",
        )
        .fetch_one(pool)
        .await?;
    let outbox: (i64, i64) = sqlx::query_as(
        // Messages refused for good, or to a suppressed address, are the recipient's matter,
        // not the operator's: neither queued nor out of attempts.
        "SELECT count(*) FILTER (WHERE attempts < $1 AND given_up_at IS NULL),
                count(*) FILTER (WHERE attempts >= $1)
         FROM outbox_emails WHERE sent_at IS NULL",
    )
    .bind(crate::mail::MAX_ATTEMPTS)
    .fetch_one(pool)
    .await?;
    let projections = runner::status(pool, state.projections.list())
        .await?
        .into_iter()
        .map(|p| ProjectionGauge {
            #[expect(clippy::cast_precision_loss, reason = "milliseconds of lag")]
            lag_secs: p.lag_ms as f64 / 1000.0,
            lag_events: p.lag_events,
            stalled: p.last_error.is_some(),
            name: p.name,
        })
        .collect();
    Ok(Snapshot {
        inbox: vec![
            ("pending", pending),
            ("processing", processing),
            ("deferred", deferred),
            ("failed", failed),
        ],
        inbox_oldest_due_age_secs: oldest.unwrap_or(0.0).max(0.0),
        outbox,
        projections,
    })
}

fn pool_gauges(state: &State) -> Vec<PoolGauge> {
    let gauge = |name: PoolName, pool: &PgPool| PoolGauge {
        name: name.label(),
        size: pool.size(),
        idle: pool.num_idle(),
        max: pool.options().get_max_connections(),
    };
    let mut pools = vec![gauge(PoolName::Main, &state.pool)];
    if let Some(background) = state.background_pool.get() {
        pools.push(gauge(PoolName::Background, background));
    }
    pools
}

/// Counts every request by method, route template (poem's matched `PathPattern`: poem-openapi
/// names path parameters by position, `/v1/members/:param0`; `unmatched` when no route matched,
/// so unknown paths make no new series)
/// and status, with its latency. Inside the problem mapping, where the error still carries
/// the route it came from.
pub async fn track<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let started = Instant::now();
    let method = req.method().clone();
    let result = next.call(req).await.map(IntoResponse::into_response);
    let (status, route) = match &result {
        Ok(resp) => (
            resp.status(),
            resp.data::<PathPattern>().map(|p| p.0.clone()),
        ),
        Err(err) => (err.status(), err.data::<PathPattern>().map(|p| p.0.clone())),
    };
    // Under `nest("/", ...)` a path nothing inside matched carries the nest's empty pattern.
    let route = route
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or(UNMATCHED_ROUTE);
    metrics::http_request(&method, route, status.as_u16(), started.elapsed());
    result
}
