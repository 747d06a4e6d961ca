//! `loadgen lag`: projection lag at rest, the time from an append until an asynchronous read
//! model shows it.
//!
//! Members are created over HTTP at a low steady rate (open loop: one request every
//! `1/rate` s whatever the answers), with nothing else running. `member_timeline` is
//! asynchronous; its row of a `MemberCreated` carries the event's `recorded_at`. One poller
//! queries the timeline's new rows every millisecond, but only while a creation is outstanding,
//! and the lag of a row is `clock_timestamp() - recorded_at` at the first poll that saw it:
//! both times from PostgreSQL's clock, from the start of the appending transaction to the
//! moment the row was readable, within a poll interval and a query's time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::cli::LagArgs;
use crate::database::{connect, wait_caught_up};
use crate::http::{check_loopback, http_client, timed};
use crate::measure::{histogram, loadavg, record, truncate, Latency};
use crate::results::write_result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LagResult {
    /// The read model watched.
    pub read_model: String,
    /// Member creations per second, and for how long.
    pub rate_per_s: f64,
    pub seconds: u64,
    /// Creations answered 201.
    pub created: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Created members whose row was seen, and those never seen before the timeout.
    pub seen: u64,
    pub missing: u64,
    /// Append (the event's `recorded_at`) until the row was first seen.
    pub lag: Latency,
    /// The creation requests themselves.
    pub http: Latency,
    /// Queries the poller made.
    pub polls: u64,
    pub poll_interval_ms: u64,
    pub loadavg: String,
}

pub async fn lag(args: LagArgs) -> Result<()> {
    check_loopback(&args.server.url)?;
    if !(args.rate > 0.0 && args.rate <= 1000.0) {
        bail!("--rate must be between 0 and 1000 creations per second");
    }
    let client = http_client(4)?;
    let pool = connect(&args.db, 2).await?;
    // At rest: whatever earlier scenarios left must be applied first.
    wait_caught_up(&pool, Duration::from_secs(args.timeout)).await?;
    let floor: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM member_timeline")
        .fetch_one(&pool)
        .await?;
    let run_id = Uuid::now_v7().simple().to_string();
    let pattern = format!("lag-{}-%@bench.example.com", &run_id[20..]);

    // Creations sent whose row has not been seen yet (a failed creation is taken back).
    let pending = Arc::new(AtomicI64::new(0));
    let wake = Arc::new(Notify::new());
    let sending_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let interval = Duration::from_millis(args.poll_interval_ms.max(1));
    let poller = {
        let pool = pool.clone();
        let pending = pending.clone();
        let wake = wake.clone();
        let sending_done = sending_done.clone();
        let pattern = pattern.clone();
        let timeout = Duration::from_secs(args.timeout);
        tokio::spawn(async move {
            let mut hist = histogram();
            let mut seen: Vec<i64> = Vec::new();
            let mut polls = 0u64;
            let mut drained_since: Option<Instant> = None;
            loop {
                if pending.load(Ordering::Acquire) <= 0 {
                    if sending_done.load(Ordering::Acquire) {
                        break;
                    }
                    // Idle until the next creation is sent.
                    let _ = tokio::time::timeout(Duration::from_millis(100), wake.notified()).await;
                    continue;
                }
                if sending_done.load(Ordering::Acquire) {
                    let since = *drained_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > timeout {
                        break;
                    }
                }
                // Rows can become visible out of position order (commits interleave), so the
                // rows already seen are excluded by id rather than by a moving lower bound.
                let rows: Vec<(i64, f64)> = sqlx::query_as(
                    "SELECT id, extract(epoch FROM clock_timestamp() - created_at)::float8 * 1000
                     FROM member_timeline
                     WHERE id > $1 AND id <> ALL($2) AND event_type = 'MemberCreated'
                       AND data->>'email' LIKE $3",
                )
                .bind(floor)
                .bind(&seen)
                .bind(&pattern)
                .fetch_all(&pool)
                .await?;
                polls += 1;
                for (id, lag_ms) in rows {
                    seen.push(id);
                    record(&mut hist, Duration::from_secs_f64(lag_ms.max(0.0) / 1000.0));
                    pending.fetch_sub(1, Ordering::AcqRel);
                }
                tokio::time::sleep(interval).await;
            }
            anyhow::Ok((hist, seen.len() as u64, polls))
        })
    };

    let started_loadavg = loadavg();
    let total = (args.rate * args.seconds as f64).round() as u64;
    let url = format!("{}/v1/members", args.server.url);
    let created = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let http_hist = Arc::new(Mutex::new(histogram()));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::new();
    for i in 0..total {
        ticker.tick().await;
        pending.fetch_add(1, Ordering::AcqRel);
        wake.notify_one();
        let req = client
            .post(&url)
            .bearer_auth(&args.server.admin_token)
            .json(&json!({
                "email": pattern.replace('%', &i.to_string()),
                "name": format!("Lag Member {i}"),
                "labels": ["bench"],
            }));
        let (pending, created, errors, first_error, http_hist) = (
            pending.clone(),
            created.clone(),
            errors.clone(),
            first_error.clone(),
            http_hist.clone(),
        );
        requests.push(tokio::spawn(async move {
            match timed(req, &[201]).await {
                Ok(d) => {
                    created.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut h) = http_hist.lock() {
                        record(&mut h, d);
                    }
                }
                Err(e) => {
                    pending.fetch_sub(1, Ordering::AcqRel);
                    errors.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = first_error.lock() {
                        first.get_or_insert(e);
                    }
                }
            }
        }));
    }
    for request in requests {
        let _ = request.await;
    }
    sending_done.store(true, Ordering::Release);
    wake.notify_one();
    let (hist, seen, polls) = poller.await??;

    let created = created.load(Ordering::Relaxed);
    let http = http_hist
        .lock()
        .map(|h| Latency::of(&h))
        .unwrap_or_default();
    let result = LagResult {
        read_model: "member_timeline".to_owned(),
        rate_per_s: args.rate,
        seconds: args.seconds,
        created,
        errors: errors.load(Ordering::Relaxed),
        first_error: first_error.lock().ok().and_then(|f| f.clone()),
        seen,
        missing: created.saturating_sub(seen),
        lag: Latency::of(&hist),
        http,
        polls,
        poll_interval_ms: interval.as_millis() as u64,
        loadavg: started_loadavg,
    };
    println!(
        "projection lag (member_timeline) at {:.0} creations/s: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms; {} seen of {} created, {} errors{}; {} polls",
        args.rate,
        result.lag.p50_ms,
        result.lag.p99_ms,
        result.lag.max_ms,
        seen,
        created,
        result.errors,
        result
            .first_error
            .as_deref()
            .map(|e| format!(" (first: {})", truncate(e, 200)))
            .unwrap_or_default(),
        polls
    );
    write_result(&args.common, "lag", &result)?;
    if result.missing > 0 {
        bail!(
            "{} created member(s) never showed in member_timeline within {} s",
            result.missing,
            args.timeout
        );
    }
    Ok(())
}
