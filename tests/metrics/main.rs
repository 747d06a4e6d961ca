//! `GET /metrics`: a scrape after a small workload counts it exactly; the token guards it.
//!
//! A test binary of its own, not a module of `tests/api`: the Prometheus recorder is global to
//! the process, and there every other test's servers would count into the same series while
//! these tests compare counts. The helpers are `tests/api`'s own files.

#[path = "../api/helpers.rs"]
#[allow(
    dead_code,
    reason = "shared with tests/api; this binary uses part of them"
)]
mod helpers;
#[path = "../api/mail_support.rs"]
#[allow(
    dead_code,
    reason = "shared with tests/api; this binary uses part of them"
)]
mod mail_support;
#[path = "../api/stripe_support.rs"]
#[allow(
    dead_code,
    reason = "shared with tests/api; this binary uses part of them"
)]
mod stripe_support;

mod aggregate_cache;
mod conflicts;
mod pool;
mod scrape;

/// The tests of this binary compare counts of one process-wide recorder: one at a time, so
/// that one test's requests never count into another's.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
