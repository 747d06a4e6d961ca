//! Set-based `apply_batch` equals applying events one at a time: a log with every event type,
//! built per projection event by event and in batches of several sizes into tables of their
//! own (a schema per build, reached through `search_path` as rebuilds do), gives the same rows.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use memberledger::eventlog::{read_after, Horizon, LogPosition};
use projections::{Projection, ProjectionError, StoredEvent};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::helpers::{fresh_database, TestApp, ADMIN_TOKEN};
use crate::stripe_support::Lifecycle;

/// Each table of `projection` in `schema`, as its rows' JSON sorted by their text (reservation
/// times are the clock's, not the events').
async fn dump(conn: &mut PgConnection, schema: &str, projection: &dyn Projection) -> Vec<Value> {
    let mut tables = Vec::new();
    for table in projection.tables() {
        let rows: Value = sqlx::query_scalar(&format!(
            "SELECT coalesce(jsonb_agg(r ORDER BY r::text), '[]'::jsonb)
             FROM (SELECT to_jsonb(t) - 'reserved_at' AS r FROM {schema}.{table} t) rows"
        ))
        .fetch_one(&mut *conn)
        .await
        .expect("dumping a table");
        tables.push(json!({ "table": table, "rows": rows }));
    }
    tables
}

/// Empty copies of `projection`'s tables in a new schema.
async fn fresh_tables(conn: &mut PgConnection, schema: &str, projection: &dyn Projection) {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut *conn)
        .await
        .expect("drop schema");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *conn)
        .await
        .expect("create schema");
    for table in projection.tables() {
        sqlx::query(&format!(
            "CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(&mut *conn)
        .await
        .expect("copy of a table");
    }
}

/// Applies each phase (a transaction) into `schema`: event by event with `apply` when `batch`
/// is `None`, else `apply_batch` over chunks of that size.
async fn apply_phases(
    conn: &mut PgConnection,
    schema: &str,
    projection: &dyn Projection,
    phases: &[Vec<StoredEvent>],
    batch: Option<usize>,
) -> Result<(), ProjectionError> {
    for events in phases {
        let mut tx = conn.begin().await?;
        sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
            .execute(&mut *tx)
            .await?;
        match batch {
            None => {
                for event in events {
                    projection.apply(&mut tx, event).await?;
                }
            }
            Some(size) => {
                for chunk in events.chunks(size) {
                    projection.apply_batch(&mut tx, chunk).await?;
                }
            }
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Builds `projection` from `phases` one event at a time and in batches of each size; asserts
/// every build equals the first. Returns the event-by-event build's tables.
async fn assert_builds_agree(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    phases: &[Vec<StoredEvent>],
    sizes: &[usize],
) -> Vec<Value> {
    let name = projection.name();
    let one_by_one = format!("one_{name}");
    fresh_tables(conn, &one_by_one, projection).await;
    apply_phases(conn, &one_by_one, projection, phases, None)
        .await
        .unwrap_or_else(|err| panic!("{name} event by event: {err:#}"));
    let expected = dump(conn, &one_by_one, projection).await;
    for size in sizes {
        let batched = format!("batch{size}_{name}");
        fresh_tables(conn, &batched, projection).await;
        apply_phases(conn, &batched, projection, phases, Some(*size))
            .await
            .unwrap_or_else(|err| panic!("{name} in batches of {size}: {err:#}"));
        let got = dump(conn, &batched, projection).await;
        assert_eq!(
            got, expected,
            "{name}: batches of {size} differ from event by event"
        );
    }
    expected
}

/// Appends `payload` as the next event of an aggregate, by SQL (no inline projection sees it).
async fn append(pool: &PgPool, aggregate_type: &str, aggregate_id: &str, payload: Value) {
    let event_type = payload
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .expect("an externally tagged payload");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT $1, $2, coalesce(max(sequence), 0) + 1, $3, '1.0', $4, '{}'
         FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(&event_type)
    .bind(payload)
    .execute(pool)
    .await
    .unwrap_or_else(|err| panic!("appending {event_type}: {err}"));
}

fn observed(n: i64) -> Value {
    json!({ "event_id": format!("evt_syn_{n}"), "event_type": "customer.subscription.updated",
            "created": 1_764_100_000 + n })
}

fn price(id: &str, amount: i64) -> Value {
    json!({ "price_id": id, "product_id": "prod_syn", "unit_amount": amount, "currency": "usd",
            "interval": "month", "interval_count": 1 })
}

/// An event of each type the API run may not produce, on the run's subscription and member
/// (license events on a license of their own, reserved first).
fn synthetic(sub: &str, member: Uuid, license: Uuid) -> Vec<(&'static str, String, Value)> {
    let at = "2026-12-01T10:00:00Z";
    let purchase = Uuid::from_u128(0x5e7a_991e);
    let s = |payload: Value| ("Subscription", sub.to_owned(), payload);
    let m = |payload: Value| ("Member", member.to_string(), payload);
    let l = |payload: Value| ("License", license.to_string(), payload);
    let issued = Uuid::from_u128(0x5e7a_991f);
    let tier = Uuid::from_u128(0x5e7a_7137);
    let offer = Uuid::from_u128(0x5e7a_0ffe);
    let t = |payload: Value| ("Tier", tier.to_string(), payload);
    // A member created, suppressed and erased (`MemberErased` is a member's last event).
    let gone = Uuid::from_u128(0x5e7a_e2a5);
    let e = |payload: Value| ("Member", gone.to_string(), payload);
    vec![
        e(
            json!({"MemberCreated": {"member_id": gone, "email": "gone@example.com", "name": "Gone",
            "note": "a note", "labels": ["x"], "source": "admin", "attribution": null, "created_at": at}}),
        ),
        e(
            json!({"MemberEmailDisabled": {"email": "gone@example.com", "reason": "550", "disabled_at": at}}),
        ),
        e(json!({"MemberErased": {"erased_at": at}})),
        m(
            json!({"MemberEmailDisabled": {"email": "syn@example.com", "reason": "550 no such user", "disabled_at": at}}),
        ),
        m(json!({"MemberEmailEnabled": {"email": "syn@example.com", "enabled_at": at}})),
        m(json!({"MemberCompGranted": {"tier_id": tier, "until": null, "granted_at": at}})),
        m(json!({"MemberCompEnded": {"tier_id": tier, "reason": "revoked", "ended_at": at}})),
        m(
            json!({"MemberCompGranted": {"tier_id": tier, "until": "2027-01-01T00:00:00Z", "granted_at": at}}),
        ),
        m(
            json!({"MemberEmailDisabled": {"email": "syn@example.com", "reason": "550 again", "disabled_at": at}}),
        ),
        s(json!({"SubscriptionActivated": {"status": "active", "observed": observed(1)}})),
        s(
            json!({"SubscriptionStatusChanged": {"from": "active", "to": "past_due", "observed": observed(2)}}),
        ),
        s(
            json!({"SubscriptionItemAdded": {"item": {"item_id": "si_syn", "price": price("price_syn", 500),
            "quantity": 2, "site": null, "purchase_type": "quantity"}, "observed": observed(3)}}),
        ),
        s(
            json!({"SubscriptionItemQuantityChanged": {"item_id": "si_syn", "from": 2, "to": 3, "observed": observed(4)}}),
        ),
        s(
            json!({"SubscriptionItemSiteAssigned": {"item_id": "si_syn", "site": "syn.example.com", "session_id": "cs_syn"}}),
        ),
        s(
            json!({"SubscriptionPlanChanged": {"item_id": "si_syn", "from": price("price_syn", 500),
            "to": price("price_syn2", 700), "observed": observed(5)}}),
        ),
        s(
            json!({"SubscriptionDiscountChanged": {"from": [], "to": [{"discount_id": "di_syn",
            "coupon_id": "co_syn", "off": {"percent_hundredths": 2000}, "duration": {"repeating": 3},
            "end": "2027-03-01T00:00:00Z"}, {"discount_id": null, "coupon_id": null,
            "off": {"amount": {"amount": 100, "currency": "usd"}}, "duration": "forever", "end": null}],
            "observed": observed(5)}}),
        ),
        s(
            json!({"OfferRedeemed": {"offer_id": offer, "member_id": member, "customer_id": "cus_syn",
            "redeemed_at": at, "observed": observed(5)}}),
        ),
        s(
            json!({"SubscriptionPeriodChanged": {"current_period_start": at, "current_period_end": null, "observed": observed(6)}}),
        ),
        s(json!({"SubscriptionCancellationScheduled": {"cancel_at": at, "observed": observed(7)}})),
        s(json!({"SubscriptionCancellationUnscheduled": {"observed": observed(8)}})),
        s(
            json!({"SubscriptionItemRemoved": {"item_id": "si_syn", "site": "syn.example.com", "observed": observed(9)}}),
        ),
        s(json!({"SubscriptionStateObserved": {"observed": observed(10)}})),
        s(json!({"SubscriptionCanceled": {"canceled_at": at, "observed": observed(11)}})),
        s(
            json!({"PaymentRecorded": {"payment": {"invoice_id": "in_syn", "member_id": member,
            "customer_id": "cus_syn", "amount_paid": 900, "currency": "usd", "billing_reason": null,
            "payment_intent_id": null, "period_start": null, "period_end": null, "paid_at": at}}}),
        ),
        s(
            json!({"PaymentFailed": {"invoice_id": "in_syn2", "member_id": member, "customer_id": "cus_syn",
            "amount_due": 900, "currency": "usd", "attempt_count": 2, "failed_at": at}}),
        ),
        s(
            json!({"PaymentRefunded": {"charge_id": "ch_syn", "invoice_id": "in_syn", "member_id": member,
            "customer_id": "cus_syn", "amount": 300, "currency": "usd", "refunded_at": at}}),
        ),
        s(
            json!({"SitePurchaseStarted": {"purchase_id": purchase, "session_id": "cs_site_syn", "member_id": member,
            "sites": ["a.example.com", "b.example.com"], "price_id": "price_syn", "amount": 1200,
            "currency": "usd", "started_at": at}}),
        ),
        s(json!({"SitePurchaseCompleted": {"session_id": "cs_site_syn", "completed_at": at}})),
        s(
            json!({"SitePurchaseStarted": {"session_id": "cs_site_syn2", "member_id": member,
            "sites": ["c.example.com"], "price_id": "price_syn", "amount": 600,
            "currency": "usd", "started_at": at}}),
        ),
        s(json!({"SitePurchaseExpired": {"session_id": "cs_site_syn2", "expired_at": at}})),
        s(
            json!({"LicensePurchaseStarted": {"purchase_id": purchase, "session_id": "cs_keys_syn", "member_id": member,
            "quantity": 1, "price_id": "price_syn", "amount": 500, "currency": "usd", "started_at": at}}),
        ),
        s(
            json!({"LicensePurchaseCompleted": {"purchase_id": purchase, "session_id": "cs_keys_syn", "completed_at": at}}),
        ),
        s(
            json!({"LicensePurchaseExpired": {"purchase_id": purchase, "session_id": "cs_keys_syn", "expired_at": at}}),
        ),
        l(
            json!({"LicenseReserved": {"license_id": license, "key": "SYNA-AAAA-BBBB-CCCC", "member_id": member,
            "subscription_id": sub, "purchase_id": purchase, "seat": 1, "reserved_at": at}}),
        ),
        l(
            json!({"PendingLicenseActivated": {"subscription_id": sub, "item_id": "si_syn", "activated_at": at}}),
        ),
        l(json!({"LicenseActivatedOnDomain": {"domain": "syn.example.com", "activated_at": at}})),
        l(json!({"LicenseDomainReleased": {"domain": "syn.example.com", "released_at": at}})),
        l(
            json!({"LicenseActivatedOnDomain": {"domain": "*.syn2.example.com", "ip": "192.0.2.1", "activated_at": at}}),
        ),
        l(json!({"LicenseActivatedOnDomain": {"domain": "syn3.example.com", "activated_at": at}})),
        l(
            json!({"LicenseMachineExpired": {"domain": "*.syn2.example.com", "last_seen_at": at, "expired_at": at}}),
        ),
        l(
            json!({"LicensePolicyChanged": {"policy_id": "syn", "expires_at": at, "changed_at": at}}),
        ),
        l(json!({"LicenseExpiryChanged": {"expires_at": null, "changed_at": at}})),
        l(json!({"LicenseDeactivated": {"reason": "quantity_reduced", "deactivated_at": at}})),
        l(json!({"LicenseReactivated": {"reactivated_at": at}})),
        l(json!({"LicenseSuspended": {"reason": "chargeback", "suspended_at": at}})),
        l(json!({"LicenseUnsuspended": {"unsuspended_at": at}})),
        l(json!({"LicenseSuspended": {"reason": "again", "suspended_at": at}})),
        l(json!({"LicenseRevoked": {"reason": "fraud", "revoked_at": at}})),
        l(json!({"LicenseCanceled": {"reason": "checkout_expired", "canceled_at": at}})),
        (
            "License",
            issued.to_string(),
            json!({"LicenseIssued": {"license_id": issued,
            "key": "SYNB-AAAA-BBBB-CCCC", "member_id": member, "subscription_id": sub, "item_id": "si_syn",
            "purchase_type": "quantity", "site": null, "seat": 1, "issued_at": at}}),
        ),
        (
            "License",
            Uuid::from_u128(0x5e7a_9920).to_string(),
            json!({"LicenseGranted": {"license_id": Uuid::from_u128(0x5e7a_9920),
            "key": "SYNC-AAAA-BBBB-CCCC", "member_id": member, "policy_id": "syn", "expires_at": at,
            "note": "partner", "granted_at": at}}),
        ),
        t(
            json!({"TierCreated": {"tier_id": tier, "profile": {"name": "Gold", "description": null,
            "benefits": ["All"], "visibility": "public"}, "currency": "usd", "stripe_product_id": "prod_syn",
            "monthly": {"amount": 500, "stripe_price_id": "price_syn_m"},
            "yearly": {"amount": 5000, "stripe_price_id": "price_syn_y"}, "created_at": at}}),
        ),
        t(
            json!({"TierUpdated": {"profile": {"name": "Gold+", "description": "d", "benefits": [],
            "visibility": "none"}, "updated_at": at}}),
        ),
        t(
            json!({"TierRepriced": {"monthly": {"amount": 600, "stripe_price_id": "price_syn_m2"},
            "yearly": {"amount": 6000, "stripe_price_id": "price_syn_y2"}, "repriced_at": at}}),
        ),
        t(json!({"TierArchived": {"archived_at": at}})),
        t(json!({"TierUnarchived": {"unarchived_at": at}})),
        (
            "Offer",
            offer.to_string(),
            json!({"OfferCreated": {"offer_id": offer, "terms": {"name": "Launch", "code": "launch",
            "tier_id": tier, "cadence": "month", "discount": {"percent": 20},
            "duration": {"repeating": 3}, "redemption_limit": 100, "stripe_coupon_id": "co_syn",
            "stripe_promotion_code_id": "promo_syn"},
            "created_at": at}}),
        ),
        (
            "Offer",
            offer.to_string(),
            json!({"OfferArchived": {"archived_at": at}}),
        ),
    ]
}

async fn distinct_types(pool: &PgPool) -> BTreeSet<(String, String)> {
    sqlx::query_as::<_, (String, String)>("SELECT DISTINCT aggregate_type, event_type FROM events")
        .fetch_all(pool)
        .await
        .expect("event types")
        .into_iter()
        .collect()
}

/// Members created, edited and signed in; a newsletter created, edited, subscribed and left; a
/// Stripe customer's whole lifecycle (subscription, payment, license, cancellation).
async fn drive_the_api(app: &TestApp) -> Lifecycle {
    let mut ids = Vec::new();
    for i in 0..4 {
        let resp = app
            .create_member(json!({
                "email": format!("set{i}@example.com"), "name": format!("Member {i}"),
                "labels": ["vip", "has \"quotes\", commas"], "note": "first"
            }))
            .await;
        assert_eq!(resp.status(), 201);
        let body: Value = resp.json().await.expect("json");
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    for (i, id) in ids.iter().enumerate() {
        let resp = app
            .patch_member(id, json!({ "name": null, "labels": [format!("l{i}")] }))
            .await;
        assert_eq!(resp.status(), 200);
    }
    // Member 0 gives up its address and member 1 takes it.
    let resp = app
        .patch_member(&ids[0], json!({ "email": "set0-new@example.com" }))
        .await;
    assert_eq!(resp.status(), 200);
    let resp = app
        .patch_member(&ids[1], json!({ "email": "SET0@example.com" }))
        .await;
    assert_eq!(resp.status(), 200);

    let resp = app
        .client
        .post(app.url("/v1/newsletters"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "Weekly", "description": "Every week" }))
        .send()
        .await
        .expect("sent");
    assert!(resp.status().is_success(), "{}", resp.status());
    let newsletter: Value = resp.json().await.expect("json");
    let newsletter = newsletter["id"].as_str().expect("id").to_owned();
    let token = app.sign_in("set2@example.com").await;
    for newsletters in [json!([newsletter]), json!([]), json!([newsletter])] {
        let resp = app
            .client
            .patch(app.url("/v1/me"))
            .bearer_auth(&token)
            .json(&json!({ "newsletters": newsletters }))
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200);
    }
    let resp = app
        .client
        .patch(app.url(&format!("/v1/newsletters/{newsletter}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "description": null }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);

    let lifecycle = Lifecycle::new("setapply");
    for event in lifecycle.events() {
        assert_eq!(app.send_webhook(&event).await.status(), 200);
        app.drain_stripe().await;
    }
    app.settle().await;
    lifecycle
}

#[tokio::test]
async fn a_set_based_rebuild_equals_an_event_by_event_build_on_a_log_with_every_event_type() {
    let app = TestApp::spawn().await;
    let lifecycle = drive_the_api(&app).await;

    // Event types the API run did not produce are appended by SQL.
    let member: Uuid = sqlx::query_scalar("SELECT id FROM member_list WHERE email = $1")
        .bind(&lifecycle.email)
        .fetch_one(&app.pool)
        .await
        .expect("the lifecycle's member");
    let produced = distinct_types(&app.pool).await;
    let license = Uuid::from_u128(0x5e7a_9920);
    for (aggregate_type, aggregate_id, payload) in
        synthetic(&lifecycle.subscription, member, license)
    {
        let event_type = payload
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_default();
        let reserved = event_type == "LicenseReserved";
        // The synthetic license's events follow its reservation; the rest only fill gaps.
        if reserved
            || aggregate_id == license.to_string()
            || !produced.contains(&(aggregate_type.to_owned(), event_type))
        {
            append(&app.pool, aggregate_type, &aggregate_id, payload).await;
        }
    }

    let schemas = aggregates::schema::event_schemas();
    let every_type: BTreeSet<(String, String)> = schemas
        .as_object()
        .expect("schemas by aggregate")
        .iter()
        .flat_map(|(aggregate, types)| {
            types
                .as_object()
                .expect("types")
                .keys()
                .map(move |t| (aggregate.clone(), t.clone()))
        })
        .collect();
    let in_log = distinct_types(&app.pool).await;
    let missing: Vec<_> = every_type.difference(&in_log).collect();
    assert!(
        missing.is_empty(),
        "event types missing from the log: {missing:?}"
    );
    assert!(every_type.len() >= 35, "{} event types", every_type.len());

    let mut conn = app.pool.acquire().await.expect("connection");
    for projection in projections::all() {
        if !projection.rebuildable() {
            continue;
        }
        let events = read_after(
            &mut conn,
            LogPosition::default(),
            i64::MAX,
            Some(projection.handles()),
            Horizon::Unbounded,
        )
        .await
        .expect("reading the log");
        assert!(!events.is_empty(), "{} handles no event", projection.name());
        let built =
            assert_builds_agree(&mut conn, projection.as_ref(), &[events], &[7, 5000]).await;
        // The log exercises every projection: its main table is not empty.
        assert!(
            built[0]["rows"]
                .as_array()
                .is_some_and(|rows| !rows.is_empty()),
            "{}: {built:?}",
            projection.name()
        );
    }
}

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 10, minute, 0)
        .single()
        .expect("a time")
}

/// Stored events with consecutive positions.
struct Log {
    next: i64,
}

impl Log {
    fn event(&mut self, aggregate_type: &str, aggregate_id: Uuid, payload: Value) -> StoredEvent {
        self.next += 1;
        let event_type = payload
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .expect("an externally tagged payload");
        StoredEvent {
            global_position: self.next,
            transaction_id: self.next,
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_string(),
            sequence: self.next,
            event_type,
            event_version: "1.0".to_owned(),
            payload: payload.into(),
            metadata: json!({}).into(),
            recorded_at: at(0),
        }
    }

    fn member(&mut self, id: Uuid, payload: Value) -> StoredEvent {
        self.event("Member", id, payload)
    }
}

fn created(id: Uuid, email: &str, minute: u32) -> Value {
    json!({"MemberCreated": {"member_id": id, "email": email, "name": "N", "note": null,
        "labels": ["a"], "source": "admin", "attribution": null, "created_at": at(minute)}})
}

fn email_changed(old: &str, new: &str, minute: u32) -> Value {
    json!({"MemberEmailChanged": {"old_email": old, "new_email": new, "changed_at": at(minute)}})
}

/// `(id, email, name, labels, status)` of `member_list`.
type MemberRow = (Uuid, String, Option<String>, Vec<String>, String);

#[tokio::test]
async fn a_batch_touching_one_member_several_times_equals_one_by_one() {
    let pool = memberledger::db::pool(&fresh_database().await, 2)
        .await
        .expect("connecting");
    let mut conn = pool.acquire().await.expect("connection");
    let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let newsletter = Uuid::from_u128(4);
    let mut log = Log { next: 0 };
    // Before the batch: a and b exist, and a newsletter b reads.
    let before = vec![
        log.member(a, created(a, "a@example.com", 1)),
        log.member(b, created(b, "b@example.com", 2)),
        log.event(
            "Newsletter",
            newsletter,
            json!({"NewsletterCreated": {"newsletter_id": newsletter, "name": "W", "description": null,
                "status": "active", "subscribe_on_signup": false, "created_at": at(2)}}),
        ),
        log.member(
            b,
            json!({"NewsletterSubscribed": {"newsletter_id": newsletter, "subscribed_at": at(2)}}),
        ),
    ];
    // The batch: a edited, renamed, moved twice and made paid; b takes a's first address; c
    // created, edited and moved in the batch; newsletters left and rejoined.
    let batch = vec![
        log.member(
            a,
            json!({"MemberUpdated": {"name": null, "note": "n", "labels": ["x", "y z"], "updated_at": at(3)}}),
        ),
        log.member(a, email_changed("a@example.com", "a2@example.com", 4)),
        log.member(b, email_changed("b@example.com", "A@example.com", 5)),
        log.member(
            a,
            json!({"MemberStatusChanged": {"from": "free", "to": "paid", "reason": "sub_1", "changed_at": at(6)}}),
        ),
        log.member(a, email_changed("a2@example.com", "b@example.com", 7)),
        log.member(c, created(c, "c@example.com", 8)),
        log.member(
            c,
            json!({"MemberUpdated": {"name": "C", "note": null, "labels": [], "updated_at": at(9)}}),
        ),
        log.member(c, email_changed("c@example.com", "c2@example.com", 10)),
        log.member(
            c,
            json!({"MemberStatusChanged": {"from": "free", "to": "comped", "reason": "gift", "changed_at": at(11)}}),
        ),
        log.member(
            a,
            json!({"MemberUpdated": {"name": "A", "note": null, "labels": ["last"], "updated_at": at(12)}}),
        ),
        log.member(
            b,
            json!({"NewsletterUnsubscribed": {"newsletter_id": newsletter, "unsubscribed_at": at(13)}}),
        ),
        log.member(
            b,
            json!({"NewsletterSubscribed": {"newsletter_id": newsletter, "subscribed_at": at(14)}}),
        ),
        log.member(
            c,
            json!({"NewsletterSubscribed": {"newsletter_id": newsletter, "subscribed_at": at(15)}}),
        ),
        log.member(
            c,
            json!({"NewsletterUnsubscribed": {"newsletter_id": newsletter, "unsubscribed_at": at(16)}}),
        ),
        log.member(c, json!({"MemberLoggedIn": {"method": "code", "logged_in_at": at(17)}})),
        log.event(
            "Newsletter",
            newsletter,
            json!({"NewsletterUpdated": {"name": "W2", "description": "d", "status": "archived",
                "subscribe_on_signup": true, "updated_at": at(18)}}),
        ),
    ];
    let phases = [before, batch];
    for projection in projections::all() {
        let handled: Vec<Vec<StoredEvent>> = phases
            .iter()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| {
                        projections::handles(projection.as_ref(), &e.aggregate_type, &e.event_type)
                    })
                    .cloned()
                    .collect()
            })
            .collect();
        if handled.iter().all(Vec::is_empty) {
            continue;
        }
        assert_builds_agree(&mut conn, projection.as_ref(), &handled, &[100]).await;
    }

    // The rows themselves, once: a's last state, and b holding a's first address.
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT id, email, name, labels, status FROM batch100_member_list.member_list ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("rows");
    assert_eq!(
        rows,
        [
            (
                a,
                "b@example.com".into(),
                Some("A".into()),
                vec!["last".into()],
                "paid".into()
            ),
            (
                b,
                "A@example.com".into(),
                Some("N".into()),
                vec!["a".into()],
                "free".into()
            ),
            (
                c,
                "c2@example.com".into(),
                Some("C".into()),
                vec![],
                "comped".into()
            ),
        ]
    );
    let emails: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT email, member_id FROM batch100_member_emails.member_emails ORDER BY email",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("emails");
    assert_eq!(
        emails,
        [
            ("a@example.com".into(), b),
            ("b@example.com".into(), a),
            ("c2@example.com".into(), c)
        ]
    );

    // Refusals, as one event at a time: d claims an address c holds at that point of the
    // batch, even though c gives it up later in the same batch.
    let d = Uuid::from_u128(5);
    let refused = [
        vec![log.member(d, created(d, "C2@example.com", 20))],
        vec![
            log.member(d, created(d, "d@example.com", 20)),
            log.member(d, email_changed("d@example.com", "c2@example.com", 21)),
            log.member(c, email_changed("c2@example.com", "c3@example.com", 22)),
        ],
    ];
    let emails = projections::MemberEmails;
    for events in refused {
        for batch in [None, Some(100)] {
            let result = apply_phases(
                &mut conn,
                "batch100_member_emails",
                &emails,
                std::slice::from_ref(&events),
                batch,
            )
            .await;
            assert!(
                matches!(result, Err(ProjectionError::Refused { .. })),
                "{batch:?}: {result:?}"
            );
        }
    }
    // A batch whose claims are free goes through.
    apply_phases(
        &mut conn,
        "batch100_member_emails",
        &emails,
        &[vec![
            log.member(c, email_changed("c2@example.com", "c3@example.com", 23)),
            log.member(d, created(d, "c2@example.com", 24)),
        ]],
        Some(100),
    )
    .await
    .expect("free addresses are taken");
}
