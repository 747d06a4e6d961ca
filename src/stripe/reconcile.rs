//! Events Stripe failed to deliver: `memberledger stripe reconcile [--since TIME]` (and, with
//! `STRIPE_RECONCILE_EVERY_SECS`, the server on its own) lists Stripe's events through the API
//! (`GET /v1/events`; Stripe keeps them 30 days) and stores those of a handled type that the
//! inbox does not have, through the same `inbox::store` as the webhook endpoint: same row, same
//! dedupe by event id, same wake-up. The inbox then processes them once, in their customer's
//! `created` order, as if they had arrived late.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::client::StripeApi;
use super::translate::Translator;
use super::{inbox, webhook};
use crate::eventlog::Wakeups;

/// What a reconciliation found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events Stripe listed since the start.
    pub listed: usize,
    /// Of a handled type, and in the inbox already.
    pub already: usize,
    /// Of a handled type, missing, and stored now: their ids, oldest first.
    pub stored: Vec<String>,
    /// Of a type we do not handle (left alone).
    pub not_handled: usize,
    /// Without an id, a type or a created time (left alone, and logged).
    pub unreadable: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} event(s) listed by Stripe: {} stored now, {} in the inbox already, {} of types not handled, {} unreadable",
            self.listed,
            self.stored.len(),
            self.already,
            self.not_handled,
            self.unreadable
        )
    }
}

/// Stores the handled events created since `since` that the inbox lacks.
pub async fn reconcile(
    pool: &PgPool,
    received: &Arc<Wakeups>,
    api: &StripeApi,
    since: DateTime<Utc>,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut missing = Vec::new();
    let mut starting_after: Option<String> = None;
    loop {
        let page = api
            .list_events(since.timestamp(), starting_after.as_deref())
            .await?;
        for event in &page.events {
            report.listed += 1;
            let Some(head) = webhook::event_head(event) else {
                report.unreadable += 1;
                tracing::warn!(event = %event["id"], "Stripe listed an event without an id, type or created time");
                continue;
            };
            if !Translator::HANDLED.contains(&head.event_type.as_str()) {
                report.not_handled += 1;
                continue;
            }
            missing.push((head, event.to_string()));
        }
        starting_after = page
            .events
            .last()
            .and_then(|e| e["id"].as_str())
            .map(str::to_owned);
        if !page.has_more || starting_after.is_none() {
            break;
        }
    }
    // Stripe lists newest first; stored oldest first, so the log of what arrived reads in order
    // (the inbox orders by `created` whatever the order of arrival).
    missing.sort_by_key(|(head, _)| head.created);
    for (head, event) in missing {
        if inbox::store(pool, received, &head, &event).await? {
            tracing::info!(event_id = %head.id, event_type = %head.event_type, "stored a Stripe event that was never delivered");
            report.stored.push(head.id);
        } else {
            report.already += 1;
        }
    }
    Ok(report)
}

/// Reconciles the last `window` every `every` until `shutdown` (the server's
/// `STRIPE_RECONCILE_EVERY_SECS`); instances doing it at once store each event once.
pub async fn periodically(
    pool: PgPool,
    received: Arc<Wakeups>,
    api: StripeApi,
    every: Duration,
    window: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let since = Utc::now()
            - chrono::Duration::from_std(window).unwrap_or_else(|_| chrono::Duration::days(3));
        match reconcile(&pool, &received, &api, since).await {
            Ok(report) if report.stored.is_empty() => {
                tracing::debug!(%report, "Stripe reconciliation: nothing missing");
            }
            Ok(report) => {
                tracing::warn!(%report, "Stripe reconciliation stored events that were never delivered")
            }
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "Stripe reconciliation failed; trying again later"
            ),
        }
    }
}
