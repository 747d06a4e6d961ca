//! Exporting the event log: `memberledger events export` and `GET /v1/events` read it in the
//! projections' order, never pass an open transaction, and return every event exactly once.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};

use crate::helpers::{
    assert_problem, eventually, fresh_database, problem_fields, TestApp, ADMIN_TOKEN,
};

/// No projection or policy reads these aggregate types.
const TEST_TYPE: &str = "ExportTest";
const OTHER_TYPE: &str = "ExportOther";

struct NewEvent<'a> {
    aggregate_type: &'a str,
    aggregate_id: String,
    event_type: &'a str,
    payload: Value,
    recorded_at: Option<DateTime<Utc>>,
}

impl<'a> NewEvent<'a> {
    fn new(event_type: &'a str, payload: Value) -> Self {
        Self {
            aggregate_type: TEST_TYPE,
            aggregate_id: uuid::Uuid::new_v4().to_string(),
            event_type,
            payload,
            recorded_at: None,
        }
    }
}

/// Appends one event (sequence 1 of a new aggregate); returns its position.
async fn append(conn: &mut PgConnection, event: NewEvent<'_>) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, recorded_at)
         VALUES ($1, $2, 1, $3, '1.0', $4, $5, coalesce($6, now()))
         RETURNING global_position",
    )
    .bind(event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(event.event_type)
    .bind(&event.payload)
    .bind(json!({"correlation_id": event.aggregate_id, "note": "a \"quoted\", comma\nline"}))
    .bind(event.recorded_at)
    .fetch_one(conn)
    .await
    .expect("event appended")
}

async fn append_simple(conn: &mut PgConnection, event_type: &str) -> i64 {
    append(conn, NewEvent::new(event_type, json!({"n": event_type}))).await
}

/// Every position in the log, in `(transaction_id, global_position)` order.
async fn log_order(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT global_position FROM events ORDER BY transaction_id, global_position",
    )
    .fetch_all(pool)
    .await
    .expect("log")
}

/// Waits until every event in the database is readable: below the oldest transaction still
/// open anywhere in the cluster (other tests' transactions hold the horizon back too).
async fn wait_visible(pool: &PgPool) {
    eventually("every event to be below the horizon", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(pool)
        .await
        .expect("count");
        waiting == 0
    })
    .await;
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.expect("connect")
}

fn positions(items: &[Value]) -> Vec<i64> {
    items
        .iter()
        .map(|e| e["position"].as_i64().expect("position"))
        .collect()
}

fn assert_unique(positions: &[i64]) {
    let set: HashSet<_> = positions.iter().collect();
    assert_eq!(set.len(), positions.len(), "duplicates in {positions:?}");
}

// --- API helpers ------------------------------------------------------------------------------

async fn page(app: &TestApp, query: &str) -> Value {
    let resp = app.get(&format!("/v1/events?{query}")).await;
    assert_eq!(resp.status(), 200, "GET /v1/events?{query}");
    resp.json().await.expect("json")
}

/// Follows `next_cursor` from `after` until an empty page; returns the items and the cursor.
async fn follow(
    app: &TestApp,
    after: Option<String>,
    limit: u32,
    filters: &str,
) -> (Vec<Value>, Option<String>) {
    let mut cursor = after;
    let mut items = Vec::new();
    loop {
        let mut query = format!("limit={limit}{filters}");
        if let Some(c) = &cursor {
            query.push_str(&format!("&after={c}"));
        }
        let body = page(app, &query).await;
        let batch = body["items"].as_array().expect("items").clone();
        assert!(batch.len() <= limit as usize, "{body}");
        if batch.is_empty() {
            assert_eq!(
                body["next_cursor"].as_str().map(str::to_owned),
                cursor,
                "an empty page gives back the cursor it got"
            );
            return (items, cursor);
        }
        let next = body["next_cursor"]
            .as_str()
            .expect("next_cursor with items")
            .to_owned();
        let last = batch.last().expect("an item");
        assert_eq!(
            next,
            format!("{}.{}", last["transaction_id"], last["position"]),
            "the cursor is the last item's"
        );
        items.extend(batch);
        cursor = Some(next);
    }
}

// --- CLI helpers ------------------------------------------------------------------------------

struct Export {
    stdout: String,
    stderr: String,
    /// The cursor printed at the end.
    cursor: String,
}

async fn run_export(database_url: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_memberledger"))
        .args(["events", "export", "--database-max-connections", "2"])
        .args(args)
        .env_remove("ADMIN_TOKEN")
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("ran memberledger events export")
}

async fn export(database_url: &str, args: &[&str]) -> Export {
    let out = run_export(database_url, args).await;
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert!(out.status.success(), "export {args:?} failed: {stderr}");
    let cursor = stderr
        .rsplit_once("--after ")
        .map(|(_, c)| c.trim().to_owned())
        .unwrap_or_else(|| panic!("no cursor printed: {stderr}"));
    Export {
        stdout: String::from_utf8(out.stdout).expect("utf8"),
        stderr,
        cursor,
    }
}

fn jsonl(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON object"))
        .collect()
}

async fn exported_positions(database_url: &str, args: &[&str]) -> Vec<i64> {
    positions(&jsonl(&export(database_url, args).await.stdout))
}

// --- Ordering and exactly-once ----------------------------------------------------------------

#[tokio::test]
async fn readers_wait_for_an_open_transaction_and_then_return_every_event_once_in_order() {
    let app = TestApp::spawn().await;
    let mut fast = connect(&app.database_url).await;
    let first = append_simple(&mut fast, "First").await;
    wait_visible(&app.pool).await;

    // The slow transaction takes its transaction id first, its position later, and commits last.
    let mut slow = connect(&app.database_url).await;
    let mut slow_tx = slow.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *slow_tx)
        .await
        .expect("xid");
    let committed_before = append_simple(&mut fast, "CommittedBefore").await;
    let held = append_simple(&mut slow_tx, "Held").await;
    let committed_after = append_simple(&mut fast, "CommittedAfter").await;
    assert!(committed_before < held && held < committed_after);

    // Neither reader passes the open transaction.
    let (seen, cursor) = follow(&app, None, 1, "").await;
    assert_eq!(positions(&seen), [first], "{seen:?}");
    let cursor = cursor.expect("a cursor");
    let cli = export(&app.database_url, &[]).await;
    assert_eq!(positions(&jsonl(&cli.stdout)), [first]);
    assert_eq!(cli.cursor, cursor, "the CLI and the API agree on cursors");
    let (more, same) = follow(&app, Some(cursor.clone()), 1, "").await;
    assert!(more.is_empty());
    assert_eq!(same.as_deref(), Some(cursor.as_str()));

    slow_tx.commit().await.expect("commit");
    wait_visible(&app.pool).await;
    let (rest, end) = follow(&app, Some(cursor.clone()), 1, "").await;
    // In transaction order the held event comes before the one committed before it.
    assert_eq!(positions(&rest), [held, committed_before, committed_after]);
    let cli_rest = export(&app.database_url, &["--after", &cli.cursor]).await;
    assert_eq!(
        positions(&jsonl(&cli_rest.stdout)),
        [held, committed_before, committed_after]
    );
    assert_eq!(Some(cli_rest.cursor.clone()), end);

    let mut all = positions(&seen);
    all.extend(positions(&rest));
    assert_eq!(all, log_order(&app.pool).await);
    assert_unique(&all);
    // Nothing after the end.
    assert!(export(&app.database_url, &["--after", &cli_rest.cursor])
        .await
        .stdout
        .is_empty());
}

#[tokio::test]
async fn exports_taken_while_transactions_commit_out_of_order_contain_each_event_once() {
    let url = fresh_database().await;
    let pool = memberledger::db::pool(&url, 2).await.expect("pool");
    const WRITERS: usize = 10;
    const EVENTS_PER_WRITER: usize = 5;

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut conn = connect(&url).await;
                for i in 0..EVENTS_PER_WRITER {
                    let mut tx = conn.begin().await.expect("begin");
                    // Take a transaction id, wait, then a position, wait, commit: transactions
                    // interleave and commit out of order.
                    sqlx::query("SELECT pg_current_xact_id()")
                        .execute(&mut *tx)
                        .await
                        .expect("xid");
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..40))).await;
                    let event = NewEvent::new("Written", json!({"writer": w, "i": i}));
                    append(&mut tx, event).await;
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..40))).await;
                    tx.commit().await.expect("commit");
                }
            })
        })
        .collect();

    // Export repeatedly while they write, each export continuing after the previous one.
    let mut exported = Vec::new();
    let mut cursor: Option<String> = None;
    let mut exports = 0;
    loop {
        let done = writers.iter().all(tokio::task::JoinHandle::is_finished);
        let mut args = vec!["--batch-size", "3"];
        if let Some(c) = &cursor {
            args.extend(["--after", c.as_str()]);
        }
        let run = export(&url, &args).await;
        exported.extend(positions(&jsonl(&run.stdout)));
        cursor = Some(run.cursor);
        exports += 1;
        if done {
            break;
        }
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    assert!(exports > 1, "the export ran while events were written");
    // Other tests' open transactions may still hold the last ones back.
    wait_visible(&pool).await;
    let args = vec!["--after", cursor.as_deref().unwrap_or("0.0")];
    exported.extend(exported_positions(&url, &args).await);
    let log = log_order(&pool).await;
    assert_eq!(log.len(), WRITERS * EVENTS_PER_WRITER);
    assert_unique(&exported);
    assert_eq!(exported, log, "every event once, in log order");

    // And one export of the whole log.
    assert_eq!(exported_positions(&url, &[]).await, log);
}

// --- Formats ----------------------------------------------------------------------------------

/// The `events` rows as exports write them, in log order.
async fn stored_rows(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT json_build_object(
             'position', global_position, 'transaction_id', transaction_id::text::bigint,
             'recorded_at', recorded_at, 'aggregate_type', aggregate_type,
             'aggregate_id', aggregate_id, 'sequence', sequence, 'event_type', event_type,
             'event_version', event_version, 'payload', payload, 'metadata', metadata)::jsonb
         FROM events ORDER BY transaction_id, global_position",
    )
    .fetch_all(pool)
    .await
    .expect("rows")
}

async fn seed_formats(url: &str) -> PgPool {
    let pool = memberledger::db::pool(url, 2).await.expect("pool");
    let mut conn = connect(url).await;
    let _ = append(
        &mut conn,
        NewEvent::new(
            "Tricky",
            json!({"text": "commas, \"quotes\"\nand newlines", "nested": {"list": [1, 2.5, null, true]}}),
        ),
    )
    .await;
    for i in 0..3 {
        append(&mut conn, NewEvent::new("Plain", json!({"i": i}))).await;
    }
    wait_visible(&pool).await;
    pool
}

fn same_time(exported: &Value, stored: &Value) {
    let a: DateTime<Utc> = exported.as_str().expect("time").parse().expect("RFC 3339");
    let b: DateTime<Utc> = stored.as_str().expect("time").parse().expect("RFC 3339");
    assert_eq!(a, b);
}

#[tokio::test]
async fn jsonl_export_has_every_field() {
    let url = fresh_database().await;
    let pool = seed_formats(&url).await;
    let stored = stored_rows(&pool).await;
    let lines = jsonl(&export(&url, &["--format", "jsonl"]).await.stdout);
    assert_eq!(lines.len(), stored.len());
    for (line, row) in lines.iter().zip(&stored) {
        let keys: Vec<&str> = line
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 10, "{line}");
        for field in [
            "position",
            "transaction_id",
            "aggregate_type",
            "aggregate_id",
            "sequence",
            "event_type",
            "event_version",
            "payload",
            "metadata",
        ] {
            assert_eq!(line[field], row[field], "{field} of {line}");
        }
        same_time(&line["recorded_at"], &row["recorded_at"]);
        assert!(line["payload"].is_object(), "payload is JSON, not text");
    }
    assert_eq!(
        lines[0]["payload"]["nested"]["list"],
        json!([1, 2.5, null, true])
    );
}

#[tokio::test]
async fn csv_export_parses_back_with_every_field() {
    let url = fresh_database().await;
    let pool = seed_formats(&url).await;
    let stored = stored_rows(&pool).await;
    let out = export(&url, &["--format", "csv"]).await.stdout;
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "position",
            "transaction_id",
            "recorded_at",
            "aggregate_type",
            "aggregate_id",
            "sequence",
            "event_type",
            "event_version",
            "payload",
            "metadata"
        ]
    );
    let records: Vec<csv::StringRecord> = reader
        .records()
        .map(|r| r.expect("a valid CSV record"))
        .collect();
    assert_eq!(records.len(), stored.len());
    for (record, row) in records.iter().zip(&stored) {
        assert_eq!(record.len(), 10);
        assert_eq!(record[0], row["position"].to_string());
        assert_eq!(record[1], row["transaction_id"].to_string());
        same_time(&json!(record[2]), &row["recorded_at"]);
        assert_eq!(&record[3], row["aggregate_type"].as_str().expect("str"));
        assert_eq!(&record[4], row["aggregate_id"].as_str().expect("str"));
        assert_eq!(record[5], row["sequence"].to_string());
        assert_eq!(&record[6], row["event_type"].as_str().expect("str"));
        assert_eq!(&record[7], row["event_version"].as_str().expect("str"));
        let payload: Value = serde_json::from_str(&record[8]).expect("payload is JSON text");
        let metadata: Value = serde_json::from_str(&record[9]).expect("metadata is JSON text");
        assert_eq!(payload, row["payload"]);
        assert_eq!(metadata, row["metadata"]);
    }
    assert_eq!(
        records[0][8].parse::<Value>().expect("json")["text"],
        "commas, \"quotes\"\nand newlines"
    );

    // An export with nothing in it is the header alone.
    let empty = export(&url, &["--format", "csv", "--event-type", "Nothing"]).await;
    assert_eq!(empty.stdout.lines().count(), 1, "{}", empty.stdout);
    assert!(
        empty.stderr.contains("exported 0 event(s)"),
        "{}",
        empty.stderr
    );
}

// --- Filters and cursors ----------------------------------------------------------------------

fn at(s: &str) -> Option<DateTime<Utc>> {
    Some(s.parse().expect("time"))
}

#[tokio::test]
async fn export_filters_by_aggregate_type_event_type_time_and_cursor() {
    let url = fresh_database().await;
    let mut conn = connect(&url).await;
    let event = |aggregate_type, event_type, recorded_at: &str| NewEvent {
        aggregate_type,
        recorded_at: at(recorded_at),
        ..NewEvent::new(event_type, json!({}))
    };
    let a_x = append(&mut conn, event(TEST_TYPE, "X", "2026-01-01T00:00:00Z")).await;
    let a_y = append(&mut conn, event(TEST_TYPE, "Y", "2026-02-01T00:00:00Z")).await;
    let b_x = append(&mut conn, event(OTHER_TYPE, "X", "2026-03-01T00:00:00Z")).await;
    let b_z = append(&mut conn, event(OTHER_TYPE, "Z", "2026-04-01T00:00:00Z")).await;
    let a_z = append(&mut conn, event(TEST_TYPE, "Z", "2026-05-01T00:00:00Z")).await;
    wait_visible(&memberledger::db::pool(&url, 1).await.expect("pool")).await;

    assert_eq!(
        exported_positions(&url, &[]).await,
        [a_x, a_y, b_x, b_z, a_z]
    );
    assert_eq!(
        exported_positions(&url, &["--aggregate-type", OTHER_TYPE]).await,
        [b_x, b_z]
    );
    assert_eq!(
        exported_positions(&url, &["--event-type", "X", "--event-type", "Z"]).await,
        [a_x, b_x, b_z, a_z]
    );
    assert_eq!(
        exported_positions(&url, &["--event-type", "Y,Z"]).await,
        [a_y, b_z, a_z]
    );
    assert_eq!(
        exported_positions(&url, &["--aggregate-type", TEST_TYPE, "--event-type", "Z"]).await,
        [a_z]
    );
    // `--since` is inclusive, `--until` exclusive.
    assert_eq!(
        exported_positions(
            &url,
            &[
                "--since",
                "2026-02-01T00:00:00Z",
                "--until",
                "2026-04-01T00:00:00Z"
            ]
        )
        .await,
        [a_y, b_x]
    );
    assert_eq!(
        exported_positions(&url, &["--since", "2026-04-01T02:00:00+02:00"]).await,
        [b_z, a_z]
    );
    // After a bare position, after a cursor, and from the start.
    assert_eq!(
        exported_positions(&url, &["--after", &b_x.to_string()]).await,
        [b_z, a_z]
    );
    let first_two = export(&url, &["--until", "2026-03-01T00:00:00Z"]).await;
    assert_eq!(positions(&jsonl(&first_two.stdout)), [a_x, a_y]);
    assert_eq!(
        exported_positions(&url, &["--after", &first_two.cursor]).await,
        [b_x, b_z, a_z]
    );
    assert_eq!(
        exported_positions(&url, &["--after", "0"]).await,
        [a_x, a_y, b_x, b_z, a_z]
    );
    // A filtered export's cursor continues the filtered stream.
    let others = export(&url, &["--aggregate-type", OTHER_TYPE, "--event-type", "X"]).await;
    assert_eq!(positions(&jsonl(&others.stdout)), [b_x]);
    assert_eq!(
        exported_positions(
            &url,
            &["--aggregate-type", OTHER_TYPE, "--after", &others.cursor]
        )
        .await,
        [b_z]
    );

    // Errors name what is wrong.
    for (args, expected) in [
        (vec!["--after", "999999"], "no event has position 999999"),
        (vec!["--after", "12.x"], "--after"),
        (vec!["--since", "yesterday"], "--since"),
        (vec!["--format", "xml"], "--format"),
        (
            vec![
                "--since",
                "2026-05-01T00:00:00Z",
                "--until",
                "2026-01-01T00:00:00Z",
            ],
            "--since must be before --until",
        ),
    ] {
        let out = run_export(&url, &args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[tokio::test]
async fn output_writes_a_whole_file_or_none() {
    let url = fresh_database().await;
    let pool = seed_formats(&url).await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("export-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("events.jsonl");
    std::fs::write(&path, "old contents\n").expect("old file");
    let path_arg = path.to_str().expect("utf8 path");

    let run = export(&url, &["--output", path_arg]).await;
    assert!(run.stdout.is_empty(), "nothing on stdout: {}", run.stdout);
    let written = std::fs::read_to_string(&path).expect("file written");
    assert_eq!(positions(&jsonl(&written)), log_order(&pool).await);
    assert!(
        !dir.join("events.jsonl.tmp").exists(),
        "no temporary file left"
    );
    assert!(run.stderr.contains("exported 4 event(s)"), "{}", run.stderr);

    let csv_path = dir.join("events.csv");
    export(
        &url,
        &["--format", "csv", "-o", csv_path.to_str().expect("utf8")],
    )
    .await;
    let mut reader = csv::Reader::from_path(&csv_path).expect("csv file");
    assert_eq!(reader.records().count(), 4);

    // A failed export leaves no file behind.
    let missing = dir.join("no-such-dir").join("events.jsonl");
    let out = run_export(&url, &["--output", missing.to_str().expect("utf8")]).await;
    assert!(!out.status.success());
    assert!(!missing.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

// --- API --------------------------------------------------------------------------------------

#[tokio::test]
async fn events_api_requires_a_token_and_checks_its_parameters() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/v1/events"))
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 401).await;
    let resp = app
        .client
        .get(app.url("/v1/events"))
        .bearer_auth("wrong-token")
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 401).await;

    for limit in ["0", "1001", "-5"] {
        let problem =
            assert_problem(app.get(&format!("/v1/events?limit={limit}")).await, 422).await;
        assert_eq!(problem_fields(&problem), ["limit"], "{problem}");
    }
    let problem = assert_problem(app.get("/v1/events?limit=many").await, 400).await;
    assert_eq!(problem_fields(&problem), ["limit"], "{problem}");
    for after in ["garbage", "1.x", "-1.2", "1.2.3", "%20"] {
        let problem =
            assert_problem(app.get(&format!("/v1/events?after={after}")).await, 400).await;
        assert_eq!(problem_fields(&problem), ["after"], "{after}: {problem}");
    }
    // A position no event has.
    let problem = assert_problem(app.get("/v1/events?after=424242").await, 400).await;
    assert_eq!(problem_fields(&problem), ["after"], "{problem}");

    // An empty log: no items, no cursor (or the one given back).
    let body = page(&app, "").await;
    assert_eq!(body, json!({"items": [], "next_cursor": null}));
    let body = page(&app, "after=0.0").await;
    assert_eq!(body, json!({"items": [], "next_cursor": "0.0"}));
    let body = page(&app, "limit=1000").await;
    assert_eq!(body["items"], json!([]));
}

#[tokio::test]
async fn events_api_pages_return_every_event_once_with_its_fields() {
    let app = TestApp::spawn().await;
    let member = app.member("exported@example.com").await;
    let mut conn = connect(&app.database_url).await;
    for i in 0..4 {
        append_simple(&mut conn, if i % 2 == 0 { "Even" } else { "Odd" }).await;
    }
    append(
        &mut conn,
        NewEvent {
            aggregate_type: OTHER_TYPE,
            ..NewEvent::new("Even", json!({}))
        },
    )
    .await;
    app.settle().await;
    wait_visible(&app.pool).await;
    let log = log_order(&app.pool).await;
    assert!(log.len() >= 6, "{log:?}");

    for limit in [1, 2, 3, 7, 1000] {
        let (items, _) = follow(&app, None, limit, "").await;
        assert_eq!(positions(&items), log, "limit {limit}");
    }
    let (items, cursor) = follow(&app, None, 2, "").await;
    let created = items
        .iter()
        .find(|e| e["event_type"] == "MemberCreated")
        .expect("the member's event");
    assert_eq!(created["aggregate_type"], "Member");
    assert_eq!(created["aggregate_id"], member["id"]);
    assert_eq!(created["sequence"], 1);
    assert!(created["event_version"].is_string());
    assert!(created["transaction_id"].as_i64().is_some());
    assert!(created["payload"].is_object() && created["metadata"].is_object());
    assert!(created["recorded_at"]
        .as_str()
        .is_some_and(|t| t.parse::<DateTime<Utc>>().is_ok()));

    // Following the last cursor later gets only what was appended since.
    let later = append_simple(&mut conn, "Later").await;
    wait_visible(&app.pool).await;
    let (new, _) = follow(&app, cursor, 3, "").await;
    assert_eq!(positions(&new), [later]);

    // Filters: repeated or comma-separated event types, aggregate type; a bare position.
    let all = log_order(&app.pool).await;
    let (evens, _) = follow(&app, None, 1, "&event_type=Even").await;
    let (even_or_odd, _) = follow(&app, None, 2, "&event_type=Even&event_type=Odd").await;
    let (comma, _) = follow(&app, None, 2, "&event_type=Odd,Even").await;
    assert_eq!(evens.len(), 3);
    assert!(evens.iter().all(|e| e["event_type"] == "Even"));
    assert_eq!(even_or_odd.len(), 5);
    assert_eq!(positions(&comma), positions(&even_or_odd));
    let (tests, _) = follow(
        &app,
        None,
        2,
        &format!("&aggregate_type={TEST_TYPE}&event_type=Even"),
    )
    .await;
    assert_eq!(tests.len(), 2);
    assert!(tests.iter().all(|e| e["aggregate_type"] == TEST_TYPE));
    let (after_first, _) = follow(&app, Some(all[0].to_string()), 4, "").await;
    assert_eq!(positions(&after_first), all[1..]);
}

#[tokio::test]
async fn events_api_and_token_header_are_documented() {
    let app = TestApp::spawn().await;
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let op = &spec["paths"]["/v1/events"]["get"];
    assert_eq!(op["operationId"], "listEvents");
    assert_eq!(op["tags"], json!(["Events"]));
    for status in ["200", "400", "401", "422", "500", "503"] {
        assert!(op["responses"][status].is_object(), "{status} documented");
    }
    // The token works as for every admin operation.
    let resp = app
        .client
        .get(app.url("/v1/events"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
}
