//! The binary itself: local PostgreSQL by default, a generated admin token, restarts that keep
//! the data, graceful stop on SIGTERM, and the operator commands.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{free_port, fresh_database, TestApp};

fn memberledger() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memberledger"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("ADMIN_TOKEN")
        .env("RUST_LOG", "info");
    cmd
}

struct Server {
    child: Child,
    stdout: mpsc::Receiver<String>,
}

impl Server {
    fn start(data_dir: &std::path::Path, port: u16) -> Self {
        let mut child = memberledger()
            .arg("serve")
            .env("DATA_DIR", data_dir)
            .env("BIND", format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("memberledger serve started");
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, stdout }
    }

    /// Everything printed on stdout so far.
    fn printed(&self) -> Vec<String> {
        self.stdout.try_iter().collect()
    }

    /// Sends SIGTERM and waits; returns whether it exited successfully.
    fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill ran");
        self.child.wait().expect("waited").success()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(resp) = client.get(format!("{base}/healthz")).send().await {
            if resp.status() == 200 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn serve_runs_on_a_local_postgres_that_survives_restarts() {
    let data_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("serve-{}", uuid::Uuid::new_v4().simple()));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let server = Server::start(&data_dir, port);
    wait_healthy(&client, &base).await;
    let printed = server.printed();
    let token = printed
        .iter()
        .find_map(|line| {
            line.trim()
                .strip_prefix("mlat_")
                .map(|rest| format!("mlat_{rest}"))
        })
        .unwrap_or_else(|| panic!("no generated token printed: {printed:?}"));
    let resp = client
        .post(format!("{base}/v1/members"))
        .bearer_auth(&token)
        .json(&json!({"email": "persist@example.com"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(server.terminate(), "a clean exit on SIGTERM");
    assert!(
        !data_dir.join("pg/postmaster.pid").exists(),
        "the local cluster was stopped"
    );

    let server = Server::start(&data_dir, port);
    wait_healthy(&client, &base).await;
    let resp = client
        .get(format!("{base}/v1/members/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        resp.status(),
        200,
        "the member and the token survived the restart"
    );
    assert!(
        server.printed().iter().all(|l| !l.contains("mlat_")),
        "no second token is generated"
    );
    assert!(server.terminate());
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn projections_status_prints_each_projection() {
    let app = TestApp::spawn().await;
    app.member("status@example.com").await;
    app.settle().await;
    let out = memberledger()
        .args(["projections", "status", "--json"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .expect("ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = status.as_array().expect("array");
    let timeline = rows
        .iter()
        .find(|r| r["name"] == "member_timeline")
        .expect("member_timeline row");
    assert_eq!(timeline["events_applied"], 1, "{timeline}");
    assert_eq!(timeline["mode"], "async", "{timeline}");
    let member_list = rows
        .iter()
        .find(|r| r["name"] == "member_list")
        .expect("member_list row");
    assert_eq!(member_list["mode"], "inline", "{member_list}");
    for row in rows {
        assert_eq!(row["lag_events"], 0, "{row}");
        assert_eq!(row["version"], row["code_version"], "{row}");
    }

    let out = memberledger()
        .args(["projections", "status"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .expect("ran");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("member_list") && table.contains("members_created_events"),
        "{table}"
    );
}

#[tokio::test]
async fn migrate_and_admin_token_work_against_database_url() {
    let url = fresh_database().await;
    let out = memberledger()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .expect("ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = memberledger()
        .arg("admin-token")
        .env("DATABASE_URL", &url)
        .output()
        .expect("ran");
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(token.starts_with("mlat_"));
    let app = TestApp::spawn_on(&url).await;
    let resp = app
        .client
        .get(app.url("/v1/members"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
}

#[test]
fn a_bad_setting_names_its_variable() {
    let out = memberledger()
        .arg("serve")
        .env("BIND", "not-an-address")
        .output()
        .expect("ran");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BIND") || stderr.contains("--bind"),
        "{stderr}"
    );
}

#[tokio::test]
async fn stripe_replay_requeues_failed_events() {
    let mut slow_retries = crate::helpers::test_stripe_settings();
    slow_retries.retry_base = Duration::from_secs(3600);
    slow_retries.max_retry_delay = Duration::from_secs(3600);
    // No waiting for another event: a subscription without its member fails at once.
    slow_retries.defer_limit = Duration::ZERO;
    let app = TestApp::spawn_with(slow_retries).await;
    let l = crate::stripe_support::Lifecycle::new("replay");
    app.send_webhook(&l.subscription_event(
        "created",
        "customer.subscription.created",
        "active",
        0,
    ))
    .await;
    crate::helpers::eventually("the event to fail", || async {
        let failed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE status = 'failed'")
                .fetch_one(&app.pool)
                .await
                .expect("count");
        failed == 1
    })
    .await;
    app.send_webhook(&l.checkout_completed(1)).await;
    crate::helpers::eventually("the checkout to be processed", || async {
        let processed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE status = 'processed'")
                .fetch_one(&app.pool)
                .await
                .expect("count");
        processed == 1
    })
    .await;
    let out = memberledger()
        .args(["stripe", "replay", "--failed"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .expect("ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 failed event(s) queued"));
    app.drain_stripe().await;
    let out = memberledger()
        .args(["stripe", "replay", "--id", "evt_unknown"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .expect("ran");
    assert!(!out.status.success());
}
