//! Offers (#16): created with their Stripe coupon and promotion code (once each, through
//! failures and lost answers), refused when their terms or code are wrong, applied at checkout
//! by tier and cadence or typed as a code at Stripe, redeemed once by the subscription started
//! with them, whose MRR is discounted while the discount lasts; archived, their code is
//! deactivated.

use std::collections::HashMap;
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

fn promotion_codes(stripe: &FakeStripe) -> Vec<Value> {
    stripe
        .catalog
        .lock()
        .expect("lock")
        .values()
        .filter(|o| o["object"] == "promotion_code")
        .cloned()
        .collect()
}

/// The form of the `n`th checkout session the fake was asked for.
fn checkout_form(stripe: &FakeStripe, n: usize) -> HashMap<String, String> {
    let sent = stripe.checkouts.lock().expect("lock").clone();
    url::form_urlencoded::parse(sent[n].1.as_bytes())
        .into_owned()
        .collect()
}

async fn offer_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Offer'")
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn an_offer_gets_one_promotion_code_with_its_code_and_limit_through_failures_and_lost_answers(
) {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let gold = tier(&app, "Gold").await;
    let launch = json!({
        "name": "Launch", "code": "launch", "tier_id": gold, "cadence": "month",
        "discount_type": "amount", "discount_amount": 100, "duration": "once",
        "redemption_limit": 50
    });

    // Stripe keeps failing the promotion code: 502, nothing recorded, no code at Stripe.
    stripe
        .fail_next_of
        .lock()
        .expect("lock")
        .insert("promotion_code".into(), 3);
    let problem = assert_problem(
        app.admin(Method::POST, "/v1/offers", Some(launch.clone()))
            .await,
        502,
    )
    .await;
    assert_eq!(
        problem["type"]
            .as_str()
            .map(|t| t.ends_with("stripe-unavailable")),
        Some(true),
        "{problem}"
    );
    assert_eq!(offer_count(&app).await, 0);
    assert!(promotion_codes(&stripe).is_empty());

    // Asked again: a 500, then an answer lost on the way back; our retries (one idempotency
    // key) make one promotion code.
    stripe
        .fail_next_of
        .lock()
        .expect("lock")
        .insert("promotion_code".into(), 1);
    stripe
        .lose_next_of
        .lock()
        .expect("lock")
        .insert("promotion_code".into(), 1);
    let resp = app
        .admin(Method::POST, "/v1/offers", Some(launch.clone()))
        .await;
    assert_eq!(resp.status(), 201);
    let offer: Value = resp.json().await.expect("json");
    let offer_id = offer["id"].as_str().expect("id").to_owned();
    let codes = promotion_codes(&stripe);
    assert_eq!(codes.len(), 1, "one promotion code: {codes:?}");
    let code = &codes[0];
    assert_eq!(offer["stripe_promotion_code_id"], code["id"]);
    assert_eq!(code["code"], "launch");
    assert_eq!(code["form"]["promotion[type]"], "coupon");
    assert_eq!(code["form"]["promotion[coupon]"], offer["stripe_coupon_id"]);
    assert_eq!(code["form"]["max_redemptions"], "50");
    assert_eq!(
        code["form"]["metadata[memberledger_offer_id]"],
        offer_id.as_str()
    );
    let asked: Vec<String> = stripe
        .requested()
        .into_iter()
        .filter(|r| r.starts_with("POST /v1/promotion_codes "))
        .collect();
    let key = format!("key=offer-{offer_id}-promotion-code ");
    assert_eq!(
        asked.iter().filter(|r| r.contains(&key)).count(),
        3,
        "three attempts with one key: {asked:?}"
    );
    // The failed request's coupon stays at Stripe unused; this offer has its own.
    assert_eq!(coupons(&stripe).len(), 2);
    assert_eq!(offer_count(&app).await, 1);
    let got: Value = app
        .get(&format!("/v1/offers/{offer_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(got["stripe_promotion_code_id"], code["id"]);

    // No limit: the promotion code has none either.
    let mut open = launch.clone();
    open["code"] = json!("open");
    open["redemption_limit"] = Value::Null;
    let resp = app.admin(Method::POST, "/v1/offers", Some(open)).await;
    assert_eq!(resp.status(), 201);
    let open: Value = resp.json().await.expect("json");
    let code = promotion_codes(&stripe)
        .into_iter()
        .find(|c| c["id"] == open["stripe_promotion_code_id"])
        .expect("the second code");
    assert_eq!(code["code"], "open");
    assert!(code["form"].get("max_redemptions").is_none(), "{code}");
}

#[tokio::test]
async fn archiving_an_offer_deactivates_its_promotion_code_once_and_not_when_stripe_fails() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let gold = tier(&app, "Gold").await;
    let resp = app
        .admin(
            Method::POST,
            "/v1/offers",
            Some(json!({
                "name": "Launch", "code": "launch", "tier_id": gold, "cadence": "year",
                "discount_type": "percent", "discount_amount": 10, "duration": "forever"
            })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let offer: Value = resp.json().await.expect("json");
    let offer_id = offer["id"].as_str().expect("id").to_owned();
    let promo = offer["stripe_promotion_code_id"]
        .as_str()
        .expect("a promotion code")
        .to_owned();
    let archive = format!("/v1/offers/{offer_id}/archive");
    let deactivations = || {
        stripe
            .requested()
            .into_iter()
            .filter(|r| r.starts_with(&format!("POST /v1/promotion_codes/{promo} ")))
            .collect::<Vec<_>>()
    };

    // Stripe down: 502, the offer stays active and its code with it.
    stripe.fail_next.store(3, Ordering::SeqCst);
    let problem = assert_problem(app.admin(Method::POST, &archive, None).await, 502).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not archived")),
        "{problem}"
    );
    let got: Value = app
        .get(&format!("/v1/offers/{offer_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(got["active"], true);
    assert_eq!(deactivations().len(), 3);

    let resp = app.admin(Method::POST, &archive, None).await;
    assert_eq!(resp.status(), 200);
    let archived: Value = resp.json().await.expect("json");
    assert_eq!(archived["active"], false);
    let code = promotion_codes(&stripe)
        .into_iter()
        .find(|c| c["id"] == promo.as_str())
        .expect("the code");
    assert_eq!(code["active"], false);
    let asked = deactivations();
    assert_eq!(asked.len(), 4);
    assert!(
        asked.iter().all(|r| r.ends_with(&format!(
            "key=offer-{offer_id}-promotion-code-deactivate active=false"
        ))),
        "{asked:?}"
    );

    // Archived already: nothing asked of Stripe.
    assert_eq!(app.admin(Method::POST, &archive, None).await.status(), 200);
    assert_eq!(deactivations().len(), 4);
    let problem = assert_problem(
        app.admin(
            Method::POST,
            &format!("/v1/offers/{}/archive", uuid::Uuid::now_v7()),
            None,
        )
        .await,
        404,
    )
    .await;
    assert_eq!(problem["status"], 404);
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
    let form = checkout_form(&stripe, 0);
    assert_eq!(
        form["discounts[0][coupon]"],
        made[0]["id"].as_str().expect("id")
    );
    assert_eq!(form["subscription_data[metadata][offer_id]"], offer_id);
    // Stripe refuses `allow_promotion_codes` with `discounts`.
    assert!(!form.contains_key("allow_promotion_codes"), "{form:?}");

    // Without an offer the buyer may type a code at Stripe, and no discount is sent.
    let mut plain = checkout(&gold, "month");
    plain.as_object_mut().expect("object").remove("offer_id");
    plain["email"] = json!("plain@example.com");
    assert_eq!(app.checkout(&plain).await.status(), 201);
    let form = checkout_form(&stripe, 1);
    assert_eq!(form["allow_promotion_codes"], "true", "{form:?}");
    assert!(!form.keys().any(|k| k.starts_with("discounts")), "{form:?}");
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

#[tokio::test]
async fn a_subscription_started_with_a_typed_promotion_code_redeems_the_offer_whose_coupon_it_carries(
) {
    let l = Lifecycle::new(&format!("promo{}", uuid::Uuid::now_v7().simple()));
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
                "discount_type": "percent", "discount_amount": 20, "duration": "forever"
            })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let offer: Value = resp.json().await.expect("json");
    let offer_id = offer["id"].as_str().expect("id").to_owned();
    let coupon = offer["stripe_coupon_id"]
        .as_str()
        .expect("coupon")
        .to_owned();
    let promo = offer["stripe_promotion_code_id"]
        .as_str()
        .expect("promotion code")
        .to_owned();

    // A checkout without an offer: the buyer types `launch` at Stripe.
    let resp = app
        .checkout(&json!({
            "email": l.email, "tier_id": tier["id"], "cadence": "month",
            "success_url": "https://shop.test/thanks", "cancel_url": "https://shop.test/pricing"
        }))
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(checkout_form(&stripe, 0)["allow_promotion_codes"], "true");

    // The subscription names no offer; its discount carries the offer's coupon (by id, as
    // `source.coupon`) and the promotion code typed.
    let mut sub = l.subscription_object("active", 2, false);
    sub["metadata"] = json!({"cadence": "month"});
    sub["start_date"] = json!(l.start);
    sub["discount"] = Value::Null;
    sub["discounts"] = json!([{
        "id": "di_typed", "object": "discount", "start": l.start, "end": null,
        "subscription": l.subscription, "customer": l.customer,
        "promotion_code": promo, "coupon": null,
        "source": {"type": "coupon", "coupon": coupon}
    }]);
    let created = event(
        &format!("evt_{}_created", l.tag),
        "customer.subscription.created",
        l.start + 2,
        sub,
    );
    for e in [&l.checkout_completed(1), &created, &created] {
        assert_eq!(app.send_webhook(e).await.status(), 200);
    }
    app.drain_stripe().await;

    let redeemed: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT (payload->'OfferRedeemed'->>'offer_id')::uuid FROM events
         WHERE aggregate_id = $1 AND event_type = 'OfferRedeemed'",
    )
    .bind(&l.subscription)
    .fetch_all(&app.pool)
    .await
    .expect("redemptions");
    assert_eq!(
        redeemed,
        [offer_id.parse::<uuid::Uuid>().expect("uuid")],
        "redeemed once, by the coupon"
    );
    let got: Value = app
        .get(&format!("/v1/offers/{offer_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(got["redemption_count"], 1, "{got}");
    // 2000 a month, 20 % off, forever.
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
}
