//! What Stripe bills: subscription statuses, prices, items and what an item pays for. Shared by
//! the Subscription aggregate and the MRR arithmetic, so it imports neither.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Stripe's subscription statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Unpaid,
    Paused,
    Canceled,
}

/// How often a price bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BillingInterval {
    Day,
    Week,
    Month,
    Year,
}

/// A recurring price, amounts in the currency's minor unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Price {
    pub price_id: String,
    pub product_id: Option<String>,
    /// Per unit, minor units (e.g. cents).
    pub unit_amount: i64,
    /// ISO 4217, lower case as Stripe sends it (`usd`).
    pub currency: String,
    pub interval: BillingInterval,
    pub interval_count: u32,
}

/// What an item of a subscription pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseType {
    /// One site (domain) per item: `metadata.site`.
    Site,
    /// A number of license seats: the item's quantity.
    Quantity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubscriptionItem {
    /// Stripe's `si_...`.
    pub item_id: String,
    pub price: Price,
    pub quantity: u32,
    /// The item's `metadata.site`, normalised (lower case, no scheme or path); `Some` makes it a
    /// site purchase.
    pub site: Option<String>,
    pub purchase_type: PurchaseType,
    /// The item's `metadata.license_purchase_id`: the seats of a license purchase, whose keys
    /// were reserved before the payment (see [`SubscriptionCommand::StartLicensePurchase`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_purchase_id: Option<Uuid>,
}

/// What a discount takes off each invoice of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiscountOff {
    /// Percent off in hundredths of a percent (Stripe's `percent_off` has two decimals):
    /// 2550 is 25.5 %, 10000 is everything.
    PercentHundredths(u32),
    /// Minor units off each invoice (each billing period), in `currency`.
    Amount { amount: i64, currency: String },
}

/// How long a discount lasts, as its Stripe coupon says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiscountDuration {
    /// The first invoice only (Stripe removes it afterwards).
    Once,
    /// The first `n` months.
    Repeating(u32),
    Forever,
}

/// A discount on a subscription (a Stripe coupon applied to it, e.g. an offer's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Discount {
    /// Stripe's `di_...`, when known.
    pub discount_id: Option<String>,
    /// The coupon's id, when known.
    pub coupon_id: Option<String>,
    pub off: DiscountOff,
    pub duration: DiscountDuration,
    /// When it stops applying (Stripe's `end`); `None`: until Stripe removes it (`once`) or
    /// never (`forever`).
    pub end: Option<chrono::DateTime<chrono::Utc>>,
}

impl Discount {
    /// Whether it still applies at `at` (its `end` not reached).
    pub fn in_force_at(&self, at: chrono::DateTime<chrono::Utc>) -> bool {
        self.end.is_none_or(|end| end > at)
    }
}

impl SubscriptionStatus {
    /// Every status, in declaration order.
    pub const ALL: [Self; 8] = [
        Self::Incomplete,
        Self::IncompleteExpired,
        Self::Trialing,
        Self::Active,
        Self::PastDue,
        Self::Unpaid,
        Self::Paused,
        Self::Canceled,
    ];

    /// Stripe's spelling (`past_due`, ...), also the serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Unpaid => "unpaid",
            Self::Paused => "paused",
            Self::Canceled => "canceled",
        }
    }

    /// The inverse of [`SubscriptionStatus::as_str`]; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == raw)
    }

    /// Whether the member counts as paying, as Ghost counts it: `active`, `trialing`,
    /// `past_due` and `unpaid` (Stripe is still trying to collect).
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            Self::Active | Self::Trialing | Self::PastDue | Self::Unpaid
        )
    }

    /// Whether the subscription's licenses work: `active`, `trialing` and `past_due` (a grace
    /// period while Stripe retries). `unpaid` means Stripe gave up retrying: licenses stop,
    /// though the member still counts as paying until the subscription is canceled.
    pub fn grants_licenses(self) -> bool {
        matches!(self, Self::Active | Self::Trialing | Self::PastDue)
    }

    /// `active` or `trialing`: entering one of these is a
    /// [`SubscriptionActivated`](crate::subscription::SubscriptionEvent::SubscriptionActivated).
    pub fn is_activated(self) -> bool {
        matches!(self, Self::Active | Self::Trialing)
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl BillingInterval {
    /// Stripe's spelling (`month`, ...), also the serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
        }
    }

    /// The inverse of [`BillingInterval::as_str`]; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Day, Self::Week, Self::Month, Self::Year]
            .into_iter()
            .find(|interval| interval.as_str() == raw)
    }
}

impl PurchaseType {
    /// `site` or `quantity`, also the serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Site => "site",
            Self::Quantity => "quantity",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use SubscriptionStatus as S;

    #[test]
    fn statuses_use_stripes_spelling_and_parse_back() {
        for status in S::ALL {
            assert_eq!(S::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).expect("serialises");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!(S::PastDue.as_str(), "past_due");
        assert_eq!(S::parse("cancelled"), None);
        assert_eq!(S::parse("Active"), None);
    }

    #[test]
    fn paying_statuses_are_active_trialing_past_due_and_unpaid() {
        let paid: Vec<S> = S::ALL.into_iter().filter(|s| s.is_paid()).collect();
        assert_eq!(paid, vec![S::Trialing, S::Active, S::PastDue, S::Unpaid]);
        let activated: Vec<S> = S::ALL.into_iter().filter(|s| s.is_activated()).collect();
        assert_eq!(activated, vec![S::Trialing, S::Active]);
    }

    #[test]
    fn billing_intervals_and_purchase_types_use_stripes_spelling() {
        for interval in [
            BillingInterval::Day,
            BillingInterval::Week,
            BillingInterval::Month,
            BillingInterval::Year,
        ] {
            assert_eq!(BillingInterval::parse(interval.as_str()), Some(interval));
            let json = serde_json::to_string(&interval).expect("serialises");
            assert_eq!(json, format!("\"{}\"", interval.as_str()));
        }
        assert_eq!(BillingInterval::parse("months"), None);
        assert_eq!(PurchaseType::Site.as_str(), "site");
        assert_eq!(PurchaseType::Quantity.as_str(), "quantity");
    }
}
