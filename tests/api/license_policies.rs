//! License policies and an operator's license management (issue #15): machine limits, releases,
//! patterns, entitlements, expiry, grace after a failed payment, heartbeats, keys granted
//! without Stripe (admin API and CLI), each change on the timeline.
//!
//! Time is driven by the data, never slept: an expiry set in the past, a Stripe event whose
//! `created` lies days back, a heartbeat row dated hours ago.

use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, eventually, TestApp};
use crate::licenses::timeline_summaries;
use crate::stripe_support::Lifecycle;

impl TestApp {
    /// PUTs policy `id`, asserting 200 or 201.
    async fn put_policy(&self, id: &str, body: Value) -> Value {
        let resp = self
            .admin(
                Method::PUT,
                &format!("/v1/license-policies/{id}"),
                Some(body),
            )
            .await;
        assert!(
            [200, 201].contains(&resp.status().as_u16()),
            "{}",
            resp.status()
        );
        resp.json().await.expect("json")
    }

    /// Grants a key, asserting 201; returns the license.
    async fn grant(&self, body: Value) -> Value {
        let resp = self.admin(Method::POST, "/v1/licenses", Some(body)).await;
        assert_eq!(resp.status(), 201);
        resp.json().await.expect("json")
    }

    async fn validate_for(&self, key: &str, domain: &str, entitlements: Value) -> Value {
        let resp = self
            .post_license_validation(
                json!({ "key": key, "domain": domain, "entitlements": entitlements }),
            )
            .await;
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("json")
    }
}

fn code(body: &Value) -> &str {
    body["code"].as_str().expect("a code")
}

fn domains(license: &Value) -> Vec<&str> {
    license["machines"]
        .as_array()
        .expect("machines")
        .iter()
        .map(|m| m["domain"].as_str().expect("domain"))
        .collect()
}

fn at(value: &Value) -> DateTime<Utc> {
    value.as_str().expect("a time").parse().expect("RFC 3339")
}

#[tokio::test]
async fn a_three_domain_key_activates_three_refuses_a_fourth_and_takes_it_after_a_release() {
    let app = TestApp::spawn().await;
    let member = app.member("three@example.com").await;
    let token = app.sign_in("three@example.com").await;
    let created = app
        .admin(
            Method::PUT,
            "/v1/license-policies/three-sites",
            Some(json!({ "name": "Three sites", "max_machines": 3, "entitlements": ["updates", "sso"] })),
        )
        .await;
    assert_eq!(created.status(), 201);
    let policy: Value = created.json().await.expect("json");
    assert_eq!(policy["expiry"], "subscription");
    assert_eq!(policy["entitlements"], json!(["sso", "updates"]));
    let license = app
        .grant(json!({ "member_id": member["id"], "policy_id": "three-sites", "note": "partner" }))
        .await;
    assert_eq!(license["max_machines"], 3);
    assert_eq!(license["subscription_id"], Value::Null);
    assert_eq!(license["grant_note"], "partner");
    let key = license["key"].as_str().expect("key").to_owned();
    let id = license["id"].as_str().expect("id").to_owned();

    for d in ["a.example.com", "b.example.com", "https://C.example.com/x"] {
        let resp = app.activate_license(&token, &key, d).await;
        assert_eq!(resp.status(), 200, "{d}");
    }
    // Again on one it has: nothing changes.
    assert_eq!(
        app.activate_license(&token, &key, "www.b.example.com")
            .await
            .status(),
        200
    );
    let problem = assert_problem(
        app.activate_license(&token, &key, "d.example.com").await,
        409,
    )
    .await;
    assert_eq!(problem["type"], "/problems/license-too-many-machines");
    assert_eq!(problem["errors"][0]["field"], "domain");

    let valid = app
        .validate_for(&key, "b.example.com", json!(["updates"]))
        .await;
    assert_eq!(code(&valid), "VALID", "{valid}");
    assert_eq!(
        valid["license"]["machines"],
        json!(["a.example.com", "b.example.com", "c.example.com"])
    );
    assert_eq!(valid["license"]["max_machines"], 3);
    assert_eq!(valid["license"]["policy_id"], "three-sites");
    assert_eq!(valid["license"]["entitlements"], json!(["sso", "updates"]));
    assert_eq!(
        code(&app.validate_for(&key, "d.example.com", json!([])).await),
        "SITE_MISMATCH"
    );
    assert_eq!(
        code(
            &app.validate_for(&key, "a.example.com", json!(["updates", "audit"]))
                .await
        ),
        "ENTITLEMENT_MISSING"
    );

    // The member releases one; the fourth domain takes its place.
    let resp = app
        .client
        .delete(app.url(&format!("/v1/me/licenses/{key}/machines/b.example.com")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    let resp = app.activate_license(&token, &key, "d.example.com").await;
    assert_eq!(resp.status(), 200);
    let license: Value = resp.json().await.expect("json");
    assert_eq!(
        domains(&license),
        ["a.example.com", "c.example.com", "d.example.com"]
    );
    // Each activation says when and from where.
    assert_eq!(license["machines"][2]["ip"], "127.0.0.1");
    assert!(license["machines"][2]["activated_at"].is_string());

    // An admin releases one too.
    let resp = app
        .admin(
            Method::DELETE,
            &format!("/v1/licenses/{id}/machines/c.example.com"),
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let license: Value = resp.json().await.expect("json");
    assert_eq!(domains(&license), ["a.example.com", "d.example.com"]);

    // A policy lowered below what a key uses: TOO_MANY_MACHINES until domains are released.
    app.put_policy(
        "three-sites",
        json!({ "name": "One site", "max_machines": 1, "entitlements": ["updates"] }),
    )
    .await;
    assert_eq!(
        code(&app.validate_for(&key, "a.example.com", json!([])).await),
        "TOO_MANY_MACHINES"
    );
    // A policy in use is not deleted.
    let problem = assert_problem(
        app.admin(Method::DELETE, "/v1/license-policies/three-sites", None)
            .await,
        409,
    )
    .await;
    assert_eq!(problem["type"], "/problems/policy-in-use");

    app.settle().await;
    let summaries = timeline_summaries(&app, member["id"].as_str().expect("id")).await;
    for expected in [
        format!("License {key} granted by an operator, policy three-sites: partner"),
        "License activated on c.example.com".to_owned(),
        "License released from b.example.com".to_owned(),
        "License released from c.example.com".to_owned(),
    ] {
        assert!(summaries.contains(&expected), "{expected}: {summaries:?}");
    }
}

#[tokio::test]
async fn patterns_are_for_policies_that_allow_them_and_cover_the_names_under_them() {
    let app = TestApp::spawn().await;
    let member = app.member("pattern@example.com").await;
    let token = app.sign_in("pattern@example.com").await;
    app.put_policy("exact", json!({ "name": "Exact" })).await;
    app.put_policy(
        "agency",
        json!({ "name": "Agency", "max_machines": 2, "domain_patterns": true }),
    )
    .await;
    let exact = app
        .grant(json!({ "member_id": member["id"], "policy_id": "exact" }))
        .await;
    let problem = assert_problem(
        app.activate_license(&token, exact["key"].as_str().expect("key"), "*.example.com")
            .await,
        422,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "domain");

    let agency = app
        .grant(json!({ "email": "PATTERN@example.com", "policy_id": "agency" }))
        .await;
    let key = agency["key"].as_str().expect("key");
    assert_eq!(
        app.activate_license(&token, key, "*.example.com")
            .await
            .status(),
        200
    );
    for covered in ["example.com", "shop.example.com", "a.b.example.com"] {
        assert_eq!(
            code(&app.validate_for(key, covered, json!([])).await),
            "VALID",
            "{covered}"
        );
    }
    assert_eq!(
        code(&app.validate_for(key, "example.org", json!([])).await),
        "SITE_MISMATCH"
    );
}

#[tokio::test]
async fn an_operator_grants_extends_shortens_suspends_and_revokes_and_each_is_on_the_timeline() {
    let app = TestApp::spawn().await;
    let member = app.member("trial@example.com").await;
    let member_id = member["id"].as_str().expect("id").to_owned();
    let token = app.sign_in("trial@example.com").await;
    app.put_policy(
        "trial",
        json!({ "name": "Trial", "expiry": "duration", "duration_days": 14 }),
    )
    .await;

    // Refusals name their field.
    for (body, field) in [
        (json!({ "policy_id": "trial" }), "member_id"),
        (json!({ "email": "nobody@example.com" }), "email"),
        (
            json!({ "member_id": member_id, "policy_id": "gold" }),
            "policy_id",
        ),
        (
            json!({ "member_id": member_id, "expires_at": "2001-01-01T00:00:00Z" }),
            "expires_at",
        ),
        (
            json!({ "member_id": member_id, "note": "nul \u{0} inside" }),
            "note",
        ),
        (
            json!({ "member_id": member_id, "policy_id": "not\u{0}an id" }),
            "policy_id",
        ),
    ] {
        let problem = assert_problem(
            app.admin(Method::POST, "/v1/licenses", Some(body)).await,
            422,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field);
    }
    let problem = assert_problem(
        app.admin(
            Method::PUT,
            "/v1/license-policies/bad",
            Some(json!({ "name": "Bad", "expiry": "duration" })),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "duration_days");

    // A trial key: 14 days from its grant.
    let granted = app
        .grant(json!({ "member_id": member_id, "policy_id": "trial" }))
        .await;
    let (id, key) = (
        granted["id"].as_str().expect("id").to_owned(),
        granted["key"].as_str().expect("key").to_owned(),
    );
    let expires = at(&granted["expires_at"]);
    let expected = at(&granted["created_at"]) + Duration::days(14);
    assert!((expires - expected).num_seconds().abs() <= 1, "{granted}");
    assert_eq!(
        app.activate_license(&token, &key, "app.example.com")
            .await
            .status(),
        200
    );
    let valid = app.validate_for(&key, "app.example.com", json!([])).await;
    assert_eq!(code(&valid), "VALID");
    assert_eq!(at(&valid["license"]["expires_at"]), expires);

    let expiry = format!("/v1/licenses/{id}/expiry");
    // Shortened to a moment past: EXPIRED from then on.
    let past = (Utc::now() - Duration::minutes(1)).to_rfc3339();
    let resp = app
        .admin(Method::PUT, &expiry, Some(json!({ "expires_at": past })))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        code(&app.validate_for(&key, "app.example.com", json!([])).await),
        "EXPIRED"
    );
    // Extended: valid again.
    let later = Utc::now() + Duration::days(365);
    let resp = app
        .admin(
            Method::PUT,
            &expiry,
            Some(json!({ "expires_at": later.to_rfc3339() })),
        )
        .await;
    let license: Value = resp.json().await.expect("json");
    assert_eq!(at(&license["expires_at"]).timestamp(), later.timestamp());
    assert_eq!(
        code(&app.validate_for(&key, "app.example.com", json!([])).await),
        "VALID"
    );

    // Suspended, then unsuspended.
    let suspension = format!("/v1/licenses/{id}/suspension");
    app.admin(
        Method::POST,
        &suspension,
        Some(json!({ "reason": "unpaid invoice" })),
    )
    .await;
    assert_eq!(
        code(&app.validate_for(&key, "app.example.com", json!([])).await),
        "SUSPENDED"
    );
    app.admin(Method::DELETE, &suspension, None).await;
    assert_eq!(
        code(&app.validate_for(&key, "app.example.com", json!([])).await),
        "VALID"
    );

    // Out of every policy: no expiry of its own any more.
    let resp = app
        .admin(
            Method::PUT,
            &format!("/v1/licenses/{id}/policy"),
            Some(json!({ "policy_id": null })),
        )
        .await;
    let license: Value = resp.json().await.expect("json");
    assert_eq!(license["policy_id"], Value::Null);
    assert_eq!(license["expires_at"], Value::Null);
    // Back under the trial: its expiry counts from the grant again.
    let resp = app
        .admin(
            Method::PUT,
            &format!("/v1/licenses/{id}/policy"),
            Some(json!({ "policy_id": "trial" })),
        )
        .await;
    let license: Value = resp.json().await.expect("json");
    assert_eq!(at(&license["expires_at"]), expires);

    // Revoked: final.
    app.admin(
        Method::POST,
        &format!("/v1/licenses/{id}/revocation"),
        Some(json!({ "reason": "fraud" })),
    )
    .await;
    assert_eq!(
        code(&app.validate_for(&key, "app.example.com", json!([])).await),
        "REVOKED"
    );
    let problem = assert_problem(
        app.admin(Method::PUT, &expiry, Some(json!({ "expires_at": null })))
            .await,
        409,
    )
    .await;
    assert_eq!(problem["type"], "/problems/license-revoked");

    app.settle().await;
    let summaries = timeline_summaries(&app, &member_id).await;
    let day = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    for expected in [
        format!(
            "License {key} granted by an operator, policy trial, expires {}",
            day(expires)
        ),
        format!("License expiry changed: expires {}", day(later)),
        "License suspended: unpaid invoice".to_owned(),
        "License unsuspended".to_owned(),
        "License policy removed; no expiry of its own".to_owned(),
        format!("License policy set to trial; expires {}", day(expires)),
        "License revoked: fraud".to_owned(),
    ] {
        assert!(summaries.contains(&expected), "{expected}: {summaries:?}");
    }
    // And the member's dashboard shows where it stands.
    let dashboard: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    let shown = &dashboard["licenses"][0];
    assert_eq!(shown["policy_id"], "trial");
    assert!(shown["revoked_at"].is_string());
}

/// A Stripe subscription with one site item whose product has policy `policy`, started `days`
/// ago and past due since `past_due_days` ago.
async fn past_due_site(
    app: &TestApp,
    tag: &str,
    days: i64,
    past_due_days: i64,
) -> (Lifecycle, String) {
    let mut l = Lifecycle::new(&format!(
        "{tag}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    l.start = (Utc::now() - Duration::days(days)).timestamp();
    let failed_at = (days - past_due_days) * 86_400;
    for event in [
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "active", 0),
        l.invoice_paid(&format!("in_{}_1", l.tag), 2),
        l.subscription_event(
            "past_due",
            "customer.subscription.updated",
            "past_due",
            failed_at,
        ),
    ] {
        assert_eq!(app.send_webhook(&event).await.status(), 200);
    }
    app.drain_stripe().await;
    let token = app.sign_in(&l.email).await;
    let licenses = app.my_licenses(&token).await;
    assert_eq!(licenses.len(), 1, "{licenses:?}");
    let key = licenses[0]["key"].as_str().expect("key").to_owned();
    (l, key)
}

#[tokio::test]
async fn a_stripe_key_gets_its_products_policy_and_past_due_validates_through_the_grace_period_only(
) {
    let app = TestApp::spawn().await;
    let product = Lifecycle::new("product").subscription_object("active", 0, false)["items"]
        ["data"][0]["price"]["product"]
        .as_str()
        .expect("the fixture's product")
        .to_owned();
    app.put_policy(
        "graced",
        json!({ "name": "Seven days of grace", "grace_days": 7, "products": [product] }),
    )
    .await;
    // Another policy cannot take the product.
    let problem = assert_problem(
        app.admin(
            Method::PUT,
            "/v1/license-policies/other",
            Some(json!({ "name": "Other", "products": [product] })),
        )
        .await,
        409,
    )
    .await;
    assert_eq!(problem["type"], "/problems/product-has-policy");

    // Past due for 8 days: the grace of 7 is over.
    let (late, late_key) = past_due_site(&app, "late", 10, 8).await;
    let body = app.validate_for(&late_key, &late.site, json!([])).await;
    assert_eq!(code(&body), "EXPIRED", "{body}");
    assert_eq!(body["license"]["policy_id"], "graced");
    assert_eq!(body["license"]["status"], "active");

    // Past due for 2 days: still valid, and the answer says until when.
    let (recent, recent_key) = past_due_site(&app, "recent", 3, 2).await;
    let body = app.validate_for(&recent_key, &recent.site, json!([])).await;
    assert_eq!(code(&body), "VALID", "{body}");
    let grace_ends = at(&body["license"]["grace_ends_at"]);
    let expected = Utc::now() + Duration::days(5);
    assert!((grace_ends - expected).num_minutes().abs() < 5, "{body}");

    // Paid again: the grace is over and the key is valid with no grace pending.
    let paid = recent.subscription_event(
        "active_again",
        "customer.subscription.updated",
        "active",
        3 * 86_400 - 60,
    );
    assert_eq!(app.send_webhook(&paid).await.status(), 200);
    app.drain_stripe().await;
    let body = app.validate_for(&recent_key, &recent.site, json!([])).await;
    assert_eq!(code(&body), "VALID", "{body}");
    assert_eq!(body["license"]["grace_ends_at"], Value::Null);
}

#[tokio::test]
async fn an_activation_whose_heartbeat_stopped_frees_itself() {
    let app = TestApp::spawn_custom(|s| {
        s.licenses.heartbeat_sweep_every = std::time::Duration::from_millis(200);
    })
    .await;
    let member = app.member("beat@example.com").await;
    let token = app.sign_in("beat@example.com").await;
    app.put_policy(
        "beating",
        json!({ "name": "Heartbeat", "max_machines": 2, "heartbeat_minutes": 60 }),
    )
    .await;
    let license = app
        .grant(json!({ "member_id": member["id"], "policy_id": "beating" }))
        .await;
    let (id, key) = (
        license["id"].as_str().expect("id").to_owned(),
        license["key"].as_str().expect("key").to_owned(),
    );
    for d in ["a.example.com", "b.example.com"] {
        assert_eq!(app.activate_license(&token, &key, d).await.status(), 200);
    }
    let beat = |domain: &str| {
        app.client
            .post(app.url("/v1/licenses/heartbeat"))
            .json(&json!({ "key": key, "domain": domain }))
            .send()
    };
    assert_eq!(
        beat("https://a.example.com/").await.expect("sent").status(),
        204
    );
    let problem = assert_problem(beat("c.example.com").await.expect("sent"), 409).await;
    assert_eq!(problem["type"], "/problems/license-not-activated");

    // b's software went silent two hours ago (its activation and last heartbeat are dated back).
    let pool = sqlx::PgPool::connect(&app.database_url).await.expect("db");
    sqlx::query(
        "INSERT INTO license_heartbeats (license_id, domain, seen_at)
         VALUES ($1::uuid, 'b.example.com', now() - interval '2 hours')
         ON CONFLICT (license_id, domain) DO UPDATE SET seen_at = EXCLUDED.seen_at",
    )
    .bind(&id)
    .execute(&pool)
    .await
    .expect("dated back");
    sqlx::query(
        "UPDATE licenses SET machines = (SELECT jsonb_agg(CASE WHEN m->>'domain' = 'b.example.com'
             THEN jsonb_set(m, '{activated_at}', to_jsonb(now() - interval '3 hours')) ELSE m END)
             FROM jsonb_array_elements(machines) m)
         WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&pool)
    .await
    .expect("dated back");
    // Validation already leaves it out; the sweeper frees it with an event.
    assert_eq!(
        code(&app.validate_for(&key, "b.example.com", json!([])).await),
        "SITE_MISMATCH"
    );
    eventually("the silent activation is freed", || async {
        let license: Value = app
            .get(&format!("/v1/licenses/{id}"))
            .await
            .json()
            .await
            .expect("json");
        domains(&license) == ["a.example.com"]
    })
    .await;
    assert_eq!(
        app.activate_license(&token, &key, "c.example.com")
            .await
            .status(),
        200
    );
    app.settle().await;
    let summaries = timeline_summaries(&app, member["id"].as_str().expect("id")).await;
    assert!(
        summaries
            .iter()
            .any(|s| s.starts_with("License activation on b.example.com freed: no heartbeat since")),
        "{summaries:?}"
    );
}

#[tokio::test]
async fn licenses_issue_grants_a_real_key_without_stripe_from_the_command_line() {
    let app = TestApp::spawn().await;
    app.put_policy("pro", json!({ "name": "Pro", "max_machines": 3 }))
        .await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_memberledger"))
            .args(args)
            .env("DATABASE_URL", &app.database_url)
            .env_remove("ADMIN_TOKEN")
            .output()
            .expect("ran")
    };
    let out = run(&[
        "licenses",
        "issue",
        "--email",
        "cli@example.com",
        "--policy",
        "pro",
        "--note",
        "trying it out",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let license: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let key = license["key"].as_str().expect("key");
    let id = license["id"].as_str().expect("id");
    assert_eq!(license["policy_id"], "pro");
    // The member was created; the key is theirs and validates once activated.
    let token = app.sign_in("cli@example.com").await;
    assert_eq!(
        app.activate_license(&token, key, "cli.example.com")
            .await
            .status(),
        200
    );
    assert_eq!(
        code(&app.validate_for(key, "cli.example.com", json!([])).await),
        "VALID"
    );
    let out = run(&["licenses", "expiry", id, "--at", "2001-01-01T00:00:00Z"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        code(&app.validate_for(key, "cli.example.com", json!([])).await),
        "EXPIRED"
    );
    let out = run(&["licenses", "suspend", id, "--reason", "support case"]);
    assert!(out.status.success());
    assert_eq!(
        code(&app.validate_for(key, "cli.example.com", json!([])).await),
        "SUSPENDED"
    );
    // A refusal is a clear error, not a panic.
    let out = run(&["licenses", "set-policy", id, "gold"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("policy_id: no policy has this id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
