use cqrs_es::DomainEvent;

use super::*;

#[test]
fn the_state_follows_the_events() {
    let mut subscription = Subscription::default();
    assert!(!subscription.exists());
    assert_eq!(subscription.status(), None);
    assert!(subscription.items().is_empty());
    assert_eq!(subscription.mrr(), 0);
    for event in creation_of(S::Active, &created_at(100)) {
        subscription.apply(event);
    }
    subscription.apply(E::SubscriptionItemAdded {
        item: seats_item(2),
        observed: updated_at(200),
    });
    assert!(subscription.exists());
    assert_eq!(subscription.member_id(), Some(member()));
    assert_eq!(subscription.status(), Some(S::Active));
    let ids: Vec<&str> = subscription
        .items()
        .iter()
        .map(|i| i.item_id.as_str())
        .collect();
    assert_eq!(ids, vec!["si_seats", "si_site"]);
    assert_eq!(subscription.mrr(), 2000);
    assert_eq!(subscription.newest_observation(), Some(&updated_at(200)));
    subscription.apply(E::SubscriptionCancellationScheduled {
        cancel_at: Some(t(100 + MONTH)),
        observed: updated_at(300),
    });
    assert!(subscription.cancel_at_period_end());
    assert_eq!(subscription.cancel_at(), Some(t(100 + MONTH)));
    assert_eq!(subscription.mrr(), 0);
}

#[tokio::test]
async fn the_state_survives_a_snapshot_round_trip() {
    let (mut subscription, _) = deliver(&lifecycle(), &[0, 2, 4]).await;
    subscription.apply(E::PaymentRecorded {
        payment: payment("in_1"),
    });
    subscription.apply(failed(2));
    subscription.apply(refunded(300));
    let json = serde_json::to_string(&subscription).expect("serialises");
    let back: Subscription = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(back, subscription);
}

#[test]
fn event_types_are_the_variant_names_at_version_one() {
    let event = E::SubscriptionStateObserved {
        observed: updated_at(1),
    };
    assert_eq!(event.event_type(), "SubscriptionStateObserved");
    assert_eq!(event.event_version(), "1.0");
    assert_eq!(
        E::PaymentRecorded {
            payment: payment("in_1")
        }
        .event_type(),
        "PaymentRecorded"
    );
    assert_eq!(refunded(1).event_type(), "PaymentRefunded");
}
