//! Member events as the server writes them, for the rows inserted with SQL (pgbench, seed).

use aggregates::{AttributionContext, MemberEvent, MemberSource};
use anyhow::{Context, Result};
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

/// A MemberCreated payload as the server writes it (v1.1, admin attribution).
pub fn member_created_payload(member_id: Uuid, email: &str) -> Result<Value> {
    let event = MemberEvent::MemberCreated {
        member_id,
        email: email.to_owned(),
        name: Some("Bench Member".to_owned()),
        note: None,
        labels: vec!["bench".to_owned()],
        source: MemberSource::Admin,
        attribution: Some(Box::new(aggregates::attribution::for_context(
            AttributionContext::Admin,
        ))),
        created_at: Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .context("a valid date")?,
    };
    Ok(serde_json::to_value(event)?)
}

pub fn member_updated_payload() -> Result<Value> {
    let event = MemberEvent::MemberUpdated {
        name: Some("Bench Member (renamed)".to_owned()),
        note: Some("seeded by loadgen".to_owned()),
        labels: vec!["bench".to_owned(), "seeded".to_owned()],
        updated_at: Utc
            .with_ymd_and_hms(2025, 1, 2, 0, 0, 0)
            .single()
            .context("a valid date")?,
    };
    Ok(serde_json::to_value(event)?)
}

pub fn event_metadata(id: &str) -> Value {
    json!({ "correlation_id": id, "causation_id": id, "actor": "admin" })
}
