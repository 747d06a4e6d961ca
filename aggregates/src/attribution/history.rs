//! The URL history a signup brings: page views as the browser script records them, validated
//! and cut to the last 24 hours, newest first.

use std::cmp::Reverse;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One page view as the browser script records it. Field names are snake_case; the
/// camelCase names of Ghost's script (`referrerSource`, `utmSource`, ...) are accepted too.
/// A missing `path` or `time` deserialises as empty/zero so that [`UrlHistory::parse`]
/// reports it with the entry's index instead of failing the whole body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UrlHistoryEntry {
    /// The visited path, starting with `/` (query string and fragment are ignored).
    #[serde(default)]
    pub path: String,
    /// When it was visited: milliseconds since the Unix epoch.
    #[serde(default)]
    pub time: i64,
    #[serde(default, alias = "referrerSource")]
    pub referrer_source: Option<String>,
    #[serde(default, alias = "referrerMedium")]
    pub referrer_medium: Option<String>,
    #[serde(default, alias = "referrerUrl")]
    pub referrer_url: Option<String>,
    #[serde(default, alias = "utmSource")]
    pub utm_source: Option<String>,
    #[serde(default, alias = "utmMedium")]
    pub utm_medium: Option<String>,
    #[serde(default, alias = "utmCampaign")]
    pub utm_campaign: Option<String>,
    #[serde(default, alias = "utmTerm")]
    pub utm_term: Option<String>,
    #[serde(default, alias = "utmContent")]
    pub utm_content: Option<String>,
}

impl UrlHistoryEntry {
    pub const MAX_PATH_LEN: usize = 2048;
    pub const MAX_URL_LEN: usize = 2048;
    /// For the referrer source and medium and the UTM parameters.
    pub const MAX_TEXT_LEN: usize = 191;
    /// The largest integer a JavaScript number holds exactly (`Number.MAX_SAFE_INTEGER`).
    pub const MAX_TIME: i64 = 9_007_199_254_740_991;

    /// The entry trimmed, blank optional fields as `None`; the problems are pushed to `errors`.
    fn validated(self, index: usize, errors: &mut Vec<HistoryError>) -> Self {
        let field = |name: &str| format!("url_history[{index}].{name}");

        let path = self.path.trim().to_owned();
        if let Err(reason) = check_path(&path) {
            errors.push(HistoryError::new(field("path"), reason));
        }
        if self.time <= 0 || self.time > Self::MAX_TIME {
            errors.push(HistoryError::new(
                field("time"),
                "must be a positive whole number of milliseconds since the Unix epoch",
            ));
        }

        let mut text = |name: &str, value: Option<String>, max: usize| match bounded(value, max) {
            Ok(value) => value,
            Err(reason) => {
                errors.push(HistoryError::new(field(name), reason));
                None
            }
        };
        Self {
            referrer_source: text("referrer_source", self.referrer_source, Self::MAX_TEXT_LEN),
            referrer_medium: text("referrer_medium", self.referrer_medium, Self::MAX_TEXT_LEN),
            referrer_url: text("referrer_url", self.referrer_url, Self::MAX_URL_LEN),
            utm_source: text("utm_source", self.utm_source, Self::MAX_TEXT_LEN),
            utm_medium: text("utm_medium", self.utm_medium, Self::MAX_TEXT_LEN),
            utm_campaign: text("utm_campaign", self.utm_campaign, Self::MAX_TEXT_LEN),
            utm_term: text("utm_term", self.utm_term, Self::MAX_TEXT_LEN),
            utm_content: text("utm_content", self.utm_content, Self::MAX_TEXT_LEN),
            path,
            time: self.time,
        }
    }
}

fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is required".to_owned());
    }
    if !path.starts_with('/') {
        return Err("must start with /".to_owned());
    }
    // `//host/...` and `/\host/...` are read as another site's address by browsers.
    if path.starts_with("//") || path.starts_with("/\\") {
        return Err("must be a path on this site, not start with // or /\\".to_owned());
    }
    if path.chars().count() > UrlHistoryEntry::MAX_PATH_LEN {
        return Err(format!(
            "must be at most {} characters",
            UrlHistoryEntry::MAX_PATH_LEN
        ));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".to_owned());
    }
    Ok(())
}

/// Trims `value`; `None` when blank, an error when longer than `max` characters or when it
/// holds control characters.
fn bounded(value: Option<String>, max: usize) -> Result<Option<String>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = value.trim();
    if value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// Why one field of one history entry was rejected, e.g. field `url_history[2].path`,
/// reason `must start with /`. The reason is meant for an API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct HistoryError {
    pub field: String,
    pub reason: String,
}

impl HistoryError {
    fn new(field: String, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// A validated URL history: entries trimmed, of the last 24 hours (and at most 5 minutes
/// ahead, for clock skew), at most the 15 newest, newest first. Empty is valid (no script
/// on the page, or tracking off): its attribution is "Direct".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UrlHistory(Vec<UrlHistoryEntry>);

impl UrlHistory {
    /// Entries at least this old (before `now`) are dropped.
    pub const MAX_AGE_MS: i64 = 24 * 60 * 60 * 1000;
    /// Entries more than this far after `now` are dropped.
    pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
    /// At most this many (the newest) are kept.
    pub const MAX_ENTRIES: usize = 15;

    /// Validates every entry and reports all problems, each naming the entry by its index in
    /// `entries`. Then drops entries 24 hours old or older, and entries more than 5 minutes
    /// after `now`, sorts newest first (equal times: the later in `entries` first, the
    /// browser script appends) and keeps the 15 newest.
    ///
    /// A caller that would rather not refuse a signup over its analytics can fall back to
    /// `UrlHistory::default()` on error, as Ghost does.
    pub fn parse(
        entries: Vec<UrlHistoryEntry>,
        now: DateTime<Utc>,
    ) -> Result<Self, Vec<HistoryError>> {
        let mut errors = Vec::new();
        let entries: Vec<UrlHistoryEntry> = entries
            .into_iter()
            .enumerate()
            .map(|(index, entry)| entry.validated(index, &mut errors))
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }

        let now = now.timestamp_millis();
        let oldest = now.saturating_sub(Self::MAX_AGE_MS);
        let newest = now.saturating_add(Self::MAX_FUTURE_MS);
        let mut kept: Vec<(usize, UrlHistoryEntry)> = entries
            .into_iter()
            .enumerate()
            .filter(|(_, e)| e.time > oldest && e.time <= newest)
            .collect();
        kept.sort_by_key(|(index, e)| (Reverse(e.time), Reverse(*index)));
        kept.truncate(Self::MAX_ENTRIES);
        Ok(Self(kept.into_iter().map(|(_, e)| e).collect()))
    }

    /// Newest first.
    pub fn entries(&self) -> &[UrlHistoryEntry] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
