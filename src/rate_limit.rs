//! Rate limits. Those that guard money or mail (sign-in codes and their checks) are fixed
//! windows kept in PostgreSQL ([`hit`]), so every server instance counts together. A limit on a
//! public read ([`PerInstance`], license validations) is kept in memory by each instance, so the
//! read writes nothing; a client spread over `n` instances gets up to `n` times the limit.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use sqlx::PgPool;

#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Hits allowed per window.
    pub max: u32,
    pub window: Duration,
}

/// The key of a counter per email address (`<kind>:email:<SHA-256 of the address, hex>`): the
/// counters work per address without storing one.
pub fn address_key(kind: &str, normalized_email: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "{kind}:email:{}",
        hex::encode(Sha256::digest(normalized_email.as_bytes()))
    )
}

/// What follows `:email:` in the keys of `address_key` for `normalized_email`, and in those
/// written before addresses were hashed (the address itself): erasure deletes both.
pub fn address_key_suffixes(normalized_email: &str) -> [String; 2] {
    let hashed = address_key("", normalized_email);
    let suffix = hashed.trim_start_matches(":email:").to_owned();
    [suffix, normalized_email.to_owned()]
}

/// Counts a hit on `key`. `Ok(None)` when allowed; `Ok(Some(wait))` when over the limit, with
/// how long until the window resets.
pub async fn hit(pool: &PgPool, key: &str, limit: Limit) -> Result<Option<Duration>, sqlx::Error> {
    let window_secs = i64::try_from(limit.window.as_secs().max(1)).unwrap_or(i64::MAX);
    // The counter commits without waiting for its WAL flush (`set_config(..., true)` applies
    // to this statement's own transaction): a crash can forget the last fraction of a second
    // of hits, and a limited endpoint (a public read, most of them) does not wait for a disk.
    let (count, window_start): (i32, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO rate_limits (key, window_start, count)
         SELECT $1, to_timestamp(floor(extract(epoch FROM now()) / $2) * $2), 1
         FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
         ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limits.count + 1
         RETURNING count, window_start",
    )
    .bind(key)
    .bind(window_secs)
    .fetch_one(pool)
    .await?;
    if u32::try_from(count).unwrap_or(u32::MAX) <= limit.max {
        return Ok(None);
    }
    let reset = window_start + chrono::Duration::seconds(window_secs);
    let wait = (reset - Utc::now())
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_secs(1));
    Ok(Some(wait))
}

/// Forgets windows that ended over a day ago.
pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM rate_limits WHERE window_start < now() - interval '1 day'")
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// How many checks of a [`PerInstance`] limit between two sweeps of the keys at rest.
const SWEEP_EVERY: u32 = 4096;

/// A limit per key (an IP address) kept in this instance's memory: a GCRA (`governor`) that
/// allows a burst of `max` and gives one hit back every `window / max`, so a steady client gets
/// `max` per window, as the database's fixed windows do, without their burst at a window's edge.
pub struct PerInstance<K: Hash + Eq + Clone> {
    /// `None` when `max` is 0: every hit is refused.
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    window: Duration,
    /// Checks since the last sweep of keys whose state is back to fresh.
    checks: AtomicU32,
}

impl<K: Hash + Eq + Clone> PerInstance<K> {
    pub fn new(limit: Limit) -> Self {
        let window = limit.window.max(Duration::from_secs(1));
        let limiter = NonZeroU32::new(limit.max).and_then(|max| {
            Quota::with_period(window / max.get())
                .map(|quota| DefaultKeyedRateLimiter::keyed(quota.allow_burst(max)))
        });
        Self {
            limiter,
            window,
            checks: AtomicU32::new(0),
        }
    }

    /// Counts a hit on `key`: `None` when allowed, `Some(wait)` (at least a second) when over
    /// the limit, with how long until a hit is allowed again.
    pub fn hit(&self, key: &K) -> Option<Duration> {
        let Some(limiter) = &self.limiter else {
            return Some(self.window);
        };
        // Memory stays bounded by the keys seen recently: a key whose state is back to fresh
        // is dropped (it would be allowed its full burst either way).
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        match limiter.check_key(key) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Some(wait.max(Duration::from_secs(1)))
            }
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.limiter
            .as_ref()
            .map_or(0, DefaultKeyedRateLimiter::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the keys whose state is back to fresh.
    pub fn sweep(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: u32, secs: u64) -> PerInstance<u8> {
        PerInstance::new(Limit {
            max,
            window: Duration::from_secs(secs),
        })
    }

    #[test]
    fn a_key_gets_its_burst_then_waits_for_the_next_hit_to_come_back() {
        let per_hour = limit(3, 3600);
        for _ in 0..3 {
            assert_eq!(per_hour.hit(&1), None);
        }
        let wait = per_hour.hit(&1).expect("limited");
        // One hit comes back every 3600 / 3 s.
        assert!(
            wait > Duration::from_secs(1190) && wait <= Duration::from_secs(1200),
            "{wait:?}"
        );
        assert_eq!(per_hour.hit(&2), None, "another key counts apart");
    }

    #[test]
    fn a_limit_of_zero_refuses_every_hit_for_a_window() {
        assert_eq!(limit(0, 60).hit(&1), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_sweep_forgets_keys_back_to_fresh_and_keeps_limited_ones() {
        let per_minute = limit(2, 60);
        per_minute.hit(&1);
        per_minute.hit(&1);
        assert_eq!(per_minute.len(), 1);
        per_minute.sweep();
        assert_eq!(per_minute.len(), 1, "its next hit is not due yet");
        assert!(per_minute.hit(&1).is_some());

        let generous = limit(1_000_000, 1);
        generous.hit(&1);
        std::thread::sleep(Duration::from_millis(5));
        generous.sweep();
        assert!(generous.is_empty(), "a microsecond replenishes it");
    }
}
