//! Member signup attribution, as Ghost's member-attribution service does it: which post,
//! page, tag, author or URL a member signed up from (the "last post" rule) and where the
//! visitor came from (referrer source and medium, UTM parameters), computed from the URL
//! history the site's browser script sends with a signup. Pure logic: no I/O.
//!
//! - [`UrlHistory::parse`] validates the history (every error, with indexed field names),
//!   keeps the entries of the last 24 hours, at most the 15 newest, newest first.
//! - [`RoutePatterns::resolve`] maps a visited path to a post, page, tag, author or plain URL.
//! - [`attribute`] picks the attributed resource and the referrer; [`for_context`] gives the
//!   fixed attribution of members created without browser history (admin, API, import...).

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// URL history
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------

/// What a visited path shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    Post,
    Page,
    Tag,
    Author,
    Url,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Page => "page",
            Self::Tag => "tag",
            Self::Author => "author",
            Self::Url => "url",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a route pattern or a static page slug was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route pattern {pattern:?} {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl PatternError {
    fn new(pattern: &str, reason: impl Into<String>) -> Self {
        Self {
            pattern: pattern.to_owned(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Slug,
}

/// A parsed pattern such as `/tag/{slug}/`: literal segments and one `{slug}` segment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern(Vec<Segment>);

impl Pattern {
    const PLACEHOLDER: &'static str = "{slug}";

    fn parse(raw: &str) -> Result<Self, PatternError> {
        let err = |reason: &str| Err(PatternError::new(raw, reason));
        let Some(rest) = raw.strip_prefix('/') else {
            return err("must start with /");
        };
        if raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            return err("must not contain spaces, control characters, ? or #");
        }
        match raw.matches(Self::PLACEHOLDER).count() {
            0 => return err("must contain {slug}"),
            1 => {}
            _ => return err("must contain {slug} only once"),
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segments = Vec::new();
        for segment in rest.split('/') {
            if segment.is_empty() {
                return err("must not contain empty segments (//)");
            }
            if segment == Self::PLACEHOLDER {
                segments.push(Segment::Slug);
            } else if segment.contains(['{', '}']) {
                return err("may hold {slug} only as a whole segment, and no other placeholder");
            } else {
                segments.push(Segment::Literal(segment.to_owned()));
            }
        }
        Ok(Self(segments))
    }

    /// The slug when `segments` (of a path) match.
    fn slug<'p>(&self, segments: &[&'p str]) -> Option<&'p str> {
        if segments.len() != self.0.len() {
            return None;
        }
        let mut slug = None;
        for (pattern, segment) in self.0.iter().zip(segments) {
            match pattern {
                Segment::Literal(literal) if literal.as_str() == *segment => {}
                Segment::Slug if !segment.is_empty() => slug = Some(*segment),
                _ => return None,
            }
        }
        slug
    }
}

/// The site's routes, to tell which resource a visited path shows. Patterns are paths
/// with one `{slug}` segment, e.g. `/tag/{slug}/`; matching ignores the query string and
/// fragment and a trailing slash is optional. Checked in this order: static pages
/// (`/{slug}/` with a slug of `static_pages`), tag, author, then the post patterns in
/// order; a path that matches none (`/`, nested paths, ...) is a plain URL.
///
/// Defaults: tag `/tag/{slug}/`, author `/author/{slug}/`, posts `/p/{slug}/` and
/// `/{slug}/`, no static pages (the site knows them: pass them to [`RoutePatterns::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePatterns {
    tag: Pattern,
    author: Pattern,
    posts: Vec<Pattern>,
    static_pages: BTreeSet<String>,
}

impl RoutePatterns {
    pub const DEFAULT_TAG: &'static str = "/tag/{slug}/";
    pub const DEFAULT_AUTHOR: &'static str = "/author/{slug}/";
    pub const DEFAULT_POSTS: &'static [&'static str] = &["/p/{slug}/", "/{slug}/"];

    pub fn new(
        tag: &str,
        author: &str,
        post: &[&str],
        static_pages: &[&str],
    ) -> Result<Self, PatternError> {
        let static_pages = static_pages
            .iter()
            .map(|slug| {
                let trimmed = slug.trim();
                let valid = !trimmed.is_empty()
                    && !trimmed
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || "/?#{}".contains(c));
                if valid {
                    Ok(trimmed.to_owned())
                } else {
                    Err(PatternError::new(
                        slug,
                        "is not a page slug (one path segment, no spaces)",
                    ))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            tag: Pattern::parse(tag)?,
            author: Pattern::parse(author)?,
            posts: post
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<_, _>>()?,
            static_pages,
        })
    }

    /// The resource a visited path shows, with its slug (`None` for a plain URL).
    pub fn resolve(&self, path: &str) -> (ResourceType, Option<String>) {
        let path = strip_query(path.trim());
        let Some(rest) = path.strip_prefix('/') else {
            return (ResourceType::Url, None);
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return (ResourceType::Url, None);
        }
        let segments: Vec<&str> = rest.split('/').collect();
        if let [slug] = segments.as_slice() {
            if self.static_pages.contains(*slug) {
                return (ResourceType::Page, Some((*slug).to_owned()));
            }
        }
        let candidates = [
            (&self.tag, ResourceType::Tag),
            (&self.author, ResourceType::Author),
        ]
        .into_iter()
        .chain(self.posts.iter().map(|p| (p, ResourceType::Post)));
        for (pattern, kind) in candidates {
            if let Some(slug) = pattern.slug(&segments) {
                return (kind, Some(slug.to_owned()));
            }
        }
        (ResourceType::Url, None)
    }
}

impl Default for RoutePatterns {
    fn default() -> Self {
        let pattern = |raw: &str| match Pattern::parse(raw) {
            Ok(pattern) => pattern,
            Err(e) => unreachable!("default route pattern is valid: {e}"),
        };
        Self {
            tag: pattern(Self::DEFAULT_TAG),
            author: pattern(Self::DEFAULT_AUTHOR),
            posts: Self::DEFAULT_POSTS.iter().map(|p| pattern(p)).collect(),
            static_pages: BTreeSet::new(),
        }
    }
}

/// `path` without its query string and fragment.
fn strip_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

// ---------------------------------------------------------------------------------------
// Known referrers
// ---------------------------------------------------------------------------------------

/// A referrer we name: a visit from one of `domains`, or a `?ref=`/`utm_source` value equal
/// to the name, one of `aliases` or one of the domains, is reported as `name`/`medium`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownSource {
    pub name: &'static str,
    pub medium: &'static str,
    /// `example.com` matches it and its subdomains; `google.*` matches the label under any
    /// top-level domain (`google.com`, `google.de`, `google.co.uk`), without subdomains.
    /// Hosts are compared in lower case without a leading `www.`, `m.` or `l.`; when several
    /// domains match, the longest wins (so `mail.google.com` is Gmail, not Google).
    pub domains: &'static [&'static str],
    /// Other names for it as a `ref`/`utm_source` value. Names compare ignoring case,
    /// spaces, `-` and `_`.
    pub aliases: &'static [&'static str],
}

pub const SEARCH: &str = "search";
pub const SOCIAL: &str = "social";
pub const EMAIL: &str = "email";

const fn known(
    name: &'static str,
    medium: &'static str,
    domains: &'static [&'static str],
    aliases: &'static [&'static str],
) -> KnownSource {
    KnownSource {
        name,
        medium,
        domains,
        aliases,
    }
}

/// The referrers we name. Extend freely; order does not matter.
pub const KNOWN_SOURCES: &[KnownSource] = &[
    // Search engines
    known(
        "Google",
        SEARCH,
        &["google.*", "com.google.android.googlequicksearchbox"],
        &[],
    ),
    known("Bing", SEARCH, &["bing.com"], &[]),
    known("DuckDuckGo", SEARCH, &["duckduckgo.com"], &["ddg"]),
    known("Yahoo", SEARCH, &["search.yahoo.com"], &[]),
    known("Yandex", SEARCH, &["yandex.*", "ya.ru"], &[]),
    known("Ecosia", SEARCH, &["ecosia.org"], &[]),
    known("Baidu", SEARCH, &["baidu.com"], &[]),
    // Social
    known("Twitter", SOCIAL, &["twitter.com", "t.co", "x.com"], &["x"]),
    known(
        "Facebook",
        SOCIAL,
        &["facebook.com", "fb.com", "fb.me"],
        &["fb"],
    ),
    known("LinkedIn", SOCIAL, &["linkedin.com", "lnkd.in"], &[]),
    known("Reddit", SOCIAL, &["reddit.com"], &[]),
    known("Hacker News", SOCIAL, &["news.ycombinator.com"], &["hn"]),
    known("Instagram", SOCIAL, &["instagram.com"], &[]),
    known("YouTube", SOCIAL, &["youtube.com", "youtu.be"], &[]),
    known("Mastodon", SOCIAL, &["mastodon.social"], &[]),
    known("Bluesky", SOCIAL, &["bsky.app"], &["bsky"]),
    known("Threads", SOCIAL, &["threads.net", "threads.com"], &[]),
    // Email clients
    known(
        "Gmail",
        EMAIL,
        &["mail.google.com", "com.google.android.gm"],
        &[],
    ),
    known("Outlook", EMAIL, &["outlook.live.com"], &[]),
    known("Yahoo Mail", EMAIL, &["mail.yahoo.com"], &[]),
];

/// Pages a visitor passes through to pay: a visit coming back from one says nothing about
/// where the member came from, so such an entry is skipped (domain and its subdomains).
pub const PAYMENT_DOMAINS: &[&str] = &[
    "checkout.stripe.com",
    "billing.stripe.com",
    "buy.stripe.com",
    "invoice.stripe.com",
    "paypal.com",
];

fn domain_matches(host: &str, domain: &str) -> bool {
    if let Some(label) = domain.strip_suffix(".*") {
        let Some(tld) = host
            .strip_prefix(label)
            .and_then(|rest| rest.strip_prefix('.'))
        else {
            return false;
        };
        // `de`, `com`, or a country's second level such as `co.uk`, `com.au`
        return match tld.split('.').collect::<Vec<_>>().as_slice() {
            [top] => !top.is_empty(),
            [second, top] => (2..=3).contains(&second.len()) && !top.is_empty(),
            _ => false,
        };
    }
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.ends_with('.'))
}

/// `host` without a leading `www.`, `m.` or `l.` (while something with a dot is left).
fn bare_host(host: &str) -> &str {
    let mut host = host;
    while let Some(rest) = ["www.", "m.", "l."]
        .iter()
        .find_map(|prefix| host.strip_prefix(prefix))
        .filter(|rest| rest.contains('.'))
    {
        host = rest;
    }
    host
}

fn known_by_host(host: &str) -> Option<&'static KnownSource> {
    let host = bare_host(host);
    KNOWN_SOURCES
        .iter()
        .flat_map(|source| source.domains.iter().map(move |d| (source, *d)))
        .filter(|(_, domain)| domain_matches(host, domain))
        .max_by_key(|(_, domain)| domain.len())
        .map(|(source, _)| source)
}

fn name_key(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// A `ref`/`utm_source` value as a known source: by name or alias, else as a domain.
fn known_by_name(value: &str) -> Option<&'static KnownSource> {
    let key = name_key(value);
    KNOWN_SOURCES
        .iter()
        .find(|s| name_key(s.name) == key || s.aliases.iter().any(|a| name_key(a) == key))
        .or_else(|| {
            value
                .contains('.')
                .then(|| ParsedUrl::parse(value, false))
                .flatten()
                .and_then(|url| known_by_host(&url.host))
        })
}

/// Ghost tags its newsletters' links `?ref=<newsletter-slug>-newsletter`.
fn is_newsletter(value: &str) -> bool {
    value.to_lowercase().ends_with("newsletter")
}

/// A `ref`/`utm_source` value as (source, medium) when we know it.
fn classify_name(value: &str) -> Option<(String, Option<String>)> {
    if is_newsletter(value) {
        return Some((value.replace('-', " "), Some(EMAIL.to_owned())));
    }
    known_by_name(value).map(|s| (s.name.to_owned(), Some(s.medium.to_owned())))
}

/// The parts of a URL attribution needs, parsed by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParsedUrl {
    /// Lower case, without port, user info or trailing dot.
    host: String,
    /// The URL without user info, query string and fragment (they may hold secrets).
    cleaned: String,
}

impl ParsedUrl {
    /// `scheme://host/path`, `//host/path` or (when it has a dot, or `single_label`) a bare
    /// `host/path`. `None` when there is no plausible host.
    fn parse(raw: &str, single_label: bool) -> Option<Self> {
        let raw = raw.trim();
        let (scheme, rest) = match raw.split_once("://") {
            Some((scheme, rest)) if is_scheme(scheme) => (Some(scheme.to_lowercase()), rest),
            _ => (None, raw.strip_prefix("//").unwrap_or(raw)),
        };
        let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = strip_query(path);
        let authority = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port))
                if !host.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (host, port)
            }
            _ => (authority, ""),
        };
        let host = host.trim_end_matches('.').to_lowercase();
        if !is_host(&host) || (scheme.is_none() && !single_label && !host.contains('.')) {
            return None;
        }
        let port = if port.is_empty() {
            String::new()
        } else {
            format!(":{port}")
        };
        let cleaned = match scheme {
            Some(scheme) => format!("{scheme}://{host}{port}{path}"),
            None => format!("{host}{port}{path}"),
        };
        Some(Self { host, cleaned })
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        })
}

/// Same site: hosts equal ignoring a leading `www.`.
fn same_site(host: &str, site: &str) -> bool {
    let strip = |h: &str| h.strip_prefix("www.").unwrap_or(h).to_owned();
    strip(host) == strip(site)
}

fn is_payment(host: &str) -> bool {
    let host = bare_host(host);
    PAYMENT_DOMAINS.iter().any(|d| domain_matches(host, d))
}

/// The source and medium one history entry gives, when it says anything.
struct Referrer {
    source: String,
    medium: Option<String>,
    url: Option<String>,
}

/// Ghost's order: an explicit `ref` (a newsletter, a known name, else as given); else a
/// known referring site; else `utm_source` (known, else as given); else the referring host.
/// Medium: the known source's, else the entry's `referrer_medium`, the known referring
/// site's, `utm_medium`.
fn entry_referrer(entry: &UrlHistoryEntry, site: Option<&str>) -> Option<Referrer> {
    let url = entry
        .referrer_url
        .as_deref()
        .and_then(|u| ParsedUrl::parse(u, false));
    if url.as_ref().is_some_and(|u| is_payment(&u.host)) {
        return None;
    }
    let internal = |host: &str| site.is_some_and(|site| same_site(host, site));
    let url = url.filter(|u| !internal(&u.host));
    let external = |value: &&str| {
        !(value.contains('.') && ParsedUrl::parse(value, false).is_some_and(|u| internal(&u.host)))
    };
    let ref_source = entry.referrer_source.as_deref().filter(external);
    let utm_source = entry.utm_source.as_deref().filter(external);
    if ref_source.is_none() && utm_source.is_none() && url.is_none() {
        return None;
    }

    let url_known = url.as_ref().and_then(|u| known_by_host(&u.host));
    let fallback_medium = entry
        .referrer_medium
        .clone()
        .or_else(|| url_known.map(|k| k.medium.to_owned()))
        .or_else(|| entry.utm_medium.clone());
    let (source, medium) = if let Some(value) = ref_source {
        classify_name(value).unwrap_or_else(|| (value.to_owned(), fallback_medium))
    } else if let Some(k) = url_known {
        (k.name.to_owned(), Some(k.medium.to_owned()))
    } else if let Some(value) = utm_source {
        classify_name(value).unwrap_or_else(|| (value.to_owned(), fallback_medium))
    } else {
        let host = url.as_ref().map(|u| u.host.as_str()).unwrap_or_default();
        (
            host.strip_prefix("www.").unwrap_or(host).to_owned(),
            fallback_medium,
        )
    };
    Some(Referrer {
        source,
        medium,
        url: url.map(|u| u.cleaned),
    })
}

// ---------------------------------------------------------------------------------------
// Attribution
// ---------------------------------------------------------------------------------------

/// What a member's signup is attributed to, as stored on the member's creation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Attribution {
    /// `None` when there is no history.
    pub attribution_type: Option<ResourceType>,
    /// The slug for a post, page, tag or author; `None` for a plain URL.
    pub attribution_id: Option<String>,
    /// The path of the chosen entry, without query string and fragment.
    pub attribution_url: Option<String>,
    /// E.g. `Google`, `Twitter`, `weekly newsletter`, `Direct`.
    pub referrer_source: Option<String>,
    /// E.g. `search`, `social`, `email`.
    pub referrer_medium: Option<String>,
    /// The referring page, without user info, query string and fragment, when known.
    pub referrer_url: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
}

/// The source of a signup with no referrer in its history.
pub const DIRECT: &str = "Direct";

/// The attribution of a signup from its URL history.
///
/// Resource (the "last post" rule): the newest entry that shows a post; else the newest
/// entry (a page, tag, author or plain URL).
///
/// Referrer: the newest entry with a `referrer_source`, `utm_source` or `referrer_url`
/// that is not the site itself (`site_host`, ignoring `www.`), skipping entries whose
/// referrer is a payment page (a return from Stripe Checkout). Its source and medium come
/// from [`KNOWN_SOURCES`] when it matches (newsletter refs are medium `email`), else the
/// `ref` value, `utm_source` or referring host as given; the UTM fields come from the same
/// entry. No such entry: source `Direct`, everything else `None`.
pub fn attribute(
    history: &UrlHistory,
    routes: &RoutePatterns,
    site_host: Option<&str>,
) -> Attribution {
    let mut newest = None;
    let mut chosen = None;
    for entry in history.entries() {
        let resolved = routes.resolve(&entry.path);
        if resolved.0 == ResourceType::Post {
            chosen = Some((entry, resolved));
            break;
        }
        newest.get_or_insert((entry, resolved));
    }
    let (attribution_type, attribution_id, attribution_url) = match chosen.or(newest) {
        Some((entry, (kind, slug))) => {
            (Some(kind), slug, Some(strip_query(&entry.path).to_owned()))
        }
        None => (None, None, None),
    };

    let site = site_host
        .and_then(|h| ParsedUrl::parse(h, true))
        .map(|u| u.host);
    let referrer = history
        .entries()
        .iter()
        .find_map(|entry| entry_referrer(entry, site.as_deref()).map(|r| (entry, r)));

    let mut attribution = Attribution {
        attribution_type,
        attribution_id,
        attribution_url,
        referrer_source: Some(DIRECT.to_owned()),
        ..Attribution::default()
    };
    if let Some((entry, referrer)) = referrer {
        attribution.referrer_source = Some(referrer.source);
        attribution.referrer_medium = referrer.medium;
        attribution.referrer_url = referrer.url;
        attribution.utm_source = entry.utm_source.clone();
        attribution.utm_medium = entry.utm_medium.clone();
        attribution.utm_campaign = entry.utm_campaign.clone();
        attribution.utm_term = entry.utm_term.clone();
        attribution.utm_content = entry.utm_content.clone();
    }
    attribution
}

/// Where a member without browser history was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttributionContext {
    /// By an admin in the admin UI.
    Admin,
    /// Through the admin API.
    Api,
    /// By a member import.
    Import,
    /// By an integration.
    Integration,
    /// From a Stripe event (a customer we had no member for).
    Stripe,
}

impl AttributionContext {
    /// (source, medium)
    fn source_and_medium(self) -> (&'static str, &'static str) {
        match self {
            Self::Admin => ("Admin", "Admin"),
            Self::Api => ("Admin API", "Integration"),
            Self::Import => ("Import", "Import"),
            Self::Integration => ("Integration", "Integration"),
            Self::Stripe => ("Stripe", "Payment"),
        }
    }
}

/// The fixed attribution of a member created without browser history: only the referrer
/// source and medium are set.
pub fn for_context(context: AttributionContext) -> Attribution {
    let (source, medium) = context.source_and_medium();
    Attribution {
        referrer_source: Some(source.to_owned()),
        referrer_medium: Some(medium.to_owned()),
        ..Attribution::default()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

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

    fn with_utm(
        mut entry: UrlHistoryEntry,
        source: Option<&str>,
        medium: Option<&str>,
    ) -> UrlHistoryEntry {
        entry.utm_source = source.map(str::to_owned);
        entry.utm_medium = medium.map(str::to_owned);
        entry.utm_campaign = Some("spring".to_owned());
        entry
    }

    fn history(entries: Vec<UrlHistoryEntry>) -> UrlHistory {
        UrlHistory::parse(entries, now()).expect("valid history")
    }

    fn errors(entries: Vec<UrlHistoryEntry>) -> Vec<(String, String)> {
        UrlHistory::parse(entries, now())
            .expect_err("invalid history")
            .into_iter()
            .map(|e| (e.field, e.reason))
            .collect()
    }

    fn paths(history: &UrlHistory) -> Vec<&str> {
        history.entries().iter().map(|e| e.path.as_str()).collect()
    }

    // --- validation -------------------------------------------------------------------

    #[test]
    fn invalid_entries_are_reported_with_indexed_field_names() {
        let long_url = format!("https://example.com/{}", "a".repeat(2048));
        let cases: Vec<(UrlHistoryEntry, &str, &str)> = vec![
            (visit("", 1), "path", "is required"),
            (visit("   ", 1), "path", "is required"),
            (visit("post/", 1), "path", "must start with /"),
            (
                visit("https://example.com/post/", 1),
                "path",
                "must start with /",
            ),
            (
                visit("//evil.example/", 1),
                "path",
                "must be a path on this site, not start with // or /\\",
            ),
            (
                visit("/a b/", 1),
                "path",
                "must not contain spaces or control characters",
            ),
            (
                visit(&format!("/{}", "a".repeat(2048)), 1),
                "path",
                "must be at most 2048 characters",
            ),
            (
                UrlHistoryEntry {
                    time: 0,
                    ..visit("/", 1)
                },
                "time",
                "must be a positive whole number of milliseconds since the Unix epoch",
            ),
            (
                UrlHistoryEntry {
                    time: -5,
                    ..visit("/", 1)
                },
                "time",
                "must be a positive whole number of milliseconds since the Unix epoch",
            ),
            (
                UrlHistoryEntry {
                    time: i64::MAX,
                    ..visit("/", 1)
                },
                "time",
                "must be a positive whole number of milliseconds since the Unix epoch",
            ),
            (
                with_referrer(visit("/", 1), &long_url),
                "referrer_url",
                "must be at most 2048 characters",
            ),
            (
                with_ref(visit("/", 1), &"r".repeat(192)),
                "referrer_source",
                "must be at most 191 characters",
            ),
            (
                UrlHistoryEntry {
                    referrer_medium: Some("m".repeat(192)),
                    ..visit("/", 1)
                },
                "referrer_medium",
                "must be at most 191 characters",
            ),
            (
                UrlHistoryEntry {
                    utm_campaign: Some("c".repeat(192)),
                    ..visit("/", 1)
                },
                "utm_campaign",
                "must be at most 191 characters",
            ),
            (
                UrlHistoryEntry {
                    utm_term: Some("a\u{0}b".to_owned()),
                    ..visit("/", 1)
                },
                "utm_term",
                "must not contain control characters",
            ),
        ];
        for (entry, field, reason) in cases {
            let got = errors(vec![visit("/fine/", 2), entry.clone()]);
            assert_eq!(
                got,
                vec![(format!("url_history[1].{field}"), reason.to_owned())],
                "{entry:?}"
            );
        }
    }

    #[test]
    fn all_errors_of_all_entries_are_collected() {
        let got = errors(vec![
            UrlHistoryEntry {
                path: "nope".to_owned(),
                time: -1,
                utm_source: Some("s".repeat(200)),
                ..UrlHistoryEntry::default()
            },
            visit("/ok/", 1),
            // An invalid entry too old to be kept is still reported.
            UrlHistoryEntry {
                utm_content: Some("c".repeat(200)),
                ..visit("", 60 * 48)
            },
        ]);
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "url_history[0].path",
                "url_history[0].time",
                "url_history[0].utm_source",
                "url_history[2].path",
                "url_history[2].utm_content",
            ]
        );
        let error = HistoryError {
            field: "url_history[0].path".to_owned(),
            reason: "must start with /".to_owned(),
        };
        assert_eq!(error.to_string(), "url_history[0].path must start with /");
    }

    #[test]
    fn limits_are_inclusive_and_count_characters() {
        let entry = UrlHistoryEntry {
            path: format!("/{}", "é".repeat(2047)),
            referrer_url: Some(format!("https://x.io/{}", "é".repeat(2048 - 13))),
            referrer_source: Some("é".repeat(191)),
            utm_content: Some("é".repeat(191)),
            ..visit("/", 1)
        };
        assert_eq!(history(vec![entry]).entries().len(), 1);
        let max_time = UrlHistoryEntry {
            time: UrlHistoryEntry::MAX_TIME,
            ..visit("/", 1)
        };
        // valid, but far in the future: dropped
        assert!(history(vec![max_time]).is_empty());
    }

    #[test]
    fn fields_are_trimmed_and_blank_ones_dropped() {
        let entry = UrlHistoryEntry {
            path: "  /post/ ".to_owned(),
            referrer_source: Some("  ".to_owned()),
            referrer_url: Some(" https://google.com/ ".to_owned()),
            utm_source: Some("".to_owned()),
            utm_medium: Some(" social ".to_owned()),
            ..visit("/", 1)
        };
        let history = history(vec![entry]);
        let got = &history.entries()[0];
        assert_eq!(got.path, "/post/");
        assert_eq!(got.referrer_source, None);
        assert_eq!(got.referrer_url.as_deref(), Some("https://google.com/"));
        assert_eq!(got.utm_source, None);
        assert_eq!(got.utm_medium.as_deref(), Some("social"));
    }

    #[test]
    fn entries_outside_the_window_are_dropped() {
        let cases: &[(i64, bool)] = &[
            (0, true),
            (60, true),
            (24 * 60 - 1, true),
            (24 * 60, false), // exactly 24 h old
            (24 * 60 + 1, false),
            (60 * 24 * 365, false),
            (-5, true), // 5 minutes ahead: clock skew
            (-6, false),
        ];
        for &(minutes_ago, kept) in cases {
            let got = history(vec![visit("/a/", minutes_ago)]);
            assert_eq!(!got.is_empty(), kept, "{minutes_ago} minutes ago");
        }
        let mut just_inside = visit("/a/", 24 * 60);
        just_inside.time += 1;
        assert_eq!(history(vec![just_inside]).entries().len(), 1);
    }

    #[test]
    fn entries_are_sorted_newest_first_whatever_the_input_order() {
        let got = history(vec![
            visit("/b/", 20),
            visit("/d/", 40),
            visit("/a/", 10),
            visit("/c/", 30),
        ]);
        assert_eq!(paths(&got), vec!["/a/", "/b/", "/c/", "/d/"]);
        // Equal times: the one appended later is the newer.
        let got = history(vec![visit("/first/", 5), visit("/second/", 5)]);
        assert_eq!(paths(&got), vec!["/second/", "/first/"]);
    }

    #[test]
    fn at_most_the_15_newest_entries_are_kept() {
        let entries: Vec<UrlHistoryEntry> = (0..20)
            .rev()
            .map(|i| visit(&format!("/p{i}/"), i))
            .collect();
        let got = history(entries);
        let want: Vec<String> = (0..15).map(|i| format!("/p{i}/")).collect();
        assert_eq!(paths(&got), want);
        // Old entries do not take places of the 15.
        let mut entries: Vec<UrlHistoryEntry> = (0..10)
            .map(|i| visit(&format!("/old{i}/"), 2000 + i))
            .collect();
        entries.extend((0..15).map(|i| visit(&format!("/new{i}/"), i)));
        assert_eq!(history(entries).entries().len(), 15);
    }

    #[test]
    fn entries_deserialise_from_snake_or_camel_case_and_missing_fields_are_reported() {
        let json = r#"[
            {"path": "/a/", "time": 1748779140000, "referrer_source": "ref", "utm_source": "u"},
            {"path": "/b/", "time": 1748779140000, "referrerSource": "ref", "referrerUrl": "https://t.co/x",
             "utmSource": "u", "utmMedium": "m", "utmCampaign": "c", "utmTerm": "t", "utmContent": "x",
             "id": null, "type": null},
            {"time": 1748779140000},
            {"path": "/c/"}
        ]"#;
        let entries: Vec<UrlHistoryEntry> = serde_json::from_str(json).expect("deserialises");
        assert_eq!(entries[0].referrer_source.as_deref(), Some("ref"));
        assert_eq!(entries[1].referrer_source.as_deref(), Some("ref"));
        assert_eq!(entries[1].referrer_url.as_deref(), Some("https://t.co/x"));
        assert_eq!(entries[1].utm_content.as_deref(), Some("x"));
        let got = UrlHistory::parse(entries, now()).expect_err("two incomplete entries");
        let fields: Vec<&str> = got.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["url_history[2].path", "url_history[3].time"]);
    }

    // --- routes -----------------------------------------------------------------------

    #[test]
    fn default_routes_resolve_paths() {
        let routes = RoutePatterns::default();
        let cases: &[(&str, ResourceType, Option<&str>)] = &[
            ("/", ResourceType::Url, None),
            ("", ResourceType::Url, None),
            ("/hello-world/", ResourceType::Post, Some("hello-world")),
            ("/hello-world", ResourceType::Post, Some("hello-world")),
            (
                "/hello-world/?ref=x#top",
                ResourceType::Post,
                Some("hello-world"),
            ),
            (
                "/hello-world?utm_source=x",
                ResourceType::Post,
                Some("hello-world"),
            ),
            ("/p/0af3b2/", ResourceType::Post, Some("0af3b2")),
            ("/tag/news/", ResourceType::Tag, Some("news")),
            ("/tag/news", ResourceType::Tag, Some("news")),
            ("/tag/news/?page=2", ResourceType::Tag, Some("news")),
            ("/author/ada/", ResourceType::Author, Some("ada")),
            ("/tag/news/page/2/", ResourceType::Url, None),
            ("/tag/news/rss/", ResourceType::Url, None),
            ("/blog/2024/post/", ResourceType::Url, None),
            ("/tag//", ResourceType::Url, None),
            ("/tag/news//", ResourceType::Url, None),
            ("//", ResourceType::Url, None),
            ("/?q=x", ResourceType::Url, None),
            ("#top", ResourceType::Url, None),
            // no static pages configured by default: a one-segment path is a post
            ("/about/", ResourceType::Post, Some("about")),
        ];
        for &(path, kind, slug) in cases {
            assert_eq!(
                routes.resolve(path),
                (kind, slug.map(str::to_owned)),
                "{path}"
            );
        }
    }

    #[test]
    fn custom_routes_and_static_pages_resolve_paths() {
        let routes = RoutePatterns::new(
            "/topics/{slug}",
            "/people/{slug}/",
            &["/blog/{slug}/", "/{slug}/amp/"],
            &["about", "contact"],
        )
        .expect("valid patterns");
        let cases: &[(&str, ResourceType, Option<&str>)] = &[
            ("/about/", ResourceType::Page, Some("about")),
            ("/contact?x=1", ResourceType::Page, Some("contact")),
            ("/topics/rust/", ResourceType::Tag, Some("rust")),
            ("/topics/rust", ResourceType::Tag, Some("rust")),
            ("/people/ada/", ResourceType::Author, Some("ada")),
            ("/blog/hello/", ResourceType::Post, Some("hello")),
            ("/hello/amp/", ResourceType::Post, Some("hello")),
            ("/hello/", ResourceType::Url, None),
            ("/tag/rust/", ResourceType::Url, None),
            ("/about/team/", ResourceType::Url, None),
            ("/About/", ResourceType::Url, None),
            ("/", ResourceType::Url, None),
        ];
        for &(path, kind, slug) in cases {
            assert_eq!(
                routes.resolve(path),
                (kind, slug.map(str::to_owned)),
                "{path}"
            );
        }
    }

    #[test]
    fn static_pages_win_over_the_one_segment_post_route() {
        let routes = RoutePatterns::new(
            RoutePatterns::DEFAULT_TAG,
            RoutePatterns::DEFAULT_AUTHOR,
            RoutePatterns::DEFAULT_POSTS,
            &["about"],
        )
        .expect("valid");
        assert_eq!(
            routes.resolve("/about/"),
            (ResourceType::Page, Some("about".to_owned()))
        );
        assert_eq!(
            routes.resolve("/welcome/"),
            (ResourceType::Post, Some("welcome".to_owned()))
        );
    }

    #[test]
    fn invalid_patterns_are_rejected() {
        let cases: &[(&str, &str)] = &[
            ("tag/{slug}/", "must start with /"),
            ("/tag/", "must contain {slug}"),
            ("/{slug}/{slug}/", "must contain {slug} only once"),
            (
                "/tag-{slug}/",
                "may hold {slug} only as a whole segment, and no other placeholder",
            ),
            (
                "/{year}/{slug}/",
                "may hold {slug} only as a whole segment, and no other placeholder",
            ),
            ("/tag//{slug}/", "must not contain empty segments (//)"),
            (
                "/tag/{slug}/?x",
                "must not contain spaces, control characters, ? or #",
            ),
            (
                "/my tag/{slug}/",
                "must not contain spaces, control characters, ? or #",
            ),
        ];
        for &(pattern, reason) in cases {
            for attempt in [
                RoutePatterns::new(pattern, "/author/{slug}/", &["/{slug}/"], &[]),
                RoutePatterns::new("/tag/{slug}/", pattern, &["/{slug}/"], &[]),
                RoutePatterns::new(
                    "/tag/{slug}/",
                    "/author/{slug}/",
                    &["/{slug}/", pattern],
                    &[],
                ),
            ] {
                assert_eq!(
                    attempt,
                    Err(PatternError::new(pattern, reason)),
                    "{pattern}"
                );
            }
        }
        for slug in ["", " ", "a/b", "a b", "a?b"] {
            let got = RoutePatterns::new("/tag/{slug}/", "/author/{slug}/", &[], &[slug]);
            assert!(got.is_err(), "{slug:?}");
        }
        let error = PatternError::new("/tag/", "must contain {slug}");
        assert_eq!(
            error.to_string(),
            "route pattern \"/tag/\" must contain {slug}"
        );
    }

    // --- last-post rule ---------------------------------------------------------------

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

    #[test]
    fn the_newest_post_wins_else_the_newest_entry() {
        type Case = (
            Vec<UrlHistoryEntry>,
            Option<ResourceType>,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                vec![visit("/older-post/", 10), visit("/tag/news/", 5)],
                Some(ResourceType::Post),
                Some("older-post"),
                Some("/older-post/"),
            ),
            (
                vec![
                    visit("/first-post/", 30),
                    visit("/second-post/?ref=x", 20),
                    visit("/tag/news/", 10),
                    visit("/", 1),
                ],
                Some(ResourceType::Post),
                Some("second-post"),
                Some("/second-post/"),
            ),
            (
                vec![visit("/about/", 10), visit("/tag/a/b/", 5)],
                Some(ResourceType::Url),
                None,
                Some("/tag/a/b/"),
            ),
            (
                vec![visit("/tag/a/b/", 10), visit("/about/", 5)],
                Some(ResourceType::Page),
                Some("about"),
                Some("/about/"),
            ),
            (
                vec![visit("/author/ada/", 10), visit("/tag/news/", 5)],
                Some(ResourceType::Tag),
                Some("news"),
                Some("/tag/news/"),
            ),
            (
                vec![visit("/?token=secret#x", 1)],
                Some(ResourceType::Url),
                None,
                Some("/"),
            ),
            (
                // entries older than 24 h do not count
                vec![visit("/old-post/", 60 * 25), visit("/tag/news/", 5)],
                Some(ResourceType::Tag),
                Some("news"),
                Some("/tag/news/"),
            ),
            (vec![], None, None, None),
        ];
        for (entries, kind, id, url) in cases {
            let got = attribution_of(entries.clone());
            assert_eq!(
                (
                    got.attribution_type,
                    got.attribution_id.as_deref(),
                    got.attribution_url.as_deref()
                ),
                (kind, id, url),
                "{entries:?}"
            );
        }
    }

    #[test]
    fn no_history_is_direct_with_nothing_else() {
        let got = attribute(&UrlHistory::default(), &RoutePatterns::default(), None);
        assert_eq!(
            got,
            Attribution {
                referrer_source: Some("Direct".to_owned()),
                ..Attribution::default()
            }
        );
    }

    // --- referrers --------------------------------------------------------------------

    type Expected = (&'static str, Option<&'static str>, Option<&'static str>);

    fn referrer_of(entries: Vec<UrlHistoryEntry>) -> (String, Option<String>, Option<String>) {
        let got = attribution_of(entries);
        (
            got.referrer_source.expect("always a source"),
            got.referrer_medium,
            got.referrer_url,
        )
    }

    fn check(cases: Vec<(Vec<UrlHistoryEntry>, Expected)>) {
        for (entries, (source, medium, url)) in cases {
            assert_eq!(
                referrer_of(entries.clone()),
                (
                    source.to_owned(),
                    medium.map(str::to_owned),
                    url.map(str::to_owned)
                ),
                "{entries:?}"
            );
        }
    }

    #[test]
    fn known_referring_sites_are_named() {
        let r = |url: &str| vec![with_referrer(visit("/post/", 1), url)];
        check(vec![
            (
                r("https://google.com/"),
                ("Google", Some("search"), Some("https://google.com/")),
            ),
            (
                r("https://www.google.co.uk/"),
                ("Google", Some("search"), Some("https://www.google.co.uk/")),
            ),
            (
                r("https://www.google.de/search?q=x"),
                (
                    "Google",
                    Some("search"),
                    Some("https://www.google.de/search"),
                ),
            ),
            (
                r("https://WWW.GOOGLE.COM.AU"),
                ("Google", Some("search"), Some("https://www.google.com.au")),
            ),
            (
                r("https://mail.google.com/mail/u/0/"),
                (
                    "Gmail",
                    Some("email"),
                    Some("https://mail.google.com/mail/u/0/"),
                ),
            ),
            (
                r("android-app://com.google.android.gm/"),
                (
                    "Gmail",
                    Some("email"),
                    Some("android-app://com.google.android.gm/"),
                ),
            ),
            (
                r("https://www.bing.com/"),
                ("Bing", Some("search"), Some("https://www.bing.com/")),
            ),
            (
                r("https://duckduckgo.com/"),
                (
                    "DuckDuckGo",
                    Some("search"),
                    Some("https://duckduckgo.com/"),
                ),
            ),
            (
                r("https://uk.search.yahoo.com/"),
                (
                    "Yahoo",
                    Some("search"),
                    Some("https://uk.search.yahoo.com/"),
                ),
            ),
            (
                r("https://mail.yahoo.com/"),
                ("Yahoo Mail", Some("email"), Some("https://mail.yahoo.com/")),
            ),
            (
                r("https://yandex.ru/"),
                ("Yandex", Some("search"), Some("https://yandex.ru/")),
            ),
            (
                r("https://www.ecosia.org/"),
                ("Ecosia", Some("search"), Some("https://www.ecosia.org/")),
            ),
            (
                r("https://www.baidu.com/"),
                ("Baidu", Some("search"), Some("https://www.baidu.com/")),
            ),
            (
                r("https://t.co/abc"),
                ("Twitter", Some("social"), Some("https://t.co/abc")),
            ),
            (
                r("https://x.com/"),
                ("Twitter", Some("social"), Some("https://x.com/")),
            ),
            (
                r("https://mobile.twitter.com/"),
                (
                    "Twitter",
                    Some("social"),
                    Some("https://mobile.twitter.com/"),
                ),
            ),
            (
                r("https://l.facebook.com/"),
                ("Facebook", Some("social"), Some("https://l.facebook.com/")),
            ),
            (
                r("https://m.facebook.com/"),
                ("Facebook", Some("social"), Some("https://m.facebook.com/")),
            ),
            (
                r("https://lnkd.in/x"),
                ("LinkedIn", Some("social"), Some("https://lnkd.in/x")),
            ),
            (
                r("https://old.reddit.com/r/rust/"),
                (
                    "Reddit",
                    Some("social"),
                    Some("https://old.reddit.com/r/rust/"),
                ),
            ),
            (
                r("https://news.ycombinator.com/item?id=1"),
                (
                    "Hacker News",
                    Some("social"),
                    Some("https://news.ycombinator.com/item"),
                ),
            ),
            (
                r("https://www.instagram.com/"),
                (
                    "Instagram",
                    Some("social"),
                    Some("https://www.instagram.com/"),
                ),
            ),
            (
                r("https://m.youtube.com/"),
                ("YouTube", Some("social"), Some("https://m.youtube.com/")),
            ),
            (
                r("https://mastodon.social/@ada"),
                (
                    "Mastodon",
                    Some("social"),
                    Some("https://mastodon.social/@ada"),
                ),
            ),
            (
                r("https://bsky.app/"),
                ("Bluesky", Some("social"), Some("https://bsky.app/")),
            ),
            (
                r("https://www.threads.net/"),
                ("Threads", Some("social"), Some("https://www.threads.net/")),
            ),
            (
                r("https://outlook.live.com/"),
                ("Outlook", Some("email"), Some("https://outlook.live.com/")),
            ),
        ]);
    }

    #[test]
    fn lookalike_hosts_are_not_known_sources() {
        let r = |url: &str| vec![with_referrer(visit("/post/", 1), url)];
        check(vec![
            (
                r("https://google.evil.com/"),
                ("google.evil.com", None, Some("https://google.evil.com/")),
            ),
            (
                r("https://notgoogle.com/"),
                ("notgoogle.com", None, Some("https://notgoogle.com/")),
            ),
            (
                r("https://nott.co/"),
                ("nott.co", None, Some("https://nott.co/")),
            ),
            (
                r("https://twitter.com.evil.io/"),
                (
                    "twitter.com.evil.io",
                    None,
                    Some("https://twitter.com.evil.io/"),
                ),
            ),
            (
                r("https://docs.google.com/"),
                ("docs.google.com", None, Some("https://docs.google.com/")),
            ),
        ]);
    }

    #[test]
    fn unknown_referrers_are_named_by_host_and_urls_cleaned() {
        let r = |url: &str| vec![with_referrer(visit("/post/", 1), url)];
        check(vec![
            (
                r("https://www.someblog.org/a/b?utm=1#c"),
                ("someblog.org", None, Some("https://www.someblog.org/a/b")),
            ),
            (
                r("https://user:pw@Blog.Example.net:8443/x"),
                (
                    "blog.example.net",
                    None,
                    Some("https://blog.example.net:8443/x"),
                ),
            ),
            (
                r("http://m.someblog.org"),
                ("m.someblog.org", None, Some("http://m.someblog.org")),
            ),
            (
                r("//someblog.org/x"),
                ("someblog.org", None, Some("someblog.org/x")),
            ),
            // not a URL: ignored
            (r("not a url"), ("Direct", None, None)),
            (r("javascript:alert(1)"), ("Direct", None, None)),
            (r("https://"), ("Direct", None, None)),
        ]);
    }

    #[test]
    fn refs_and_utm_sources_are_named() {
        let entry = |source: Option<&str>, utm: Option<&str>, medium: Option<&str>| {
            let mut e = with_utm(visit("/post/", 1), utm, medium);
            e.referrer_source = source.map(str::to_owned);
            vec![e]
        };
        check(vec![
            // Ghost newsletter refs
            (
                entry(Some("weekly-newsletter"), None, None),
                ("weekly newsletter", Some("email"), None),
            ),
            (
                entry(Some("Newsletter"), None, None),
                ("Newsletter", Some("email"), None),
            ),
            (
                entry(None, Some("the-daily-newsletter"), None),
                ("the daily newsletter", Some("email"), None),
            ),
            // known names, aliases and domains, any case
            (
                entry(Some("twitter"), None, None),
                ("Twitter", Some("social"), None),
            ),
            (
                entry(Some("hacker-news"), None, None),
                ("Hacker News", Some("social"), None),
            ),
            (
                entry(Some("HN"), None, None),
                ("Hacker News", Some("social"), None),
            ),
            (
                entry(Some("news.ycombinator.com"), None, None),
                ("Hacker News", Some("social"), None),
            ),
            (
                entry(Some("www.linkedin.com"), None, None),
                ("LinkedIn", Some("social"), None),
            ),
            // Ghost sites tag their outbound links ?ref=<their domain>: a web referral
            (
                entry(Some("otherblog.ghost.io"), None, None),
                ("otherblog.ghost.io", None, None),
            ),
            // utm-only entries
            (
                entry(None, Some("google"), Some("cpc")),
                ("Google", Some("search"), None),
            ),
            (
                entry(None, Some("partner-site"), Some("affiliate")),
                ("partner-site", Some("affiliate"), None),
            ),
            (
                entry(None, Some("partner-site"), None),
                ("partner-site", None, None),
            ),
            // ref wins over utm_source
            (
                entry(Some("podcast"), Some("twitter"), Some("paid")),
                ("podcast", Some("paid"), None),
            ),
        ]);
    }

    #[test]
    fn precedence_between_ref_referring_site_and_utm() {
        let mut unknown_ref_known_site =
            with_referrer(visit("/post/", 1), "https://www.google.com/");
        unknown_ref_known_site.referrer_source = Some("my-podcast".to_owned());
        let known_site_and_utm = with_utm(
            with_referrer(visit("/post/", 1), "https://t.co/x"),
            Some("spring-promo"),
            Some("banner"),
        );
        let unknown_site_and_utm = with_utm(
            with_referrer(visit("/post/", 1), "https://someblog.org/"),
            Some("spring-promo"),
            Some("banner"),
        );
        let unknown_site_and_medium_only = with_utm(
            with_referrer(visit("/post/", 1), "https://someblog.org/"),
            None,
            Some("cpc"),
        );
        let mut explicit_medium = with_ref(visit("/post/", 1), "partner");
        explicit_medium.referrer_medium = Some("affiliate".to_owned());
        explicit_medium.utm_medium = Some("ignored".to_owned());
        check(vec![
            (
                vec![unknown_ref_known_site],
                (
                    "my-podcast",
                    Some("search"),
                    Some("https://www.google.com/"),
                ),
            ),
            (
                vec![known_site_and_utm],
                ("Twitter", Some("social"), Some("https://t.co/x")),
            ),
            (
                vec![unknown_site_and_utm],
                (
                    "spring-promo",
                    Some("banner"),
                    Some("https://someblog.org/"),
                ),
            ),
            (
                vec![unknown_site_and_medium_only],
                ("someblog.org", Some("cpc"), Some("https://someblog.org/")),
            ),
            (vec![explicit_medium], ("partner", Some("affiliate"), None)),
        ]);
    }

    #[test]
    fn internal_and_payment_referrers_are_skipped() {
        check(vec![
            // the newest entry's referrer is the site itself: an older external one counts
            (
                vec![
                    with_referrer(visit("/landing/", 10), "https://www.google.com/"),
                    with_referrer(visit("/post/", 1), "https://example.com/landing/"),
                ],
                ("Google", Some("search"), Some("https://www.google.com/")),
            ),
            (
                vec![
                    with_referrer(visit("/landing/", 10), "https://t.co/x"),
                    with_referrer(visit("/post/", 1), "https://WWW.Example.com:443/landing/"),
                ],
                ("Twitter", Some("social"), Some("https://t.co/x")),
            ),
            // returning from Stripe Checkout says nothing about where the member came from
            (
                vec![
                    with_referrer(visit("/landing/", 10), "https://news.ycombinator.com/"),
                    with_ref(
                        with_referrer(
                            visit("/welcome/", 1),
                            "https://checkout.stripe.com/c/pay/cs_123",
                        ),
                        "x",
                    ),
                ],
                (
                    "Hacker News",
                    Some("social"),
                    Some("https://news.ycombinator.com/"),
                ),
            ),
            (
                vec![
                    with_referrer(visit("/landing/", 10), "https://bsky.app/"),
                    with_referrer(
                        visit("/welcome/", 2),
                        "https://billing.stripe.com/p/session",
                    ),
                    with_referrer(visit("/welcome/", 1), "https://www.paypal.com/checkoutnow"),
                ],
                ("Bluesky", Some("social"), Some("https://bsky.app/")),
            ),
            // only internal or payment referrers: Direct
            (
                vec![
                    with_referrer(visit("/a/", 10), "https://example.com/"),
                    with_referrer(visit("/b/", 1), "https://checkout.stripe.com/"),
                ],
                ("Direct", None, None),
            ),
            // the site's own domain as a ref is internal too
            (
                vec![
                    with_ref(visit("/a/", 10), "reddit"),
                    with_ref(visit("/b/", 1), "www.example.com"),
                ],
                ("Reddit", Some("social"), None),
            ),
            // a ref on an entry with an internal referrer counts, without the internal URL
            (
                vec![with_ref(
                    with_referrer(visit("/post/", 1), "https://example.com/"),
                    "weekly-newsletter",
                )],
                ("weekly newsletter", Some("email"), None),
            ),
            // no referrer at all
            (
                vec![visit("/a/", 10), visit("/b/", 1)],
                ("Direct", None, None),
            ),
            // medium alone does not make a referrer
            (
                vec![UrlHistoryEntry {
                    referrer_medium: Some("social".to_owned()),
                    ..visit("/a/", 1)
                }],
                ("Direct", None, None),
            ),
        ]);
    }

    #[test]
    fn without_a_site_host_nothing_is_internal() {
        let entries = history(vec![with_referrer(
            visit("/post/", 1),
            "https://example.com/x",
        )]);
        let got = attribute(&entries, &RoutePatterns::default(), None);
        assert_eq!(got.referrer_source.as_deref(), Some("example.com"));
        let got = attribute(
            &entries,
            &RoutePatterns::default(),
            Some("https://Example.com/blog/"),
        );
        assert_eq!(got.referrer_source.as_deref(), Some("Direct"));
    }

    #[test]
    fn utm_fields_come_from_the_chosen_referrer_entry() {
        let got = attribution_of(vec![
            UrlHistoryEntry {
                utm_source: Some("newsletter-partner".to_owned()),
                utm_medium: Some("email".to_owned()),
                utm_campaign: Some("launch".to_owned()),
                utm_term: Some("rust".to_owned()),
                utm_content: Some("header-link".to_owned()),
                ..visit("/older-post/", 30)
            },
            visit("/tag/news/", 20),
            with_referrer(visit("/", 10), "https://example.com/"),
        ]);
        assert_eq!(
            got,
            Attribution {
                attribution_type: Some(ResourceType::Post),
                attribution_id: Some("older-post".to_owned()),
                attribution_url: Some("/older-post/".to_owned()),
                referrer_source: Some("newsletter-partner".to_owned()),
                referrer_medium: Some("email".to_owned()),
                referrer_url: None,
                utm_source: Some("newsletter-partner".to_owned()),
                utm_medium: Some("email".to_owned()),
                utm_campaign: Some("launch".to_owned()),
                utm_term: Some("rust".to_owned()),
                utm_content: Some("header-link".to_owned()),
            }
        );
        // Direct: no UTM fields
        let got = attribution_of(vec![UrlHistoryEntry {
            utm_campaign: Some("launch".to_owned()),
            ..visit("/post/", 1)
        }]);
        assert_eq!(got.referrer_source.as_deref(), Some("Direct"));
        assert_eq!(got.utm_campaign, None);
    }

    #[test]
    fn attribution_serialises_with_snake_case_names_and_values() {
        let got = attribution_of(vec![with_referrer(
            visit("/tag/news/", 1),
            "https://t.co/x",
        )]);
        let json = serde_json::to_value(&got).expect("serialises");
        assert_eq!(json["attribution_type"], "tag");
        assert_eq!(json["attribution_id"], "news");
        assert_eq!(json["referrer_source"], "Twitter");
        assert_eq!(json["utm_source"], serde_json::Value::Null);
        let back: Attribution = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, got);
    }

    // --- contexts ---------------------------------------------------------------------

    #[test]
    fn contexts_have_fixed_sources_and_mediums() {
        let cases = [
            (AttributionContext::Admin, "Admin", "Admin"),
            (AttributionContext::Api, "Admin API", "Integration"),
            (AttributionContext::Import, "Import", "Import"),
            (
                AttributionContext::Integration,
                "Integration",
                "Integration",
            ),
            (AttributionContext::Stripe, "Stripe", "Payment"),
        ];
        for (context, source, medium) in cases {
            assert_eq!(
                for_context(context),
                Attribution {
                    referrer_source: Some(source.to_owned()),
                    referrer_medium: Some(medium.to_owned()),
                    ..Attribution::default()
                },
                "{context:?}"
            );
        }
        assert_eq!(
            serde_json::to_value(AttributionContext::Api).expect("serialises"),
            "api"
        );
    }
}
