//! Licenses of a subscription whose deletion is processed before the events that activated it
//! (its checkout, its activation, its payment): the same licenses, in the same states, as when
//! Stripe's events arrive in order.

use serde_json::Value;

use crate::crash_support::LicenseRow;
use crate::helpers::{eventually, TestApp};
use crate::stripe_support::Lifecycle;

/// (whether the site is the lifecycle's own, seat, status, deactivation reason) of every
/// license of the lifecycle's subscription.
type Licenses = Vec<(bool, Option<i32>, String, Option<String>)>;

async fn licenses(app: &TestApp, l: &Lifecycle) -> Licenses {
    let rows: Vec<LicenseRow> = sqlx::query_as(
        "SELECT site, seat, status, deactivation_reason FROM licenses
         WHERE subscription_id = $1 ORDER BY site, seat",
    )
    .bind(&l.subscription)
    .fetch_all(&app.pool)
    .await
    .expect("licenses");
    rows.into_iter()
        .map(|(site, seat, status, reason)| {
            (
                site.as_deref() == Some(l.site.as_str()),
                seat,
                status,
                reason,
            )
        })
        .collect()
}

/// Delivers `events` one at a time, each processed (or left waiting) before the next.
async fn deliver(app: &TestApp, events: &[Value]) {
    for event in events {
        assert_eq!(app.send_webhook(event).await.status(), 200, "{event}");
        app.drain_stripe().await;
    }
}

#[tokio::test]
async fn a_deletion_processed_before_the_checkout_leaves_the_licenses_in_order_delivery_leaves() {
    let app = TestApp::spawn().await;
    let in_order = Lifecycle::new("order_reference");
    deliver(&app, &in_order.events()).await;
    let expected = licenses(&app, &in_order).await;
    // The reference: issued when paid, deactivated when canceled.
    assert_eq!(expected.len(), 1, "{expected:?}");
    assert_eq!(
        (expected[0].2.as_str(), expected[0].3.as_deref()),
        ("inactive", Some("subscription_canceled"))
    );

    // The deletion first (it waits for the checkout, which names the customer), then the
    // rest in order; and the same with the payment last of all.
    let deleted_first = Lifecycle::new("order_deleted_first");
    let mut events = deleted_first.events();
    let deleted = events.pop().expect("the deletion");
    events.insert(0, deleted);
    let payment_last = Lifecycle::new("order_payment_last");
    let mut late = payment_last.events();
    let deleted = late.pop().expect("the deletion");
    let invoice = late.remove(3);
    assert_eq!(invoice["type"], "invoice.paid");
    late.insert(0, deleted);
    late.push(invoice);

    for (l, events) in [(&deleted_first, events), (&payment_last, late)] {
        // The deletion is run first and waits for the member: no other event of the customer
        // is known yet.
        assert_eq!(app.send_webhook(&events[0]).await.status(), 200);
        let id = events[0]["id"].as_str().expect("an id").to_owned();
        eventually("the deletion to wait for its member", || async {
            let status: String =
                sqlx::query_scalar("SELECT status FROM stripe_events WHERE id = $1")
                    .bind(&id)
                    .fetch_one(&app.pool)
                    .await
                    .expect("the event");
            status == "deferred"
        })
        .await;
        deliver(&app, &events[1..]).await;
        let status: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1")
            .bind(&l.subscription)
            .fetch_one(&app.pool)
            .await
            .expect("the subscription");
        assert_eq!(status, "canceled", "{}", l.tag);
        assert_eq!(licenses(&app, l).await, expected, "{}", l.tag);
    }
}
