use std::time::Duration;

use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::helpers::{eventually, TestApp};

fn created_payload(id: uuid::Uuid, email: &str) -> serde_json::Value {
    json!({"MemberCreated": {
        "member_id": id, "email": email, "name": null, "note": null, "labels": [],
        "source": "import", "created_at": "2026-11-24T12:00:00Z"
    }})
}

async fn append(conn: &mut PgConnection, id: uuid::Uuid, payload: serde_json::Value) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Member', $1, 1, 'MemberCreated', '1.0', $2, '{}')",
    )
    .bind(id.to_string())
    .bind(payload)
    .execute(conn)
    .await
    .expect("event appended");
}

/// Whether the asynchronous `member_timeline` shows the member's creation. (Events appended
/// with SQL, as here, reach no inline read model: only the runner applies them.)
async fn listed(app: &TestApp, id: uuid::Uuid) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM member_timeline WHERE member_id = $1)")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("query")
}

#[tokio::test]
async fn an_event_committed_after_a_later_one_is_not_skipped() {
    let app = TestApp::spawn().await;
    let (early, late) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());

    // The early transaction takes its position first but commits last.
    let mut slow = PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    let mut slow_tx = slow.begin().await.expect("begin");
    append(
        &mut slow_tx,
        early,
        created_payload(early, "early@example.com"),
    )
    .await;
    let mut fast = PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    append(&mut fast, late, created_payload(late, "late@example.com")).await;
    // While the early transaction is open, the runner must not pass it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !listed(&app, late).await,
        "the runner must wait for the open transaction"
    );

    slow_tx.commit().await.expect("commit");
    eventually("both members projected", || async {
        listed(&app, early).await && listed(&app, late).await
    })
    .await;
    let applied: i64 = sqlx::query_scalar(
        "SELECT events_applied FROM projection_checkpoints WHERE name = 'member_timeline'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("checkpoint");
    assert_eq!(applied, 2);
}

#[tokio::test]
async fn two_server_instances_project_each_event_exactly_once() {
    let first = TestApp::spawn().await;
    let second = TestApp::spawn_on(&first.database_url).await;
    let creates = (0..20).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.create_member(json!({ "email": format!("m{i}@example.com") }))
    });
    for resp in futures::future::join_all(creates).await {
        assert_eq!(resp.status(), 201);
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM member_list")
        .fetch_one(&first.pool)
        .await
        .expect("count");
    assert_eq!(rows, 20);
    first.settle().await;
    let checkpoints: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT name, mode, events_applied FROM projection_checkpoints ORDER BY name",
    )
    .fetch_all(&first.pool)
    .await
    .expect("checkpoints");
    assert!(checkpoints.len() >= 10, "{checkpoints:?}");
    // Every asynchronous read model and policy that handles member creations applied each of
    // the 20 once; the others read none of them. (Inline ones wrote them with their events.)
    let handling_creations: Vec<&str> = crate::stripe_support::projection_list()
        .iter()
        .filter(|p| projections::handles(p.as_ref(), "Member", "MemberCreated"))
        .map(|p| p.name())
        .collect();
    for (name, mode, applied) in &checkpoints {
        let expected = match mode.as_str() {
            "async" if handling_creations.contains(&name.as_str()) => 20,
            _ => 0,
        };
        assert_eq!(*applied, expected, "{name}: {checkpoints:?}");
    }
    assert!(
        checkpoints
            .iter()
            .any(|(_, mode, applied)| mode == "async" && *applied == 20),
        "{checkpoints:?}"
    );
    // One runner per asynchronous projection holds its lock, across both instances.
    let locks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
         JOIN projection_checkpoints c
           ON l.objid::bigint = (hashtext('memberledger.projection.' || c.name)::bigint & 4294967295)
         WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
    )
    .fetch_one(&first.pool)
    .await
    .expect("locks");
    let runners = checkpoints
        .iter()
        .filter(|(_, mode, _)| mode == "async")
        .count();
    assert_eq!(usize::try_from(locks).expect("count"), runners);
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn an_event_a_projection_cannot_apply_stalls_it_visibly_instead_of_being_skipped() {
    let app = TestApp::spawn().await;
    let (broken, after) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let mut conn = PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    append(
        &mut conn,
        broken,
        json!({"MemberCreated": {"unexpected": true}}),
    )
    .await;
    append(
        &mut conn,
        after,
        created_payload(after, "after@example.com"),
    )
    .await;

    eventually("the error is recorded", || async {
        let error: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM projection_checkpoints WHERE name = 'member_timeline'",
        )
        .fetch_optional(&app.pool)
        .await
        .expect("query")
        .flatten();
        error.is_some_and(|e| e.contains("could not be decoded"))
    })
    .await;
    assert!(
        !listed(&app, after).await,
        "later events wait behind the broken one"
    );

    // Repairing the event (as an upcaster would) lets the projection carry on.
    sqlx::query("UPDATE events SET payload = $2 WHERE aggregate_id = $1")
        .bind(broken.to_string())
        .bind(created_payload(broken, "broken@example.com"))
        .execute(&mut conn)
        .await
        .expect("repaired");
    eventually("both projected", || async {
        listed(&app, broken).await && listed(&app, after).await
    })
    .await;
}

/// `/readyz`, `/metrics`, the admin console and `projections status` ask every projection's
/// backlog, often: it is counted up to a bound, so a catch-up of millions of events does not
/// make each of them a scan of millions.
#[tokio::test]
async fn a_backlog_is_counted_up_to_its_bound_and_exactly_below_it() {
    use memberledger::eventlog::{backlog, LogPosition, BACKLOG_COUNTED_UP_TO};
    use projections::Handles;

    let app = TestApp::spawn().await;
    // Events of a kind no projection handles: nothing applies them, whatever runs.
    let kind = format!("Probe{}", uuid::Uuid::now_v7().simple());
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT $1, g::text, 1, 'Probed', '1.0', '{}', '{}' FROM generate_series(1, $2) AS g",
    )
    .bind(&kind)
    .bind(BACKLOG_COUNTED_UP_TO + 5)
    .execute(&app.pool)
    .await
    .expect("events appended");
    let handles = [Handles::all(Box::leak(kind.clone().into_boxed_str()))];

    let (count, age_ms) = backlog(&app.pool, LogPosition::default(), &handles)
        .await
        .expect("backlog");
    assert_eq!(count, BACKLOG_COUNTED_UP_TO, "counted up to the bound");
    assert!(age_ms.is_some_and(|ms| ms >= 0.0), "{age_ms:?}");

    let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events WHERE aggregate_type = $1
         ORDER BY global_position DESC OFFSET 3 LIMIT 1",
    )
    .bind(&kind)
    .fetch_one(&app.pool)
    .await
    .expect("an event");
    let fourth_last = LogPosition {
        transaction_id,
        global_position,
    };
    let (count, _) = backlog(&app.pool, fourth_last, &handles)
        .await
        .expect("backlog");
    assert_eq!(count, 3, "below the bound, exact");

    let other = [Handles::all("NoSuchAggregate")];
    let none = backlog(&app.pool, LogPosition::default(), &other)
        .await
        .expect("backlog");
    assert_eq!(none, (0, None));
}
