//! The member portal in a real browser (headless chromium): signing in by code and by magic
//! link, the dashboard, buying, activating, signing out, and the forms' integrity tokens.
//! Each test saves screenshots under `target/screenshots/` for a person to look at.

use serde_json::{json, Value};

use crate::admin_console::member_id;
use crate::browser_support::{app_for_browser, Browser};
use crate::helpers::TestApp;
use crate::license_purchases::{pay_keys, subscribed};
use crate::mail_support::{code_and_token, maildev};
use crate::stripe_support::{FakeStripe, Lifecycle};

pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

#[tokio::test]
async fn a_member_signs_in_with_the_emailed_code_sees_the_dashboard_and_signs_out() {
    let app = app_for_browser(|_| {}).await;
    let email = unique("code");
    app.member(&email).await;
    let browser = Browser::start(&app).await;

    browser.open("/account").await;
    assert_eq!(browser.path().await, "/account/signin?next=account");
    browser.fill("#email", &email).await;
    browser.click("form[action='/account/signin'] button").await;
    assert!(browser.page_text().await.contains("6-digit code"));
    browser.screenshot("portal-code-form").await;

    let message = maildev().await.nth_message_to(&email, 1).await;
    let (code, _) = code_and_token(&message);
    browser.fill("#code", &code).await;
    browser.click("form[action='/account/verify'] button").await;
    assert_eq!(browser.path().await, "/account");
    assert_eq!(browser.text("#account-email").await, email);
    assert_eq!(browser.text("#account-status").await, "Free member");
    browser.screenshot("portal-dashboard-free").await;

    browser
        .click("form[action='/account/signout'] button")
        .await;
    assert_eq!(browser.path().await, "/account/signin?done=signed-out");
    assert!(browser.page_text().await.contains("You are signed out."));
    browser.open("/account").await;
    assert_eq!(
        browser.path().await,
        "/account/signin?next=account",
        "signed out: the dashboard is refused"
    );
    browser.close().await;
}

/// Signs `browser` in as `email` with the code from the newest email.
pub(crate) async fn sign_in(browser: &Browser, email: &str) {
    let before = maildev().await.messages_to(email).await.len();
    browser.open("/account/signin").await;
    browser.fill("#email", email).await;
    browser.click("form[action='/account/signin'] button").await;
    let message = maildev().await.nth_message_to(email, before + 1).await;
    let (code, _) = code_and_token(&message);
    browser.fill("#code", &code).await;
    browser.click("form[action='/account/verify'] button").await;
    assert_eq!(browser.path().await, "/account", "signed in as {email}");
}

#[tokio::test]
async fn the_magic_link_lands_on_a_page_of_ours_and_signs_the_member_in_once() {
    let app = app_for_browser(|_| {}).await;
    let email = unique("link");
    app.member(&email).await;
    let resp = app
        .client
        .post(app.url("/v1/auth/code"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 202);
    let message = maildev().await.nth_message_to(&email, 1).await;
    let text = message["text"].as_str().expect("text");
    let link_at = text
        .find(&app.url("/account/signin?token="))
        .expect("the email links to the portal's sign-in page on PUBLIC_URL");
    let link: String = text[link_at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let browser = Browser::start(&app).await;

    // Opening the link alone signs nobody in (mail scanners open links): a button does.
    browser.client.goto(&link).await.expect("opening the link");
    assert!(browser
        .page_text()
        .await
        .contains("You opened a sign-in link"));
    browser.screenshot("portal-magic-link").await;
    browser.click("#use-link").await;
    assert_eq!(browser.path().await, "/account");
    assert_eq!(browser.text("#account-email").await, email);

    // Used: the same link again is refused, in words.
    browser.client.goto(&link).await.expect("opening the link");
    browser.click("#use-link").await;
    assert!(browser
        .page_text()
        .await
        .contains("This sign-in link is wrong, expired or already used."));
    browser.close().await;
}

/// A browser app on a fake Stripe, with a member subscribed to one site (signed in to the API
/// with `token`) who bought two seat keys, paid.
async fn member_with_site_and_keys() -> (TestApp, FakeStripe, Lifecycle, String, Vec<String>) {
    let stripe = FakeStripe::start(&[]).await;
    let base = stripe.base.clone();
    let app = app_for_browser(move |s| {
        s.stripe.secret_key = Some("sk_test_fake".into());
        s.stripe.api_base = Some(base);
    })
    .await;
    let (l, token, created) = subscribed(&app, "portal").await;
    let resp = app
        .client
        .post(app.url("/v1/me/license-purchases"))
        .bearer_auth(&token)
        .json(&json!({
            "quantity": 2,
            "success_url": app.url("/account"),
            "cancel_url": app.url("/account")
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201);
    let purchase: Value = resp.json().await.expect("json");
    let keys: Vec<String> = purchase["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["key"].as_str().expect("key").to_owned())
        .collect();
    pay_keys(&app, &stripe, &l, created, 0, &purchase, 2).await;
    (app, stripe, l, token, keys)
}

#[tokio::test]
async fn the_dashboard_shows_sites_keys_and_payments_and_a_member_adds_a_site_and_activates_a_key()
{
    let (app, stripe, l, _, keys) = member_with_site_and_keys().await;
    let browser = Browser::start(&app).await;
    sign_in(&browser, &l.email).await;

    // The site bought at checkout, with its key; the seat keys; the payments.
    assert_eq!(browser.text("#account-status").await, "Paid member");
    let site_row = browser
        .text(&format!("#sites tr[data-site='{}']", l.site))
        .await;
    assert!(site_row.contains("Active"), "{site_row}");
    let dashboard: Value = app
        .get(&format!(
            "/v1/members/{}/dashboard",
            member_id(&app, &l.email).await
        ))
        .await
        .json()
        .await
        .expect("json");
    let site_key = dashboard["licenses"]
        .as_array()
        .expect("licenses")
        .iter()
        .find(|k| k["purchase_type"] == "site")
        .expect("a site license")["key"]
        .as_str()
        .expect("key")
        .to_owned();
    assert!(site_row.contains(&site_key), "{site_row}");
    for key in &keys {
        assert!(
            browser
                .has(&format!("#seat-keys tr[data-key='{key}']"))
                .await
        );
    }
    assert!(browser.text("#payments").await.contains("2 license keys"));
    browser.screenshot("portal-dashboard").await;

    // Activate a seat key on a domain, then release it.
    let row = format!("#seat-keys tr[data-key='{}']", keys[0]);
    browser
        .fill(&format!("{row} input[name='domain']"), "App.Example.com")
        .await;
    browser.click(&format!("{row} form.activate button")).await;
    assert_eq!(browser.path().await, "/account?done=key-activated");
    assert_eq!(
        browser.text(&format!("{row} .domain")).await,
        "app.example.com"
    );
    assert_eq!(
        app.validate_license(&keys[0], "app.example.com").await["code"],
        "VALID",
        "the key validates on the domain it was activated on"
    );
    browser.screenshot("portal-key-activated").await;
    browser
        .click(&format!(
            "{row} form[action='/account/keys/release'] button"
        ))
        .await;
    assert_eq!(browser.path().await, "/account?done=key-released");
    assert!(!browser.has(&format!("{row} .domain")).await);

    // A domain that is not one is refused in words.
    browser
        .fill(&format!("{row} input[name='domain']"), "not a domain")
        .await;
    browser.click(&format!("{row} form.activate button")).await;
    let notice = browser.text(".notice.error").await;
    assert!(notice.contains("Some fields need fixing."), "{notice}");
    assert!(!notice.contains("problem"), "{notice}");

    // Add a site: on to (the fake) Stripe Checkout, the site pending on the dashboard.
    let checkouts_before = stripe.checkouts.lock().expect("lock").len();
    browser.open("/account").await;
    browser.fill("#sites-input", "new.example.com").await;
    browser.click("#add-sites button").await;
    assert!(
        browser.path().await.starts_with("/c/pay/cs_test_fake_"),
        "{}",
        browser.path().await
    );
    assert_eq!(browser.text("h1").await, "Fake Stripe Checkout");
    browser.screenshot("portal-checkout").await;
    assert_eq!(
        stripe.checkouts.lock().expect("lock").len(),
        checkouts_before + 1
    );
    browser.open("/account?done=checkout-cancelled").await;
    assert!(browser
        .text("#pending-sites")
        .await
        .contains("new.example.com"));
    assert!(browser
        .page_text()
        .await
        .contains("The payment was cancelled; nothing was bought."));

    // Buy three seat keys: on to Checkout, the keys waiting for payment on the dashboard.
    browser.fill("#quantity", "3").await;
    browser.click("#buy-keys button").await;
    assert!(
        browser.path().await.starts_with("/c/pay/cs_test_fake_"),
        "{}",
        browser.path().await
    );
    assert_eq!(
        stripe.checkouts.lock().expect("lock").len(),
        checkouts_before + 2
    );
    browser.open("/account").await;
    assert!(browser.text("#pending-keys").await.contains("3 keys"));
    // A quantity out of range is refused in words, and nothing reaches Stripe.
    browser
        .client
        .execute(
            "document.querySelector('#quantity').removeAttribute('max')",
            vec![],
        )
        .await
        .expect("lifting the browser's own check");
    browser.fill("#quantity", "500").await;
    browser.click("#buy-keys button").await;
    assert!(browser
        .text(".notice.error")
        .await
        .contains("Give a whole number from 1 to 100."));
    assert_eq!(
        stripe.checkouts.lock().expect("lock").len(),
        checkouts_before + 2
    );
    browser.close().await;
}

#[tokio::test]
async fn a_site_is_removed_only_after_its_confirmation_and_a_form_without_its_integrity_token_is_refused(
) {
    let (app, stripe, l, _, _) = member_with_site_and_keys().await;
    let browser = Browser::start(&app).await;
    sign_in(&browser, &l.email).await;

    // The form's integrity token removed: refused, and nothing reaches Stripe.
    let checkouts_before = stripe.checkouts.lock().expect("lock").len();
    browser.fill("#sites-input", "forged.example.com").await;
    browser
        .client
        .execute(
            "document.querySelector(\"#add-sites input[name='csrf_token']\").remove()",
            vec![],
        )
        .await
        .expect("removing the token");
    browser.click("#add-sites button").await;
    assert_eq!(browser.text("h1").await, "This form has expired");
    browser.screenshot("portal-form-refused").await;
    assert_eq!(
        stripe.checkouts.lock().expect("lock").len(),
        checkouts_before
    );
    // A token from another browser's page is refused too (it belongs to another cookie).
    // A signed-in session is not enough: a post with the member's cookies and a made-up token
    // is refused as well.
    let session = browser
        .client
        .get_named_cookie("ml_session")
        .await
        .expect("the session cookie");
    let csrf = browser
        .client
        .get_named_cookie("ml_csrf")
        .await
        .expect("the integrity cookie");
    let status = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(app.url("/account/sites"))
        .header(
            "cookie",
            format!("ml_session={}; ml_csrf={}", session.value(), csrf.value()),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body("sites=forged.example.com&csrf_token=bm90LWEtdG9rZW4")
        .send()
        .await
        .expect("sent")
        .status();
    assert_eq!(status, 403);
    assert_eq!(
        stripe.checkouts.lock().expect("lock").len(),
        checkouts_before
    );

    // Remove: a confirmation page first; keeping it changes nothing.
    browser.open("/account").await;
    browser
        .click(&format!("#sites tr[data-site='{}'] a", l.site))
        .await;
    assert!(browser
        .path()
        .await
        .starts_with("/account/sites/remove?domain="));
    assert!(browser
        .page_text()
        .await
        .contains(&format!("Remove {}", l.site)));
    browser.screenshot("portal-remove-site").await;
    browser.click("#confirm-remove").await;
    assert_eq!(browser.path().await, "/account?done=site-removed");
    let row = browser
        .text(&format!("#sites tr[data-site='{}']", l.site))
        .await;
    assert!(row.contains("Inactive"), "{row}");
    browser.close().await;
}

#[tokio::test]
async fn a_browser_session_is_not_a_bearer_token_and_its_cookie_is_http_only_and_same_site() {
    let app = app_for_browser(|_| {}).await;
    let email = unique("cookie");
    app.member(&email).await;
    let browser = Browser::start(&app).await;
    sign_in(&browser, &email).await;
    let cookie = browser
        .client
        .get_named_cookie("ml_session")
        .await
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)");
    assert_eq!(cookie.path(), Some("/account"));
    assert_eq!(cookie.secure(), Some(false), "PUBLIC_URL is http here");
    // Its token is not a bearer token for the API.
    let resp = app
        .client
        .get(app.url("/v1/me"))
        .bearer_auth(cookie.value())
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 401);
    // The pages' headers: no inline script, never framed, never cached.
    let resp = app
        .client
        .get(app.url("/account/signin"))
        .send()
        .await
        .expect("sent");
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("a CSP")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    browser.close().await;
}

/// The member site: one page that includes our attribution script and links to the portal's
/// sign-up, on an origin of its own.
async fn member_site(portal: &str) -> String {
    let page = format!(
        "<!doctype html><title>Welcome</title><script src=\"{portal}/assets/member-attribution.js\" defer></script>\
         <h1>Welcome</h1><a id=join href=\"{portal}/account/signup\">Join us</a>"
    );
    let app = poem::Route::new().at(
        "/welcome/",
        poem::get(poem::endpoint::make_sync(move |_| {
            poem::Response::builder()
                .content_type("text/html; charset=utf-8")
                .body(page.clone())
        })),
    );
    let acceptor =
        poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind("127.0.0.1:0"))
            .await
            .expect("bind the member site");
    let addr = poem::listener::Acceptor::local_addr(&acceptor)[0]
        .as_socket_addr()
        .copied()
        .expect("address");
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    format!("http://{addr}")
}

#[tokio::test]
async fn a_visitor_signs_up_from_the_member_site_with_newsletters_and_is_attributed_to_its_page() {
    let app = app_for_browser(|_| {}).await;
    let resp = app
        .client
        .post(app.url("/v1/newsletters"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({ "name": "Weekly", "subscribe_on_signup": false }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201);
    let weekly: Value = resp.json().await.expect("json");
    let site = member_site(&app.base).await;
    let browser = Browser::start(&app).await;

    // On the member site: the script records the page and cleans the campaign from the URL.
    browser
        .client
        .goto(&format!(
            "{site}/welcome/?utm_source=newsletter&utm_medium=email&utm_campaign=winter"
        ))
        .await
        .expect("opening the member site");
    browser.settle().await;
    crate::helpers::eventually("the script to clean the URL", || async {
        browser.path().await == "/welcome/"
    })
    .await;

    // On to the portal's sign-up, history and all.
    browser.click("#join").await;
    assert_eq!(browser.path().await, "/account/signup");
    let history = browser
        .client
        .find(fantoccini::Locator::Css("#url_history"))
        .await
        .expect("the history field")
        .prop("value")
        .await
        .expect("its value")
        .unwrap_or_default();
    assert!(
        history.contains("\"/welcome/\"") && history.contains("winter"),
        "{history}"
    );
    let email = unique("signup");
    browser.fill("#name", "Grace Hopper").await;
    browser.fill("#email", &email).await;
    browser
        .click(&format!("#nl-{}", weekly["id"].as_str().expect("id")))
        .await;
    browser.screenshot("portal-signup").await;
    browser.click("#signup button[type='submit']").await;
    let message = maildev().await.nth_message_to(&email, 1).await;
    let (code, _) = code_and_token(&message);
    browser.fill("#code", &code).await;
    browser.click("form[action='/account/verify'] button").await;
    assert_eq!(browser.path().await, "/account");
    assert_eq!(browser.text("#account-email").await, email);

    app.settle().await;
    let id = member_id(&app, &email).await;
    let member: Value = app.get_member(&id).await.json().await.expect("json");
    assert_eq!(member["name"], "Grace Hopper");
    assert_eq!(member["source"], "signup");
    assert_eq!(member["attribution"]["url"], "/welcome/", "{member}");
    let subscribed: Vec<String> = sqlx::query_scalar(
        "SELECT newsletter_id::text FROM member_newsletters WHERE member_id = $1::uuid",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .expect("newsletters");
    assert_eq!(subscribed, [weekly["id"].as_str().expect("id")]);
    browser.close().await;
}

#[tokio::test]
async fn on_a_phone_a_member_signs_in_with_the_keyboard_alone_and_every_page_is_labelled() {
    let (app, _stripe, l, _, _) = member_with_site_and_keys().await;
    let browser = Browser::start(&app).await;
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("a phone's window");

    // Keyboard only: from the top of the page, Tab reaches the email field, Enter submits.
    browser.open("/account/signin").await;
    browser.assert_accessible().await;
    let before = maildev().await.messages_to(&l.email).await.len();
    let keys = |text: &str| {
        let text = text.to_owned();
        let client = browser.client.clone();
        async move {
            client
                .active_element()
                .await
                .expect("the focused element")
                .send_keys(&text)
                .await
                .expect("typing");
        }
    };
    // The skip link, the email field.
    keys("\u{E004}").await;
    keys("\u{E004}").await;
    keys(&format!("{}\u{E007}", l.email)).await;
    crate::helpers::eventually("the code page", || async {
        browser.page_text().await.contains("6-digit code")
    })
    .await;
    browser.assert_accessible().await;
    let message = maildev().await.nth_message_to(&l.email, before + 1).await;
    let (code, _) = code_and_token(&message);
    // The code field is the first field after the skip link.
    keys("\u{E004}").await;
    keys("\u{E004}").await;
    keys(&format!("{code}\u{E007}")).await;
    crate::helpers::eventually("the dashboard", || async {
        browser.path().await == "/account"
    })
    .await;
    browser.settle().await;

    // The dashboard and the pages behind it fit the phone and label every control.
    browser.assert_accessible().await;
    browser.screenshot("portal-dashboard-phone").await;
    browser
        .open(&format!("/account/sites/remove?domain={}", l.site))
        .await;
    browser.assert_accessible().await;
    browser.open("/account/signup").await;
    browser.assert_accessible().await;
    browser.open("/account/no-such-page").await;
    assert_eq!(browser.text("h1").await, "Page not found");
    assert_eq!(browser.text("main a").await, "Go to your account");
    browser.open("/admin/no-such-page").await;
    assert_eq!(browser.text("h1").await, "Page not found");
    assert_eq!(browser.text("main a").await, "Go to the admin console");
    browser.close().await;
}

#[tokio::test]
async fn a_member_activates_a_key_on_as_many_domains_as_its_policy_allows_and_releases_one() {
    let app = app_for_browser(|_| {}).await;
    let email = unique("machines");
    let member = app.member(&email).await;
    let put = app
        .admin(
            reqwest::Method::PUT,
            "/v1/license-policies/two-sites",
            Some(json!({ "name": "Two sites", "max_machines": 2 })),
        )
        .await;
    assert_eq!(put.status(), 201);
    let granted: Value = app
        .admin(
            reqwest::Method::POST,
            "/v1/licenses",
            Some(json!({ "member_id": member["id"], "policy_id": "two-sites" })),
        )
        .await
        .json()
        .await
        .expect("json");
    let key = granted["key"].as_str().expect("key").to_owned();
    let browser = Browser::start(&app).await;
    sign_in(&browser, &email).await;
    let row = format!("#seat-keys tr[data-key='{key}']");
    for domain in ["one.example.com", "two.example.com"] {
        browser
            .fill(&format!("{row} form.activate input[name='domain']"), domain)
            .await;
        browser.click(&format!("{row} form.activate button")).await;
        assert_eq!(browser.path().await, "/account?done=key-activated");
    }
    let shown = browser.text(&row).await;
    assert!(
        shown.contains("one.example.com") && shown.contains("two.example.com"),
        "{shown}"
    );
    assert!(
        !browser.has(&format!("{row} form.activate")).await,
        "no room for a third domain"
    );
    browser.screenshot("portal-key-two-domains").await;

    // Releasing the first frees its slot only.
    browser
        .click(&format!(
            "{row} form[action='/account/keys/release'] button[aria-label='Release one.example.com']"
        ))
        .await;
    assert_eq!(browser.path().await, "/account?done=key-released");
    let shown = browser.text(&row).await;
    assert!(
        !shown.contains("one.example.com") && shown.contains("two.example.com"),
        "{shown}"
    );
    assert!(browser.has(&format!("{row} form.activate")).await);
    assert_eq!(
        app.validate_license(&key, "two.example.com").await["code"],
        "VALID"
    );
    assert_eq!(
        app.validate_license(&key, "one.example.com").await["code"],
        "SITE_MISMATCH"
    );
    browser.assert_accessible().await;
    browser.close().await;
}

#[tokio::test]
async fn a_member_deletes_their_account_from_the_portal_after_confirming() {
    let app = app_for_browser(|_| {}).await;
    let email = unique("delete");
    let member = app.member(&email).await;
    let browser = Browser::start(&app).await;
    sign_in(&browser, &email).await;

    browser.click("#delete-account-link").await;
    assert_eq!(browser.path().await, "/account/delete");
    assert!(browser.page_text().await.contains("cannot be undone"));
    browser.assert_accessible().await;
    browser.screenshot("portal-delete-account").await;
    // The box must be ticked (the browser enforces `required`; the server does too).
    browser.click("#confirm-delete").await;
    assert_eq!(browser.path().await, "/account/delete");
    assert_eq!(
        app.get_member(member["id"].as_str().expect("id"))
            .await
            .status(),
        200,
        "nothing erased without the box"
    );
    browser.click("#confirm").await;
    browser.click("#confirm-delete").await;
    assert_eq!(browser.path().await, "/account/signin?done=deleted");
    assert!(browser
        .page_text()
        .await
        .contains("Your account is deleted and your personal data erased."));
    assert_eq!(
        app.get_member(member["id"].as_str().expect("id"))
            .await
            .status(),
        404
    );
    // Signed out: the dashboard is refused, and the address is free for a new member.
    browser.open("/account").await;
    assert_eq!(browser.path().await, "/account/signin?next=account");
    let again = app.member(&email).await;
    assert_ne!(again["id"], member["id"]);
    browser.close().await;
}
