//! `POST /webhooks/stripe`: verify the signature with async-stripe, store the event, answer.
//! Never 200 before the event is durably stored; 503 when it cannot be, so Stripe retries.

use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Body, IntoResponse, Request, Response};
use serde_json::Value;
use stripe_webhook::{Webhook, WebhookError};

use crate::api::{Problem, State};

pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// What verification concluded about a delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// Signed by one of our secrets; whether async-stripe's typed parser accepted the object.
    Yes {
        parsed: bool,
    },
    /// Signed, but the timestamp is outside the 300 s tolerance (a replay, or a skewed clock).
    Stale,
    No,
}

/// Checks `payload` against every secret (several during a rotation).
pub fn verify(payload: &str, signature: &str, secrets: &[String]) -> Verified {
    let mut stale = false;
    for secret in secrets {
        match Webhook::construct_event(payload, signature, secret) {
            Ok(_) => return Verified::Yes { parsed: true },
            // Parsing happens only after the signature and timestamp were checked.
            Err(WebhookError::BadParse(_)) => return Verified::Yes { parsed: false },
            Err(WebhookError::BadTimestamp(_)) => stale = true,
            Err(WebhookError::BadSignature | WebhookError::BadHeader(_) | WebhookError::BadKey) => {
            }
        }
    }
    if stale {
        Verified::Stale
    } else {
        Verified::No
    }
}

/// The fields of an event the inbox indexes.
#[derive(Debug)]
pub struct EventHead {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
    pub customer_id: Option<String>,
    pub object_id: Option<String>,
}

/// Reads the indexed fields from the raw event.
pub fn event_head(event: &Value) -> Option<EventHead> {
    let object = &event["data"]["object"];
    let customer_id = if object["object"] == "customer" {
        object["id"].as_str()
    } else {
        super::translate::read::id_of(&object["customer"])
    };
    Some(EventHead {
        id: event["id"].as_str().filter(|id| !id.is_empty())?.to_owned(),
        event_type: event["type"].as_str()?.to_owned(),
        created: event["created"].as_i64()?,
        livemode: event["livemode"].as_bool().unwrap_or(false),
        customer_id: customer_id.map(str::to_owned),
        object_id: object["id"].as_str().map(str::to_owned),
    })
}

#[handler]
pub async fn receive(req: &Request, body: Body, state: Data<&State>) -> Response {
    let secrets = &state.stripe.webhook_secrets;
    if secrets.is_empty() {
        return Problem::unavailable("STRIPE_WEBHOOK_SECRET is not configured").into_response();
    }
    let Some(signature) = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return Problem::bad_request("the Stripe-Signature header is missing").into_response();
    };
    // The body limit middleware already refused anything over 1 MiB.
    let Ok(bytes) = body.into_bytes().await else {
        return Problem::bad_request("the body could not be read").into_response();
    };
    let Ok(payload) = std::str::from_utf8(&bytes) else {
        return Problem::bad_request("the body is not UTF-8").into_response();
    };
    let parsed = match verify(payload, signature, secrets) {
        Verified::Yes { parsed } => parsed,
        Verified::Stale => {
            return Problem::bad_request("the signature's timestamp is outside the 300 s tolerance")
                .into_response()
        }
        Verified::No => {
            return Problem::bad_request("the signature does not match any webhook secret")
                .into_response()
        }
    };
    let raw: Value = match serde_json::from_str(payload) {
        Ok(raw) => raw,
        Err(_) => return Problem::bad_request("the body is not JSON").into_response(),
    };
    let Some(head) = event_head(&raw) else {
        return Problem::bad_request("the body is not a Stripe event (id, type, created)")
            .into_response();
    };
    if !parsed {
        tracing::warn!(event_id = %head.id, event_type = %head.event_type, "async-stripe could not parse the event; stored for processing from its raw JSON");
    }
    match super::inbox::store(&state.pool, &head, &raw, parsed).await {
        Ok(inserted) => {
            tracing::info!(event_id = %head.id, event_type = %head.event_type, duplicate = !inserted, "stripe event stored");
            let body = serde_json::json!({ "received": true, "duplicate": !inserted });
            Response::builder()
                .status(StatusCode::OK)
                .content_type("application/json")
                .body(body.to_string())
        }
        Err(err) => {
            tracing::error!(event_id = %head.id, error = %err, "could not store a stripe event; answering 503");
            let mut resp =
                Problem::unavailable("the event could not be stored; retry later").into_response();
            resp.headers_mut()
                .insert("retry-after", poem::http::HeaderValue::from_static("5"));
            resp
        }
    }
}
