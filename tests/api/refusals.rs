//! A domain refusal (the aggregate said no) is answered with its 4xx problem, never the 503
//! kept for an unavailable database. The refusals here happen when a read model is behind the
//! aggregate: the API's own checks pass, the command is refused.

use serde_json::{json, Value};

use crate::checkout::app_with_stripe;
use crate::helpers::{assert_problem, TestApp};
use crate::license_purchases::subscribed;
use crate::stripe_support::{FakeStripe, Lifecycle};

/// Ends the subscription (its deletion webhook is processed), then puts the read model back to
/// `active`, as a read model that has not caught up yet would show it.
async fn end_behind_a_stale_read_model(app: &TestApp, l: &Lifecycle) {
    let deleted = l.subscription_event("deleted", "customer.subscription.deleted", "canceled", 300);
    assert_eq!(app.send_webhook(&deleted).await.status(), 200);
    app.drain_stripe().await;
    let stale = sqlx::query("UPDATE subscriptions SET status = 'active' WHERE id = $1")
        .bind(&l.subscription)
        .execute(&app.pool)
        .await
        .expect("update");
    assert_eq!(stale.rows_affected(), 1);
}

async fn post_as(app: &TestApp, token: &str, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn adding_a_site_to_an_ended_subscription_is_a_409_not_a_503() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let (l, token, _) = subscribed(&app, "endsite").await;
    end_behind_a_stale_read_model(&app, &l).await;

    let body = json!({
        "sites": ["new.example.com"],
        "success_url": "https://shop.test/ok",
        "cancel_url": "https://shop.test/no"
    });
    let problem = assert_problem(post_as(&app, &token, "/v1/me/sites", body).await, 409).await;
    assert_eq!(problem["type"], "/problems/subscription-ended");
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_sites")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(pending, 0, "a refused purchase leaves no pending site");
}

#[tokio::test]
async fn buying_keys_for_an_ended_subscription_is_a_409_not_a_503() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let (l, token, _) = subscribed(&app, "endkeys").await;
    end_behind_a_stale_read_model(&app, &l).await;

    let body = json!({
        "quantity": 2,
        "success_url": "https://shop.test/ok",
        "cancel_url": "https://shop.test/no"
    });
    let resp = post_as(&app, &token, "/v1/me/license-purchases", body).await;
    let problem = assert_problem(resp, 409).await;
    assert_eq!(problem["type"], "/problems/subscription-ended");
}

#[tokio::test]
async fn changing_a_member_that_does_not_exist_is_a_404_not_a_503() {
    let app = TestApp::spawn().await;
    let email = format!("gone-{}@example.com", uuid::Uuid::new_v4().simple());
    assert_eq!(
        app.create_member(json!({ "email": email })).await.status(),
        201
    );
    let token = app.sign_in(&email).await;
    // The session now names a member the log has never seen.
    sqlx::query("UPDATE member_sessions SET member_id = $1")
        .bind(uuid::Uuid::now_v7())
        .execute(&app.pool)
        .await
        .expect("update");

    let resp = app
        .client
        .patch(app.url("/v1/me"))
        .bearer_auth(&token)
        .json(&json!({ "name": "Nobody" }))
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(resp, 404).await;
    assert_eq!(problem["type"], "/problems/not-found");
}
