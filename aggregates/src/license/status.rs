//! A license's status, and why a key was canceled or deactivated.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LicenseStatus {
    /// Reserved by a license purchase that is not paid yet.
    Pending,
    Active,
    Inactive,
    /// A pending key whose purchase was never paid. Final, unless a payment still arrives.
    Canceled,
}

/// Why a pending key was canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The purchase's Checkout Session expired unpaid.
    CheckoutExpired,
    /// The purchase never got a Checkout Session (Stripe was unreachable) and the member
    /// started another one instead.
    CheckoutAbandoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeactivationReason {
    /// The site's item was removed from the subscription.
    ItemRemoved,
    /// A quantity item's quantity went below this seat.
    QuantityReduced,
    SubscriptionCanceled,
    /// The subscription is `unpaid`, `incomplete`, `incomplete_expired` or `paused`.
    SubscriptionInactive,
    /// The item turned out to be a site's (a Payment Link named it after the item arrived):
    /// the site's license replaces the seat key issued for it meanwhile.
    Replaced,
    /// The member's complimentary access to the tier ended (or moved to another tier).
    ComplimentaryEnded,
}

impl LicenseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Canceled => "canceled",
        }
    }
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CheckoutExpired => "checkout_expired",
            Self::CheckoutAbandoned => "checkout_abandoned",
        }
    }
}

impl DeactivationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ItemRemoved => "item_removed",
            Self::QuantityReduced => "quantity_reduced",
            Self::SubscriptionCanceled => "subscription_canceled",
            Self::SubscriptionInactive => "subscription_inactive",
            Self::Replaced => "replaced",
            Self::ComplimentaryEnded => "complimentary_ended",
        }
    }
}
