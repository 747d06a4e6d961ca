//! The metadata our checkouts put on Stripe objects (Checkout Sessions, their payment intents
//! and subscriptions) for the webhooks to act on: written by the checkout APIs, read back by
//! the translator.
//!
//! A purchase adding to an existing subscription carries `add_to_existing = "true"`,
//! `existing_subscription_id`, `purchase_id`, `purchase_type` (`site` with `sites`, or
//! `quantity` with `quantity`) and the price its items are priced like
//! ([`item_price_metadata`]). A new subscription's checkout carries `purchase_type`, and for
//! sites `site` and `sites`, with the item price when there is more than one site.

use aggregates::{BillingInterval, PurchaseType};
use anyhow::Context;
use serde_json::Value;
use uuid::Uuid;

use super::client::NewItem;

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
        ("product_id".to_owned(), product_id.to_owned()),
        ("unit_amount".to_owned(), unit_amount.to_string()),
        ("currency".to_owned(), currency.to_owned()),
        ("interval".to_owned(), interval.to_owned()),
        ("interval_count".to_owned(), interval_count.to_string()),
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
        product_id: field("product_id")?.to_owned(),
        unit_amount: field("unit_amount")?
            .parse()
            .context("metadata.unit_amount")?,
        currency: field("currency")?.to_owned(),
        interval: BillingInterval::parse(field("interval")?)
            .context("metadata.interval is not an interval")?,
        interval_count: field("interval_count")?
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
    object["metadata"]["add_to_existing"] == "true"
}

/// Whether one of our checkouts made the object: they all name the purchase type.
pub fn from_our_checkout(object: &Value) -> bool {
    !object["metadata"]["purchase_type"].is_null()
}

/// Whether the object pays for license seats (a `quantity` purchase) rather than sites.
pub fn is_license_purchase(object: &Value) -> bool {
    object["metadata"]["purchase_type"] == PurchaseType::Quantity.as_str()
}

/// The sites a new subscription's checkout bought, comma-separated, when there are several
/// (the first is the price's item).
pub fn checkout_sites(session: &Value) -> Option<&str> {
    text(&session["metadata"]["sites"]).filter(|sites| sites.contains(','))
}

/// The license purchase a session or payment intent pays for: its id and how many keys.
pub fn license_purchase(object: &Value) -> anyhow::Result<(Uuid, u32)> {
    let purchase_id = metadata_field(object, "purchase_id")?
        .parse()
        .context("metadata.purchase_id is not a UUID")?;
    let quantity = metadata_field(object, "quantity")?
        .parse()
        .context("metadata.quantity is not a count")?;
    Ok((purchase_id, quantity))
}

/// The purchase a session or payment intent pays for: `metadata.purchase_id`, or for a session
/// of a purchase recorded before purchase ids, the session's id.
pub fn purchase_key(object: &Value) -> Option<String> {
    text(&object["metadata"]["purchase_id"])
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
        let mut session = fixture("checkout.session");
        let mut metadata = serde_json::Map::from_iter(
            item_price_metadata("prod_QXg1hqf4jFNsqG", 2000, "usd", "month", 1)
                .map(|(k, v)| (k, json!(v))),
        );
        for (key, value) in [
            ("add_to_existing", "true".to_owned()),
            (
                "existing_subscription_id",
                "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".to_owned(),
            ),
            ("purchase_id", purchase_id.to_string()),
            ("purchase_type", "quantity".to_owned()),
            ("quantity", "3".to_owned()),
        ] {
            metadata.insert(key.to_owned(), json!(value));
        }
        session["metadata"] = Value::Object(metadata);
        session
    }

    #[test]
    fn new_item_is_priced_as_item_price_metadata_wrote() {
        let session = license_session(Uuid::from_u128(1));
        let item = new_item(
            &session,
            "sub_1",
            3,
            vec![("purchase_type", "quantity".to_owned())],
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
            std::collections::HashMap::from([("purchase_type".to_owned(), "quantity".to_owned())])
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
        session["metadata"]["interval"] = json!("fortnight");
        let err = new_item(&session, "sub_1", 1, Vec::new())
            .err()
            .expect("bad interval");
        assert_eq!(err.to_string(), "metadata.interval is not an interval");
    }

    #[test]
    fn metadata_field_names_the_object_missing_it() {
        let session = license_session(Uuid::from_u128(1));
        assert_eq!(metadata_field(&session, "quantity").expect("there"), "3");
        let err = metadata_field(&fixture("payment_intent"), "sites").expect_err("absent");
        assert_eq!(
            err.to_string(),
            "pi_1PgafyB7WZ01zgkWSjxsAJo3 has no metadata.sites"
        );
        let err =
            metadata_field(&json!({ "metadata": { "sites": "" } }), "sites").expect_err("empty");
        assert_eq!(err.to_string(), "the object has no metadata.sites");
    }

    #[test]
    fn only_an_addition_to_an_existing_subscription_adds_to_existing() {
        assert!(!adds_to_existing(&fixture("checkout.session")));
        assert!(adds_to_existing(&license_session(Uuid::from_u128(1))));
        let mut intent = fixture("payment_intent");
        intent["metadata"]["add_to_existing"] = json!(true);
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
        subscription["metadata"]["purchase_type"] = json!("site");
        assert!(from_our_checkout(&subscription));
        assert!(!is_license_purchase(&subscription));
        subscription["metadata"]["purchase_type"] = json!("quantity");
        assert!(is_license_purchase(&subscription));
    }

    #[test]
    fn checkout_sites_are_there_only_for_several_sites() {
        let mut session = fixture("checkout.session");
        assert_eq!(checkout_sites(&session), None);
        session["metadata"] = json!({ "site": "a.com", "sites": "a.com" });
        assert_eq!(
            checkout_sites(&session),
            None,
            "one site is the price's item"
        );
        session["metadata"]["sites"] = json!("a.com,b.com");
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
        session["metadata"]["quantity"] = json!("three");
        let err = license_purchase(&session).expect_err("not a count");
        assert_eq!(err.to_string(), "metadata.quantity is not a count");
        session["metadata"]["purchase_id"] = json!("p-1");
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
        intent["metadata"]["purchase_id"] = json!(purchase_id.to_string());
        assert_eq!(purchase_key(&intent), Some(purchase_id.to_string()));
    }
}
