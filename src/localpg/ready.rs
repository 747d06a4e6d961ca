//! Connection URLs, and waiting until the server answers.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

pub(super) fn url_for_port(port: u16, database: &str) -> String {
    let mut db = String::with_capacity(database.len());
    for b in database.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            db.push(char::from(b));
        } else {
            db.push_str(&format!("%{b:02X}"));
        }
    }
    format!("postgres://postgres@127.0.0.1:{port}/{db}")
}

/// Value for `unix_socket_directories`: the data directory when its path is
/// short and shell-safe, else empty (TCP only; `pg_ctl -w` does not need the
/// socket since it watches postmaster.pid).
pub(super) async fn select_one(url: &str) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    conn.close().await?;
    if one != 1 {
        bail!("SELECT 1 returned {one}");
    }
    Ok(())
}

/// Waits until a TCP connection and `SELECT 1` succeed.
pub(super) async fn wait_ready(url: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let err = match tokio::time::timeout(Duration::from_secs(5), select_one(url)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => format!("{err:#}"),
            Err(_) => "connection attempt timed out".to_string(),
        };
        if Instant::now() >= deadline {
            bail!(
                "`SELECT 1` on {url} did not succeed within {}s: {err}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding() {
        assert_eq!(
            url_for_port(5432, "postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(
            url_for_port(1, "a b/c"),
            "postgres://postgres@127.0.0.1:1/a%20b%2Fc"
        );
    }
}
