//! The emails members expect (issue #17): a welcome on signup and on the first payment, a
//! payment-failed notice and cancellation confirmations, each with a working unsubscribe link
//! (page, `List-Unsubscribe`, RFC 8058 one-click), read back from the real mail server; and the
//! suppression of an address the mail server refuses for good, lifted by an admin or the member.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::browser_support::{app_for_browser, Browser};
use crate::helpers::{assert_problem, free_port, test_settings, TestApp, ADMIN_TOKEN};
use crate::mail_support::{code_and_token, maildev, member_email_kind};
use crate::portal::unique;
use crate::stripe_support::Lifecycle;

/// The link in `text` that starts with `prefix`.
fn link_in(text: &str, prefix: &str) -> String {
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in {text}"));
    text[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect()
}

/// Checks a member email's unsubscribe link (text, HTML, `List-Unsubscribe`) and that the page
/// it opens works without a session; returns the link.
async fn unsubscribe_link(app: &TestApp, message: &Value) -> String {
    let text = message["text"].as_str().expect("a text body");
    let link = link_in(text, &app.url("/account/unsubscribe?member="));
    assert_eq!(
        message["headers"]["list-unsubscribe"].as_str(),
        Some(format!("<{link}>").as_str()),
        "List-Unsubscribe: {}",
        message["headers"]
    );
    assert_eq!(
        message["headers"]["list-unsubscribe-post"],
        "List-Unsubscribe=One-Click"
    );
    let html = message["html"].as_str().expect("an HTML body");
    assert!(
        html.replace("&#38;", "&")
            .replace("&amp;", "&")
            .contains(&format!("href=\"{link}\"")),
        "{html}"
    );
    assert!(text.contains("Account and billing notices like this one are still sent"));
    // No cookie, no session: the signed link alone opens the page.
    let page = reqwest::Client::new()
        .get(&link)
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    let body = page.text().await.expect("page");
    assert!(body.contains("Unsubscribe"), "{body}");
    link
}

async fn newsletter(app: &TestApp, name: &str) -> String {
    let resp = app
        .client
        .post(app.url("/v1/newsletters"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": name, "subscribe_on_signup": true }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

async fn subscribed_to(app: &TestApp, member_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM member_newsletters WHERE member_id = $1::uuid")
        .bind(member_id)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

/// `invoice.payment_failed` for the lifecycle's customer (attempt `attempt`).
fn payment_failed(l: &Lifecycle, attempt: i64) -> Value {
    let mut failed = l.invoice_paid(&format!("in_{}_failed", l.tag), 10 + attempt);
    failed["type"] = json!("invoice.payment_failed");
    failed["id"] = json!(format!("evt_{}_failed_{attempt}", l.tag));
    failed["data"]["object"]["amount_paid"] = json!(0);
    failed["data"]["object"]["amount_due"] = json!(2000);
    failed["data"]["object"]["attempt_count"] = json!(attempt);
    failed["data"]["object"]["status"] = json!("open");
    failed
}

/// The outbox rows of `member_id`'s member emails: (kind, sent, given up, last error).
async fn outbox(app: &TestApp, member_id: &str) -> Vec<(String, bool, bool, Option<String>)> {
    sqlx::query_as(
        "SELECT kind, sent_at IS NOT NULL, given_up_at IS NOT NULL, last_error FROM outbox_emails
         WHERE member_id = $1::uuid ORDER BY created_at, id",
    )
    .bind(member_id)
    .fetch_all(&app.pool)
    .await
    .expect("outbox rows")
}

#[tokio::test]
async fn welcome_and_payment_failed_emails_arrive_at_the_real_mail_server_with_a_working_unsubscribe_link(
) {
    let app = app_for_browser(|_| {}).await;
    newsletter(&app, "Weekly").await;
    let email = unique("welcome");
    let resp = app
        .request_code(json!({ "email": email, "signup": true, "name": "Ada Lovelace" }))
        .await;
    assert_eq!(resp.status(), 202);
    let (_, token) = code_and_token(&maildev().await.nth_message_to(&email, 1).await);
    let session: Value = app
        .verify(json!({ "token": token }))
        .await
        .json()
        .await
        .expect("json");
    let member_id = session["member"]["id"].as_str().expect("id").to_owned();
    assert_eq!(subscribed_to(&app, &member_id).await, 1);

    let welcome = maildev().await.member_email(&email, "welcome").await;
    assert_eq!(welcome["subject"], "Welcome to memberledger tests");
    let text = welcome["text"].as_str().expect("text");
    assert!(text.starts_with("Hi Ada Lovelace,"), "{text}");
    assert!(text.contains(&app.url("/account")), "{text}");
    let link = unsubscribe_link(&app, &welcome).await;

    // The customer pays by card at Stripe with the signup's address: the same member.
    let mut l = Lifecycle::new(&format!("mm{}", &member_id[..8]));
    l.email = email.clone();
    for event in [
        l.checkout_completed(1),
        l.subscription_event("created", "customer.subscription.created", "incomplete", 0),
        payment_failed(&l, 1),
    ] {
        assert_eq!(app.send_webhook(&event).await.status(), 200);
        app.drain_stripe().await;
    }
    let failed = maildev().await.member_email(&email, "payment_failed").await;
    assert_eq!(
        failed["subject"],
        "Your payment of 20.00 USD to memberledger tests failed"
    );
    let text = failed["text"].as_str().expect("text");
    assert!(text.contains("(attempt 1)"), "{text}");
    assert!(text.contains("update your payment method"), "{text}");
    assert_eq!(
        unsubscribe_link(&app, &failed).await,
        link,
        "one link per member"
    );

    // RFC 8058: the mail client posts `List-Unsubscribe=One-Click` to the link, nothing else.
    let resp = reqwest::Client::new()
        .post(&link)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    assert_eq!(subscribed_to(&app, &member_id).await, 0, "unsubscribed");
    // A changed key unsubscribes nobody.
    let wrong = format!("{}0", &link[..link.len() - 1]);
    let wrong = if wrong == link {
        format!("{}1", &link[..link.len() - 1])
    } else {
        wrong
    };
    let resp = reqwest::Client::new()
        .post(&wrong)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 403);

    // Exactly these, sent, each once; the sign-in code is not a member email.
    app.settle().await;
    assert_eq!(
        outbox(&app, &member_id).await,
        [
            ("welcome".to_owned(), true, false, None),
            ("payment_failed".to_owned(), true, false, None)
        ]
    );
    let kinds: Vec<String> = maildev()
        .await
        .member_emails_to(&email)
        .await
        .iter()
        .filter_map(|m| member_email_kind(m).map(str::to_owned))
        .collect();
    assert_eq!(kinds, ["welcome", "payment_failed"]);
}

#[tokio::test]
async fn a_paying_customer_is_welcomed_on_the_first_payment_only_and_told_of_the_cancellation() {
    let app = app_for_browser(|_| {}).await;
    let l = Lifecycle::new(&format!(
        "mmpaid{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let mut events = l.events();
    // A second paid invoice: no second welcome.
    events.push(l.invoice_paid(&format!("in_{}_2", l.tag), 200));
    for event in &events {
        assert_eq!(app.send_webhook(event).await.status(), 200);
        app.drain_stripe().await;
    }
    app.settle().await;
    let member_id: String = sqlx::query_scalar("SELECT id::text FROM member_list WHERE email = $1")
        .bind(&l.email)
        .fetch_one(&app.pool)
        .await
        .expect("the customer's member");

    let paid = maildev().await.member_email(&l.email, "welcome_paid").await;
    assert_eq!(
        paid["subject"],
        "Welcome to your paid membership of memberledger tests"
    );
    assert!(paid["text"]
        .as_str()
        .expect("text")
        .contains("your first payment of 20.00 USD went through"));
    unsubscribe_link(&app, &paid).await;
    let ended = maildev().await.member_email(&l.email, "cancellation").await;
    assert_eq!(
        ended["subject"],
        "Your memberledger tests subscription has ended"
    );
    unsubscribe_link(&app, &ended).await;

    // A member the Stripe translator created gets no signup welcome; one welcome on payment.
    let kinds: Vec<String> = outbox(&app, &member_id)
        .await
        .into_iter()
        .map(|(kind, sent, given_up, _)| {
            assert!(sent && !given_up, "{kind}");
            kind
        })
        .collect();
    assert_eq!(kinds, ["welcome_paid", "cancellation"]);
}

/// An SMTP server that refuses every recipient for good (`550`), as a mail server answers for
/// an address that does not exist; maildev accepts everything, so this one case needs its own.
/// Returns its port and how many recipients it refused.
async fn refusing_smtp_server() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = refused.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 refusing.test ESMTP\r\n").await;
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-refusing.test\r\n250 8BITMIME\r\n",
                        "RCPT" => {
                            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            b"550 5.1.1 No such user here\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        "HELO" | "MAIL" | "RSET" | "NOOP" => b"250 OK\r\n",
                        _ => b"502 5.5.2 not implemented\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, refused)
}

async fn email_disabled(app: &TestApp, member_id: &str) -> Value {
    let member: Value = app.get_member(member_id).await.json().await.expect("json");
    member["email_disabled"].clone()
}

/// Delivers a Stripe event and waits until it and its consequences are processed.
async fn deliver(app: &TestApp, event: Value) {
    assert_eq!(app.send_webhook(&event).await.status(), 200);
    app.drain_stripe().await;
}

/// A server on `database_url` whose mail goes to the refusing SMTP server on `smtp_port`.
async fn refused_app(database_url: &str, smtp_port: u16) -> TestApp {
    let mut settings = test_settings().await;
    settings.mail.smtp_url = Some(format!("smtp://127.0.0.1:{smtp_port}"));
    TestApp::spawn_settings(database_url, settings).await
}

/// A server on `database_url` with mail to maildev, reachable by a browser at its PUBLIC_URL.
async fn browser_app(database_url: &str) -> TestApp {
    let port = free_port();
    let mut settings = test_settings().await;
    settings.bind = format!("127.0.0.1:{port}").parse().expect("address");
    settings.public_url = format!("http://127.0.0.1:{port}");
    TestApp::spawn_settings(database_url, settings).await
}

async fn wait_disabled(app: &TestApp, member_id: &str) {
    crate::helpers::eventually("the email to be disabled", || async {
        !email_disabled(app, member_id).await.is_null()
    })
    .await;
}

#[tokio::test]
async fn a_permanent_refusal_disables_the_members_email_until_an_admin_or_the_member_enables_it() {
    let (smtp_port, refused) = refusing_smtp_server().await;
    let database_url = crate::helpers::fresh_database().await;
    let app = refused_app(&database_url, smtp_port).await;
    let email = unique("bounce");
    let member = app.member(&email).await;
    let member_id = member["id"].as_str().expect("id").to_owned();
    let mut l = Lifecycle::new(&format!("mmbounce{}", &member_id[..8]));
    l.email = email.clone();
    deliver(&app, l.checkout_completed(1)).await;
    deliver(
        &app,
        l.subscription_event("created", "customer.subscription.created", "incomplete", 0),
    )
    .await;
    deliver(&app, payment_failed(&l, 1)).await;

    wait_disabled(&app, &member_id).await;
    let disabled = email_disabled(&app, &member_id).await;
    assert_eq!(disabled["email"], email.as_str());
    let reason = disabled["reason"].as_str().expect("reason");
    assert!(reason.contains("550"), "{reason}");
    assert!(reason.contains("No such user here"), "{reason}");
    // Given up at once with the refusal, not retried.
    let rows = outbox(&app, &member_id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (kind, sent, given_up, error) = &rows[0];
    assert_eq!(
        (kind.as_str(), *sent, *given_up),
        ("payment_failed", false, true)
    );
    assert!(
        error.as_deref().is_some_and(|e| e.contains("550")),
        "{error:?}"
    );
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM outbox_emails WHERE member_id = $1::uuid")
            .bind(&member_id)
            .fetch_one(&app.pool)
            .await
            .expect("attempts");
    assert_eq!(attempts, 1);
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 1);

    // While disabled, the next notice is not even queued.
    deliver(&app, payment_failed(&l, 2)).await;
    app.settle().await;
    assert_eq!(outbox(&app, &member_id).await.len(), 1);
    let timeline: Value = app
        .get(&format!("/v1/members/{member_id}/timeline"))
        .await
        .json()
        .await
        .expect("json");
    assert!(
        timeline.to_string().contains("MemberEmailDisabled"),
        "{timeline}"
    );

    // An admin enables it: the API says so, the event names the admin, mail is queued again.
    let resp = app
        .client
        .post(app.url(&format!("/v1/members/{member_id}/email/enable")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert!(body["email_disabled"].is_null(), "{body}");
    assert_eq!(body["id"], member_id.as_str());
    let actor: String = sqlx::query_scalar(
        "SELECT metadata->>'actor' FROM events WHERE aggregate_id = $1 AND event_type = 'MemberEmailEnabled'",
    )
    .bind(&member_id)
    .fetch_one(&app.pool)
    .await
    .expect("the MemberEmailEnabled event");
    assert_eq!(actor, "admin");
    let unknown = app
        .client
        .post(app.url(&format!(
            "/v1/members/{}/email/enable",
            uuid::Uuid::now_v7()
        )))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_problem(unknown, 404).await;
    let anonymous = app
        .client
        .post(app.url(&format!("/v1/members/{member_id}/email/enable")))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);

    // The next notice goes out again, is refused again: disabled again.
    deliver(&app, payment_failed(&l, 3)).await;
    wait_disabled(&app, &member_id).await;
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 2);
    app.stop().await;

    // The admin console shows why, and enables it.
    let app = browser_app(&database_url).await;
    let browser = Browser::start(&app).await;
    crate::admin_console::sign_in(&browser).await;
    browser.open(&format!("/admin/members/{member_id}")).await;
    assert!(browser
        .text("#member-email-delivery")
        .await
        .contains("No such user here"));
    browser.click("#enable-member-email button").await;
    assert!(browser
        .page_text()
        .await
        .contains("The member's email is enabled"));
    assert_eq!(browser.text("#member-email-delivery").await, "sent");
    browser.close().await;
    assert!(email_disabled(&app, &member_id).await.is_null());
    app.stop().await;

    // Refused once more: disabled again.
    let app = refused_app(&database_url, smtp_port).await;
    deliver(&app, payment_failed(&l, 4)).await;
    wait_disabled(&app, &member_id).await;
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 3);
    app.stop().await;

    // The member signs in (the code comes through the real mail server: sign-in codes are
    // still sent to a disabled address) and turns emails back on in the portal.
    let app = browser_app(&database_url).await;
    let browser = Browser::start(&app).await;
    crate::portal::sign_in(&browser, &email).await;
    assert!(
        browser.has("#email-disabled-note").await,
        "the dashboard says so"
    );
    browser.click("#email-disabled-note a").await;
    assert_eq!(browser.path().await, "/account/email");
    assert!(browser.has("#email-disabled").await);
    assert!(browser
        .text("#email-disabled-reason")
        .await
        .contains("No such user here"));
    browser.screenshot("portal-email-disabled").await;
    browser.click("#enable-email button").await;
    assert_eq!(browser.path().await, "/account/email?enabled=1");
    assert!(browser.page_text().await.contains("Your email is enabled"));
    assert!(!browser.has("#email-disabled").await);
    browser.open("/account").await;
    assert!(!browser.has("#email-disabled-note").await);
    browser.close().await;
    assert!(email_disabled(&app, &member_id).await.is_null());
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT metadata->>'actor' FROM events WHERE aggregate_id = $1 AND event_type = 'MemberEmailEnabled'
         ORDER BY global_position",
    )
    .bind(&member_id)
    .fetch_all(&app.pool)
    .await
    .expect("events");
    assert_eq!(
        actors,
        [
            "admin".to_owned(),
            "admin".to_owned(),
            format!("member:{member_id}")
        ]
    );
}
