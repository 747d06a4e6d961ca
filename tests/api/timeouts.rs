//! Bounded waits: a statement past the API's statement timeout, or a request that cannot get
//! a connection in time, is answered 503 with `Retry-After` instead of hanging; `/readyz`
//! names the failing dependency.

use std::time::Duration;

use memberledger::bounds::{api_pool, DatabaseBounds};
use reqwest::Response;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::helpers::{assert_problem, fresh_database, test_settings, TestApp};

/// An app whose API pool has `bounds` and `max_connections` connections.
async fn bounded_app(max_connections: u32, bounds: DatabaseBounds) -> TestApp {
    let url = fresh_database().await;
    let base = memberledger::db::pool(&url, max_connections)
        .await
        .expect("connecting");
    let pool = api_pool(&base, bounds);
    TestApp::spawn_with_pool(&url, pool, test_settings().await).await
}

/// Asserts a 503 problem with a `Retry-After` in seconds; returns the problem.
async fn assert_retry_later(resp: Response) -> Value {
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_problem(resp, 503).await
}

#[tokio::test]
async fn a_statement_that_exceeds_the_timeout_answers_503_with_retry_after() {
    let app = bounded_app(
        5,
        DatabaseBounds {
            statement_timeout: Some(Duration::from_millis(200)),
            acquire_timeout: Duration::from_secs(5),
        },
    )
    .await;
    let member = app.member("before@example.com").await;
    let id = member["id"].as_str().expect("id").to_owned();

    // Another session holds the members' read model: reads and writes of it wait on the lock.
    let mut other = PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    let mut tx = other.begin().await.expect("begin");
    sqlx::query("LOCK TABLE member_list IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .expect("locked");

    // A read past the statement timeout.
    let problem = assert_retry_later(app.get("/v1/members").await).await;
    assert_eq!(problem["type"], "/problems/unavailable", "{problem}");
    assert_retry_later(app.get_member(&id).await).await;
    // A command whose inline read model waits past the timeout: rolled back, 503 too.
    let resp = app
        .create_member(json!({"email": "during@example.com"}))
        .await;
    assert_retry_later(resp).await;

    tx.rollback().await.expect("released");
    let resp = app.get("/v1/members").await;
    assert_eq!(resp.status(), 200);
    let list: Value = resp.json().await.expect("json");
    let emails: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["email"].as_str())
        .collect();
    assert_eq!(
        emails,
        ["before@example.com"],
        "the timed-out command wrote nothing"
    );
}

#[tokio::test]
async fn a_request_that_gets_no_connection_in_time_answers_503_and_readyz_names_the_database() {
    let app = bounded_app(
        1,
        DatabaseBounds {
            statement_timeout: Some(Duration::from_secs(5)),
            acquire_timeout: Duration::from_millis(200),
        },
    )
    .await;
    // Take the API pool's only connection (the server may be using it a moment).
    let mut held = None;
    for _ in 0..50 {
        if let Ok(conn) = app.pool.acquire().await {
            held = Some(conn);
            break;
        }
    }
    let held = held.expect("the pool's connection");

    assert_retry_later(app.get("/v1/members").await).await;
    let resp = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["database"], false, "{body}");
    let failing = body["failing"].as_array().expect("failing");
    assert_eq!(failing.len(), 1, "{body}");
    assert_eq!(failing[0]["dependency"], "database", "{body}");
    assert!(
        failing[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("timed out")),
        "{body}"
    );

    drop(held);
    let resp = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["failing"], json!([]), "{body}");
    assert_eq!(app.get("/v1/members").await.status(), 200);
}

/// Waits until a statement of the app's database waits for a lock (the in-flight request).
async fn until_a_request_waits_for_the_lock(app: &TestApp) {
    crate::helpers::eventually("a request waiting for the lock", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                            WHERE datname = current_database() AND wait_event_type = 'Lock')",
        )
        .fetch_one(&app.pool)
        .await
        .expect("query")
    })
    .await;
}

#[tokio::test]
async fn a_stop_lets_an_in_flight_request_finish() {
    let app = bounded_app(
        5,
        DatabaseBounds {
            statement_timeout: None,
            acquire_timeout: Duration::from_secs(5),
        },
    )
    .await;
    app.member("in-flight@example.com").await;
    let mut other = PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    let mut tx = other.begin().await.expect("begin");
    sqlx::query("LOCK TABLE member_list IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .expect("locked");
    let (client, url) = (app.client.clone(), app.url("/v1/members"));
    let request = tokio::spawn(async move {
        client
            .get(url)
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .send()
            .await
    });
    until_a_request_waits_for_the_lock(&app).await;

    let health = app.url("/healthz");
    let stopping = tokio::spawn(app.stop());
    // Stopping: new connections are refused, the request in flight goes on.
    crate::helpers::eventually("the listener to close", || async {
        reqwest::get(&health).await.is_err()
    })
    .await;
    tx.rollback().await.expect("released");
    let resp = request.await.expect("task").expect("answered");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["items"][0]["email"], "in-flight@example.com");
    stopping.await.expect("stopped cleanly");
}

#[tokio::test]
async fn a_stop_does_not_wait_beyond_its_grace_for_a_request_that_never_finishes() {
    let url = fresh_database().await;
    let base = memberledger::db::pool(&url, 5).await.expect("connecting");
    let pool = api_pool(
        &base,
        DatabaseBounds {
            statement_timeout: None,
            acquire_timeout: Duration::from_secs(5),
        },
    );
    let mut settings = test_settings().await;
    settings.shutdown_grace = Duration::from_secs(1);
    let app = TestApp::spawn_with_pool(&url, pool, settings).await;
    let mut other = PgConnection::connect(&url).await.expect("connect");
    let mut tx = other.begin().await.expect("begin");
    sqlx::query("LOCK TABLE member_list IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .expect("locked");
    let (client, members) = (app.client.clone(), app.url("/v1/members"));
    let _request = tokio::spawn(async move {
        client
            .get(members)
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .send()
            .await
    });
    until_a_request_waits_for_the_lock(&app).await;
    // The lock is never released while the server stops: it gives up on the request after
    // its grace. (The minute here only keeps a regression from hanging the test run.)
    let stopped = tokio::time::timeout(Duration::from_secs(60), app.stop()).await;
    assert!(stopped.is_ok(), "the stop waited past its grace");
    tx.rollback().await.expect("released");
}
