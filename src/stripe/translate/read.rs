//! Pure readers of Stripe's JSON objects: ids, amounts, periods and customer details, from
//! wherever the API version at hand keeps them. No I/O.
//!
//! Webhooks arrive in the account's default API version, which can be years old, so every
//! shape since 2019 is read (examples in `stripe-fixtures/old_shapes/`):
//! - a subscription item's price is its `price`, else its `plan` (items carried only a plan
//!   before prices; a plan keeps `amount` and `interval` where a price has `unit_amount` and
//!   `recurring.interval`);
//! - the period is on the subscription, else on its items (2025-03-31.basil moved it);
//! - an invoice's subscription is `subscription`, else `parent.subscription_details` (basil),
//!   else its subscription lines' (`lines.data[].subscription`, or their `parent`);
//! - an invoice's payment intent is `payment_intent`, else the first of `payments` (basil);
//! - a session's buyer is `customer_details.email`, else `customer_email` (before 2020);
//! - a subscription's discounts are `discounts` (ids, or objects when expanded) and the
//!   single `discount` (an object, in every version that has it); a discount's coupon is its
//!   `coupon`, else `source.coupon` (2025 versions), an object or only an id.
//!
//! What cannot be read fails with the field it looked for, never as an empty result.

use aggregates::{
    BillingInterval, Discount, DiscountDuration, DiscountOff, Payment, Price, PurchaseType,
    SiteDomain, StripeSubscriptionState, SubscriptionCommand, SubscriptionItem, SubscriptionStatus,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::stripe::purchase_metadata::key;

#[cfg(test)]
mod tests;

/// A Stripe id field that may be a plain id or an expanded object.
pub fn id_of(value: &Value) -> Option<&str> {
    value
        .as_str()
        .or_else(|| value["id"].as_str())
        .filter(|s| !s.is_empty())
}

pub(super) fn text(value: &Value) -> Option<&str> {
    value.as_str().filter(|s| !s.is_empty())
}

pub(super) fn time(value: &Value) -> Option<DateTime<Utc>> {
    value.as_i64().and_then(|t| DateTime::from_timestamp(t, 0))
}

/// What an object tells of its customer, for finding or creating the member.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Contact<'a> {
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    /// Our member id, as a checkout named it.
    pub member_id: Option<&'a str>,
}

/// A Checkout Session's buyer: the details they entered, else the email the session was
/// created with; the member our checkout named, else the client reference.
pub(super) fn session_contact(session: &Value) -> Contact<'_> {
    Contact {
        email: text(&session["customer_details"]["email"])
            .or_else(|| text(&session["customer_email"])),
        name: text(&session["customer_details"]["name"]),
        member_id: text(&session["metadata"][key::MEMBER_ID])
            .or_else(|| text(&session["client_reference_id"])),
    }
}

/// A subscription names only the member our checkout put in its metadata.
pub(super) fn subscription_contact(subscription: &Value) -> Contact<'_> {
    Contact {
        email: None,
        name: None,
        member_id: text(&subscription["metadata"][key::MEMBER_ID]),
    }
}

pub(super) fn invoice_contact(invoice: &Value) -> Contact<'_> {
    Contact {
        email: text(&invoice["customer_email"]),
        name: text(&invoice["customer_name"]),
        member_id: None,
    }
}

/// The site a Checkout Session's custom field names (key `site`, `domain` or `website`, as a
/// text or dropdown field), when it is a valid domain.
pub(super) fn custom_field_site(session: &Value) -> Option<SiteDomain> {
    session["custom_fields"]
        .as_array()?
        .iter()
        .filter(|field| {
            field["key"].as_str().is_some_and(|key| {
                ["site", "domain", "website"]
                    .iter()
                    .any(|k| key.eq_ignore_ascii_case(k))
            })
        })
        .find_map(|field| {
            let raw = text(&field["text"]["value"]).or_else(|| text(&field["dropdown"]["value"]))?;
            SiteDomain::parse(raw)
                .map_err(|err| tracing::warn!(site = raw, error = %err, "ignoring an invalid site in a checkout custom field"))
                .ok()
        })
}

/// Whether a Checkout Session or a payment intent is paid.
pub(super) fn is_paid(object: &Value) -> bool {
    if object["object"] == "checkout.session" {
        object["payment_status"] == "paid"
    } else {
        object["status"] == "succeeded"
    }
}

/// The subscription an invoice bills: `subscription` in older API versions,
/// `parent.subscription_details.subscription` in newer ones, else the one its subscription
/// lines name.
pub(super) fn invoice_subscription(invoice: &Value) -> Option<&str> {
    id_of(&invoice["subscription"])
        .or_else(|| id_of(&invoice["parent"]["subscription_details"]["subscription"]))
        .or_else(|| {
            invoice["lines"]["data"]
                .as_array()?
                .iter()
                .find_map(line_subscription)
        })
}

/// The subscription an invoice line bills: `subscription` (before basil) or, on a line whose
/// parent is a subscription item, `parent.subscription_item_details.subscription`.
fn line_subscription(line: &Value) -> Option<&str> {
    id_of(&line["subscription"]).or_else(|| {
        let parent = &line["parent"];
        (parent["type"] == "subscription_item_details")
            .then(|| id_of(&parent["subscription_item_details"]["subscription"]))
            .flatten()
    })
}

/// Whether an invoice says it bills a subscription (`billing_reason` `subscription_create`,
/// `subscription_cycle`, ...): one whose subscription cannot be found is an event we failed to
/// understand, not an invoice to ignore.
pub(super) fn invoice_is_for_subscription(invoice: &Value) -> bool {
    text(&invoice["billing_reason"]).is_some_and(|r| r.starts_with("subscription"))
}

/// The payment intent that paid an invoice: `payment_intent` in older API versions, the
/// first of `payments` in newer ones.
pub(super) fn invoice_payment_intent(invoice: &Value) -> Option<&str> {
    id_of(&invoice["payment_intent"])
        .or_else(|| id_of(&invoice["payments"]["data"][0]["payment"]["payment_intent"]))
}

/// A paid invoice's payment. The period is its first line's, else the invoice's; the time it
/// was paid, else the event's `created`.
pub(super) fn payment(invoice: &Value, member_id: Uuid, created: i64) -> anyhow::Result<Payment> {
    Ok(Payment {
        invoice_id: text(&invoice["id"])
            .context("the invoice has no id")?
            .to_owned(),
        member_id,
        customer_id: id_of(&invoice["customer"])
            .context("the invoice has no customer")?
            .to_owned(),
        amount_paid: invoice["amount_paid"]
            .as_i64()
            .context("the invoice has no amount_paid")?,
        currency: text(&invoice["currency"])
            .context("the invoice has no currency")?
            .to_owned(),
        billing_reason: text(&invoice["billing_reason"]).map(str::to_owned),
        payment_intent_id: invoice_payment_intent(invoice).map(str::to_owned),
        period_start: time(&invoice["lines"]["data"][0]["period"]["start"])
            .or_else(|| time(&invoice["period_start"])),
        period_end: time(&invoice["lines"]["data"][0]["period"]["end"])
            .or_else(|| time(&invoice["period_end"])),
        paid_at: time(&invoice["status_transitions"]["paid_at"])
            .or_else(|| DateTime::from_timestamp(created, 0))
            .unwrap_or_default(),
    })
}

/// The command recording an invoice's failed payment, at the event's `created`.
pub(super) fn payment_failure(
    invoice: &Value,
    member_id: Uuid,
    created: i64,
) -> anyhow::Result<SubscriptionCommand> {
    Ok(SubscriptionCommand::RecordPaymentFailure {
        invoice_id: text(&invoice["id"])
            .context("the invoice has no id")?
            .to_owned(),
        member_id,
        customer_id: id_of(&invoice["customer"])
            .context("the invoice has no customer")?
            .to_owned(),
        amount_due: invoice["amount_due"].as_i64().unwrap_or(0),
        currency: text(&invoice["currency"]).unwrap_or("usd").to_owned(),
        attempt_count: invoice["attempt_count"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        failed_at: DateTime::from_timestamp(created, 0).unwrap_or_default(),
    })
}

/// The command recording a charge's refunds of `invoice_id`, at the event's `created`.
pub(super) fn refund(
    charge: &Value,
    invoice_id: String,
    member_id: Uuid,
    created: i64,
) -> anyhow::Result<SubscriptionCommand> {
    Ok(SubscriptionCommand::RecordRefund {
        charge_id: text(&charge["id"])
            .context("the charge has no id")?
            .to_owned(),
        invoice_id: Some(invoice_id),
        member_id,
        customer_id: id_of(&charge["customer"])
            .context("the charge has no customer")?
            .to_owned(),
        amount_refunded: charge["amount_refunded"]
            .as_i64()
            .context("the charge has no amount_refunded")?,
        currency: text(&charge["currency"])
            .context("the charge has no currency")?
            .to_owned(),
        refunded_at: DateTime::from_timestamp(created, 0).unwrap_or_default(),
    })
}

/// Reads a Stripe subscription object.
pub fn subscription_state(
    object: &Value,
    member_id: Uuid,
) -> anyhow::Result<StripeSubscriptionState> {
    let status_text = text(&object["status"]).context("the subscription has no status")?;
    let status = SubscriptionStatus::parse(status_text)
        .with_context(|| format!("unknown subscription status {status_text:?}"))?;
    // Every version lists the items; none means a shape we do not know, not a subscription
    // without items.
    let items_json = object["items"]["data"]
        .as_array()
        .map(Vec::as_slice)
        .context("the subscription has no `items.data`")?;
    let mut items = items_json
        .iter()
        .map(subscription_item)
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A checkout from `POST /v1/checkout/sessions` names its (first) site in the
    // subscription's metadata; the price's item, the only one Stripe knows no site of, is the
    // site's. Later sites carry their own `metadata.site`; license purchases their id.
    if let Some(site) = text(&object["metadata"][key::SITE]).and_then(|s| SiteDomain::parse(s).ok())
    {
        let mut unnamed = items
            .iter_mut()
            .filter(|i| i.site.is_none() && i.license_purchase_id.is_none());
        if let (Some(item), None) = (unnamed.next(), unnamed.next()) {
            item.site = Some(site.to_string());
            item.purchase_type = PurchaseType::Site;
        }
    }
    let first_item = items_json.first().unwrap_or(&Value::Null);
    Ok(StripeSubscriptionState {
        subscription_id: text(&object["id"])
            .context("the subscription has no id")?
            .to_owned(),
        customer_id: id_of(&object["customer"])
            .context("the subscription has no customer")?
            .to_owned(),
        member_id,
        status,
        items,
        // Newer API versions keep the period on the items.
        current_period_start: time(&object["current_period_start"])
            .or_else(|| time(&first_item["current_period_start"])),
        current_period_end: time(&object["current_period_end"])
            .or_else(|| time(&first_item["current_period_end"])),
        cancel_at_period_end: object["cancel_at_period_end"].as_bool().unwrap_or(false),
        cancel_at: time(&object["cancel_at"]),
        canceled_at: time(&object["canceled_at"]),
        created: time(&object["created"]).context("the subscription has no created time")?,
        discounts: subscription_discounts(object)
            .iter()
            .filter_map(SubscriptionDiscount::discount)
            .collect(),
        offer_id: metadata_offer_id(object),
    })
}

/// The offer our checkout named in the subscription's metadata (`offer_id`), when it is one.
pub(super) fn metadata_offer_id(subscription: &Value) -> Option<Uuid> {
    let raw = text(&subscription["metadata"][key::OFFER_ID])?;
    raw.parse()
        .map_err(|err| tracing::warn!(raw, error = %err, "ignoring an invalid offer_id in subscription metadata"))
        .ok()
}

/// A discount on a subscription as its object shows it: with its coupon's terms when the
/// coupon is expanded, else only the ids it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SubscriptionDiscount {
    pub discount_id: Option<String>,
    pub coupon_id: Option<String>,
    /// The coupon's terms: what it takes off and for how long.
    pub terms: Option<(DiscountOff, DiscountDuration)>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// The offer the coupon was made for (`metadata.memberledger_offer_id`, ours).
    pub coupon_offer_id: Option<Uuid>,
}

impl SubscriptionDiscount {
    /// The discount, when its terms are known.
    pub fn discount(&self) -> Option<Discount> {
        let (off, duration) = self.terms.clone()?;
        Some(Discount {
            discount_id: self.discount_id.clone(),
            coupon_id: self.coupon_id.clone(),
            off,
            duration,
            end: self.end,
        })
    }
}

/// Every discount on a subscription: `discounts` (ids, or objects when expanded), and the
/// single `discount`, which fills in the terms of the entry with its id (or is added when
/// `discounts` does not list it, as in versions before `discounts`).
pub(super) fn subscription_discounts(subscription: &Value) -> Vec<SubscriptionDiscount> {
    let currency = text(&subscription["currency"])
        .or_else(|| text(&subscription["items"]["data"][0]["price"]["currency"]));
    let mut all: Vec<SubscriptionDiscount> = subscription["discounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| read_discount(entry, currency))
        .collect();
    if subscription["discount"].is_object() {
        if let Some(single) = read_discount(&subscription["discount"], currency) {
            let listed = all
                .iter_mut()
                .find(|d| d.discount_id.is_some() && d.discount_id == single.discount_id);
            match listed {
                Some(entry) if entry.terms.is_none() => *entry = single,
                Some(_) => {}
                None => all.push(single),
            }
        }
    }
    all
}

/// One discount: a `di_...` id, or a discount object (its coupon expanded or an id).
fn read_discount(entry: &Value, currency: Option<&str>) -> Option<SubscriptionDiscount> {
    if let Some(id) = text(entry) {
        return Some(SubscriptionDiscount {
            discount_id: Some(id.to_owned()),
            coupon_id: None,
            terms: None,
            start: None,
            end: None,
            coupon_offer_id: None,
        });
    }
    if !entry.is_object() {
        return None;
    }
    let coupon = if entry["coupon"].is_null() {
        &entry["source"]["coupon"]
    } else {
        &entry["coupon"]
    };
    Some(SubscriptionDiscount {
        discount_id: text(&entry["id"]).map(str::to_owned),
        coupon_id: id_of(coupon).map(str::to_owned),
        terms: coupon_terms(coupon, currency),
        start: time(&entry["start"]),
        end: time(&entry["end"]),
        coupon_offer_id: text(&coupon["metadata"]["memberledger_offer_id"])
            .and_then(|raw| raw.parse().ok()),
    })
}

/// An expanded coupon's terms: `percent_off` (two decimals at most) or `amount_off` (in its
/// `currency`, else the subscription's), and `duration` (with `duration_in_months`). `None`
/// for an id or a coupon without either.
fn coupon_terms(coupon: &Value, currency: Option<&str>) -> Option<(DiscountOff, DiscountDuration)> {
    if !coupon.is_object() {
        return None;
    }
    let off = if let Some(hundredths) = percent_hundredths(&coupon["percent_off"]) {
        DiscountOff::PercentHundredths(hundredths)
    } else {
        let amount = coupon["amount_off"].as_i64()?;
        let currency = text(&coupon["currency"]).or(currency)?;
        DiscountOff::Amount {
            amount,
            currency: currency.to_ascii_lowercase(),
        }
    };
    let duration = match text(&coupon["duration"])? {
        "once" => DiscountDuration::Once,
        "forever" => DiscountDuration::Forever,
        "repeating" => DiscountDuration::Repeating(
            coupon["duration_in_months"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())?,
        ),
        other => {
            tracing::warn!(duration = other, "ignoring a coupon of an unknown duration");
            return None;
        }
    };
    Some((off, duration))
}

/// Stripe's `percent_off` (a decimal number such as `25.5`) in hundredths of a percent, read
/// from its decimal text (no floating point); `None` when absent or not 0 to 100 with at most
/// two decimals.
fn percent_hundredths(value: &Value) -> Option<u32> {
    if !value.is_number() {
        return None;
    }
    let text = value.to_string();
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 2 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u32 = whole.parse().ok()?;
    let hundredths: u32 = format!("{fraction:0<2}").parse().ok()?;
    let total = whole.checked_mul(100)?.checked_add(hundredths)?;
    (total <= 10_000).then_some(total)
}

fn subscription_item(item: &Value) -> anyhow::Result<SubscriptionItem> {
    let item_id = text(&item["id"]).context("a subscription item has no id")?;
    let price = item_price(item, item_id)?;
    let license_purchase_id = text(&item["metadata"][key::LICENSE_PURCHASE_ID])
        .and_then(|raw| match raw.parse::<Uuid>() {
            Ok(id) => Some(id),
            Err(err) => {
                tracing::warn!(item_id, raw, error = %err, "ignoring an invalid license_purchase_id in item metadata");
                None
            }
        });
    let site = text(&item["metadata"][key::SITE]).and_then(|raw| match SiteDomain::parse(raw) {
        Ok(site) => Some(site.to_string()),
        Err(err) => {
            tracing::warn!(item_id, site = raw, error = %err, "ignoring an invalid site in item metadata");
            None
        }
    });
    Ok(SubscriptionItem {
        item_id: item_id.to_owned(),
        price,
        quantity: item["quantity"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1),
        purchase_type: if site.is_some() {
            PurchaseType::Site
        } else {
            PurchaseType::Quantity
        },
        site,
        license_purchase_id,
    })
}

/// An item's price: its `price` (since prices), else its `plan` (before them, and beside
/// `price` until 2022 shapes). A plan has `amount`/`amount_decimal` and `interval`/
/// `interval_count` at its top; a price `unit_amount`/`unit_amount_decimal` and `recurring`.
fn item_price(item: &Value, item_id: &str) -> anyhow::Result<Price> {
    let (price, amount_key, recurring) = if text(&item["price"]["id"]).is_some() {
        let price = &item["price"];
        (price, "unit_amount", &price["recurring"])
    } else if text(&item["plan"]["id"]).is_some() {
        let plan = &item["plan"];
        (plan, "amount", plan)
    } else {
        anyhow::bail!("subscription item {item_id} has neither `price.id` nor `plan.id`");
    };
    let interval_text = text(&recurring["interval"]).unwrap_or("month");
    let interval = BillingInterval::parse(interval_text)
        .with_context(|| format!("item {item_id}: unknown interval {interval_text:?}"))?;
    let unit_amount = price[amount_key]
        .as_i64()
        .or_else(|| {
            text(&price[format!("{amount_key}_decimal")])
                .and_then(|d| d.split('.').next()?.parse().ok())
        })
        .unwrap_or(0);
    Ok(Price {
        price_id: text(&price["id"]).unwrap_or_default().to_owned(),
        product_id: id_of(&price["product"]).map(str::to_owned),
        unit_amount,
        currency: text(&price["currency"]).unwrap_or("usd").to_owned(),
        interval,
        interval_count: recurring["interval_count"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1)
            .max(1),
    })
}
