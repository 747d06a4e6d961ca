//! Erasure (#17): `DELETE /v1/members/{id}` and `DELETE /v1/me` leave no byte of the member's
//! address, name or note anywhere in the database (dumped with `pg_dump` and searched), in an
//! export or in the log read back, also after every projection is rebuilt; the log keeps every
//! event; the address can sign up again; subscriptions Stripe has not ended are refused or
//! canceled, and the customer kept or deleted, as configured.

use std::path::PathBuf;
use std::process::Command;

use memberledger::erasure::{ActiveSubscriptions, StripeCustomers};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{assert_problem, eventually, free_port, TestApp};
use crate::member_imports_http::{form, upload};
use crate::stripe_support::{projection_list, FakeStripe, Lifecycle};

/// A server on `stripe` with the given erasure settings.
async fn app(
    stripe: &FakeStripe,
    active: ActiveSubscriptions,
    customers: StripeCustomers,
) -> TestApp {
    let base = stripe.base.clone();
    TestApp::spawn_custom(move |s| {
        s.stripe.secret_key = Some("sk_test_fake".into());
        s.stripe.api_base = Some(base);
        s.erasure.active_subscriptions = active;
        s.erasure.stripe_customers = customers;
    })
    .await
}

/// `pg_dump` of the server's version: on PATH, or Debian's.
fn pg_dump() -> PathBuf {
    let on_path = Command::new("pg_dump").arg("--version").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return PathBuf::from("pg_dump");
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed")
        .filter_map(|d| d.ok().map(|d| d.path().join("bin/pg_dump")))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().expect("pg_dump is installed")
}

/// The whole database as `pg_dump` writes it (schema and data).
fn dump(database_url: &str) -> String {
    let out = Command::new(pg_dump())
        .arg("--no-owner")
        .arg(database_url)
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Which of `needles` occur in `haystack`, ignoring case.
fn found<'a>(haystack: &str, needles: &[&'a str]) -> Vec<&'a str> {
    let haystack = haystack.to_lowercase();
    needles
        .iter()
        .copied()
        .filter(|n| haystack.contains(&n.to_lowercase()))
        .collect()
}

async fn member_id_of(app: &TestApp, email: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM member_list WHERE email = $1")
        .bind(email)
        .fetch_one(&app.pool)
        .await
        .expect("the member")
}

async fn count(app: &TestApp, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn after_erasure_no_byte_of_the_member_is_in_the_database_an_export_or_a_rebuild_and_the_email_signs_up_again(
) {
    let tag = format!("erase{}", Uuid::now_v7().simple());
    let mut l = Lifecycle::new(&tag);
    l.customer_name = format!("Zebulon Quaxworth {tag}");
    let stripe = FakeStripe::start(&[(l.customer.as_str(), l.email.as_str())]).await;
    let app = app(&stripe, ActiveSubscriptions::Refuse, StripeCustomers::Keep).await;
    let note = format!("Allergic to erasure {tag}");
    let new_name = format!("Ottoline Vexbridge {tag}");

    // Outbound webhooks copy member events into their deliveries (to a receiver that is down).
    let resp = app
        .admin(
            Method::POST,
            "/v1/webhooks",
            Some(
                json!({ "url": format!("http://127.0.0.1:{}/hook", free_port()),
                         "event_types": ["MemberCreated", "MemberUpdated", "MemberErased"] }),
            ),
        )
        .await;
    assert_eq!(resp.status(), 201);

    // A customer who subscribed through Checkout, paid, then canceled: Stripe's events (with
    // the address and name) in the inbox, a member created by the translator.
    for mut event in l.events() {
        // A string with a NUL in an invoice (Stripe sends what its users typed): the inbox's
        // `json` keeps it, where `jsonb` cannot hold it, and the erasure scrubs that event too.
        if event["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("invoice."))
        {
            event["data"]["object"]["footer"] = json!("line\u{0}break");
        }
        assert_eq!(app.send_webhook(&event).await.status(), 200);
    }
    app.drain_stripe().await;
    let nul_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stripe_events WHERE status = 'processed' AND type LIKE 'invoice.%'
           AND strpos(payload::text, '\\u0000') > 0",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert!(
        nul_events > 0,
        "the invoice with a NUL is stored and processed"
    );
    let member_id = member_id_of(&app, &l.email).await;
    let resp = app
        .patch_member(
            &member_id.to_string(),
            json!({ "name": new_name, "note": note }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    // A sign-in code (codes, rate-limit counters, an email in the outbox) and a session.
    let token = app.sign_in(&l.email).await;
    // An import report row naming the address.
    let csv = format!("email,created_at\n{},not-a-date\n", l.email);
    let resp = upload(&app, form("file", &csv)).await;
    assert_eq!(resp.status(), 202);
    eventually("the import's refusal", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM member_import_refusals WHERE email = $1")
            .bind(&l.email)
            .fetch_one(&app.pool)
            .await
            .expect("count")
            == 1
    })
    .await;
    app.settle().await;

    let secrets = [l.email.as_str(), l.customer_name.as_str(), &new_name, &note];
    // The search can fail: before the erasure the database holds all of them...
    assert_eq!(found(&dump(&app.database_url), &secrets), secrets.to_vec());
    // ...but the log holds none in clear: personal fields are sealed on append.
    let log: Vec<String> = sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE aggregate_type = 'Member' AND aggregate_id = $1",
    )
    .bind(member_id.to_string())
    .fetch_all(&app.pool)
    .await
    .expect("log");
    assert!(found(&log.concat(), &secrets).is_empty(), "{log:?}");
    assert!(log.concat().contains("pii:v1:"));
    // One event as an older version wrote it, in clear (before sealing existed).
    let rewritten = sqlx::query(
        "UPDATE events SET payload = jsonb_set(jsonb_set(payload::jsonb,
             '{MemberUpdated,name}', to_jsonb($2::text)), '{MemberUpdated,note}', to_jsonb($3::text))::json
         WHERE aggregate_type = 'Member' AND aggregate_id = $1 AND event_type = 'MemberUpdated'",
    )
    .bind(member_id.to_string())
    .bind(&new_name)
    .bind(&note)
    .execute(&app.pool)
    .await
    .expect("legacy event");
    assert_eq!(rewritten.rows_affected(), 1);
    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");

    // Sign-in counters are per address, keyed by its hash (no address stored).
    let counters = || async {
        let suffixes = memberledger::rate_limit::address_key_suffixes(&l.email.to_lowercase());
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM rate_limits WHERE split_part(key, ':email:', 2) = ANY($1)",
        )
        .bind(&suffixes[..1])
        .fetch_one(&app.pool)
        .await
        .expect("count")
    };
    assert!(counters().await >= 2, "code and verify counters");

    let path = format!("/v1/members/{member_id}");
    let resp = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(resp.status(), 204, "{:?}", resp.text().await);
    app.drain_stripe().await;

    // Gone for the API, the session ended, a second erasure finds nothing.
    assert_problem(app.get(&path).await, 404).await;
    assert_problem(app.admin(Method::DELETE, &path, None).await, 404).await;
    assert_eq!(app.get_as(&token, "/v1/me").await.status(), 401);
    // The timeline (asynchronous) dropped the member's rows.
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM member_timeline WHERE member_id = $1",
            member_id
        )
        .await,
        0
    );
    // The log kept every event and gained the erasure.
    let erased: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_id = $1 AND global_position >
             (SELECT max(global_position) FROM events WHERE aggregate_id = $1 AND event_type = 'MemberUpdated')
         ORDER BY global_position",
    )
    .bind(member_id.to_string())
    .fetch_all(&app.pool)
    .await
    .expect("events");
    assert_eq!(erased.last().map(String::as_str), Some("MemberErased"));
    let events_after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert!(events_after > events_before);

    assert_eq!(counters().await, 0, "the address's counters are gone");
    // Nowhere in the database...
    assert_eq!(
        found(&dump(&app.database_url), &secrets),
        Vec::<&str>::new()
    );
    // ...nor in the member export, nor in the log read back (the export API, the events API).
    let export = app
        .get("/v1/members/export.csv")
        .await
        .text()
        .await
        .expect("csv");
    assert!(found(&export, &secrets).is_empty());
    let page = app
        .get("/v1/events?aggregate_type=Member&limit=1000")
        .await
        .text()
        .await
        .expect("events");
    assert!(found(&page, &secrets).is_empty(), "{page}");
    let page: Value = serde_json::from_str(&page).expect("json");
    let created = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["aggregate_id"] == member_id.to_string() && e["event_type"] == "MemberCreated")
        .expect("the member's creation is still in the log");
    assert_eq!(
        created["payload"]["MemberCreated"]["email"],
        format!("erased-{member_id}@erased.invalid")
    );

    // Every projection rebuilds from the log, and the rebuild brings nothing back.
    let rebuildable: Vec<_> = projection_list()
        .iter()
        .filter(|p| p.rebuildable())
        .cloned()
        .collect();
    memberledger::rebuild::rebuild_many(&app.pool, &rebuildable, |_| {})
        .await
        .expect("every projection rebuilds");
    assert_eq!(
        found(&dump(&app.database_url), &secrets),
        Vec::<&str>::new()
    );
    assert_problem(app.get(&path).await, 404).await;

    // The address is free: it signs up again as a new member.
    let again = app.member(&l.email).await;
    assert_ne!(again["id"], member_id.to_string());
    assert_eq!(again["email"], l.email.as_str());
}

#[tokio::test]
async fn a_member_deletes_their_own_account() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app(&stripe, ActiveSubscriptions::Refuse, StripeCustomers::Keep).await;
    let email = format!("self-{}@example.com", Uuid::now_v7().simple());
    let member = app.member(&email).await;
    let token = app.sign_in(&email).await;

    assert_eq!(
        app.client
            .delete(app.url("/v1/me"))
            .send()
            .await
            .expect("sent")
            .status(),
        401,
        "a session is needed"
    );
    let resp = app
        .client
        .delete(app.url("/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    assert_eq!(app.get_as(&token, "/v1/me").await.status(), 401);
    let id = member["id"].as_str().expect("id");
    assert_problem(app.get_member(id).await, 404).await;
    let actor: String = sqlx::query_scalar(
        "SELECT metadata->>'actor' FROM events WHERE aggregate_id = $1 AND event_type = 'MemberErased'",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .expect("the erasure");
    assert_eq!(actor, format!("member:{id}"));
}

/// A customer with an active subscription, on a server with the given settings.
async fn subscribed(
    active: ActiveSubscriptions,
    customers: StripeCustomers,
) -> (Lifecycle, FakeStripe, TestApp, Uuid) {
    let l = Lifecycle::new(&format!("erasesub{}", Uuid::now_v7().simple()));
    let stripe = FakeStripe::start(&[(l.customer.as_str(), l.email.as_str())]).await;
    let app = app(&stripe, active, customers).await;
    for event in l.subscribed_events() {
        assert_eq!(app.send_webhook(&event).await.status(), 200);
    }
    app.drain_stripe().await;
    let member_id = member_id_of(&app, &l.email).await;
    (l, stripe, app, member_id)
}

#[tokio::test]
async fn a_member_with_an_active_subscription_is_refused_with_409_and_nothing_changes() {
    let (l, stripe, app, member_id) =
        subscribed(ActiveSubscriptions::Refuse, StripeCustomers::Delete).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    let problem = assert_problem(
        app.admin(Method::DELETE, &format!("/v1/members/{member_id}"), None)
            .await,
        409,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains(&l.subscription),
        "{problem}"
    );
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(after, events);
    assert_eq!(app.get_member(&member_id.to_string()).await.status(), 200);
    assert!(
        !stripe.requested().iter().any(|r| r.starts_with("DELETE")),
        "{:?}",
        stripe.requested()
    );
}

#[tokio::test]
async fn with_cancel_and_delete_configured_the_subscription_is_canceled_and_the_customer_deleted_first(
) {
    let (l, stripe, app, member_id) =
        subscribed(ActiveSubscriptions::Cancel, StripeCustomers::Delete).await;
    let resp = app
        .admin(Method::DELETE, &format!("/v1/members/{member_id}"), None)
        .await;
    assert_eq!(resp.status(), 204);
    let deletes: Vec<String> = stripe
        .requested()
        .into_iter()
        .filter(|r| r.starts_with("DELETE"))
        .collect();
    assert_eq!(
        deletes,
        [
            format!("DELETE /v1/subscriptions/{}", l.subscription),
            format!("DELETE /v1/customers/{}", l.customer),
        ]
    );
    // Stripe's cancellation arrives afterwards; the erased member records nothing and the
    // inbox does not fail.
    let canceled =
        l.subscription_event("deleted", "customer.subscription.deleted", "canceled", 300);
    assert_eq!(app.send_webhook(&canceled).await.status(), 200);
    app.drain_stripe().await;
    let status: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1")
        .bind(&l.subscription)
        .fetch_one(&app.pool)
        .await
        .expect("subscription");
    assert_eq!(status, "canceled");
    assert_problem(app.get_member(&member_id.to_string()).await, 404).await;
}

/// The inbox keeps Stripe's events as sent, and Stripe's users type addresses in any case and
/// script; an encoder may escape them. Found by customer or not, each is scrubbed.
#[tokio::test]
async fn an_address_beyond_ascii_is_scrubbed_in_any_case_and_in_any_json_spelling() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app(&stripe, ActiveSubscriptions::Refuse, StripeCustomers::Keep).await;
    let tag = Uuid::now_v7().simple().to_string();
    let email = format!("jürgen.ñuñez-{tag}@exämple.com");
    let member = app.member(&email).await;
    let id = member["id"].as_str().expect("id").to_owned();

    let capitals = email.to_uppercase();
    let escaped = email
        .replace('ü', "\\u00fc")
        .replace('ñ', "\\u00f1")
        .replace('ä', "\\u00e4");
    let other = format!("someone-{tag}@example.com");
    // Events of customers the member is not linked to: only the address names them.
    let events = [
        ("raw", format!(r#"{{"description":"Paid by {capitals}"}}"#)),
        (
            "escaped",
            format!(r#"{{"description":"Paid by {escaped}"}}"#),
        ),
        ("other", format!(r#"{{"description":"Paid by {other}"}}"#)),
    ];
    for (name, object) in &events {
        sqlx::query(
            "INSERT INTO stripe_events (id, type, created, customer_id, object_id, payload, status)
             VALUES ($1, 'charge.succeeded', now(), $2, $1, $3::json, 'processed')",
        )
        .bind(format!("evt_{name}_{tag}"))
        .bind(format!("cus_{name}_{tag}"))
        .bind(format!(
            r#"{{"id":"evt_{name}_{tag}","type":"charge.succeeded","data":{{"object":{object}}}}}"#
        ))
        .execute(&app.pool)
        .await
        .expect("a stored event");
    }
    // An email queued to the address in capitals, not tied to the member.
    sqlx::query(
        "INSERT INTO outbox_emails (id, to_address, subject, text_body, html_body)
         VALUES ($1, $2, 'Hello', 'Hello', '<p>Hello</p>')",
    )
    .bind(Uuid::now_v7())
    .bind(&capitals)
    .execute(&app.pool)
    .await
    .expect("a queued email");

    let resp = app
        .admin(Method::DELETE, &format!("/v1/members/{id}"), None)
        .await;
    assert_eq!(resp.status(), 204);

    let description = |name: &str| {
        let pool = app.pool.clone();
        let id = format!("evt_{name}_{tag}");
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT payload::json->'data'->'object'->>'description' FROM stripe_events WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("the event")
        }
    };
    assert_eq!(description("raw").await, "[erased]");
    assert_eq!(description("escaped").await, "[erased]");
    assert_eq!(description("other").await, format!("Paid by {other}"));
    let queued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox_emails WHERE to_address = $1")
            .bind(&capitals)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(queued, 0, "the email to the address in capitals is gone");
}
