//! Flow 3: buying license keys. Keys are reserved (pending) first, then paid for through a
//! payment-mode Checkout Session; the payment adds one quantity item at Stripe, which activates
//! exactly those keys; an expired session cancels them.

use serde_json::{json, Value};

use crate::checkout::{app_with_stripe, app_with_stripe_down, field, form, paid_session};
use crate::helpers::{assert_problem, TestApp};
use crate::stripe_support::{event, FakeStripe, Lifecycle};

/// A member with an active site subscription (half of its period left), signed in.
pub(crate) async fn subscribed(app: &TestApp, prefix: &str) -> (Lifecycle, String, Value) {
    let l = Lifecycle::new(&format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let mut created = l.subscription_event("created", "customer.subscription.created", "active", 0);
    let now = chrono::Utc::now().timestamp();
    let item = &mut created["data"]["object"]["items"]["data"][0];
    item["current_period_start"] = json!(now - 15 * 86_400);
    item["current_period_end"] = json!(now + 15 * 86_400);
    for e in [l.checkout_completed(1), created.clone()] {
        assert_eq!(app.send_webhook(&e).await.status(), 200);
    }
    app.drain_stripe().await;
    let token = app.sign_in(&l.email).await;
    (l, token, created)
}

/// Pays license purchase `purchase` (the `n`th Checkout Session the fake Stripe was asked for):
/// its session completes and its payment intent succeeds; then Stripe reports the seats' item
/// of `quantity` on the subscription (`created`, as updated), so the keys activate. Drained.
pub(crate) async fn pay_keys(
    app: &TestApp,
    stripe: &FakeStripe,
    l: &Lifecycle,
    created: Value,
    n: usize,
    purchase: &Value,
    quantity: u32,
) {
    let session = paid_session(stripe, n, purchase["id"].as_str().expect("id"));
    let mut intent = crate::stripe_support::fixture("payment_intent");
    intent["id"] = json!(format!("pi_{}", l.tag));
    intent["status"] = json!("succeeded");
    intent["customer"] = json!(l.customer);
    intent["metadata"] = session["metadata"].clone();
    let now = chrono::Utc::now().timestamp();
    for e in [
        event(
            &format!("evt_{}_paid", l.tag),
            "checkout.session.completed",
            now,
            session,
        ),
        event(
            &format!("evt_{}_pi", l.tag),
            "payment_intent.succeeded",
            now,
            intent,
        ),
    ] {
        assert_eq!(app.send_webhook(&e).await.status(), 200);
    }
    app.drain_stripe().await;
    let mut updated = created;
    updated["id"] = json!(format!("evt_{}_with_seats", l.tag));
    updated["type"] = json!("customer.subscription.updated");
    updated["created"] = json!(now + 1);
    let mut seats = updated["data"]["object"]["items"]["data"][0].clone();
    seats["id"] = json!(format!("si_seats_{}", l.tag));
    seats["quantity"] = json!(quantity);
    seats["metadata"] =
        json!({ "license_purchase_id": purchase["purchase_id"], "purchase_type": "quantity" });
    updated["data"]["object"]["items"]["data"]
        .as_array_mut()
        .expect("items")
        .push(seats);
    assert_eq!(app.send_webhook(&updated).await.status(), 200);
    app.drain_stripe().await;
}

impl TestApp {
    async fn buy_keys(&self, token: &str, quantity: u32) -> reqwest::Response {
        self.client
            .post(self.url("/v1/me/license-purchases"))
            .bearer_auth(token)
            .json(&json!({
                "quantity": quantity,
                "success_url": "https://shop.test/ok",
                "cancel_url": "https://shop.test/no"
            }))
            .send()
            .await
            .expect("sent")
    }

    async fn dashboard(&self, token: &str) -> Value {
        self.get_as(token, "/v1/me/dashboard")
            .await
            .json()
            .await
            .expect("json")
    }

    async fn activate(&self, token: &str, key: &str, domain: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/me/licenses/{key}/activation")))
            .bearer_auth(token)
            .json(&json!({ "domain": domain }))
            .send()
            .await
            .expect("sent")
    }
}

/// (key, status) of the member's licenses bought by `purchase_id`, by seat.
async fn purchase_keys(app: &TestApp, purchase_id: &str) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT key, status, item_id FROM licenses WHERE purchase_id = $1::uuid ORDER BY seat",
    )
    .bind(purchase_id)
    .fetch_all(&app.pool)
    .await
    .expect("licenses")
}

fn keys_of(purchase: &Value) -> Vec<String> {
    purchase["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["key"].as_str().expect("key").to_owned())
        .collect()
}

#[tokio::test]
async fn bought_keys_are_pending_until_paid_then_exactly_they_activate_once() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let (l, token, created) = subscribed(&app, "buy").await;
    // Two failures first: our retries reuse one idempotency key.
    stripe
        .fail_next
        .store(2, std::sync::atomic::Ordering::SeqCst);

    let resp = app.buy_keys(&token, 3).await;
    assert_eq!(resp.status(), 201);
    let purchase: Value = resp.json().await.expect("json");
    let purchase_id = purchase["purchase_id"]
        .as_str()
        .expect("purchase id")
        .to_owned();
    let keys = keys_of(&purchase);
    assert_eq!(keys.len(), 3);
    let amount = purchase["amount"].as_i64().expect("amount");
    assert!(
        (2850..=3150).contains(&amount),
        "3 seats at 2000 for half a period: {amount}"
    );

    let checkouts = stripe.checkouts.lock().expect("lock").clone();
    assert_eq!(checkouts.len(), 3, "two failures, then success");
    assert!(checkouts.iter().all(|(k, _)| *k == checkouts[0].0));
    let sent = form(&checkouts[0].1);
    assert_eq!(field(&sent, "mode"), Some("payment"));
    assert_eq!(field(&sent, "customer"), Some(l.customer.as_str()));
    assert_eq!(field(&sent, "line_items[0][quantity]"), Some("3"));
    assert_eq!(field(&sent, "metadata[purchase_type]"), Some("quantity"));
    assert_eq!(field(&sent, "metadata[quantity]"), Some("3"));
    assert_eq!(
        field(&sent, "metadata[purchase_id]"),
        Some(purchase_id.as_str())
    );
    assert_eq!(
        field(&sent, "payment_intent_data[metadata][purchase_id]"),
        Some(purchase_id.as_str())
    );

    // Pending, on the dashboard, and neither valid nor activatable.
    let dashboard = app.dashboard(&token).await;
    let pending: Vec<&Value> = dashboard["licenses"]
        .as_array()
        .expect("licenses")
        .iter()
        .filter(|l| l["purchase_id"] == purchase_id.as_str())
        .collect();
    assert_eq!(pending.len(), 3);
    assert!(pending.iter().all(|l| l["status"] == "pending"));
    assert_eq!(
        dashboard["pending_license_purchases"][0]["quantity"],
        json!(3)
    );
    assert_eq!(
        app.validate_license(&keys[0], "app.example.com").await["code"],
        "PENDING"
    );
    let resp = app.activate(&token, &keys[0], "app.example.com").await;
    let problem = assert_problem(resp, 409).await;
    assert_eq!(problem["type"], "/problems/license-pending");

    // Paid: the session completes and the payment intent succeeds (each delivered twice).
    let now = chrono::Utc::now().timestamp();
    let session = paid_session(&stripe, 2, purchase["id"].as_str().expect("id"));
    let mut intent = crate::stripe_support::fixture("payment_intent");
    intent["id"] = json!(format!("pi_{}", l.tag));
    intent["status"] = json!("succeeded");
    intent["customer"] = json!(l.customer);
    intent["metadata"] = session["metadata"].clone();
    for e in [
        event(
            &format!("evt_{}_paid", l.tag),
            "checkout.session.completed",
            now,
            session,
        ),
        event(
            &format!("evt_{}_pi", l.tag),
            "payment_intent.succeeded",
            now,
            intent,
        ),
    ] {
        app.send_webhook(&e).await;
        app.send_webhook(&e).await;
    }
    app.drain_stripe().await;
    let adds = stripe.item_adds();
    assert_eq!(adds.len(), 1, "one item for one payment: {adds:?}");
    assert!(
        adds[0].contains(&format!("subscription={}", l.subscription))
            && adds[0].contains("quantity=3")
            && adds[0].contains(&format!("license_purchase_id={purchase_id}"))
            && adds[0].contains("proration=none"),
        "{}",
        adds[0]
    );
    let dashboard = app.dashboard(&token).await;
    assert_eq!(dashboard["pending_license_purchases"], json!([]));
    let paid: Vec<&Value> = dashboard["payments"]
        .as_array()
        .expect("payments")
        .iter()
        .filter(|p| p["kind"] == "purchase")
        .collect();
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0]["quantity"], json!(3));
    assert_eq!(paid[0]["amount"], json!(amount));
    assert_eq!(paid[0]["status"], "paid");

    // Stripe reports the new item: exactly the reserved keys activate, no seat keys are made.
    let mut updated = created;
    updated["id"] = json!(format!("evt_{}_with_seats", l.tag));
    updated["type"] = json!("customer.subscription.updated");
    updated["created"] = json!(now + 1);
    let mut seats = updated["data"]["object"]["items"]["data"][0].clone();
    let seats_item = format!("si_seats_{}", l.tag);
    seats["id"] = json!(seats_item);
    seats["quantity"] = json!(3);
    seats["metadata"] = json!({ "license_purchase_id": purchase_id, "purchase_type": "quantity" });
    updated["data"]["object"]["items"]["data"]
        .as_array_mut()
        .expect("items")
        .push(seats);
    app.send_webhook(&updated).await;
    app.drain_stripe().await;
    let after = purchase_keys(&app, &purchase_id).await;
    assert_eq!(
        after,
        keys.iter()
            .map(|k| (k.clone(), "active".to_owned(), Some(seats_item.clone())))
            .collect::<Vec<_>>()
    );
    let on_item: i64 = sqlx::query_scalar("SELECT count(*) FROM licenses WHERE item_id = $1")
        .bind(&seats_item)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(on_item, 3, "no seat keys besides the purchased ones");

    // An active key is activated on a domain and validates there.
    assert_eq!(
        app.validate_license(&keys[1], "app.example.com").await["code"],
        "NOT_ACTIVATED"
    );
    let resp = app
        .activate(&token, &keys[1], "https://App.Example.com/")
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        app.validate_license(&keys[1], "app.example.com").await["code"],
        "VALID"
    );
}

#[tokio::test]
async fn an_expired_purchase_cancels_its_keys() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let (l, token, _) = subscribed(&app, "exp").await;
    let purchase: Value = app.buy_keys(&token, 2).await.json().await.expect("json");
    let purchase_id = purchase["purchase_id"].as_str().expect("id").to_owned();
    let mut expired = paid_session(&stripe, 0, purchase["id"].as_str().expect("id"));
    expired["status"] = json!("expired");
    expired["payment_status"] = json!("unpaid");
    let e = event(
        &format!("evt_{}_expired", l.tag),
        "checkout.session.expired",
        chrono::Utc::now().timestamp(),
        expired,
    );
    app.send_webhook(&e).await;
    app.drain_stripe().await;
    let keys = purchase_keys(&app, &purchase_id).await;
    assert_eq!(keys.len(), 2);
    assert!(keys
        .iter()
        .all(|(_, status, item)| status == "canceled" && item.is_none()));
    let reason: Vec<Option<String>> =
        sqlx::query_scalar("SELECT deactivation_reason FROM licenses WHERE purchase_id = $1::uuid")
            .bind(&purchase_id)
            .fetch_all(&app.pool)
            .await
            .expect("reasons");
    assert!(reason
        .iter()
        .all(|r| r.as_deref() == Some("checkout_expired")));
    assert_eq!(
        app.validate_license(&keys[0].0, "a.example.com").await["code"],
        "INACTIVE"
    );
    let dashboard = app.dashboard(&token).await;
    assert_eq!(dashboard["pending_license_purchases"], json!([]));
    assert!(stripe.item_adds().is_empty(), "nothing was added at Stripe");
}

#[tokio::test]
async fn stripe_unreachable_leaves_the_keys_pending_and_a_retry_reuses_them() {
    let app = app_with_stripe_down().await;
    let (_, token, _) = subscribed(&app, "down").await;
    let problem = assert_problem(app.buy_keys(&token, 2).await, 502).await;
    assert_eq!(problem["type"], "/problems/stripe-unavailable");
    let first: Vec<(String, String)> = sqlx::query_as(
        "SELECT key, status FROM licenses WHERE purchase_id IS NOT NULL ORDER BY seat",
    )
    .fetch_all(&app.pool)
    .await
    .expect("licenses");
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|(_, s)| s == "pending"), "{first:?}");

    // The same quantity again: the same keys, nothing more.
    assert_problem(app.buy_keys(&token, 2).await, 502).await;
    let again: Vec<(String, String)> = sqlx::query_as(
        "SELECT key, status FROM licenses WHERE purchase_id IS NOT NULL ORDER BY seat",
    )
    .fetch_all(&app.pool)
    .await
    .expect("licenses");
    assert_eq!(again, first);

    // Another quantity: the stranded keys are given up, new ones pending.
    assert_problem(app.buy_keys(&token, 1).await, 502).await;
    let statuses: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT key, status, deactivation_reason FROM licenses WHERE purchase_id IS NOT NULL
         ORDER BY status, seat",
    )
    .fetch_all(&app.pool)
    .await
    .expect("licenses");
    let canceled: Vec<_> = statuses.iter().filter(|s| s.1 == "canceled").collect();
    let pending: Vec<_> = statuses.iter().filter(|s| s.1 == "pending").collect();
    assert_eq!(canceled.len(), 2);
    assert!(canceled
        .iter()
        .all(|s| s.2.as_deref() == Some("checkout_abandoned")));
    assert_eq!(pending.len(), 1);
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM licenses WHERE purchase_id IS NOT NULL AND status = 'active'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(active, 0, "no license without payment");
}

#[tokio::test]
async fn buying_keys_needs_a_subscription_a_session_and_valid_input() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let resp = app
        .client
        .post(app.url("/v1/me/license-purchases"))
        .json(&json!({ "quantity": 1, "success_url": "https://shop.test/ok", "cancel_url": "https://shop.test/no" }))
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 401).await;

    let member = app.member("nosub@example.com").await;
    let token = app.sign_in(member["email"].as_str().expect("email")).await;
    let problem = assert_problem(app.buy_keys(&token, 1).await, 409).await;
    assert_eq!(problem["type"], "/problems/no-subscription");

    let (_, token, _) = subscribed(&app, "bad").await;
    assert_problem(app.buy_keys(&token, 0).await, 422).await;
    assert_problem(app.buy_keys(&token, 101).await, 422).await;
    let resp = app
        .client
        .post(app.url("/v1/me/license-purchases"))
        .bearer_auth(&token)
        .json(&json!({ "quantity": 1, "success_url": "https://evil.test/", "cancel_url": "nope" }))
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(resp, 422).await;
    let mut fields = crate::helpers::problem_fields(&problem);
    fields.sort();
    assert_eq!(fields, ["cancel_url", "success_url"]);
    assert!(stripe.checkouts.lock().expect("lock").is_empty());
    let reserved: i64 = sqlx::query_scalar("SELECT count(*) FROM licenses")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(
        reserved, 1,
        "only the site license; no keys reserved for refused requests"
    );
}

#[tokio::test]
async fn stripe_failing_to_add_the_item_is_retried_with_the_same_key_until_it_is_added() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let (l, token, _) = subscribed(&app, "retry").await;
    let purchase: Value = app.buy_keys(&token, 2).await.json().await.expect("json");
    let purchase_id = purchase["purchase_id"].as_str().expect("id").to_owned();
    // More failures than one processing attempt retries: the inbox retries the event later.
    stripe
        .fail_next
        .store(4, std::sync::atomic::Ordering::SeqCst);
    let session = paid_session(&stripe, 0, purchase["id"].as_str().expect("id"));
    let paid = event(
        &format!("evt_{}_paid", l.tag),
        "checkout.session.completed",
        chrono::Utc::now().timestamp(),
        session,
    );
    app.send_webhook(&paid).await;
    app.drain_stripe().await;
    let adds = stripe.item_adds();
    assert_eq!(adds.len(), 5, "four failures, then the item: {adds:?}");
    assert!(adds.iter().all(|r| *r == adds[0]), "{adds:?}");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM stripe_events WHERE id = $1")
        .bind(format!("evt_{}_paid", l.tag))
        .fetch_one(&app.pool)
        .await
        .expect("event");
    assert!(attempts >= 2, "processed again after a failure: {attempts}");
    let status: String =
        sqlx::query_scalar("SELECT status FROM license_purchases WHERE purchase_id = $1::uuid")
            .bind(&purchase_id)
            .fetch_one(&app.pool)
            .await
            .expect("purchase");
    assert_eq!(status, "paid");
    // Until Stripe reports the item, the keys stay pending: no license without its item.
    let keys = purchase_keys(&app, &purchase_id).await;
    assert!(keys.iter().all(|(_, s, _)| s == "pending"), "{keys:?}");
}

/// What [`rich_member`] bought.
struct Rich {
    l: Lifecycle,
    token: String,
    /// The paid purchase of two keys, then the unpaid one of one key.
    purchases: [Value; 2],
    /// The unpaid purchase of a site.
    site_purchase: Value,
}

/// A member with every part of a dashboard: a site subscription paid by an invoice, two keys
/// bought and paid (an item of seats), one key and one site bought and not paid yet.
async fn rich_member(app: &TestApp, stripe: &FakeStripe) -> Rich {
    let (l, token, created) = subscribed(app, "rich").await;
    app.send_webhook(&l.invoice_paid(&format!("in_{}_1", l.tag), 2))
        .await;
    let paid: Value = app.buy_keys(&token, 2).await.json().await.expect("json");
    pay_keys(app, stripe, &l, created, 0, &paid, 2).await;
    let unpaid: Value = app.buy_keys(&token, 1).await.json().await.expect("json");
    let resp = app
        .client
        .post(app.url("/v1/me/sites"))
        .bearer_auth(&token)
        .json(&json!({
            "sites": ["https://New.Example.com/"],
            "success_url": "https://shop.test/ok",
            "cancel_url": "https://shop.test/no"
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201);
    let site_purchase: Value = resp.json().await.expect("json");
    app.settle().await;
    Rich {
        l,
        token,
        purchases: [paid, unpaid],
        site_purchase,
    }
}

/// `value`, asserted to be a timestamp as the API writes one (`DateTime<Utc>::to_rfc3339`).
fn stamp(value: &Value) -> Value {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a timestamp: {value}"));
    let parsed: chrono::DateTime<chrono::Utc> = text.parse().expect("RFC 3339");
    assert_eq!(parsed.to_rfc3339(), text, "written as poem writes it");
    value.clone()
}

/// The Unix time `secs` as the API writes it.
fn at(secs: i64) -> Value {
    json!(chrono::DateTime::from_timestamp(secs, 0)
        .expect("a time")
        .to_rfc3339())
}

#[tokio::test]
async fn a_dashboard_answers_every_section_in_order_and_alike_for_member_and_admin() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let Rich {
        l,
        token,
        purchases: [paid, unpaid],
        site_purchase,
    } = rich_member(&app, &stripe).await;
    let mine = app.get_as(&token, "/v1/me/dashboard").await;
    assert_eq!(mine.status(), 200);
    let text = mine.text().await.expect("body");
    let d: Value = serde_json::from_str(&text).expect("json");
    let member_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM member_list WHERE email = $1")
        .bind(&l.email)
        .fetch_one(&app.pool)
        .await
        .expect("member");
    // The same bytes for the admin.
    let admin = app
        .get(&format!("/v1/members/{member_id}/dashboard"))
        .await
        .text()
        .await
        .expect("body");
    assert_eq!(admin, text);

    // Keys, newest first, as `/v1/me/licenses` lists them: the unpaid purchase's, the paid
    // purchase's (seat 2, then 1: issued in that order), the site's.
    let keys = app.my_licenses(&token).await;
    assert_eq!(d["licenses"], json!(keys));
    let shape: Vec<(Value, Value, Value, Value)> = keys
        .iter()
        .map(|k| {
            stamp(&k["created_at"]);
            (
                k["status"].clone(),
                k["purchase_type"].clone(),
                k["seat"].clone(),
                k["purchase_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (
                json!("pending"),
                json!("quantity"),
                json!(1),
                unpaid["purchase_id"].clone()
            ),
            (
                json!("active"),
                json!("quantity"),
                json!(2),
                paid["purchase_id"].clone()
            ),
            (
                json!("active"),
                json!("quantity"),
                json!(1),
                paid["purchase_id"].clone()
            ),
            (json!("active"), json!("site"), json!(null), json!(null)),
        ]
    );
    let item = |id: &str, quantity: i64, site: Value, purchase_type: &str| {
        json!({
            "id": id, "price_id": "price_1PgafmB7WZ01zgkW6dKueIc5", "unit_amount": 2000,
            "currency": "usd", "interval": "month", "interval_count": 1, "quantity": quantity,
            "site": site, "purchase_type": purchase_type, "status": "active",
            "tier_id": null, "tier_name": null, "cadence": null,
        })
    };
    let period = &d["subscriptions"][0];
    let expected = json!({
        "member_id": member_id,
        "email": l.email,
        "name": l.customer_name,
        "status": "paid",
        "customer_ids": [l.customer],
        "subscriptions": [{
            "id": l.subscription,
            "status": "active",
            "current_period_start": stamp(&period["current_period_start"]),
            "current_period_end": stamp(&period["current_period_end"]),
            "cancel_at_period_end": false,
            "created_at": at(l.start),
            "mrr": 6000,
            "currency": "usd",
            "site_count": 1,
            "items": [
                item(&l.item, 1, json!(l.site), "site"),
                item(&format!("si_seats_{}", l.tag), 2, json!(null), "quantity"),
            ],
        }],
        "sites": [{
            "domain": l.site, "subscription_id": l.subscription, "item_id": l.item,
            "price_id": "price_1PgafmB7WZ01zgkW6dKueIc5", "unit_amount": 2000,
            "currency": "usd", "quantity": 1, "status": "active",
        }],
        "pending_sites": [{
            "domain": "new.example.com",
            "subscription_id": l.subscription,
            "session_id": site_purchase["id"],
            "amount": site_purchase["amount"],
            "currency": "usd",
            "created_at": stamp(&d["pending_sites"][0]["created_at"]),
        }],
        "pending_license_purchases": [{
            "purchase_id": unpaid["purchase_id"],
            "subscription_id": l.subscription,
            "session_id": unpaid["id"],
            "quantity": 1,
            "amount": unpaid["amount"],
            "currency": "usd",
            "created_at": stamp(&d["pending_license_purchases"][0]["created_at"]),
        }],
        "payments": [
            {
                "kind": "purchase", "status": "paid", "amount": paid["amount"],
                "currency": "usd", "invoice_id": null, "subscription_id": l.subscription,
                "site": null, "quantity": 2,
                "created_at": stamp(&d["payments"][0]["created_at"]),
            },
            {
                "kind": "payment", "status": "paid", "amount": 2000, "currency": "usd",
                "invoice_id": format!("in_{}_1", l.tag), "subscription_id": l.subscription,
                "site": null, "quantity": null, "created_at": at(l.start + 2),
            },
        ],
        "licenses": keys,
    });
    assert_eq!(d, expected);
    // Byte for byte: the server writes its JSON as `serde_json` writes a `Value`.
    assert_eq!(text, serde_json::to_string(&expected).expect("json"));
}
