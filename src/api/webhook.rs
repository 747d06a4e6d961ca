//! `POST /webhooks/stripe`: verify the signature, store the event, answer. Never 200 before
//! the event is durably stored; 503 when it cannot be, so Stripe retries.

use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Body, IntoResponse, Request, Response};

use super::problem::Problem;
use super::state::State;
use crate::stripe::webhook;

#[handler]
pub async fn receive(req: &Request, body: Body, state: Data<&State>) -> Response {
    // STRIPE_WEBHOOK_SECRET's, then those `memberledger stripe setup` stored.
    let secrets = |stored: Vec<String>| {
        let mut all = state.stripe.webhook_secrets.clone();
        all.extend(stored);
        all
    };
    let stored = match state.stored_webhook_secrets.current(false).await {
        Ok(stored) => stored,
        Err(err) => return unstored(&err),
    };
    let mut all = secrets(stored);
    if all.is_empty() {
        tracing::warn!("stripe webhook refused: no signing secret (STRIPE_WEBHOOK_SECRET, or `memberledger stripe setup`)");
        return Problem::unavailable(
            "no webhook signing secret: set STRIPE_WEBHOOK_SECRET or run `memberledger stripe setup`",
        )
        .into_response();
    }
    let Some(signature) = req
        .headers()
        .get(webhook::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return refuse("the Stripe-Signature header is missing");
    };
    // The body limit middleware already refused anything over 1 MiB.
    let Ok(bytes) = body.into_vec().await else {
        return refuse("the body could not be read");
    };
    // Owned: it is what the inbox stores.
    let Ok(payload) = String::from_utf8(bytes) else {
        return refuse("the body is not UTF-8");
    };
    let mut verified = webhook::verify(&payload, signature, &all);
    if verified == webhook::Verified::No {
        // A secret stored since the cache was filled (`stripe setup` just ran)?
        match state.stored_webhook_secrets.current(true).await {
            Ok(stored) => {
                all = secrets(stored);
                verified = webhook::verify(&payload, signature, &all);
            }
            Err(err) => return unstored(&err),
        }
    }
    match verified {
        webhook::Verified::Yes => {}
        webhook::Verified::Stale => {
            return refuse("the signature's timestamp is outside the 300 s tolerance (a replay, or a clock out of step)")
        }
        webhook::Verified::No => {
            return refuse("the signature does not match any webhook secret (a wrong STRIPE_WEBHOOK_SECRET, an endpoint not set up by `memberledger stripe setup`, or not from Stripe)")
        }
    }
    let raw: serde_json::Value = match serde_json::from_str(&payload) {
        Ok(raw) => raw,
        Err(_) => return refuse("the body is not JSON"),
    };
    let Some(head) = webhook::event_head(&raw) else {
        return refuse("the body is not a Stripe event (id, type, created)");
    };
    let (event_id, event_type) = (head.id.clone(), head.event_type.clone());
    match state.stripe_intake.store(head, payload).await {
        Ok(inserted) => {
            tracing::info!(%event_id, %event_type, duplicate = !inserted, "stripe event stored");
            let body = serde_json::json!({ "received": true, "duplicate": !inserted });
            Response::builder()
                .status(StatusCode::OK)
                .content_type("application/json")
                .body(body.to_string())
        }
        Err(err) => {
            tracing::error!(%event_id, error = %err, "could not store a stripe event; answering 503");
            let mut resp =
                Problem::unavailable("the event could not be stored; retry later").into_response();
            resp.headers_mut()
                .insert("retry-after", poem::http::HeaderValue::from_static("5"));
            resp
        }
    }
}

/// A 503 when the stored secrets cannot be read: Stripe retries the delivery.
fn unstored(err: &sqlx::Error) -> Response {
    tracing::error!(error = %err, "could not read the stored webhook secrets; answering 503");
    let mut resp =
        Problem::unavailable("the event could not be verified now; retry later").into_response();
    resp.headers_mut()
        .insert("retry-after", poem::http::HeaderValue::from_static("5"));
    resp
}

/// A 400 whose reason is also logged: Stripe's dashboard shows only the status, and an
/// operator looking for lost events needs to see why deliveries are turned away.
fn refuse(reason: &str) -> Response {
    tracing::warn!(reason, "stripe webhook refused");
    Problem::bad_request(reason).into_response()
}
