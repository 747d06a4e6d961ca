//! `POST /v1/members/imports`: an upload answered 202, imported in the background with its
//! progress and a downloadable report; uploads refused with a problem; an import interrupted
//! by a crash resumed by another instance after its last recorded batch.

use std::time::Duration;

use memberledger::api::state::AppState;
use memberledger::members_import::{job, Import, Summary};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_problem, fresh_database, TestApp, ADMIN_TOKEN};
use crate::members_import::{newsletter, FILE};

const BOUNDARY: &str = "memberledger-test-boundary";

/// A `multipart/form-data` body with `csv` as its `file` part.
pub(crate) fn form(part: &str, csv: &str) -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{part}\"; filename=\"members.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n{csv}\r\n--{BOUNDARY}--\r\n"
    )
    .into_bytes()
}

pub(crate) async fn upload(app: &TestApp, body: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url("/v1/members/imports"))
        .bearer_auth(ADMIN_TOKEN)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("sent")
}

/// Polls the import at `location` until it has ended.
async fn ended(app: &TestApp, location: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let import: Value = app.get(location).await.json().await.expect("json");
        if import["status"] == "completed" || import["status"] == "failed" {
            return import;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the import did not end: {import}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn an_upload_is_imported_in_the_background_with_its_counts_and_report_and_again_changes_nothing(
) {
    let app = TestApp::spawn().await;
    newsletter(&app, "Weekly").await;
    let resp = upload(&app, form("file", FILE)).await;
    assert_eq!(resp.status(), 202);
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned();
    let accepted: Value = resp.json().await.expect("json");
    assert_eq!(
        location,
        format!(
            "/v1/members/imports/{}",
            accepted["id"].as_str().expect("id")
        )
    );
    assert_eq!(accepted["file_name"], "members.csv");
    assert_eq!(accepted["size_bytes"], FILE.len());

    let import = ended(&app, &location).await;
    assert_eq!(import["status"], "completed", "{import}");
    for (field, expected) in [
        ("rows", 7),
        ("created", 4),
        ("updated", 0),
        ("unchanged", 0),
        ("refused", 3),
        ("notes", 1),
        ("percent", 100),
    ] {
        assert_eq!(import[field], expected, "{field}: {import}");
    }
    assert!(import["error"].is_null());
    assert!(import["started_at"].is_string() && import["finished_at"].is_string());
    assert_eq!(
        count(&app, "SELECT count(*) FROM member_import_chunks").await,
        0,
        "the file is deleted once imported"
    );
    let names: Vec<String> = sqlx::query_scalar("SELECT email FROM member_list ORDER BY email")
        .fetch_all(&app.pool)
        .await
        .expect("members");
    assert_eq!(
        names,
        [
            "ada@example.com",
            "bob@example.com",
            "di@example.com",
            "ed@example.com"
        ]
    );

    let report = app
        .get(import["report_url"].as_str().expect("report_url"))
        .await;
    assert_eq!(report.status(), 200);
    assert!(report
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/csv")));
    let report = report.text().await.expect("text");
    let lines: Vec<(String, String)> = csv::Reader::from_reader(report.as_bytes())
        .records()
        .map(|r| {
            let r = r.expect("record");
            (r[0].to_owned(), r[2].to_owned())
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("4", "email"),
            ("5", "email"),
            ("6", "newsletters"),
            ("7", "complimentary_plan"),
        ]
        .map(|(l, f)| (l.to_owned(), f.to_owned())),
        "{report}"
    );

    // The same file again: nothing created, no event appended.
    let events = count(&app, "SELECT count(*) FROM events").await;
    let resp = upload(&app, form("file", FILE)).await;
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let again = ended(&app, &location).await;
    assert_eq!(
        (again["created"].clone(), again["unchanged"].clone()),
        (0.into(), 4.into()),
        "{again}"
    );
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, events);
}

#[tokio::test]
async fn uploads_are_refused_with_a_problem_naming_the_reason() {
    let app = TestApp::spawn_custom(|s| s.edge.upload_max_bytes = 64 * 1024).await;
    let resp = app
        .client
        .post(app.url("/v1/members/imports"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(form("file", FILE))
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 401).await;

    let resp = app
        .client
        .post(app.url("/v1/members/imports"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/csv")
        .body(FILE)
        .send()
        .await
        .expect("sent");
    assert_problem(resp, 415).await;

    assert_problem(upload(&app, form("document", FILE)).await, 400).await;

    let problem = assert_problem(upload(&app, form("file", "")).await, 422).await;
    assert_eq!(problem["errors"][0]["field"], "file", "{problem}");
    let problem = assert_problem(upload(&app, form("file", "name,note\nAda,x\n")).await, 422).await;
    assert_eq!(problem["errors"][0]["field"], "file", "{problem}");
    assert!(
        problem["errors"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("email")),
        "{problem}"
    );

    // Too large, declared or not.
    let big = format!("email\n{}", "someone@example.com\n".repeat(4_000));
    let problem = assert_problem(upload(&app, form("file", &big)).await, 413).await;
    assert!(problem["detail"]
        .as_str()
        .is_some_and(|d| d.contains("MEMBER_IMPORT_MAX_MB")));
    let chunked = chunked_upload(&app, &form("file", &big)).await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");

    assert_eq!(count(&app, "SELECT count(*) FROM member_imports").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM member_list").await, 0);
    assert_problem(
        app.get(&format!("/v1/members/imports/{}", uuid::Uuid::now_v7()))
            .await,
        404,
    )
    .await;
    assert_problem(
        app.get(&format!(
            "/v1/members/imports/{}/report.csv",
            uuid::Uuid::now_v7()
        ))
        .await,
        404,
    )
    .await;
}

/// Sends `body` with `Transfer-Encoding: chunked` (no declared length); the response's head.
async fn chunked_upload(app: &TestApp, body: &[u8]) -> String {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connected");
    let head = format!(
        "POST /v1/members/imports HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    for part in body.chunks(8 * 1024) {
        let sent = async {
            stream
                .write_all(format!("{:x}\r\n", part.len()).as_bytes())
                .await?;
            stream.write_all(part).await?;
            stream.write_all(b"\r\n").await
        };
        // The server may answer and close before the whole body is sent.
        if sent.await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_import_interrupted_by_a_crash_is_resumed_after_its_last_recorded_batch() {
    // 1,200 rows: three batches of 500, 500 and 200.
    let mut file = String::from("email,name\n");
    for i in 0..1_200 {
        file.push_str(&format!("member{i:04}@example.com,Member {i}\n"));
    }
    let database_url = fresh_database().await;
    let pool = memberledger::db::pool(&database_url, 4)
        .await
        .expect("pool");
    let stored = job::upload(&pool, Some("big.csv"), file.as_bytes())
        .await
        .expect("stored");
    assert_eq!(stored.status, "pending");

    // A run that applied two batches and recorded only the first before its instance died.
    let state = AppState::new(pool.clone(), &memberledger::config::Settings::default());
    let mut run = Import::start(
        &pool,
        &state.members,
        Box::new(std::io::Cursor::new(file.clone().into_bytes())),
        "crashed-run",
        Summary::default(),
    )
    .await
    .expect("started");
    run.next_batch().await.expect("batch 1").expect("a batch");
    let first = run.summary();
    run.next_batch().await.expect("batch 2").expect("a batch");
    drop(run);
    sqlx::query(
        "UPDATE member_imports SET status = 'running', attempts = 1, started_at = now(),
                lease_until = now() - interval '1 second', rows_read = $2, created = $3
         WHERE id = $1",
    )
    .bind(stored.id)
    .bind(i64::try_from(first.rows).expect("small"))
    .bind(i64::try_from(first.created).expect("small"))
    .execute(&pool)
    .await
    .expect("the crashed run's progress");

    // Another instance takes it up where it was recorded.
    let app = TestApp::spawn_on(&database_url).await;
    let import = ended(&app, &format!("/v1/members/imports/{}", stored.id)).await;
    assert_eq!(import["status"], "completed", "{import}");
    assert_eq!(import["rows"], 1_200, "{import}");
    assert_eq!(
        (import["created"].clone(), import["unchanged"].clone()),
        (700.into(), 500.into()),
        "batch 2, applied but not recorded, is found unchanged: {import}"
    );
    assert_eq!(count(&app, "SELECT count(*) FROM member_list").await, 1_200);
    assert_eq!(
        count(&app, "SELECT count(*) FROM member_emails").await,
        1_200
    );
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM member_imports WHERE id = $1")
        .bind(stored.id)
        .fetch_one(&pool)
        .await
        .expect("attempts");
    assert_eq!(attempts, 2);
}
