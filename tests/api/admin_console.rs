//! The admin console in a real browser (headless chromium): signing in with an admin token and
//! out, the overview's charts, members with search, filters and timeline, retrying a failed
//! Stripe event, rebuilding a projection, and the forms' integrity tokens; and over plain HTTP,
//! the redirects without a session and the session cookie's attributes.
//! Each browser test saves screenshots under `target/screenshots/` for a person to look at.

use fantoccini::Locator;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::browser_support::{app_for_browser, Browser};
use crate::helpers::{eventually, TestApp, ADMIN_TOKEN};
use crate::stripe_support::Lifecycle;

fn tag(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Signs the browser in with the admin token; it lands on the overview.
pub(crate) async fn sign_in(browser: &Browser) {
    browser.open("/admin/signin").await;
    browser.fill("#token", ADMIN_TOKEN).await;
    browser.click("form[action='/admin/signin'] button").await;
    assert_eq!(browser.path().await, "/admin");
}

/// A member paying a subscription, delivered by Stripe's webhooks (checkout, then the
/// subscription), processed.
async fn paid_member(app: &TestApp, prefix: &str) -> Lifecycle {
    let l = Lifecycle::new(&tag(prefix));
    for e in [
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "active", 2),
    ] {
        assert_eq!(app.send_webhook(&e).await.status(), 200);
    }
    app.drain_stripe().await;
    l
}

pub(crate) async fn member_id(app: &TestApp, email: &str) -> String {
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM member_list WHERE email = $1")
        .bind(email)
        .fetch_one(&app.pool)
        .await
        .expect("the member is listed");
    id.to_string()
}

async fn attribute(browser: &Browser, css: &str, name: &str) -> String {
    browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
        .attr(name)
        .await
        .expect("reading an attribute")
        .unwrap_or_default()
}

async fn count(browser: &Browser, css: &str) -> usize {
    browser
        .client
        .find_all(Locator::Css(css))
        .await
        .expect("finding")
        .len()
}

#[tokio::test]
async fn a_wrong_token_is_refused_the_right_one_opens_the_overview_and_signing_out_ends_it() {
    let app = app_for_browser(|_| {}).await;
    let browser = Browser::start(&app).await;

    browser.open("/admin").await;
    assert_eq!(browser.path().await, "/admin/signin", "no session: sign in");
    browser.fill("#token", "not-the-admin-token").await;
    browser.click("form[action='/admin/signin'] button").await;
    assert_eq!(browser.path().await, "/admin/signin");
    assert!(
        browser
            .text(".notice.error")
            .await
            .contains("That is not an admin token"),
        "{}",
        browser.page_text().await
    );
    browser.screenshot("admin-signin-refused").await;
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM admin_sessions")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(sessions, 0, "a wrong token opens no session");

    browser.fill("#token", ADMIN_TOKEN).await;
    browser.click("form[action='/admin/signin'] button").await;
    assert_eq!(browser.path().await, "/admin");
    assert_eq!(browser.text("h1").await, "Overview");
    browser.screenshot("admin-overview-empty").await;
    browser.open("/admin/members").await;
    assert_eq!(browser.path().await, "/admin/members");

    browser.click("form[action='/admin/signout'] button").await;
    assert_eq!(browser.path().await, "/admin/signin?done=signed-out");
    assert!(browser.page_text().await.contains("You are signed out"));
    let revoked: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT revoked_at FROM admin_sessions")
            .fetch_one(&app.pool)
            .await
            .expect("the one session");
    assert!(revoked.is_some(), "signing out revokes the session");
    for page in [
        "/admin",
        "/admin/members",
        "/admin/stripe-events",
        "/admin/projections",
    ] {
        browser.open(page).await;
        assert_eq!(browser.path().await, "/admin/signin", "{page} signed out");
    }
    browser.close().await;
}

#[tokio::test]
async fn the_overview_charts_mrr_from_webhooks_and_members_by_status() {
    let app = app_for_browser(|_| {}).await;
    let l = paid_member(&app, "mrr").await;
    app.member(&format!("{}-free1@example.com", l.tag)).await;
    app.member(&format!("{}-free2@example.com", l.tag)).await;
    let (currency, mrr): (String, i64) = sqlx::query_as(
        "SELECT currency, sum(mrr_delta)::bigint FROM members_paid_subscription_events GROUP BY currency",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the subscription's MRR is recorded");
    assert!(mrr > 0, "a paid subscription has MRR");
    let expected = format!("{}.{:02} {}", mrr / 100, mrr % 100, currency.to_uppercase());

    let browser = Browser::start(&app).await;
    sign_in(&browser).await;
    let chart = format!("svg#mrr-{currency}");
    assert!(browser.has(&chart).await, "{}", browser.page_text().await);
    assert_eq!(attribute(&browser, &chart, "data-last").await, expected);
    let title = browser
        .client
        .execute(
            &format!("return document.querySelector('{chart} title').textContent"),
            vec![],
        )
        .await
        .expect("the chart's title");
    assert!(
        title.as_str().unwrap_or_default().contains(&expected),
        "{title}"
    );
    // The line starts on the axis (y 204.0, MRR 0) and rises once the MRR comes in.
    let path = attribute(&browser, &format!("{chart} path.line"), "d").await;
    assert!(path.starts_with("M84.0 204.0 "), "{path}");
    let heights: Vec<f64> = path
        .split(' ')
        .filter_map(|s| s.strip_prefix('V'))
        .map(|y| y.parse().expect("a number"))
        .collect();
    assert_eq!(heights.len(), 1, "one change of MRR: {path}");
    assert!(heights[0] < 204.0 && heights[0] >= 12.0, "{path}");
    assert_eq!(browser.text("#count-members").await, "3");
    assert_eq!(browser.text("#count-paid").await, "1");
    assert!(browser.text("#count-mrr").await.contains(&expected));

    assert!(browser.has("svg#members-by-status").await);
    for (status, n) in [("free", "2"), ("paid", "1"), ("comped", "0")] {
        assert_eq!(
            attribute(
                &browser,
                &format!("svg#members-by-status rect[data-status='{status}']"),
                "data-count"
            )
            .await,
            n,
            "{status}"
        );
    }
    let free_height: f64 = attribute(
        &browser,
        "svg#members-by-status rect[data-status='free']",
        "height",
    )
    .await
    .parse()
    .expect("a number");
    let paid_height: f64 = attribute(
        &browser,
        "svg#members-by-status rect[data-status='paid']",
        "height",
    )
    .await
    .parse()
    .expect("a number");
    assert!(
        (free_height - 2.0 * paid_height).abs() < 0.2,
        "bars as tall as their counts: {free_height} {paid_height}"
    );
    browser.screenshot("admin-overview-charts").await;
    browser
        .client
        .execute(
            "document.getElementById('status-h').scrollIntoView()",
            vec![],
        )
        .await
        .expect("scrolling");
    browser.screenshot("admin-overview-members-by-status").await;

    // On a phone's width nothing runs off the side of the page.
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("a phone's window");
    for page in [
        "/admin",
        "/admin/members",
        "/admin/stripe-events",
        "/admin/projections",
    ] {
        browser.open(page).await;
        let overflow = browser
            .client
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            )
            .await
            .expect("measuring");
        assert!(
            overflow.as_i64().is_some_and(|o| o <= 0),
            "{page} is {overflow} px wider than the screen"
        );
    }
    browser.open("/admin").await;
    browser.screenshot("admin-overview-phone").await;
    browser.close().await;
}

#[tokio::test]
async fn members_are_listed_searched_filtered_and_shown_with_their_timeline() {
    let app = app_for_browser(|_| {}).await;
    let t = tag("list");
    let alice = format!("alice-{t}@example.com");
    let bob = format!("bob-{t}@example.com");
    let carol = format!("carol-{t}@example.com");
    for (email, labels) in [
        (&alice, json!(["vip"])),
        (&bob, json!(["vip", "press"])),
        (&carol, json!([])),
    ] {
        let resp = app
            .create_member(json!({ "email": email, "labels": labels }))
            .await;
        assert_eq!(resp.status(), 201);
    }
    let paid = paid_member(&app, "listpaid").await;

    let browser = Browser::start(&app).await;
    sign_in(&browser).await;
    browser.open("/admin/members").await;
    assert_eq!(count(&browser, "#members tbody tr").await, 4);
    browser.screenshot("admin-members").await;

    browser.fill("#q", &format!("alice-{t}")).await;
    browser.click("form[role='search'] button").await;
    assert_eq!(count(&browser, "#members tbody tr").await, 1);
    assert_eq!(browser.text("#members tbody tr td a").await, alice);
    browser.screenshot("admin-members-search").await;

    browser.fill("#q", "").await;
    browser.fill("#label", "vip").await;
    browser.click("form[role='search'] button").await;
    let listed = browser.text("#members tbody").await;
    assert_eq!(count(&browser, "#members tbody tr").await, 2, "{listed}");
    assert!(listed.contains(&alice) && listed.contains(&bob), "{listed}");

    browser.fill("#label", "").await;
    browser
        .client
        .find(Locator::Css("#status"))
        .await
        .expect("the status filter")
        .select_by_value("paid")
        .await
        .expect("choosing paid");
    browser.click("form[role='search'] button").await;
    assert_eq!(count(&browser, "#members tbody tr").await, 1);
    assert_eq!(browser.text("#members tbody tr td a").await, paid.email);

    browser.click("#members tbody tr td a").await;
    let id = member_id(&app, &paid.email).await;
    assert_eq!(browser.path().await, format!("/admin/members/{id}"));
    assert_eq!(browser.text("#member-email").await, paid.email);
    assert_eq!(browser.text("#member-status").await, "Paid");
    let timeline: Value = app
        .get(&format!("/v1/members/{id}/timeline?limit=50"))
        .await
        .json()
        .await
        .expect("the API's timeline");
    let items = timeline["items"].as_array().expect("items");
    assert!(!items.is_empty(), "{timeline}");
    assert_eq!(count(&browser, "#timeline li").await, items.len());
    let shown = browser.text("#timeline").await;
    for item in items {
        let summary = item["summary"].as_str().expect("a summary");
        assert!(shown.contains(summary), "{summary} in {shown}");
    }
    assert!(browser
        .text("#subscriptions")
        .await
        .contains(&paid.subscription));
    browser.screenshot("admin-member-detail").await;

    // 26 members: a page of 25 and a second of one.
    for n in 0..22 {
        app.member(&format!("more{n}-{t}@example.com")).await;
    }
    browser.open("/admin/members").await;
    assert_eq!(count(&browser, "#members tbody tr").await, 25);
    browser.click("#next-page").await;
    assert_eq!(count(&browser, "#members tbody tr").await, 1);
    assert_eq!(
        browser.text("#members tbody tr td a").await,
        alice,
        "the oldest"
    );
    assert!(!browser.has("#next-page").await, "the last page");

    browser.open("/admin/members/not-a-member").await;
    assert!(browser.page_text().await.contains("Page not found"));
    browser.close().await;
}

#[tokio::test]
async fn a_failed_stripe_event_is_listed_refused_without_its_token_and_retried_until_processed() {
    let app = app_for_browser(|s| {
        // Failures wait an hour for their next try: only the operator's retry gets it done.
        s.stripe.retry_base = std::time::Duration::from_secs(3600);
        s.stripe.max_retry_delay = std::time::Duration::from_secs(3600);
        // A subscription whose checkout (naming its member) has not come fails at once.
        s.stripe.defer_limit = std::time::Duration::ZERO;
    })
    .await;
    let l = Lifecycle::new(&tag("retry"));
    let id = format!("evt_{}_created", l.tag);
    let status = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM stripe_events WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .expect("the event's row")
    };
    app.send_webhook(&l.subscription_event(
        "created",
        "customer.subscription.created",
        "active",
        2,
    ))
    .await;
    eventually("the event to fail", || async { status().await == "failed" }).await;
    app.send_webhook(&l.checkout_completed(1)).await;
    eventually("the checkout to be processed", || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM stripe_events WHERE id = $1")
            .bind(format!("evt_{}_checkout", l.tag))
            .fetch_one(&app.pool)
            .await
            .expect("row")
            == "processed"
    })
    .await;

    let browser = Browser::start(&app).await;
    sign_in(&browser).await;
    browser.open("/admin/stripe-events").await;
    let row = format!("tr[data-event='{id}']");
    assert!(browser.has(&row).await, "{}", browser.page_text().await);
    assert_eq!(attribute(&browser, &row, "data-status").await, "failed");
    let error = browser.text(&format!("{row} td.error")).await;
    assert!(!error.is_empty(), "the error is shown");
    browser.screenshot("admin-stripe-events-failed").await;

    // A form whose integrity token was tampered with is refused, and nothing is done.
    browser
        .client
        .execute(
            "document.querySelectorAll('input[name=csrf_token]').forEach(function (i) { i.value = 'forged'; });",
            vec![],
        )
        .await
        .expect("changing the token");
    browser.click(&format!("{row} button")).await;
    assert!(
        browser.page_text().await.contains("This form has expired"),
        "{}",
        browser.page_text().await
    );
    browser.screenshot("admin-form-without-token").await;
    assert_eq!(status().await, "failed", "a refused form retries nothing");

    browser.open("/admin/stripe-events").await;
    browser.click(&format!("{row} button")).await;
    assert_eq!(browser.path().await, "/admin/stripe-events?done=retried");
    assert!(browser.text(".notice").await.contains("queued"));
    app.drain_stripe().await;
    assert_eq!(status().await, "processed");
    browser.open("/admin/stripe-events").await;
    assert!(!browser.has(&row).await, "no longer needs attention");
    browser.open("/admin/stripe-events?show=processed").await;
    assert_eq!(attribute(&browser, &row, "data-status").await, "processed");
    browser.screenshot("admin-stripe-events-retried").await;
    let member = member_id(&app, &l.email).await;
    let detail: Value = app.get_member(&member).await.json().await.expect("json");
    assert_eq!(detail["status"], "paid");
    browser.close().await;
}

#[tokio::test]
async fn projections_show_their_status_and_a_rebuild_runs_to_completion() {
    let app = app_for_browser(|_| {}).await;
    for n in 0..3 {
        app.member(&format!("{}-{n}@example.com", tag("rebuild")))
            .await;
    }
    app.settle().await;
    let browser = Browser::start(&app).await;
    sign_in(&browser).await;
    browser.open("/admin/projections").await;
    let row = "tr[data-projection='member_list']";
    assert!(browser.has(row).await, "{}", browser.page_text().await);
    assert_eq!(browser.text(&format!("{row} td.status")).await, "Running");
    assert!(!browser.has("tr.stalled").await, "nothing is stalled");
    let listed = count(&browser, "#projections tbody tr").await;
    let api: Value = app.get("/v1/projections").await.json().await.expect("json");
    assert_eq!(
        listed,
        api["items"].as_array().expect("items").len(),
        "every projection and policy"
    );
    browser.screenshot("admin-projections").await;

    browser.click(&format!("{row} form button")).await;
    assert!(
        browser.has(&format!("{row} .progress")).await,
        "the rebuild's progress is shown"
    );
    browser.screenshot("admin-projections-rebuilding").await;
    eventually("the rebuild to finish", || async {
        sqlx::query_scalar::<_, String>(
            "SELECT state FROM projection_rebuilds WHERE name = 'member_list'",
        )
        .fetch_optional(&app.pool)
        .await
        .expect("reading")
        .as_deref()
            == Some("done")
    })
    .await;
    browser.open("/admin/projections").await;
    assert_eq!(
        attribute(&browser, &format!("{row} .progress"), "data-state").await,
        "done"
    );
    let progress = browser.text(&format!("{row} .progress label")).await;
    assert!(progress.starts_with("Rebuilt:"), "{progress}");
    assert_eq!(
        attribute(&browser, &format!("{row} progress"), "value").await,
        "100"
    );
    browser.screenshot("admin-projections-rebuilt").await;
    // The rebuilt list still has every member.
    let listed: Value = app.get("/v1/members").await.json().await.expect("json");
    assert_eq!(listed["items"].as_array().expect("items").len(), 3);

    // An event the timeline cannot apply stalls it, and the page says so with the error.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Member', $1, 1, 'MemberCreated', '1.0', '{\"MemberCreated\": {\"unexpected\": true}}', '{}')",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .execute(&app.pool)
    .await
    .expect("a broken event appended");
    eventually("the timeline to stall", || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT last_error FROM projection_checkpoints WHERE name = 'member_timeline'",
        )
        .fetch_optional(&app.pool)
        .await
        .expect("reading")
        .flatten()
        .is_some()
    })
    .await;
    browser.open("/admin/projections").await;
    let stalled = "tr.stalled[data-projection='member_timeline'] td.status";
    assert!(browser.has(stalled).await, "{}", browser.page_text().await);
    let status = browser.text(stalled).await;
    assert!(
        status.starts_with("Stalled") && status.contains("could not be decoded"),
        "{status}"
    );
    browser
        .client
        .execute(
            "document.querySelector(\"tr[data-projection='member_timeline']\").scrollIntoView()",
            vec![],
        )
        .await
        .expect("scrolling");
    browser.screenshot("admin-projections-stalled").await;
    browser.open("/admin").await;
    let count: u32 = browser
        .text("#count-stalled")
        .await
        .parse()
        .expect("a count");
    assert!(count >= 1, "the overview counts it");
    browser.close().await;
}

/// Cookies a response sets: (name=value, the whole header).
fn set_cookies(resp: &reqwest::Response) -> Vec<(String, String)> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            (
                v.split(';').next().unwrap_or_default().trim().to_owned(),
                v.to_owned(),
            )
        })
        .collect()
}

fn csrf_field(html: &str) -> String {
    let re = regex::Regex::new(r#"name="csrf_token" value="([^"]+)""#).expect("regex");
    re.captures(html)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_owned())
        .expect("the page has an integrity token")
}

#[tokio::test]
async fn without_a_session_pages_redirect_and_the_session_cookie_is_http_only_and_lax() {
    let app = TestApp::spawn_custom(|s| s.auth.verify_per_ip.max = 3).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for page in [
        "/admin",
        "/admin/members",
        "/admin/members/00000000-0000-0000-0000-000000000000",
        "/admin/stripe-events",
        "/admin/projections",
    ] {
        let resp = http.get(app.url(page)).send().await.expect("sent");
        assert_eq!(resp.status(), 303, "{page}");
        assert_eq!(resp.headers()["location"], "/admin/signin", "{page}");
    }
    // A form without its integrity token: refused, as a page.
    let resp = http
        .post(app.url("/admin/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 403);
    assert!(resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html")));
    assert!(set_cookies(&resp)
        .iter()
        .all(|(c, _)| !c.starts_with("ml_admin=")));

    let form = http
        .get(app.url("/admin/signin"))
        .send()
        .await
        .expect("sent");
    assert_eq!(form.status(), 200);
    let csrf_cookie = set_cookies(&form)
        .into_iter()
        .find(|(c, _)| c.starts_with("ml_csrf="))
        .map(|(c, _)| c)
        .expect("the integrity cookie");
    let csrf = csrf_field(&form.text().await.expect("html"));
    let post = |token: &str| {
        http.post(app.url("/admin/signin"))
            .header("cookie", &csrf_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                serde_urlencoded::to_string([("csrf_token", csrf.as_str()), ("token", token)])
                    .expect("form"),
            )
            .send()
    };

    let resp = post(ADMIN_TOKEN).await.expect("sent");
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/admin");
    let (session, header) = set_cookies(&resp)
        .into_iter()
        .find(|(c, _)| c.starts_with("ml_admin="))
        .expect("the session cookie");
    let attributes: Vec<String> = header
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for expected in ["httponly", "samesite=lax", "path=/admin", "max-age=43200"] {
        assert!(
            attributes.iter().any(|a| a == expected),
            "{expected} in {header}"
        );
    }
    assert!(
        !attributes.iter().any(|a| a == "secure"),
        "http: not Secure"
    );
    // Only the token's hash is stored.
    let token = session.trim_start_matches("ml_admin=");
    assert_ne!(token, ADMIN_TOKEN, "the cookie is not the admin token");
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM admin_sessions")
        .fetch_all(&app.pool)
        .await
        .expect("sessions");
    assert_eq!(stored, vec![Sha256::digest(token.as_bytes()).to_vec()]);
    let resp = http
        .get(app.url("/admin"))
        .header("cookie", &session)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(resp.text().await.expect("html").contains("<svg"));

    // Every try counts against the address's limit (3 here): the fourth is refused in words.
    let resp = post("wrong").await.expect("sent");
    assert_eq!(resp.status(), 401);
    let resp = post("wrong again").await.expect("sent");
    assert_eq!(resp.status(), 401);
    let resp = post(ADMIN_TOKEN).await.expect("sent");
    assert_eq!(resp.status(), 429);
    assert!(resp.text().await.expect("html").contains("Too many tries"));

    // Revoking the stored admin tokens (`admin-token --revoke-others`) ends open sessions too.
    memberledger::api::auth::revoke_stored_tokens(&app.pool)
        .await
        .expect("revoking");
    let resp = http
        .get(app.url("/admin"))
        .header("cookie", &session)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 303, "the session ended with the tokens");
}

#[tokio::test]
async fn an_operator_suspends_unsuspends_and_revokes_a_license_from_the_members_page() {
    let app = app_for_browser(|_| {}).await;
    let l = paid_member(&app, "holds").await;
    let id = member_id(&app, &l.email).await;
    let (license, key): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, key FROM licenses WHERE member_id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .expect("the site's license");
    let browser = Browser::start(&app).await;
    sign_in(&browser).await;
    browser.open(&format!("/admin/members/{id}")).await;
    let row = format!("#licenses tr[data-license='{license}']");

    // A suspension needs its reason (the browser asks; the server refuses a blank one).
    browser
        .fill(&format!("{row} form.suspend input[name='reason']"), "  ")
        .await;
    browser.click(&format!("{row} form.suspend button")).await;
    assert!(browser
        .text(".notice.error")
        .await
        .contains("Give a reason in words."));
    browser
        .fill(
            &format!("{row} form.suspend input[name='reason']"),
            "chargeback under review",
        )
        .await;
    browser.click(&format!("{row} form.suspend button")).await;
    assert!(browser
        .page_text()
        .await
        .contains("The license is suspended"));
    assert!(browser
        .text(&format!("{row} .status"))
        .await
        .contains("suspended (chargeback under review)"));
    assert_eq!(
        app.validate_license(&key, &l.site).await["code"],
        "SUSPENDED"
    );
    browser.screenshot("admin-license-suspended").await;

    browser.click(&format!("{row} form.unsuspend button")).await;
    assert!(browser
        .page_text()
        .await
        .contains("The suspension is lifted."));
    assert_eq!(app.validate_license(&key, &l.site).await["code"], "VALID");

    browser
        .fill(&format!("{row} form.revoke input[name='reason']"), "fraud")
        .await;
    browser.click(&format!("{row} form.revoke button")).await;
    assert!(browser
        .text(&format!("{row} .status"))
        .await
        .contains("revoked (fraud)"));
    assert!(
        !browser.has(&format!("{row} form")).await,
        "a revoked license offers no hold"
    );
    assert_eq!(app.validate_license(&key, &l.site).await["code"], "REVOKED");
    browser.assert_accessible().await;
    browser.close().await;
}

#[tokio::test]
async fn an_operator_makes_a_policy_grants_a_key_under_it_and_changes_its_expiry_and_policy() {
    let app = app_for_browser(|_| {}).await;
    let member = app.member("granted@example.com").await;
    let id = member["id"].as_str().expect("id").to_owned();
    let browser = Browser::start(&app).await;
    sign_in(&browser).await;

    // A policy, from the policies page; a refusal says which field.
    browser.open("/admin/policies").await;
    browser.fill("#policy-id", "trial").await;
    browser.fill("#policy-name", "Two-week trial").await;
    browser.set_value("#policy-expiry", "duration").await;
    browser.click("#save-policy button").await;
    assert!(
        browser
            .text(".notice.error")
            .await
            .contains("duration_days: Required when expiry is duration"),
        "{}",
        browser.page_text().await
    );
    browser.fill("#policy-id", "trial").await;
    browser.fill("#policy-name", "Two-week trial").await;
    browser.fill("#policy-machines", "2").await;
    browser.set_value("#policy-expiry", "duration").await;
    browser.fill("#policy-duration", "14").await;
    browser.fill("#policy-entitlements", "updates, sso").await;
    browser.click("#save-policy button").await;
    assert!(browser.page_text().await.contains("Policy trial is saved."));
    let row = browser.text("#policies tr[data-policy='trial']").await;
    assert!(row.contains("14 days after issue"), "{row}");
    assert!(row.contains("sso, updates"), "{row}");
    browser.assert_accessible().await;

    // A key granted under it from the member's page.
    browser.open(&format!("/admin/members/{id}")).await;
    browser.set_value("#grant-policy", "trial").await;
    browser.fill("#grant-note", "conference trial").await;
    browser.click("#grant-key button").await;
    assert!(browser.page_text().await.contains("The key is granted"));
    let (license, key): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, key FROM licenses WHERE member_id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .expect("the granted key");
    let row = format!("#licenses tr[data-license='{license}']");
    assert!(browser.text(&row).await.contains("policy trial"));
    let token = app.sign_in("granted@example.com").await;
    assert_eq!(
        app.activate_license(&token, &key, "app.example.com")
            .await
            .status(),
        200
    );
    assert_eq!(
        app.validate_license(&key, "app.example.com").await["code"],
        "VALID"
    );
    // The operator sees the domain and can free it; the member activates it again.
    browser.open(&format!("/admin/members/{id}")).await;
    assert_eq!(
        browser.text(&format!("{row} .machines .domain")).await,
        "app.example.com"
    );
    browser.click(&format!("{row} form.release button")).await;
    assert!(browser.page_text().await.contains("The domain is released"));
    assert!(!browser.has(&format!("{row} .machines .domain")).await);
    assert_eq!(
        app.activate_license(&token, &key, "app.example.com")
            .await
            .status(),
        200
    );

    // Its expiry moved to a day past: EXPIRED; then to a later day: valid again.
    browser
        .set_value(
            &format!("{row} form.expiry input[name='expires']"),
            "2020-01-31",
        )
        .await;
    browser.click(&format!("{row} form.expiry button")).await;
    assert!(browser.page_text().await.contains("expiry is changed"));
    assert_eq!(
        app.validate_license(&key, "app.example.com").await["code"],
        "EXPIRED"
    );
    browser
        .set_value(
            &format!("{row} form.expiry input[name='expires']"),
            "2099-12-31",
        )
        .await;
    browser.click(&format!("{row} form.expiry button")).await;
    assert!(browser
        .text(&row)
        .await
        .contains("expires 31 Dec 2099 23:59 UTC"));
    assert_eq!(
        app.validate_license(&key, "app.example.com").await["code"],
        "VALID"
    );

    // Out of the policy: no expiry of its own.
    browser
        .set_value(&format!("{row} form.policy select"), "")
        .await;
    browser.click(&format!("{row} form.policy button")).await;
    assert!(browser.page_text().await.contains("policy is changed"));
    let text = browser.text(&row).await;
    assert!(
        !text.contains("policy trial") && !text.contains("expires"),
        "{text}"
    );
    browser.assert_accessible().await;
    browser.screenshot("admin-license-granted").await;
    browser.close().await;
}
