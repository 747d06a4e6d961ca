use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, eventually, TestApp};
use crate::stripe_support::{event, FakeStripe, Lifecycle};

/// A scrape, parsed: series (name and sorted labels) → value.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scrape(BTreeMap<String, f64>);

/// `name{a="x",b="y"}` with the labels sorted, as [`Scrape`] keys its series.
pub(crate) fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<(&str, &str)> = labels.to_vec();
    labels.sort_unstable();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

impl Scrape {
    pub(crate) fn parse(text: &str) -> Self {
        let mut out = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (key, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().expect("a sample value");
            let (name, labels) = match key.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (key, ""),
            };
            let pairs: Vec<(&str, &str)> = split_labels(labels)
                .into_iter()
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    (k, v.trim_matches('"'))
                })
                .collect();
            out.insert(series(name, &pairs), value);
        }
        Self(out)
    }

    /// The value of a series; 0 when absent (a counter not counted yet).
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0.get(&series(name, labels)).copied().unwrap_or(0.0)
    }

    pub(crate) fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.0.contains_key(&series(name, labels))
    }

    /// How much a series grew since `before`.
    pub(crate) fn delta(&self, before: &Self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels) - before.get(name, labels)
    }
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(labels: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        parts.push(&labels[start..]);
    }
    parts
}

impl TestApp {
    pub(crate) async fn get_metrics(&self, token: Option<&str>) -> Response {
        let mut req = self.client.get(self.url("/metrics"));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("scrape sent")
    }

    pub(crate) async fn scrape(&self) -> Scrape {
        let resp = self.get_metrics(None).await;
        assert_eq!(resp.status(), 200);
        Scrape::parse(&resp.text().await.expect("scrape body"))
    }

    async fn post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }
}

const HTTP: &str = "memberledger_http_requests_total";

fn http(
    method: &'static str,
    route: &'static str,
    status: &'static str,
) -> Vec<(&'static str, &'static str)> {
    vec![("method", method), ("route", route), ("status", status)]
}

#[tokio::test]
async fn a_scrape_after_a_small_workload_has_its_series_with_the_right_counts() {
    let _serial = crate::SERIAL.lock().await;
    let l = Lifecycle::new(&format!("metrics{}", uuid::Uuid::new_v4().simple()));
    let stripe = FakeStripe::start(&[(&l.customer, &l.email)]).await;
    let app = TestApp::spawn_custom(|s| {
        s.stripe.secret_key = Some("sk_test_fake".into());
        s.stripe.api_base = Some(stripe.base.clone());
        s.licenses.validate_per_ip = memberledger::rate_limit::Limit {
            max: 2,
            window: Duration::from_secs(3600),
        };
        s.auth.code_per_email.max = 1;
    })
    .await;
    let before = app.scrape().await;

    // Members: three created, one refused (its email is taken), one not found, one path no
    // route has.
    let emails: Vec<String> = (0..3)
        .map(|i| format!("m{i}-{}@example.com", l.tag))
        .collect();
    for email in &emails {
        app.member(email).await;
    }
    assert_problem(app.create_member(json!({ "email": emails[0] })).await, 409).await;
    let unknown = uuid::Uuid::new_v4();
    assert_problem(app.get_member(&unknown.to_string()).await, 404).await;
    assert_problem(app.get("/no/such/path").await, 404).await;
    app.settle().await;
    let members = app.scrape().await;

    // Two license validations, and one over the limit.
    let validation = json!({ "key": "KEY-2222-3333-4444", "domain": "example.com" });
    for _ in 0..2 {
        assert_eq!(
            app.post("/v1/licenses/validate", validation.clone())
                .await
                .status(),
            200
        );
    }
    assert_problem(app.post("/v1/licenses/validate", validation).await, 429).await;
    // A sign-in code mailed to a member, and a second one over the limit.
    let code = json!({ "email": emails[0] });
    assert_eq!(app.post("/v1/auth/code", code.clone()).await.status(), 202);
    assert_problem(app.post("/v1/auth/code", code).await, 429).await;
    eventually("the sign-in email to be sent", || async {
        sqlx::query_scalar::<_, Option<bool>>(
            "SELECT bool_and(sent_at IS NOT NULL) FROM outbox_emails",
        )
        .fetch_one(&app.pool)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
    })
    .await;
    // Stripe: a subscription whose customer's email is fetched from Stripe, and an event no
    // handler takes.
    let subscription =
        l.subscription_event("created", "customer.subscription.created", "active", 0);
    assert_eq!(app.send_webhook(&subscription).await.status(), 200);
    let ignored = event(
        &format!("evt_{}_plan", l.tag),
        "plan.created",
        l.start,
        json!({ "id": format!("plan_{}", l.tag), "object": "plan" }),
    );
    assert_eq!(app.send_webhook(&ignored).await.status(), 200);
    app.drain_stripe().await;
    let after = app.scrape().await;

    // HTTP requests, by route template and status, and their latency.
    for (labels, expected) in [
        (http("POST", "/v1/members", "201"), 3.0),
        (http("POST", "/v1/members", "409"), 1.0),
        (http("GET", "/v1/members/:param0", "404"), 1.0),
        (http("GET", "unmatched", "404"), 1.0),
        (http("POST", "/v1/licenses/validate", "200"), 2.0),
        (http("POST", "/v1/licenses/validate", "429"), 1.0),
        (http("POST", "/v1/auth/code", "202"), 1.0),
        (http("POST", "/v1/auth/code", "429"), 1.0),
        (http("POST", "/webhooks/stripe", "200"), 2.0),
    ] {
        assert_eq!(after.delta(&before, HTTP, &labels), expected, "{labels:?}");
    }
    let latency = [("method", "POST"), ("route", "/v1/members")];
    assert_eq!(
        after.delta(
            &before,
            "memberledger_http_request_duration_seconds_count",
            &latency
        ),
        4.0
    );
    assert!(after.has(
        "memberledger_http_request_duration_seconds_bucket",
        &[("method", "POST"), ("route", "/v1/members"), ("le", "0.1")]
    ));

    // Commands: the three members, and the refusal of the taken email.
    let commands = "memberledger_commands_total";
    let member = |outcome| [("aggregate", "Member"), ("outcome", outcome)];
    assert_eq!(members.delta(&before, commands, &member("ok")), 3.0);
    assert_eq!(members.delta(&before, commands, &member("rejected")), 1.0);
    assert_eq!(
        members.delta(
            &before,
            "memberledger_command_duration_seconds_count",
            &[("aggregate", "Member")]
        ),
        4.0
    );
    // The subscription's one command, and the license the license policy issued for its site.
    for aggregate in ["Subscription", "License"] {
        let ok = [("aggregate", aggregate), ("outcome", "ok")];
        assert_eq!(after.delta(&members, commands, &ok), 1.0, "{aggregate}");
    }

    // Rate limits.
    let limited = "memberledger_rate_limit_rejections_total";
    assert_eq!(
        after.delta(&before, limited, &[("limit", "license_validate_per_ip")]),
        1.0
    );
    assert_eq!(
        after.delta(&before, limited, &[("limit", "sign_in_code_per_email")]),
        1.0
    );

    // The Stripe inbox and the outbound call.
    let handled = "memberledger_stripe_events_handled_total";
    assert_eq!(
        after.delta(&before, handled, &[("outcome", "processed")]),
        1.0
    );
    assert_eq!(
        after.delta(&before, handled, &[("outcome", "ignored")]),
        1.0
    );
    assert_eq!(after.delta(&before, handled, &[("outcome", "failed")]), 0.0);
    assert_eq!(
        after.delta(
            &before,
            "memberledger_stripe_event_processing_seconds_count",
            &[("outcome", "processed")]
        ),
        1.0
    );
    assert_eq!(
        after.delta(
            &before,
            "memberledger_stripe_api_calls_total",
            &[("operation", "retrieve_customer"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        after.delta(
            &before,
            "memberledger_stripe_api_call_duration_seconds_count",
            &[("operation", "retrieve_customer")]
        ),
        1.0
    );
    for status in ["pending", "processing", "deferred", "failed"] {
        assert_eq!(
            after.get("memberledger_stripe_inbox_events", &[("status", status)]),
            0.0,
            "{status}"
        );
    }
    assert_eq!(
        after.get("memberledger_stripe_inbox_oldest_due_age_seconds", &[]),
        0.0
    );

    // Email.
    assert_eq!(
        after.delta(
            &before,
            "memberledger_email_deliveries_total",
            &[("outcome", "sent")]
        ),
        1.0
    );
    assert_eq!(
        after.get(
            "memberledger_email_outbox_messages",
            &[("status", "queued")]
        ),
        0.0
    );

    // Projections: each asynchronous one applied exactly the events its checkpoint counts, and
    // none lags.
    let checkpoints: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT name, mode, events_applied FROM projection_checkpoints ORDER BY name",
    )
    .fetch_all(&app.pool)
    .await
    .expect("checkpoints");
    let applied_total: i64 = checkpoints.iter().map(|c| c.2).sum();
    assert!(applied_total > 0, "{checkpoints:?}");
    for (name, mode, applied) in &checkpoints {
        let projection = [("projection", name.as_str())];
        assert_eq!(
            after.get("memberledger_projection_lag_events", &projection),
            0.0,
            "{name}"
        );
        assert_eq!(
            after.get("memberledger_projection_lag_seconds", &projection),
            0.0,
            "{name}"
        );
        assert_eq!(
            after.get("memberledger_projection_stalled", &projection),
            0.0,
            "{name}"
        );
        if mode == "async" {
            #[expect(clippy::cast_precision_loss, reason = "a small count")]
            let applied = *applied as f64;
            assert_eq!(
                after.delta(
                    &before,
                    "memberledger_projection_events_applied_total",
                    &projection
                ),
                applied,
                "{name}"
            );
            assert_eq!(
                after.delta(
                    &before,
                    "memberledger_projection_batches_total",
                    &projection
                ) > 0.0,
                applied > 0.0,
                "{name}"
            );
        }
    }

    // The pools, as the test server has them (10 connections at most in the API's).
    let main = [("pool", "main")];
    assert_eq!(
        after.get("memberledger_db_pool_max_connections", &main),
        10.0
    );
    for state in ["idle", "in_use"] {
        for pool in ["main", "background"] {
            let labels = [("pool", pool), ("state", state)];
            assert!(
                after.has("memberledger_db_pool_connections", &labels),
                "{labels:?}"
            );
        }
    }
    // The commands' appending transactions went through the counted acquisitions.
    assert!(
        after.delta(&before, "memberledger_db_pool_acquire_seconds_count", &main) >= 5.0,
        "{after:?}"
    );

    // Gauges read from the database: a failed event not due yet, an email out of attempts.
    sqlx::query(
        "UPDATE stripe_events SET status = 'failed', next_attempt_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(format!("evt_{}_plan", l.tag))
    .execute(&app.pool)
    .await
    .expect("failing the ignored event");
    sqlx::query("UPDATE outbox_emails SET sent_at = NULL, attempts = $1")
        .bind(memberledger::mail::MAX_ATTEMPTS)
        .execute(&app.pool)
        .await
        .expect("giving the email up");
    let later = app.scrape().await;
    assert_eq!(
        later.get("memberledger_stripe_inbox_events", &[("status", "failed")]),
        1.0
    );
    assert_eq!(
        later.get("memberledger_stripe_inbox_oldest_due_age_seconds", &[]),
        0.0,
        "not due yet"
    );
    assert_eq!(
        later.get(
            "memberledger_email_outbox_messages",
            &[("status", "given_up")]
        ),
        1.0
    );
    assert_eq!(
        later.get(
            "memberledger_email_outbox_messages",
            &[("status", "queued")]
        ),
        0.0
    );
}

#[tokio::test]
async fn metrics_token_guards_the_scrape() {
    let _serial = crate::SERIAL.lock().await;
    let app = TestApp::spawn_custom(|s| {
        s.metrics.token = Some("metrics-secret".into());
        // Stored events are not processed: one stays pending.
        s.stripe.workers = 0;
    })
    .await;
    let problem = assert_problem(app.get_metrics(None).await, 401).await;
    assert_eq!(problem["type"], "/problems/unauthorized");
    assert_problem(app.get_metrics(Some("wrong")).await, 401).await;

    // An event stored an hour ago and not processed yet (not through the webhook route, whose
    // requests the other test counts).
    sqlx::query(
        "INSERT INTO stripe_events (id, type, created, payload, received_at, next_attempt_at)
         VALUES ('evt_token', 'customer.created', now(), '{}',
                 now() - interval '1 hour', now() - interval '1 hour')",
    )
    .execute(&app.pool)
    .await
    .expect("storing an event");
    let resp = app.get_metrics(Some("metrics-secret")).await;
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let scrape = Scrape::parse(&resp.text().await.expect("body"));
    assert_eq!(
        scrape.get("memberledger_stripe_inbox_events", &[("status", "pending")]),
        1.0
    );
    let age = scrape.get("memberledger_stripe_inbox_oldest_due_age_seconds", &[]);
    assert!((3600.0..3700.0).contains(&age), "{age}");
}
