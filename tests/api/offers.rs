//! Offers (#16): created with their Stripe coupon (once, through a lost answer), refused when
//! their terms or code are wrong, and applied at checkout by tier and cadence.

use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::{json, Value};

use crate::checkout::app_with_stripe;
use crate::helpers::{assert_problem, TestApp};
use crate::stripe_support::FakeStripe;

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
