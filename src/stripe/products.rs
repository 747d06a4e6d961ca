//! A tier's Stripe product and prices, an offer's coupon and promotion code (issue #16):
//! created through the API with idempotency keys derived from the tier (and the amount) or the
//! offer, so a retried call (ours after a 5xx or a lost answer, or an admin's repeated request
//! for the same tier) creates each object once.

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

/// A coupon for an offer: `percent_off` or `amount_off` (in `currency`), for `duration`
/// (`once`, `repeating` with `months`, `forever`), limited to the tier's product and to
/// `max_redemptions`; returns its id.
pub async fn create_coupon(
    api: &StripeApi,
    offer_id: uuid::Uuid,
    coupon: &Coupon<'_>,
) -> Result<String, CallError> {
    let mut form = vec![
        ("name", coupon.name.to_owned()),
        ("duration", coupon.duration.to_owned()),
        ("applies_to[products][0]", coupon.product.to_owned()),
        ("metadata[memberledger_offer_id]", offer_id.to_string()),
    ];
    match coupon.off {
        Off::Percent(p) => form.push(("percent_off", p.to_string())),
        Off::Amount(a) => {
            form.push(("amount_off", a.to_string()));
            form.push(("currency", coupon.currency.to_owned()));
        }
    }
    if let Some(months) = coupon.months {
        form.push(("duration_in_months", months.to_string()));
    }
    if let Some(limit) = coupon.max_redemptions {
        form.push(("max_redemptions", limit.to_string()));
    }
    let created = api
        .raw_json(
            "create_coupon",
            &format!("offer-{offer_id}-coupon"),
            StripeMethod::Post,
            "/coupons",
            None,
            Some(&form),
        )
        .await?;
    id_of(&created)
}

/// The promotion code buyers type at Checkout for an offer's `coupon`: `code`, limited to
/// `max_redemptions`; returns its id. The API version async-stripe pins names the coupon as
/// `promotion[coupon]` (with `promotion[type]=coupon`), where older versions took `coupon`.
pub async fn create_promotion_code(
    api: &StripeApi,
    offer_id: uuid::Uuid,
    coupon: &str,
    code: &str,
    max_redemptions: Option<u32>,
) -> Result<String, CallError> {
    let mut form = vec![
        ("promotion[type]", "coupon".to_owned()),
        ("promotion[coupon]", coupon.to_owned()),
        ("code", code.to_owned()),
        ("metadata[memberledger_offer_id]", offer_id.to_string()),
    ];
    if let Some(limit) = max_redemptions {
        form.push(("max_redemptions", limit.to_string()));
    }
    let created = api
        .raw_json(
            "create_promotion_code",
            &format!("offer-{offer_id}-promotion-code"),
            StripeMethod::Post,
            "/promotion_codes",
            None,
            Some(&form),
        )
        .await?;
    id_of(&created)
}

/// Deactivates an archived offer's promotion code, so Checkout no longer takes its code
/// (Stripe never deletes promotion codes). Deactivating an inactive one changes nothing.
pub async fn deactivate_promotion_code(
    api: &StripeApi,
    offer_id: uuid::Uuid,
    promotion_code: &str,
) -> Result<(), CallError> {
    api.raw_json(
        "deactivate_promotion_code",
        &format!("offer-{offer_id}-promotion-code-deactivate"),
        StripeMethod::Post,
        &format!("/promotion_codes/{promotion_code}"),
        None,
        Some(&[("active", "false".to_owned())]),
    )
    .await?;
    Ok(())
}

/// What a coupon takes off.
pub enum Off {
    Percent(u8),
    Amount(i64),
}

/// A coupon's terms.
pub struct Coupon<'a> {
    pub name: &'a str,
    pub off: Off,
    pub currency: &'a str,
    pub duration: &'a str,
    pub months: Option<u32>,
    pub max_redemptions: Option<u32>,
    pub product: &'a str,
}
