//! Stripe payloads (the shared `stripe_fixtures` builders over the repository's fixtures file),
//! their delivery to a test server, and a fake Stripe API.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Path};
use poem::{get, handler, EndpointExt, Response, Route};
use reqwest::Response as HttpResponse;
use serde_json::{json, Value};
use stripe_fixtures::Fixtures;
pub use stripe_fixtures::{signature, Lifecycle};

use crate::helpers::{TestApp, WEBHOOK_SECRET};

/// Stripe's example object of a resource (`subscription`, `invoice`, `checkout.session`, ...).
pub fn fixture(resource: &str) -> Value {
    Fixtures::repo().resource(resource)
}

/// An event around `object`, built from Stripe's example event.
pub fn event(id: &str, event_type: &str, created: i64, object: Value) -> Value {
    Fixtures::repo().event(id, event_type, created, object)
}

impl TestApp {
    /// Delivers `event` signed now with the test secret.
    pub async fn send_webhook(&self, event: &Value) -> HttpResponse {
        let payload = event.to_string();
        let sig = signature(&payload, WEBHOOK_SECRET, chrono::Utc::now().timestamp());
        self.send_raw_webhook(payload, Some(sig)).await
    }

    pub async fn send_raw_webhook(
        &self,
        payload: String,
        signature: Option<String>,
    ) -> HttpResponse {
        let mut req = self
            .client
            .post(self.url("/webhooks/stripe"))
            .header("content-type", "application/json")
            .body(payload);
        if let Some(sig) = signature {
            req = req.header("stripe-signature", sig);
        }
        req.send().await.expect("webhook sent")
    }

    /// Waits until no stored Stripe event is pending, processing, deferred or failed, then
    /// until every projection has applied the whole log.
    pub async fn drain_stripe(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let open: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT id, status, last_error FROM stripe_events WHERE status IN ('pending', 'processing', 'deferred', 'failed')",
            )
            .fetch_all(&self.pool)
            .await
            .expect("open events");
            if open.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stripe inbox did not drain: {open:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.settle().await;
    }

    /// Waits until every asynchronous projection and policy has applied every event it
    /// handles (policies append events, so this loops until nothing moves; inline projections
    /// are written with their events and never lag).
    pub async fn settle(&self) {
        crate::helpers::eventually("the projections to catch up", || async {
            let status = memberledger::runner::status(&self.pool, projection_list())
                .await
                .expect("projection status");
            let checkpoints: i64 =
                sqlx::query_scalar("SELECT count(*) FROM projection_checkpoints")
                    .fetch_one(&self.pool)
                    .await
                    .expect("count");
            status.iter().all(|p| p.lag_events == 0)
                && checkpoints >= i64::try_from(status.len()).expect("a small count")
        })
        .await;
    }
}

/// A fake Stripe API on 127.0.0.1 serving customers; records the paths it was asked for.
pub struct FakeStripe {
    pub base: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    pub checkouts: Arc<Mutex<Vec<(String, String)>>>,
    pub fail_next: Arc<std::sync::atomic::AtomicUsize>,
    held: Arc<tokio::sync::watch::Sender<HashSet<String>>>,
    /// What `GET /v1/events` lists (Stripe's event log).
    events: Arc<Mutex<Vec<Value>>>,
    /// The webhook endpoints registered (`/v1/webhook_endpoints`), with their secrets.
    pub endpoints: Arc<Mutex<Vec<Value>>>,
    /// Products, prices, coupons and promotion codes created (`POST /v1/products`,
    /// `/v1/prices`, `/v1/coupons`, `/v1/promotion_codes`), by id.
    pub catalog: Arc<Mutex<HashMap<String, Value>>>,
    /// How many of the next catalog creations (product, price, coupon, promotion code) are
    /// made but answered 500 (the answer lost on the way back).
    pub lose_next: Arc<std::sync::atomic::AtomicUsize>,
    /// By kind (`product`, `price`, `coupon`, `promotion_code`): how many of the next
    /// creations of that kind answer 500 without making the object.
    pub fail_next_of: Arc<Mutex<HashMap<String, usize>>>,
    /// By kind: how many of the next creations of that kind are made but answered 500.
    pub lose_next_of: Arc<Mutex<HashMap<String, usize>>>,
}

#[derive(Clone)]
struct FakeState {
    customers: Arc<HashMap<String, String>>,
    /// Customers whose retrieval stalls until they are released.
    held: Arc<tokio::sync::watch::Sender<HashSet<String>>>,
    requests: Arc<Mutex<Vec<String>>>,
    /// Checkout requests: (idempotency key, form body).
    checkouts: Arc<Mutex<Vec<(String, String)>>>,
    /// How many of the next checkout session or subscription item creations answer 500.
    fail_next: Arc<std::sync::atomic::AtomicUsize>,
    events: Arc<Mutex<Vec<Value>>>,
    endpoints: Arc<Mutex<Vec<Value>>>,
    catalog: Arc<Mutex<HashMap<String, Value>>>,
    lose_next: Arc<std::sync::atomic::AtomicUsize>,
    fail_next_of: Arc<Mutex<HashMap<String, usize>>>,
    lose_next_of: Arc<Mutex<HashMap<String, usize>>>,
}

/// Counts down `kind`'s entry; whether it was above zero.
fn count_down(counts: &Mutex<HashMap<String, usize>>, kind: &str) -> bool {
    let Ok(mut counts) = counts.lock() else {
        return false;
    };
    match counts.get_mut(kind) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

fn answer_500(message: &str) -> Response {
    Response::builder()
        .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
        .content_type("application/json")
        .body(json!({"error": {"type": "api_error", "message": message}}).to_string())
}

impl FakeState {
    /// A 500, while `fail_next` counts down.
    fn fail(&self) -> Option<Response> {
        self.fail_next
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .ok()?;
        Some(
            Response::builder()
                .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                .content_type("application/json")
                .body(
                    json!({"error": {"type": "api_error", "message": "temporary failure"}})
                        .to_string(),
                ),
        )
    }
}

#[handler]
fn delete_subscription_item(
    req: &poem::Request,
    Path(id): Path<String>,
    state: Data<&FakeState>,
) -> Response {
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(format!("DELETE /v1/subscription_items/{id} key={key}"));
    }
    let mut deleted = fixture("deleted_subscription_item");
    deleted["id"] = json!(id);
    Response::builder()
        .content_type("application/json")
        .body(deleted.to_string())
}

/// A customer deleted (an erasure): recorded, answered as Stripe does.
#[handler]
fn delete_customer(Path(id): Path<String>, state: Data<&FakeState>) -> Response {
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(format!("DELETE /v1/customers/{id}"));
    }
    Response::builder()
        .content_type("application/json")
        .body(json!({"id": id, "object": "customer", "deleted": true}).to_string())
}

/// A subscription canceled at once: recorded, answered as the canceled subscription.
#[handler]
fn cancel_subscription(Path(id): Path<String>, state: Data<&FakeState>) -> Response {
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(format!("DELETE /v1/subscriptions/{id}"));
    }
    let mut sub = fixture("subscription");
    sub["id"] = json!(id);
    sub["status"] = json!("canceled");
    Response::builder()
        .content_type("application/json")
        .body(sub.to_string())
}

/// A subscription item's new price (a plan change): recorded, and answered as the item.
#[handler]
fn update_subscription_item(
    req: &poem::Request,
    Path(id): Path<String>,
    body: String,
    state: Data<&FakeState>,
) -> Response {
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    record(
        &state,
        format!(
            "POST /v1/subscription_items/{id} key={key} price={} proration={}",
            get("price"),
            get("proration_behavior")
        ),
    );
    if let Some(failure) = state.fail() {
        return failure;
    }
    let mut item = fixture("subscription_item");
    item["id"] = json!(id);
    item["price"]["id"] = json!(get("price"));
    json_response(&item)
}

#[handler]
fn create_subscription_item(
    req: &poem::Request,
    body: String,
    state: Data<&FakeState>,
) -> Response {
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| {
        form.iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(format!(
            "POST /v1/subscription_items key={key} subscription={} site={} quantity={} license_purchase_id={} proration={}",
            get("subscription"),
            get("metadata[site]"),
            get("quantity"),
            get("metadata[license_purchase_id]"),
            get("proration_behavior")
        ));
    }
    if let Some(failure) = state.fail() {
        return failure;
    }
    // Like Stripe: the same idempotency key gets the same item.
    let mut item = fixture("subscription_item");
    item["id"] = json!(format!(
        "si_added_{:x}",
        key.bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
    ));
    item["subscription"] = json!(get("subscription"));
    item["quantity"] = json!(get("quantity").parse::<u64>().unwrap_or(1));
    item["metadata"] = form
        .iter()
        .filter_map(|(k, v)| {
            let k = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((k.to_owned(), json!(v)))
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    Response::builder()
        .content_type("application/json")
        .body(item.to_string())
}

#[handler]
fn create_checkout_session(req: &poem::Request, body: String, state: Data<&FakeState>) -> Response {
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut checkouts = state.checkouts.lock().expect("lock");
    checkouts.push((key.clone(), body));
    if let Some(failure) = state.fail() {
        return failure;
    }
    // Like Stripe: the same idempotency key gets the same session.
    let first = checkouts.iter().position(|(k, _)| *k == key).unwrap_or(0);
    let mut session = fixture("checkout.session");
    session["id"] = json!(format!("cs_test_fake_{first}"));
    // Checkout's page, served by this fake (`checkout_page`) so a browser can arrive there.
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("checkout.stripe.test");
    session["url"] = json!(format!("http://{host}/c/pay/cs_test_fake_{first}"));
    session["mode"] = json!("subscription");
    Response::builder()
        .content_type("application/json")
        .body(session.to_string())
}

/// The page a Checkout Session's `url` opens: where a buyer would pay.
#[handler]
fn checkout_page(Path(id): Path<String>) -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><title>Fake Stripe Checkout</title><h1>Fake Stripe Checkout</h1><p id=session>{id}</p>"
        ))
}

/// A Billing Portal session for the form's customer; its `url` opens `billing_portal_page`
/// on this fake. Recorded as `POST /v1/billing_portal/sessions customer=.. return_url=..`.
#[handler]
fn create_billing_portal_session(
    req: &poem::Request,
    body: String,
    state: Data<&FakeState>,
) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| {
        form.iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let id = {
        let mut requests = state.requests.lock().expect("lock");
        requests.push(format!(
            "POST /v1/billing_portal/sessions customer={} return_url={}",
            get("customer"),
            get("return_url")
        ));
        format!("bps_fake_{}", requests.len())
    };
    if let Some(failure) = state.fail() {
        return failure;
    }
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("billing.stripe.test");
    let mut session = fixture("billing_portal.session");
    session["id"] = json!(id);
    session["customer"] = json!(get("customer"));
    session["return_url"] = json!(get("return_url"));
    session["flow"] = Value::Null;
    session["livemode"] = json!(false);
    session["url"] = json!(format!("http://{host}/p/session/{id}"));
    Response::builder()
        .content_type("application/json")
        .body(session.to_string())
}

/// The page a Billing Portal session's `url` opens.
#[handler]
fn billing_portal_page(Path(id): Path<String>) -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><title>Fake Stripe Billing Portal</title><h1>Fake Stripe Billing Portal</h1><p id=session>{id}</p>"
        ))
}

/// A product, price, coupon or promotion code made from `form` (the same idempotency key makes
/// the same object, as Stripe replays an answer); recorded in the catalog.
#[handler]
fn create_catalog_object(req: &poem::Request, body: String, state: Data<&FakeState>) -> Response {
    let kind = match req.uri().path().rsplit('/').next() {
        Some("products") => "product",
        Some("coupons") => "coupon",
        Some("promotion_codes") => "promotion_code",
        _ => "price",
    };
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    record(&state, format!("POST /v1/{kind}s key={key} {body}"));
    if let Some(failure) = state.fail() {
        return failure;
    }
    if count_down(&state.fail_next_of, kind) {
        return answer_500("temporary failure");
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let id = format!(
        "{}_{:x}",
        match kind {
            "product" => "prod",
            "coupon" => "co",
            "promotion_code" => "promo",
            _ => "price",
        },
        key.bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
    );
    let mut object = fixture(kind);
    object["id"] = json!(id);
    if kind == "coupon" {
        // As sent: the terms the test checks.
        object["name"] = json!(form.get("name"));
        object["form"] = json!(form);
    } else if kind == "product" {
        object["name"] = json!(form.get("name"));
    } else if kind == "promotion_code" {
        object["code"] = json!(form.get("code"));
        object["active"] = json!(true);
        object["promotion"]["coupon"] = json!(form.get("promotion[coupon]"));
        object["max_redemptions"] = json!(form
            .get("max_redemptions")
            .and_then(|m| m.parse::<i64>().ok()));
        object["form"] = json!(form);
    } else {
        let amount: i64 = form
            .get("unit_amount")
            .and_then(|a| a.parse().ok())
            .unwrap_or_default();
        object["product"] = json!(form.get("product"));
        object["currency"] = json!(form.get("currency"));
        object["unit_amount"] = json!(amount);
        object["unit_amount_decimal"] = json!(amount.to_string());
        object["recurring"]["interval"] = json!(form.get("recurring[interval]"));
        object["recurring"]["interval_count"] = json!(1);
    }
    if let Ok(mut catalog) = state.catalog.lock() {
        // Like Stripe: one active promotion code per code, whatever its case.
        let taken = kind == "promotion_code"
            && catalog.iter().any(|(other, o)| {
                *other != id
                    && o["object"] == "promotion_code"
                    && o["active"] == true
                    && o["code"].as_str().map(str::to_lowercase)
                        == form.get("code").map(|c| c.to_lowercase())
            });
        if taken {
            return Response::builder()
                .status(poem::http::StatusCode::BAD_REQUEST)
                .content_type("application/json")
                .body(
                    json!({"error": {"type": "invalid_request_error",
                        "message": "An active promotion code with this code already exists."}})
                    .to_string(),
                );
        }
        catalog.entry(id).or_insert_with(|| object.clone());
    }
    let lost = state
        .lose_next
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        )
        .is_ok();
    if lost || count_down(&state.lose_next_of, kind) {
        return answer_500("lost");
    }
    json_response(&object)
}

/// A promotion code updated from the form (`active=false` deactivates it); recorded as
/// `POST /v1/promotion_codes/{id} key=.. {form}`. An unknown id is Stripe's 404.
#[handler]
fn update_promotion_code(
    req: &poem::Request,
    Path(id): Path<String>,
    body: String,
    state: Data<&FakeState>,
) -> Response {
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    record(
        &state,
        format!("POST /v1/promotion_codes/{id} key={key} {body}"),
    );
    if let Some(failure) = state.fail() {
        return failure;
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let mut catalog = state.catalog.lock().expect("lock");
    let Some(code) = catalog.get_mut(&id) else {
        return Response::builder()
            .status(poem::http::StatusCode::NOT_FOUND)
            .content_type("application/json")
            .body(
                json!({"error": {"type": "invalid_request_error", "message": "No such promotion code"}})
                    .to_string(),
            );
    };
    if let Some(active) = form.get("active") {
        code["active"] = json!(active == "true");
    }
    json_response(code)
}

/// A created price as it was made; any other is a monthly 2000 usd one of `prod_fake`
/// (yearly when its id has `year` in it), except ids with `onetime` in them.
#[handler]
fn retrieve_price(Path(id): Path<String>, state: Data<&FakeState>) -> Response {
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(format!("GET /v1/prices/{id}"));
    }
    if let Some(price) = state.catalog.lock().ok().and_then(|c| c.get(&id).cloned()) {
        return json_response(&price);
    }
    let mut price = fixture("price");
    price["id"] = json!(id);
    price["product"] = json!("prod_fake");
    price["unit_amount"] = json!(2000);
    price["unit_amount_decimal"] = json!("2000");
    if id.contains("year") {
        price["recurring"]["interval"] = json!("year");
        price["unit_amount"] = json!(20000);
        price["unit_amount_decimal"] = json!("20000");
    }
    if id.contains("onetime") {
        price["recurring"] = Value::Null;
        price["type"] = json!("one_time");
    }
    Response::builder()
        .content_type("application/json")
        .body(price.to_string())
}

fn json_response(value: &Value) -> Response {
    Response::builder()
        .content_type("application/json")
        .body(value.to_string())
}

fn record(state: &FakeState, line: String) {
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(line);
    }
}

/// The `enabled_events` of a form body (`enabled_events[]=...` or `enabled_events[0]=...`).
fn form_events(form: &[(String, String)]) -> Vec<Value> {
    form.iter()
        .filter(|(k, _)| k.starts_with("enabled_events["))
        .map(|(_, v)| json!(v))
        .collect()
}

#[handler]
fn list_endpoints(state: Data<&FakeState>) -> Response {
    record(&state, "GET /v1/webhook_endpoints".into());
    let all: Vec<Value> = state
        .endpoints
        .lock()
        .map(|e| {
            e.iter()
                .map(|endpoint| {
                    let mut listed = endpoint.clone();
                    // Stripe shows the secret only when it creates the endpoint.
                    listed.as_object_mut().map(|o| o.remove("secret"));
                    listed
                })
                .collect()
        })
        .unwrap_or_default();
    json_response(&json!({ "object": "list", "has_more": false, "data": all }))
}

#[handler]
fn create_endpoint(body: String, state: Data<&FakeState>) -> Response {
    record(&state, "POST /v1/webhook_endpoints".into());
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let n = state.endpoints.lock().map(|e| e.len()).unwrap_or(0) + 1;
    let endpoint = json!({
        "id": format!("we_fake{n}"), "object": "webhook_endpoint", "url": field("url"),
        "enabled_events": form_events(&form), "status": "enabled",
        "description": field("description"),
        "secret": format!("whsec_fake{n}_{}", uuid::Uuid::new_v4().simple()),
    });
    if let Ok(mut all) = state.endpoints.lock() {
        all.push(endpoint.clone());
    }
    json_response(&endpoint)
}

#[handler]
fn update_endpoint(Path(id): Path<String>, body: String, state: Data<&FakeState>) -> Response {
    record(&state, format!("POST /v1/webhook_endpoints/{id}"));
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let mut all = state.endpoints.lock().expect("endpoints");
    let Some(endpoint) = all.iter_mut().find(|e| e["id"] == id.as_str()) else {
        return Response::builder()
            .status(poem::http::StatusCode::NOT_FOUND)
            .content_type("application/json")
            .body(json!({"error": {"type": "invalid_request_error", "message": "No such webhook endpoint"}}).to_string());
    };
    let events = form_events(&form);
    if !events.is_empty() {
        endpoint["enabled_events"] = json!(events);
    }
    if form.iter().any(|(k, v)| k == "disabled" && v == "false") {
        endpoint["status"] = json!("enabled");
    }
    let mut answer = endpoint.clone();
    answer.as_object_mut().map(|o| o.remove("secret"));
    json_response(&answer)
}

#[handler]
fn delete_endpoint(Path(id): Path<String>, state: Data<&FakeState>) -> Response {
    record(&state, format!("DELETE /v1/webhook_endpoints/{id}"));
    if let Ok(mut all) = state.endpoints.lock() {
        all.retain(|e| e["id"] != id.as_str());
    }
    json_response(&json!({ "id": id, "object": "webhook_endpoint", "deleted": true }))
}

/// `GET /v1/events` as Stripe answers it: newest first, `created[gte]`, `limit` (at most 100)
/// and `starting_after` (an event id of the previous page).
#[handler]
fn list_events(req: &poem::Request, state: Data<&FakeState>) -> Response {
    let query: HashMap<String, String> =
        serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(format!(
            "GET /v1/events?{}",
            req.uri().query().unwrap_or("")
        ));
    }
    let gte: i64 = query
        .get("created[gte]")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .min(100);
    let mut log: Vec<Value> = state.events.lock().map(|l| l.clone()).unwrap_or_default();
    log.retain(|e| e["created"].as_i64().unwrap_or(0) >= gte);
    log.sort_by_key(|e| std::cmp::Reverse(e["created"].as_i64().unwrap_or(0)));
    if let Some(after) = query.get("starting_after") {
        if let Some(at) = log.iter().position(|e| e["id"] == after.as_str()) {
            log.drain(..=at);
        }
    }
    let has_more = log.len() > limit;
    log.truncate(limit);
    Response::builder().content_type("application/json").body(
        json!({ "object": "list", "url": "/v1/events", "has_more": has_more, "data": log })
            .to_string(),
    )
}

#[handler]
async fn retrieve_customer(Path(id): Path<String>, state: Data<&FakeState>) -> Response {
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(format!("GET /v1/customers/{id}"));
    }
    let _ = state
        .held
        .subscribe()
        .wait_for(|held| !held.contains(&id))
        .await;
    let Some(email) = state.customers.get(&id) else {
        return Response::builder()
            .status(poem::http::StatusCode::NOT_FOUND)
            .content_type("application/json")
            .body(
                json!({"error": {"type": "invalid_request_error", "message": "No such customer"}})
                    .to_string(),
            );
    };
    let mut customer = fixture("customer");
    customer["id"] = json!(id);
    customer["email"] = json!(email);
    customer["name"] = json!("Fetched Customer");
    Response::builder()
        .content_type("application/json")
        .body(customer.to_string())
}

impl FakeStripe {
    /// Serves `customers` (id → email).
    pub async fn start(customers: &[(&str, &str)]) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let checkouts = Arc::new(Mutex::new(Vec::new()));
        let fail_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let held = Arc::new(tokio::sync::watch::Sender::new(HashSet::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let endpoints = Arc::new(Mutex::new(Vec::new()));
        let catalog = Arc::new(Mutex::new(HashMap::new()));
        let lose_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let fail_next_of = Arc::new(Mutex::new(HashMap::new()));
        let lose_next_of = Arc::new(Mutex::new(HashMap::new()));
        let state = FakeState {
            fail_next_of: fail_next_of.clone(),
            lose_next_of: lose_next_of.clone(),
            catalog: catalog.clone(),
            lose_next: lose_next.clone(),
            events: events.clone(),
            endpoints: endpoints.clone(),
            held: held.clone(),
            customers: Arc::new(
                customers
                    .iter()
                    .map(|(id, email)| ((*id).to_owned(), (*email).to_owned()))
                    .collect(),
            ),
            requests: requests.clone(),
            checkouts: checkouts.clone(),
            fail_next: fail_next.clone(),
        };
        let app = Route::new()
            .at(
                "/v1/customers/:id",
                get(retrieve_customer).delete(delete_customer),
            )
            .at("/v1/subscriptions/:id", poem::delete(cancel_subscription))
            .at("/v1/prices/:id", get(retrieve_price))
            .at("/v1/products", poem::post(create_catalog_object))
            .at("/v1/prices", poem::post(create_catalog_object))
            .at("/v1/coupons", poem::post(create_catalog_object))
            .at("/v1/promotion_codes", poem::post(create_catalog_object))
            .at("/v1/promotion_codes/:id", poem::post(update_promotion_code))
            .at("/v1/events", get(list_events))
            .at(
                "/v1/webhook_endpoints",
                get(list_endpoints).post(create_endpoint),
            )
            .at(
                "/v1/webhook_endpoints/:id",
                poem::post(update_endpoint).delete(delete_endpoint),
            )
            .at("/v1/checkout/sessions", poem::post(create_checkout_session))
            .at("/c/pay/:id", get(checkout_page))
            .at(
                "/v1/billing_portal/sessions",
                poem::post(create_billing_portal_session),
            )
            .at("/p/session/:id", get(billing_portal_page))
            .at(
                "/v1/subscription_items/:id",
                poem::delete(delete_subscription_item).post(update_subscription_item),
            )
            .at(
                "/v1/subscription_items",
                poem::post(create_subscription_item),
            )
            .data(state);
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind fake stripe");
        let addr = acceptor.local_addr()[0]
            .as_socket_addr()
            .copied()
            .expect("socket address");
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
        Self {
            base: format!("http://{addr}/"),
            requests,
            checkouts,
            fail_next,
            held,
            events,
            endpoints,
            catalog,
            lose_next,
            fail_next_of,
            lose_next_of,
        }
    }

    /// Adds `events` to Stripe's event log (what `GET /v1/events` lists).
    pub fn log_events(&self, events: &[Value]) {
        if let Ok(mut log) = self.events.lock() {
            log.extend(events.iter().cloned());
        }
    }

    /// Makes retrieving `customer` stall until [`Self::release`].
    pub fn hold(&self, customer: &str) {
        self.held.send_modify(|held| {
            held.insert(customer.to_owned());
        });
    }

    pub fn release(&self, customer: &str) {
        self.held.send_modify(|held| {
            held.remove(customer);
        });
    }

    pub fn requested(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The subscription items it was asked to create, as [`Self::requested`] lists them.
    pub fn item_adds(&self) -> Vec<String> {
        self.requested()
            .into_iter()
            .filter(|r| r.starts_with("POST /v1/subscription_items"))
            .collect()
    }
}

/// The projections and policies the server runs (each gets a checkpoint when it starts).
pub fn projection_list() -> &'static [Arc<dyn projections::Projection>] {
    static LIST: OnceLock<Vec<Arc<dyn projections::Projection>>> = OnceLock::new();
    LIST.get_or_init(|| {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy_with(sqlx::postgres::PgConnectOptions::new());
        let state = memberledger::api::state::AppState::new(
            pool,
            &memberledger::config::Settings::default(),
        );
        state.projections.list().to_vec()
    })
}
