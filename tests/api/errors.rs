use serde_json::json;

use crate::helpers::{assert_problem, TestApp, ADMIN_TOKEN};

#[tokio::test]
async fn malformed_json_is_a_problem_not_plain_text() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .post(app.url("/v1/members"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(resp, 400).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("invalid"),
        "{problem}"
    );

    let resp = app
        .client
        .post(app.url("/v1/members"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"email": ["not", "a", "string"]}))
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 400).await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .post(app.url("/v1/members"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/plain")
        .body("email=a@example.com")
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 415).await;
}

#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/v1/members"))
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 401).await;
    let resp = app
        .client
        .post(app.url("/v1/members"))
        .bearer_auth("wrong")
        .json(&json!({"email": "a@example.com"}))
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 401).await;
    let resp = app
        .client
        .get(app.url("/v1/members"))
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 401).await;
}

#[tokio::test]
async fn tokens_made_by_the_cli_work_and_are_stored_hashed() {
    let app = TestApp::spawn().await;
    let token = memberledger::api::auth::create_stored_token(&app.pool, "test")
        .await
        .expect("created");
    let resp = app
        .client
        .get(app.url("/v1/members"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM admin_tokens WHERE token_hash = convert_to($1, 'UTF8')",
    )
    .bind(&token)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(stored, 0, "the plain token is not stored");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problems() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/v1/nothing-here"))
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 404).await;
    let resp = app
        .client
        .delete(app.url("/v1/members"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 405).await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = TestApp::spawn().await;
    let note = "x".repeat(2 * 1024 * 1024);
    let resp = app
        .create_member(json!({"email": "big@example.com", "note": note}))
        .await;
    assert_problem(resp, 413).await;
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "req-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    let resp = app
        .client
        .get(app.url("/v1/members"))
        .send()
        .await
        .expect("sent");
    let id = resp.headers()["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}
