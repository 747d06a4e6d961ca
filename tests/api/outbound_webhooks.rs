//! Outbound webhooks (issue #17): an admin registers an endpoint; our events are delivered to
//! it signed, retried after a 500, redelivered on request, and an endpoint that keeps failing
//! is disabled with its reason, then enabled again. The receiver is a real HTTP server here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{handler, EndpointExt, Request, Response, Route};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{assert_problem, eventually, TestApp};

/// A receiving endpoint: records every request (its signature header and body), and answers
/// 500 to the first `failing` of them, 204 afterwards.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<(String, String)>>>,
}

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<(String, String)>>>,
    failing: Arc<AtomicUsize>,
}

#[handler]
fn receive(req: &Request, body: String, state: Data<&ReceiverState>) -> Response {
    let signature = req
        .headers()
        .get("memberledger-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    state
        .received
        .lock()
        .expect("received")
        .push((signature, body));
    let failing = state.failing.load(Ordering::SeqCst);
    if failing > 0 {
        state.failing.store(failing - 1, Ordering::SeqCst);
        return Response::builder()
            .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
            .body("down for maintenance");
    }
    Response::builder()
        .status(poem::http::StatusCode::NO_CONTENT)
        .finish()
}

impl Receiver {
    async fn start(failing: usize) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            received: received.clone(),
            failing: Arc::new(AtomicUsize::new(failing)),
        };
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind the receiver");
        let addr = acceptor.local_addr()[0]
            .as_socket_addr()
            .copied()
            .expect("socket address");
        let app = Route::new().at("/hooks", poem::post(receive)).data(state);
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
        Self {
            url: format!("http://{addr}/hooks"),
            received,
        }
    }

    fn received(&self) -> Vec<(String, String)> {
        self.received.lock().expect("received").clone()
    }
}

/// Whether `header` (`t=..,v1=..`) signs `body` with `secret`.
fn signed(header: &str, body: &str, secret: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_owned()),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes()) == v1
}

#[tokio::test]
async fn an_event_is_delivered_signed_retried_after_a_500_and_redelivered_by_an_admin() {
    let receiver = Receiver::start(1).await;
    let app = TestApp::spawn_custom(|s| {
        s.webhooks.retry_base = Duration::from_millis(100);
    })
    .await;
    // Refusals name their field.
    for (body, field) in [
        (
            json!({ "url": "ftp://x.example.com/", "event_types": ["MemberCreated"] }),
            "url",
        ),
        (
            json!({ "url": receiver.url, "event_types": ["MemberExploded"] }),
            "event_types",
        ),
    ] {
        let problem = assert_problem(
            app.admin(Method::POST, "/v1/webhooks", Some(body)).await,
            422,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field);
    }
    let resp = app
        .admin(
            Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": receiver.url, "event_types": ["MemberCreated"], "description": "CRM" })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let webhook: Value = resp.json().await.expect("json");
    let (id, secret) = (
        webhook["id"].as_str().expect("id").to_owned(),
        webhook["secret"].as_str().expect("secret").to_owned(),
    );
    // The secret is shown once.
    let listed: Value = app
        .admin(Method::GET, "/v1/webhooks", None)
        .await
        .json()
        .await
        .expect("json");
    assert!(listed[0].get("secret").is_none(), "{listed}");

    let member = app.member("hooked@example.com").await;
    let member_id = member["id"].as_str().expect("id").to_owned();
    eventually("the delivery, retried after its 500", || async {
        receiver.received().len() >= 2
    })
    .await;
    let received = receiver.received();
    assert_eq!(received.len(), 2, "one failed attempt, one delivery");
    for (signature, body) in &received {
        assert!(signed(signature, body, &secret), "{signature} {body}");
        assert!(!signed(signature, body, "mlwh_someone_else"));
    }
    let body: Value = serde_json::from_str(&received[1].1).expect("JSON");
    assert_eq!(body["type"], "MemberCreated");
    assert_eq!(body["aggregate_type"], "Member");
    assert_eq!(body["aggregate_id"], member_id.as_str());
    assert_eq!(body["data"]["email"], "hooked@example.com");
    assert_eq!(body["id"], format!("evt_{}", body["position"]));

    // An event type it did not ask for is not delivered.
    let resp = app
        .patch_member(&member_id, json!({ "name": "Renamed" }))
        .await;
    assert_eq!(resp.status(), 200);
    app.settle().await;
    let deliveries: Value = app
        .admin(Method::GET, &format!("/v1/webhooks/{id}/deliveries"), None)
        .await
        .json()
        .await
        .expect("json");
    let deliveries = deliveries.as_array().expect("deliveries").clone();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let delivery = &deliveries[0];
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(delivery["last_status"], 204);
    assert_eq!(delivery["event_type"], "MemberCreated");

    // Redelivered on request.
    let resp = app
        .admin(
            Method::POST,
            &format!(
                "/v1/webhook-deliveries/{}/redeliver",
                delivery["id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(resp.status(), 202);
    eventually("the redelivery", || async {
        receiver.received().len() >= 3
    })
    .await;
    let (signature, body) = receiver.received()[2].clone();
    assert!(signed(&signature, &body, &secret));
    assert_eq!(body, received[1].1, "the same payload");
    let unknown = app
        .admin(
            Method::POST,
            &format!("/v1/webhook-deliveries/{}/redeliver", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_problem(unknown, 404).await;
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_disabled_with_its_reason_and_enabled_again() {
    let receiver = Receiver::start(usize::MAX).await;
    let app = TestApp::spawn_custom(|s| {
        s.webhooks.retry_base = Duration::from_millis(50);
        s.webhooks.disable_after = 3;
    })
    .await;
    let webhook: Value = app
        .admin(
            Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": receiver.url, "event_types": ["*"] })),
        )
        .await
        .json()
        .await
        .expect("json");
    let id = webhook["id"].as_str().expect("id").to_owned();
    app.member("failing@example.com").await;
    eventually("the endpoint is disabled", || async {
        let listed: Value = app
            .admin(Method::GET, "/v1/webhooks", None)
            .await
            .json()
            .await
            .expect("json");
        listed[0]["enabled"] == false
    })
    .await;
    let listed: Value = app
        .admin(Method::GET, "/v1/webhooks", None)
        .await
        .json()
        .await
        .expect("json");
    let reason = listed[0]["disabled_reason"].as_str().expect("a reason");
    assert!(
        reason.contains("disabled after 3 failed deliveries in a row")
            && reason.contains("answered 500: down for maintenance"),
        "{reason}"
    );
    // Disabled: no more attempts.
    let attempts = receiver.received().len();
    assert!(attempts >= 3, "{attempts}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), attempts);

    let resp = app
        .admin(Method::POST, &format!("/v1/webhooks/{id}/enable"), None)
        .await;
    assert_eq!(resp.status(), 200);
    let enabled: Value = resp.json().await.expect("json");
    assert_eq!(enabled["enabled"], true);
    assert_eq!(enabled["disabled_reason"], Value::Null);
    eventually("attempts resume", || async {
        receiver.received().len() > attempts
    })
    .await;
}

#[tokio::test]
async fn an_operator_registers_an_endpoint_sees_its_deliveries_and_redelivers_one_in_the_console() {
    let receiver = Receiver::start(0).await;
    let app = crate::browser_support::app_for_browser(|_| {}).await;
    let browser = crate::browser_support::Browser::start(&app).await;
    crate::admin_console::sign_in(&browser).await;
    browser.open("/admin/webhooks").await;
    // A refusal says which field.
    browser.fill("#webhook-url", &receiver.url).await;
    browser.fill("#webhook-events", "MemberExploded").await;
    browser.click("#register-webhook button").await;
    assert!(browser
        .text(".notice.error")
        .await
        .contains("is not an event type of ours"));
    browser.fill("#webhook-url", &receiver.url).await;
    browser.fill("#webhook-events", "MemberCreated").await;
    browser.click("#register-webhook button").await;
    let secret = browser.text("#secret code").await;
    assert!(secret.starts_with("mlwh_"), "{secret}");
    assert!(browser.text("#webhooks").await.contains(&receiver.url));
    browser.assert_accessible().await;

    app.member("console-hook@example.com").await;
    eventually("the delivery", || async { !receiver.received().is_empty() }).await;
    let (signature, body) = receiver.received()[0].clone();
    assert!(signed(&signature, &body, &secret));

    browser.click("#webhooks a[href^='/admin/webhooks/']").await;
    eventually("the delivery is recorded as delivered", || async {
        browser.open(&browser.path().await).await;
        browser.text("#deliveries .status").await == "delivered"
    })
    .await;
    browser.click("#deliveries form button").await;
    assert!(browser
        .page_text()
        .await
        .contains("The delivery is due again now."));
    eventually("the redelivery", || async {
        receiver.received().len() >= 2
    })
    .await;
    browser.assert_accessible().await;
    browser.close().await;
}
