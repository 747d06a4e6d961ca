//! Stripe as it really sends: webhooks in the account's default API version, which can be
//! years old (`stripe-fixtures/old_shapes/`). A lifecycle in an old shape ends where today's
//! does; an event we cannot read fails, naming the field, and is never quietly ignored.

use serde_json::{json, Value};
use stripe_fixtures::ApiVersion;

use crate::helpers::{eventually, TestApp};
use crate::stripe_support::Lifecycle;
use crate::stripe_webhooks::{converged, Converged};

async fn deliver(app: &TestApp, events: &[Value]) {
    for event in events {
        assert_eq!(app.send_webhook(event).await.status(), 200, "{event}");
        // One at a time, in Stripe's order, as in the lifecycle tests of today's shape.
        app.drain_stripe().await;
    }
}

#[tokio::test]
async fn a_lifecycle_in_each_old_api_version_ends_as_todays_shape_does() {
    let app = TestApp::spawn().await;
    let today = Lifecycle::new("shape_today");
    let events = today.events();
    let (subscribed, rest) = events.split_at(events.len() - 1);
    deliver(&app, subscribed).await;
    let today_subscribed = converged(&app, &today).await;
    // Subscribed, with the license, so the comparisons below say something.
    let shown = format!("{today_subscribed:?}");
    assert!(shown.contains("member_status: \"paid\""), "{shown}");
    assert!(shown.contains("active_licenses: 1"), "{shown}");
    deliver(&app, rest).await;
    let today_ended = converged(&app, &today).await;

    for version in ApiVersion::ALL {
        let l = Lifecycle::new(&format!("shape_{}", version.name().replace('-', "_")));
        let events = l.events_in(version);
        assert!(events.iter().all(|e| e["api_version"] == version.name()));
        let (subscribed, rest) = events.split_at(events.len() - 1);
        deliver(&app, subscribed).await;
        assert_eq!(
            converged(&app, &l).await,
            today_subscribed,
            "{} while subscribed",
            version.name()
        );
        deliver(&app, rest).await;
        assert_eq!(
            converged(&app, &l).await,
            today_ended,
            "{} once canceled",
            version.name()
        );
    }
}

/// Waits until `event_id` is `failed` (never `ignored` or `processed`); returns its stored
/// error.
async fn failure_of(app: &TestApp, event_id: &str) -> String {
    let status = || async move {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT status, last_error FROM stripe_events WHERE id = $1")
                .bind(event_id)
                .fetch_optional(&app.pool)
                .await
                .expect("the event");
        row
    };
    eventually("the event to be marked failed", || async move {
        match status().await {
            Some((status, _)) => {
                assert!(
                    matches!(status.as_str(), "pending" | "processing" | "failed"),
                    "{event_id} ended {status}, not failed"
                );
                status == "failed"
            }
            None => false,
        }
    })
    .await;
    status()
        .await
        .and_then(|(_, error)| error)
        .expect("a failed event has an error")
}

#[tokio::test]
async fn an_item_with_neither_price_nor_plan_fails_naming_the_fields() {
    let app = TestApp::spawn().await;
    let l = Lifecycle::new("shape_noprice");
    let events = l.events_in(ApiVersion::V2019_12_03);
    // The member exists (the checkout), so only the item is what cannot be read.
    deliver(&app, &events[..1]).await;
    let mut broken = events[1].clone();
    let item = &mut broken["data"]["object"]["items"]["data"][0];
    item.as_object_mut().expect("an item").remove("plan");
    assert_eq!(app.send_webhook(&broken).await.status(), 200);
    let error = failure_of(&app, broken["id"].as_str().expect("an id")).await;
    assert!(
        error.contains(&format!(
            "subscription item {} has neither `price.id` nor `plan.id`",
            l.item
        )),
        "{error}"
    );
    let subscriptions: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE id = $1")
        .bind(&l.subscription)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(subscriptions, 0, "nothing was applied");
}

#[tokio::test]
async fn a_subscription_without_items_or_an_invoice_without_its_subscription_fails() {
    let app = TestApp::spawn().await;
    let l = Lifecycle::new("shape_noitems");
    let events = l.events_in(ApiVersion::V2022_11_15);
    deliver(&app, &events[..1]).await;

    let mut no_items = events[1].clone();
    no_items["data"]["object"]
        .as_object_mut()
        .expect("a subscription")
        .remove("items");
    assert_eq!(app.send_webhook(&no_items).await.status(), 200);
    let error = failure_of(&app, no_items["id"].as_str().expect("an id")).await;
    assert!(
        error.contains("the subscription has no `items.data`"),
        "{error}"
    );

    // An invoice billing a subscription (billing_reason) that names none anywhere we look.
    let mut invoice = events[3].clone();
    let object = &mut invoice["data"]["object"];
    object
        .as_object_mut()
        .expect("an invoice")
        .remove("subscription");
    object["lines"]["data"][0]["subscription"] = Value::Null;
    assert_eq!(object["billing_reason"], json!("subscription_create"));
    assert_eq!(app.send_webhook(&invoice).await.status(), 200);
    let error = failure_of(&app, invoice["id"].as_str().expect("an id")).await;
    assert!(
        error.contains("billing_reason is \"subscription_create\" but it names no subscription"),
        "{error}"
    );
    assert!(error.contains("`lines.data[].subscription`"), "{error}");
}

/// A refunded lifecycle's payment state, without ids: the lifecycle's converged state and the
/// member's payment rows (kind, whether of the lifecycle's invoice, amount) in order.
async fn refunded(app: &TestApp, l: &Lifecycle) -> (Converged, Vec<(String, bool, i64)>) {
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT p.kind, p.invoice_id, p.amount FROM members_payment_events p
         JOIN member_list m ON m.id = p.member_id WHERE lower(m.email) = lower($1) ORDER BY p.id",
    )
    .bind(&l.email)
    .fetch_all(&app.pool)
    .await
    .expect("payment rows");
    let own = format!("in_{}_1", l.tag);
    let rows = rows
        .into_iter()
        .map(|(kind, invoice, amount)| (kind, invoice.as_deref() == Some(own.as_str()), amount))
        .collect();
    (converged(app, l).await, rows)
}

#[tokio::test]
async fn a_refund_in_each_old_api_version_ends_as_todays_shape_does() {
    let app = TestApp::spawn().await;
    // A partial refund, then the rest: `amount_refunded` is the charge's total so far.
    let today = Lifecycle::new("refund_today");
    deliver(&app, &today.subscribed_events_paid_by_intent()).await;
    deliver(&app, &[today.refund(500, 50), today.refund(2000, 60)]).await;
    let expected = refunded(&app, &today).await;
    assert_eq!(
        expected.1,
        [
            ("payment".to_owned(), true, 2000),
            ("refund".to_owned(), true, 500),
            ("refund".to_owned(), true, 1500),
        ],
        "today's shape, so the comparisons below say something"
    );

    for version in ApiVersion::ALL {
        let l = Lifecycle::new(&format!("refund_{}", version.name().replace('-', "_")));
        let events = l.events_in(version);
        // Subscribed: every event but the deletion.
        deliver(&app, &events[..events.len() - 1]).await;
        let refunds = [
            l.old_refund(version, 500, 50),
            l.old_refund(version, 2000, 60),
        ];
        assert!(refunds.iter().all(|e| e["api_version"] == version.name()));
        assert!(
            refunds
                .iter()
                .all(|e| e["data"]["object"]["invoice"] == format!("in_{}_1", l.tag).as_str()),
            "old charges name their invoice"
        );
        deliver(&app, &refunds).await;
        assert_eq!(refunded(&app, &l).await, expected, "{}", version.name());
    }
}
