use serde_json::{json, Value};

use crate::helpers::{assert_problem, problem_fields, TestApp};
use crate::stripe_support::{event, FakeStripe, Lifecycle};

async fn app_with_stripe(stripe: &FakeStripe) -> TestApp {
    let base = stripe.base.clone();
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
    async fn checkout(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/checkout/sessions"))
            .json(body)
            .send()
            .await
            .expect("sent")
    }
}

/// The form body async-stripe sent, decoded.
fn form(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

fn field<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
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
        .starts_with("https://"));

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
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let app = TestApp::spawn_custom(move |s| {
        s.stripe.secret_key = Some("sk_test_fake".into());
        s.stripe.api_base = Some(format!("http://127.0.0.1:{closed}/"));
        s.checkout_allowed_origins = vec!["https://shop.test".into()];
    })
    .await;
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
    let mut two = body("two@example.com");
    two["sites"] = json!(["a.example.com", "b.example.com"]);
    assert_problem(app.checkout(&two).await, 422).await;
    assert!(
        stripe.checkouts.lock().expect("lock").is_empty(),
        "nothing reached Stripe"
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
async fn removing_a_site_while_stripe_is_down_changes_nothing() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let app = TestApp::spawn_custom(move |s| {
        s.stripe.secret_key = Some("sk_test_fake".into());
        s.stripe.api_base = Some(format!("http://127.0.0.1:{closed}/"));
    })
    .await;
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
}
