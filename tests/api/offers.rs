//! Offers (#16): created with their Stripe coupon (once, through a lost answer), refused when
//! their terms or code are wrong, applied at checkout by tier and cadence, redeemed once by the
//! subscription started with them, whose MRR is discounted while the discount lasts.

use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::{json, Value};

use crate::checkout::app_with_stripe;
use crate::helpers::{assert_problem, TestApp};
use crate::stripe_support::{event, FakeStripe, Lifecycle};

async fn tier(app: &TestApp, name: &str) -> String {
    let resp = app
        .admin(
            Method::POST,
            "/v1/tiers",
            Some(json!({"name": name, "currency": "usd", "monthly_price": 500, "yearly_price": 5000})),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let tier: Value = resp.json().await.expect("json");
    tier["id"].as_str().expect("id").to_owned()
}

fn coupons(stripe: &FakeStripe) -> Vec<Value> {
    stripe
        .catalog
        .lock()
        .expect("lock")
        .values()
        .filter(|o| o["object"] == "coupon")
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_offer_gets_one_coupon_and_is_applied_at_checkout_by_its_tier_and_cadence() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let gold = tier(&app, "Gold").await;
    let silver = tier(&app, "Silver").await;
    let product: String =
        sqlx::query_scalar("SELECT stripe_product_id FROM tiers WHERE id = $1::uuid")
            .bind(&gold)
            .fetch_one(&app.pool)
            .await
            .expect("product");

    stripe.lose_next.store(1, Ordering::SeqCst);
    let launch = json!({
        "name": "Launch", "code": "launch", "tier_id": gold, "cadence": "month",
        "discount_type": "percent", "discount_amount": 20,
        "duration": "repeating", "duration_months": 3, "redemption_limit": 100
    });
    let resp = app
        .admin(Method::POST, "/v1/offers", Some(launch.clone()))
        .await;
    assert_eq!(resp.status(), 201);
    let offer: Value = resp.json().await.expect("json");
    assert_eq!(offer["code"], "launch");
    assert_eq!(offer["discount_type"], "percent");
    assert_eq!(offer["discount_amount"], 20);
    assert_eq!(offer["duration_months"], 3);
    assert_eq!(offer["active"], true);
    let made = coupons(&stripe);
    assert_eq!(
        made.len(),
        1,
        "one coupon through the lost answer: {made:?}"
    );
    assert_eq!(offer["stripe_coupon_id"], made[0]["id"]);
    let terms = &made[0]["form"];
    assert_eq!(terms["percent_off"], "20");
    assert_eq!(terms["duration"], "repeating");
    assert_eq!(terms["duration_in_months"], "3");
    assert_eq!(terms["max_redemptions"], "100");
    assert_eq!(terms["applies_to[products][0]"], product.as_str());

    // The same code again, wrong terms: refused, and no coupon made for them.
    assert_problem(
        app.admin(Method::POST, "/v1/offers", Some(launch.clone()))
            .await,
        409,
    )
    .await;
    for (change, field) in [
        (json!({"code": "yearly", "cadence": "year"}), "duration"),
        (
            json!({"code": "pct", "discount_amount": 120}),
            "discount_amount",
        ),
        (
            json!({"code": "nomonths", "duration_months": null}),
            "duration_months",
        ),
        (
            json!({"code": "notier", "tier_id": uuid::Uuid::now_v7()}),
            "tier_id",
        ),
    ] {
        let mut body = launch.clone();
        body.as_object_mut()
            .expect("object")
            .extend(change.as_object().expect("object").clone());
        let problem =
            assert_problem(app.admin(Method::POST, "/v1/offers", Some(body)).await, 422).await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    assert_eq!(coupons(&stripe).len(), 1);

    // Applied at checkout for its tier and cadence; refused for another.
    let offer_id = offer["id"].as_str().expect("id").to_owned();
    let checkout = |tier: &str, cadence: &str| {
        json!({
            "email": "offer@example.com", "tier_id": tier, "cadence": cadence,
            "offer_id": offer_id,
            "success_url": "https://shop.test/thanks", "cancel_url": "https://shop.test/pricing"
        })
    };
    let resp = app.checkout(&checkout(&gold, "month")).await;
    assert_eq!(resp.status(), 201);
    let sent = stripe.checkouts.lock().expect("lock").clone();
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(sent[0].1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        form["discounts[0][coupon]"],
        made[0]["id"].as_str().expect("id")
    );
    assert_eq!(form["subscription_data[metadata][offer_id]"], offer_id);
    for (tier, cadence) in [(silver.as_str(), "month"), (gold.as_str(), "year")] {
        let problem = assert_problem(app.checkout(&checkout(tier, cadence)).await, 422).await;
        assert_eq!(problem["errors"][0]["field"], "offer_id", "{problem}");
    }

    // Archived: listed as inactive, no longer applied.
    let resp = app
        .admin(
            Method::POST,
            &format!("/v1/offers/{offer_id}/archive"),
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let list: Value = app.get("/v1/offers").await.json().await.expect("json");
    assert_eq!(list["items"][0]["active"], false);
    let problem = assert_problem(app.checkout(&checkout(&gold, "month")).await, 422).await;
    assert_eq!(problem["errors"][0]["field"], "offer_id", "{problem}");
}

/// The subscription a checkout with `offer` starts, as Stripe shows it at `offset`: its metadata
/// names the offer; `discount` is the legacy single discount (`null` once ended), `discounts`
/// the list as Stripe sends it unexpanded (ids).
fn offer_subscription(
    l: &Lifecycle,
    offset: i64,
    offer: &str,
    discount: Value,
    discounts: Value,
) -> Value {
    let mut sub = l.subscription_object("active", offset, false);
    sub["metadata"] = json!({"offer_id": offer, "cadence": "month"});
    sub["start_date"] = json!(l.start);
    sub["discount"] = discount;
    sub["discounts"] = discounts;
    sub
}

async fn paid_rows(app: &TestApp, subscription: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT type, mrr_delta FROM members_paid_subscription_events
         WHERE subscription_id = $1 ORDER BY id",
    )
    .bind(subscription)
    .fetch_all(&app.pool)
    .await
    .expect("rows")
}

#[tokio::test]
async fn a_subscription_started_with_an_offer_records_the_redemption_and_the_discounted_mrr_and_the_full_mrr_when_the_discount_ends(
) {
    let l = Lifecycle::new(&format!("offer{}", uuid::Uuid::now_v7().simple()));
    let price = l.subscription_object("active", 0, false)["items"]["data"][0]["price"]["id"]
        .as_str()
        .expect("the fixture's price")
        .to_owned();
    let stripe = FakeStripe::start(&[(l.customer.as_str(), l.email.as_str())]).await;
    let app = app_with_stripe(&stripe).await;
    let tier = app.linked_tier("Gold", &price, "price_gold_year").await;
    let resp = app
        .admin(
            Method::POST,
            "/v1/offers",
            Some(json!({
                "name": "Launch", "code": "launch", "tier_id": tier["id"], "cadence": "month",
                "discount_type": "percent", "discount_amount": 20,
                "duration": "repeating", "duration_months": 3, "redemption_limit": 1
            })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let offer: Value = resp.json().await.expect("json");
    assert_eq!(offer["redemption_count"], 0);
    let offer_id = offer["id"].as_str().expect("id").to_owned();
    let coupon = offer["stripe_coupon_id"]
        .as_str()
        .expect("coupon")
        .to_owned();
    let checkout = |email: &str| {
        json!({
            "email": email, "tier_id": tier["id"], "cadence": "month", "offer_id": offer_id,
            "success_url": "https://shop.test/thanks", "cancel_url": "https://shop.test/pricing"
        })
    };
    assert_eq!(app.checkout(&checkout(&l.email)).await.status(), 201);

    // Stripe's discount: 20 % off for three months from the start.
    let end = chrono::DateTime::from_timestamp(l.start, 0)
        .and_then(|start| start.checked_add_months(chrono::Months::new(3)))
        .expect("a time")
        .timestamp();
    let expanded = json!({
        "id": "di_launch", "object": "discount", "start": l.start, "end": end,
        "subscription": l.subscription, "customer": l.customer,
        "coupon": {"id": coupon, "object": "coupon", "percent_off": 20, "amount_off": null,
                   "currency": null, "duration": "repeating", "duration_in_months": 3,
                   "metadata": {"memberledger_offer_id": offer_id}}
    });
    let sub = |offset: i64, discount: Value, discounts: Value| {
        offer_subscription(&l, offset, &offer_id, discount, discounts)
    };
    let created = event(
        &format!("evt_{}_created", l.tag),
        "customer.subscription.created",
        l.start + 2,
        sub(2, expanded.clone(), json!(["di_launch"])),
    );
    // A later update showing the discount only by id (its terms come from the offer),
    // delivered before the creation; each delivered twice.
    let updated = event(
        &format!("evt_{}_updated", l.tag),
        "customer.subscription.updated",
        l.start + 3,
        sub(3, Value::Null, json!(["di_launch"])),
    );
    for e in [
        &l.checkout_completed(1),
        &updated,
        &updated,
        &created,
        &created,
    ] {
        assert_eq!(app.send_webhook(e).await.status(), 200);
    }
    app.drain_stripe().await;

    let redemptions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'OfferRedeemed'",
    )
    .bind(&l.subscription)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(redemptions, 1, "redeemed once, whatever the delivery");
    let offer: Value = app
        .get(&format!("/v1/offers/{offer_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(offer["redemption_count"], 1, "{offer}");
    // 2000 a month, 20 % off.
    assert_eq!(
        paid_rows(&app, &l.subscription).await,
        [("created".to_owned(), 1600)]
    );
    let mrr: i64 = sqlx::query_scalar("SELECT mrr FROM subscriptions WHERE id = $1")
        .bind(&l.subscription)
        .fetch_one(&app.pool)
        .await
        .expect("mrr");
    assert_eq!(mrr, 1600);

    // A later state still with the discount (expanded) changes nothing; the limit of one is
    // reached: another buyer is refused.
    let still = event(
        &format!("evt_{}_still", l.tag),
        "customer.subscription.updated",
        l.start + 86_400,
        sub(86_400, expanded, json!(["di_launch"])),
    );
    assert_eq!(app.send_webhook(&still).await.status(), 200);
    app.drain_stripe().await;
    assert_eq!(paid_rows(&app, &l.subscription).await.len(), 1);
    let problem = assert_problem(app.checkout(&checkout("second@example.com")).await, 409).await;
    assert_eq!(problem["errors"][0]["field"], "offer_id", "{problem}");

    // Three months on, Stripe's renewal drops the discount: full price from then on.
    let ended = event(
        &format!("evt_{}_ended", l.tag),
        "customer.subscription.updated",
        end + 60,
        sub(end + 60 - l.start, Value::Null, json!([])),
    );
    assert_eq!(app.send_webhook(&ended).await.status(), 200);
    app.drain_stripe().await;
    assert_eq!(
        paid_rows(&app, &l.subscription).await,
        [("created".to_owned(), 1600), ("updated".to_owned(), 400)]
    );
    let mrr: i64 = sqlx::query_scalar("SELECT mrr FROM subscriptions WHERE id = $1")
        .bind(&l.subscription)
        .fetch_one(&app.pool)
        .await
        .expect("mrr");
    assert_eq!(mrr, 2000);
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_id = $1
           AND event_type IN ('SubscriptionDiscountChanged', 'OfferRedeemed')
         ORDER BY global_position",
    )
    .bind(&l.subscription)
    .fetch_all(&app.pool)
    .await
    .expect("types");
    assert_eq!(
        types,
        [
            "SubscriptionDiscountChanged",
            "OfferRedeemed",
            "SubscriptionDiscountChanged"
        ]
    );
}
