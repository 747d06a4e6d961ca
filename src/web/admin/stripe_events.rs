//! Stripe events that need an operator: failed and deferred ones with their error, and a
//! Retry button doing what `POST /v1/stripe-events/{id}/retry` does (`inbox::retry`). Other
//! statuses can be listed too, to see a retried event processed.

use askama::Template;
use chrono::{DateTime, Utc};
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::{admin_form, admin_layout, signed_in, unavailable};
use crate::api::state::State;
use crate::stripe::inbox::{self, StoredStripeEvent};
use crate::web::page::{self, Layout, Notice};

const LIMIT: i64 = 100;

/// The statuses the page can show: `attention` (failed and deferred, the default) or one.
const SHOWS: [(&str, &str); 7] = [
    ("attention", "Failed or waiting"),
    ("failed", "Failed"),
    ("deferred", "Waiting for another event"),
    ("pending", "Pending"),
    ("processing", "Processing"),
    ("processed", "Processed"),
    ("ignored", "Ignored"),
];

#[derive(Template)]
#[template(path = "admin/stripe_events.html")]
struct EventsPage {
    layout: Layout,
    show: String,
    shows: Vec<(&'static str, &'static str)>,
    events: Vec<EventRow>,
    /// More than the page shows.
    more: bool,
}

struct EventRow {
    id: String,
    event_type: String,
    customer: String,
    status: String,
    received: String,
    attempts: i32,
    next_attempt: String,
    error: String,
    retryable: bool,
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%-d %b %Y %H:%M:%S UTC").to_string()
}

fn row(e: StoredStripeEvent) -> EventRow {
    let retryable = matches!(
        e.status.as_str(),
        "failed" | "deferred" | "ignored" | "pending"
    );
    EventRow {
        next_attempt: if matches!(e.status.as_str(), "failed" | "deferred") {
            when(e.next_attempt_at)
        } else {
            String::new()
        },
        id: e.id,
        event_type: e.event_type,
        customer: e.customer_id.unwrap_or_default(),
        received: when(e.received_at),
        attempts: e.attempts,
        error: e.last_error.unwrap_or_default(),
        retryable,
        status: e.status,
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    show: Option<String>,
    done: Option<String>,
}

#[handler]
pub async fn list(req: &Request, state: Data<&State>, Query(query): Query<ListQuery>) -> Response {
    if let Err(resp) = signed_in(req, &state).await {
        return resp;
    }
    let notice = match query.done.as_deref() {
        Some("retried") => Some(Notice::info(
            "The event is queued: a worker processes it in a moment. Reload to see it.",
        )),
        _ => None,
    };
    render(req, &state, query.show.as_deref(), notice, StatusCode::OK).await
}

async fn render(
    req: &Request,
    state: &State,
    show: Option<&str>,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let show = SHOWS
        .iter()
        .find(|(s, _)| Some(*s) == show)
        .map_or("attention", |(s, _)| s);
    let statuses: &[&str] = match show {
        "attention" => &["failed", "deferred"],
        one => &[one][..],
    };
    let mut events = Vec::new();
    for status in statuses {
        match inbox::list(&state.pool, Some(status), None, LIMIT + 1).await {
            Ok(found) => events.extend(found),
            Err(err) => return unavailable(&err),
        }
    }
    events.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(b.id.cmp(&a.id)));
    let more = events.len() > usize::try_from(LIMIT).unwrap_or(usize::MAX);
    events.truncate(usize::try_from(LIMIT).unwrap_or(usize::MAX));
    page::html_status(
        status,
        &EventsPage {
            layout: admin_layout(req, "Stripe events", notice),
            show: show.to_owned(),
            shows: SHOWS.to_vec(),
            events: events.into_iter().map(row).collect(),
            more,
        },
    )
}

#[derive(Deserialize)]
struct RetryForm {
    #[serde(default)]
    id: String,
}

/// Makes the event due now, as the API's retry does; a processed one is left alone.
#[handler]
pub async fn retry(req: &Request, body: String, state: Data<&State>) -> Response {
    let form: RetryForm = match admin_form(req, &body, &state).await {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let state: &State = &state;
    let refused = |status: StatusCode, text: String| async move {
        render(req, state, None, Some(Notice::error(text)), status).await
    };
    if form.id.is_empty() || form.id.len() > 255 || form.id.contains('\0') {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "No event was named to retry.".to_owned(),
        )
        .await;
    }
    match inbox::retry(&state.pool, &form.id).await {
        Ok(inbox::Retry::Queued(event)) => {
            tracing::info!(event = %event.id, "admin console: a Stripe event retried");
            page::see_other("/admin/stripe-events?done=retried")
        }
        Ok(inbox::Retry::NotRetryable(event)) => {
            refused(
                StatusCode::CONFLICT,
                format!(
                    "The event {} is {} already: it is not processed again.",
                    event.id, event.status
                ),
            )
            .await
        }
        Ok(inbox::Retry::NotFound) => {
            refused(
                StatusCode::NOT_FOUND,
                format!("No stored Stripe event has the id {}.", form.id),
            )
            .await
        }
        Err(err) => unavailable(&err),
    }
}
