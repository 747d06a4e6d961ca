use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use memberledger::config::StripeSettings;

use crate::helpers::{assert_problem, eventually, test_stripe_settings, TestApp, WEBHOOK_SECRET};
use crate::stripe_support::{event, fixture, signature, FakeStripe, Lifecycle};

async fn member_id_for(app: &TestApp, email: &str) -> String {
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM member_list WHERE lower(email) = lower($1)")
            .bind(email)
            .fetch_one(&app.pool)
            .await
            .expect("the member exists");
    id.to_string()
}

/// What a lifecycle left in the read models, in a form that does not depend on delivery order.
#[derive(Debug, PartialEq)]
pub(crate) struct Converged {
    members_with_email: i64,
    member_status: String,
    member_source: String,
    subscription_status: String,
    /// Amounts of the payments, and whether each is the lifecycle's own invoice.
    payments: Vec<(bool, i64)>,
    mrr_sum: i64,
    active_licenses: i64,
    status_events_alternate_from_free_to_final: bool,
    unprocessed_stripe_events: i64,
}

pub(crate) async fn converged(app: &TestApp, l: &Lifecycle) -> Converged {
    let pool = &app.pool;
    let members_with_email: i64 =
        sqlx::query_scalar("SELECT count(*) FROM member_list WHERE lower(email) = lower($1)")
            .bind(&l.email)
            .fetch_one(pool)
            .await
            .expect("count");
    let (member_id, member_status, member_source): (uuid::Uuid, String, String) =
        sqlx::query_as("SELECT id, status, source FROM member_list WHERE lower(email) = lower($1)")
            .bind(&l.email)
            .fetch_one(pool)
            .await
            .expect("member");
    let subscription_status: String =
        sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1")
            .bind(&l.subscription)
            .fetch_one(pool)
            .await
            .expect("subscription");
    let payments: Vec<(String, i64)> = sqlx::query_as(
        "SELECT invoice_id, amount FROM members_payment_events WHERE member_id = $1 AND kind = 'payment' ORDER BY id",
    )
    .bind(member_id)
    .fetch_all(pool)
    .await
    .expect("payments");
    let own_invoice = format!("in_{}_1", l.tag);
    let payments = payments
        .into_iter()
        .map(|(invoice, amount)| (invoice == own_invoice, amount))
        .collect();
    let mrr_sum: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(mrr_delta), 0)::bigint FROM members_paid_subscription_events WHERE subscription_id = $1",
    )
    .bind(&l.subscription)
    .fetch_one(pool)
    .await
    .expect("mrr");
    let active_licenses: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM licenses WHERE member_id = $1 AND status = 'active'",
    )
    .bind(member_id)
    .fetch_one(pool)
    .await
    .expect("licenses");
    let transitions: Vec<(String, String)> = sqlx::query_as(
        "SELECT from_status, to_status FROM members_status_events WHERE member_id = $1 ORDER BY id",
    )
    .bind(member_id)
    .fetch_all(pool)
    .await
    .expect("status events");
    let mut current = "free".to_owned();
    let mut alternate = true;
    for (from, to) in &transitions {
        alternate &= *from == current && from != to;
        current.clone_from(to);
    }
    let unprocessed_stripe_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stripe_events WHERE customer_id = $1 AND status NOT IN ('processed')",
    )
    .bind(&l.customer)
    .fetch_one(pool)
    .await
    .expect("count");
    Converged {
        members_with_email,
        status_events_alternate_from_free_to_final: alternate && current == member_status,
        member_status,
        member_source,
        subscription_status,
        payments,
        mrr_sum,
        active_licenses,
        unprocessed_stripe_events,
    }
}

#[tokio::test]
async fn an_in_order_lifecycle_goes_free_paid_free_with_one_payment_and_a_license() {
    let app = TestApp::spawn().await;
    let l = Lifecycle::new("inorder");
    for event in l.events() {
        let resp = app.send_webhook(&event).await;
        assert_eq!(resp.status(), 200);
        // One at a time: each is processed before the next arrives.
        app.drain_stripe().await;
    }
    let member_id = member_id_for(&app, &l.email).await;
    let transitions: Vec<(String, String)> =
        sqlx::query_as("SELECT from_status, to_status FROM members_status_events WHERE member_id = $1::uuid ORDER BY id")
            .bind(&member_id)
            .fetch_all(&app.pool)
            .await
            .expect("status events");
    assert_eq!(
        transitions,
        [
            ("free".into(), "paid".into()),
            ("paid".into(), "free".into())
        ]
    );

    let deltas: Vec<(String, i64)> = sqlx::query_as(
        "SELECT type, mrr_delta FROM members_paid_subscription_events WHERE subscription_id = $1 ORDER BY id",
    )
    .bind(&l.subscription)
    .fetch_all(&app.pool)
    .await
    .expect("mrr rows");
    assert!(
        deltas.contains(&("created".into(), 2000)) || deltas.iter().any(|(_, d)| *d == 2000),
        "{deltas:?}"
    );
    assert_eq!(deltas.iter().map(|(_, d)| d).sum::<i64>(), 0, "{deltas:?}");

    let licenses: Vec<(String, Option<String>, String, Option<String>)> = sqlx::query_as(
        "SELECT key, site, status, deactivation_reason FROM licenses WHERE member_id = $1::uuid",
    )
    .bind(&member_id)
    .fetch_all(&app.pool)
    .await
    .expect("licenses");
    assert_eq!(licenses.len(), 1, "{licenses:?}");
    let (key, site, status, reason) = &licenses[0];
    assert!(aggregates::LicenseKey::parse(key).is_ok(), "{key}");
    assert_eq!(site.as_deref(), Some(l.site.as_str()));
    assert_eq!(status, "inactive");
    assert_eq!(reason.as_deref(), Some("subscription_canceled"));

    let state = converged(&app, &l).await;
    assert_eq!(state.payments, [(true, 2000)]);
    assert_eq!(state.member_source, "stripe");
    assert_eq!(state.subscription_status, "canceled");

    // The admin's view of the member.
    let detail: Value = app.get_member(&member_id).await.json().await.expect("json");
    assert_eq!(detail["status"], "free");
    assert_eq!(detail["email"], l.email);
    assert_eq!(detail["subscriptions"][0]["id"], l.subscription);
    assert_eq!(detail["subscriptions"][0]["status"], "canceled");
    assert_eq!(detail["license_count"], 1);
    assert_eq!(detail["active_license_count"], 0);

    let timeline: Value = app
        .get(&format!("/v1/members/{member_id}/timeline?limit=100"))
        .await
        .json()
        .await
        .expect("json");
    let items = timeline["items"].as_array().expect("items");
    let types: Vec<&str> = items
        .iter()
        .map(|e| e["event_type"].as_str().expect("type"))
        .collect();
    for expected in [
        "MemberCreated",
        "MemberStatusChanged",
        "SubscriptionCreated",
        "PaymentRecorded",
        "LicenseIssued",
        "LicenseDeactivated",
        "SubscriptionCanceled",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    let ids: Vec<i64> = items
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let page: Value = app
        .get(&format!("/v1/members/{member_id}/timeline?limit=2"))
        .await
        .json()
        .await
        .expect("json");
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let next: Value = app
        .get(&format!(
            "/v1/members/{member_id}/timeline?limit=2&cursor={cursor}"
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(next["items"][0]["id"], items[2]["id"]);
}

/// Deterministic shuffle (xorshift), so a failing seed can be rerun.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = usize::try_from(state % (i as u64 + 1)).unwrap_or(0);
        items.swap(i, j);
    }
}

#[tokio::test]
async fn any_order_duplication_and_parallel_delivery_converge_on_the_in_order_state() {
    let seeds: Vec<u64> = (1..=6).collect();
    let lifecycles: Vec<Lifecycle> = seeds
        .iter()
        .map(|s| Lifecycle::new(&format!("shuffled{s}")))
        .collect();
    let reference = Lifecycle::new("reference");
    let customers: Vec<(String, String)> = lifecycles
        .iter()
        .chain([&reference])
        .map(|l| (l.customer.clone(), l.email.clone()))
        .collect();
    let pairs: Vec<(&str, &str)> = customers
        .iter()
        .map(|(c, e)| (c.as_str(), e.as_str()))
        .collect();
    let stripe = FakeStripe::start(&pairs).await;
    let mut settings = test_stripe_settings();
    settings.secret_key = Some("sk_test_fake".into());
    settings.api_base = Some(stripe.base.clone());
    let app = TestApp::spawn_with(settings).await;

    for event in reference.events() {
        assert_eq!(app.send_webhook(&event).await.status(), 200);
        app.drain_stripe().await;
    }
    let expected = converged(&app, &reference).await;
    assert_eq!(expected.member_status, "free");
    assert_eq!(expected.mrr_sum, 0);
    assert_eq!(expected.unprocessed_stripe_events, 0);

    // Every lifecycle's events shuffled, some delivered twice, all sent at once.
    let mut deliveries = Vec::new();
    for (seed, l) in seeds.iter().zip(&lifecycles) {
        let mut events = l.events();
        let twice: Vec<Value> = events.iter().step_by(2).cloned().collect();
        events.extend(twice);
        shuffle(&mut events, *seed);
        deliveries.extend(events);
    }
    let sends = deliveries.iter().map(|e| app.send_webhook(e));
    for resp in futures::future::join_all(sends).await {
        assert_eq!(resp.status(), 200);
    }
    app.drain_stripe().await;

    for l in &lifecycles {
        let got = converged(&app, l).await;
        assert_eq!(got, expected, "lifecycle {}", l.tag);
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(
        stored,
        7 * 7,
        "each event stored once, duplicates were no-ops"
    );
}

#[tokio::test]
async fn a_subscription_before_its_checkout_waits_for_the_member_without_an_api_key() {
    let app = TestApp::spawn().await;
    let l = Lifecycle::new("early");
    assert_eq!(
        app.send_webhook(&l.subscription_event(
            "created",
            "customer.subscription.created",
            "active",
            0
        ))
        .await
        .status(),
        200
    );
    eventually("the event to wait for its member", || async {
        let error: Option<String> =
            sqlx::query_scalar("SELECT last_error FROM stripe_events WHERE id = $1")
                .bind(format!("evt_{}_created", l.tag))
                .fetch_one(&app.pool)
                .await
                .expect("row");
        error.is_some_and(|e| e.contains("STRIPE_SECRET_KEY"))
    })
    .await;
    let deferred: Value = app
        .get("/v1/stripe-events?status=deferred")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(deferred["items"][0]["id"], format!("evt_{}_created", l.tag));
    assert!(deferred["items"][0]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("no member yet")));

    assert_eq!(
        app.send_webhook(&l.checkout_completed(1)).await.status(),
        200
    );
    app.drain_stripe().await;
    let member_id = member_id_for(&app, &l.email).await;
    let detail: Value = app.get_member(&member_id).await.json().await.expect("json");
    assert_eq!(detail["status"], "paid");
    assert_eq!(detail["active_license_count"], 1);
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM stripe_events WHERE id = $1")
        .bind(format!("evt_{}_created", l.tag))
        .fetch_one(&app.pool)
        .await
        .expect("row");
    assert!(attempts >= 2, "retried: {attempts}");
}

/// An inbox row: status, attempts, and whether its lease has run out.
async fn inbox_row(app: &TestApp, id: &str) -> (String, i32, bool) {
    sqlx::query_as(
        "SELECT status, attempts, coalesce(lease_until < now(), false) FROM stripe_events WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .expect("the event is stored")
}

#[tokio::test]
async fn the_inbox_runs_two_customers_at_once_and_one_customers_events_in_order() {
    let a = Lifecycle::new("stalled");
    let b = Lifecycle::new("meanwhile");
    let stripe = FakeStripe::start(&[(&a.customer, &a.email), (&b.customer, &b.email)]).await;
    stripe.hold(&a.customer);
    let mut settings = test_stripe_settings();
    settings.secret_key = Some("sk_test_fake".into());
    settings.api_base = Some(stripe.base.clone());
    let app = TestApp::spawn_with(settings.clone()).await;

    // A's subscription names no email: its member is fetched from Stripe, which stalls.
    let a_first = format!("evt_{}_created", a.tag);
    let a_second = format!("evt_{}_checkout", a.tag);
    let a_subscription =
        a.subscription_event("created", "customer.subscription.created", "active", 0);
    assert_eq!(app.send_webhook(&a_subscription).await.status(), 200);
    let fetch = format!("GET /v1/customers/{}", a.customer);
    eventually("A's customer to be fetched", || async {
        stripe.requested().contains(&fetch)
    })
    .await;
    assert_eq!(
        app.send_webhook(&a.checkout_completed(1)).await.status(),
        200
    );

    // B's whole lifecycle goes through while A's first event is stuck.
    for event in b.events() {
        assert_eq!(app.send_webhook(&event).await.status(), 200);
    }
    eventually("B's events to be processed", || async {
        let processed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM stripe_events WHERE customer_id = $1 AND status = 'processed'",
        )
        .bind(&b.customer)
        .fetch_one(&app.pool)
        .await
        .expect("count");
        processed == 7
    })
    .await;
    // A second instance on the same database, and the first event's lease run out: a claim
    // by either instance still leaves A alone, as the worker holding it is alive.
    let mut other_settings = crate::helpers::test_settings().await;
    other_settings.stripe = settings;
    let _other = TestApp::spawn_settings(&app.database_url, other_settings).await;
    eventually("A's first lease to run out", || async {
        inbox_row(&app, &a_first).await.2
    })
    .await;
    let plan = event("evt_after_lease", "plan.created", a.start, fixture("plan"));
    assert_eq!(app.send_webhook(&plan).await.status(), 200);
    eventually("an event after the lease to be handled", || async {
        inbox_row(&app, "evt_after_lease").await.0 == "ignored"
    })
    .await;
    assert_eq!(
        inbox_row(&app, &a_first).await,
        ("processing".to_owned(), 1, true)
    );
    assert_eq!(inbox_row(&app, &a_second).await.0, "pending");
    let a_members: i64 =
        sqlx::query_scalar("SELECT count(*) FROM member_list WHERE lower(email) = lower($1)")
            .bind(&a.email)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(a_members, 0, "A's checkout waited for A's subscription");

    stripe.release(&a.customer);
    app.drain_stripe().await;
    // In order: the subscription created A's member from the fetched customer, then the
    // checkout (whose own name for them is another) found that member.
    let member_id = member_id_for(&app, &a.email).await;
    let member: Value = app.get_member(&member_id).await.json().await.expect("json");
    assert_eq!(member["name"], "Fetched Customer");
    assert_eq!(member["status"], "paid");
    let done: Vec<(String, i32)> = sqlx::query_as(
        "SELECT id, attempts FROM stripe_events WHERE customer_id = $1 ORDER BY processed_at",
    )
    .bind(&a.customer)
    .fetch_all(&app.pool)
    .await
    .expect("rows");
    assert_eq!(done, [(a_first, 1), (a_second, 1)]);
    assert_eq!(
        stripe.requested().iter().filter(|r| **r == fetch).count(),
        1,
        "one worker ran A's first event"
    );
}

/// Delivers a new customer's `customer.subscription.created` with no checkout before it (and no
/// member to find): it has to wait. Returns the lifecycle and the event's id.
async fn subscription_before_its_checkout(app: &TestApp, tag: &str) -> (Lifecycle, String) {
    let l = Lifecycle::new(tag);
    let id = format!("evt_{}_created", l.tag);
    app.send_webhook(&l.subscription_event(
        "created",
        "customer.subscription.created",
        "active",
        0,
    ))
    .await;
    (l, id)
}

/// The admin API's view of a stored Stripe event.
async fn stored_event(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/stripe-events/{id}"))
        .await
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn a_subscription_before_its_checkout_is_deferred_and_runs_right_after_it() {
    // A failure would be retried in an hour: only the deferral gets this done in time.
    let mut slow_retries = test_stripe_settings();
    slow_retries.retry_base = std::time::Duration::from_secs(3600);
    slow_retries.max_retry_delay = std::time::Duration::from_secs(3600);
    let app = TestApp::spawn_with(slow_retries).await;
    let (l, id) = subscription_before_its_checkout(&app, "deferred").await;
    eventually("the subscription to be deferred", || async {
        inbox_row(&app, &id).await.0 == "deferred"
    })
    .await;
    let stored = stored_event(&app, &id).await;
    assert_eq!(stored["status"], "deferred");
    assert!(stored["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("no member yet")));
    let failed: Value = app
        .get("/v1/stripe-events?status=failed")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(failed["items"], json!([]));

    app.send_webhook(&l.checkout_completed(1)).await;
    app.drain_stripe().await;
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT id, status FROM stripe_events ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("rows");
    assert_eq!(
        statuses,
        [
            (format!("evt_{}_checkout", l.tag), "processed".to_owned()),
            (id, "processed".to_owned()),
        ]
    );
    let member_id = member_id_for(&app, &l.email).await;
    let detail: Value = app.get_member(&member_id).await.json().await.expect("json");
    assert_eq!(detail["status"], "paid");
    assert_eq!(detail["active_license_count"], 1);
    let subscription: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1")
        .bind(&l.subscription)
        .fetch_one(&app.pool)
        .await
        .expect("subscription");
    assert_eq!(subscription, "active");
}

#[tokio::test]
async fn a_customers_events_claimed_together_run_the_deferred_one_after_its_checkout() {
    let l = Lifecycle::new("together");
    let stripe = FakeStripe::start(&[(&l.customer, &l.email)]).await;
    let mut store_only = test_stripe_settings();
    store_only.workers = 0;
    store_only.retry_base = std::time::Duration::from_secs(3600);
    store_only.max_retry_delay = std::time::Duration::from_secs(3600);
    store_only.secret_key = Some("sk_test_fake".into());
    store_only.api_base = Some(stripe.base.clone());
    let first = TestApp::spawn_with(store_only.clone()).await;
    // Stripe's order: the subscription (created first) has no member yet; the checkout, in
    // the inbox already, names it, so the subscription waits for it rather than ask Stripe.
    for event in [
        l.subscription_event("created", "customer.subscription.created", "active", 0),
        l.checkout_completed(1),
    ] {
        assert_eq!(first.send_webhook(&event).await.status(), 200);
    }
    let mut settings = crate::helpers::test_settings().await;
    settings.stripe = StripeSettings {
        workers: 2,
        ..store_only
    };
    let second = TestApp::spawn_settings(&first.database_url, settings).await;
    second.drain_stripe().await;
    let rows: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT id, status, attempts FROM stripe_events ORDER BY id")
            .fetch_all(&second.pool)
            .await
            .expect("rows");
    assert_eq!(
        rows,
        [
            (format!("evt_{}_checkout", l.tag), "processed".to_owned(), 1),
            (format!("evt_{}_created", l.tag), "processed".to_owned(), 2),
        ]
    );
    let member_id = member_id_for(&second, &l.email).await;
    let detail: Value = second
        .get_member(&member_id)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(detail["status"], "paid");
    assert_eq!(detail["name"], l.customer_name.as_str());
    assert_eq!(stripe.requested(), Vec::<String>::new());
}

/// A returning customer's new subscription before its checkout, claimed together: it waits
/// for the checkout without asking for the customer's link, and both end as they would in
/// Stripe's order, on the member the customer already had.
#[tokio::test]
async fn a_returning_customers_subscription_claimed_with_its_checkout_ends_on_their_member() {
    let first_purchase = Lifecycle::new("returning");
    let mut second_purchase = Lifecycle::new("returning2");
    second_purchase.customer = first_purchase.customer.clone();
    second_purchase.email = first_purchase.email.clone();
    second_purchase.start = first_purchase.start + 86_400;
    let stripe = FakeStripe::start(&[(&first_purchase.customer, &first_purchase.email)]).await;
    let mut store_only = test_stripe_settings();
    store_only.workers = 0;
    store_only.secret_key = Some("sk_test_fake".into());
    store_only.api_base = Some(stripe.base.clone());
    let intake = TestApp::spawn_with(store_only.clone()).await;
    let processing = |settings: StripeSettings| {
        let url = intake.database_url.clone();
        async move {
            let mut all = crate::helpers::test_settings().await;
            all.stripe = StripeSettings {
                workers: 2,
                ..settings
            };
            TestApp::spawn_settings(&url, all).await
        }
    };
    // The first purchase makes the member and links the customer.
    for event in [
        first_purchase.checkout_completed(1),
        first_purchase.subscription_event("created", "customer.subscription.created", "active", 0),
    ] {
        assert_eq!(intake.send_webhook(&event).await.status(), 200);
    }
    let worker = processing(store_only.clone()).await;
    worker.drain_stripe().await;
    let member_id = member_id_for(&worker, &first_purchase.email).await;
    worker.stop().await;

    // The second, stored while no worker runs, is claimed as one group.
    for event in [
        second_purchase.subscription_event("created", "customer.subscription.created", "active", 0),
        second_purchase.checkout_completed(1),
    ] {
        assert_eq!(intake.send_webhook(&event).await.status(), 200);
    }
    let worker = processing(store_only).await;
    worker.drain_stripe().await;
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT id, status, attempts FROM stripe_events WHERE id LIKE 'evt_returning2_%' ORDER BY id",
    )
    .fetch_all(&worker.pool)
    .await
    .expect("rows");
    assert_eq!(
        rows,
        [
            (
                "evt_returning2_checkout".to_owned(),
                "processed".to_owned(),
                1
            ),
            (
                "evt_returning2_created".to_owned(),
                "processed".to_owned(),
                2
            ),
        ]
    );
    let owners: Vec<(String, uuid::Uuid)> =
        sqlx::query_as("SELECT id, member_id FROM subscriptions ORDER BY id")
            .fetch_all(&worker.pool)
            .await
            .expect("subscriptions");
    let member: uuid::Uuid = member_id.parse().expect("uuid");
    assert_eq!(
        owners,
        [
            (first_purchase.subscription.clone(), member),
            (second_purchase.subscription.clone(), member)
        ]
    );
    let members: i64 = sqlx::query_scalar("SELECT count(*) FROM member_list")
        .fetch_one(&worker.pool)
        .await
        .expect("count");
    assert_eq!(members, 1);
}

#[tokio::test]
async fn a_deferred_event_whose_event_never_comes_fails_with_why() {
    let mut no_waiting = test_stripe_settings();
    no_waiting.defer_limit = std::time::Duration::ZERO;
    let app = TestApp::spawn_with(no_waiting).await;
    let (_, id) = subscription_before_its_checkout(&app, "nevercomes").await;
    eventually("the subscription to fail", || async {
        inbox_row(&app, &id).await.0 == "failed"
    })
    .await;
    let stored = stored_event(&app, &id).await;
    let error = stored["last_error"].as_str().expect("an error");
    assert!(
        error.starts_with("gave up waiting after 0s for another event of the customer: ")
            && error.contains("no member yet"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_member_is_created_from_the_customer_fetched_from_stripe() {
    let l = Lifecycle::new("fetched");
    let stripe = FakeStripe::start(&[(&l.customer, &l.email)]).await;
    let mut settings = test_stripe_settings();
    settings.secret_key = Some("sk_test_fake".into());
    settings.api_base = Some(stripe.base.clone());
    let app = TestApp::spawn_with(settings).await;
    assert_eq!(
        app.send_webhook(&l.subscription_event(
            "created",
            "customer.subscription.created",
            "active",
            0
        ))
        .await
        .status(),
        200
    );
    app.drain_stripe().await;
    let member_id = member_id_for(&app, &l.email).await;
    let member: Value = app.get_member(&member_id).await.json().await.expect("json");
    assert_eq!(member["source"], "stripe");
    assert_eq!(member["name"], "Fetched Customer");
    assert_eq!(member["status"], "paid");
    assert_eq!(
        stripe.requested(),
        [format!("GET /v1/customers/{}", l.customer)]
    );
    let linked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stripe_customers WHERE customer_id = $1")
            .bind(&l.customer)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(linked, 1);
}

#[tokio::test]
async fn an_existing_member_with_the_email_is_linked_not_duplicated() {
    let app = TestApp::spawn().await;
    let l = Lifecycle::new("existing");
    let member = app.member(&l.email.to_uppercase()).await;
    assert_eq!(
        app.send_webhook(&l.checkout_completed(1)).await.status(),
        200
    );
    app.drain_stripe().await;
    assert_eq!(
        member_id_for(&app, &l.email).await,
        member["id"].as_str().expect("id")
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM member_list")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(count, 1);
}

#[tokio::test]
async fn bad_signatures_and_stale_timestamps_are_refused_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let l = Lifecycle::new("refused");
    let payload = l.checkout_completed(1).to_string();
    let now = chrono::Utc::now().timestamp();

    let wrong_secret = signature(&payload, "whsec_wrong", now);
    assert_problem(
        app.send_raw_webhook(payload.clone(), Some(wrong_secret))
            .await,
        400,
    )
    .await;
    let stale = signature(&payload, WEBHOOK_SECRET, now - 301);
    let problem = assert_problem(
        app.send_raw_webhook(payload.clone(), Some(stale)).await,
        400,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("tolerance"),
        "{problem}"
    );
    assert_problem(app.send_raw_webhook(payload.clone(), None).await, 400).await;
    assert_problem(
        app.send_raw_webhook(payload.clone(), Some("garbage".into()))
            .await,
        400,
    )
    .await;
    let tampered = payload.replace(&l.email, "mallory@example.com");
    let sig = signature(&payload, WEBHOOK_SECRET, now);
    assert_problem(app.send_raw_webhook(tampered, Some(sig)).await, 400).await;

    let big = json!({"id": "evt_big", "padding": "x".repeat(1024 * 1024 + 10)}).to_string();
    let sig = signature(&big, WEBHOOK_SECRET, now);
    assert_problem(app.send_raw_webhook(big, Some(sig)).await, 413).await;

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 0);

    // Signed with the other configured secret (rotation): accepted.
    let rotated = signature(&payload, "whsec_old_rotated_out", now);
    assert_eq!(
        app.send_raw_webhook(payload, Some(rotated)).await.status(),
        200
    );
}

#[tokio::test]
async fn duplicates_are_stored_once_and_unknown_types_are_ignored() {
    let app = TestApp::spawn().await;
    let plan = event(
        "evt_plan_created",
        "plan.created",
        1_764_000_000,
        fixture("plan"),
    );
    let first: Value = app.send_webhook(&plan).await.json().await.expect("json");
    let second: Value = app.send_webhook(&plan).await.json().await.expect("json");
    assert_eq!(first, json!({"received": true, "duplicate": false}));
    assert_eq!(second, json!({"received": true, "duplicate": true}));
    app.drain_stripe().await;
    let event: Value = app
        .get("/v1/stripe-events/evt_plan_created")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(event["status"], "ignored");
    assert_eq!(event["type"], "plan.created");
    assert!(event["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("not handled")));
    let ignored: Value = app
        .get("/v1/stripe-events?status=ignored")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ignored["items"].as_array().map(Vec::len), Some(1));
    assert_problem(app.get("/v1/stripe-events/evt_nope").await, 404).await;
}

#[tokio::test]
async fn an_event_is_stored_byte_for_byte_as_sent_and_processed_from_that_text() {
    let app = TestApp::spawn().await;
    let l = Lifecycle::new("verbatim");
    let checkout = l.checkout_completed(1);
    // Stripe sends its events indented; the signature covers the body as sent.
    let body = serde_json::to_string_pretty(&checkout).expect("json");
    let sig = signature(&body, WEBHOOK_SECRET, chrono::Utc::now().timestamp());
    assert_eq!(
        app.send_raw_webhook(body.clone(), Some(sig)).await.status(),
        200
    );
    let stored: String =
        sqlx::query_scalar("SELECT payload::text FROM stripe_events WHERE id = $1")
            .bind(checkout["id"].as_str())
            .fetch_one(&app.pool)
            .await
            .expect("the stored event");
    assert_eq!(stored, body, "the payload should be the body as received");
    app.drain_stripe().await;
    let event: Value = app
        .get(&format!(
            "/v1/stripe-events/{}",
            checkout["id"].as_str().expect("id")
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(event["status"], "processed", "{event}");
    member_id_for(&app, &l.email).await;
}

#[tokio::test]
async fn an_event_the_typed_parser_rejects_is_stored_and_processed_from_raw_json() {
    let app = TestApp::spawn().await;
    let l = Lifecycle::new("rawjson");
    let mut checkout = l.checkout_completed(1);
    // A field async-stripe requires, removed: its parser refuses; ours does not need it.
    checkout["data"]["object"]
        .as_object_mut()
        .expect("object")
        .remove("created");
    checkout["data"]["object"]["after_expiration"] = json!("not an object");
    assert_eq!(app.send_webhook(&checkout).await.status(), 200);
    app.drain_stripe().await;
    let stored: Value = app
        .get(&format!("/v1/stripe-events/evt_{}_checkout", l.tag))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        stored["parsed"], false,
        "the typed parser should have rejected it"
    );
    assert_eq!(stored["status"], "processed");
    // An event as Stripe sends it is one the typed parser accepts.
    let other = Lifecycle::new("typed").checkout_completed(1);
    assert_eq!(app.send_webhook(&other).await.status(), 200);
    let stored: Value = app
        .get(&format!(
            "/v1/stripe-events/{}",
            other["id"].as_str().expect("id")
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(stored["parsed"], true, "{stored}");
    member_id_for(&app, &l.email).await;
}

#[tokio::test]
async fn the_webhook_answers_503_when_the_database_is_down() {
    let app = TestApp::spawn().await;
    app.pool.close().await;
    let l = Lifecycle::new("dbdown");
    let resp = app.send_webhook(&l.checkout_completed(1)).await;
    assert!(resp.headers().get("retry-after").is_some());
    assert_problem(resp, 503).await;
}

#[tokio::test]
async fn an_event_claimed_by_a_worker_that_dies_is_retried_not_lost() {
    let mut store_only = test_stripe_settings();
    store_only.workers = 0;
    let first = TestApp::spawn_with(store_only).await;
    let l = Lifecycle::new("crash");
    assert_eq!(
        first.send_webhook(&l.checkout_completed(1)).await.status(),
        200
    );

    // A worker claims the event, then its process dies before it records the outcome.
    let mut doomed = PgConnection::connect(&first.database_url)
        .await
        .expect("connect");
    let claimed =
        memberledger::stripe::inbox::claim(&mut doomed, std::time::Duration::from_secs(1))
            .await
            .expect("claim")
            .expect("an event to claim");
    assert_eq!(claimed.id, format!("evt_{}_checkout", l.tag));
    drop(doomed);

    let second = TestApp::spawn_on(&first.database_url).await;
    second.drain_stripe().await;
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM stripe_events WHERE id = $1")
            .bind(&claimed.id)
            .fetch_one(&second.pool)
            .await
            .expect("row");
    assert_eq!((status.as_str(), attempts), ("processed", 2));
    member_id_for(&second, &l.email).await;
}

#[tokio::test]
async fn a_claimed_group_given_back_is_due_at_once_for_another_worker() {
    let mut store_only = test_stripe_settings();
    store_only.workers = 0;
    let app = TestApp::spawn_with(store_only).await;
    let l = Lifecycle::new("giveback");
    for body in [
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "active", 2),
    ] {
        assert_eq!(app.send_webhook(&body).await.status(), 200);
    }
    let lease = std::time::Duration::from_secs(3600);

    // A stopping dispatcher's queue: claimed, locked, never run.
    let mut stopping = PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    let groups = memberledger::stripe::inbox::claim_groups(&mut stopping, &[], 4, 32, lease)
        .await
        .expect("claim");
    assert_eq!(groups.len(), 1, "one customer, one group");
    let ids: Vec<String> = groups[0].events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 2);
    let mut other = PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    let none = memberledger::stripe::inbox::claim_groups(&mut other, &[], 4, 32, lease)
        .await
        .expect("claim");
    assert!(none.is_empty(), "the claimed group is held: {none:?}");

    memberledger::stripe::inbox::release(&mut stopping, &ids)
        .await
        .expect("release");
    let customers: Vec<String> = groups.into_iter().filter_map(|g| g.customer_id).collect();
    memberledger::stripe::inbox::unlock(&mut stopping, &customers)
        .await
        .expect("unlock");
    let rows: Vec<(String, i32)> =
        sqlx::query_as("SELECT status, attempts FROM stripe_events WHERE id = ANY($1) ORDER BY id")
            .bind(&ids)
            .fetch_all(&app.pool)
            .await
            .expect("rows");
    assert_eq!(
        rows,
        vec![("pending".to_owned(), 0), ("pending".to_owned(), 0)]
    );

    // Not an hour later, when the lease would have run out: now.
    let again = memberledger::stripe::inbox::claim_groups(&mut other, &[], 4, 32, lease)
        .await
        .expect("claim");
    let mut reclaimed: Vec<String> = again
        .iter()
        .flat_map(|g| g.events.iter().map(|e| e.id.clone()))
        .collect();
    reclaimed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(reclaimed, expected);
}

#[tokio::test]
async fn failed_events_can_be_retried_by_the_operator() {
    let mut slow_retries = test_stripe_settings();
    slow_retries.retry_base = std::time::Duration::from_secs(3600);
    slow_retries.max_retry_delay = std::time::Duration::from_secs(3600);
    // No waiting for another event: a subscription without its member fails at once.
    slow_retries.defer_limit = std::time::Duration::ZERO;
    let app = TestApp::spawn_with(slow_retries).await;
    let l = Lifecycle::new("operator");
    let id = format!("evt_{}_created", l.tag);
    app.send_webhook(&l.subscription_event(
        "created",
        "customer.subscription.created",
        "active",
        0,
    ))
    .await;
    eventually("the event to fail", || async {
        let status: String = sqlx::query_scalar("SELECT status FROM stripe_events WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .expect("row");
        status == "failed"
    })
    .await;
    app.send_webhook(&l.checkout_completed(1)).await;
    eventually("the checkout to be processed", || async {
        let status: String = sqlx::query_scalar("SELECT status FROM stripe_events WHERE id = $1")
            .bind(format!("evt_{}_checkout", l.tag))
            .fetch_one(&app.pool)
            .await
            .expect("row");
        status == "processed"
    })
    .await;
    // Its next automatic attempt is an hour away: the operator retries now.
    let resp = app
        .client
        .post(app.url(&format!("/v1/stripe-events/{id}/retry")))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    app.drain_stripe().await;
    let resp = app
        .client
        .post(app.url(&format!("/v1/stripe-events/{id}/retry")))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 409).await;
    let member_id = member_id_for(&app, &l.email).await;
    let detail: Value = app.get_member(&member_id).await.json().await.expect("json");
    assert_eq!(detail["status"], "paid");
}

#[tokio::test]
async fn a_refund_is_recorded_against_the_paid_invoice() {
    let app = TestApp::spawn().await;
    let l = Lifecycle::new("refund");
    let invoice_id = format!("in_{}_1", l.tag);
    let mut invoice = l.invoice_paid(&invoice_id, 2);
    invoice["data"]["object"]["payment_intent"] = json!("pi_refund");
    for e in [
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "active", 0),
        invoice,
    ] {
        app.send_webhook(&e).await;
    }
    app.drain_stripe().await;
    let mut charge = fixture("charge");
    charge["id"] = json!("ch_refund");
    charge["customer"] = json!(l.customer);
    charge["payment_intent"] = json!("pi_refund");
    charge["amount"] = json!(2000);
    charge["amount_refunded"] = json!(500);
    charge["currency"] = json!("usd");
    charge["refunded"] = json!(false);
    app.send_webhook(&event(
        "evt_refund_1",
        "charge.refunded",
        l.start + 50,
        charge,
    ))
    .await;
    app.drain_stripe().await;
    let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT kind, amount, invoice_id FROM members_payment_events WHERE subscription_id = $1 ORDER BY id",
    )
    .bind(&l.subscription)
    .fetch_all(&app.pool)
    .await
    .expect("rows");
    assert_eq!(
        rows,
        [
            ("payment".into(), 2000, Some(invoice_id.clone())),
            ("refund".into(), 500, Some(invoice_id))
        ]
    );
}

/// The subscription with one quantity item (no site) of `quantity` seats.
fn seats_subscription(
    l: &Lifecycle,
    name: &str,
    status: &str,
    offset: i64,
    quantity: u32,
    with_item: bool,
) -> Value {
    let mut sub = l.subscription_object(status, offset, false);
    if with_item {
        let item = &mut sub["items"]["data"][0];
        item["metadata"] = json!({});
        item["quantity"] = json!(quantity);
    } else {
        sub["items"]["data"] = json!([]);
    }
    event(
        &format!("evt_{}_{name}", l.tag),
        "customer.subscription.updated",
        l.start + offset,
        sub,
    )
}

#[tokio::test]
async fn seat_licenses_follow_quantity_status_and_item_removal() {
    let app = TestApp::spawn().await;
    let l = Lifecycle::new("seats");
    let licenses = || async {
        let rows: Vec<(Option<i32>, String, Option<String>)> = sqlx::query_as(
            "SELECT seat, status, deactivation_reason FROM licenses WHERE subscription_id = $1 ORDER BY seat",
        )
        .bind(&l.subscription)
        .fetch_all(&app.pool)
        .await
        .expect("licenses");
        rows
    };
    let deliver = |event: Value| {
        let app = &app;
        async move {
            assert_eq!(app.send_webhook(&event).await.status(), 200);
            app.drain_stripe().await;
        }
    };
    let active = |seat: i32| (Some(seat), "active".to_owned(), None::<String>);
    let inactive =
        |seat: i32, reason: &str| (Some(seat), "inactive".to_owned(), Some(reason.to_owned()));

    deliver(l.checkout_completed(1)).await;
    deliver(seats_subscription(
        &l,
        "incomplete",
        "incomplete",
        2,
        3,
        true,
    ))
    .await;
    assert_eq!(licenses().await, [], "no license before payment");

    deliver(seats_subscription(&l, "active", "active", 3, 3, true)).await;
    assert_eq!(licenses().await, [active(1), active(2), active(3)]);
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM licenses WHERE subscription_id = $1")
            .bind(&l.subscription)
            .fetch_all(&app.pool)
            .await
            .expect("keys");
    assert_eq!(
        keys.iter().collect::<std::collections::HashSet<_>>().len(),
        3,
        "distinct keys"
    );

    deliver(seats_subscription(&l, "fewer", "active", 4, 2, true)).await;
    assert_eq!(
        licenses().await,
        [active(1), active(2), inactive(3, "quantity_reduced")]
    );

    let mut failed = l.invoice_paid(&format!("in_{}_2", l.tag), 5);
    failed["type"] = json!("invoice.payment_failed");
    failed["id"] = json!("evt_seats_failed");
    failed["data"]["object"]["amount_paid"] = json!(0);
    failed["data"]["object"]["attempt_count"] = json!(1);
    failed["data"]["object"]["status"] = json!("open");
    deliver(failed).await;
    let failures: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, amount FROM members_payment_events WHERE subscription_id = $1 ORDER BY id",
    )
    .bind(&l.subscription)
    .fetch_all(&app.pool)
    .await
    .expect("rows");
    assert_eq!(failures, [("failure".to_owned(), 2000)]);

    deliver(seats_subscription(&l, "past_due", "past_due", 6, 2, true)).await;
    assert_eq!(
        licenses().await,
        [active(1), active(2), inactive(3, "quantity_reduced")],
        "past due is a grace period"
    );
    deliver(seats_subscription(&l, "unpaid", "unpaid", 7, 2, true)).await;
    assert_eq!(
        licenses().await,
        [
            inactive(1, "subscription_inactive"),
            inactive(2, "subscription_inactive"),
            inactive(3, "quantity_reduced")
        ]
    );
    deliver(seats_subscription(&l, "again", "active", 8, 3, true)).await;
    assert_eq!(
        licenses().await,
        [active(1), active(2), active(3)],
        "reactivated, seat 3 back"
    );

    deliver(seats_subscription(&l, "removed", "active", 9, 3, false)).await;
    assert_eq!(
        licenses().await,
        [
            inactive(1, "item_removed"),
            inactive(2, "item_removed"),
            inactive(3, "item_removed")
        ]
    );
    let member_id = member_id_for(&app, &l.email).await;
    let status: String = sqlx::query_scalar("SELECT status FROM member_list WHERE id = $1::uuid")
        .bind(&member_id)
        .fetch_one(&app.pool)
        .await
        .expect("status");
    assert_eq!(
        status, "paid",
        "an active subscription without items still pays"
    );
}
