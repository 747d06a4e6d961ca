//! `memberledger members import`: good, bad and duplicate rows, a second import that changes
//! nothing, an export that re-imports as the same members, and the command's report.

use memberledger::api::state::AppState;
use memberledger::members_import::{import, Refusal, Summary};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::TestApp;

/// Imports `csv` in-process; the summary and the report's `(line, field)` pairs.
async fn run(app: &TestApp, csv: &str) -> (Summary, Vec<(u64, String)>) {
    let state = AppState::new(app.pool.clone(), &memberledger::config::Settings::default());
    let mut report = Vec::new();
    let summary = import(
        &app.pool,
        &state.members,
        Box::new(std::io::Cursor::new(csv.to_owned().into_bytes())),
        "test-import",
        |r: &Refusal| report.push((r.line, r.field.clone())),
    )
    .await
    .expect("imported");
    (summary, report)
}

async fn events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

async fn by_email(app: &TestApp, email: &str) -> Value {
    let page: Value = app
        .admin(Method::GET, &format!("/v1/members?search={email}"), None)
        .await
        .json()
        .await
        .expect("json");
    let id = page["items"][0]["id"].as_str().expect(email).to_owned();
    app.get_member(&id).await.json().await.expect("json")
}

pub(crate) async fn newsletter(app: &TestApp, name: &str) -> Value {
    let resp = app
        .admin(
            Method::POST,
            "/v1/newsletters",
            Some(json!({ "name": name })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    resp.json().await.expect("json")
}

pub(crate) const FILE: &str = "\
email,name,note,labels,subscribed_to_emails,complimentary_plan,stripe_customer_id,created_at,newsletters
ada@example.com,Ada,first,\"vip,beta\",true,false,cus_ada,2024-05-01T09:30:00.000Z,Weekly
bob@example.com,Bob,,,false,false,,,
not-an-email,X,,,,,,,
ADA@example.com,Ada again,,,,,,,
cy@example.com,Cy,,,,,,,Nope
di@example.com,Di,,,,true,,,
ed@example.com,Edward,,new,,,,,
";

#[tokio::test]
async fn an_import_creates_updates_and_refuses_rows_and_a_second_one_changes_nothing() {
    let app = TestApp::spawn().await;
    let weekly = newsletter(&app, "Weekly").await;
    let ed = app
        .create_member(json!({ "email": "ed@example.com", "name": "Ed", "labels": ["old"] }))
        .await;
    assert_eq!(ed.status(), 201);

    let (summary, report) = run(&app, FILE).await;
    assert_eq!(
        summary,
        Summary {
            rows: 7,
            created: 3,
            updated: 1,
            unchanged: 0,
            refused: 3,
            notes: 1,
        }
    );
    assert_eq!(
        report,
        vec![
            (4, "email".to_owned()),
            (5, "email".to_owned()),
            (6, "newsletters".to_owned()),
            (7, "complimentary_plan".to_owned()),
        ]
    );

    let ada = by_email(&app, "ada@example.com").await;
    assert_eq!(ada["name"], "Ada");
    assert_eq!(ada["note"], "first");
    assert_eq!(ada["labels"], json!(["vip", "beta"]));
    assert_eq!(ada["source"], "import");
    assert_eq!(ada["created_at"], "2024-05-01T09:30:00+00:00");
    assert_eq!(ada["attribution"]["referrer_source"], "Imported");
    assert_eq!(ada["attribution"]["referrer_medium"], "Member Importer");
    let ada_id: uuid::Uuid = ada["id"].as_str().expect("id").parse().expect("uuid");
    let subscribed: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT newsletter_id FROM member_newsletters WHERE member_id = $1")
            .bind(ada_id)
            .fetch_all(&app.pool)
            .await
            .expect("newsletters");
    assert_eq!(subscribed.len(), 1);
    assert_eq!(
        subscribed[0].to_string(),
        weekly["id"].as_str().expect("id")
    );
    let customer: uuid::Uuid =
        sqlx::query_scalar("SELECT member_id FROM stripe_customers WHERE customer_id = 'cus_ada'")
            .fetch_one(&app.pool)
            .await
            .expect("the customer is linked");
    assert_eq!(customer, ada_id);

    let bob = by_email(&app, "bob@example.com").await;
    let bob_id: uuid::Uuid = bob["id"].as_str().expect("id").parse().expect("uuid");
    let bob_newsletters: i64 =
        sqlx::query_scalar("SELECT count(*) FROM member_newsletters WHERE member_id = $1")
            .bind(bob_id)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(bob_newsletters, 0, "subscribed_to_emails=false");
    let di = by_email(&app, "di@example.com").await;
    assert_eq!(
        di["status"], "free",
        "imported without complimentary access"
    );
    let ed = by_email(&app, "ed@example.com").await;
    assert_eq!(ed["name"], "Edward");
    assert_eq!(ed["labels"], json!(["old", "new"]), "labels are added");
    assert_eq!(ed["source"], "admin", "an existing member keeps its source");
    for absent in ["cy@example.com", "not-an-email"] {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM member_list WHERE email = $1")
            .bind(absent)
            .fetch_one(&app.pool)
            .await
            .expect("count");
        assert_eq!(n, 0, "{absent} was refused");
    }

    // The same file again: nothing is created twice and no event is appended.
    let before = events(&app).await;
    let (again, report_again) = run(&app, FILE).await;
    assert_eq!(
        again,
        Summary {
            rows: 7,
            created: 0,
            updated: 0,
            unchanged: 4,
            refused: 3,
            notes: 1,
        }
    );
    assert_eq!(report_again, report);
    assert_eq!(events(&app).await, before);
}

#[tokio::test]
async fn an_export_imports_into_an_empty_instance_as_the_same_members() {
    let app = TestApp::spawn().await;
    let weekly = newsletter(&app, "Weekly").await;
    for (email, name, note, labels) in [
        (
            "ada@example.com",
            Some("Ada, \"the first\""),
            Some("line one\nline two"),
            json!(["vip"]),
        ),
        ("bob@example.com", None, None, json!([])),
        ("cy@example.com", Some("Cy"), None, json!(["a", "b"])),
    ] {
        let resp = app
            .create_member(json!({ "email": email, "name": name, "note": note, "labels": labels }))
            .await;
        assert_eq!(resp.status(), 201);
    }
    // Ada subscribes to the newsletter (newsletters are the member's to choose).
    let token = app.sign_in("ada@example.com").await;
    let resp = app
        .client
        .patch(app.url("/v1/me"))
        .bearer_auth(&token)
        .json(&json!({ "newsletters": [weekly["id"]] }))
        .send()
        .await
        .expect("sent");
    assert!(resp.status().is_success(), "{}", resp.status());
    let export = |app: &TestApp| {
        let app_url = app.url("/v1/members/export.csv");
        let client = app.client.clone();
        async move {
            client
                .get(app_url)
                .bearer_auth(crate::helpers::ADMIN_TOKEN)
                .send()
                .await
                .expect("sent")
                .text()
                .await
                .expect("text")
        }
    };
    let exported = export(&app).await;

    let empty = TestApp::spawn_on(&crate::helpers::fresh_database().await).await;
    newsletter(&empty, "Weekly").await;
    let (summary, report) = run(&empty, &exported).await;
    assert_eq!(report, vec![]);
    assert_eq!((summary.created, summary.refused), (3, 0));

    // The same members: every column but the id (and the source, `import` now).
    let without = |csv: &str| -> Vec<Vec<String>> {
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        reader
            .records()
            .map(|r| {
                let r = r.expect("record");
                r.iter()
                    .enumerate()
                    .filter(|(i, _)| *i != 0 && *i != 11)
                    .map(|(_, v)| v.to_owned())
                    .collect()
            })
            .collect()
    };
    assert_eq!(without(&export(&empty).await), without(&exported));
}

#[tokio::test]
async fn the_command_prints_a_summary_and_writes_the_report() {
    let app = TestApp::spawn().await;
    newsletter(&app, "Weekly").await;
    let dir = std::env::temp_dir().join(format!("memberledger-import-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("members.csv");
    let report = dir.join("report.csv");
    std::fs::write(&file, FILE).expect("written");
    let out = tokio::task::spawn_blocking({
        let url = app.database_url.clone();
        let (file, report) = (file.clone(), report.clone());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_memberledger"))
                .args(["members", "import"])
                .arg(&file)
                .arg("--report")
                .arg(&report)
                .env("DATABASE_URL", url)
                .output()
                .expect("ran")
        }
    })
    .await
    .expect("joined");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    assert_eq!(summary["created"], 4, "{summary}");
    assert_eq!(summary["refused"], 3, "{summary}");
    let written = std::fs::read_to_string(&report).expect("report");
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines[0], "line,email,field,reason");
    assert_eq!(lines.len(), 5, "{written}");
    assert!(lines[1].starts_with("4,not-an-email,email,"), "{written}");
    assert!(
        lines[2].starts_with("5,ADA@example.com,email,is on line 2 already"),
        "{written}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_batch_with_an_address_taken_meanwhile_creates_the_others_one_by_one() {
    let app = TestApp::spawn().await;
    // An address held in the unique lookup by a member the import's read did not see (as a
    // sign-up committing between the import's read and its append would be).
    sqlx::query("INSERT INTO member_emails (email, member_id) VALUES ('taken@example.com', $1)")
        .bind(uuid::Uuid::now_v7())
        .execute(&app.pool)
        .await
        .expect("held");
    let (summary, report) = run(
        &app,
        "email,name\nfirst@example.com,First\ntaken@example.com,Taken\nlast@example.com,Last\n",
    )
    .await;
    assert_eq!((summary.created, summary.refused), (2, 1), "{summary:?}");
    assert_eq!(report, vec![(3, "email".to_owned())]);
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM member_list ORDER BY created_at, id")
            .fetch_all(&app.pool)
            .await
            .expect("members");
    assert_eq!(names, ["First", "Last"]);
}

#[tokio::test]
async fn complimentary_plan_gives_the_only_active_tier_without_end_once_and_is_refused_with_two_tiers(
) {
    let stripe = crate::stripe_support::FakeStripe::start(&[]).await;
    let app = crate::checkout::app_with_stripe(&stripe).await;
    let gold = app
        .linked_tier("Gold", "price_gold_month", "price_gold_year")
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for email in ["eve@example.com", "fay@example.com"] {
        let resp = app.create_member(json!({ "email": email })).await;
        assert_eq!(resp.status(), 201);
    }
    // Fay has access until a date an admin chose: the import leaves it as it is.
    let fay = by_email(&app, "fay@example.com").await;
    let until = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let resp = app
        .admin(
            Method::PUT,
            &format!(
                "/v1/members/{}/complimentary",
                fay["id"].as_str().expect("id")
            ),
            Some(json!({ "tier_id": gold, "until": until })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let fay = by_email(&app, "fay@example.com").await;

    let file = "\
email,complimentary_plan
di@example.com,true
eve@example.com,true
fay@example.com,true
";
    let (summary, report) = run(&app, file).await;
    assert_eq!(report, vec![]);
    assert_eq!(
        (
            summary.created,
            summary.updated,
            summary.unchanged,
            summary.notes
        ),
        (1, 1, 1, 0)
    );
    for email in ["di@example.com", "eve@example.com"] {
        let member = by_email(&app, email).await;
        assert_eq!(member["status"], "comped", "{member}");
        assert_eq!(member["complimentary"]["tier_id"], gold.as_str());
        assert_eq!(member["complimentary"]["until"], Value::Null, "without end");
    }
    assert_eq!(
        by_email(&app, "fay@example.com").await["complimentary"],
        fay["complimentary"]
    );

    // The same file again appends nothing (once the policies have issued the comps' licenses,
    // which append events of their own).
    app.settle().await;
    let before = events(&app).await;
    let (again, report) = run(&app, file).await;
    assert_eq!(report, vec![]);
    assert_eq!((again.created, again.updated, again.unchanged), (0, 0, 3));
    app.settle().await;
    assert_eq!(events(&app).await, before);

    // With two active tiers the file names none: the member comes in without access, and
    // the report says why.
    app.linked_tier("Silver", "price_silver_month", "price_silver_year")
        .await;
    let state = AppState::new(app.pool.clone(), &memberledger::config::Settings::default());
    let mut reasons = Vec::new();
    import(
        &app.pool,
        &state.members,
        Box::new(std::io::Cursor::new(
            b"email,complimentary_plan\ngus@example.com,true\n".to_vec(),
        )),
        "test-import",
        |r: &Refusal| reasons.push((r.line, r.field.clone(), r.reason.clone())),
    )
    .await
    .expect("imported");
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(
        (reasons[0].0, reasons[0].1.as_str()),
        (2, "complimentary_plan")
    );
    assert!(reasons[0].2.contains("several active tiers"), "{reasons:?}");
    assert_eq!(by_email(&app, "gus@example.com").await["status"], "free");
}
