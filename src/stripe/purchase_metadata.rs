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
