//! JSON Schemas of the stored event payloads, one per event type, for analysts and exporters.
//! Generated from the event types themselves, so they cannot drift from what is written.

use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::{LicenseEvent, MemberEvent, NewsletterEvent, OfferEvent, SubscriptionEvent, TierEvent};

/// Event types whose current version is not 1.0.
const VERSIONS: &[(&str, &str)] = &[
    (MemberEvent::CREATED, MemberEvent::CREATED_VERSION),
    (LicenseEvent::ACTIVATED_ON_DOMAIN, "1.1"),
    (OfferEvent::CREATED, OfferEvent::CREATED_VERSION),
];

/// `{aggregate type: {event type: {"version": .., "schema": ..}}}`; each schema describes the
/// stored payload (`{"<EventType>": {...fields}}`) at its current version.
pub fn event_schemas() -> Value {
    let mut out = Map::new();
    out.insert("Member".into(), variants::<MemberEvent>());
    out.insert("Newsletter".into(), variants::<NewsletterEvent>());
    out.insert("Subscription".into(), variants::<SubscriptionEvent>());
    out.insert("License".into(), variants::<LicenseEvent>());
    out.insert("Tier".into(), variants::<TierEvent>());
    out.insert("Offer".into(), variants::<OfferEvent>());
    Value::Object(out)
}

fn variants<E: JsonSchema>() -> Value {
    let root = serde_json::to_value(schemars::schema_for!(E)).unwrap_or(Value::Null);
    let defs = root.get("$defs").cloned().unwrap_or_else(|| json!({}));
    let mut out = Map::new();
    for variant in root["oneOf"].as_array().into_iter().flatten() {
        let Some(name) = variant["required"][0].as_str() else {
            continue;
        };
        let version = VERSIONS
            .iter()
            .find(|(t, _)| *t == name)
            .map_or("1.0", |(_, v)| v);
        let mut schema = variant.clone();
        if let Some(object) = schema.as_object_mut() {
            object.insert(
                "$schema".into(),
                json!("https://json-schema.org/draft/2020-12/schema"),
            );
            object.insert("title".into(), json!(name));
            if defs.as_object().is_some_and(|d| !d.is_empty()) {
                object.insert("$defs".into(), defs.clone());
            }
        }
        out.insert(
            name.to_owned(),
            json!({ "version": version, "schema": schema }),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_a_schema_with_its_version() {
        let schemas = event_schemas();
        let created = &schemas["Member"]["MemberCreated"];
        assert_eq!(created["version"], "1.1");
        let fields = &created["schema"]["properties"]["MemberCreated"]["properties"];
        assert!(
            fields["attribution"].is_object() && fields["email"].is_object(),
            "{created}"
        );
        assert_eq!(schemas["Subscription"]["PaymentRecorded"]["version"], "1.0");
        assert_eq!(schemas["Offer"]["OfferCreated"]["version"], "1.1");
        assert_eq!(schemas["Offer"]["OfferArchived"]["version"], "1.0");
        assert!(schemas["License"]["LicenseIssued"]["schema"].is_object());
        assert!(schemas["Newsletter"]["NewsletterCreated"]["schema"].is_object());
        let count: usize = schemas.as_object().map_or(0, |a| {
            a.values().map(|v| v.as_object().map_or(0, Map::len)).sum()
        });
        assert!(count >= 30, "{count} event types");
    }
}
