//! The HTTP edge: checkout rate limits, client addresses behind trusted proxies, CORS,
//! compression, hardening headers, and bounded requests.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

use memberledger::config::Settings;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_problem, TestApp, ADMIN_TOKEN};
use crate::stripe_support::FakeStripe;

/// A day's windows: a run cannot straddle a window's edge and be given a second allowance.
const DAY: Duration = Duration::from_secs(86_400);

/// A server with checkout configured against `stripe`, then `change` applied.
async fn shop(stripe: &FakeStripe, change: impl FnOnce(&mut Settings)) -> TestApp {
    let base = stripe.base.clone();
    TestApp::spawn_custom(move |s| {
        s.stripe.secret_key = Some("sk_test_fake".into());
        s.stripe.api_base = Some(base);
        s.checkout_allowed_origins = vec!["https://shop.test".into()];
        s.edge.checkout_per_ip.window = DAY;
        s.edge.checkout_per_email.window = DAY;
        change(s);
    })
    .await
}

fn seats(email: &str) -> Value {
    json!({
        "email": email,
        "price_id": "price_monthly",
        "success_url": "https://shop.test/thanks",
        "cancel_url": "https://shop.test/cart"
    })
}

impl TestApp {
    /// A checkout, forwarded by a proxy for `forwarded_for` when given.
    async fn checkout_from(&self, email: &str, forwarded_for: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url("/v1/checkout/sessions"))
            .json(&seats(email));
        if let Some(xff) = forwarded_for {
            req = req.header("x-forwarded-for", xff);
        }
        req.send().await.expect("sent")
    }

    /// The addresses the checkout limit has counted, from its rows.
    async fn checkout_ip_keys(&self) -> BTreeSet<String> {
        sqlx::query_scalar("SELECT key FROM rate_limits WHERE key LIKE 'checkout:ip:%'")
            .fetch_all(&self.pool)
            .await
            .expect("rate limit rows")
            .into_iter()
            .collect()
    }
}

fn retry_after(headers: &HeaderMap) -> u64 {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_hundred_and_fifty_checkouts_from_one_address_get_a_429_before_stripe_has_seen_more_than_the_limit(
) {
    let stripe = FakeStripe::start(&[]).await;
    let app = shop(&stripe, |_| {}).await;
    let limit = usize::try_from(Settings::default().edge.checkout_per_ip.max).expect("small");
    assert!(
        limit < 150,
        "the default limit is below the test's requests"
    );

    let mut created = 0;
    let mut refused = 0;
    for i in 0..150 {
        // A new buyer each time, so only the address's limit applies.
        let resp = app
            .checkout_from(&format!("buyer{i}@example.com"), None)
            .await;
        match resp.status().as_u16() {
            201 => {
                assert_eq!(refused, 0, "nothing passes after the first refusal");
                created += 1;
            }
            429 => {
                assert!(retry_after(resp.headers()) >= 1);
                let problem = assert_problem(resp, 429).await;
                assert_eq!(problem["type"], "/problems/rate-limited", "{problem}");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created, limit);
    assert_eq!(refused, 150 - limit);
    assert_eq!(
        stripe.checkouts.lock().expect("lock").len(),
        limit,
        "Stripe saw exactly the allowed checkouts"
    );
}

#[tokio::test]
async fn one_email_gets_its_own_checkout_limit_whatever_its_case() {
    let stripe = FakeStripe::start(&[]).await;
    let app = shop(&stripe, |s| s.edge.checkout_per_email.max = 3).await;
    for email in ["ada@example.com", "ADA@example.com", "Ada@Example.com"] {
        assert_eq!(
            app.checkout_from(email, None).await.status(),
            201,
            "{email}"
        );
    }
    let resp = app.checkout_from("ada@EXAMPLE.com", None).await;
    assert!(retry_after(resp.headers()) >= 1);
    assert_problem(resp, 429).await;
    assert_eq!(
        app.checkout_from("grace@example.com", None).await.status(),
        201,
        "another email has its own count"
    );
    assert_eq!(stripe.checkouts.lock().expect("lock").len(), 4);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_count() {
    let stripe = FakeStripe::start(&[]).await;
    let app = shop(&stripe, |s| {
        s.edge.trusted_proxies.nets = vec!["127.0.0.0/8".parse().expect("cidr")];
        s.edge.checkout_per_ip.max = 2;
    })
    .await;
    for i in 0..2 {
        let resp = app
            .checkout_from(&format!("a{i}@example.com"), Some("203.0.113.1"))
            .await;
        assert_eq!(resp.status(), 201);
    }
    // What the client itself wrote left of the proxy's entry is not its address.
    let spoofing = app
        .checkout_from("a2@example.com", Some("198.51.100.9, 203.0.113.1"))
        .await;
    assert_problem(spoofing, 429).await;
    let other = app
        .checkout_from("b0@example.com", Some("203.0.113.2"))
        .await;
    assert_eq!(
        other.status(),
        201,
        "the second client has a count of its own"
    );
    assert_eq!(
        app.checkout_ip_keys().await,
        BTreeSet::from([
            "checkout:ip:203.0.113.1".to_owned(),
            "checkout:ip:203.0.113.2".to_owned()
        ])
    );
}

#[tokio::test]
async fn a_forwarded_address_from_an_untrusted_peer_is_ignored() {
    let stripe = FakeStripe::start(&[]).await;
    let app = shop(&stripe, |s| {
        s.edge.trusted_proxies.nets = vec!["10.0.0.0/8".parse().expect("cidr")];
        s.edge.checkout_per_ip.max = 2;
    })
    .await;
    for (i, xff) in ["203.0.113.1", "203.0.113.2"].into_iter().enumerate() {
        let resp = app
            .checkout_from(&format!("c{i}@example.com"), Some(xff))
            .await;
        assert_eq!(resp.status(), 201);
    }
    let resp = app
        .checkout_from("c2@example.com", Some("203.0.113.3"))
        .await;
    assert_problem(resp, 429).await;
    assert_eq!(
        app.checkout_ip_keys().await,
        BTreeSet::from(["checkout:ip:127.0.0.1".to_owned()])
    );
}

async fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn cors_answers_an_allowed_origin_on_the_public_endpoints_and_nobody_else() {
    let app = TestApp::spawn_custom(|s| {
        s.edge.cors_allowed_origins = vec!["https://members.test".into()];
    })
    .await;

    let resp = preflight(&app, "/v1/checkout/sessions", "https://members.test").await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(
        header(h, "access-control-allow-origin"),
        Some("https://members.test")
    );
    assert!(header(h, "access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    assert!(header(h, "access-control-allow-headers")
        .is_some_and(|m| m.to_ascii_lowercase().contains("content-type")));
    assert!(header(h, "access-control-max-age").is_some());

    let resp = preflight(&app, "/v1/checkout/sessions", "https://evil.test").await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert!(
        resp.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        resp.headers()
    );

    // A real request: the allowed origin may read the answer, another may not.
    let validate = |origin: &'static str| {
        app.client
            .post(app.url("/v1/licenses/validate"))
            .header("origin", origin)
            .json(&json!({"key": "nope", "domain": "example.com"}))
            .send()
    };
    let allowed = validate("https://members.test").await.expect("sent");
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        header(allowed.headers(), "access-control-allow-origin"),
        Some("https://members.test")
    );
    assert!(allowed
        .headers()
        .get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap_or_default().contains("origin")));
    let other = validate("https://evil.test").await.expect("sent");
    assert_eq!(other.status(), 200, "served as without CORS");
    assert_eq!(header(other.headers(), "access-control-allow-origin"), None);

    // The admin API is not for browsers.
    let admin = app
        .client
        .get(app.url("/v1/members"))
        .bearer_auth(ADMIN_TOKEN)
        .header("origin", "https://members.test")
        .send()
        .await
        .expect("sent");
    assert_eq!(admin.status(), 200);
    assert_eq!(header(admin.headers(), "access-control-allow-origin"), None);
}

#[tokio::test]
async fn without_allowed_origins_no_cors_headers_are_sent() {
    let app = TestApp::spawn().await;
    let resp = preflight(&app, "/v1/auth/code", "https://members.test").await;
    assert_eq!(header(resp.headers(), "access-control-allow-origin"), None);
}

#[tokio::test]
async fn the_spec_is_gzipped_for_a_client_that_accepts_it() {
    let app = TestApp::spawn().await;
    let plain = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("sent");
    assert_eq!(header(plain.headers(), "content-encoding"), None);
    let plain = plain.bytes().await.expect("body");

    let resp = app
        .client
        .get(app.url("/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(resp.headers(), "content-encoding"), Some("gzip"));
    assert!(header(resp.headers(), "vary").is_some_and(|v| v.contains("accept-encoding")));
    let compressed = resp.bytes().await.expect("body");
    assert!(
        compressed.len() * 4 < plain.len(),
        "{} of {} bytes",
        compressed.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut unzipped)
        .expect("valid gzip");
    assert_eq!(unzipped, plain);

    let brotli = app
        .client
        .get(app.url("/openapi.json"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .expect("sent");
    assert_eq!(header(brotli.headers(), "content-encoding"), Some("br"));
}

#[tokio::test]
async fn responses_carry_the_hardening_headers() {
    let app = TestApp::spawn_custom(|s| s.edge.hsts = true).await;
    let members = app.get("/v1/members").await;
    assert_eq!(members.status(), 200);
    let h = members.headers();
    assert_eq!(header(h, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(h, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(h, "cache-control"), Some("no-store"));
    assert!(header(h, "strict-transport-security").is_some_and(|v| v.starts_with("max-age=")));

    // Problems are hardened too.
    let missing = app.get("/v1/members/not-a-uuid").await;
    assert_eq!(
        header(missing.headers(), "x-content-type-options"),
        Some("nosniff")
    );

    // The spec may be cached.
    let spec = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("sent");
    assert_eq!(header(spec.headers(), "cache-control"), None);
    assert_eq!(
        header(spec.headers(), "x-content-type-options"),
        Some("nosniff")
    );

    let plain_http = TestApp::spawn().await;
    let resp = plain_http.get("/v1/members").await;
    assert_eq!(header(resp.headers(), "strict-transport-security"), None);
}

#[tokio::test]
async fn an_over_large_body_gets_a_413_problem_and_a_compressed_one_a_415() {
    let app = TestApp::spawn().await;
    let big = json!({"key": "x".repeat(2 * 1024 * 1024), "domain": "example.com"}).to_string();
    let resp = app
        .client
        .post(app.url("/v1/licenses/validate"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(resp, 413).await;
    assert_eq!(problem["type"], "/problems/payload-too-large");

    // A few KiB that would inflate past the limit are not inflated.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(big.as_bytes()).expect("compressing");
    let small = gz.finish().expect("compressed");
    assert!(small.len() < 64 * 1024);
    let resp = app
        .client
        .post(app.url("/v1/licenses/validate"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(small)
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(resp, 415).await;
    assert_eq!(problem["type"], "/problems/unsupported-content-encoding");
}

#[tokio::test]
async fn over_large_headers_get_a_431_problem() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-padding", "x".repeat(40 * 1024))
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(resp, 431).await;
    assert_eq!(problem["type"], "/problems/headers-too-large");
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_a_408_problem() {
    let app = TestApp::spawn_custom(|s| s.edge.body_timeout = Duration::from_secs(1)).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /v1/licenses/validate HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the head and the problem's type have arrived (or the server closes).
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if n == 0 || text.contains("request-timeout") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("/problems/request-timeout"), "{text}");
}

/// Reads one response from `stream`: its head and a body of its `content-length`; `None` when
/// the server closed first.
async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().expect("a length"))
                })
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return Some(text);
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_at_the_header_deadline_while_keep_alive_goes_on() {
    // The idle timeout alone never cuts a client that sends a byte every second.
    let app = TestApp::spawn_custom(|s| {
        s.edge.idle_timeout = Some(Duration::from_secs(5));
        s.edge.header_timeout = Some(Duration::from_secs(2));
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    let slow = async {
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let (mut read, mut write) = stream.into_split();
        write
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\nx-slow: ")
            .await
            .expect("write");
        let value = b"abcdefghijklmnopqrstuvwxyz0123";
        let dribble = async {
            for byte in value {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if write.write_all(&[*byte]).await.is_err() {
                    return false;
                }
            }
            true
        };
        let closed = async {
            let mut received = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => return received,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::select! {
            received = closed => {
                assert!(received.is_empty(), "cut, not answered: {}", String::from_utf8_lossy(&received));
            }
            sent_all = dribble => {
                panic!("the server still listened after {} bytes of one header (sent: {sent_all})", value.len());
            }
        }
    };

    // Meanwhile a keep-alive client asks on one connection, a second apart, for longer than
    // the header deadline: each request's deadline starts with its own first byte.
    let keep_alive = async {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        for i in 0..4 {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
                .await
                .expect("write");
            let answer = read_response(&mut stream)
                .await
                .unwrap_or_else(|| panic!("request {i} on the kept-alive connection unanswered"));
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
    };
    futures::future::join(slow, keep_alive).await;
}
