//! Tiers (#16): created with their Stripe product and prices (once, through lost answers and
//! 500s), or linked to existing prices; listed publicly; updated, archived and repriced.

use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::{json, Value};

use crate::checkout::{app_with_stripe, app_with_stripe_down};
use crate::helpers::{assert_problem, TestApp};
use crate::stripe_support::{FakeStripe, Lifecycle};

fn gold() -> Value {
    json!({
        "name": "Gold",
        "description": "Everything we publish",
        "benefits": ["Every article", "The archive"],
        "currency": "EUR",
        "monthly_price": 500,
        "yearly_price": 5000
    })
}

pub(crate) fn created(stripe: &FakeStripe, kind: &str) -> Vec<Value> {
    let catalog = stripe.catalog.lock().expect("lock");
    let mut objects: Vec<Value> = catalog
        .values()
        .filter(|o| o["object"] == kind)
        .cloned()
        .collect();
    objects.sort_by_key(|o| o["id"].as_str().unwrap_or_default().to_owned());
    objects
}

impl TestApp {
    /// A tier linked to existing prices (no product or price is created); answers the tier.
    pub(crate) async fn linked_tier(&self, name: &str, monthly: &str, yearly: &str) -> Value {
        let resp = self
            .admin(
                Method::POST,
                "/v1/tiers",
                Some(json!({"name": name, "stripe_monthly_price_id": monthly,
                            "stripe_yearly_price_id": yearly})),
            )
            .await;
        assert_eq!(resp.status(), 201);
        resp.json().await.expect("json")
    }
}

/// A Stripe customer's lifecycle, the price its subscription's item has (Stripe's example
/// price), and a server on a fake Stripe that knows the customer.
async fn customer_with_stripe(tag: &str) -> (Lifecycle, String, FakeStripe, TestApp) {
    let l = Lifecycle::new(&format!("{tag}{}", uuid::Uuid::now_v7().simple()));
    let sub = l.subscription_object("active", 0, false);
    let price = sub["items"]["data"][0]["price"]["id"]
        .as_str()
        .expect("the fixture's price")
        .to_owned();
    let stripe = FakeStripe::start(&[(l.customer.as_str(), l.email.as_str())]).await;
    let app = app_with_stripe(&stripe).await;
    (l, price, stripe, app)
}

#[tokio::test]
async fn a_tier_gets_one_product_and_two_prices_through_a_lost_answer_and_a_500() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    // The product is made but its answer lost; the next call fails before anything is made.
    stripe.lose_next.store(1, Ordering::SeqCst);
    let resp = app.admin(Method::POST, "/v1/tiers", Some(gold())).await;
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let tier: Value = resp.json().await.expect("json");
    assert_eq!(
        location,
        format!("/v1/tiers/{}", tier["id"].as_str().expect("id"))
    );
    assert_eq!(tier["name"], "Gold");
    assert_eq!(tier["currency"], "eur");
    assert_eq!(tier["benefits"], json!(["Every article", "The archive"]));
    assert_eq!(
        (tier["monthly_price"].clone(), tier["yearly_price"].clone()),
        (500.into(), 5000.into())
    );
    assert_eq!(tier["visibility"], "public");
    assert_eq!(tier["active"], true);

    let products = created(&stripe, "product");
    assert_eq!(products.len(), 1, "one product: {products:?}");
    assert_eq!(tier["stripe_product_id"], products[0]["id"]);
    let prices = created(&stripe, "price");
    assert_eq!(prices.len(), 2, "two prices: {prices:?}");
    for (field, interval, amount) in [
        ("stripe_monthly_price_id", "month", 500),
        ("stripe_yearly_price_id", "year", 5000),
    ] {
        let price = prices
            .iter()
            .find(|p| p["id"] == tier[field])
            .unwrap_or_else(|| panic!("{field} is a created price"));
        assert_eq!(price["recurring"]["interval"], interval);
        assert_eq!(price["unit_amount"], amount);
        assert_eq!(price["currency"], "eur");
        assert_eq!(price["product"], products[0]["id"]);
    }
    let product_calls = stripe
        .requested()
        .iter()
        .filter(|r| r.starts_with("POST /v1/products"))
        .count();
    assert_eq!(product_calls, 2, "the lost answer was retried with its key");

    // A 500 on the first price: retried, still two prices per tier.
    stripe.fail_next.store(1, Ordering::SeqCst);
    let resp = app
        .admin(
            Method::POST,
            "/v1/tiers",
            Some(json!({"name": "Silver", "currency": "eur", "monthly_price": 300, "yearly_price": 3000, "visibility": "none"})),
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(created(&stripe, "product").len(), 2);
    assert_eq!(created(&stripe, "price").len(), 4);

    // The public list has Gold only (Silver is hidden); an admin sees both.
    let public: Value = app
        .client
        .get(app.url("/v1/tiers"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = public["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["Gold"]);
    let all: Value = app.get("/v1/tiers").await.json().await.expect("json");
    assert_eq!(all["items"].as_array().expect("items").len(), 2);
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Tier'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(events, 2, "one TierCreated each");
}

#[tokio::test]
async fn a_tier_links_existing_prices_and_is_updated_archived_and_repriced() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let tier = app
        .linked_tier("Linked", "price_linked_month", "price_linked_year")
        .await;
    assert_eq!(tier["stripe_product_id"], "prod_fake");
    assert_eq!(
        (tier["monthly_price"].clone(), tier["yearly_price"].clone()),
        (2000.into(), 20000.into())
    );
    assert!(created(&stripe, "product").is_empty(), "nothing created");
    let id = tier["id"].as_str().expect("id").to_owned();

    // Two monthly prices, or nothing to price with: refused, naming the field.
    let problem = assert_problem(
        app.admin(
            Method::POST,
            "/v1/tiers",
            Some(json!({"name": "Bad", "stripe_monthly_price_id": "price_a", "stripe_yearly_price_id": "price_b"})),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(
        problem["errors"][0]["field"], "stripe_yearly_price_id",
        "{problem}"
    );
    let problem = assert_problem(
        app.admin(Method::POST, "/v1/tiers", Some(json!({"name": "None"})))
            .await,
        422,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "monthly_price", "{problem}");
    let problem = assert_problem(
        app.admin(
            Method::POST,
            "/v1/tiers",
            Some(json!({"name": " ", "currency": "usd", "monthly_price": 1, "yearly_price": 10})),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "name", "{problem}");

    // Update: the profile changes, once.
    let path = format!("/v1/tiers/{id}");
    let resp = app
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"name": "Linked Plus", "benefits": ["More"]})),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let updated: Value = resp.json().await.expect("json");
    assert_eq!(updated["name"], "Linked Plus");
    assert_eq!(updated["benefits"], json!(["More"]));
    let again = app
        .admin(Method::PATCH, &path, Some(json!({"name": "Linked Plus"})))
        .await;
    assert_eq!(again.status(), 200);

    // Repriced: new prices of the same product.
    let resp = app
        .admin(
            Method::PUT,
            &format!("{path}/prices"),
            Some(json!({"monthly_price": 2500, "yearly_price": 25000})),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let repriced: Value = resp.json().await.expect("json");
    assert_eq!(repriced["monthly_price"], 2500);
    assert_ne!(
        repriced["stripe_monthly_price_id"],
        tier["stripe_monthly_price_id"]
    );
    let prices = created(&stripe, "price");
    assert_eq!(prices.len(), 2);
    assert!(prices
        .iter()
        .all(|p| p["product"] == "prod_fake" && p["currency"] == "usd"));

    // Archived: off the public list and its page, not repriced, and back.
    let resp = app
        .admin(Method::PATCH, &path, Some(json!({"active": false})))
        .await;
    assert_eq!(resp.status(), 200);
    let public = app.client.get(app.url(&path)).send().await.expect("sent");
    assert_problem(public, 404).await;
    let problem = assert_problem(
        app.admin(
            Method::PUT,
            &format!("{path}/prices"),
            Some(json!({"monthly_price": 1, "yearly_price": 2})),
        )
        .await,
        409,
    )
    .await;
    assert_eq!(
        problem["type"]
            .as_str()
            .map(|t| t.ends_with("tier-archived")),
        Some(true),
        "{problem}"
    );
    let resp = app
        .admin(Method::PATCH, &path, Some(json!({"active": true})))
        .await;
    assert_eq!(resp.status(), 200);
    let public: Value = app
        .client
        .get(app.url(&path))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(public["name"], "Linked Plus");

    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Tier' ORDER BY global_position",
    )
    .fetch_all(&app.pool)
    .await
    .expect("events");
    assert_eq!(
        types,
        [
            "TierCreated",
            "TierUpdated",
            "TierRepriced",
            "TierArchived",
            "TierUnarchived"
        ]
    );
    // A token that is not an admin's is refused, not taken for the public list.
    let resp = app
        .client
        .get(app.url("/v1/tiers"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 401).await;
}

#[tokio::test]
async fn stripe_unreachable_is_a_502_and_records_no_tier() {
    let app: TestApp = app_with_stripe_down().await;
    let problem = assert_problem(
        app.admin(Method::POST, "/v1/tiers", Some(gold())).await,
        502,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nothing was recorded")),
        "{problem}"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tiers")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_checkout_by_tier_charges_its_price_and_the_dashboard_names_the_tier() {
    let (l, monthly, stripe, app) = customer_with_stripe("tier").await;
    let tier = app.linked_tier("Gold", &monthly, "price_gold_year").await;
    let tier_id = tier["id"].as_str().expect("id").to_owned();

    let checkout = |extra: Value| {
        let mut body = json!({
            "email": "buyer@example.com",
            "success_url": "https://shop.test/thanks",
            "cancel_url": "https://shop.test/pricing"
        });
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        body
    };
    let resp = app
        .checkout(&checkout(json!({"tier_id": tier_id, "cadence": "year"})))
        .await;
    assert_eq!(resp.status(), 201);
    let sent = stripe.checkouts.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1);
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(sent[0].1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(form["line_items[0][price]"], "price_gold_year", "{form:?}");
    assert_eq!(form["metadata[tier_id]"], tier_id);
    assert_eq!(form["metadata[cadence]"], "year");
    assert_eq!(form["subscription_data[metadata][tier_id]"], tier_id);

    // Refused: no cadence, an unknown tier, a price and a tier together, an archived tier.
    for (extra, field) in [
        (json!({"tier_id": tier_id}), "cadence"),
        (
            json!({"tier_id": uuid::Uuid::now_v7(), "cadence": "month"}),
            "tier_id",
        ),
        (
            json!({"tier_id": tier_id, "cadence": "month", "price_id": "price_x"}),
            "price_id",
        ),
        (json!({}), "price_id"),
    ] {
        let problem = assert_problem(app.checkout(&checkout(extra)).await, 422).await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }

    // The subscription Stripe starts with the tier's monthly price: the dashboard names the tier.
    for e in [
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "active", 2),
    ] {
        assert_eq!(app.send_webhook(&e).await.status(), 200);
    }
    app.drain_stripe().await;
    let member = crate::admin_console::member_id(&app, &l.email).await;
    let dashboard: Value = app
        .get(&format!("/v1/members/{member}/dashboard"))
        .await
        .json()
        .await
        .expect("json");
    let item = &dashboard["subscriptions"][0]["items"][0];
    assert_eq!(item["tier_id"], tier_id.as_str(), "{dashboard}");
    assert_eq!(item["tier_name"], "Gold");
    assert_eq!(item["cadence"], "month");

    let resp = app
        .admin(
            Method::PATCH,
            &format!("/v1/tiers/{tier_id}"),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let problem = assert_problem(
        app.checkout(&checkout(json!({"tier_id": tier_id, "cadence": "month"})))
            .await,
        422,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "tier_id", "{problem}");
}

#[tokio::test]
async fn a_member_changes_plan_with_a_prorated_item_update_and_the_webhook_moves_the_dashboard() {
    let (l, gold_month, stripe, app) = customer_with_stripe("plan").await;
    app.linked_tier("Gold", &gold_month, "price_gold_year")
        .await;
    let silver = app
        .linked_tier("Silver", "price_silver_month", "price_silver_year")
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for e in [
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "active", 2),
    ] {
        assert_eq!(app.send_webhook(&e).await.status(), 200);
    }
    app.drain_stripe().await;
    let token = app.sign_in(&l.email).await;
    let change = |tier: String, cadence: &str, token: Option<&str>| {
        let mut req = app
            .client
            .put(app.url("/v1/me/plan"))
            .json(&json!({"tier_id": tier, "cadence": cadence}));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };

    let resp = change(silver.clone(), "year", Some(&token))
        .await
        .expect("sent");
    assert_eq!(resp.status(), 202);
    let view: Value = resp.json().await.expect("json");
    assert_eq!(view["from_price_id"], gold_month.as_str());
    assert_eq!(view["to_price_id"], "price_silver_year");
    let updates: Vec<String> = stripe
        .requested()
        .into_iter()
        .filter(|r| r.starts_with("POST /v1/subscription_items/"))
        .collect();
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert!(
        updates[0].starts_with(&format!("POST /v1/subscription_items/{} ", l.item))
            && updates[0].ends_with("price=price_silver_year proration=create_prorations"),
        "{updates:?}"
    );

    // Stripe's webhook for the change moves the subscription and the dashboard.
    let mut moved = l.subscription_object("active", 300, false);
    let item = &mut moved["items"]["data"][0];
    item["price"]["id"] = json!("price_silver_year");
    item["price"]["unit_amount"] = json!(20000);
    item["price"]["recurring"]["interval"] = json!("year");
    let updated = crate::stripe_support::event(
        &format!("evt_{}_plan", l.tag),
        "customer.subscription.updated",
        l.start + 300,
        moved,
    );
    assert_eq!(app.send_webhook(&updated).await.status(), 200);
    app.drain_stripe().await;
    let dashboard: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    let item = &dashboard["subscriptions"][0]["items"][0];
    assert_eq!(item["tier_name"], "Silver", "{dashboard}");
    assert_eq!(item["cadence"], "year");
    let resp = change(silver.clone(), "year", Some(&token))
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200, "already on it");

    // Refused: no session, an unknown tier, a member without a tier subscription.
    let resp = change(silver.clone(), "month", None).await.expect("sent");
    assert_problem(resp, 401).await;
    let resp = change(uuid::Uuid::now_v7().to_string(), "month", Some(&token))
        .await
        .expect("sent");
    let problem = assert_problem(resp, 422).await;
    assert_eq!(problem["errors"][0]["field"], "tier_id");
    let created = app
        .create_member(json!({"email": "no-plan@example.com"}))
        .await;
    assert_eq!(created.status(), 201);
    let other = app.sign_in("no-plan@example.com").await;
    let resp = change(silver, "month", Some(&other)).await.expect("sent");
    assert_problem(resp, 409).await;
}

#[tokio::test]
async fn without_stripe_a_tier_is_refused_with_a_conflict_naming_the_setting() {
    let app = TestApp::spawn().await;
    let problem = assert_problem(
        app.admin(Method::POST, "/v1/tiers", Some(gold())).await,
        409,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("STRIPE_SECRET_KEY")),
        "{problem}"
    );
}
