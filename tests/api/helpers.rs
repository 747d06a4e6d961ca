use std::time::Duration;

use memberledger::config::{Settings, StripeSettings};
use memberledger::localpg::{LocalPostgres, StartOptions};
use memberledger::startup::Application;
use reqwest::{Client, Response};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const WEBHOOK_SECRET: &str = "whsec_test_secret";

/// The server as tests run it: port 0, the test admin token, mail to the test SMTP server.
pub async fn test_settings() -> Settings {
    let mail = crate::mail_support::maildev().await;
    Settings {
        bind: "127.0.0.1:0".parse().expect("valid address"),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        read_your_writes_timeout: Duration::from_secs(10),
        stripe: test_stripe_settings(),
        mail: memberledger::config::MailSettings {
            smtp_url: Some(mail.smtp_url()),
            from: "memberledger tests <noreply@memberledger.test>".to_owned(),
        },
        auth: memberledger::config::AuthSettings {
            link_base: "https://members.test/signin".to_owned(),
            ..memberledger::config::AuthSettings::default()
        },
        site_host: Some("members.test".to_owned()),
        ..Settings::default()
    }
}

/// Webhooks verified with [`WEBHOOK_SECRET`], no Stripe API, fast retries.
pub fn test_stripe_settings() -> StripeSettings {
    StripeSettings {
        webhook_secrets: vec![
            "whsec_old_rotated_out".to_owned(),
            WEBHOOK_SECRET.to_owned(),
        ],
        secret_key: None,
        api_base: None,
        workers: 2,
        lease: Duration::from_secs(2),
        retry_base: Duration::from_millis(50),
        max_retry_delay: Duration::from_millis(400),
        ..StripeSettings::default()
    }
}

/// URL of a maintenance database on the test server: `DATABASE_URL` if set, else a local
/// cluster under `target/test-pg`, started once and shared by every test process.
pub async fn server_url() -> String {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_init(|| async {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-pg");
        let local = LocalPostgres::start_with(&dir, StartOptions { fast_unsafe: true })
            .await
            .expect("starting the test PostgreSQL cluster");
        let url = local.url().to_owned();
        // Shared by the test processes that follow; it outlives this one.
        local.detach();
        drop_stale_databases(&url).await;
        url
    })
    .await
    .clone()
}

/// How long a test database is kept in the local test cluster; later test runs drop it.
const TEST_DATABASE_TTL_SECS: u64 = 3600;

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Drops the databases earlier test runs left in the local cluster (one per test, named
/// `test_<created unix secs>_<uuid>`) once they are an hour old, so the cluster does not grow
/// without bound. One still in use cannot be dropped and is left alone.
async fn drop_stale_databases(server: &str) {
    let Ok(pool) = memberledger::db::pool(server, 1).await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%'")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
    let cutoff = unix_secs().saturating_sub(TEST_DATABASE_TTL_SECS);
    for name in names {
        // Databases named before the timestamp was part of the name count as stale.
        let created: u64 = name
            .split('_')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if created < cutoff {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .execute(&pool)
                .await;
        }
    }
    pool.close().await;
}

/// A new, migrated database; returns its URL.
pub async fn fresh_database() -> String {
    let server = server_url().await;
    let name = format!("test_{}_{}", unix_secs(), uuid::Uuid::new_v4().simple());
    memberledger::db::create_database_if_missing(&server, &name)
        .await
        .expect("creating the test database");
    let mut url = url::Url::parse(&server).expect("valid server URL");
    url.set_path(&name);
    let url = url.to_string();
    let pool = memberledger::db::pool(&url, 2).await.expect("connecting");
    memberledger::db::migrate(&pool).await.expect("migrating");
    pool.close().await;
    url
}

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub pool: PgPool,
    pub database_url: String,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(test_stripe_settings()).await
    }

    pub async fn spawn_with(stripe: StripeSettings) -> Self {
        let mut settings = test_settings().await;
        settings.stripe = stripe;
        Self::spawn_settings(&fresh_database().await, settings).await
    }

    /// Another server instance on an existing database.
    pub async fn spawn_on(database_url: &str) -> Self {
        Self::spawn_settings(database_url, test_settings().await).await
    }

    /// A server with `change` applied to the test settings.
    pub async fn spawn_custom(change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = test_settings().await;
        change(&mut settings);
        Self::spawn_settings(&fresh_database().await, settings).await
    }

    pub async fn spawn_settings(database_url: &str, settings: Settings) -> Self {
        let pool = memberledger::db::pool(database_url, 10)
            .await
            .expect("connecting");
        Self::spawn_with_pool(database_url, pool, settings).await
    }

    /// A server whose API runs on `pool` (built with bounds, say); `pool` is also `self.pool`.
    pub async fn spawn_with_pool(database_url: &str, pool: PgPool, settings: Settings) -> Self {
        let app = Application::build(pool.clone(), settings)
            .await
            .expect("building the app");
        let base = format!("http://{}", app.addr());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            base,
            client: Client::new(),
            pool,
            database_url: database_url.to_owned(),
            shutdown,
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn create_member(&self, body: Value) -> Response {
        self.client
            .post(self.url("/v1/members"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a member and returns its JSON, asserting 201.
    pub async fn member(&self, email: &str) -> Value {
        let resp = self
            .create_member(serde_json::json!({ "email": email }))
            .await;
        assert_eq!(resp.status(), 201, "creating {email}");
        resp.json().await.expect("json body")
    }

    pub async fn get_member(&self, id: &str) -> Response {
        self.get(&format!("/v1/members/{id}")).await
    }

    pub async fn patch_member(&self, id: &str, body: Value) -> Response {
        self.client
            .patch(self.url(&format!("/v1/members/{id}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    /// A request with the admin token and, when given, a JSON body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Response {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request sent")
    }

    /// GET with the admin token.
    pub async fn get(&self, path_and_query: &str) -> Response {
        self.client
            .get(self.url(path_and_query))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request sent")
    }

    /// Stops the server the way a signal does and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Asserts an RFC 9457 problem response with `status`; returns its body.
/// A loopback port nothing listens on (it was free a moment ago).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub async fn assert_problem(resp: Response, status: u16) -> Value {
    assert_eq!(resp.status(), status, "status");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "content type {content_type:?}"
    );
    let body: Value = resp.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["type"].is_string() && body["title"].is_string(),
        "{body}"
    );
    body
}

/// The field names of a problem's per-field errors.
pub fn problem_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `check` until it returns true, up to 10 seconds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
