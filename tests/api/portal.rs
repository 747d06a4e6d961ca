//! The member portal in a real browser (headless chromium): signing in by code and by magic
//! link, the dashboard, buying, activating, signing out, and the forms' integrity tokens.
//! Each test saves screenshots under `target/screenshots/` for a person to look at.

use crate::browser_support::{app_for_browser, Browser};
use crate::mail_support::{code_and_token, maildev};

fn unique(prefix: &str) -> String {
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
