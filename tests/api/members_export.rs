//! Members out as CSV (issue #17): `GET /v1/members/export.csv` and `memberledger members
//! export` give the same file, Ghost's columns first, every awkward value (commas, quotes, line
//! breaks) round-tripping through a CSV reader, filters applied.

use reqwest::Method;
use serde_json::json;

use crate::helpers::TestApp;

fn read(csv_text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header = reader
        .headers()
        .expect("a header")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.expect("a record").iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

#[tokio::test]
async fn members_export_as_csv_over_http_and_from_the_command_line_alike() {
    let app = TestApp::spawn().await;
    let weekly: serde_json::Value = app
        .admin(
            Method::POST,
            "/v1/newsletters",
            Some(json!({ "name": "Weekly", "subscribe_on_signup": false })),
        )
        .await
        .json()
        .await
        .expect("json");
    let first = app.member("first@example.com").await;
    let resp = app
        .create_member(json!({
            "email": "second@example.com",
            "name": "Ada \"the\" Lovelace, Countess",
            "note": "line one\nline two, with a comma",
            "labels": ["vip", "beta"],
        }))
        .await;
    assert_eq!(
        resp.status(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    // The member subscribes to the newsletter (newsletters are the member's to choose).
    let token = app.sign_in("second@example.com").await;
    let resp = app
        .client
        .patch(app.url("/v1/me"))
        .bearer_auth(&token)
        .json(&json!({ "newsletters": [weekly["id"]] }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    app.settle().await;

    let resp = app
        .client
        .get(app.url("/v1/members/export.csv"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 401);
    let resp = app.admin(Method::GET, "/v1/members/export.csv", None).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/csv"));
    assert!(resp.headers()["content-disposition"]
        .to_str()
        .expect("ascii")
        .contains("attachment; filename=\"members-"));
    let http = resp.text().await.expect("text");
    let (header, rows) = read(&http);
    assert_eq!(
        header,
        [
            "id",
            "email",
            "name",
            "note",
            "subscribed_to_emails",
            "complimentary_plan",
            "stripe_customer_id",
            "created_at",
            "labels",
            "newsletters",
            "status",
            "source"
        ]
    );
    assert_eq!(rows.len(), 2);
    // Oldest first.
    assert_eq!(rows[0][0], first["id"].as_str().expect("id"));
    assert_eq!(rows[0][4], "false");
    let second = &rows[1];
    assert_eq!(second[1], "second@example.com");
    assert_eq!(second[2], "Ada \"the\" Lovelace, Countess");
    assert_eq!(second[3], "line one\nline two, with a comma");
    assert_eq!(second[4], "true");
    assert_eq!(second[5], "false");
    assert_eq!(second[6], "");
    let mut labels: Vec<&str> = second[8].split(',').collect();
    labels.sort_unstable();
    assert_eq!(labels, ["beta", "vip"]);
    assert_eq!(second[9], "Weekly");
    assert_eq!(second[10], "free");
    assert_eq!(second[11], "admin");

    // The list's filters apply.
    let resp = app
        .admin(Method::GET, "/v1/members/export.csv?label=vip", None)
        .await;
    let (_, vip) = read(&resp.text().await.expect("text"));
    assert_eq!(vip.len(), 1);
    assert_eq!(vip[0][1], "second@example.com");
    let resp = app
        .admin(Method::GET, "/v1/members/export.csv?status=paid", None)
        .await;
    let (_, paid) = read(&resp.text().await.expect("text"));
    assert!(paid.is_empty());

    // The command writes the same file.
    let out = tokio::task::spawn_blocking({
        let url = app.database_url.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_memberledger"))
                .args(["members", "export"])
                .env("DATABASE_URL", url)
                .env_remove("ADMIN_TOKEN")
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
    assert_eq!(String::from_utf8_lossy(&out.stdout), http);
}
