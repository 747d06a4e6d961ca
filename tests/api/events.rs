use serde_json::{json, Value};

use crate::helpers::{TestApp, ADMIN_TOKEN};

#[tokio::test]
async fn events_carry_type_version_order_and_metadata() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .post(app.url("/v1/members"))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", "req-abc")
        .json(&json!({"email": "meta@example.com"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.patch_member(&id, json!({"name": "Meta"})).await;

    let rows: Vec<(String, i64, String, String, Value, i64)> = sqlx::query_as(
        "SELECT aggregate_type, sequence, event_type, event_version, metadata::jsonb, global_position
         FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .expect("events");
    assert_eq!(rows.len(), 2);
    let (aggregate_type, sequence, event_type, version, metadata, first_position) = &rows[0];
    assert_eq!(
        (
            aggregate_type.as_str(),
            *sequence,
            event_type.as_str(),
            version.as_str()
        ),
        ("Member", 1, "MemberCreated", "1.1")
    );
    assert_eq!(metadata["correlation_id"], "req-abc");
    assert_eq!(metadata["causation_id"], "req-abc");
    assert_eq!(metadata["actor"], "admin");
    let (_, _, event_type, _, metadata, second_position) = &rows[1];
    assert_eq!(event_type, "MemberUpdated");
    assert!(second_position > first_position);
    assert!(
        metadata["causation_id"]
            .as_str()
            .is_some_and(|c| c != "req-abc"),
        "a new request id: {metadata}"
    );
}

#[tokio::test]
async fn a_member_created_at_version_1_0_loads_projects_and_changes_in_its_new_shape() {
    // An older release wrote it (no attribution, version 1.0) before this version started:
    // the inline read models are built from the log when the server starts.
    let database_url = crate::helpers::fresh_database().await;
    let pool = memberledger::db::pool(&database_url, 2)
        .await
        .expect("connecting");
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Member', $1, 1, 'MemberCreated', '1.0', $2, '{}')",
    )
    .bind(id.to_string())
    .bind(json!({"MemberCreated": {
        "member_id": id, "email": "legacy@example.com", "name": "Legacy", "note": null,
        "labels": [], "source": "import", "created_at": "2025-01-01T00:00:00Z"
    }}))
    .execute(&pool)
    .await
    .expect("old event");
    pool.close().await;
    let app = TestApp::spawn_on(&database_url).await;
    app.settle().await;

    // The projection replayed it upcast: the import context's attribution.
    let detail: Value = app
        .get_member(&id.to_string())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(detail["name"], "Legacy", "{detail}");
    assert_eq!(
        detail["attribution"]["referrer_source"], "Imported",
        "{detail}"
    );
    // The aggregate loads it upcast and takes a new command.
    let updated: Value = app
        .patch_member(&id.to_string(), json!({"name": "Renamed"}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(updated["name"], "Renamed");
    let versions: Vec<String> = sqlx::query_scalar(
        "SELECT event_version FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id.to_string())
    .fetch_all(&app.pool)
    .await
    .expect("versions");
    assert_eq!(
        versions,
        ["1.0", "1.0"],
        "stored events are never rewritten"
    );
}
