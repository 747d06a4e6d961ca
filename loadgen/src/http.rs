//! The HTTP client and one timed request.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::measure::{truncate, Sample};

pub fn http_client(concurrency: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")
}

pub fn check_loopback(url: &str) -> Result<()> {
    let parsed = url::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
    let host = parsed.host_str().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        bail!("{url}: the load generator only targets loopback");
    }
    Ok(())
}

/// Sends one request, reads the whole answer, checks its status.
pub async fn timed(req: reqwest::RequestBuilder, expect: &[u16]) -> Sample {
    let started = Instant::now();
    let resp = req
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let elapsed = started.elapsed();
    if expect.contains(&status) {
        Ok(elapsed)
    } else {
        Err(format!(
            "HTTP {status}: {}",
            truncate(&String::from_utf8_lossy(&body), 300)
        ))
    }
}
