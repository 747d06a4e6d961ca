//! Where a visitor came from: the referrers we name, and the source and medium one history
//! entry gives.

use super::history::UrlHistoryEntry;
use super::routes::strip_query;

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
pub(super) struct ParsedUrl {
    /// Lower case, without port, user info or trailing dot.
    pub(super) host: String,
    /// The URL without user info, query string and fragment (they may hold secrets).
    cleaned: String,
}

impl ParsedUrl {
    /// `scheme://host/path`, `//host/path` or (when it has a dot, or `single_label`) a bare
    /// `host/path`. `None` when there is no plausible host.
    pub(super) fn parse(raw: &str, single_label: bool) -> Option<Self> {
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
pub(super) struct Referrer {
    pub(super) source: String,
    pub(super) medium: Option<String>,
    pub(super) url: Option<String>,
}

/// Ghost's order: an explicit `ref` (a newsletter, a known name, else as given); else a
/// known referring site; else `utm_source` (known, else as given); else the referring host.
/// Medium: the known source's, else the entry's `referrer_medium`, the known referring
/// site's, `utm_medium`.
pub(super) fn entry_referrer(entry: &UrlHistoryEntry, site: Option<&str>) -> Option<Referrer> {
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
