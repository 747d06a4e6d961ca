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

use serde::{Deserialize, Serialize};

mod history;
mod referrers;
mod routes;
#[cfg(test)]
mod tests;

pub use history::{HistoryError, UrlHistory, UrlHistoryEntry};
pub use referrers::{KnownSource, EMAIL, KNOWN_SOURCES, PAYMENT_DOMAINS, SEARCH, SOCIAL};
pub use routes::{PatternError, ResourceType, RoutePatterns};

use referrers::{entry_referrer, ParsedUrl};
use routes::strip_query;

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
            Self::Import => ("Imported", "Member Importer"),
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
