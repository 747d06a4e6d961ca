//! Upcasting: old event payloads brought to the current shape, wherever events are read
//! (aggregate loads, projection replays, exports). Each step names the aggregate, the event
//! type and the version it upgrades from; steps chain until the current version.

use serde_json::Value;

use crate::attribution::{for_context, AttributionContext};

struct Step {
    aggregate_type: &'static str,
    event_type: &'static str,
    from: &'static str,
    to: &'static str,
    upgrade: fn(&mut Value),
}

const STEPS: &[Step] = &[
    Step {
        aggregate_type: "Member",
        event_type: "MemberCreated",
        from: "1.0",
        to: "1.1",
        // 1.1 added `attribution`. A member created before it gets the fixed attribution of the
        // context it was created in (admin, API, import, Stripe); a 1.0 signup has none recorded.
        upgrade: |payload| {
            if let Some(fields) = payload
                .get_mut("MemberCreated")
                .and_then(Value::as_object_mut)
            {
                let context = match fields.get("source").and_then(Value::as_str) {
                    Some("admin") => Some(AttributionContext::Admin),
                    Some("api") => Some(AttributionContext::Api),
                    Some("import") => Some(AttributionContext::Import),
                    Some("stripe") => Some(AttributionContext::Stripe),
                    _ => None,
                };
                let attribution = context
                    .map(for_context)
                    .and_then(|a| serde_json::to_value(a).ok())
                    .unwrap_or(Value::Null);
                fields.entry("attribution").or_insert(attribution);
            }
        },
    },
    Step {
        aggregate_type: "License",
        event_type: "LicenseActivatedOnDomain",
        from: "1.0",
        to: "1.1",
        // 1.1 added `ip`, the address the activation came from; a 1.0 activation has none recorded.
        upgrade: |payload| {
            if let Some(fields) = payload
                .get_mut("LicenseActivatedOnDomain")
                .and_then(Value::as_object_mut)
            {
                fields.entry("ip").or_insert(Value::Null);
            }
        },
    },
    Step {
        aggregate_type: "Offer",
        event_type: "OfferCreated",
        from: "1.0",
        to: "1.1",
        // 1.1 added `terms.stripe_promotion_code_id`; an offer created before it has a coupon
        // and no promotion code.
        upgrade: |payload| {
            if let Some(terms) = payload
                .get_mut("OfferCreated")
                .and_then(|created| created.get_mut("terms"))
                .and_then(Value::as_object_mut)
            {
                terms
                    .entry("stripe_promotion_code_id")
                    .or_insert(Value::Null);
            }
        },
    },
];

/// Whether an event of this type and version has a newer shape.
pub fn needs_upcast(aggregate_type: &str, event_type: &str, version: &str) -> bool {
    STEPS.iter().any(|s| {
        s.aggregate_type == aggregate_type && s.event_type == event_type && s.from == version
    })
}

/// Brings `payload` from `version` to the current version; returns the new version.
pub fn upcast(
    aggregate_type: &str,
    event_type: &str,
    version: &str,
    payload: &mut Value,
) -> String {
    let mut version = version.to_owned();
    while let Some(step) = STEPS.iter().find(|s| {
        s.aggregate_type == aggregate_type && s.event_type == event_type && s.from == version
    }) {
        (step.upgrade)(payload);
        version = step.to.to_owned();
    }
    version
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{MemberEvent, OfferEvent};

    #[test]
    fn a_member_created_at_1_0_gets_the_attribution_of_its_context() {
        let mut payload = json!({"MemberCreated": {
            "member_id": "0190a000-0000-7000-8000-000000000001", "email": "old@example.com",
            "name": null, "note": null, "labels": [], "source": "admin",
            "created_at": "2026-01-01T00:00:00Z"
        }});
        assert!(needs_upcast("Member", "MemberCreated", "1.0"));
        assert_eq!(
            upcast("Member", "MemberCreated", "1.0", &mut payload),
            "1.1"
        );
        let event: MemberEvent = serde_json::from_value(payload).expect("upcast payload parses");
        let MemberEvent::MemberCreated { attribution, .. } = event else {
            panic!("still a MemberCreated")
        };
        assert_eq!(
            attribution.as_deref(),
            Some(&for_context(AttributionContext::Admin))
        );

        let mut signup = json!({"MemberCreated": {"source": "signup"}});
        upcast("Member", "MemberCreated", "1.0", &mut signup);
        assert_eq!(signup["MemberCreated"]["attribution"], Value::Null);
    }

    #[test]
    fn an_offer_created_at_1_0_has_no_promotion_code() {
        let mut payload = json!({"OfferCreated": {
            "offer_id": "0190a000-0000-7000-8000-000000000002",
            "terms": {"name": "Launch", "code": "launch",
                      "tier_id": "0190a000-0000-7000-8000-000000000003", "cadence": "month",
                      "discount": {"percent": 20}, "duration": {"repeating": 3},
                      "redemption_limit": 100, "stripe_coupon_id": "co_1"},
            "created_at": "2026-01-01T00:00:00Z"
        }});
        assert!(needs_upcast("Offer", "OfferCreated", "1.0"));
        assert_eq!(upcast("Offer", "OfferCreated", "1.0", &mut payload), "1.1");
        assert_eq!(
            payload["OfferCreated"]["terms"]["stripe_promotion_code_id"],
            Value::Null
        );
        let event: OfferEvent = serde_json::from_value(payload).expect("upcast payload parses");
        let OfferEvent::OfferCreated { terms, .. } = event else {
            panic!("still an OfferCreated")
        };
        assert_eq!(terms.stripe_coupon_id, "co_1");
        assert_eq!(terms.stripe_promotion_code_id, None);
        assert!(!needs_upcast("Offer", "OfferCreated", "1.1"));
        assert!(!needs_upcast("Offer", "OfferArchived", "1.0"));
    }

    #[test]
    fn current_versions_and_other_events_are_left_alone() {
        let mut payload = json!({"MemberUpdated": {}});
        assert_eq!(
            upcast("Member", "MemberUpdated", "1.0", &mut payload),
            "1.0"
        );
        assert_eq!(payload, json!({"MemberUpdated": {}}));
        assert!(!needs_upcast("Member", "MemberCreated", "1.1"));
    }
}
