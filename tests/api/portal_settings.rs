//! The member portal's settings in a real browser (headless chromium): newsletters, the
//! unsubscribe link of emails (no session), changing the email address by a link sent to the
//! new one, and the billing button on to (the fake) Stripe Billing Portal; plus the API's
//! `POST /v1/me/billing-portal`. Screenshots go to `target/screenshots/portal-*.png`.

use fantoccini::Locator;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::browser_support::{app_for_browser, Browser};
use crate::checkout::app_with_stripe;
use crate::helpers::{assert_problem, problem_fields, TestApp, ADMIN_TOKEN};
use crate::license_purchases::subscribed;
use crate::mail_support::maildev;
use crate::portal::{sign_in, unique};
use crate::stripe_support::FakeStripe;

/// A new active newsletter; returns its id.
async fn newsletter(app: &TestApp, name: &str) -> String {
    let resp = app
        .client
        .post(app.url("/v1/newsletters"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201, "creating newsletter {name}");
    let body: Value = resp.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

/// The newsletters `member` subscribes to, once the read model has caught up.
async fn subscribed_to(app: &TestApp, member: &str) -> Vec<String> {
    app.settle().await;
    let mut ids: Vec<String> = sqlx::query_scalar(
        "SELECT newsletter_id::text FROM member_newsletters WHERE member_id = $1::uuid",
    )
    .bind(member)
    .fetch_all(&app.pool)
    .await
    .expect("member_newsletters");
    ids.sort();
    ids
}

async fn checked(browser: &Browser, newsletter: &str) -> bool {
    browser
        .client
        .find(Locator::Css(&format!("#nl-{newsletter}")))
        .await
        .expect("a checkbox")
        .is_selected()
        .await
        .expect("checked state")
}

#[tokio::test]
async fn a_member_chooses_newsletters_and_they_are_saved() {
    let app = app_for_browser(|_| {}).await;
    let (daily, weekly) = (
        newsletter(&app, "Daily").await,
        newsletter(&app, "Weekly").await,
    );
    let email = unique("letters");
    let member = app.member(&email).await;
    let member_id = member["id"].as_str().expect("id").to_owned();
    let browser = Browser::start(&app).await;
    sign_in(&browser, &email).await;

    browser.click("nav a[href='/account/newsletters']").await;
    assert_eq!(browser.path().await, "/account/newsletters");
    assert!(!checked(&browser, &daily).await && !checked(&browser, &weekly).await);
    browser.click(&format!("label[for='nl-{daily}']")).await;
    browser.screenshot("portal-newsletters").await;
    browser.click("#save-newsletters").await;
    assert_eq!(browser.path().await, "/account?done=newsletters");
    assert!(browser
        .page_text()
        .await
        .contains("Your newsletters are saved."));
    assert_eq!(subscribed_to(&app, &member_id).await, vec![daily.clone()]);

    // Shown as saved, and changed again: Weekly instead of Daily.
    browser.open("/account/newsletters").await;
    assert!(checked(&browser, &daily).await && !checked(&browser, &weekly).await);
    browser.click(&format!("label[for='nl-{daily}']")).await;
    browser.click(&format!("label[for='nl-{weekly}']")).await;
    browser.click("#save-newsletters").await;
    assert_eq!(browser.path().await, "/account?done=newsletters");
    assert_eq!(subscribed_to(&app, &member_id).await, vec![weekly.clone()]);
    // The API sees the same.
    let token = app.sign_in(&email).await;
    let me: Value = app
        .get_as(&token, "/v1/me")
        .await
        .json()
        .await
        .expect("json");
    let subscribed: Vec<&str> = me["newsletters"]
        .as_array()
        .expect("newsletters")
        .iter()
        .filter(|n| n["subscribed"] == true)
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(subscribed, vec![weekly.as_str()]);
    browser.screenshot("portal-newsletters-saved").await;
    browser.close().await;
}

#[tokio::test]
async fn the_unsubscribe_link_works_without_a_session_and_only_with_its_key() {
    let app = app_for_browser(|_| {}).await;
    let (daily, weekly) = (
        newsletter(&app, "Daily").await,
        newsletter(&app, "Weekly").await,
    );
    let email = unique("unsub");
    let member = app.member(&email).await;
    let member_id = member["id"].as_str().expect("id").to_owned();
    let token = app.sign_in(&email).await;
    let resp = app
        .client
        .patch(app.url("/v1/me"))
        .bearer_auth(&token)
        .json(&json!({ "newsletters": [daily, weekly] }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let mut both = vec![daily.clone(), weekly.clone()];
    both.sort();
    assert_eq!(subscribed_to(&app, &member_id).await, both);

    // Whoever sends emails reads the member's link from the admin API.
    let detail: Value = app.get_member(&member_id).await.json().await.expect("json");
    let link = detail["unsubscribe_url"].as_str().expect("unsubscribe_url");
    let prefix = format!("{}/account/unsubscribe?member={member_id}&key=", app.base);
    assert!(link.starts_with(&prefix), "{link}");
    let key = &link[prefix.len()..];
    assert_eq!(key.len(), 64, "{link}");

    // A changed key, or another member's id, opens nothing.
    let mut wrong = key.to_owned();
    wrong.replace_range(0..1, if key.starts_with('0') { "1" } else { "0" });
    let other = Uuid::now_v7();
    for path in [
        format!("/account/unsubscribe?member={member_id}&key={wrong}"),
        format!("/account/unsubscribe?member={other}&key={key}"),
        format!("/account/unsubscribe?member={member_id}"),
    ] {
        let resp = app.client.get(app.url(&path)).send().await.expect("sent");
        assert_eq!(resp.status(), 403, "{path}");
        let body = resp.text().await.expect("text");
        assert!(
            body.contains("This unsubscribe link does not work"),
            "{body}"
        );
    }
    let browser = Browser::start(&app).await;
    browser
        .open(&format!(
            "/account/unsubscribe?member={member_id}&key={wrong}"
        ))
        .await;
    assert!(browser
        .text("#bad-link")
        .await
        .contains("nothing was changed"));
    assert!(!browser.has("form[action='/account/unsubscribe']").await);
    browser.screenshot("portal-unsubscribe-bad-link").await;
    assert_eq!(subscribed_to(&app, &member_id).await, both);

    // The real link, in a browser that never signed in: one newsletter, then all.
    browser.client.goto(link).await.expect("navigating");
    assert_eq!(browser.text("#unsubscribe-email").await, email);
    assert!(browser.has(&format!("li[data-newsletter='{daily}']")).await);
    browser.screenshot("portal-unsubscribe").await;
    browser
        .click(&format!("li[data-newsletter='{daily}'] button"))
        .await;
    assert!(browser.path().await.ends_with("&done=one"));
    assert_eq!(subscribed_to(&app, &member_id).await, vec![weekly.clone()]);
    browser.open(&link[app.base.len()..]).await;
    assert!(!browser.has(&format!("li[data-newsletter='{daily}']")).await);
    browser.click("#unsubscribe-all button").await;
    assert!(browser.path().await.ends_with("&done=all"));
    assert!(browser
        .page_text()
        .await
        .contains("You are unsubscribed from all newsletters."));
    assert!(subscribed_to(&app, &member_id).await.is_empty());
    browser.open(&link[app.base.len()..]).await;
    assert!(browser.has("#no-newsletters").await);
    browser.screenshot("portal-unsubscribed").await;
    browser.close().await;

    // A post with a wrong key changes nothing (with or without the form's integrity token).
    let resp = app
        .client
        .post(app.url("/account/unsubscribe"))
        .form(&[("member", member_id.as_str()), ("key", wrong.as_str())])
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 403);
}

/// The confirmation link in the email to `to` (the `n`th message there).
async fn confirmation_link(to: &str, n: usize) -> String {
    let message = maildev().await.nth_message_to(to, n).await;
    assert_eq!(message["subject"], "Confirm your new email address");
    let text = message["text"].as_str().expect("a text body");
    let at = text.find("http").expect("a link in the email");
    text[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect()
}

#[tokio::test]
async fn the_email_changes_only_when_the_link_sent_to_the_new_address_is_used() {
    let app = app_for_browser(|_| {}).await;
    let (old, new, taken) = (unique("old"), unique("new"), unique("taken"));
    let member = app.member(&old).await;
    let member_id = member["id"].as_str().expect("id").to_owned();
    app.member(&taken).await;
    let browser = Browser::start(&app).await;
    sign_in(&browser, &old).await;

    // An address another member holds: the link arrives, and using it changes nothing.
    browser.click("nav a[href='/account/email']").await;
    assert_eq!(browser.text("#current-email").await, old);
    browser.fill("#new_email", &taken).await;
    browser.click("#change-email button").await;
    let link = confirmation_link(&taken, 1).await;
    browser.client.goto(&link).await.expect("navigating");
    browser.click("#confirm-email").await;
    assert!(
        browser
            .page_text()
            .await
            .contains("Another member already uses this address, so your address was not changed."),
        "{}",
        browser.page_text().await
    );

    browser.open("/account/email").await;
    browser.fill("#new_email", &new).await;
    browser.click("#change-email button").await;
    assert!(browser
        .page_text()
        .await
        .contains(&format!("We sent a link to {new}")));
    browser.screenshot("portal-email-sent").await;
    let link = confirmation_link(&new, 1).await;
    assert!(
        link.starts_with(&format!("{}/account/email/confirm?token=", app.base)),
        "{link}"
    );
    // Nothing has changed yet.
    let detail: Value = app.get_member(&member_id).await.json().await.expect("json");
    assert_eq!(detail["email"], old.as_str());
    browser.open("/account/email").await;
    assert_eq!(browser.text("#current-email").await, old);

    // Opening the link alone changes nothing (mail scanners open links); the button does.
    browser.client.goto(&link).await.expect("navigating");
    browser.screenshot("portal-email-confirm").await;
    let detail: Value = app.get_member(&member_id).await.json().await.expect("json");
    assert_eq!(detail["email"], old.as_str());
    browser.click("#confirm-email").await;
    assert_eq!(browser.path().await, "/account?done=email-changed");
    assert!(browser
        .page_text()
        .await
        .contains("Your email address is changed."));
    app.settle().await;
    let detail: Value = app.get_member(&member_id).await.json().await.expect("json");
    assert_eq!(detail["email"], new.as_str());
    browser.open("/account").await;
    assert_eq!(browser.text("#account-email").await, new);
    browser.screenshot("portal-email-changed").await;

    // The link works once.
    browser.client.goto(&link).await.expect("navigating");
    browser.click("#confirm-email").await;
    assert!(browser
        .page_text()
        .await
        .contains("wrong, expired or already used"));
    browser.close().await;

    // The old address no longer signs in: asking for a code creates none; the new one does.
    let codes = |email: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM login_codes WHERE email = $1")
                .bind(email)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    let before = codes(old.clone()).await;
    assert_eq!(
        app.request_code(json!({ "email": old })).await.status(),
        202
    );
    assert_eq!(
        codes(old.clone()).await,
        before,
        "no code for the old address"
    );
    let token = app.sign_in(&new).await;
    let me: Value = app
        .get_as(&token, "/v1/me")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["id"], member_id.as_str());
    assert_eq!(me["email"], new.as_str());
}

#[tokio::test]
async fn email_change_requests_are_limited_like_sign_in_codes() {
    let app = app_for_browser(|_| {}).await;
    let email = unique("limited");
    app.member(&email).await;
    let browser = Browser::start(&app).await;
    sign_in(&browser, &email).await;
    let target = unique("target");
    // Five an hour per member (as sign-in codes per address), then refused in words.
    for n in 1..=5 {
        browser.open("/account/email").await;
        browser.fill("#new_email", &target).await;
        browser.click("#change-email button").await;
        assert!(
            browser.page_text().await.contains("We sent a link"),
            "request {n}"
        );
    }
    browser.open("/account/email").await;
    browser.fill("#new_email", &target).await;
    browser.click("#change-email button").await;
    assert!(browser.page_text().await.contains("Too many tries."));
    browser.screenshot("portal-email-limited").await;
    browser.close().await;
    assert_eq!(maildev().await.messages_to(&target).await.len(), 5);
    // Only the newest link works: the older ones were replaced.
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM email_change_requests WHERE new_email = $1 AND expires_at > now()",
    )
    .bind(&target)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(live, 1);
}

#[tokio::test]
async fn the_billing_button_opens_the_stripe_billing_portal() {
    let stripe = FakeStripe::start(&[]).await;
    let base = stripe.base.clone();
    let app = app_for_browser(move |s| {
        s.stripe.secret_key = Some("sk_test_fake".into());
        s.stripe.api_base = Some(base);
    })
    .await;
    let (l, _, _) = subscribed(&app, "billing").await;
    let browser = Browser::start(&app).await;
    sign_in(&browser, &l.email).await;
    browser.screenshot("portal-billing-button").await;
    browser
        .click("form[action='/account/billing'] button")
        .await;
    let url = browser.client.current_url().await.expect("url");
    assert_eq!(
        format!(
            "http://{}:{}/",
            url.host_str().unwrap_or_default(),
            url.port().unwrap_or(0)
        ),
        stripe.base,
        "on the fake Stripe: {url}"
    );
    assert!(url.path().starts_with("/p/session/bps_fake_"), "{url}");
    assert!(browser
        .page_text()
        .await
        .contains("Fake Stripe Billing Portal"));
    browser.screenshot("portal-billing-portal").await;
    browser.close().await;
    let asked: Vec<String> = stripe
        .requested()
        .into_iter()
        .filter(|r| r.starts_with("POST /v1/billing_portal/sessions"))
        .collect();
    assert_eq!(
        asked,
        vec![format!(
            "POST /v1/billing_portal/sessions customer={} return_url={}/account?done=billing",
            l.customer, app.base
        )]
    );
}

impl TestApp {
    async fn billing_portal(&self, token: &str, return_url: &str) -> reqwest::Response {
        self.client
            .post(self.url("/v1/me/billing-portal"))
            .bearer_auth(token)
            .json(&json!({ "return_url": return_url }))
            .send()
            .await
            .expect("sent")
    }
}

#[tokio::test]
async fn the_api_opens_a_billing_portal_session_for_a_member_with_a_customer() {
    let stripe = FakeStripe::start(&[]).await;
    let app = app_with_stripe(&stripe).await;
    let (l, token, _) = subscribed(&app, "portalapi").await;

    let resp = app
        .billing_portal(&token, "https://shop.test/account")
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let url = body["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!("{}p/session/bps_fake_", stripe.base)),
        "{url}"
    );
    assert!(stripe.requested().contains(&format!(
        "POST /v1/billing_portal/sessions customer={} return_url=https://shop.test/account",
        l.customer
    )));

    // A return URL off the allowed origins: 422, and Stripe is not asked.
    let asked = stripe.requested().len();
    for bad in ["https://evil.test/account", "not a url"] {
        let problem = assert_problem(app.billing_portal(&token, bad).await, 422).await;
        assert_eq!(problem_fields(&problem), vec!["return_url"], "{problem}");
    }
    assert_eq!(stripe.requested().len(), asked);

    // A member who never paid has no customer: 409.
    let email = unique("nocustomer");
    app.member(&email).await;
    let other = app.sign_in(&email).await;
    let problem = assert_problem(
        app.billing_portal(&other, "https://shop.test/account")
            .await,
        409,
    )
    .await;
    assert_eq!(problem["type"], "/problems/no-stripe-customer");
    assert_eq!(stripe.requested().len(), asked);

    // No session, no portal.
    let resp = app
        .client
        .post(app.url("/v1/me/billing-portal"))
        .json(&json!({ "return_url": "https://shop.test/account" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn without_stripe_the_billing_portal_is_unavailable() {
    let app = TestApp::spawn().await;
    let email = unique("nostripe");
    app.member(&email).await;
    let token = app.sign_in(&email).await;
    let return_url = format!(
        "{}/account",
        memberledger::config::Settings::default().public_url
    );
    let problem = assert_problem(app.billing_portal(&token, &return_url).await, 503).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("Stripe is not configured"),
        "{problem}"
    );
}
