//! An operator's holds on a license through the admin API: suspend, unsuspend, revoke; what
//! validation, the dashboard, the timeline and the signed file say of each.

use serde_json::{json, Value};

use crate::checkout::app_with_stripe;
use crate::helpers::assert_problem;
use crate::license_purchases::subscribed;
use crate::licenses::timeline_summaries;
use crate::stripe_support::FakeStripe;

#[tokio::test]
async fn an_admin_suspends_unsuspends_and_revokes_a_license_and_validation_the_dashboard_and_the_timeline_follow(
) {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let (l, token, _) = subscribed(&app, "hold").await;
    let dashboard: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    let license = dashboard["licenses"][0].clone();
    let (id, key) = (
        license["id"].as_str().expect("id").to_owned(),
        license["key"].as_str().expect("key").to_owned(),
    );
    assert_eq!(license["suspension_reason"], Value::Null);
    assert_eq!(app.validate_license(&key, &l.site).await["code"], "VALID");
    let suspension = format!("/v1/licenses/{id}/suspension");

    // Only an admin, and only with a reason.
    let resp = app
        .client
        .post(app.url(&suspension))
        .bearer_auth(&token)
        .json(&json!({ "reason": "x" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 401);
    let problem = assert_problem(
        app.admin(
            reqwest::Method::POST,
            &suspension,
            Some(json!({ "reason": "  " })),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "reason");

    // Suspended: SUSPENDED whatever the domain, on the dashboard with its reason.
    let resp = app
        .admin(
            reqwest::Method::POST,
            &suspension,
            Some(json!({ "reason": "chargeback under review" })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let held: Value = resp.json().await.expect("json");
    assert_eq!(held["suspension_reason"], "chargeback under review");
    assert_eq!(
        held["status"], "active",
        "the subscription's status is kept apart"
    );
    assert_eq!(
        app.validate_license(&key, &l.site).await["code"],
        "SUSPENDED"
    );
    let dashboard: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        dashboard["licenses"][0]["suspension_reason"],
        "chargeback under review"
    );
    // Suspending again changes nothing (one event).
    let again = app
        .admin(
            reqwest::Method::POST,
            &suspension,
            Some(json!({ "reason": "another" })),
        )
        .await;
    assert_eq!(again.status(), 200);
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'LicenseSuspended'",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(events, 1);

    // Unsuspended: valid again.
    let resp = app.admin(reqwest::Method::DELETE, &suspension, None).await;
    assert_eq!(resp.status(), 200);
    let lifted: Value = resp.json().await.expect("json");
    assert_eq!(lifted["suspension_reason"], Value::Null);
    assert_eq!(app.validate_license(&key, &l.site).await["code"], "VALID");

    // Revoked: REVOKED for good; no further hold is taken.
    let revocation = format!("/v1/licenses/{id}/revocation");
    let resp = app
        .admin(
            reqwest::Method::POST,
            &revocation,
            Some(json!({ "reason": "fraud" })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let revoked: Value = resp.json().await.expect("json");
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(revoked["revocation_reason"], "fraud");
    assert_eq!(app.validate_license(&key, &l.site).await["code"], "REVOKED");
    let problem = assert_problem(
        app.admin(
            reqwest::Method::POST,
            &suspension,
            Some(json!({ "reason": "x" })),
        )
        .await,
        409,
    )
    .await;
    assert_eq!(problem["type"], "/problems/license-revoked");
    let file: Value = app
        .client
        .post(app.url("/v1/licenses/file"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(file["certificate"].is_string());
    // An unknown license.
    assert_problem(
        app.admin(
            reqwest::Method::POST,
            &format!("/v1/licenses/{}/revocation", uuid::Uuid::new_v4()),
            Some(json!({ "reason": "x" })),
        )
        .await,
        404,
    )
    .await;

    // Each change is on the member's timeline.
    app.settle().await;
    let member = dashboard["member_id"].as_str().expect("member id");
    let summaries = timeline_summaries(&app, member).await;
    for expected in [
        "License suspended: chargeback under review",
        "License unsuspended",
        "License revoked: fraud",
    ] {
        assert!(
            summaries.iter().any(|s| s == expected),
            "{expected} in {summaries:?}"
        );
    }
}
