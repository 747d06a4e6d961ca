//! Complimentary access (#16): an admin gives a member a tier for free and takes it away; the
//! status becomes and leaves `comped` (a paying subscription would win), and the comp's
//! license follows the tier's product policy like a paid subscription's.

use std::sync::Arc;

use aggregates::{License, Member};
use chrono::{Duration, Utc};
use memberledger::eventlog::{Wakeups, EVENTS_APPENDED};
use memberledger::store::{Appender, CommandBus};
use projections::{Mode, Projection};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::checkout::app_with_stripe;
use crate::helpers::{assert_problem, eventually, problem_fields, TestApp};
use crate::stripe_support::{FakeStripe, Lifecycle};

impl TestApp {
    /// A tier linked to the fake Stripe's prices (product `prod_fake`); returns its id.
    async fn comp_tier(&self) -> String {
        let tier = self
            .linked_tier("Linked", "price_linked_month", "price_linked_year")
            .await;
        assert_eq!(tier["stripe_product_id"], "prod_fake");
        tier["id"].as_str().expect("id").to_owned()
    }

    async fn comp(&self, member_id: &str, body: Value) -> reqwest::Response {
        self.admin(
            Method::PUT,
            &format!("/v1/members/{member_id}/complimentary"),
            Some(body),
        )
        .await
    }

    async fn uncomp(&self, member_id: &str) -> reqwest::Response {
        self.admin(
            Method::DELETE,
            &format!("/v1/members/{member_id}/complimentary"),
            None,
        )
        .await
    }

    /// The member's `members_status_events` rows, oldest first, as `from->to`.
    async fn status_events(&self, member_id: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT from_status || '->' || to_status FROM members_status_events
             WHERE member_id = $1::uuid ORDER BY id",
        )
        .bind(member_id)
        .fetch_all(&self.pool)
        .await
        .expect("status events")
    }

    /// The member's licenses: (id, key, status, deactivation reason, policy).
    async fn comp_licenses(
        &self,
        member_id: &str,
    ) -> Vec<(Uuid, String, String, Option<String>, Option<String>)> {
        sqlx::query_as(
            "SELECT id, key, status, deactivation_reason, policy_id FROM licenses
             WHERE member_id = $1::uuid ORDER BY id",
        )
        .bind(member_id)
        .fetch_all(&self.pool)
        .await
        .expect("licenses")
    }

    async fn wait_for_status_events(&self, member_id: &str, expected: &[&str]) {
        eventually("the status events", || async {
            self.status_events(member_id).await == expected
        })
        .await;
    }

    async fn wait_for_license(&self, member_id: &str, status: &str) {
        eventually(&format!("a {status} license"), || async {
            let licenses = self.comp_licenses(member_id).await;
            licenses.len() == 1 && licenses[0].2 == status
        })
        .await;
    }
}

fn code(validation: &Value) -> &str {
    validation["code"].as_str().expect("a code")
}

#[tokio::test]
async fn comping_and_uncomping_a_member_writes_status_events_and_issues_then_deactivates_licenses()
{
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let tier_id = app.comp_tier().await;
    let resp = app
        .admin(
            Method::PUT,
            "/v1/license-policies/members",
            Some(json!({ "name": "Members", "max_machines": 2, "entitlements": ["updates"], "products": ["prod_fake"] })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let member = app.member("comped@example.com").await;
    let member_id = member["id"].as_str().expect("id").to_owned();

    let resp = app.comp(&member_id, json!({ "tier_id": tier_id })).await;
    assert_eq!(resp.status(), 200);
    let detail: Value = resp.json().await.expect("json");
    assert_eq!(detail["status"], "comped");
    assert_eq!(detail["complimentary"]["tier_id"], tier_id.as_str());
    assert_eq!(detail["complimentary"]["tier_name"], "Linked");
    assert_eq!(detail["complimentary"]["until"], Value::Null);
    let got: Value = app.get_member(&member_id).await.json().await.expect("json");
    // The license counts follow the (asynchronous) license policy; the rest is the answer's.
    assert_eq!(
        (&got["status"], &got["complimentary"]),
        (&detail["status"], &detail["complimentary"]),
        "the answer is what GET shows"
    );

    app.wait_for_status_events(&member_id, &["free->comped"])
        .await;
    app.wait_for_license(&member_id, "active").await;
    let licenses = app.comp_licenses(&member_id).await;
    let (license_id, key, _, _, policy) = licenses[0].clone();
    let member_uuid: Uuid = member_id.parse().expect("uuid");
    let tier_uuid: Uuid = tier_id.parse().expect("uuid");
    assert_eq!(license_id, License::id_for_comp(member_uuid, tier_uuid));
    assert_eq!(policy.as_deref(), Some("members"), "the product's policy");

    let token = app.sign_in("comped@example.com").await;
    let resp = app
        .activate_license(&token, &key, "comped.example.com")
        .await;
    assert_eq!(resp.status(), 200);
    let valid = app
        .post_license_validation(
            json!({ "key": key, "domain": "comped.example.com", "entitlements": ["updates"] }),
        )
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(code(&valid), "VALID", "{valid}");

    // Changing only the end neither issues another license nor changes the status.
    let until = (Utc::now() + Duration::days(30)).to_rfc3339();
    let resp = app
        .comp(&member_id, json!({ "tier_id": tier_id, "until": until }))
        .await;
    assert_eq!(resp.status(), 200);
    let detail: Value = resp.json().await.expect("json");
    assert_eq!(detail["status"], "comped");
    assert!(detail["complimentary"]["until"].is_string());

    let resp = app.uncomp(&member_id).await;
    assert_eq!(resp.status(), 200);
    let detail: Value = resp.json().await.expect("json");
    assert_eq!(detail["status"], "free");
    assert_eq!(detail["complimentary"], Value::Null);
    app.wait_for_status_events(&member_id, &["free->comped", "comped->free"])
        .await;
    app.wait_for_license(&member_id, "inactive").await;
    let licenses = app.comp_licenses(&member_id).await;
    assert_eq!(licenses[0].3.as_deref(), Some("complimentary_ended"));
    let validation = app.validate_license(&key, "comped.example.com").await;
    assert_eq!(code(&validation), "INACTIVE", "{validation}");

    // Taking it away again changes nothing; giving the tier again brings the same key back.
    assert_eq!(app.uncomp(&member_id).await.status(), 200);
    assert_eq!(
        app.comp(&member_id, json!({ "tier_id": tier_id }))
            .await
            .status(),
        200
    );
    app.wait_for_status_events(
        &member_id,
        &["free->comped", "comped->free", "free->comped"],
    )
    .await;
    app.wait_for_license(&member_id, "active").await;
    assert_eq!(app.comp_licenses(&member_id).await[0].0, license_id);
    let validation = app.validate_license(&key, "comped.example.com").await;
    assert_eq!(code(&validation), "VALID", "{validation}");
}

#[tokio::test]
async fn complimentary_access_refuses_unknown_members_unknown_or_archived_tiers_and_past_ends() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let tier_id = app.comp_tier().await;
    let member = app.member("refused@example.com").await;
    let member_id = member["id"].as_str().expect("id").to_owned();
    let unknown = Uuid::now_v7().to_string();

    assert_problem(app.comp(&unknown, json!({ "tier_id": tier_id })).await, 404).await;
    assert_problem(app.uncomp(&unknown).await, 404).await;

    let problem = assert_problem(
        app.comp(&member_id, json!({ "tier_id": unknown })).await,
        422,
    )
    .await;
    assert_eq!(problem_fields(&problem), ["tier_id"]);

    let past = (Utc::now() - Duration::minutes(1)).to_rfc3339();
    let problem = assert_problem(
        app.comp(&member_id, json!({ "tier_id": tier_id, "until": past }))
            .await,
        422,
    )
    .await;
    assert_eq!(problem_fields(&problem), ["until"]);

    let resp = app
        .admin(
            Method::PATCH,
            &format!("/v1/tiers/{tier_id}"),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let problem = assert_problem(
        app.comp(&member_id, json!({ "tier_id": tier_id })).await,
        422,
    )
    .await;
    assert_eq!(problem_fields(&problem), ["tier_id"]);

    let got: Value = app.get_member(&member_id).await.json().await.expect("json");
    assert_eq!(got["status"], "free");
    assert_eq!(got["complimentary"], Value::Null);
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type LIKE 'MemberComp%'",
    )
    .bind(&member_id)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(events, 0, "nothing refused was recorded");
}

#[tokio::test]
async fn an_expired_comp_ends_once_when_two_instances_sweep_and_its_license_is_deactivated() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let tier_id = app.comp_tier().await;
    let member = app.member("expiring@example.com").await;
    let member_id = member["id"].as_str().expect("id").to_owned();
    let until = Utc::now() + Duration::seconds(2);
    let resp = app
        .comp(
            &member_id,
            json!({ "tier_id": tier_id, "until": until.to_rfc3339() }),
        )
        .await;
    assert_eq!(resp.status(), 200);

    let inline: Arc<[Arc<dyn Projection>]> = projections::all()
        .into_iter()
        .map(Arc::<dyn Projection>::from)
        .filter(|p| p.mode() == Mode::Inline)
        .collect();
    let bus = CommandBus::<Member>::new(
        app.pool.clone(),
        Appender::new(app.pool.clone(), inline),
        Wakeups::new(app.pool.clone(), EVENTS_APPENDED),
        (),
    );
    // Before its end: nothing to sweep.
    let swept = memberledger::complimentary::sweep(&app.pool, &bus)
        .await
        .expect("sweep");
    assert_eq!(swept, 0);
    app.wait_for_license(&member_id, "active").await;
    let wait = (until - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + std::time::Duration::from_millis(100)).await;

    let (a, b) = tokio::join!(
        memberledger::complimentary::sweep(&app.pool, &bus),
        memberledger::complimentary::sweep(&app.pool, &bus),
    );
    a.expect("first sweep");
    b.expect("second sweep");
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'MemberCompEnded'",
    )
    .bind(&member_id)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(ended, 1, "ended once");
    let got: Value = app.get_member(&member_id).await.json().await.expect("json");
    assert_eq!(got["status"], "free");
    assert_eq!(got["complimentary"], Value::Null);
    app.wait_for_status_events(&member_id, &["free->comped", "comped->free"])
        .await;
    app.wait_for_license(&member_id, "inactive").await;
    assert_eq!(
        app.comp_licenses(&member_id).await[0].3.as_deref(),
        Some("complimentary_ended")
    );
}

#[tokio::test]
async fn a_paying_subscription_wins_over_a_comp_and_the_comp_shows_when_it_stops() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let tier_id = app.comp_tier().await;
    let l = Lifecycle::new(&format!("cp{}", &Uuid::new_v4().simple().to_string()[..8]));
    for e in [
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "active", 2),
    ] {
        assert_eq!(app.send_webhook(&e).await.status(), 200);
    }
    app.drain_stripe().await;
    let member_id: Uuid = sqlx::query_scalar("SELECT id FROM member_list WHERE email = $1")
        .bind(&l.email)
        .fetch_one(&app.pool)
        .await
        .expect("the member is listed");
    let member_id = member_id.to_string();
    app.wait_for_status_events(&member_id, &["free->paid"])
        .await;

    let resp = app.comp(&member_id, json!({ "tier_id": tier_id })).await;
    assert_eq!(resp.status(), 200);
    let detail: Value = resp.json().await.expect("json");
    assert_eq!(detail["status"], "paid", "a paying subscription wins");
    assert_eq!(detail["complimentary"]["tier_id"], tier_id.as_str());

    let deleted = l.subscription_event("deleted", "customer.subscription.deleted", "canceled", 3);
    assert_eq!(app.send_webhook(&deleted).await.status(), 200);
    app.drain_stripe().await;
    app.wait_for_status_events(&member_id, &["free->paid", "paid->comped"])
        .await;

    assert_eq!(app.uncomp(&member_id).await.status(), 200);
    app.wait_for_status_events(&member_id, &["free->paid", "paid->comped", "comped->free"])
        .await;
    let got: Value = app.get_member(&member_id).await.json().await.expect("json");
    assert_eq!(got["status"], "free");
}

#[tokio::test]
async fn moving_a_comp_to_another_tier_deactivates_the_first_tiers_license_and_issues_the_seconds()
{
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let first = app.comp_tier().await;
    let resp = app
        .admin(
            Method::POST,
            "/v1/tiers",
            Some(json!({"name": "Second", "currency": "eur", "monthly_price": 300, "yearly_price": 3000})),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let second: Value = resp.json().await.expect("json");
    let second = second["id"].as_str().expect("id").to_owned();
    let member = app.member("mover@example.com").await;
    let member_id = member["id"].as_str().expect("id").to_owned();

    assert_eq!(
        app.comp(&member_id, json!({ "tier_id": first }))
            .await
            .status(),
        200
    );
    app.wait_for_license(&member_id, "active").await;
    let resp = app.comp(&member_id, json!({ "tier_id": second })).await;
    assert_eq!(resp.status(), 200);
    let detail: Value = resp.json().await.expect("json");
    assert_eq!(detail["complimentary"]["tier_name"], "Second");
    assert_eq!(detail["status"], "comped");

    let member_uuid: Uuid = member_id.parse().expect("uuid");
    let first_license = License::id_for_comp(member_uuid, first.parse().expect("uuid"));
    let second_license = License::id_for_comp(member_uuid, second.parse().expect("uuid"));
    eventually("the second tier's license", || async {
        let licenses = app.comp_licenses(&member_id).await;
        let status = |id: Uuid| {
            licenses
                .iter()
                .find(|l| l.0 == id)
                .map(|l| (l.2.clone(), l.3.clone()))
        };
        status(first_license)
            == Some((
                "inactive".to_owned(),
                Some("complimentary_ended".to_owned()),
            ))
            && status(second_license) == Some(("active".to_owned(), None))
    })
    .await;
    // One status change: the member stayed comped.
    app.wait_for_status_events(&member_id, &["free->comped"])
        .await;
}
