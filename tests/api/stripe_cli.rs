//! Stripe from the command line (issue #16), against the fake Stripe over HTTP:
//! `memberledger stripe setup` registers the webhook endpoint with the handled event types and
//! stores its secret (a second run changes nothing); `memberledger stripe reconcile` stores
//! exactly the events Stripe never delivered, which the inbox processes once; the server can
//! reconcile on its own (`STRIPE_RECONCILE_EVERY_SECS`).

use serde_json::{json, Value};

use crate::checkout::app_with_stripe;
use crate::helpers::{eventually, TestApp};
use crate::stripe_support::{event, signature, FakeStripe, Lifecycle};

fn lifecycle(tag: &str) -> Lifecycle {
    Lifecycle::new(&format!(
        "{tag}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
}

/// A customer's life at Stripe: checkout, subscription, a paid invoice.
fn life(l: &Lifecycle) -> Vec<Value> {
    vec![
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "active", 0),
        l.invoice_paid(&format!("in_{}_1", l.tag), 2),
    ]
}

/// `n` events of a type we do not handle, created at `l.start`.
fn noise(l: &Lifecycle, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            event(
                &format!("evt_{}_noise{i}", l.tag),
                "customer.created",
                l.start,
                json!({ "id": format!("cus_noise{i}"), "object": "customer" }),
            )
        })
        .collect()
}

/// Runs the binary off the test's runtime, which serves the fake Stripe meanwhile.
async fn run(command: std::process::Command) -> std::process::Output {
    let mut command = command;
    tokio::task::spawn_blocking(move || command.output().expect("ran"))
        .await
        .expect("joined")
}

async fn reconcile(app: &TestApp, stripe: &FakeStripe, since: i64) -> std::process::Output {
    let since = chrono::DateTime::from_timestamp(since, 0)
        .expect("a time")
        .to_rfc3339();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_memberledger"));
    command
        .args(["stripe", "reconcile", "--since", &since])
        .env("DATABASE_URL", &app.database_url)
        .env("STRIPE_SECRET_KEY", "sk_test_fake")
        .env("STRIPE_API_BASE", &stripe.base)
        .env_remove("STRIPE_WEBHOOK_SECRET");
    run(command).await
}

async fn inbox_ids(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT id, status FROM stripe_events ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .expect("inbox")
}

#[tokio::test]
async fn reconcile_stores_exactly_the_missing_events_and_the_inbox_processes_them_once() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let l = lifecycle("recon");
    let events = life(&l);
    // Stripe's log: the customer's three events, and 120 events of a type we do not handle
    // (more than a page of 100).
    stripe.log_events(&events);
    stripe.log_events(&noise(&l, 120));
    // Only the checkout was delivered.
    assert_eq!(app.send_webhook(&events[0]).await.status(), 200);
    app.drain_stripe().await;

    let out = reconcile(&app, &stripe, l.start - 60).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("123 event(s) listed by Stripe: 2 stored now, 1 in the inbox already, 120 of types not handled, 0 unreadable"),
        "{stdout}"
    );
    for missing in [&events[1], &events[2]] {
        let id = missing["id"].as_str().expect("id");
        assert!(stdout.contains(&format!("stored {id}")), "{stdout}");
    }
    // Two pages were asked for.
    let pages = stripe
        .requested()
        .into_iter()
        .filter(|r| r.starts_with("GET /v1/events"))
        .count();
    assert_eq!(pages, 2);

    // The running server's inbox processes them, once, and the customer ends subscribed with
    // a paid invoice and a license, as if the webhooks had come.
    app.drain_stripe().await;
    let inbox = inbox_ids(&app).await;
    assert_eq!(inbox.len(), 3, "{inbox:?}");
    assert!(
        inbox.iter().all(|(_, status)| status == "processed"),
        "{inbox:?}"
    );
    let token = app.sign_in(&l.email).await;
    assert_eq!(app.my_licenses(&token).await.len(), 1);
    let payments: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'PaymentRecorded' AND aggregate_id = $1",
    )
    .bind(&l.subscription)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(payments, 1);

    // Again: nothing is missing, nothing is stored twice.
    let out = reconcile(&app, &stripe, l.start - 60).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("0 stored now, 3 in the inbox already"),
        "{stdout}"
    );
    assert_eq!(inbox_ids(&app).await.len(), 3);
}

#[tokio::test]
async fn reconcile_refuses_without_a_secret_key_and_says_so_when_stripe_is_unreachable() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_memberledger"));
    command
        .args(["stripe", "reconcile"])
        .env("DATABASE_URL", &app.database_url)
        .env_remove("STRIPE_SECRET_KEY");
    let out = run(command).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("STRIPE_SECRET_KEY"));

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_memberledger"));
    command
        .args(["stripe", "reconcile"])
        .env("DATABASE_URL", &app.database_url)
        .env("STRIPE_SECRET_KEY", "sk_test_fake")
        .env(
            "STRIPE_API_BASE",
            format!("http://127.0.0.1:{}/", crate::helpers::free_port()),
        );
    let out = run(command).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Stripe is unavailable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(inbox_ids(&app).await.is_empty());
}

#[tokio::test]
async fn the_server_reconciles_on_its_own_when_configured() {
    let stripe = FakeStripe::start(&[]).await;
    let base = stripe.base.clone();
    let app = TestApp::spawn_custom(move |s| {
        s.stripe.secret_key = Some("sk_test_fake".into());
        s.stripe.api_base = Some(base);
        s.stripe.reconcile_every = Some(std::time::Duration::from_millis(200));
    })
    .await;
    let l = lifecycle("auto");
    // Created an hour ago, never delivered.
    let mut l = l;
    l.start = chrono::Utc::now().timestamp() - 3600;
    stripe.log_events(&life(&l));
    eventually("the server stored the missing events", || async {
        inbox_ids(&app).await.len() == 3
    })
    .await;
    app.drain_stripe().await;
    let token = app.sign_in(&l.email).await;
    assert_eq!(app.my_licenses(&token).await.len(), 1);
}

/// The event types the translator handles, sorted.
const HANDLED: &[&str] = &[
    "charge.refunded",
    "checkout.session.async_payment_succeeded",
    "checkout.session.completed",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.deleted",
    "customer.subscription.updated",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
    "payment_intent.succeeded",
];

async fn setup(app: &TestApp, stripe: &FakeStripe) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_memberledger"));
    command
        .args(["stripe", "setup"])
        .env("DATABASE_URL", &app.database_url)
        .env("STRIPE_SECRET_KEY", "sk_test_fake")
        .env("STRIPE_API_BASE", &stripe.base)
        .env("PUBLIC_URL", "https://members.example.com/")
        .env_remove("STRIPE_WEBHOOK_SECRET");
    run(command).await
}

fn endpoints(stripe: &FakeStripe) -> Vec<Value> {
    stripe.endpoints.lock().expect("endpoints").clone()
}

fn writes(stripe: &FakeStripe) -> Vec<String> {
    stripe
        .requested()
        .into_iter()
        .filter(|r| r.contains("webhook_endpoints") && !r.starts_with("GET"))
        .collect()
}

/// Delivers `event` signed with `secret`; the status.
async fn deliver_signed(app: &TestApp, event: &Value, secret: &str) -> u16 {
    let payload = event.to_string();
    let timestamp = chrono::Utc::now().timestamp();
    app.client
        .post(app.url("/webhooks/stripe"))
        .header("Stripe-Signature", signature(&payload, secret, timestamp))
        .header("Content-Type", "application/json")
        .body(payload)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

#[tokio::test]
async fn setup_registers_the_endpoint_with_the_handled_types_once_and_its_secret_verifies_deliveries(
) {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let out = setup(&app, &stripe).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("we_fake1: created, its signing secret stored"),
        "{stdout}"
    );
    let registered = endpoints(&stripe);
    assert_eq!(registered.len(), 1);
    assert_eq!(
        registered[0]["url"],
        "https://members.example.com/webhooks/stripe"
    );
    let mut events: Vec<String> = registered[0]["enabled_events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e.as_str().expect("a type").to_owned())
        .collect();
    events.sort();
    assert_eq!(events, HANDLED);
    let secret = registered[0]["secret"].as_str().expect("secret").to_owned();
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT secret, endpoint_id FROM stripe_webhook_secrets WHERE retired_at IS NULL",
    )
    .fetch_all(&app.pool)
    .await
    .expect("stored");
    assert_eq!(stored, vec![(secret.clone(), "we_fake1".to_owned())]);

    // Again: nothing changes at Stripe.
    let before = writes(&stripe);
    let out = setup(&app, &stripe).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("we_fake1: unchanged"), "{stdout}");
    assert_eq!(writes(&stripe), before);

    // A delivery signed with the stored secret is accepted by the running server (which has
    // only the test's STRIPE_WEBHOOK_SECRET configured); one signed otherwise is not.
    let l = lifecycle("setup");
    assert_eq!(
        deliver_signed(&app, &l.checkout_completed(1), &secret).await,
        200
    );
    assert_eq!(
        deliver_signed(&app, &l.checkout_completed(2), "whsec_someone_else").await,
        400
    );

    // Someone narrowed the endpoint's event types in Stripe's dashboard: setup puts them back.
    stripe.endpoints.lock().expect("endpoints")[0]["enabled_events"] = json!(["invoice.paid"]);
    let out = setup(&app, &stripe).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("we_fake1: event types updated"));
    assert_eq!(
        endpoints(&stripe)[0]["enabled_events"]
            .as_array()
            .map(Vec::len),
        Some(HANDLED.len())
    );
}

#[tokio::test]
async fn setup_replaces_an_endpoint_whose_secret_it_does_not_have_and_the_old_secret_is_retired() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    // An endpoint for our URL made by hand, and an older secret of ours.
    stripe.endpoints.lock().expect("endpoints").push(json!({
        "id": "we_byhand", "object": "webhook_endpoint",
        "url": "https://members.example.com/webhooks/stripe",
        "enabled_events": ["*"], "status": "enabled", "secret": "whsec_byhand",
    }));
    sqlx::query("INSERT INTO stripe_webhook_secrets (secret, endpoint_id, url) VALUES ('whsec_old', 'we_gone', 'https://old.example.com/webhooks/stripe')")
        .execute(&app.pool)
        .await
        .expect("an old secret");
    let out = setup(&app, &stripe).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("replacing we_byhand"), "{stdout}");
    assert!(writes(&stripe).contains(&"DELETE /v1/webhook_endpoints/we_byhand".to_owned()));
    let registered = endpoints(&stripe);
    assert_eq!(registered.len(), 1);
    let active: Vec<String> =
        sqlx::query_scalar("SELECT secret FROM stripe_webhook_secrets WHERE retired_at IS NULL")
            .fetch_all(&app.pool)
            .await
            .expect("active");
    assert_eq!(
        active,
        vec![registered[0]["secret"].as_str().expect("secret").to_owned()]
    );
    // The retired secret still verifies for a day (deliveries in flight).
    let l = lifecycle("retired");
    assert_eq!(
        deliver_signed(&app, &l.checkout_completed(1), "whsec_old").await,
        200
    );
}

#[tokio::test]
async fn tiers_create_prices_a_tier_at_stripe_from_the_command_line_and_explains_a_refusal() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let tiers = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_memberledger"));
        command
            .arg("tiers")
            .args(args)
            .env("DATABASE_URL", &app.database_url)
            .env("STRIPE_SECRET_KEY", "sk_test_fake")
            .env("STRIPE_API_BASE", &stripe.base)
            .env_remove("STRIPE_WEBHOOK_SECRET");
        command
    };

    let out = run(tiers(&[
        "create",
        "--name",
        "Gold",
        "--benefit",
        "Every article",
        "--benefit",
        "The archive",
        "--currency",
        "eur",
        "--monthly-price",
        "500",
        "--yearly-price",
        "5000",
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tier: Value = serde_json::from_slice(&out.stdout).expect("the tier as JSON");
    assert_eq!(tier["name"], "Gold");
    assert_eq!(tier["benefits"], json!(["Every article", "The archive"]));
    assert_eq!(
        (tier["monthly_price"].clone(), tier["yearly_price"].clone()),
        (500.into(), 5000.into())
    );
    assert_eq!(crate::tiers::created(&stripe, "product").len(), 1);
    assert_eq!(crate::tiers::created(&stripe, "price").len(), 2);
    // The server sells it: the public list shows it.
    let listed: Value = app
        .client
        .get(app.url("/v1/tiers"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"][0]["id"], tier["id"]);

    // A refusal says which field and why, and creates nothing.
    let out = run(tiers(&[
        "create",
        "--name",
        "Silver",
        "--currency",
        "eur",
        "--monthly-price=-5",
        "--yearly-price",
        "100",
    ]))
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("monthly_price"), "{stderr}");
    assert_eq!(crate::tiers::created(&stripe, "product").len(), 1);
}
