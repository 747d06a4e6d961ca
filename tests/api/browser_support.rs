//! A real browser for the pages' tests: Debian's chromium, headless, driven through
//! chromedriver (WebDriver) by fantoccini. `.ci/run` installs both packages; `CHROMIUM` and
//! `CHROMEDRIVER` name other binaries. Each test gets its own chromedriver and profile.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::{free_port, test_settings, TestApp};

pub struct Browser {
    pub client: Client,
    /// The server the browser talks to.
    pub base: String,
    _driver: tokio::process::Child,
    _profile: tempdir::Profile,
}

mod tempdir {
    /// A fresh, empty Chromium profile directory, removed afterwards.
    pub struct Profile(pub std::path::PathBuf);

    impl Profile {
        pub fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "memberledger-chromium-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&dir).expect("a profile directory");
            Self(dir)
        }
    }

    impl Drop for Profile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn binary(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// A server whose `PUBLIC_URL` is its real address (links in emails and Checkout's return URLs
/// lead back to it), with `change` applied to the test settings.
pub async fn app_for_browser(change: impl FnOnce(&mut memberledger::config::Settings)) -> TestApp {
    let port = free_port();
    let mut settings = test_settings().await;
    settings.bind = format!("127.0.0.1:{port}").parse().expect("address");
    settings.public_url = format!("http://127.0.0.1:{port}");
    settings.auth.link_base = format!("http://127.0.0.1:{port}/account/signin");
    change(&mut settings);
    TestApp::spawn_settings(&crate::helpers::fresh_database().await, settings).await
}

impl Browser {
    /// Headless chromium on a fresh profile, pointed at `app`.
    pub async fn start(app: &TestApp) -> Self {
        let port = free_port();
        let driver = tokio::process::Command::new(binary("CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (Debian's chromium-driver package; .ci/run installs it)");
        let profile = tempdir::Profile::new();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": binary("CHROMIUM", "/usr/bin/chromium"),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1200,1000",
                    format!("--user-data-dir={}", profile.0.display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last_error = String::new();
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Self {
                        client,
                        base: app.base.clone(),
                        _driver: driver,
                        _profile: profile,
                    }
                }
                Err(err) => last_error = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a browser: {last_error}");
    }

    /// Opens `path` on the server.
    pub async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigating");
    }

    /// The path (and query) the browser is on.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no field {css}: {e}"));
        field.clear().await.expect("clearing");
        field.send_keys(text).await.expect("typing");
    }

    /// Sets the value of a `select` or a date input (what a person picks, without typing in the
    /// browser's locale-dependent widget).
    pub async fn set_value(&self, css: &str, value: &str) {
        let script = "const el = document.querySelector(arguments[0]);
            if (!el) { return false; }
            el.value = arguments[1];
            el.dispatchEvent(new Event('change', { bubbles: true }));
            return el.value === arguments[1];";
        let set = self
            .client
            .execute(script, vec![css.into(), value.into()])
            .await
            .expect("script ran");
        assert_eq!(set, serde_json::Value::Bool(true), "{css} took {value:?}");
    }

    /// Clicks the element `css`, then waits for the page that follows, if any: chromedriver
    /// waits for a navigation the click starts, and this waits on for the new document to load
    /// (a click that loads nothing returns once the old document is still there after 500 ms).
    pub async fn click(&self, css: &str) {
        let _ = self
            .client
            .execute("window.__mlBeforeClick = true", vec![])
            .await;
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("nothing to click at {css}: {e}"))
            .click()
            .await
            .expect("clicking");
        let started = tokio::time::Instant::now();
        loop {
            let state = self
                .client
                .execute(
                    "return [document.readyState, window.__mlBeforeClick === true]",
                    vec![],
                )
                .await
                .ok();
            let (ready, same_document) = match state.as_ref().and_then(|v| v.as_array()) {
                Some(v) => (
                    v.first().and_then(|r| r.as_str()) == Some("complete"),
                    v.get(1).and_then(serde_json::Value::as_bool) == Some(true),
                ),
                None => (false, false),
            };
            let waited = started.elapsed();
            if ready && (!same_document || waited > Duration::from_millis(500)) {
                return;
            }
            assert!(
                waited < Duration::from_secs(20),
                "the page after clicking {css} did not load"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the document has loaded.
    pub async fn settle(&self) {
        for _ in 0..200 {
            let ready = self
                .client
                .execute("return document.readyState", vec![])
                .await
                .ok();
            if ready.as_ref().and_then(|v| v.as_str()) == Some("complete") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible text of the element `css`.
    pub async fn text(&self, css: &str) -> String {
        // The element can be missing for a moment (the page is still being replaced by the
        // next one) or replaced (re-rendered) before its text is read; it is then found again.
        let mut missing = None;
        for _ in 0..40 {
            let element = match self.client.find(Locator::Css(css)).await {
                Ok(element) => {
                    missing = None;
                    element
                }
                Err(e) => {
                    missing = Some(e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match element.text().await {
                Ok(text) => return text,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the text of {css}: {e}"),
            }
        }
        match missing {
            Some(e) => panic!("no element {css}: {e}"),
            None => panic!("{css} kept being replaced before its text could be read"),
        }
    }

    /// Whether the page has an element `css`.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("finding")
            .is_empty()
    }

    /// The page's whole visible text.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Saves a screenshot of the whole page (at the window's width) as `target/screenshots/<name>.png`, for a person to look
    /// at.
    pub async fn screenshot(&self, name: &str) {
        // The whole page: the window grows to the document's height first.
        let height = self
            .client
            .execute("return document.documentElement.scrollHeight", vec![])
            .await
            .ok()
            .and_then(|h| h.as_u64())
            .unwrap_or(1000);
        let width = self
            .client
            .execute("return window.outerWidth", vec![])
            .await
            .ok()
            .and_then(|w| w.as_u64())
            .and_then(|w| u32::try_from(w).ok())
            .unwrap_or(1200);
        let height = u32::try_from(height.clamp(600, 4000)).unwrap_or(1000) + 140;
        let _ = self.client.set_window_size(width, height).await;
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("writing the screenshot");
    }

    /// Checks what a machine can check of a page's accessibility: every visible form control
    /// has a label (a `<label for>`, a wrapping label or `aria-label`), every image and chart
    /// has a text alternative, the page has one `h1` and a `main`, and at the window's width
    /// nothing is wider than the screen (readable on a phone without scrolling sideways).
    pub async fn assert_accessible(&self) {
        let problems = self
            .client
            .execute(
                r#"
                const problems = [];
                for (const el of document.querySelectorAll('input, select, textarea, button')) {
                  if (el.type === 'hidden') continue;
                  const labelled = el.getAttribute('aria-label')
                    || (el.id && document.querySelector(`label[for="${el.id}"]`))
                    || el.closest('label')
                    || (el.tagName === 'BUTTON' && el.textContent.trim());
                  if (!labelled) problems.push('unlabelled ' + el.outerHTML.slice(0, 80));
                }
                for (const el of document.querySelectorAll('img, svg')) {
                  if (!el.getAttribute('alt') && !el.getAttribute('aria-label') && !el.querySelector('title'))
                    problems.push('no text alternative ' + el.outerHTML.slice(0, 80));
                }
                if (document.querySelectorAll('h1').length !== 1) problems.push('not one h1');
                if (!document.querySelector('main')) problems.push('no main');
                if (document.documentElement.scrollWidth > window.innerWidth + 1) {
                  const wide = [...document.querySelectorAll('body *')]
                    .filter(el => el.getBoundingClientRect().right > window.innerWidth + 1)
                    .filter(el => !el.parentElement.closest('.scroll'))
                    .map(el => el.outerHTML.slice(0, 60));
                  problems.push('wider than the window (' + document.documentElement.scrollWidth + ' > '
                    + window.innerWidth + '): ' + wide.slice(-3).join(' | '));
                }
                return problems;
                "#,
                vec![],
            )
            .await
            .expect("checking the page");
        let problems: Vec<String> = serde_json::from_value(problems).expect("a list");
        assert!(problems.is_empty(), "{}: {problems:#?}", self.path().await);
    }

    /// Ends the browser session (chromedriver and chromium stop with it).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
