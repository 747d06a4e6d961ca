//! What can be asked of a subscription, and why it refuses.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::stripe::{Payment, StripeObservation, StripeSubscriptionState};

#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionCommand {
    /// Apply a Stripe state if it is newer than the newest applied one.
    ApplyStripeState {
        state: StripeSubscriptionState,
        observed: StripeObservation,
    },
    /// Idempotent by invoice id; works before the subscription itself is known.
    RecordPayment { payment: Payment },
    /// Idempotent by invoice id and attempt count.
    RecordPaymentFailure {
        invoice_id: String,
        member_id: Uuid,
        customer_id: String,
        amount_due: i64,
        currency: String,
        attempt_count: u32,
        failed_at: DateTime<Utc>,
    },
    /// A member started paying for more sites (a payment-mode Checkout Session); the sites
    /// are pending until it completes. A no-op for a session already recorded.
    StartSitePurchase {
        /// Our id of the purchase, in the session's and payment intent's metadata.
        purchase_id: Uuid,
        session_id: String,
        member_id: Uuid,
        sites: Vec<String>,
        price_id: String,
        /// The prorated total, minor units.
        amount: i64,
        currency: String,
        at: DateTime<Utc>,
    },
    /// A member started paying for `quantity` more license seats; their keys are reserved
    /// (pending) before this, as `License::id_for_purchase(purchase_id, 1..=quantity)`. A
    /// no-op for a purchase already recorded.
    StartLicensePurchase {
        purchase_id: Uuid,
        session_id: String,
        member_id: Uuid,
        quantity: u32,
        price_id: String,
        /// The prorated total, minor units.
        amount: i64,
        currency: String,
        at: DateTime<Utc>,
    },
    /// A purchase (sites or license seats) was paid for and its items added at Stripe.
    /// `purchase` is its purchase id, or the session id of a purchase recorded without one.
    /// A no-op unless pending.
    CompletePurchase { purchase: String, at: DateTime<Utc> },
    /// The purchase's Checkout Session expired unpaid. A no-op unless pending.
    ExpirePurchase { purchase: String, at: DateTime<Utc> },
    /// An item we deleted at Stripe ourselves (a member removing a site): recorded right away,
    /// without waiting for the webhook. `observed` names the API call; a webhook showing the
    /// item still there from before it is stale.
    RecordItemRemoval {
        item_id: String,
        observed: StripeObservation,
    },
    /// A checkout through a Stripe Payment Link named the site in a custom field: the
    /// subscription's only item (which Stripe knows no site of) is that site's. A no-op unless
    /// the subscription has exactly one item, without a site.
    AssignItemSite {
        site: String,
        /// The Checkout Session that named it.
        session_id: String,
    },
    /// `amount_refunded` is the charge's refunded total so far; only the increase is recorded.
    RecordRefund {
        charge_id: String,
        invoice_id: Option<String>,
        member_id: Uuid,
        customer_id: String,
        amount_refunded: i64,
        currency: String,
        refunded_at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The Stripe state is of another subscription than this aggregate's.
    #[error("the Stripe state belongs to a different subscription")]
    WrongSubscription,
    /// A purchase was started on a subscription that has ended (canceled or expired).
    #[error("the subscription has ended; nothing can be added to it")]
    Ended,
    /// A purchase was started by a member who does not own the subscription.
    #[error("the subscription belongs to another member")]
    OtherMember,
}
