use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, TestApp, ADMIN_TOKEN};
use crate::mail_support::{code_and_token, maildev};

fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

impl TestApp {
    pub async fn request_code(&self, body: Value) -> Response {
        self.client
            .post(self.url("/v1/auth/code"))
            .json(&body)
            .send()
            .await
            .expect("sent")
    }

    pub async fn verify(&self, body: Value) -> Response {
        self.client
            .post(self.url("/v1/auth/verify"))
            .json(&body)
            .send()
            .await
            .expect("sent")
    }

    /// Signs `email` in through the mail server; returns the session token.
    pub async fn sign_in(&self, email: &str) -> String {
        let before = maildev().await.messages_to(email).await.len();
        assert_eq!(
            self.request_code(json!({ "email": email })).await.status(),
            202
        );
        let message = maildev().await.nth_message_to(email, before + 1).await;
        let (code, _) = code_and_token(&message);
        let resp = self.verify(json!({ "email": email, "code": code })).await;
        assert_eq!(resp.status(), 200, "verifying {email}");
        let body: Value = resp.json().await.expect("json");
        body["session_token"]
            .as_str()
            .expect("a session token")
            .to_owned()
    }

    pub async fn get_as(&self, token: &str, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("sent")
    }
}

#[tokio::test]
async fn a_member_signs_in_with_the_emailed_code_and_signs_out() {
    let app = TestApp::spawn().await;
    let email = unique_email("code");
    let member = app.member(&email).await;
    assert_eq!(
        app.request_code(json!({ "email": email.to_uppercase() }))
            .await
            .status(),
        202
    );

    let message = maildev().await.nth_message_to(&email, 1).await;
    assert!(message["subject"]
        .as_str()
        .expect("subject")
        .contains("sign-in code"));
    assert!(message["html"]
        .as_str()
        .expect("an HTML body")
        .contains("<strong"));
    let (code, token) = code_and_token(&message);
    assert_eq!(code.len(), 6);
    assert!(message["text"]
        .as_str()
        .expect("text")
        .contains("https://members.test/signin?token="));
    assert!(token.len() >= 40);

    let resp = app.verify(json!({ "email": email, "code": code })).await;
    assert_eq!(resp.status(), 200);
    let session: Value = resp.json().await.expect("json");
    assert_eq!(session["member"]["id"], member["id"]);
    let token = session["session_token"].as_str().expect("token");
    assert_eq!(base64_len(token), 32, "256-bit session token");

    let me: Value = app
        .get_as(token, "/v1/me")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["email"], email);
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM member_sessions WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind(token)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(stored, 1, "only the hash of the session token is stored");
    app.settle().await;
    let logins: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM members_login_events WHERE member_id = $1::uuid AND method = 'code'",
    )
    .bind(member["id"].as_str().expect("id"))
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(logins, 1);

    let resp = app
        .client
        .delete(app.url("/v1/auth/session"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    assert_problem(app.get_as(token, "/v1/me").await, 401).await;
}

fn base64_len(token: &str) -> usize {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map(|b| b.len())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_magic_link_works_once_and_uses_up_the_code_too() {
    let app = TestApp::spawn().await;
    let email = unique_email("link");
    app.member(&email).await;
    app.request_code(json!({ "email": email })).await;
    let (code, token) = code_and_token(&maildev().await.nth_message_to(&email, 1).await);
    assert_eq!(app.verify(json!({ "token": token })).await.status(), 200);
    assert_problem(app.verify(json!({ "token": token })).await, 401).await;
    assert_problem(
        app.verify(json!({ "email": email, "code": code })).await,
        401,
    )
    .await;
}

#[tokio::test]
async fn unknown_emails_get_the_same_answer_and_no_mail() {
    let app = TestApp::spawn().await;
    let email = unique_email("nobody");
    let resp = app.request_code(json!({ "email": email })).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"accepted": true})
    );
    let codes: i64 = sqlx::query_scalar("SELECT count(*) FROM login_codes")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(codes, 0);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(maildev().await.messages_to(&email).await.is_empty());
    assert_problem(
        app.verify(json!({ "email": email, "code": "123456" }))
            .await,
        401,
    )
    .await;
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let app = TestApp::spawn().await;
    let email = unique_email("expired");
    app.member(&email).await;
    app.request_code(json!({ "email": email })).await;
    let (code, token) = code_and_token(&maildev().await.nth_message_to(&email, 1).await);
    sqlx::query("UPDATE login_codes SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .expect("expired");
    assert_problem(
        app.verify(json!({ "email": email, "code": code })).await,
        401,
    )
    .await;
    assert_problem(app.verify(json!({ "token": token })).await, 401).await;
}

#[tokio::test]
async fn a_new_request_invalidates_the_older_code() {
    let app = TestApp::spawn().await;
    let email = unique_email("twice");
    app.member(&email).await;
    app.request_code(json!({ "email": email })).await;
    let (first, first_token) = code_and_token(&maildev().await.nth_message_to(&email, 1).await);
    app.request_code(json!({ "email": email })).await;
    let (second, _) = code_and_token(&maildev().await.nth_message_to(&email, 2).await);
    assert_problem(app.verify(json!({ "token": first_token })).await, 401).await;
    if first != second {
        assert_problem(
            app.verify(json!({ "email": email, "code": first })).await,
            401,
        )
        .await;
    }
    assert_eq!(
        app.verify(json!({ "email": email, "code": second }))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn five_wrong_codes_burn_the_code() {
    let app = TestApp::spawn().await;
    let email = unique_email("burn");
    app.member(&email).await;
    app.request_code(json!({ "email": email })).await;
    let (code, _) = code_and_token(&maildev().await.nth_message_to(&email, 1).await);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        assert_problem(
            app.verify(json!({ "email": email, "code": wrong })).await,
            401,
        )
        .await;
    }
    assert_problem(
        app.verify(json!({ "email": email, "code": code })).await,
        401,
    )
    .await;
}

#[tokio::test]
async fn requests_over_the_limit_get_429_with_retry_after() {
    let app = TestApp::spawn_custom(|s| {
        s.auth.code_per_email.max = 2;
        s.auth.verify_per_ip.max = 3;
    })
    .await;
    let email = unique_email("limited");
    for _ in 0..2 {
        assert_eq!(
            app.request_code(json!({ "email": email })).await.status(),
            202
        );
    }
    let resp = app.request_code(json!({ "email": email })).await;
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_problem(resp, 429).await;

    for _ in 0..3 {
        assert_problem(app.verify(json!({ "token": "nope" })).await, 401).await;
    }
    let resp = app.verify(json!({ "token": "nope" })).await;
    assert!(resp.headers().get("retry-after").is_some());
    assert_problem(resp, 429).await;
}

#[tokio::test]
async fn members_and_admins_each_reach_only_what_is_theirs() {
    let app = TestApp::spawn().await;
    let (a, b) = (unique_email("alice"), unique_email("bob"));
    app.member(&a).await;
    let bob = app.member(&b).await;
    let alice_token = app.sign_in(&a).await;

    let me: Value = app
        .get_as(&alice_token, "/v1/me")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["email"], a);
    let dashboard: Value = app
        .get_as(&alice_token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(dashboard["email"], a);
    // A member session is not an admin token, and vice versa.
    let bob_path = format!("/v1/members/{}", bob["id"].as_str().expect("id"));
    assert_problem(app.get_as(&alice_token, &bob_path).await, 401).await;
    assert_problem(app.get_as(&alice_token, "/v1/members").await, 401).await;
    assert_problem(app.get_as(ADMIN_TOKEN, "/v1/me").await, 401).await;
    assert_problem(app.get_as(ADMIN_TOKEN, "/v1/me/dashboard").await, 401).await;
    assert_problem(app.get_as("forged", "/v1/me").await, 401).await;
}

#[tokio::test]
async fn a_signup_creates_the_member_on_verification_with_attribution_and_newsletters() {
    let app = TestApp::spawn().await;
    let create = |name: &str, on_signup: bool| {
        let app = &app;
        let body = json!({ "name": name, "subscribe_on_signup": on_signup });
        async move {
            let resp = app
                .client
                .post(app.url("/v1/newsletters"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .expect("sent");
            assert_eq!(resp.status(), 201);
            resp.json::<Value>().await.expect("json")
        }
    };
    let weekly = create("Weekly", true).await;
    let offers = create("Offers", false).await;

    let email = unique_email("signup");
    let now = chrono::Utc::now().timestamp_millis();
    let history = json!([
        { "path": "/welcome/", "time": now - 60_000, "referrer_url": "https://www.google.com/search?q=x", "referrer_source": null },
        { "path": "/tag/rust/", "time": now - 1_000, "referrer_url": "https://members.test/welcome/" }
    ]);
    let resp = app
        .request_code(
            json!({ "email": email, "signup": true, "name": "New Person", "url_history": history }),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let message = maildev().await.nth_message_to(&email, 1).await;
    assert!(message["subject"]
        .as_str()
        .expect("subject")
        .contains("Confirm your signup"));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM member_list")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(count, 0, "not a member until verified");

    let (_, token) = code_and_token(&message);
    let session: Value = app
        .verify(json!({ "token": token }))
        .await
        .json()
        .await
        .expect("json");
    let member_id = session["member"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{session}"))
        .to_owned();
    assert_eq!(session["member"]["source"], "signup");
    assert_eq!(session["member"]["name"], "New Person");
    app.settle().await;

    let detail: Value = app.get_member(&member_id).await.json().await.expect("json");
    let attribution = &detail["attribution"];
    assert_eq!(attribution["type"], "post", "{attribution}");
    assert_eq!(attribution["id"], "welcome");
    assert_eq!(attribution["url"], "/welcome/");
    assert_eq!(attribution["referrer_source"], "Google");
    assert_eq!(attribution["referrer_medium"], "search");

    let me: Value = app
        .get_as(session["session_token"].as_str().expect("token"), "/v1/me")
        .await
        .json()
        .await
        .expect("json");
    let subscribed: Vec<&str> = me["newsletters"]
        .as_array()
        .expect("newsletters")
        .iter()
        .filter(|n| n["subscribed"] == true)
        .map(|n| n["name"].as_str().expect("name"))
        .collect();
    assert_eq!(subscribed, ["Weekly"], "only subscribe_on_signup ones");

    let filtered: Value = app
        .get(&format!(
            "/v1/members?newsletter={}",
            weekly["id"].as_str().expect("id")
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(filtered["items"].as_array().map(Vec::len), Some(1));
    let none: Value = app
        .get(&format!(
            "/v1/members?newsletter={}",
            offers["id"].as_str().expect("id")
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(none["items"], json!([]));
}

#[tokio::test]
async fn invalid_signup_history_is_refused_with_field_errors() {
    let app = TestApp::spawn().await;
    let resp = app
        .request_code(json!({
            "email": unique_email("badhistory"),
            "signup": true,
            "url_history": [{ "path": "no-slash", "time": 1 }]
        }))
        .await;
    let problem = assert_problem(resp, 422).await;
    assert_eq!(
        problem["errors"][0]["field"], "url_history[0].path",
        "{problem}"
    );
}

#[tokio::test]
async fn members_manage_their_newsletters_and_admins_manage_newsletters() {
    let app = TestApp::spawn().await;
    let email = unique_email("reader");
    app.member(&email).await;
    let token = app.sign_in(&email).await;
    let resp = app
        .client
        .post(app.url("/v1/newsletters"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "Daily", "description": "Every day" }))
        .send()
        .await
        .expect("sent");
    let daily: Value = resp.json().await.expect("json");
    let id = daily["id"].as_str().expect("id").to_owned();
    assert_eq!(daily["status"], "active");

    let patch = |body: Value| {
        let app = &app;
        let token = token.clone();
        async move {
            app.client
                .patch(app.url("/v1/me"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("sent")
        }
    };
    let me: Value = patch(json!({ "newsletters": [id], "name": "Reader" }))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["name"], "Reader");
    assert_eq!(me["newsletters"][0]["subscribed"], true);
    let listed: Value = app.get("/v1/newsletters").await.json().await.expect("json");
    assert_eq!(listed["items"][0]["member_count"], 1);

    let me: Value = patch(json!({ "newsletters": [] }))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["newsletters"][0]["subscribed"], false);
    let unknown = uuid::Uuid::now_v7();
    let problem = assert_problem(patch(json!({ "newsletters": [unknown] })).await, 422).await;
    assert_eq!(problem["errors"][0]["field"], "newsletters");

    // Archived newsletters disappear from the member's choices.
    let resp = app
        .client
        .patch(app.url(&format!("/v1/newsletters/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "status": "archived", "description": null }))
        .send()
        .await
        .expect("sent");
    let archived: Value = resp.json().await.expect("json");
    assert_eq!(archived["status"], "archived");
    assert!(archived["description"].is_null());
    let me: Value = app
        .get_as(&token, "/v1/me")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["newsletters"], json!([]));
    assert_problem(app.get(&format!("/v1/newsletters/{unknown}")).await, 404).await;
}

#[tokio::test]
async fn the_dashboard_shows_what_stripe_created_and_is_empty_before() {
    let app = TestApp::spawn().await;
    let l = crate::stripe_support::Lifecycle::new(&format!(
        "dash{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    app.member(&l.email).await;
    let token = app.sign_in(&l.email).await;
    let empty: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    for section in [
        "subscriptions",
        "sites",
        "payments",
        "licenses",
        "customer_ids",
    ] {
        assert_eq!(empty[section], json!([]), "{section}");
    }
    for event in [
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "active", 0),
        l.invoice_paid(&format!("in_{}_1", l.tag), 2),
    ] {
        app.send_webhook(&event).await;
    }
    app.drain_stripe().await;
    let dashboard: Value = app
        .get_as(&token, "/v1/me/dashboard")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(dashboard["status"], "paid");
    assert_eq!(dashboard["customer_ids"], json!([l.customer]));
    assert_eq!(dashboard["subscriptions"][0]["id"], l.subscription);
    assert_eq!(dashboard["subscriptions"][0]["site_count"], 1);
    assert_eq!(dashboard["subscriptions"][0]["items"][0]["site"], l.site);
    assert_eq!(dashboard["sites"][0]["domain"], l.site);
    assert_eq!(dashboard["payments"][0]["amount"], 2000);
    assert_eq!(dashboard["licenses"][0]["site"], l.site);
    assert_eq!(dashboard["licenses"][0]["status"], "active");
    let licenses: Value = app
        .get_as(&token, "/v1/me/licenses")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(licenses["items"][0]["key"], dashboard["licenses"][0]["key"]);
    let admin_view: Value = app
        .get(&format!(
            "/v1/members/{}/dashboard",
            dashboard["member_id"].as_str().expect("id")
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(admin_view, dashboard);
}

#[tokio::test]
async fn a_mail_server_that_is_down_delays_the_email_but_not_the_answer() {
    let closed_port = crate::helpers::free_port();
    let app = TestApp::spawn_custom(|s| {
        s.mail.smtp_url = Some(format!("smtp://127.0.0.1:{closed_port}"))
    })
    .await;
    let email = unique_email("smtpdown");
    app.member(&email).await;
    assert_eq!(
        app.request_code(json!({ "email": email })).await.status(),
        202
    );
    crate::helpers::eventually("a failed delivery to be recorded for retry", || async {
        // Failed, not sent, not given up, and due again later (after a backoff).
        let row: Option<(i32, Option<String>, bool, bool, bool)> = sqlx::query_as(
            "SELECT attempts, last_error, sent_at IS NOT NULL, given_up_at IS NOT NULL,
                    next_attempt_at > now()
             FROM outbox_emails WHERE to_address = $1",
        )
        .bind(&email)
        .fetch_optional(&app.pool)
        .await
        .expect("query");
        matches!(row, Some((attempts, Some(_), false, false, true)) if attempts >= 1)
    })
    .await;
}
