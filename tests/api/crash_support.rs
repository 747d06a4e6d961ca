//! What the crash and multi-instance tests share: `memberledger serve` as a child process (so
//! it can be SIGKILLed), the webhook load (many customers' lifecycles shuffled, partly
//! duplicated, sent in parallel) and what each delivery got, Stripe's redelivery of what got
//! no 200, and every customer's final state, compared with in-order delivery.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::helpers::{free_port, TestApp, ADMIN_TOKEN, WEBHOOK_SECRET};
use crate::stripe_support::{projection_list, signature, FakeStripe, Lifecycle};

/// A customer of the load: a lifecycle that ends canceled, or stays subscribed (so the final
/// state has active licenses to compare, not only deactivated ones).
pub struct Customer {
    pub lifecycle: Lifecycle,
    pub cancels: bool,
}

impl Customer {
    /// Its events in Stripe's order.
    pub fn events(&self) -> Vec<Value> {
        if self.cancels {
            self.lifecycle.events()
        } else {
            self.lifecycle.subscribed_events()
        }
    }
}

/// `memberledger serve` in a process of its own, on a port chosen up front (so a restart
/// listens where the load is sent).
pub struct ServeProcess {
    child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl ServeProcess {
    /// Starts the binary on `database_url` at `port`; its output goes to a log file under
    /// the test tmp dir (appended to across restarts); waits until `/healthz` answers.
    pub async fn start(database_url: &str, port: u16, stripe: &FakeStripe, name: &str) -> Self {
        let log = scratch_dir().join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("server log file");
        let err = out.try_clone().expect("log file handle");
        let child = Command::new(env!("CARGO_BIN_EXE_memberledger"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("DATABASE_MAX_CONNECTIONS", "8")
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("STRIPE_SECRET_KEY", "sk_test_fake")
            .env("STRIPE_API_BASE", &stripe.base)
            .env("STRIPE_WORKERS", "4")
            .env("STRIPE_LEASE_SECS", "2")
            .env("STRIPE_RETRY_BASE_MS", "50")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("SMTP_URL")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("memberledger serve started");
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_healthy().await;
        server
    }

    /// Starts one on a free port.
    pub async fn start_any(database_url: &str, stripe: &FakeStripe, name: &str) -> Self {
        Self::start(database_url, free_port(), stripe, name).await
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(resp) = client.get(format!("{}/healthz", self.base)).send().await {
                if resp.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server did not come up; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix): no graceful stop, no outcome written.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL sent");
        self.child.wait().expect("reaped");
    }

    /// Whether the process is still running (it did not exit on its own).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/tmp` of this checkout, for the servers' logs and private clusters.
pub fn scratch_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp");
    std::fs::create_dir_all(&dir).expect("target/tmp");
    dir
}

/// A fake Stripe that knows every lifecycle's customer (subscriptions that arrive before
/// their checkout fetch the customer's email, as with a real `STRIPE_SECRET_KEY`).
pub async fn fake_stripe_for(customers: &[Customer]) -> FakeStripe {
    let customers: Vec<(&str, &str)> = customers
        .iter()
        .map(|c| (c.lifecycle.customer.as_str(), c.lifecycle.email.as_str()))
        .collect();
    FakeStripe::start(&customers).await
}

/// `count` customers named `<prefix><n>`; every other one cancels.
pub fn customers(prefix: &str, count: usize) -> Vec<Customer> {
    (0..count)
        .map(|n| Customer {
            lifecycle: Lifecycle::new(&format!("{prefix}{n}")),
            cancels: n % 2 == 0,
        })
        .collect()
}

/// Every customer's events, every other one twice, shuffled together (a deterministic
/// xorshift, so a failing seed can be rerun).
pub fn shuffled_deliveries(customers: &[Customer], seed: u64) -> Vec<Value> {
    let mut deliveries = Vec::new();
    for c in customers {
        let events = c.events();
        let twice: Vec<Value> = events.iter().step_by(2).cloned().collect();
        deliveries.extend(events);
        deliveries.extend(twice);
    }
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..deliveries.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = usize::try_from(state % (i as u64 + 1)).unwrap_or(0);
        deliveries.swap(i, j);
    }
    deliveries
}

/// What one delivery got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ok,
    /// 503 with a `Retry-After`.
    Unavailable,
    /// Any other status (never expected), or a 503 without `Retry-After`.
    Other(u16),
    /// No answer: refused, reset or cut off (the server was killed).
    None,
}

#[derive(Debug, Clone)]
pub struct Delivered {
    pub event_id: String,
    pub answer: Answer,
    /// The outage flag was set when the request was sent and still when its answer came.
    pub within_outage: bool,
}

/// Sends `event` signed now to `base`.
pub async fn deliver(client: &reqwest::Client, base: &str, event: &Value) -> Answer {
    let payload = event.to_string();
    let sig = signature(&payload, WEBHOOK_SECRET, chrono::Utc::now().timestamp());
    let resp = client
        .post(format!("{base}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(payload)
        .send()
        .await;
    match resp {
        Err(_) => Answer::None,
        Ok(resp) => match resp.status().as_u16() {
            200 => match resp.json::<Value>().await {
                Ok(body) if body["received"] == true => Answer::Ok,
                _ => Answer::None,
            },
            503 if resp.headers().contains_key("retry-after") => Answer::Unavailable,
            status => Answer::Other(status),
        },
    }
}

/// The load in flight: its deliveries run `concurrency` at a time, spread over `bases` in
/// turn, on a task of their own, so a test can crash things while it runs.
pub struct Load {
    /// Deliveries answered, and how many of them within the outage.
    completed: watch::Receiver<(usize, usize)>,
    task: tokio::task::JoinHandle<Vec<Delivered>>,
}

impl Load {
    pub fn start(
        bases: Vec<String>,
        deliveries: Vec<Value>,
        concurrency: usize,
        outage: Arc<AtomicBool>,
    ) -> Self {
        let (done, completed) = watch::channel((0, 0));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let task = tokio::spawn(async move {
            let sends = deliveries.into_iter().enumerate().map(|(i, event)| {
                let client = client.clone();
                let base = bases[i % bases.len()].clone();
                let outage = outage.clone();
                let done = done.clone();
                async move {
                    let down_before = outage.load(Ordering::SeqCst);
                    let answer = deliver(&client, &base, &event).await;
                    let down_after = outage.load(Ordering::SeqCst);
                    let within_outage = down_before && down_after;
                    done.send_modify(|(all, within)| {
                        *all += 1;
                        *within += usize::from(within_outage);
                    });
                    Delivered {
                        event_id: event["id"].as_str().unwrap_or_default().to_owned(),
                        answer,
                        within_outage,
                    }
                }
            });
            futures::stream::iter(sends)
                .buffer_unordered(concurrency)
                .collect()
                .await
        });
        Self { completed, task }
    }

    /// Waits until `n` deliveries have their answer (or all of them, if fewer).
    pub async fn wait_for(&mut self, n: usize) {
        let _ = self.completed.wait_for(|(all, _)| *all >= n).await;
    }

    /// Waits until `n` deliveries were sent and answered within the outage.
    pub async fn wait_within_outage(&mut self, n: usize) {
        let _ = self.completed.wait_for(|(_, within)| *within >= n).await;
    }

    pub async fn finish(self) -> Vec<Delivered> {
        self.task.await.expect("the load task")
    }
}

/// Stripe's redelivery: every event that got no 200 is sent again (in parallel) until each
/// has one; returns how many rounds it took. Panics on any answer but 200 and 503.
pub async fn redeliver_until_ok(base: &str, events: &[Value], delivered: &[Delivered]) -> usize {
    let ok: std::collections::HashSet<&str> = delivered
        .iter()
        .filter(|d| d.answer == Answer::Ok)
        .map(|d| d.event_id.as_str())
        .collect();
    let mut missing: Vec<&Value> = unique_events(events)
        .into_iter()
        .filter(|e| !ok.contains(e["id"].as_str().unwrap_or_default()))
        .collect();
    let client = reqwest::Client::new();
    let mut rounds = 0;
    while !missing.is_empty() {
        rounds += 1;
        assert!(rounds <= 20, "still no 200 for {} events", missing.len());
        let answers: Vec<Answer> =
            futures::stream::iter(missing.iter().map(|e| deliver(&client, base, e)))
                .buffered(8)
                .collect()
                .await;
        for answer in &answers {
            assert!(
                matches!(answer, Answer::Ok | Answer::Unavailable),
                "redelivery answered {answer:?}"
            );
        }
        missing = missing
            .into_iter()
            .zip(answers)
            .filter(|(_, a)| *a != Answer::Ok)
            .map(|(e, _)| e)
            .collect();
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    rounds
}

/// Each event once, by id.
pub fn unique_events(events: &[Value]) -> Vec<&Value> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e["id"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Asserts every event answered 200 is stored, once (the inbox's key is Stripe's id).
pub async fn assert_stored(pool: &PgPool, delivered: &[Delivered]) {
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM stripe_events")
        .fetch_all(pool)
        .await
        .expect("stored ids");
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    for d in delivered.iter().filter(|d| d.answer == Answer::Ok) {
        assert!(
            stored.contains(&d.event_id),
            "{} was answered 200 but is not stored",
            d.event_id
        );
    }
}

/// Waits (up to a minute: leases of a killed process run out, failed attempts back off) until
/// the inbox has no open event and every asynchronous projection and policy has applied the
/// whole log.
pub async fn settle(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')",
        )
        .fetch_one(pool)
        .await
        .expect("open events");
        let lagging = if open == 0 {
            let status = memberledger::runner::status(pool, projection_list())
                .await
                .expect("projection status");
            let checkpoints: i64 =
                sqlx::query_scalar("SELECT count(*) FROM projection_checkpoints")
                    .fetch_one(pool)
                    .await
                    .expect("count");
            status.iter().any(|p| p.lag_events > 0)
                || checkpoints < i64::try_from(status.len()).expect("a small count")
        } else {
            true
        };
        if !lagging {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let stuck: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT id, status, last_error FROM stripe_events WHERE status NOT IN ('processed', 'ignored') LIMIT 10",
            )
            .fetch_all(pool)
            .await
            .unwrap_or_default();
            panic!("did not settle; open inbox events: {stuck:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A license's (site, seat, status, deactivation reason).
pub type LicenseRow = (Option<String>, Option<i32>, String, Option<String>);

/// One customer's final state, without generated ids (member ids, license keys, positions),
/// so two databases can be compared.
#[derive(Debug, PartialEq, Eq)]
pub struct CustomerState {
    /// (status, source) of every member with the customer's email.
    pub members: Vec<(String, String)>,
    /// (id, status) of the member's subscriptions.
    pub subscriptions: Vec<(String, String)>,
    /// (kind, invoice, amount) of the member's payment read model rows, sorted.
    pub payments: Vec<(String, Option<String>, i64)>,
    /// `PaymentRecorded` events in the log per subscription.
    pub payments_in_log: i64,
    /// Sum of the MRR deltas of the subscription.
    pub mrr_sum: i64,
    /// (site, seat, status, deactivation reason) of every license of the member, sorted: a
    /// deletion processed before the activation it follows still leaves the licenses in-order
    /// delivery issued and deactivated (see `policies::LicensePolicy`).
    pub licenses: Vec<LicenseRow>,
    /// Licenses beyond one per subscription item and seat (issued twice).
    pub duplicate_licenses: i64,
    /// The status history starts at free, changes at every step, and ends at the status.
    pub status_history_consistent: bool,
    /// Inbox outcomes of the customer's events: (status, count).
    pub inbox: Vec<(String, i64)>,
}

/// Every lifecycle's customer's final state, by tag, plus the number of members in total.
pub async fn final_state(
    pool: &PgPool,
    customers: &[Customer],
) -> (i64, BTreeMap<String, CustomerState>) {
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM member_list")
        .fetch_one(pool)
        .await
        .expect("members");
    let mut states = BTreeMap::new();
    for c in customers {
        let l = &c.lifecycle;
        states.insert(l.tag.clone(), customer_state(pool, l).await);
    }
    (total, states)
}

async fn customer_state(pool: &PgPool, l: &Lifecycle) -> CustomerState {
    let members: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        "SELECT id, status, source FROM member_list WHERE lower(email) = lower($1) ORDER BY id",
    )
    .bind(&l.email)
    .fetch_all(pool)
    .await
    .expect("members");
    let ids: Vec<uuid::Uuid> = members.iter().map(|m| m.0).collect();
    let subscriptions = sqlx::query_as(
        "SELECT id, status FROM subscriptions WHERE member_id = ANY($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .expect("subscriptions");
    let payments = sqlx::query_as(
        "SELECT kind, invoice_id, amount FROM members_payment_events WHERE member_id = ANY($1) ORDER BY kind, invoice_id, amount",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .expect("payments");
    let payments_in_log = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'Subscription' AND aggregate_id = $1 AND event_type = 'PaymentRecorded'",
    )
    .bind(&l.subscription)
    .fetch_one(pool)
    .await
    .expect("payment events");
    let mrr_sum = sqlx::query_scalar(
        "SELECT coalesce(sum(mrr_delta), 0)::bigint FROM members_paid_subscription_events WHERE subscription_id = $1",
    )
    .bind(&l.subscription)
    .fetch_one(pool)
    .await
    .expect("mrr");
    let licenses = sqlx::query_as(
        "SELECT site, seat, status, deactivation_reason FROM licenses WHERE member_id = ANY($1)
         ORDER BY site, seat, status, deactivation_reason",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .expect("licenses");
    let duplicate_licenses = sqlx::query_scalar(
        "SELECT count(*) - count(DISTINCT (subscription_id, item_id, seat)) FROM licenses WHERE member_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(pool)
    .await
    .expect("duplicate licenses");
    let mut status_history_consistent = true;
    for (id, status, _) in &members {
        let transitions: Vec<(String, String)> = sqlx::query_as(
            "SELECT from_status, to_status FROM members_status_events WHERE member_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(pool)
        .await
        .expect("status events");
        let mut current = "free".to_owned();
        for (from, to) in transitions {
            status_history_consistent &= from == current && from != to;
            current = to;
        }
        status_history_consistent &= current == *status;
    }
    let inbox = sqlx::query_as(
        "SELECT status, count(*) FROM stripe_events WHERE customer_id = $1 GROUP BY status ORDER BY status",
    )
    .bind(&l.customer)
    .fetch_all(pool)
    .await
    .expect("inbox");
    CustomerState {
        members: members.into_iter().map(|(_, s, src)| (s, src)).collect(),
        subscriptions,
        payments,
        payments_in_log,
        mrr_sum,
        licenses,
        duplicate_licenses,
        status_history_consistent,
        inbox,
    }
}

/// The reference: the same lifecycles delivered in order on a fresh database (each customer's
/// events one at a time, each processed before the next arrives; customers side by side).
pub async fn in_order_state(
    customers: &[Customer],
    stripe: &FakeStripe,
) -> (i64, BTreeMap<String, CustomerState>) {
    let mut settings = crate::helpers::test_stripe_settings();
    settings.secret_key = Some("sk_test_fake".into());
    settings.api_base = Some(stripe.base.clone());
    let app = TestApp::spawn_with(settings).await;
    let per_customer: Vec<Vec<Value>> = customers.iter().map(Customer::events).collect();
    let steps = per_customer.iter().map(Vec::len).max().unwrap_or(0);
    for step in 0..steps {
        let sends = per_customer
            .iter()
            .filter_map(|events| events.get(step))
            .map(|event| app.send_webhook(event));
        for resp in futures::future::join_all(sends).await {
            assert_eq!(resp.status(), 200, "in-order delivery");
        }
        app.drain_stripe().await;
    }
    let state = final_state(&app.pool, customers).await;
    app.stop().await;
    state
}

/// Asserts the final state equals the reference for every customer, and that the reference
/// is the lifecycles' known end (one member, one payment, and one license: active while
/// subscribed, deactivated as canceled once canceled).
pub fn assert_same_state(
    customers: &[Customer],
    got: &(i64, BTreeMap<String, CustomerState>),
    reference: &(i64, BTreeMap<String, CustomerState>),
) {
    for c in customers {
        let tag = &c.lifecycle.tag;
        let state = &reference.1[tag];
        let status = if c.cancels { "free" } else { "paid" };
        assert_eq!(
            state.members,
            [(status.to_owned(), "stripe".to_owned())],
            "reference {tag}"
        );
        assert_eq!(state.payments.len(), 1, "reference {tag}: {state:?}");
        assert_eq!(state.payments_in_log, 1, "reference {tag}: {state:?}");
        let license: Vec<(&str, Option<&str>)> = state
            .licenses
            .iter()
            .map(|l| (l.2.as_str(), l.3.as_deref()))
            .collect();
        let expected = if c.cancels {
            ("inactive", Some("subscription_canceled"))
        } else {
            ("active", None)
        };
        assert_eq!(license, [expected], "reference {tag}: {state:?}");
        assert_eq!(state.duplicate_licenses, 0, "reference {tag}: {state:?}");
        assert!(
            state.status_history_consistent,
            "reference {tag}: {state:?}"
        );
    }
    assert_eq!(got.0, reference.0, "members in total");
    for (tag, expected) in &reference.1 {
        assert_eq!(got.1.get(tag), Some(expected), "customer {tag}");
    }
}
