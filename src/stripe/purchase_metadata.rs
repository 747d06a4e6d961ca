//! The metadata our checkouts put on Stripe objects (Checkout Sessions, their payment intents
//! and subscriptions) for the webhooks to act on: written by the checkout APIs, read back by
//! the translator.
//!
//! A purchase adding to an existing subscription carries `add_to_existing = "true"`,
//! `existing_subscription_id`, `purchase_id`, `purchase_type` (`site` with `sites`, or
//! `quantity` with `quantity`) and the price its items are priced like
//! ([`item_price_metadata`]). A new subscription's checkout carries `purchase_type`, and for
//! sites `site` and `sites`, with the item price when there is more than one site.
//!
//! The checkout APIs write it with [`Addition`] and [`NewSubscription`]; every key is a
//! constant in [`key`], so the writers and the readers here cannot name a key differently.

use std::collections::HashMap;

use aggregates::attribution::Attribution;
use aggregates::{BillingInterval, PurchaseType, SiteDomain};
use anyhow::Context;
use serde_json::Value;
use uuid::Uuid;

use super::client::NewItem;

/// The metadata keys, shared by the writers and the readers here so they cannot drift apart.
pub mod key {
    pub const ADD_TO_EXISTING: &str = "add_to_existing";
    pub const EXISTING_SUBSCRIPTION_ID: &str = "existing_subscription_id";
    pub const PURCHASE_ID: &str = "purchase_id";
    pub const MEMBER_ID: &str = "member_id";
    pub const PRICE_ID: &str = "price_id";
    pub const PURCHASE_TYPE: &str = "purchase_type";
    pub const SITE: &str = "site";
    pub const SITES: &str = "sites";
    pub const QUANTITY: &str = "quantity";
    /// On a subscription item: the license purchase whose seats it is.
    pub const LICENSE_PURCHASE_ID: &str = "license_purchase_id";
    pub const PRODUCT_ID: &str = "product_id";
    pub const UNIT_AMOUNT: &str = "unit_amount";
    pub const CURRENCY: &str = "currency";
    pub const INTERVAL: &str = "interval";
    pub const INTERVAL_COUNT: &str = "interval_count";
    pub const ATTRIBUTION_TYPE: &str = "attribution_type";
    pub const ATTRIBUTION_ID: &str = "attribution_id";
    pub const ATTRIBUTION_URL: &str = "attribution_url";
    pub const REFERRER_SOURCE: &str = "referrer_source";
    pub const REFERRER_MEDIUM: &str = "referrer_medium";
    pub const REFERRER_URL: &str = "referrer_url";
    /// A checkout by tier: the tier and its cadence (`month` or `year`).
    pub const TIER_ID: &str = "tier_id";
    pub const CADENCE: &str = "cadence";
    /// A checkout with an offer: the offer applied.
    pub const OFFER_ID: &str = "offer_id";
}

fn text(value: &Value) -> Option<&str> {
    value.as_str().filter(|s| !s.is_empty())
}

/// The metadata a checkout carries for the items added once it is paid, read back by
/// [`new_item`]: the price they are priced like.
pub fn item_price_metadata(
    product_id: &str,
    unit_amount: i64,
    currency: &str,
    interval: &str,
    interval_count: impl ToString,
) -> [(String, String); 5] {
    [
        (key::PRODUCT_ID.to_owned(), product_id.to_owned()),
        (key::UNIT_AMOUNT.to_owned(), unit_amount.to_string()),
        (key::CURRENCY.to_owned(), currency.to_owned()),
        (key::INTERVAL.to_owned(), interval.to_owned()),
        (key::INTERVAL_COUNT.to_owned(), interval_count.to_string()),
    ]
}

/// What a purchase adds to an existing subscription.
#[derive(Debug, Clone, Copy)]
pub enum Added<'a> {
    /// Sites, one item each, read back by the translator from `sites`.
    Sites(&'a [String]),
    /// License seats, read back by [`license_purchase`].
    Seats(u32),
}

/// A purchase adding to an existing subscription (`POST /v1/me/sites`,
/// `POST /v1/me/license-purchases`), read back by [`adds_to_existing`], [`purchase_key`],
/// [`is_license_purchase`], [`license_purchase`] and [`new_item`].
#[derive(Debug, Clone, Copy)]
pub struct Addition<'a> {
    pub subscription_id: &'a str,
    pub purchase_id: Uuid,
    pub member_id: Uuid,
    /// The price of the item the addition is priced like.
    pub price_id: &'a str,
    pub added: Added<'a>,
}

impl Addition<'_> {
    /// The session's metadata, with the price the added items get ([`item_price_metadata`]).
    pub fn metadata(&self, item_price: [(String, String); 5]) -> HashMap<String, String> {
        let mut metadata = HashMap::from([
            (key::ADD_TO_EXISTING.to_owned(), "true".to_owned()),
            (
                key::EXISTING_SUBSCRIPTION_ID.to_owned(),
                self.subscription_id.to_owned(),
            ),
            (key::PURCHASE_ID.to_owned(), self.purchase_id.to_string()),
            (key::MEMBER_ID.to_owned(), self.member_id.to_string()),
            (key::PRICE_ID.to_owned(), self.price_id.to_owned()),
        ]);
        metadata.extend(item_price);
        let (purchase_type, what, added) = match self.added {
            Added::Sites(sites) => (PurchaseType::Site, key::SITES, sites.join(",")),
            Added::Seats(quantity) => (PurchaseType::Quantity, key::QUANTITY, quantity.to_string()),
        };
        metadata.insert(
            key::PURCHASE_TYPE.to_owned(),
            purchase_type.as_str().to_owned(),
        );
        metadata.insert(what.to_owned(), added);
        metadata
    }
}

/// A new subscription's checkout (`POST /v1/checkout/sessions`), read back by
/// [`from_our_checkout`], [`checkout_sites`] and [`new_item`], and by the translator for the
/// member, the first site and the attribution.
#[derive(Debug, Clone, Copy)]
pub struct NewSubscription<'a> {
    /// The sites bought, the first the price's item; none for seats.
    pub sites: &'a [SiteDomain],
    /// The member, when the email already has one.
    pub member_id: Option<Uuid>,
    pub attribution: Option<&'a Attribution>,
    /// A checkout by tier: the tier and the cadence (`month` or `year`).
    pub tier: Option<(Uuid, &'a str)>,
}

impl NewSubscription<'_> {
    /// The session's (and subscription's) metadata; `item_price` for the sites beyond the
    /// first, added as items once paid.
    pub fn metadata(&self, item_price: Option<[(String, String); 5]>) -> HashMap<String, String> {
        let mut metadata = HashMap::new();
        metadata.extend(item_price.into_iter().flatten());
        let purchase_type = if self.sites.is_empty() {
            PurchaseType::Quantity
        } else {
            PurchaseType::Site
        };
        metadata.insert(
            key::PURCHASE_TYPE.to_owned(),
            purchase_type.as_str().to_owned(),
        );
        if let Some(site) = self.sites.first() {
            let sites = self
                .sites
                .iter()
                .map(SiteDomain::as_str)
                .collect::<Vec<_>>();
            metadata.insert(key::SITE.to_owned(), site.to_string());
            metadata.insert(key::SITES.to_owned(), sites.join(","));
        }
        if let Some(member_id) = self.member_id {
            metadata.insert(key::MEMBER_ID.to_owned(), member_id.to_string());
        }
        if let Some((tier_id, cadence)) = self.tier {
            metadata.insert(key::TIER_ID.to_owned(), tier_id.to_string());
            metadata.insert(key::CADENCE.to_owned(), cadence.to_owned());
        }
        if let Some(a) = self.attribution {
            let fields = [
                (
                    key::ATTRIBUTION_TYPE,
                    a.attribution_type.map(|t| t.as_str().to_owned()),
                ),
                (key::ATTRIBUTION_ID, a.attribution_id.clone()),
                (key::ATTRIBUTION_URL, a.attribution_url.clone()),
                (key::REFERRER_SOURCE, a.referrer_source.clone()),
                (key::REFERRER_MEDIUM, a.referrer_medium.clone()),
                (key::REFERRER_URL, a.referrer_url.clone()),
            ];
            for (name, value) in fields {
                if let Some(value) = value {
                    metadata.insert(name.to_owned(), clip(&value));
                }
            }
        }
        metadata
    }
}

/// Stripe caps metadata values at 500 characters.
fn clip(value: &str) -> String {
    value.chars().take(500).collect()
}

/// The metadata of a site's subscription item, for [`new_item`].
pub fn site_item_metadata(site: &str) -> Vec<(&'static str, String)> {
    vec![(key::SITE, site.to_owned())]
}

/// The metadata of a license purchase's subscription item, for [`new_item`].
pub fn seats_item_metadata(purchase_id: Uuid) -> Vec<(&'static str, String)> {
    vec![
        (key::LICENSE_PURCHASE_ID, purchase_id.to_string()),
        (
            key::PURCHASE_TYPE,
            PurchaseType::Quantity.as_str().to_owned(),
        ),
    ]
}

/// An item for `subscription_id` priced as the paying object's metadata says (see
/// [`item_price_metadata`]): an ad hoc price, since Stripe allows one item per price.
pub fn new_item(
    object: &Value,
    subscription_id: &str,
    quantity: u64,
    metadata: Vec<(&str, String)>,
) -> anyhow::Result<NewItem> {
    let field = |key| metadata_field(object, key);
    Ok(NewItem {
        subscription_id: subscription_id.to_owned(),
        product_id: field(key::PRODUCT_ID)?.to_owned(),
        unit_amount: field(key::UNIT_AMOUNT)?
            .parse()
            .context("metadata.unit_amount")?,
        currency: field(key::CURRENCY)?.to_owned(),
        interval: BillingInterval::parse(field(key::INTERVAL)?)
            .context("metadata.interval is not an interval")?,
        interval_count: field(key::INTERVAL_COUNT)?
            .parse()
            .context("metadata.interval_count")?,
        quantity,
        metadata: metadata
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    })
}

/// `metadata.<key>` of a Stripe object; an error naming the object when it is missing.
pub fn metadata_field<'a>(object: &'a Value, key: &str) -> anyhow::Result<&'a str> {
    text(&object["metadata"][key]).with_context(|| {
        let id = text(&object["id"]).unwrap_or("the object");
        format!("{id} has no metadata.{key}")
    })
}

/// Whether a session or payment intent pays for sites or seats added to an existing
/// subscription.
pub fn adds_to_existing(object: &Value) -> bool {
    object["metadata"][key::ADD_TO_EXISTING] == "true"
}

/// Whether one of our checkouts made the object: they all name the purchase type.
pub fn from_our_checkout(object: &Value) -> bool {
    !object["metadata"][key::PURCHASE_TYPE].is_null()
}

/// Whether the object pays for license seats (a `quantity` purchase) rather than sites.
pub fn is_license_purchase(object: &Value) -> bool {
    object["metadata"][key::PURCHASE_TYPE] == PurchaseType::Quantity.as_str()
}

/// The sites a new subscription's checkout bought, comma-separated, when there are several
/// (the first is the price's item).
pub fn checkout_sites(session: &Value) -> Option<&str> {
    text(&session["metadata"][key::SITES]).filter(|sites| sites.contains(','))
}

/// The license purchase a session or payment intent pays for: its id and how many keys.
pub fn license_purchase(object: &Value) -> anyhow::Result<(Uuid, u32)> {
    let purchase_id = metadata_field(object, key::PURCHASE_ID)?
        .parse()
        .context("metadata.purchase_id is not a UUID")?;
    let quantity = metadata_field(object, key::QUANTITY)?
        .parse()
        .context("metadata.quantity is not a count")?;
    Ok((purchase_id, quantity))
}

/// The purchase a session or payment intent pays for: `metadata.purchase_id`, or for a session
/// of a purchase recorded before purchase ids, the session's id.
pub fn purchase_key(object: &Value) -> Option<String> {
    text(&object["metadata"][key::PURCHASE_ID])
        .or_else(|| (object["object"] == "checkout.session").then(|| text(&object["id"]))?)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::stripe::fixtures::fixture;

    const SESSION_ID: &str = "cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY";

    /// Stripe's example session as `POST /v1/me/license-purchases` would have it made.
    fn license_session(purchase_id: Uuid) -> Value {
        let addition = Addition {
            subscription_id: "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
            purchase_id,
            member_id: Uuid::from_u128(7),
            price_id: "price_1PgafmB7WZ01zgkW6dKueIc5",
            added: Added::Seats(3),
        };
        session_with(addition.metadata(item_price()))
    }

    fn item_price() -> [(String, String); 5] {
        item_price_metadata("prod_QXg1hqf4jFNsqG", 2000, "usd", "month", 1)
    }

    /// Stripe's example session with `metadata` instead of its own.
    fn session_with(metadata: HashMap<String, String>) -> Value {
        let mut session = fixture("checkout.session");
        session["metadata"] = json!(metadata);
        session
    }

    /// `key=value` lines: the metadata as the checkout APIs wrote it before the builders, so
    /// that what Stripe gets stays the same.
    fn written(lines: &str) -> HashMap<String, String> {
        lines
            .lines()
            .filter_map(|line| line.trim().split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn new_item_is_priced_as_item_price_metadata_wrote() {
        let session = license_session(Uuid::from_u128(1));
        let item = new_item(
            &session,
            "sub_1",
            3,
            vec![(key::PURCHASE_TYPE, "quantity".to_owned())],
        )
        .expect("an item");
        assert_eq!(item.subscription_id, "sub_1");
        assert_eq!(item.product_id, "prod_QXg1hqf4jFNsqG");
        assert_eq!(item.unit_amount, 2000);
        assert_eq!(item.currency, "usd");
        assert_eq!(item.interval, BillingInterval::Month);
        assert_eq!(item.interval_count, 1);
        assert_eq!(item.quantity, 3);
        assert_eq!(
            item.metadata,
            HashMap::from([(key::PURCHASE_TYPE.to_owned(), "quantity".to_owned())])
        );
    }

    #[test]
    fn new_item_needs_the_whole_price() {
        let err = new_item(&fixture("checkout.session"), "sub_1", 1, Vec::new())
            .err()
            .expect("no price in the example's metadata");
        assert_eq!(
            err.to_string(),
            format!("{SESSION_ID} has no metadata.product_id")
        );
        let mut session = license_session(Uuid::from_u128(1));
        session["metadata"][key::INTERVAL] = json!("fortnight");
        let err = new_item(&session, "sub_1", 1, Vec::new())
            .err()
            .expect("bad interval");
        assert_eq!(err.to_string(), "metadata.interval is not an interval");
    }

    #[test]
    fn metadata_field_names_the_object_missing_it() {
        let session = license_session(Uuid::from_u128(1));
        assert_eq!(metadata_field(&session, key::QUANTITY).expect("there"), "3");
        let err = metadata_field(&fixture("payment_intent"), key::SITES).expect_err("absent");
        assert_eq!(
            err.to_string(),
            "pi_1PgafyB7WZ01zgkWSjxsAJo3 has no metadata.sites"
        );
        let err = metadata_field(&json!({ "metadata": { key::SITES: "" } }), key::SITES)
            .expect_err("empty");
        assert_eq!(err.to_string(), "the object has no metadata.sites");
    }

    #[test]
    fn only_an_addition_to_an_existing_subscription_adds_to_existing() {
        assert!(!adds_to_existing(&fixture("checkout.session")));
        assert!(adds_to_existing(&license_session(Uuid::from_u128(1))));
        let mut intent = fixture("payment_intent");
        intent["metadata"][key::ADD_TO_EXISTING] = json!(true);
        assert!(!adds_to_existing(&intent), "the string our checkouts write");
    }

    #[test]
    fn our_checkouts_name_the_purchase_type() {
        let mut subscription = fixture("subscription");
        assert!(
            !from_our_checkout(&subscription),
            "empty metadata in the example"
        );
        assert!(!is_license_purchase(&subscription));
        subscription["metadata"][key::PURCHASE_TYPE] = json!("site");
        assert!(from_our_checkout(&subscription));
        assert!(!is_license_purchase(&subscription));
        subscription["metadata"][key::PURCHASE_TYPE] = json!("quantity");
        assert!(is_license_purchase(&subscription));
    }

    #[test]
    fn checkout_sites_are_there_only_for_several_sites() {
        let mut session = fixture("checkout.session");
        assert_eq!(checkout_sites(&session), None);
        session["metadata"] = json!({ key::SITE: "a.com", key::SITES: "a.com" });
        assert_eq!(
            checkout_sites(&session),
            None,
            "one site is the price's item"
        );
        session["metadata"][key::SITES] = json!("a.com,b.com");
        assert_eq!(checkout_sites(&session), Some("a.com,b.com"));
    }

    #[test]
    fn license_purchase_reads_the_purchase_and_its_seats() {
        let purchase_id = Uuid::from_u128(9);
        let mut session = license_session(purchase_id);
        assert_eq!(
            license_purchase(&session).expect("a purchase"),
            (purchase_id, 3)
        );
        session["metadata"][key::QUANTITY] = json!("three");
        let err = license_purchase(&session).expect_err("not a count");
        assert_eq!(err.to_string(), "metadata.quantity is not a count");
        session["metadata"][key::PURCHASE_ID] = json!("p-1");
        let err = license_purchase(&session).expect_err("not a UUID");
        assert_eq!(err.to_string(), "metadata.purchase_id is not a UUID");
        let err = license_purchase(&fixture("checkout.session")).expect_err("absent");
        assert_eq!(
            err.to_string(),
            format!("{SESSION_ID} has no metadata.purchase_id")
        );
    }

    #[test]
    fn purchase_key_is_the_purchase_id_or_an_older_sessions_id() {
        let purchase_id = Uuid::from_u128(9);
        assert_eq!(
            purchase_key(&license_session(purchase_id)),
            Some(purchase_id.to_string())
        );
        assert_eq!(
            purchase_key(&fixture("checkout.session")),
            Some(SESSION_ID.to_owned()),
            "a session from before purchase ids"
        );
        assert_eq!(purchase_key(&fixture("payment_intent")), None);
        let mut intent = fixture("payment_intent");
        intent["metadata"][key::PURCHASE_ID] = json!(purchase_id.to_string());
        assert_eq!(purchase_key(&intent), Some(purchase_id.to_string()));
    }

    #[test]
    fn an_addition_of_seats_is_written_as_before() {
        let purchase_id = Uuid::from_u128(9);
        let session = license_session(purchase_id);
        let metadata: HashMap<String, String> =
            serde_json::from_value(session["metadata"].clone()).expect("strings");
        assert_eq!(
            metadata,
            written(
                "add_to_existing=true
                 existing_subscription_id=sub_1Pgc6rB7WZ01zgkWNy0Cn5nw
                 purchase_id=00000000-0000-0000-0000-000000000009
                 member_id=00000000-0000-0000-0000-000000000007
                 price_id=price_1PgafmB7WZ01zgkW6dKueIc5
                 product_id=prod_QXg1hqf4jFNsqG
                 unit_amount=2000
                 currency=usd
                 interval=month
                 interval_count=1
                 purchase_type=quantity
                 quantity=3"
            )
        );
        assert!(adds_to_existing(&session));
        assert!(from_our_checkout(&session));
        assert!(is_license_purchase(&session));
        assert_eq!(purchase_key(&session), Some(purchase_id.to_string()));
        assert_eq!(
            license_purchase(&session).expect("read back"),
            (purchase_id, 3)
        );
        assert_eq!(
            metadata_field(&session, key::EXISTING_SUBSCRIPTION_ID).expect("there"),
            "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
        );
        let item = new_item(&session, "sub_1", 3, Vec::new()).expect("priced");
        assert_eq!(
            (item.product_id.as_str(), item.unit_amount),
            ("prod_QXg1hqf4jFNsqG", 2000)
        );
    }

    #[test]
    fn an_addition_of_sites_is_written_as_before() {
        let sites = ["a.example.com".to_owned(), "b.example.com".to_owned()];
        let addition = Addition {
            subscription_id: "sub_1",
            purchase_id: Uuid::from_u128(1),
            member_id: Uuid::from_u128(2),
            price_id: "price_1",
            added: Added::Sites(&sites),
        };
        let metadata = addition.metadata(item_price_metadata("prod_1", 500, "eur", "year", 2));
        assert_eq!(
            metadata,
            written(
                "add_to_existing=true
                 existing_subscription_id=sub_1
                 purchase_id=00000000-0000-0000-0000-000000000001
                 member_id=00000000-0000-0000-0000-000000000002
                 price_id=price_1
                 product_id=prod_1
                 unit_amount=500
                 currency=eur
                 interval=year
                 interval_count=2
                 purchase_type=site
                 sites=a.example.com,b.example.com"
            )
        );
        let session = session_with(metadata);
        assert!(adds_to_existing(&session));
        assert!(from_our_checkout(&session));
        assert!(!is_license_purchase(&session));
        assert_eq!(purchase_key(&session), Some(Uuid::from_u128(1).to_string()));
        assert_eq!(
            metadata_field(&session, key::SITES).expect("there"),
            "a.example.com,b.example.com"
        );
        let item = new_item(&session, "sub_1", 1, Vec::new()).expect("priced");
        assert_eq!(item.interval, BillingInterval::Year);
        assert_eq!(item.interval_count, 2);
    }

    #[test]
    fn a_new_subscription_for_sites_is_written_as_before() {
        let sites =
            ["a.example.com", "b.example.com"].map(|s| SiteDomain::parse(s).expect("a domain"));
        let attribution = Attribution {
            attribution_type: Some(aggregates::attribution::ResourceType::Post),
            attribution_id: Some("hello".to_owned()),
            attribution_url: Some("/hello/".to_owned()),
            referrer_source: Some("Google".to_owned()),
            referrer_medium: Some("search".to_owned()),
            referrer_url: Some("x".repeat(600)),
            utm_source: Some("not written".to_owned()),
            ..Attribution::default()
        };
        let checkout = NewSubscription {
            sites: &sites,
            member_id: Some(Uuid::from_u128(3)),
            attribution: Some(&attribution),
            tier: None,
        };
        let metadata = checkout.metadata(Some(item_price()));
        let mut expected = written(
            "product_id=prod_QXg1hqf4jFNsqG
             unit_amount=2000
             currency=usd
             interval=month
             interval_count=1
             purchase_type=site
             site=a.example.com
             sites=a.example.com,b.example.com
             member_id=00000000-0000-0000-0000-000000000003
             attribution_type=post
             attribution_id=hello
             attribution_url=/hello/
             referrer_source=Google
             referrer_medium=search",
        );
        expected.insert(key::REFERRER_URL.to_owned(), "x".repeat(500));
        assert_eq!(
            metadata, expected,
            "values clipped to Stripe's 500 characters"
        );
        let session = session_with(metadata);
        assert!(from_our_checkout(&session));
        assert!(!adds_to_existing(&session));
        assert!(!is_license_purchase(&session));
        assert_eq!(
            checkout_sites(&session),
            Some("a.example.com,b.example.com")
        );
        let item =
            new_item(&session, "sub_1", 1, site_item_metadata("b.example.com")).expect("priced");
        assert_eq!(item.unit_amount, 2000);
        assert_eq!(
            item.metadata,
            HashMap::from([(key::SITE.to_owned(), "b.example.com".to_owned())])
        );
    }

    #[test]
    fn a_new_subscription_for_seats_is_written_as_before() {
        let checkout = NewSubscription {
            sites: &[],
            member_id: None,
            attribution: Some(&Attribution::default()),
            tier: None,
        };
        let metadata = checkout.metadata(None);
        assert_eq!(metadata, written("purchase_type=quantity"));
        let session = session_with(metadata);
        assert!(from_our_checkout(&session));
        assert!(is_license_purchase(&session));
        assert_eq!(checkout_sites(&session), None);
        let one_site = [SiteDomain::parse("a.example.com").expect("a domain")];
        let checkout = NewSubscription {
            sites: &one_site,
            member_id: None,
            attribution: None,
            tier: None,
        };
        assert_eq!(
            checkout.metadata(None),
            written(
                "purchase_type=site
                 site=a.example.com
                 sites=a.example.com"
            )
        );
    }

    #[test]
    fn a_license_purchases_item_names_it_as_before() {
        let purchase_id = Uuid::from_u128(9);
        let item = new_item(
            &license_session(purchase_id),
            "sub_1",
            3,
            seats_item_metadata(purchase_id),
        )
        .expect("priced");
        assert_eq!(
            item.metadata,
            written(
                "license_purchase_id=00000000-0000-0000-0000-000000000009
                 purchase_type=quantity"
            )
        );
    }
}
