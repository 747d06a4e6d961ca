use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{eventually, TestApp, ADMIN_TOKEN};

async fn member_rows(app: &TestApp) -> Vec<(uuid::Uuid, String, Option<String>, String)> {
    sqlx::query_as("SELECT id, email, name, status FROM member_list ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .expect("rows")
}

async fn rebuild_state(app: &TestApp, name: &str) -> Option<String> {
    let list: Value = app.get("/v1/projections").await.json().await.expect("json");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["rebuild"]["state"].as_str().map(str::to_owned))
}

/// Runs `memberledger` against the app's database. Awaited, not blocking: the app's server runs
/// on this test's runtime, and a rebuild's swap waits for the live runner to finish its batch.
async fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_memberledger"))
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env_remove("ADMIN_TOKEN")
        .output()
        .await
        .expect("ran")
}

#[tokio::test]
async fn a_rebuild_during_writes_and_reads_loses_nothing_and_equals_a_build_from_scratch() {
    let app = Arc::new(TestApp::spawn().await);
    for i in 0..60 {
        app.member(&format!("before{i}@example.com")).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(60));
    let reads = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (app, stop, created) = (app.clone(), stop.clone(), created.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let resp = app
                    .create_member(json!({ "email": format!("during{i}@example.com") }))
                    .await;
                assert_eq!(resp.status(), 201, "a write failed during the rebuild");
                created.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let reader = {
        let (app, stop, reads) = (app.clone(), stop.clone(), reads.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let resp = app.get("/v1/members?limit=20").await;
                assert_eq!(resp.status(), 200, "a read failed during the rebuild");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let resp = app
        .client
        .post(app.url("/v1/projections/member_list/rebuild"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 202);
    let accepted: Value = resp.json().await.expect("json");
    let state = accepted["rebuild"]["state"]
        .as_str()
        .expect("a rebuild state");
    assert!(state == "running" || state == "done", "{accepted}");
    eventually("the rebuild to finish", || async {
        rebuild_state(&app, "member_list").await.as_deref() == Some("done")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    reader.await.expect("reader");
    assert!(reads.load(Ordering::Relaxed) > 0);
    app.settle().await;

    let rows = member_rows(&app).await;
    assert_eq!(
        rows.len(),
        created.load(Ordering::Relaxed),
        "every member is in the rebuilt table"
    );

    // A build from scratch, with nothing else going on, gives the same table.
    let out = cli(&app, &["projections", "rebuild", "member_list"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("swapped in"));
    app.settle().await;
    assert_eq!(member_rows(&app).await, rows);
    let indexes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 'member_list'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert!(indexes >= 3, "the swapped-in table has its indexes");
}

#[tokio::test]
async fn a_projection_whose_stored_version_differs_is_rebuilt_on_start() {
    let first = TestApp::spawn().await;
    let member = first.member("versioned@example.com").await;
    let url = first.database_url.clone();
    first.stop().await;
    // As left by an older release: another version, and a row that release computed differently.
    let pool = memberledger::db::pool(&url, 2).await.expect("connect");
    sqlx::query(
        "UPDATE projection_checkpoints SET version = version - 1 WHERE name = 'member_list'",
    )
    .execute(&pool)
    .await
    .expect("older version");
    sqlx::query("UPDATE member_list SET name = 'computed by an older release'")
        .execute(&pool)
        .await
        .expect("stale row");

    let app = TestApp::spawn_on(&url).await;
    eventually("the rebuild on start to finish", || async {
        rebuild_state(&app, "member_list").await.as_deref() == Some("done")
    })
    .await;
    let list: Value = app.get("/v1/projections").await.json().await.expect("json");
    let member_list = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["name"] == "member_list")
        .cloned()
        .expect("row");
    assert_eq!(member_list["version"], member_list["code_version"]);
    let fetched: Value = app
        .get_member(member["id"].as_str().expect("id"))
        .await
        .json()
        .await
        .expect("json");
    assert!(
        fetched["name"].is_null(),
        "recomputed from the log: {fetched}"
    );
}

#[tokio::test]
async fn one_rebuild_at_a_time_and_unknown_projections_are_404() {
    let app = TestApp::spawn().await;
    let post = |name: &str| {
        let app = &app;
        let url = app.url(&format!("/v1/projections/{name}/rebuild"));
        async move {
            app.client
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .expect("sent")
        }
    };
    // Another instance is rebuilding it (it reports progress after every batch).
    sqlx::query("INSERT INTO projection_rebuilds (name, state, version) VALUES ('members_status_events', 'running', 1)")
        .execute(&app.pool)
        .await
        .expect("row");
    crate::helpers::assert_problem(post("members_status_events").await, 409).await;
    // One silent for minutes died with its process: a new one may start.
    sqlx::query("UPDATE projection_rebuilds SET updated_at = now() - interval '10 minutes'")
        .execute(&app.pool)
        .await
        .expect("stale");
    assert_eq!(post("members_status_events").await.status(), 202);
    crate::helpers::assert_problem(post("no_such_projection").await, 404).await;
    let resp = app
        .client
        .post(app.url("/v1/projections/member_list/rebuild"))
        .send()
        .await
        .expect("sent");
    crate::helpers::assert_problem(resp, 401).await;
}

#[tokio::test]
async fn policies_are_not_rebuilt_because_their_commands_already_happened() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .post(app.url("/v1/projections/license_policy/rebuild"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    let problem = crate::helpers::assert_problem(resp, 409).await;
    assert_eq!(problem["type"], "/problems/not-rebuildable");
    let out = cli(&app, &["projections", "rebuild", "--all"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("member_list") && !printed.contains("license_policy"),
        "{printed}"
    );
}

/// Every index and index-backed constraint of the read models' tables, by name.
async fn schema_of_read_models(app: &TestApp) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT tablename::text, indexname::text, indexdef FROM pg_indexes
         WHERE schemaname = 'public' ORDER BY tablename, indexname",
    )
    .fetch_all(&app.pool)
    .await
    .expect("indexes")
}

#[tokio::test]
async fn rebuilding_every_projection_in_one_pass_keeps_rows_indexes_and_constraints() {
    let app = TestApp::spawn().await;
    for i in 0..30 {
        let member = app.member(&format!("pass{i}@example.com")).await;
        if i % 3 == 0 {
            let id = member["id"].as_str().expect("id");
            let resp = app
                .patch_member(id, json!({ "name": format!("Renamed {i}") }))
                .await;
            assert_eq!(resp.status(), 200);
        }
    }
    app.settle().await;
    let rows = member_rows(&app).await;
    let timeline: i64 = sqlx::query_scalar("SELECT count(*) FROM member_timeline")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    let indexes = schema_of_read_models(&app).await;

    let out = cli(&app, &["projections", "rebuild", "--all"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("member_list: 40 events, swapped in"),
        "{stdout}"
    );
    assert!(
        stdout.contains("member_timeline: 40 events, swapped in"),
        "{stdout}"
    );
    app.settle().await;

    assert_eq!(member_rows(&app).await, rows);
    let rebuilt_timeline: i64 = sqlx::query_scalar("SELECT count(*) FROM member_timeline")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(rebuilt_timeline, timeline);
    // Secondary indexes were built after loading, under their own names and definitions;
    // primary keys and unique constraints are there as before.
    assert_eq!(schema_of_read_models(&app).await, indexes);
    let shadows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild\\_%'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(shadows, 0, "no shadow schema is left behind");
    // The swapped-in tables come with the planner's statistics: nothing had analyzed them before.
    let unanalyzed: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_stat_user_tables
         WHERE schemaname = 'public' AND relname = ANY($1) AND last_analyze IS NULL
         ORDER BY 1",
    )
    .bind([
        "member_list",
        "member_emails",
        "member_timeline",
        "subscriptions",
        "licenses",
    ])
    .fetch_all(&app.pool)
    .await
    .expect("statistics");
    assert_eq!(unanalyzed, Vec::<String>::new());
    // The unique-email rule still holds on the rebuilt lookup.
    let resp = app
        .create_member(json!({ "email": "PASS1@example.com" }))
        .await;
    assert_eq!(resp.status(), 409);
}
