//! What happened to a subscription, as stored: one variant per event type, all at version 1.0.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::stripe::{Payment, StripeObservation};
use crate::billing::{Discount, Price, SubscriptionItem, SubscriptionStatus};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SubscriptionEvent {
    /// First state seen; followed by one `SubscriptionItemAdded` per item, and
    /// `SubscriptionActivated` when it starts active or trialing.
    SubscriptionCreated {
        subscription_id: String,
        member_id: Uuid,
        customer_id: String,
        status: SubscriptionStatus,
        current_period_start: Option<DateTime<Utc>>,
        current_period_end: Option<DateTime<Utc>>,
        cancel_at_period_end: bool,
        created: DateTime<Utc>,
        observed: StripeObservation,
    },
    /// Entered `active` or `trialing` from any other status (or at creation).
    SubscriptionActivated {
        status: SubscriptionStatus,
        observed: StripeObservation,
    },
    /// Any status change after creation.
    SubscriptionStatusChanged {
        from: SubscriptionStatus,
        to: SubscriptionStatus,
        observed: StripeObservation,
    },
    SubscriptionItemAdded {
        item: SubscriptionItem,
        observed: StripeObservation,
    },
    SubscriptionItemRemoved {
        item_id: String,
        site: Option<String>,
        observed: StripeObservation,
    },
    SubscriptionItemQuantityChanged {
        item_id: String,
        from: u32,
        to: u32,
        observed: StripeObservation,
    },
    /// An item without a site became a site's: a Payment Link checkout named the site in a
    /// custom field (`session_id`) after Stripe's subscription state had arrived without it.
    SubscriptionItemSiteAssigned {
        item_id: String,
        site: String,
        session_id: String,
    },
    /// An item's price changed.
    SubscriptionPlanChanged {
        item_id: String,
        from: Price,
        to: Price,
        observed: StripeObservation,
    },
    SubscriptionPeriodChanged {
        current_period_start: Option<DateTime<Utc>>,
        current_period_end: Option<DateTime<Utc>>,
        observed: StripeObservation,
    },
    SubscriptionCancellationScheduled {
        cancel_at: Option<DateTime<Utc>>,
        observed: StripeObservation,
    },
    SubscriptionCancellationUnscheduled {
        observed: StripeObservation,
    },
    /// Status became `canceled`.
    SubscriptionCanceled {
        canceled_at: DateTime<Utc>,
        observed: StripeObservation,
    },
    /// The discounts in force changed: one was applied (at creation too), or it ended (Stripe
    /// removed it, or its `end` passed). `to` is every discount in force after the change.
    SubscriptionDiscountChanged {
        from: Vec<Discount>,
        to: Vec<Discount>,
        observed: StripeObservation,
    },
    /// The subscription was started with an offer (its checkout's `offer_id`, or the offer's
    /// coupon among its discounts); once per subscription and offer.
    OfferRedeemed {
        offer_id: Uuid,
        member_id: Uuid,
        customer_id: String,
        redeemed_at: DateTime<Utc>,
        observed: StripeObservation,
    },
    /// A newer Stripe state changed nothing we track; it still moves the ordering watermark.
    SubscriptionStateObserved {
        observed: StripeObservation,
    },
    /// A member started paying for more sites (`POST /v1/me/sites`); pending until paid.
    SitePurchaseStarted {
        /// `None` in purchases recorded before purchase ids existed (keyed by session id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purchase_id: Option<Uuid>,
        session_id: String,
        member_id: Uuid,
        sites: Vec<String>,
        price_id: String,
        /// The prorated total, minor units.
        amount: i64,
        currency: String,
        started_at: DateTime<Utc>,
    },
    /// Paid, and the sites added to the subscription at Stripe.
    SitePurchaseCompleted {
        session_id: String,
        completed_at: DateTime<Utc>,
    },
    /// The Checkout Session expired unpaid; the sites are no longer pending.
    SitePurchaseExpired {
        session_id: String,
        expired_at: DateTime<Utc>,
    },
    /// A member started paying for `quantity` more license seats, whose keys are reserved
    /// already (`License::id_for_purchase(purchase_id, 1..=quantity)`).
    LicensePurchaseStarted {
        purchase_id: Uuid,
        session_id: String,
        member_id: Uuid,
        quantity: u32,
        price_id: String,
        /// The prorated total, minor units.
        amount: i64,
        currency: String,
        started_at: DateTime<Utc>,
    },
    /// Paid, and the seats added to the subscription at Stripe as one item.
    LicensePurchaseCompleted {
        purchase_id: Uuid,
        session_id: String,
        completed_at: DateTime<Utc>,
    },
    /// The Checkout Session expired unpaid; its keys are canceled.
    LicensePurchaseExpired {
        purchase_id: Uuid,
        session_id: String,
        expired_at: DateTime<Utc>,
    },
    PaymentRecorded {
        payment: Payment,
    },
    PaymentFailed {
        invoice_id: String,
        member_id: Uuid,
        customer_id: String,
        amount_due: i64,
        currency: String,
        attempt_count: u32,
        failed_at: DateTime<Utc>,
    },
    PaymentRefunded {
        charge_id: String,
        invoice_id: Option<String>,
        member_id: Uuid,
        customer_id: String,
        /// This refund's amount (the increase of the charge's refunded total).
        amount: i64,
        currency: String,
        refunded_at: DateTime<Utc>,
    },
}

impl SubscriptionEvent {
    pub const CREATED: &'static str = "SubscriptionCreated";
    pub const ACTIVATED: &'static str = "SubscriptionActivated";
    pub const STATUS_CHANGED: &'static str = "SubscriptionStatusChanged";
    pub const ITEM_ADDED: &'static str = "SubscriptionItemAdded";
    pub const ITEM_REMOVED: &'static str = "SubscriptionItemRemoved";
    pub const ITEM_QUANTITY_CHANGED: &'static str = "SubscriptionItemQuantityChanged";
    pub const ITEM_SITE_ASSIGNED: &'static str = "SubscriptionItemSiteAssigned";
    pub const PLAN_CHANGED: &'static str = "SubscriptionPlanChanged";
    pub const PERIOD_CHANGED: &'static str = "SubscriptionPeriodChanged";
    pub const CANCELLATION_SCHEDULED: &'static str = "SubscriptionCancellationScheduled";
    pub const CANCELLATION_UNSCHEDULED: &'static str = "SubscriptionCancellationUnscheduled";
    pub const CANCELED: &'static str = "SubscriptionCanceled";
    pub const STATE_OBSERVED: &'static str = "SubscriptionStateObserved";
    pub const DISCOUNT_CHANGED: &'static str = "SubscriptionDiscountChanged";
    pub const OFFER_REDEEMED: &'static str = "OfferRedeemed";
    pub const PAYMENT_RECORDED: &'static str = "PaymentRecorded";
    pub const PAYMENT_FAILED: &'static str = "PaymentFailed";
    pub const PAYMENT_REFUNDED: &'static str = "PaymentRefunded";
    pub const SITE_PURCHASE_STARTED: &'static str = "SitePurchaseStarted";
    pub const SITE_PURCHASE_COMPLETED: &'static str = "SitePurchaseCompleted";
    pub const SITE_PURCHASE_EXPIRED: &'static str = "SitePurchaseExpired";
    pub const LICENSE_PURCHASE_STARTED: &'static str = "LicensePurchaseStarted";
    pub const LICENSE_PURCHASE_COMPLETED: &'static str = "LicensePurchaseCompleted";
    pub const LICENSE_PURCHASE_EXPIRED: &'static str = "LicensePurchaseExpired";

    /// The Stripe event the change came from; `None` for payment events.
    pub fn observed(&self) -> Option<&StripeObservation> {
        match self {
            Self::SubscriptionCreated { observed, .. }
            | Self::SubscriptionActivated { observed, .. }
            | Self::SubscriptionStatusChanged { observed, .. }
            | Self::SubscriptionItemAdded { observed, .. }
            | Self::SubscriptionItemRemoved { observed, .. }
            | Self::SubscriptionItemQuantityChanged { observed, .. }
            | Self::SubscriptionPlanChanged { observed, .. }
            | Self::SubscriptionPeriodChanged { observed, .. }
            | Self::SubscriptionCancellationScheduled { observed, .. }
            | Self::SubscriptionCancellationUnscheduled { observed }
            | Self::SubscriptionCanceled { observed, .. }
            | Self::SubscriptionDiscountChanged { observed, .. }
            | Self::OfferRedeemed { observed, .. }
            | Self::SubscriptionStateObserved { observed } => Some(observed),
            Self::PaymentRecorded { .. }
            | Self::PaymentFailed { .. }
            | Self::PaymentRefunded { .. }
            | Self::SubscriptionItemSiteAssigned { .. }
            | Self::SitePurchaseStarted { .. }
            | Self::SitePurchaseCompleted { .. }
            | Self::SitePurchaseExpired { .. }
            | Self::LicensePurchaseStarted { .. }
            | Self::LicensePurchaseCompleted { .. }
            | Self::LicensePurchaseExpired { .. } => None,
        }
    }
}

impl DomainEvent for SubscriptionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SubscriptionCreated { .. } => Self::CREATED,
            Self::SubscriptionActivated { .. } => Self::ACTIVATED,
            Self::SubscriptionStatusChanged { .. } => Self::STATUS_CHANGED,
            Self::SubscriptionItemAdded { .. } => Self::ITEM_ADDED,
            Self::SubscriptionItemRemoved { .. } => Self::ITEM_REMOVED,
            Self::SubscriptionItemQuantityChanged { .. } => Self::ITEM_QUANTITY_CHANGED,
            Self::SubscriptionItemSiteAssigned { .. } => Self::ITEM_SITE_ASSIGNED,
            Self::SubscriptionPlanChanged { .. } => Self::PLAN_CHANGED,
            Self::SubscriptionPeriodChanged { .. } => Self::PERIOD_CHANGED,
            Self::SubscriptionCancellationScheduled { .. } => Self::CANCELLATION_SCHEDULED,
            Self::SubscriptionCancellationUnscheduled { .. } => Self::CANCELLATION_UNSCHEDULED,
            Self::SubscriptionCanceled { .. } => Self::CANCELED,
            Self::SubscriptionStateObserved { .. } => Self::STATE_OBSERVED,
            Self::SubscriptionDiscountChanged { .. } => Self::DISCOUNT_CHANGED,
            Self::OfferRedeemed { .. } => Self::OFFER_REDEEMED,
            Self::PaymentRecorded { .. } => Self::PAYMENT_RECORDED,
            Self::PaymentFailed { .. } => Self::PAYMENT_FAILED,
            Self::SitePurchaseStarted { .. } => Self::SITE_PURCHASE_STARTED,
            Self::SitePurchaseCompleted { .. } => Self::SITE_PURCHASE_COMPLETED,
            Self::SitePurchaseExpired { .. } => Self::SITE_PURCHASE_EXPIRED,
            Self::LicensePurchaseStarted { .. } => Self::LICENSE_PURCHASE_STARTED,
            Self::LicensePurchaseCompleted { .. } => Self::LICENSE_PURCHASE_COMPLETED,
            Self::LicensePurchaseExpired { .. } => Self::LICENSE_PURCHASE_EXPIRED,
            Self::PaymentRefunded { .. } => Self::PAYMENT_REFUNDED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
