//! Webhook deliveries: verifying the signature with async-stripe, and the fields of an event
//! the inbox indexes. The HTTP endpoint is `api::webhook`.

use serde_json::Value;
use stripe_webhook::{Webhook, WebhookError};

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
