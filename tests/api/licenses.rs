//! License activation (`/v1/me/licenses/{key}/activation`) and public validation
//! (`POST /v1/licenses/validate`), with licenses issued through real signed Stripe webhooks.

use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, problem_fields, TestApp};
use crate::stripe_support::{event, Lifecycle};

/// The summaries of the member's newest 100 timeline entries.
pub(crate) async fn timeline_summaries(app: &TestApp, member_id: &str) -> Vec<String> {
    let timeline: Value = app
        .get(&format!("/v1/members/{member_id}/timeline?limit=100"))
        .await
        .json()
        .await
        .expect("json");
    timeline["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["summary"].as_str().expect("a summary").to_owned())
        .collect()
}

impl TestApp {
    pub async fn post_license_validation(&self, body: Value) -> Response {
        self.client
            .post(self.url("/v1/licenses/validate"))
            .json(&body)
            .send()
            .await
            .expect("sent")
    }

    /// Validates `key` for `domain`, asserting 200; returns the body.
    pub async fn validate_license(&self, key: &str, domain: &str) -> Value {
        let resp = self
            .post_license_validation(json!({ "key": key, "domain": domain }))
            .await;
        assert_eq!(resp.status(), 200, "validating {key} for {domain}");
        resp.json().await.expect("json")
    }

    pub async fn activate_license(&self, token: &str, key: &str, domain: &str) -> Response {
        self.client
            .post(self.url(&format!("/v1/me/licenses/{key}/activation")))
            .bearer_auth(token)
            .json(&json!({ "domain": domain }))
            .send()
            .await
            .expect("sent")
    }

    pub async fn release_license(&self, token: &str, key: &str) -> Response {
        self.client
            .delete(self.url(&format!("/v1/me/licenses/{key}/activation")))
            .bearer_auth(token)
            .send()
            .await
            .expect("sent")
    }

    /// The signed-in member's licenses (`GET /v1/me/licenses`).
    pub async fn my_licenses(&self, token: &str) -> Vec<Value> {
        let body: Value = self
            .get_as(token, "/v1/me/licenses")
            .await
            .json()
            .await
            .expect("json");
        body["items"].as_array().expect("items").clone()
    }

    async fn deliver_all(&self, events: &[Value]) {
        for event in events {
            assert_eq!(self.send_webhook(event).await.status(), 200);
        }
        self.drain_stripe().await;
    }
}

fn lifecycle(tag: &str) -> Lifecycle {
    Lifecycle::new(&format!(
        "{tag}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
}

/// The subscription with one quantity item (no site) of `quantity` seats.
fn seats_event(
    l: &Lifecycle,
    name: &str,
    event_type: &str,
    status: &str,
    offset: i64,
    quantity: u32,
) -> Value {
    let mut sub = l.subscription_object(status, offset, false);
    let item = &mut sub["items"]["data"][0];
    item["metadata"] = json!({});
    item["quantity"] = json!(quantity);
    event(
        &format!("evt_{}_{name}", l.tag),
        event_type,
        l.start + offset,
        sub,
    )
}

fn assert_code(body: &Value, code: &str) {
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["valid"], code == "VALID", "{body}");
}

#[tokio::test]
async fn a_site_license_validates_for_its_site_only_and_is_inactive_once_canceled() {
    let app = TestApp::spawn().await;
    let l = lifecycle("sitelic");
    app.deliver_all(&[
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "active", 0),
        l.invoice_paid(&format!("in_{}_1", l.tag), 2),
    ])
    .await;
    let token = app.sign_in(&l.email).await;
    let licenses = app.my_licenses(&token).await;
    assert_eq!(licenses.len(), 1, "{licenses:?}");
    let key = licenses[0]["key"].as_str().expect("key").to_owned();
    assert!(licenses[0]["used_site"].is_null());

    for domain in [
        l.site.clone(),
        l.site.to_uppercase(),
        format!("https://{}/blog/post?x=1", l.site.to_uppercase()),
        format!("http://www.{}:8080/", l.site),
    ] {
        let body = app.validate_license(&key, &domain).await;
        assert_code(&body, "VALID");
        assert_eq!(
            body["license"],
            json!({
                "key": key,
                "status": "active",
                "purchase_type": "site",
                "site": l.site,
                "used_site": null,
                "machines": [],
                "max_machines": 1,
                "policy_id": null,
                "entitlements": [],
                "expires_at": null,
                "grace_ends_at": null,
            }),
            "{domain}"
        );
    }
    // The key as a person might paste it.
    let sloppy = format!("  {}  ", key.to_lowercase());
    assert_code(&app.validate_license(&sloppy, &l.site).await, "VALID");
    for other in [
        "example.com".to_owned(),
        format!("shop.{}", l.site),
        "other.example.org".to_owned(),
    ] {
        let body = app.validate_license(&key, &other).await;
        assert_code(&body, "SITE_MISMATCH");
        assert_eq!(body["license"]["key"], key);
    }

    // A site license is bound to its site already.
    let problem = assert_problem(app.activate_license(&token, &key, &l.site).await, 409).await;
    assert_eq!(problem["type"], "/problems/site-license");

    // Unknown and malformed keys get the same uniform answer.
    for unknown in ["KEY-2222-3333-4444", "not a key", "KEY-0000-0000-0000"] {
        let body = app.validate_license(unknown, &l.site).await;
        assert_code(&body, "NOT_FOUND");
        assert!(body["license"].is_null(), "{body}");
    }
    // Input that breaks the rules is a 422 naming the field.
    for (body, field) in [
        (json!({ "key": key, "domain": "not a domain" }), "domain"),
        (json!({ "key": key, "domain": "localhost" }), "domain"),
        (json!({ "key": key, "domain": "" }), "domain"),
        (
            json!({ "key": key, "domain": format!("{}.com", "a".repeat(250)) }),
            "domain",
        ),
        (json!({ "key": "", "domain": l.site }), "key"),
        (json!({ "key": "K".repeat(65), "domain": l.site }), "key"),
    ] {
        let problem = assert_problem(app.post_license_validation(body).await, 422).await;
        assert_eq!(problem_fields(&problem), [field], "{problem}");
    }
    assert_problem(
        app.post_license_validation(json!({ "key": key })).await,
        400,
    )
    .await;

    app.deliver_all(&[l.subscription_event(
        "deleted",
        "customer.subscription.deleted",
        "canceled",
        300,
    )])
    .await;
    let body = app.validate_license(&key, &l.site).await;
    assert_code(&body, "INACTIVE");
    assert_eq!(body["license"]["status"], "inactive");
}

#[tokio::test]
async fn a_quantity_key_is_activated_by_its_owner_on_one_domain_at_a_time() {
    let app = TestApp::spawn().await;
    let l = lifecycle("qtylic");
    app.deliver_all(&[
        l.checkout_completed(1),
        seats_event(
            &l,
            "created",
            "customer.subscription.created",
            "active",
            2,
            2,
        ),
        l.invoice_paid(&format!("in_{}_1", l.tag), 3),
    ])
    .await;
    let token = app.sign_in(&l.email).await;
    let licenses = app.my_licenses(&token).await;
    assert_eq!(licenses.len(), 2, "{licenses:?}");
    let key_of = |seat: i64| {
        licenses
            .iter()
            .find(|x| x["seat"] == seat)
            .and_then(|x| x["key"].as_str())
            .expect("a key per seat")
            .to_owned()
    };
    let (key, key2) = (key_of(1), key_of(2));

    let body = app.validate_license(&key, "shop.example.com").await;
    assert_code(&body, "NOT_ACTIVATED");
    assert_eq!(body["license"]["purchase_type"], "quantity");
    assert!(body["license"]["site"].is_null() && body["license"]["used_site"].is_null());

    // Someone else's key, an unknown key and a malformed one are the same 404.
    let bob = format!("bob-{}@example.com", l.tag);
    app.member(&bob).await;
    let bob_token = app.sign_in(&bob).await;
    for (who, k) in [
        (&bob_token, key.as_str()),
        (&token, "KEY-2222-3333-4444"),
        (&token, "nonsense"),
    ] {
        let problem =
            assert_problem(app.activate_license(who, k, "shop.example.com").await, 404).await;
        assert_eq!(problem["type"], "/problems/not-found");
        assert_problem(app.release_license(who, k).await, 404).await;
    }
    assert_problem(
        app.client
            .post(app.url(&format!("/v1/me/licenses/{key}/activation")))
            .json(&json!({ "domain": "shop.example.com" }))
            .send()
            .await
            .expect("sent"),
        401,
    )
    .await;
    assert_code(
        &app.validate_license(&key, "shop.example.com").await,
        "NOT_ACTIVATED",
    );

    // The owner activates it (the key in any case, the domain as a URL).
    let resp = app
        .activate_license(
            &token,
            &key.to_lowercase(),
            "https://Shop.Example.com/wp-admin",
        )
        .await;
    assert_eq!(resp.status(), 200);
    let license: Value = resp.json().await.expect("json");
    assert_eq!(license["key"], key);
    assert_eq!(license["status"], "active");
    assert_eq!(license["purchase_type"], "quantity");
    assert_eq!(license["used_site"], "shop.example.com");
    assert!(license["site"].is_null());
    assert!(license["activated_at"].is_string() && license["created_at"].is_string());

    // Read your writes: valid there at once, and only there.
    assert_code(
        &app.validate_license(&key, "shop.example.com").await,
        "VALID",
    );
    assert_code(
        &app.validate_license(&key, "www.shop.example.com").await,
        "VALID",
    );
    let body = app.validate_license(&key, "other.example.com").await;
    assert_code(&body, "SITE_MISMATCH");
    assert_eq!(body["license"]["used_site"], "shop.example.com");
    assert_code(
        &app.validate_license(&key2, "shop.example.com").await,
        "NOT_ACTIVATED",
    );

    // Again on the same domain changes nothing; on another it is refused.
    let resp = app
        .activate_license(&token, &key, "www.shop.example.com")
        .await;
    assert_eq!(resp.status(), 200);
    let again: Value = resp.json().await.expect("json");
    assert_eq!(again["used_site"], "shop.example.com");
    assert_eq!(again["activated_at"], license["activated_at"]);
    let problem = assert_problem(
        app.activate_license(&token, &key, "other.example.com")
            .await,
        409,
    )
    .await;
    assert_eq!(problem["type"], "/problems/license-already-activated");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("shop.example.com")),
        "{problem}"
    );
    let problem = assert_problem(
        app.activate_license(&token, &key, "not a domain").await,
        422,
    )
    .await;
    assert_eq!(problem_fields(&problem), ["domain"]);
    let listed = app.my_licenses(&token).await;
    let mine = listed.iter().find(|x| x["key"] == key).expect("listed");
    assert_eq!(mine["used_site"], "shop.example.com");

    // Released, it is not activated anywhere; releasing again is fine.
    let resp = app.release_license(&token, &key).await;
    assert_eq!(resp.status(), 204);
    assert_code(
        &app.validate_license(&key, "shop.example.com").await,
        "NOT_ACTIVATED",
    );
    assert_eq!(app.release_license(&token, &key).await.status(), 204);

    // ...and can be activated elsewhere.
    let resp = app
        .activate_license(&token, &key, "other.example.com")
        .await;
    assert_eq!(resp.status(), 200);
    assert_code(
        &app.validate_license(&key, "other.example.com").await,
        "VALID",
    );
    assert_code(
        &app.validate_license(&key, "shop.example.com").await,
        "SITE_MISMATCH",
    );

    let member_id = licenses_member(&app, &key).await;
    // The timeline is asynchronous: it shows the changes once its runner applied them.
    app.settle().await;
    let summaries = timeline_summaries(&app, &member_id).await;
    for expected in [
        "License activated on shop.example.com",
        "License released from shop.example.com",
        "License activated on other.example.com",
    ] {
        assert!(
            summaries.iter().any(|s| s == expected),
            "{expected}: {summaries:?}"
        );
    }

    // Canceled: inactive, but the key keeps its domain; an inactive key cannot be activated.
    app.deliver_all(&[seats_event(
        &l,
        "deleted",
        "customer.subscription.deleted",
        "canceled",
        300,
        2,
    )])
    .await;
    let body = app.validate_license(&key, "other.example.com").await;
    assert_code(&body, "INACTIVE");
    assert_eq!(body["license"]["used_site"], "other.example.com");
    let problem = assert_problem(
        app.activate_license(&token, &key2, "third.example.com")
            .await,
        409,
    )
    .await;
    assert_eq!(problem["type"], "/problems/license-inactive");
}

async fn licenses_member(app: &TestApp, key: &str) -> String {
    let id: uuid::Uuid = sqlx::query_scalar("SELECT member_id FROM licenses WHERE key = $1")
        .bind(key)
        .fetch_one(&app.pool)
        .await
        .expect("member");
    id.to_string()
}

#[tokio::test]
async fn validation_is_rate_limited_per_ip_address() {
    let app = TestApp::spawn_custom(|s| {
        s.licenses.validate_per_ip = memberledger::rate_limit::Limit {
            max: 3,
            // Fixed windows aligned to the hour: four requests in a row share one.
            window: std::time::Duration::from_secs(3600),
        };
    })
    .await;
    for _ in 0..3 {
        assert_code(
            &app.validate_license("KEY-2222-3333-4444", "example.com")
                .await,
            "NOT_FOUND",
        );
    }
    let resp = app
        .post_license_validation(json!({ "key": "KEY-2222-3333-4444", "domain": "example.com" }))
        .await;
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let problem = assert_problem(resp, 429).await;
    assert_eq!(problem["type"], "/problems/rate-limited");
}

#[tokio::test]
async fn a_validation_writes_nothing() {
    let app = TestApp::spawn().await;
    let l = lifecycle("readonly");
    app.deliver_all(&[
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "active", 0),
    ])
    .await;
    let token = app.sign_in(&l.email).await;
    let key = app.my_licenses(&token).await[0]["key"]
        .as_str()
        .expect("key")
        .to_owned();
    app.settle().await;
    let counters = || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM rate_limits")
            .fetch_one(&app.pool)
            .await
            .expect("count");
        count
    };
    let before = counters().await;
    // From here on, a row written to any table of ours fails its statement (and with it the
    // request that wrote it). Workers at rest write nothing, so they do not trip it.
    sqlx::query(
        "CREATE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'a write to % during validations', TG_TABLE_NAME; END $$",
    )
    .execute(&app.pool)
    .await
    .expect("function");
    sqlx::query(
        "DO $$ DECLARE t regclass; BEGIN
           FOR t IN SELECT c.oid::regclass FROM pg_class c
                    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
                      AND NOT c.relispartition LOOP
             EXECUTE format('CREATE TRIGGER refuse_writes AFTER INSERT OR UPDATE OR DELETE
                             ON %s FOR EACH ROW EXECUTE FUNCTION refuse_writes()', t);
           END LOOP;
         END $$",
    )
    .execute(&app.pool)
    .await
    .expect("triggers");
    // The trap works: the shared limits' table refuses a counter row.
    let trapped = sqlx::query(
        "INSERT INTO rate_limits (key, window_start, count) VALUES ('probe', now(), 1)",
    )
    .execute(&app.pool)
    .await;
    assert!(trapped.is_err(), "the trigger refuses writes");

    for _ in 0..50 {
        assert_code(&app.validate_license(&key, &l.site).await, "VALID");
    }
    assert_code(
        &app.validate_license("KEY-2222-3333-4444", &l.site).await,
        "NOT_FOUND",
    );
    assert_eq!(
        counters().await,
        before,
        "no counter row (sign-in's are there)"
    );
}

/// Keys for many licenses at once: one a license had before is kept (a retry, or a key a
/// license purchase reserved), the others get new keys, all distinct and said to be new, and
/// asking again returns the same keys, none new.
#[tokio::test]
async fn keys_reserved_together_keep_earlier_keys_and_are_distinct() {
    let url = crate::helpers::fresh_database().await;
    let pool = memberledger::db::pool(&url, 2).await.expect("connecting");
    let earlier = uuid::Uuid::new_v4();
    let earlier_key = memberledger::license_keys::reserve(&pool, earlier)
        .await
        .expect("reserving one key");
    let mut ids: Vec<uuid::Uuid> = (0..50).map(|_| uuid::Uuid::new_v4()).collect();
    ids.push(earlier);
    ids.push(ids[0]);
    let reserved = memberledger::license_keys::reserve_many(&pool, &ids)
        .await
        .expect("reserving keys");
    let keys = &reserved.keys;
    assert_eq!(keys.len(), 51, "one key per distinct license");
    assert_eq!(reserved.new.len(), 50, "the licenses that had no key");
    assert!(
        !reserved.new.contains(&earlier),
        "one that had a key is not new"
    );
    assert_eq!(keys[&earlier], earlier_key, "an earlier key is kept");
    let distinct: std::collections::HashSet<_> = keys.values().collect();
    assert_eq!(distinct.len(), 51, "no two licenses share a key");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM license_keys")
        .fetch_one(&pool)
        .await
        .expect("counting keys");
    assert_eq!(stored, 51);
    let again = memberledger::license_keys::reserve_many(&pool, &ids)
        .await
        .expect("reserving again");
    assert_eq!(&again.keys, keys, "asking again returns the same keys");
    assert!(again.new.is_empty(), "and none is new any more");
    pool.close().await;
}
