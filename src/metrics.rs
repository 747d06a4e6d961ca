//! Prometheus metrics: the names, the recorder (`metrics-exporter-prometheus` behind the
//! `metrics` facade) and one small function per thing counted, so that instrumenting a module is
//! one line. Counters and histograms are recorded where things happen; gauges that describe the
//! database (inbox and outbox depth, projection lag, the pool) are set from it at each scrape
//! (`api::metrics`), so every instance reports the same truth.
//!
//! The recorder is global to the process and installed once ([`install`]); several servers in
//! one process (the tests) share it.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Args;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::config::Secret;

pub const HTTP_REQUESTS: &str = "memberledger_http_requests_total";
pub const HTTP_DURATION: &str = "memberledger_http_request_duration_seconds";
pub const COMMANDS: &str = "memberledger_commands_total";
pub const COMMAND_RETRIES: &str = "memberledger_command_retries_total";
pub const COMMAND_DURATION: &str = "memberledger_command_duration_seconds";
pub const AGGREGATE_CACHE: &str = "memberledger_aggregate_cache_total";
pub const STRIPE_INBOX_EVENTS: &str = "memberledger_stripe_inbox_events";
pub const STRIPE_INBOX_OLDEST_DUE_AGE: &str = "memberledger_stripe_inbox_oldest_due_age_seconds";
pub const STRIPE_EVENTS_HANDLED: &str = "memberledger_stripe_events_handled_total";
pub const STRIPE_EVENT_DURATION: &str = "memberledger_stripe_event_processing_seconds";
pub const STRIPE_API_CALLS: &str = "memberledger_stripe_api_calls_total";
pub const STRIPE_API_DURATION: &str = "memberledger_stripe_api_call_duration_seconds";
pub const PROJECTION_LAG_EVENTS: &str = "memberledger_projection_lag_events";
pub const PROJECTION_LAG_SECONDS: &str = "memberledger_projection_lag_seconds";
pub const PROJECTION_STALLED: &str = "memberledger_projection_stalled";
pub const PROJECTION_BATCHES: &str = "memberledger_projection_batches_total";
pub const PROJECTION_EVENTS_APPLIED: &str = "memberledger_projection_events_applied_total";
pub const EMAIL_OUTBOX: &str = "memberledger_email_outbox_messages";
pub const EMAIL_DELIVERIES: &str = "memberledger_email_deliveries_total";
pub const WEBHOOK_DELIVERIES: &str = "memberledger_webhook_deliveries_total";
pub const RATE_LIMIT_REJECTIONS: &str = "memberledger_rate_limit_rejections_total";
pub const DB_POOL_CONNECTIONS: &str = "memberledger_db_pool_connections";
pub const DB_POOL_MAX: &str = "memberledger_db_pool_max_connections";
pub const DB_POOL_TIMEOUTS: &str = "memberledger_db_pool_timeouts_total";
pub const DB_POOL_WAITERS: &str = "memberledger_db_pool_waiters";
pub const DB_POOL_ACQUIRE: &str = "memberledger_db_pool_acquire_seconds";

/// Histogram buckets, in seconds: from a fast request (1 ms) to a Stripe call that timed out.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histograms are drained when nobody scrapes (so their samples do not pile up).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Who may read `/metrics`.
#[derive(Debug, Clone, Args)]
pub struct MetricsConfig {
    /// Bearer token `GET /metrics` requires. Unset: the endpoint is open (keep it off the
    /// public network).
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Secret>,
}

impl MetricsConfig {
    pub fn settings(&self) -> MetricsSettings {
        MetricsSettings {
            token: self.metrics_token.as_ref().map(|t| t.expose().to_owned()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct MetricsSettings {
    /// The bearer token `/metrics` requires, if any.
    pub token: Option<String>,
}

/// Installs the Prometheus recorder as the process's recorder (once; later calls return the
/// same handle). Before it, metrics go nowhere.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

/// Drains histograms now and then until `shutdown` (the recorder leaves it to its owner).
pub async fn upkeep(shutdown: CancellationToken) {
    let handle = install();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(UPKEEP_EVERY) => handle.run_upkeep(),
        }
    }
}

/// The metrics in Prometheus's text format, after `set_gauges` has set the gauges read at
/// scrape time. Scrapes are serialised, so that two servers in one process (tests) each render
/// the gauges they set.
pub fn render(set_gauges: impl FnOnce()) -> String {
    static SCRAPE: Mutex<()> = Mutex::new(());
    let handle = install();
    let _one_at_a_time = SCRAPE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    set_gauges();
    handle.render()
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by method, route template and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        "HTTP request latency by method and route template."
    );
    describe_counter!(
        COMMANDS,
        "Commands by aggregate and outcome (ok, rejected, conflict, error)."
    );
    describe_counter!(
        COMMAND_RETRIES,
        "Commands re-run after an optimistic-lock conflict, by aggregate."
    );
    describe_counter!(
        AGGREGATE_CACHE,
        "Aggregate loads of cached buses by outcome (hit, miss; rerun: a cached state no append verified, run again from the log)."
    );
    describe_histogram!(
        COMMAND_DURATION,
        "Command latency (with retries) by aggregate."
    );
    describe_gauge!(
        STRIPE_INBOX_EVENTS,
        "Stripe events not done yet, by status (pending, processing, deferred, failed)."
    );
    describe_gauge!(
        STRIPE_INBOX_OLDEST_DUE_AGE,
        "Seconds since the oldest Stripe event that is due now was received (0: none due)."
    );
    describe_counter!(
        STRIPE_EVENTS_HANDLED,
        "Stripe events run by this instance, by outcome (processed, ignored, deferred, failed)."
    );
    describe_histogram!(
        STRIPE_EVENT_DURATION,
        "Time to handle one Stripe event, by outcome."
    );
    describe_counter!(
        STRIPE_API_CALLS,
        "Calls to Stripe's API by operation and outcome (ok, refused, unavailable)."
    );
    describe_histogram!(
        STRIPE_API_DURATION,
        "Stripe API call latency (with retries) by operation."
    );
    describe_gauge!(
        PROJECTION_LAG_EVENTS,
        "Events an asynchronous projection handles and has not applied yet."
    );
    describe_gauge!(
        PROJECTION_LAG_SECONDS,
        "Age of the oldest event a projection has not applied yet (0: caught up)."
    );
    describe_gauge!(
        PROJECTION_STALLED,
        "1 when a projection's last batch failed (it retries; see projections status)."
    );
    describe_counter!(
        PROJECTION_BATCHES,
        "Batches applied by this instance's projection runners."
    );
    describe_counter!(
        PROJECTION_EVENTS_APPLIED,
        "Events applied by this instance's projection runners."
    );
    describe_gauge!(
        EMAIL_OUTBOX,
        "Unsent emails by status (queued: still tried; given_up: out of attempts)."
    );
    describe_counter!(
        EMAIL_DELIVERIES,
        "Email delivery attempts by outcome (sent, failed)."
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Outbound webhook delivery attempts by outcome (delivered, failed)."
    );
    describe_counter!(
        RATE_LIMIT_REJECTIONS,
        "Requests refused by a rate limit, by limit."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database pool connections by pool (main, background) and state (idle, in_use)."
    );
    describe_gauge!(DB_POOL_MAX, "Database pool size limit by pool.");
    describe_gauge!(
        DB_POOL_WAITERS,
        "Tasks waiting now for a connection of the pool (explicit acquisitions only)."
    );
    describe_histogram!(
        DB_POOL_ACQUIRE,
        "Time explicit acquisitions waited for a connection of the pool (timeouts included)."
    );
    describe_counter!(
        DB_POOL_TIMEOUTS,
        "Requests that waited for a pooled connection until the acquire timeout."
    );
}

/// Labels an HTTP method; other than the standard ones are one label, so a client cannot
/// make up series.
fn method_label(method: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// An HTTP request served: `route` is the matched route template (`/v1/members/:param0`), never
/// the raw path.
pub fn http_request(method: &poem::http::Method, route: &str, status: u16, elapsed: Duration) {
    let method = method_label(method);
    counter!(HTTP_REQUESTS, "method" => method, "route" => route.to_owned(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_DURATION, "method" => method, "route" => route.to_owned())
        .record(elapsed.as_secs_f64());
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOutcome {
    Ok,
    /// The aggregate (or an inline read model, such as a taken email) refused it.
    Rejected,
    /// Another writer kept winning the optimistic lock after every retry.
    Conflict,
    Error,
}

impl CommandOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Conflict => "conflict",
            Self::Error => "error",
        }
    }
}

pub fn command(aggregate: &'static str, outcome: CommandOutcome, elapsed: Duration) {
    counter!(COMMANDS, "aggregate" => aggregate, "outcome" => outcome.label()).increment(1);
    histogram!(COMMAND_DURATION, "aggregate" => aggregate).record(elapsed.as_secs_f64());
}

/// A command re-run because another writer appended to its aggregate first.
pub fn command_retry(aggregate: &'static str) {
    counter!(COMMAND_RETRIES, "aggregate" => aggregate).increment(1);
}

/// A cached bus's load (`hit` or `miss`), or a command run again from the log because its
/// cached state was not verified by an append (`rerun`).
pub fn aggregate_cache(aggregate: &'static str, outcome: &'static str) {
    counter!(AGGREGATE_CACHE, "aggregate" => aggregate, "outcome" => outcome).increment(1);
}

/// A Stripe event handled by this instance; `outcome` is `processed`, `ignored`, `deferred` or
/// `failed`.
pub fn stripe_event(outcome: &'static str, elapsed: Duration) {
    counter!(STRIPE_EVENTS_HANDLED, "outcome" => outcome).increment(1);
    histogram!(STRIPE_EVENT_DURATION, "outcome" => outcome).record(elapsed.as_secs_f64());
}

/// A call to Stripe's API (all its attempts); `outcome` is `ok`, `refused` or `unavailable`.
pub fn stripe_call(operation: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(STRIPE_API_CALLS, "operation" => operation, "outcome" => outcome).increment(1);
    histogram!(STRIPE_API_DURATION, "operation" => operation).record(elapsed.as_secs_f64());
}

/// A batch a projection runner applied.
pub fn projection_batch(projection: &'static str, events: usize) {
    counter!(PROJECTION_BATCHES, "projection" => projection).increment(1);
    counter!(PROJECTION_EVENTS_APPLIED, "projection" => projection)
        .increment(u64::try_from(events).unwrap_or(u64::MAX));
}

/// An outbound webhook delivery attempt: `delivered` or `failed`.
pub fn webhook_delivery(outcome: &'static str) {
    counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
}

/// An email delivery attempt: `sent`, `failed` (retried), `refused` (a 5xx: given up) or
/// `suppressed` (to a disabled member email: not tried).
pub fn email_delivery(outcome: &'static str) {
    counter!(EMAIL_DELIVERIES, "outcome" => outcome).increment(1);
}

/// A request refused by the rate limit named `limit` (`sign_in_code_per_ip`, ...).
pub fn rate_limited(limit: &'static str) {
    counter!(RATE_LIMIT_REJECTIONS, "limit" => limit).increment(1);
}

/// A request that waited for a pooled database connection until it gave up.
pub fn pool_timed_out() {
    counter!(DB_POOL_TIMEOUTS).increment(1);
}

/// A task waiting for a connection of `pool`: counted in the waiters gauge while it lives, and
/// its wait recorded when it ends (given a connection, timed out or cancelled alike).
#[must_use = "the wait is counted while the guard lives"]
pub struct PoolWait {
    pool: &'static str,
    started: Instant,
}

pub fn pool_wait(pool: &'static str) -> PoolWait {
    gauge!(DB_POOL_WAITERS, "pool" => pool).increment(1.0);
    PoolWait {
        pool,
        started: Instant::now(),
    }
}

impl Drop for PoolWait {
    fn drop(&mut self) {
        gauge!(DB_POOL_WAITERS, "pool" => self.pool).decrement(1.0);
        histogram!(DB_POOL_ACQUIRE, "pool" => self.pool)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// What the database says at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Open Stripe events by status.
    pub inbox: Vec<(&'static str, i64)>,
    pub inbox_oldest_due_age_secs: f64,
    /// Unsent emails: (still tried, out of attempts).
    pub outbox: (i64, i64),
    pub projections: Vec<ProjectionGauge>,
}

/// A pool's connections at scrape time (read from the pool, not the database).
#[derive(Debug, Clone)]
pub struct PoolGauge {
    /// `main` or `background` (`db::PoolName`).
    pub name: &'static str,
    pub size: u32,
    pub idle: usize,
    pub max: u32,
}

#[derive(Debug, Clone)]
pub struct ProjectionGauge {
    pub name: String,
    pub lag_events: i64,
    pub lag_secs: f64,
    pub stalled: bool,
}

#[expect(
    clippy::cast_precision_loss,
    reason = "gauges are f64; counts this large are not exact anyway"
)]
pub fn set_gauges(snapshot: &Snapshot) {
    for (status, count) in &snapshot.inbox {
        gauge!(STRIPE_INBOX_EVENTS, "status" => *status).set(*count as f64);
    }
    gauge!(STRIPE_INBOX_OLDEST_DUE_AGE).set(snapshot.inbox_oldest_due_age_secs);
    gauge!(EMAIL_OUTBOX, "status" => "queued").set(snapshot.outbox.0 as f64);
    gauge!(EMAIL_OUTBOX, "status" => "given_up").set(snapshot.outbox.1 as f64);
    for p in &snapshot.projections {
        gauge!(PROJECTION_LAG_EVENTS, "projection" => p.name.clone()).set(p.lag_events as f64);
        gauge!(PROJECTION_LAG_SECONDS, "projection" => p.name.clone()).set(p.lag_secs);
        gauge!(PROJECTION_STALLED, "projection" => p.name.clone()).set(u8::from(p.stalled));
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "gauges are f64; pool sizes are small"
)]
pub fn set_pool_gauges(pools: &[PoolGauge]) {
    for p in pools {
        let in_use = f64::from(p.size) - p.idle as f64;
        gauge!(DB_POOL_CONNECTIONS, "pool" => p.name, "state" => "idle").set(p.idle as f64);
        gauge!(DB_POOL_CONNECTIONS, "pool" => p.name, "state" => "in_use").set(in_use.max(0.0));
        gauge!(DB_POOL_MAX, "pool" => p.name).set(p.max);
        // Present (at 0) before the first wait, so an alert on it has a series.
        gauge!(DB_POOL_WAITERS, "pool" => p.name).increment(0.0);
    }
}
