//! A tier's Stripe product and prices (issue #16): created through the API with idempotency
//! keys derived from the tier and the amount, so a retried call (ours after a 5xx, or an
//! admin's repeated request for the same tier) creates each object once.

use stripe_client_core::StripeMethod;

use super::client::{CallError, StripeApi};

/// Creates the product a tier's prices belong to; returns its id.
pub async fn create_product(
    api: &StripeApi,
    tier_id: uuid::Uuid,
    name: &str,
    description: Option<&str>,
) -> Result<String, CallError> {
    let mut form = vec![
        ("name", name.to_owned()),
        ("metadata[memberledger_tier_id]", tier_id.to_string()),
    ];
    if let Some(description) = description {
        form.push(("description", description.to_owned()));
    }
    let product = api
        .raw_json(
            "create_product",
            &format!("tier-{tier_id}-product"),
            StripeMethod::Post,
            "/products",
            None,
            Some(&form),
        )
        .await?;
    id_of(&product)
}

/// Creates a recurring price of `product` (`interval`: `month` or `year`); returns its id.
pub async fn create_price(
    api: &StripeApi,
    tier_id: uuid::Uuid,
    product: &str,
    currency: &str,
    amount: i64,
    interval: &str,
) -> Result<String, CallError> {
    let form = [
        ("product", product.to_owned()),
        ("currency", currency.to_owned()),
        ("unit_amount", amount.to_string()),
        ("recurring[interval]", interval.to_owned()),
        ("metadata[memberledger_tier_id]", tier_id.to_string()),
    ];
    let price = api
        .raw_json(
            "create_price",
            &format!("tier-{tier_id}-{interval}-{currency}-{amount}-{product}"),
            StripeMethod::Post,
            "/prices",
            None,
            Some(&form),
        )
        .await?;
    id_of(&price)
}

fn id_of(object: &serde_json::Value) -> Result<String, CallError> {
    object["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CallError::Unavailable("Stripe answered without an id".to_owned()))
}
