use serde_json::{json, Value};

use crate::helpers::{assert_problem, free_port, problem_fields, TestApp};
use crate::stripe_support::{event, FakeStripe, Lifecycle};

pub(crate) async fn app_with_stripe(stripe: &FakeStripe) -> TestApp {
    app_with_stripe_at(stripe.base.clone()).await
}

/// Stripe configured at a port nothing listens on.
pub(crate) async fn app_with_stripe_down() -> TestApp {
    app_with_stripe_at(format!("http://127.0.0.1:{}/", free_port())).await
}

async fn app_with_stripe_at(base: String) -> TestApp {
    TestApp::spawn_custom(move |s| {
        s.stripe.secret_key = Some("sk_test_fake".into());
        s.stripe.api_base = Some(base);
        s.checkout_allowed_origins = vec!["https://shop.test".into()];
    })
    .await
}

fn body(email: &str) -> Value {
    json!({
        "email": email,
        "price_id": "price_monthly",
        "sites": ["https://Blog.Example.com/"],
        "success_url": "https://shop.test/thanks",
        "cancel_url": "https://shop.test/cart"
    })
}

impl TestApp {
    pub(crate) async fn checkout(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/checkout/sessions"))
            .json(body)
            .send()
            .await
            .expect("sent")
    }
}

/// The form body async-stripe sent, decoded.
pub(crate) fn form(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

pub(crate) fn field<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_site_checkout_creates_a_subscription_session_with_its_metadata() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let resp = app.checkout(&body("buyer@example.com")).await;
    assert_eq!(resp.status(), 201);
    let session: Value = resp.json().await.expect("json");
    assert!(session["id"].as_str().expect("id").starts_with("cs_test_"));
    assert!(session["url"]
        .as_str()
        .expect("url")
        .ends_with("/c/pay/cs_test_fake_0"));

    let sent = stripe.checkouts.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1);
    let (key, body) = &sent[0];
    assert!(key.starts_with("checkout-"), "{key}");
    let form = form(body);
    assert_eq!(field(&form, "mode"), Some("subscription"));
    assert_eq!(field(&form, "line_items[0][price]"), Some("price_monthly"));
    assert_eq!(field(&form, "line_items[0][quantity]"), Some("1"));
    assert_eq!(field(&form, "customer_email"), Some("buyer@example.com"));
    assert_eq!(field(&form, "metadata[purchase_type]"), Some("site"));
    assert_eq!(field(&form, "metadata[site]"), Some("blog.example.com"));
    assert_eq!(
        field(&form, "subscription_data[metadata][site]"),
        Some("blog.example.com")
    );
    assert_eq!(
        field(&form, "success_url"),
        Some("https://shop.test/thanks")
    );

    // The same purchase asked for again gets the same session (same idempotency key).
    let again: Value = app
        .checkout(&body_for_same())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["id"], session["id"]);
}

fn body_for_same() -> Value {
    body("BUYER@example.com")
}

#[tokio::test]
async fn a_stripe_500_is_retried_with_the_same_idempotency_key() {
    let stripe = FakeStripe::start(&[]).await;
    stripe
        .fail_next
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let app = app_with_stripe(&stripe).await;
    let resp = app.checkout(&body("retry@example.com")).await;
    assert_eq!(resp.status(), 201);
    let keys: Vec<String> = stripe
        .checkouts
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(keys.len(), 3, "two failures, then success");
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
}

#[tokio::test]
async fn stripe_unreachable_is_a_502_and_nothing_is_left_behind() {
    let app = app_with_stripe_down().await;
    assert_problem(app.checkout(&body("down@example.com")).await, 502).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(events, 0);
}

#[tokio::test]
async fn bad_urls_sites_and_missing_stripe_are_refused_clearly() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let mut bad = body("bad@example.com");
    bad["success_url"] = json!("https://evil.test/phish");
    bad["cancel_url"] = json!("not a url");
    bad["sites"] = json!(["localhost"]);
    let problem = assert_problem(app.checkout(&bad).await, 422).await;
    let mut fields = problem_fields(&problem);
    fields.sort();
    assert_eq!(fields, ["cancel_url", "sites[0]", "success_url"]);
    let many: Vec<String> = (0..21).map(|i| format!("s{i}.example.com")).collect();
    let mut too_many = body("many@example.com");
    too_many["sites"] = json!(many);
    assert_problem(app.checkout(&too_many).await, 422).await;
    let mut seats_and_sites = body("mixed@example.com");
    seats_and_sites["quantity"] = json!(3);
    let problem = assert_problem(app.checkout(&seats_and_sites).await, 422).await;
    assert_eq!(problem_fields(&problem), ["quantity"]);
    // Several sites need a recurring price with a fixed amount.
    let mut two = body("two@example.com");
    two["sites"] = json!(["a.example.com", "b.example.com"]);
    two["price_id"] = json!("price_onetime");
    let problem = assert_problem(app.checkout(&two).await, 422).await;
    assert_eq!(problem_fields(&problem), ["price_id"]);
    assert!(
        stripe.checkouts.lock().expect("lock").is_empty(),
        "no checkout reached Stripe"
    );

    let unconfigured =
        TestApp::spawn_custom(|s| s.checkout_allowed_origins = vec!["https://shop.test".into()])
            .await;
    assert_problem(unconfigured.checkout(&body("x@example.com")).await, 503).await;
}

#[tokio::test]
async fn a_member_with_an_active_subscription_gets_409_and_a_paid_checkout_licenses_its_site() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let l = Lifecycle::new(&format!(
        "co{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    // Checkout completes; the subscription names its site in its metadata, not on the item.
    let mut sub = l.subscription_object("active", 0, false);
    sub["metadata"] = json!({ "site": "shop.example.org", "purchase_type": "site" });
    sub["items"]["data"][0]["metadata"] = json!({});
    for e in [
        l.checkout_completed(1),
        event(
            &format!("evt_{}_sub", l.tag),
            "customer.subscription.created",
            l.start,
            sub,
        ),
    ] {
        assert_eq!(app.send_webhook(&e).await.status(), 200);
    }
    app.drain_stripe().await;
    let site: Option<String> =
        sqlx::query_scalar("SELECT site FROM licenses WHERE subscription_id = $1")
            .bind(&l.subscription)
            .fetch_one(&app.pool)
            .await
            .expect("a license");
    assert_eq!(site.as_deref(), Some("shop.example.org"));

    let problem = assert_problem(app.checkout(&body(&l.email)).await, 409).await;
    assert_eq!(problem["type"], "/problems/subscription-exists");
}

#[tokio::test]
async fn a_member_removes_a_site_and_its_license_stops() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let l = Lifecycle::new(&format!(
        "rm{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let created = l.subscription_event("created", "customer.subscription.created", "active", 0);
    for e in [l.checkout_completed(1), created.clone()] {
        app.send_webhook(&e).await;
    }
    app.drain_stripe().await;
    let token = app.sign_in(&l.email).await;
    let other = app.member(&format!("other-{}", l.email)).await;
    let other_token = app.sign_in(other["email"].as_str().expect("email")).await;
    let path = format!("/v1/me/sites/{}", l.site);

    let resp = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&other_token)
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 404).await;
    let resp = app
        .client
        .delete(app.url("/v1/me/sites/unknown.example.com"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 404).await;

    let resp = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    assert_eq!(
        stripe.requested(),
        [format!(
            "DELETE /v1/subscription_items/{} key=delete-item-{}",
            l.item, l.item
        )]
    );
    app.settle().await;
    let license: (String, Option<String>) =
        sqlx::query_as("SELECT status, deactivation_reason FROM licenses WHERE site = $1")
            .bind(&l.site)
            .fetch_one(&app.pool)
            .await
            .expect("license");
    assert_eq!(
        license,
        ("inactive".to_owned(), Some("item_removed".to_owned()))
    );
    // The delayed webhook of the older state (the item still there) does not bring it back.
    let mut late = created;
    late["id"] = json!(format!("evt_{}_late", l.tag));
    late["type"] = json!("customer.subscription.updated");
    app.send_webhook(&late).await;
    app.drain_stripe().await;
    let dashboard: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(dashboard["sites"][0]["status"], "removed");
    assert_eq!(dashboard["licenses"][0]["status"], "inactive");
    let resp = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 404).await;
}

#[tokio::test]
async fn removing_or_adding_a_site_while_stripe_is_down_changes_nothing() {
    let app = app_with_stripe_down().await;
    let l = Lifecycle::new(&format!(
        "down{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    for e in [
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "active", 0),
    ] {
        app.send_webhook(&e).await;
    }
    app.drain_stripe().await;
    let token = app.sign_in(&l.email).await;
    let resp = app
        .client
        .delete(app.url(&format!("/v1/me/sites/{}", l.site)))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 502).await;
    app.settle().await;
    let status: String = sqlx::query_scalar("SELECT status FROM licenses WHERE site = $1")
        .bind(&l.site)
        .fetch_one(&app.pool)
        .await
        .expect("license");
    assert_eq!(status, "active");

    // Adding a site: no payment page, so nothing pending either.
    let resp = app
        .client
        .post(app.url("/v1/me/sites"))
        .bearer_auth(&token)
        .json(&json!({ "sites": ["more.example.com"], "success_url": "https://shop.test/ok", "cancel_url": "https://shop.test/no" }))
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(resp, 502).await;
    assert_eq!(problem["type"], "/problems/stripe-unavailable");
    app.settle().await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_sites")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(pending, 0);
}

/// The Checkout Session Stripe would send back in a webhook for the `n`th recorded checkout.
pub(crate) fn paid_session(stripe: &FakeStripe, n: usize, id: &str) -> Value {
    let (_, body) = stripe.checkouts.lock().expect("lock")[n].clone();
    let sent = form(&body);
    let metadata: serde_json::Map<String, Value> = sent
        .clone()
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_owned(), json!(v)))
        })
        .collect();
    let mut session = crate::stripe_support::fixture("checkout.session");
    session["id"] = json!(id);
    session["mode"] = json!("payment");
    session["payment_status"] = json!("paid");
    session["status"] = json!("complete");
    session["metadata"] = Value::Object(metadata);
    // The customer the session was created for: the inbox serialises its events by customer.
    session["customer"] = json!(field(&sent, "customer"));
    session
}

#[tokio::test]
async fn added_sites_are_pending_until_paid_then_added_once_and_licensed() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let l = Lifecycle::new(&format!(
        "add{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let mut created = l.subscription_event("created", "customer.subscription.created", "active", 0);
    // Half of the period is left.
    let now = chrono::Utc::now().timestamp();
    created["data"]["object"]["items"]["data"][0]["current_period_start"] =
        json!(now - 15 * 86_400);
    created["data"]["object"]["items"]["data"][0]["current_period_end"] = json!(now + 15 * 86_400);
    for e in [l.checkout_completed(1), created.clone()] {
        app.send_webhook(&e).await;
    }
    app.drain_stripe().await;
    let token = app.sign_in(&l.email).await;
    let add = |sites: Value| {
        let app = &app;
        let token = token.clone();
        let body = json!({ "sites": sites, "success_url": "https://shop.test/ok", "cancel_url": "https://shop.test/no" });
        async move {
            app.client
                .post(app.url("/v1/me/sites"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("sent")
        }
    };

    let problem = assert_problem(add(json!([l.site])).await, 409).await;
    assert_eq!(problem["type"], "/problems/site-already-licensed");
    let resp = add(json!(["https://New.Example.com/"])).await;
    assert_eq!(resp.status(), 201);
    let purchase: Value = resp.json().await.expect("json");
    assert_eq!(purchase["sites"], json!(["new.example.com"]));
    let amount = purchase["amount"].as_i64().expect("amount");
    assert!(
        (950..=1050).contains(&amount),
        "half of 2000 for half a period: {amount}"
    );
    let sent = form(&stripe.checkouts.lock().expect("lock")[0].1);
    assert_eq!(field(&sent, "mode"), Some("payment"));
    assert_eq!(field(&sent, "customer"), Some(l.customer.as_str()));
    assert_eq!(field(&sent, "metadata[add_to_existing]"), Some("true"));
    assert_eq!(
        field(&sent, "metadata[existing_subscription_id]"),
        Some(l.subscription.as_str())
    );
    assert_eq!(
        field(&sent, "payment_intent_data[metadata][sites]"),
        Some("new.example.com")
    );

    let dashboard: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(dashboard["pending_sites"][0]["domain"], "new.example.com");

    // Paid: the payment intent succeeds (delivered twice), and the session completes; the
    // item is added once.
    let session = paid_session(&stripe, 0, purchase["id"].as_str().expect("id"));
    let mut intent = crate::stripe_support::fixture("payment_intent");
    intent["id"] = json!(format!("pi_{}", l.tag));
    intent["status"] = json!("succeeded");
    intent["customer"] = json!(l.customer);
    intent["metadata"] = session["metadata"].clone();
    let paid = event(
        &format!("evt_{}_paid", l.tag),
        "payment_intent.succeeded",
        now,
        intent,
    );
    app.send_webhook(&paid).await;
    app.send_webhook(&paid).await;
    app.drain_stripe().await;
    assert_eq!(
        app.get_as(&token, "/v1/me/dashboard")
            .await
            .json::<Value>()
            .await
            .expect("json")["pending_sites"],
        json!([]),
        "the payment intent alone completes the purchase"
    );
    app.send_webhook(&event(
        &format!("evt_{}_completed", l.tag),
        "checkout.session.completed",
        now + 1,
        session,
    ))
    .await;
    app.drain_stripe().await;
    let adds = stripe.item_adds();
    assert_eq!(adds.len(), 1, "one call for one payment: {adds:?}");
    assert!(
        adds[0].contains(&format!("subscription={}", l.subscription))
            && adds[0].contains("site=new.example.com")
            && adds[0].contains("proration=none"),
        "{}",
        adds[0]
    );
    let dashboard: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(dashboard["pending_sites"], json!([]));

    // Stripe then reports the subscription with the new item; its license follows.
    let mut updated = created;
    updated["id"] = json!(format!("evt_{}_with_new_site", l.tag));
    updated["type"] = json!("customer.subscription.updated");
    updated["created"] = json!(now + 1);
    let mut new_item = updated["data"]["object"]["items"]["data"][0].clone();
    new_item["id"] = json!("si_added_new");
    new_item["metadata"] = json!({ "site": "new.example.com" });
    updated["data"]["object"]["items"]["data"]
        .as_array_mut()
        .expect("items")
        .push(new_item);
    app.send_webhook(&updated).await;
    app.drain_stripe().await;
    let resp = app.client.post(app.url("/v1/licenses/validate")).json(&json!({"key": license_key(&app, "new.example.com").await, "domain": "new.example.com"})).send().await.expect("sent");
    assert_eq!(resp.json::<Value>().await.expect("json")["code"], "VALID");

    // An abandoned purchase: pending until its session expires.
    assert_eq!(add(json!(["other.example.com"])).await.status(), 201);
    let pending: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(pending["pending_sites"][0]["domain"], "other.example.com");
    // Counted first: `paid_session` takes the same lock.
    let last = stripe.checkouts.lock().expect("lock").len() - 1;
    let mut expired = paid_session(&stripe, last, "cs_expired");
    expired["status"] = json!("expired");
    expired["payment_status"] = json!("unpaid");
    // The session id recorded for the purchase is the one the fake returned.
    let recorded: String =
        sqlx::query_scalar("SELECT session_id FROM pending_sites WHERE site = 'other.example.com'")
            .fetch_one(&app.pool)
            .await
            .expect("pending row");
    expired["id"] = json!(recorded);
    app.send_webhook(&event(
        &format!("evt_{}_expired", l.tag),
        "checkout.session.expired",
        now,
        expired,
    ))
    .await;
    app.drain_stripe().await;
    let after: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(after["pending_sites"], json!([]));
}

async fn license_key(app: &TestApp, site: &str) -> String {
    sqlx::query_scalar("SELECT key FROM licenses WHERE site = $1")
        .bind(site)
        .fetch_one(&app.pool)
        .await
        .expect("a license for the site")
}

/// A Payment Link's completed checkout: the site is in a custom field, no metadata.
fn payment_link_checkout(l: &Lifecycle, site: &str) -> Value {
    let mut e = l.checkout_completed(1);
    let session = &mut e["data"]["object"];
    session["payment_link"] = json!(format!("plink_{}", l.tag));
    session["metadata"] = json!({});
    session["custom_fields"] = json!([{
        "key": "site",
        "label": { "custom": "Your site", "type": "custom" },
        "optional": false,
        "type": "text",
        "text": { "default_value": null, "maximum_length": null, "minimum_length": null, "value": site }
    }]);
    e
}

/// The subscription a Payment Link makes: one item, no site anywhere.
fn payment_link_subscription(l: &Lifecycle) -> Value {
    let mut e = l.subscription_event("created", "customer.subscription.created", "active", 0);
    e["data"]["object"]["items"]["data"][0]["metadata"] = json!({});
    e
}

/// (site, purchase_type, status, deactivation_reason) of the subscription's licenses.
async fn licenses_of(
    app: &TestApp,
    subscription: &str,
) -> Vec<(Option<String>, String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT site, purchase_type, status, deactivation_reason FROM licenses
         WHERE subscription_id = $1 ORDER BY purchase_type, issued_at",
    )
    .bind(subscription)
    .fetch_all(&app.pool)
    .await
    .expect("licenses")
}

#[tokio::test]
async fn a_payment_link_checkout_licenses_the_site_from_its_custom_field() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let l = Lifecycle::new(&format!(
        "pl{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    for e in [
        payment_link_checkout(&l, "https://Linked.Example.com/"),
        payment_link_subscription(&l),
    ] {
        assert_eq!(app.send_webhook(&e).await.status(), 200);
    }
    app.drain_stripe().await;
    assert_eq!(
        licenses_of(&app, &l.subscription).await,
        [(
            Some("linked.example.com".to_owned()),
            "site".to_owned(),
            "active".to_owned(),
            None
        )],
        "one site license, no seat key"
    );
    let token = app.sign_in(&l.email).await;
    let dashboard: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(dashboard["sites"][0]["domain"], "linked.example.com");
    assert_eq!(dashboard["subscriptions"][0]["site_count"], json!(1));
}

#[tokio::test]
async fn a_payment_link_site_arriving_after_the_subscription_replaces_its_seat_key() {
    let l = Lifecycle::new(&format!(
        "pllate{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    // The subscription comes first: its customer's email is fetched from Stripe.
    let stripe = FakeStripe::start(&[(&l.customer, &l.email)]).await;
    let app = app_with_stripe(&stripe).await;
    app.send_webhook(&payment_link_subscription(&l)).await;
    app.drain_stripe().await;
    assert_eq!(
        licenses_of(&app, &l.subscription).await,
        [(None, "quantity".to_owned(), "active".to_owned(), None)],
        "without a site yet, the item is a seat"
    );
    app.send_webhook(&payment_link_checkout(&l, "late.example.com"))
        .await;
    app.drain_stripe().await;
    app.settle().await;
    assert_eq!(
        licenses_of(&app, &l.subscription).await,
        [
            (
                None,
                "quantity".to_owned(),
                "inactive".to_owned(),
                Some("replaced".to_owned())
            ),
            (
                Some("late.example.com".to_owned()),
                "site".to_owned(),
                "active".to_owned(),
                None
            ),
        ]
    );
    let key: String =
        sqlx::query_scalar("SELECT key FROM licenses WHERE site = 'late.example.com'")
            .fetch_one(&app.pool)
            .await
            .expect("key");
    let resp = app
        .client
        .post(app.url("/v1/licenses/validate"))
        .json(&json!({ "key": key, "domain": "www.late.example.com" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.json::<Value>().await.expect("json")["code"], "VALID");
    // A later state from Stripe (still without the site) keeps it.
    let mut updated = payment_link_subscription(&l);
    updated["id"] = json!(format!("evt_{}_later", l.tag));
    updated["type"] = json!("customer.subscription.updated");
    updated["created"] = json!(l.start + 50);
    app.send_webhook(&updated).await;
    app.drain_stripe().await;
    let site: Option<String> =
        sqlx::query_scalar("SELECT site FROM subscription_items WHERE id = $1")
            .bind(&l.item)
            .fetch_one(&app.pool)
            .await
            .expect("item");
    assert_eq!(site.as_deref(), Some("late.example.com"));
}

#[tokio::test]
async fn a_checkout_for_several_sites_charges_the_extra_ones_and_adds_them_once_paid() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let l = Lifecycle::new(&format!(
        "multi{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let mut request = body(&l.email);
    request["sites"] = json!([
        l.site,
        "https://Two.Example.com",
        "three.example.com",
        l.site
    ]);
    let resp = app.checkout(&request).await;
    assert_eq!(resp.status(), 201);
    let sent = form(&stripe.checkouts.lock().expect("lock")[0].1);
    assert_eq!(field(&sent, "mode"), Some("subscription"));
    assert_eq!(field(&sent, "line_items[0][price]"), Some("price_monthly"));
    assert_eq!(field(&sent, "line_items[0][quantity]"), Some("1"));
    for (n, site) in [(1, "two.example.com"), (2, "three.example.com")] {
        assert_eq!(
            field(&sent, &format!("line_items[{n}][price_data][unit_amount]")),
            Some("2000"),
            "{site}'s first period"
        );
        assert!(field(
            &sent,
            &format!("line_items[{n}][price_data][product_data][name]")
        )
        .is_some_and(|name| name.contains(site)));
    }
    assert!(
        field(&sent, "line_items[3][quantity]").is_none(),
        "deduplicated"
    );
    let sites = format!("{},two.example.com,three.example.com", l.site);
    assert_eq!(field(&sent, "metadata[sites]"), Some(sites.as_str()));
    assert_eq!(field(&sent, "metadata[site]"), Some(l.site.as_str()));
    assert_eq!(
        field(&sent, "subscription_data[metadata][site]"),
        Some(l.site.as_str())
    );

    // Paid: the extra sites are added to the new subscription, once.
    let mut completed = l.checkout_completed(1);
    completed["data"]["object"]["metadata"] = json!({
        "purchase_type": "site", "site": l.site, "sites": sites, "product_id": "prod_fake",
        "unit_amount": "2000", "currency": "usd", "interval": "month", "interval_count": "1"
    });
    completed["data"]["object"]["payment_status"] = json!("paid");
    app.send_webhook(&completed).await;
    let mut replayed = completed.clone();
    replayed["id"] = json!(format!("evt_{}_checkout_again", l.tag));
    app.send_webhook(&replayed).await;
    app.drain_stripe().await;
    let mut adds = stripe.item_adds();
    adds.sort();
    adds.dedup();
    assert_eq!(adds.len(), 2, "one idempotency key per site: {adds:?}");
    for (add, site) in adds.iter().zip(["three.example.com", "two.example.com"]) {
        assert!(
            add.contains(&format!("subscription={}", l.subscription))
                && add.contains(&format!("site={site}"))
                && add.contains("proration=none"),
            "{add}"
        );
    }

    // Stripe's state: the price's item (no site of its own) and the two added ones.
    let mut created = l.subscription_event("created", "customer.subscription.created", "active", 2);
    let object = &mut created["data"]["object"];
    object["metadata"] = json!({ "site": l.site, "purchase_type": "site" });
    let first = object["items"]["data"][0].clone();
    let mut items = vec![json!({})];
    items[0] = first.clone();
    items[0]["metadata"] = json!({});
    for (id, site) in [
        ("si_two", "two.example.com"),
        ("si_three", "three.example.com"),
    ] {
        let mut item = first.clone();
        item["id"] = json!(format!("{id}_{}", l.tag));
        item["metadata"] = json!({ "site": site });
        items.push(item);
    }
    object["items"]["data"] = json!(items);
    app.send_webhook(&created).await;
    app.drain_stripe().await;
    let mut licensed: Vec<(Option<String>, String, String, Option<String>)> =
        licenses_of(&app, &l.subscription).await;
    licensed.sort();
    let expected: Vec<_> = {
        let mut v = vec![
            l.site.clone(),
            "three.example.com".to_owned(),
            "two.example.com".to_owned(),
        ];
        v.sort();
        v.into_iter()
            .map(|s| (Some(s), "site".to_owned(), "active".to_owned(), None))
            .collect()
    };
    assert_eq!(licensed, expected);
}
