//! A stuck projection: an event a projection cannot apply is narrowed down from its batch,
//! reported with its position and error (status, `/readyz`, the admin API), retried, and
//! skipped only by an operator into `projection_dead_letters`; the event stays in the log and
//! the projection goes on.

use std::process::Command;

use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::helpers::{assert_problem, eventually, TestApp, ADMIN_TOKEN};

fn memberledger(database_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memberledger"));
    cmd.env("DATABASE_URL", database_url)
        .env_remove("ADMIN_TOKEN")
        .env("RUST_LOG", "warn");
    cmd
}

fn created(id: uuid::Uuid, email: &str) -> Value {
    json!({"MemberCreated": {
        "member_id": id, "email": email, "name": null, "note": null, "labels": [],
        "source": "import", "created_at": "2026-11-24T12:00:00Z"
    }})
}

/// Appends a `MemberCreated` with `payload`; returns its global position.
async fn append(conn: &mut PgConnection, id: uuid::Uuid, payload: Value) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Member', $1, 1, 'MemberCreated', '1.0', $2, '{}')
         RETURNING global_position",
    )
    .bind(id.to_string())
    .bind(payload)
    .fetch_one(conn)
    .await
    .expect("event appended")
}

async fn in_timeline(app: &TestApp, id: uuid::Uuid) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM member_timeline WHERE member_id = $1)")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("query")
}

/// `projections status --json`, by the binary.
fn status(app: &TestApp) -> Vec<Value> {
    let out = memberledger(&app.database_url)
        .args(["projections", "status", "--json"])
        .output()
        .expect("ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("json")
        .as_array()
        .expect("array")
        .clone()
}

async fn readyz(app: &TestApp) -> Value {
    let resp = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        resp.status(),
        200,
        "a stuck projection does not stop serving"
    );
    resp.json().await.expect("json")
}

#[tokio::test]
async fn a_poison_event_is_reported_skipped_by_the_command_recorded_and_the_projection_catches_up()
{
    let app = TestApp::spawn().await;
    let (before, poison, after) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    // One transaction, so the runner reads the three in one batch and has to narrow it down.
    let mut conn = PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    append(&mut tx, before, created(before, "before@example.com")).await;
    let position = append(
        &mut tx,
        poison,
        json!({"MemberCreated": {"member_id": "not-a-uuid", "email": 42}}),
    )
    .await;
    append(&mut tx, after, created(after, "after@example.com")).await;
    tx.commit().await.expect("commit");

    // Reported: the CLI names the projection, the event's position and the error.
    eventually("member_timeline to report the poison event", || async {
        status(&app)
            .iter()
            .any(|p| p["name"] == "member_timeline" && p["stuck_position"] == position)
    })
    .await;
    let rows = status(&app);
    let timeline = rows
        .iter()
        .find(|p| p["name"] == "member_timeline")
        .expect("member_timeline");
    let error = timeline["last_error"].as_str().expect("an error");
    assert!(
        error.contains(&format!("event {position}")) && error.contains("MemberCreated"),
        "{error}"
    );
    assert!(timeline["stuck_since"].is_string(), "{timeline}");
    // The events before it are applied, none after it.
    assert!(
        in_timeline(&app, before).await,
        "the event before was applied"
    );
    assert!(
        !in_timeline(&app, after).await,
        "nothing past the poison event"
    );
    assert!(!in_timeline(&app, poison).await);

    // `/readyz` and the admin API show it too.
    let ready = readyz(&app).await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    let failing = ready["failing"]
        .as_array()
        .expect("failing")
        .iter()
        .find(|f| f["dependency"] == "projection:member_timeline")
        .unwrap_or_else(|| panic!("member_timeline not named: {ready}"))
        .clone();
    assert!(
        failing["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("stuck at event {position}"))),
        "{failing}"
    );
    let listed: Value = app.get("/v1/projections").await.json().await.expect("json");
    let view = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["name"] == "member_timeline")
        .expect("member_timeline")
        .clone();
    assert_eq!(view["stuck_position"], position, "{view}");

    // Only the event it is stuck on can be skipped.
    let resp = app
        .client
        .post(app.url("/v1/projections/member_timeline/skip"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"position": position + 1}))
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 409).await;
    let out = memberledger(&app.database_url)
        .args([
            "projections",
            "skip",
            "member_timeline",
            &(position + 1).to_string(),
        ])
        .output()
        .expect("ran");
    assert!(!out.status.success(), "a wrong position is refused");
    assert!(!in_timeline(&app, after).await);

    // The operator skips it with the command.
    let out = memberledger(&app.database_url)
        .args([
            "projections",
            "skip",
            "member_timeline",
            &position.to_string(),
        ])
        .output()
        .expect("ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Any other projection stuck on it is skipped through the admin API.
    for other in status(&app)
        .iter()
        .filter(|p| p["stuck_position"] == position)
    {
        let name = other["name"].as_str().expect("name");
        let resp = app
            .client
            .post(app.url(&format!("/v1/projections/{name}/skip")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"position": position}))
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200, "skipping for {name}");
        let letter: Value = resp.json().await.expect("json");
        assert_eq!(letter["skipped_by"], "api", "{letter}");
    }

    // Recorded with its error; the event stays in the log.
    let (projection, event_type, recorded_error, skipped_by): (String, String, String, String) =
        sqlx::query_as(
            "SELECT projection, event_type, error, skipped_by FROM projection_dead_letters
             WHERE global_position = $1 AND projection = 'member_timeline'",
        )
        .bind(position)
        .fetch_one(&app.pool)
        .await
        .expect("a dead letter");
    assert_eq!(projection, "member_timeline");
    assert_eq!(event_type, "MemberCreated");
    assert_eq!(recorded_error, error);
    assert_eq!(skipped_by, "cli");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE global_position = $1")
        .bind(position)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(kept, 1, "the event is never lost");

    // The projection goes on: the later event is applied, nothing is stuck.
    eventually("the event after the poison one to be applied", || async {
        in_timeline(&app, after).await
    })
    .await;
    let rows = status(&app);
    for p in &rows {
        assert!(p["stuck_position"].is_null(), "{p}");
        assert!(p["last_error"].is_null(), "{p}");
    }
    assert!(!in_timeline(&app, poison).await);
    let ready = readyz(&app).await;
    assert_eq!(ready["status"], "ready", "{ready}");

    let out = memberledger(&app.database_url)
        .args(["projections", "dead-letters", "--json"])
        .output()
        .expect("ran");
    let letters: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        letters
            .as_array()
            .expect("array")
            .iter()
            .any(|l| l["projection"] == "member_timeline" && l["global_position"] == position),
        "{letters}"
    );
}
