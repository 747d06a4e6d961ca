use serde_json::Value;

use crate::helpers::TestApp;

#[tokio::test]
async fn healthz_and_readyz_report_the_service() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    app.member("ready@example.com").await;
    // The 201 waits for the member list only; the other read models follow.
    app.settle().await;
    let resp = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["migrations_applied"], true);
    let names: Vec<&str> = body["projections"]
        .as_array()
        .expect("projections")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    for expected in [
        "member_list",
        "members_created_events",
        "members_status_events",
        "member_timeline",
        "license_policy",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        body["projections"]
            .as_array()
            .expect("projections")
            .iter()
            .all(|p| p["lag_events"] == 0),
        "{body}"
    );
}

#[tokio::test]
async fn readyz_is_503_when_the_database_is_gone() {
    let app = TestApp::spawn().await;
    app.pool.close().await;
    let resp = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["database"], false);
    // Requests that need the database answer 503 too, never 500.
    let resp = app.get("/v1/members").await;
    assert_eq!(resp.status(), 503);
}
