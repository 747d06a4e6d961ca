//! An operator's first hour, through the real binary: what an unreachable database says,
//! plain log lines when piped, sign-in codes kept out of a deployment's logs, and two `serve`s
//! sharing one local cluster.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{free_port, fresh_database};

const TOKEN: &str = "operator-test-token";

fn memberledger() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memberledger"));
    for var in [
        "DATABASE_URL",
        "ADMIN_TOKEN",
        "SMTP_URL",
        "PUBLIC_URL",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_SECRET_KEY",
        "LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info").env("ADMIN_TOKEN", TOKEN);
    cmd
}

/// A `serve` whose stderr (the log) is piped and collected.
struct Serve {
    child: Child,
    log: Arc<Mutex<String>>,
    base: String,
}

impl Serve {
    fn start(configure: impl FnOnce(&mut Command)) -> Self {
        let port = free_port();
        let mut cmd = memberledger();
        cmd.arg("serve")
            .env("BIND", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("memberledger serve started");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Self {
            child,
            log,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(resp) = client.get(format!("{}/healthz", self.base)).send().await {
                if resp.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server did not come up; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn create_member(&self, email: &str) -> reqwest::StatusCode {
        reqwest::Client::new()
            .post(format!("{}/v1/members", self.base))
            .bearer_auth(TOKEN)
            .json(&json!({ "email": email }))
            .send()
            .await
            .expect("sent")
            .status()
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// SIGTERM (or SIGKILL), waits; whether it exited successfully, and its whole log.
    fn stop(mut self, signal: &str) -> (bool, String) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill ran");
        let ok = self.child.wait().expect("waited").success();
        // The reader thread sees EOF once the process is gone; give it a moment to append.
        std::thread::sleep(Duration::from_millis(200));
        (ok, self.log())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[tokio::test]
async fn an_unreachable_database_is_reported_with_its_host_and_cause() {
    let port = free_port();
    let out = memberledger()
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/nowhere"),
        )
        .output()
        .expect("ran");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("database nowhere"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(!stderr.contains("pool timed out"), "{stderr}");
}

/// Requests a sign-in code from `serve` and waits until its mailer has handled the email
/// (delivered, written to the log, or failed once).
async fn request_code_and_wait(serve: &Serve, database_url: &str) {
    let email = format!("op-{}@example.com", uuid::Uuid::new_v4().simple());
    assert_eq!(serve.create_member(&email).await, 201);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/auth/code", serve.base))
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 202);
    let pool = memberledger::db::pool(database_url, 1).await.expect("pool");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let handled: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM outbox_emails
                            WHERE to_address = $1 AND (sent_at IS NOT NULL OR attempts > 0))",
        )
        .bind(&email)
        .fetch_one(&pool)
        .await
        .expect("outbox read");
        if handled {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mailer never handled the email; log:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
}

#[tokio::test]
async fn piped_logs_are_plain_and_start_with_the_summary() {
    let url = fresh_database().await;
    let serve = Serve::start(|cmd| {
        cmd.env("DATABASE_URL", &url)
            .env("STRIPE_WEBHOOK_SECRET", "whsec_");
    });
    serve.wait_healthy().await;
    // A delivery no secret verifies: refused, and the log says why.
    let resp = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", serve.base))
        .header("stripe-signature", "t=1700000000,v1=00")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 400);
    let (ok, log) = serve.stop("-TERM");
    assert!(ok, "{log}");
    assert!(log.contains("stripe webhook refused"), "{log}");
    assert!(log.contains("does not match any webhook secret"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in piped logs:\n{log}"
    );
    assert!(log.contains("Stripe API: off"), "{log}");
    assert!(log.contains("`whsec_` with nothing after it"), "{log}");
    assert!(
        log.contains("sign-in codes and magic links are written to this log"),
        "{log}"
    );
}

#[tokio::test]
async fn sign_in_codes_are_logged_only_without_smtp_and_without_https() {
    // Development: no SMTP, PUBLIC_URL http. The code and link are in the log.
    let url = fresh_database().await;
    let serve = Serve::start(|cmd| {
        cmd.env("DATABASE_URL", &url);
    });
    serve.wait_healthy().await;
    request_code_and_wait(&serve, &url).await;
    let (_, log) = serve.stop("-TERM");
    assert!(log.contains("Your code:"), "{log}");
    assert!(log.contains("?token="), "{log}");

    // A deployment without SMTP: PUBLIC_URL https. Neither code nor link nor subject.
    let url = fresh_database().await;
    let serve = Serve::start(|cmd| {
        cmd.env("DATABASE_URL", &url)
            .env("PUBLIC_URL", "https://members.example.com");
    });
    serve.wait_healthy().await;
    request_code_and_wait(&serve, &url).await;
    let (_, log) = serve.stop("-TERM");
    assert!(log.contains("EMAIL NOT SENT"), "{log}");
    assert!(!log.contains("Your code:"), "{log}");
    assert!(!log.contains("sign-in code:"), "{log}");
    assert!(!log.contains("token="), "{log}");

    // SMTP configured (here unreachable: delivery fails and is retried): nothing logged.
    let url = fresh_database().await;
    let smtp_port = free_port();
    let serve = Serve::start(|cmd| {
        cmd.env("DATABASE_URL", &url)
            .env("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"));
    });
    serve.wait_healthy().await;
    request_code_and_wait(&serve, &url).await;
    let (_, log) = serve.stop("-TERM");
    assert!(log.contains("email delivery failed"), "{log}");
    assert!(!log.contains("Your code:"), "{log}");
    assert!(!log.contains("token="), "{log}");
}

#[tokio::test]
async fn stopping_one_serve_leaves_the_shared_local_cluster_to_the_other() {
    let data_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("shared-{}", uuid::Uuid::new_v4().simple()));
    let pid_file = data_dir.join("pg/postmaster.pid");
    let on_data_dir = |cmd: &mut Command| {
        cmd.env("DATA_DIR", &data_dir);
    };
    let a = Serve::start(on_data_dir);
    a.wait_healthy().await;
    let b = Serve::start(on_data_dir);
    b.wait_healthy().await;

    let (ok, log) = a.stop("-TERM");
    assert!(ok, "{log}");
    assert!(log.contains("another process still uses it"), "{log}");
    assert!(pid_file.exists(), "the cluster still runs");
    assert_eq!(
        b.create_member("after-a@example.com").await,
        201,
        "the other serve still writes; its log:\n{}",
        b.log()
    );

    // A serve killed outright holds no lease: the last one out still stops the cluster.
    let c = Serve::start(on_data_dir);
    c.wait_healthy().await;
    let _ = c.stop("-KILL");
    assert_eq!(b.create_member("after-c@example.com").await, 201);
    let (ok, log) = b.stop("-TERM");
    assert!(ok, "{log}");
    assert!(
        !pid_file.exists(),
        "the last serve out stopped the cluster:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn the_log_of_a_served_erasure_holds_nothing_of_the_member() {
    let url = fresh_database().await;
    let smtp_port = free_port();
    let serve = Serve::start(|cmd| {
        cmd.env("DATABASE_URL", &url)
            .env("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"))
            .env("RUST_LOG", "info,memberledger=debug");
    });
    serve.wait_healthy().await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("logged-{tag}@example.com");
    let name = format!("Quillon Marbury {tag}");
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/v1/members", serve.base))
        .bearer_auth(TOKEN)
        .json(&json!({ "email": email, "name": name, "note": "a note" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201);
    let member: serde_json::Value = resp.json().await.expect("json");
    let id = member["id"].as_str().expect("id").to_owned();
    let resp = client
        .delete(format!("{}/v1/members/{id}", serve.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    let (_, log) = serve.stop("-TERM");
    assert!(log.contains(&format!("/v1/members/{id}")), "{log}");
    assert!(!log.to_lowercase().contains(&email), "{log}");
    assert!(!log.contains(&name), "{log}");
}
