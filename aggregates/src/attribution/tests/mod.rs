//! Tests of signup attribution, by topic; the helpers they share.

use chrono::{DateTime, TimeZone, Utc};

use super::*;

mod contexts;
mod history;
mod last_post;
mod referrers;
mod routes;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
        .single()
        .expect("valid date")
}

const MINUTE: i64 = 60 * 1000;

/// An entry for `path` visited `minutes_ago` before [`now`].
fn visit(path: &str, minutes_ago: i64) -> UrlHistoryEntry {
    UrlHistoryEntry {
        path: path.to_owned(),
        time: now().timestamp_millis() - minutes_ago * MINUTE,
        ..UrlHistoryEntry::default()
    }
}

fn with_referrer(mut entry: UrlHistoryEntry, url: &str) -> UrlHistoryEntry {
    entry.referrer_url = Some(url.to_owned());
    entry
}

fn with_ref(mut entry: UrlHistoryEntry, source: &str) -> UrlHistoryEntry {
    entry.referrer_source = Some(source.to_owned());
    entry
}

fn history(entries: Vec<UrlHistoryEntry>) -> UrlHistory {
    UrlHistory::parse(entries, now()).expect("valid history")
}

fn attribution_of(entries: Vec<UrlHistoryEntry>) -> Attribution {
    let routes = RoutePatterns::new(
        RoutePatterns::DEFAULT_TAG,
        RoutePatterns::DEFAULT_AUTHOR,
        RoutePatterns::DEFAULT_POSTS,
        &["about"],
    )
    .expect("valid");
    attribute(&history(entries), &routes, Some("example.com"))
}
