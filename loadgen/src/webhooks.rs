//! `loadgen webhooks` (scenario a): signed Stripe lifecycles, then the time until the inbox
//! and every projection are done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stripe_fixtures::{Fixtures, Lifecycle};
use uuid::Uuid;

use crate::cli::{Server, WebhooksArgs};
use crate::database::{connect, db_cost, db_mark, DbCost};
use crate::http::{check_loopback, http_client, timed};
use crate::infra::load_fixtures;
use crate::measure::{drive, print_run, truncate, Limit, Run};
use crate::results::write_result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhooksResult {
    pub lifecycles: usize,
    pub events: usize,
    pub payload_bytes_mean: usize,
    pub accept: Run,
    /// From the first POST until the inbox was empty and every projection had caught up.
    pub end_to_end_s: Option<f64>,
    /// Webhook events per second over `end_to_end_s`.
    pub processed_per_s: Option<f64>,
    /// Log events appended by processing them (commands and policies).
    pub log_events: i64,
    /// The database cost of the whole scenario (accepting and processing), per webhook event.
    #[serde(default)]
    pub processing_db: Option<DbCost>,
    pub drain_note: Option<String>,
    /// Acceptance alone: the server's inbox was paused, nothing was processed.
    #[serde(default)]
    pub accept_only: bool,
}

/// One customer's lifecycle as the bodies to POST, in Stripe's order (the integration tests'
/// shapes); `ends` adds the subscription's deletion.
fn lifecycle_payloads(fixtures: &Fixtures, tag: &str, ends: bool) -> Vec<String> {
    let mut lifecycle = Lifecycle::with_fixtures(fixtures, tag);
    lifecycle.customer_name = "Bench Customer".to_owned();
    let events = if ends {
        lifecycle.events()
    } else {
        lifecycle.subscribed_events()
    };
    events.iter().map(Value::to_string).collect()
}

pub async fn webhooks(args: WebhooksArgs) -> Result<()> {
    check_loopback(&args.server.url)?;
    let fixtures = load_fixtures(&args.fixtures)?;
    let run_id = Uuid::now_v7().simple().to_string();
    let run_tag = &run_id[20..];
    // Odd lifecycles stay subscribed (an active license to validate later), even ones end.
    let lifecycles: Vec<Vec<String>> = (0..args.lifecycles)
        .map(|i| lifecycle_payloads(&fixtures, &format!("bench{run_tag}x{i}"), i % 2 == 0))
        .collect();
    let events: usize = lifecycles.iter().map(Vec::len).sum();
    let bytes: usize = lifecycles.iter().flatten().map(String::len).sum();
    let lifecycles = Arc::new(lifecycles);
    let client = http_client(args.concurrency)?;
    let pool = connect(&args.db, 1).await?;
    let count_events = "SELECT count(*) FROM events";
    let before: i64 = sqlx::query_scalar(count_events).fetch_one(&pool).await?;

    let url = format!("{}/webhooks/stripe", args.server.url);
    let secret = args.secret.clone();
    let mark = db_mark(&pool).await?;
    let started = Instant::now();
    let mut accept = {
        let client = client.clone();
        let lifecycles = lifecycles.clone();
        drive(
            args.concurrency,
            Limit {
                duration: None,
                units: Some(args.lifecycles),
            },
            move |i| {
                let client = client.clone();
                let lifecycles = lifecycles.clone();
                let url = url.clone();
                let secret = secret.clone();
                async move {
                    let mut samples = Vec::new();
                    for payload in lifecycles.get(i).into_iter().flatten() {
                        let signature =
                            stripe_fixtures::signature(payload, &secret, Utc::now().timestamp());
                        let req = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("stripe-signature", signature)
                            .body(payload.clone());
                        samples.push(timed(req, &[200]).await);
                    }
                    samples
                }
            },
        )
        .await
    };
    accept.db = Some(db_cost(&pool, &mark, accept.ok).await?);
    print_run("POST /webhooks/stripe", &accept);
    if args.accept_only {
        return accepted_only(&args, &pool, &lifecycles, events, bytes, accept).await;
    }

    let deadline = started + Duration::from_secs(args.drain_timeout);
    let (end_to_end_s, drain_note) = match drain(&client, &args.server, deadline).await {
        Ok(()) => (Some(started.elapsed().as_secs_f64()), None),
        Err(err) => (None, Some(format!("{err:#}"))),
    };
    let after: i64 = sqlx::query_scalar(count_events).fetch_one(&pool).await?;
    let processing_db = db_cost(&pool, &mark, events as u64).await?;
    let result = WebhooksResult {
        lifecycles: args.lifecycles,
        events,
        payload_bytes_mean: bytes / events.max(1),
        processed_per_s: end_to_end_s.map(|s| events as f64 / s),
        end_to_end_s,
        log_events: after - before,
        processing_db: Some(processing_db),
        drain_note,
        accept_only: false,
        accept,
    };
    match (result.end_to_end_s, &result.drain_note) {
        (Some(s), _) => println!(
            "webhooks end to end: {} events of {} lifecycles processed and projected in {s:.1} s ({:.1} events/s; {} log events appended)",
            events,
            args.lifecycles,
            result.processed_per_s.unwrap_or_default(),
            result.log_events
        ),
        (None, note) => println!(
            "webhooks end to end: NOT drained: {}",
            note.as_deref().unwrap_or("?")
        ),
    }
    write_result(&args.common, &args.name, &result)?;
    if result.accept.errors > 0 || result.end_to_end_s.is_none() {
        bail!("the webhook scenario had errors (see above)");
    }
    Ok(())
}

/// The end of an acceptance-only run: the stored events are deleted, so that no later server
/// of the run processes them, and the figures written.
async fn accepted_only(
    args: &WebhooksArgs,
    pool: &sqlx::PgPool,
    lifecycles: &[Vec<String>],
    events: usize,
    bytes: usize,
    accept: Run,
) -> Result<()> {
    let ids: Vec<String> = lifecycles
        .iter()
        .flatten()
        .filter_map(|payload| serde_json::from_str::<Value>(payload).ok())
        .filter_map(|event| event["id"].as_str().map(str::to_owned))
        .collect();
    let processed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stripe_events WHERE id = ANY($1) AND status <> 'pending'",
    )
    .bind(&ids)
    .fetch_one(pool)
    .await?;
    if processed > 0 {
        bail!(
            "{processed} events were processed: is the server's inbox paused (STRIPE_WORKERS=0)?"
        );
    }
    let deleted = sqlx::query("DELETE FROM stripe_events WHERE id = ANY($1)")
        .bind(&ids)
        .execute(pool)
        .await?
        .rows_affected();
    println!("webhooks accepted with the inbox paused: {deleted} stored events deleted again");
    let result = WebhooksResult {
        lifecycles: args.lifecycles,
        events,
        payload_bytes_mean: bytes / events.max(1),
        accept,
        end_to_end_s: None,
        processed_per_s: None,
        log_events: 0,
        processing_db: None,
        drain_note: None,
        accept_only: true,
    };
    write_result(&args.common, &args.name, &result)?;
    if result.accept.errors > 0 || deleted != events as u64 {
        bail!("the acceptance run had errors, or did not store every event (see above)");
    }
    Ok(())
}

/// Polls until no Stripe event is pending, processing, deferred or failed and `/readyz` shows every
/// projection at lag 0, twice in a row (a policy's commands append events after its batch).
pub async fn drain(client: &reqwest::Client, server: &Server, deadline: Instant) -> Result<()> {
    let mut clean = 0;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut open = 0usize;
        for status in ["pending", "processing", "deferred", "failed"] {
            let page: Value = client
                .get(format!(
                    "{}/v1/stripe-events?status={status}&limit=1",
                    server.url
                ))
                .bearer_auth(&server.admin_token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let items = page["items"].as_array().map_or(0, Vec::len);
            if items > 0 {
                last = format!("a {status} Stripe event: {}", page["items"][0]);
            }
            open += items;
        }
        let ready: Value = client
            .get(format!("{}/readyz", server.url))
            .send()
            .await?
            .json()
            .await?;
        let lag: i64 = ready["projections"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["lag_events"].as_i64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        if open == 0 && lag == 0 {
            clean += 1;
            if clean >= 2 {
                return Ok(());
            }
        } else {
            clean = 0;
            if lag > 0 {
                last = format!("projection lag {lag} events: {}", ready["projections"]);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "not drained before the timeout; last seen: {}",
        truncate(&last, 600)
    )
}
