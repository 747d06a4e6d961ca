//! The Subscription aggregate: a Stripe subscription as we know it (id = Stripe's `sub_...`).
//!
//! Stripe's webhooks arrive late, twice, out of order and in parallel. Each Stripe state is
//! applied only if it is newer than the newest applied one, by a total order on
//! [`StripeObservation`]s, so any delivery order converges on the same final state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
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

/// A subscription as one Stripe object showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StripeSubscriptionState {
    pub subscription_id: String,
    pub customer_id: String,
    pub member_id: Uuid,
    pub status: SubscriptionStatus,
    pub items: Vec<SubscriptionItem>,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    /// When Stripe created the subscription.
    pub created: DateTime<Utc>,
}

/// Which Stripe event a state came from; orders states (see [`StripeObservation::key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StripeObservation {
    /// `evt_...`
    pub event_id: String,
    /// `customer.subscription.updated`, ...
    pub event_type: String,
    /// The event's `created`, unix seconds.
    pub created: i64,
}

/// A paid invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Payment {
    pub invoice_id: String,
    pub member_id: Uuid,
    pub customer_id: String,
    pub amount_paid: i64,
    pub currency: String,
    pub billing_reason: Option<String>,
    pub payment_intent_id: Option<String>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub paid_at: DateTime<Utc>,
}

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

    /// `active` or `trialing`: entering one of these is a [`SubscriptionEvent::SubscriptionActivated`].
    pub fn is_activated(self) -> bool {
        matches!(self, Self::Active | Self::Trialing)
    }

    /// Where the status sits in a subscription's lifecycle; breaks same-second ties between
    /// Stripe states (see [`StripeObservation::key`]).
    fn lifecycle_rank(self) -> u8 {
        match self {
            Self::Incomplete => 0,
            Self::Trialing => 1,
            Self::Active => 2,
            Self::PastDue => 3,
            Self::Unpaid | Self::Paused => 4,
            Self::Canceled | Self::IncompleteExpired => 5,
        }
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

impl StripeObservation {
    pub const SUBSCRIPTION_CREATED: &'static str = "customer.subscription.created";
    pub const SUBSCRIPTION_UPDATED: &'static str = "customer.subscription.updated";
    pub const SUBSCRIPTION_DELETED: &'static str = "customer.subscription.deleted";

    /// The ordering key of the state `status` as this event showed it. Keys are compared
    /// lexicographically by:
    ///
    /// 1. the event's `created` (unix seconds);
    /// 2. the event type: `customer.subscription.created` (0) < any other (1) <
    ///    `customer.subscription.deleted` (2);
    /// 3. the status's place in the lifecycle: `incomplete` (0) < `trialing` (1) < `active` (2)
    ///    < `past_due` (3) < `unpaid` = `paused` (4) < `canceled` = `incomplete_expired` (5);
    /// 4. the event id, lexicographically.
    ///
    /// Stripe's `created` has only second resolution, so 2 and 3 order the usual same-second
    /// bursts (created then updated, updated then deleted, incomplete then active); 4 makes it
    /// a total order: two keys are equal only for the same event, i.e. a redelivery. A
    /// subscription applies a state only if its key is strictly greater than that of the newest
    /// state applied so far, so whatever order the webhooks arrive in, the state with the
    /// greatest key wins and every delivery order converges on it.
    ///
    /// A known limit: two different states in the same second are ordered by lifecycle, not by
    /// what really happened (`past_due` then `active` in one second ends `past_due` until the
    /// next event).
    pub fn key(&self, status: SubscriptionStatus) -> impl Ord + fmt::Debug {
        (
            self.created,
            self.type_rank(),
            status.lifecycle_rank(),
            self.event_id.clone(),
        )
    }

    /// The event's `created` as a time; `None` when out of chrono's range.
    pub fn observed_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.created, 0)
    }

    fn type_rank(&self) -> u8 {
        match self.event_type.as_str() {
            Self::SUBSCRIPTION_CREATED => 0,
            Self::SUBSCRIPTION_DELETED => 2,
            _ => 1,
        }
    }
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The Stripe state is of another subscription than this aggregate's.
    #[error("the Stripe state belongs to a different subscription")]
    WrongSubscription,
}

/// The subscription as the newest applied Stripe state showed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
struct Known {
    subscription_id: String,
    member_id: Uuid,
    customer_id: String,
    status: SubscriptionStatus,
    /// Sorted by `item_id`, one per id, so the order does not depend on the delivery order.
    items: Vec<SubscriptionItem>,
    current_period_start: Option<DateTime<Utc>>,
    current_period_end: Option<DateTime<Utc>>,
    cancel_at_period_end: bool,
    cancel_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    /// The newest applied observation; with `status` (the status that state had) it is the
    /// ordering watermark.
    newest: StripeObservation,
}

impl Known {
    fn item(&self, item_id: &str) -> Option<&SubscriptionItem> {
        self.items
            .binary_search_by(|i| i.item_id.as_str().cmp(item_id))
            .ok()
            .and_then(|at| self.items.get(at))
    }

    fn item_mut(&mut self, item_id: &str) -> Option<&mut SubscriptionItem> {
        self.items
            .binary_search_by(|i| i.item_id.as_str().cmp(item_id))
            .ok()
            .and_then(|at| self.items.get_mut(at))
    }

    fn upsert_item(&mut self, item: SubscriptionItem) {
        match self
            .items
            .binary_search_by(|i| i.item_id.cmp(&item.item_id))
        {
            Ok(at) => {
                if let Some(slot) = self.items.get_mut(at) {
                    *slot = item;
                }
            }
            Err(at) => self.items.insert(at, item),
        }
    }

    /// The events that move this state to `state`, in the documented order; never empty.
    fn changes_to(
        &self,
        state: &StripeSubscriptionState,
        observed: &StripeObservation,
    ) -> Vec<SubscriptionEvent> {
        let obs = || observed.clone();
        let incoming: Vec<&SubscriptionItem> = unique_items(&state.items);
        let mut events = Vec::new();

        for item in &self.items {
            if !incoming.iter().any(|i| i.item_id == item.item_id) {
                events.push(SubscriptionEvent::SubscriptionItemRemoved {
                    item_id: item.item_id.clone(),
                    site: item.site.clone(),
                    observed: obs(),
                });
            }
        }
        for item in &incoming {
            if self.item(&item.item_id).is_none() {
                events.push(SubscriptionEvent::SubscriptionItemAdded {
                    item: (*item).clone(),
                    observed: obs(),
                });
            }
        }
        for item in &incoming {
            if let Some(current) = self.item(&item.item_id) {
                if current.price != item.price {
                    events.push(SubscriptionEvent::SubscriptionPlanChanged {
                        item_id: item.item_id.clone(),
                        from: current.price.clone(),
                        to: item.price.clone(),
                        observed: obs(),
                    });
                }
            }
        }
        for item in &incoming {
            if let Some(current) = self.item(&item.item_id) {
                if current.quantity != item.quantity {
                    events.push(SubscriptionEvent::SubscriptionItemQuantityChanged {
                        item_id: item.item_id.clone(),
                        from: current.quantity,
                        to: item.quantity,
                        observed: obs(),
                    });
                }
            }
        }
        if self.current_period_start != state.current_period_start
            || self.current_period_end != state.current_period_end
        {
            events.push(SubscriptionEvent::SubscriptionPeriodChanged {
                current_period_start: state.current_period_start,
                current_period_end: state.current_period_end,
                observed: obs(),
            });
        }
        if state.cancel_at_period_end && !self.cancel_at_period_end {
            events.push(SubscriptionEvent::SubscriptionCancellationScheduled {
                cancel_at: state.cancel_at,
                observed: obs(),
            });
        } else if !state.cancel_at_period_end && self.cancel_at_period_end {
            events.push(SubscriptionEvent::SubscriptionCancellationUnscheduled { observed: obs() });
        }
        if state.status != self.status {
            events.push(SubscriptionEvent::SubscriptionStatusChanged {
                from: self.status,
                to: state.status,
                observed: obs(),
            });
            if state.status.is_activated() && !self.status.is_activated() {
                events.push(SubscriptionEvent::SubscriptionActivated {
                    status: state.status,
                    observed: obs(),
                });
            }
            if state.status == SubscriptionStatus::Canceled {
                events.push(SubscriptionEvent::SubscriptionCanceled {
                    canceled_at: canceled_at(state, observed),
                    observed: obs(),
                });
            }
        }
        if events.is_empty() {
            events.push(SubscriptionEvent::SubscriptionStateObserved { observed: obs() });
        }
        events
    }
}

/// The items of a Stripe state, the first of each `item_id` only.
fn unique_items(items: &[SubscriptionItem]) -> Vec<&SubscriptionItem> {
    let mut seen = BTreeSet::new();
    items
        .iter()
        .filter(|item| seen.insert(item.item_id.as_str()))
        .collect()
}

/// Stripe's `canceled_at`, else when the event was created, else when the subscription was.
fn canceled_at(state: &StripeSubscriptionState, observed: &StripeObservation) -> DateTime<Utc> {
    state
        .canceled_at
        .or_else(|| observed.observed_at())
        .unwrap_or(state.created)
}

/// The events that create a subscription from its first applied state.
fn creation(
    state: &StripeSubscriptionState,
    observed: &StripeObservation,
) -> Vec<SubscriptionEvent> {
    let obs = || observed.clone();
    let mut events = vec![SubscriptionEvent::SubscriptionCreated {
        subscription_id: state.subscription_id.clone(),
        member_id: state.member_id,
        customer_id: state.customer_id.clone(),
        status: state.status,
        current_period_start: state.current_period_start,
        current_period_end: state.current_period_end,
        cancel_at_period_end: state.cancel_at_period_end,
        created: state.created,
        observed: obs(),
    }];
    for item in unique_items(&state.items) {
        events.push(SubscriptionEvent::SubscriptionItemAdded {
            item: item.clone(),
            observed: obs(),
        });
    }
    if state.status.is_activated() {
        events.push(SubscriptionEvent::SubscriptionActivated {
            status: state.status,
            observed: obs(),
        });
    }
    if state.cancel_at_period_end {
        events.push(SubscriptionEvent::SubscriptionCancellationScheduled {
            cancel_at: state.cancel_at,
            observed: obs(),
        });
    }
    if state.status == SubscriptionStatus::Canceled {
        events.push(SubscriptionEvent::SubscriptionCanceled {
            canceled_at: canceled_at(state, observed),
            observed: obs(),
        });
    }
    events
}

/// A Stripe subscription (aggregate id = Stripe's `sub_...`) and the payments of its invoices.
///
/// Payments can be recorded before any Stripe state was applied (the invoice webhook came
/// first); the subscription [`exists`](Subscription::exists) only once a state was applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Subscription {
    known: Option<Known>,
    paid_invoices: BTreeSet<String>,
    /// `(invoice_id, attempt_count)`
    failed_attempts: BTreeSet<(String, u32)>,
    /// Refunded total so far per charge id.
    refunded: BTreeMap<String, i64>,
    /// Purchases of sites or license seats, by purchase id (or session id when recorded
    /// without one).
    #[serde(default)]
    purchases: BTreeMap<String, Purchase>,
}

/// A purchase adding to the subscription, paid through a payment-mode Checkout Session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Purchase {
    pub session_id: String,
    /// `Some` for license seats, `None` for sites.
    pub license_purchase_id: Option<Uuid>,
    pub state: PurchaseState,
}

impl Purchase {
    /// The event ending this pending purchase: completed (paid) or expired.
    fn ended(&self, state: PurchaseState, at: DateTime<Utc>) -> SubscriptionEvent {
        let session_id = self.session_id.clone();
        match (self.license_purchase_id, state) {
            (None, PurchaseState::Completed) => SubscriptionEvent::SitePurchaseCompleted {
                session_id,
                completed_at: at,
            },
            (None, _) => SubscriptionEvent::SitePurchaseExpired {
                session_id,
                expired_at: at,
            },
            (Some(purchase_id), PurchaseState::Completed) => {
                SubscriptionEvent::LicensePurchaseCompleted {
                    purchase_id,
                    session_id,
                    completed_at: at,
                }
            }
            (Some(purchase_id), _) => SubscriptionEvent::LicensePurchaseExpired {
                purchase_id,
                session_id,
                expired_at: at,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseState {
    Pending,
    Completed,
    Expired,
}

impl Subscription {
    /// Whether a Stripe state was applied.
    pub fn exists(&self) -> bool {
        self.known.is_some()
    }

    pub fn subscription_id(&self) -> Option<&str> {
        self.known.as_ref().map(|k| k.subscription_id.as_str())
    }

    /// The member of the first applied state (later states cannot move a subscription).
    pub fn member_id(&self) -> Option<Uuid> {
        self.known.as_ref().map(|k| k.member_id)
    }

    pub fn customer_id(&self) -> Option<&str> {
        self.known.as_ref().map(|k| k.customer_id.as_str())
    }

    pub fn status(&self) -> Option<SubscriptionStatus> {
        self.known.as_ref().map(|k| k.status)
    }

    /// The current items, sorted by `item_id` (one per id); empty before the subscription
    /// exists. An item's `site` and `purchase_type` are as they were when it was added (or
    /// assigned, see [`SubscriptionCommand::AssignItemSite`]).
    pub fn items(&self) -> &[SubscriptionItem] {
        self.known.as_ref().map_or(&[], |k| k.items.as_slice())
    }

    pub fn item(&self, item_id: &str) -> Option<&SubscriptionItem> {
        self.known.as_ref().and_then(|k| k.item(item_id))
    }

    pub fn cancel_at_period_end(&self) -> bool {
        self.known.as_ref().is_some_and(|k| k.cancel_at_period_end)
    }

    /// When a scheduled cancellation takes effect, as Stripe said when it was scheduled.
    pub fn cancel_at(&self) -> Option<DateTime<Utc>> {
        self.known.as_ref().and_then(|k| k.cancel_at)
    }

    pub fn canceled_at(&self) -> Option<DateTime<Utc>> {
        self.known.as_ref().and_then(|k| k.canceled_at)
    }

    pub fn current_period_start(&self) -> Option<DateTime<Utc>> {
        self.known.as_ref().and_then(|k| k.current_period_start)
    }

    pub fn current_period_end(&self) -> Option<DateTime<Utc>> {
        self.known.as_ref().and_then(|k| k.current_period_end)
    }

    /// A purchase by its purchase id (or, for one recorded without, its session id).
    pub fn purchase(&self, purchase: &str) -> Option<&Purchase> {
        self.purchases.get(purchase)
    }

    /// The newest applied Stripe observation (the ordering watermark, with [`Self::status`]).
    pub fn newest_observation(&self) -> Option<&StripeObservation> {
        self.known.as_ref().map(|k| &k.newest)
    }

    /// Monthly recurring revenue in minor units; 0 before the subscription exists. See
    /// [`crate::mrr::subscription_mrr`].
    pub fn mrr(&self) -> i64 {
        self.known.as_ref().map_or(0, |k| {
            crate::mrr::subscription_mrr(k.status, k.cancel_at_period_end, &k.items)
        })
    }

    /// The events applying `state` produces: none when it is not newer than the newest
    /// applied state (stale or a redelivery), else at least one.
    fn pending_purchase(&self, purchase: &str) -> Option<&Purchase> {
        self.purchases
            .get(purchase)
            .filter(|p| p.state == PurchaseState::Pending)
    }

    /// Ends the site purchase of `session_id` (its events name the session only).
    fn end_purchase(&mut self, session_id: &str, state: PurchaseState) {
        if let Some(p) = self
            .purchases
            .values_mut()
            .find(|p| p.session_id == session_id && p.license_purchase_id.is_none())
        {
            p.state = state;
        }
    }

    fn decide_stripe_state(
        &self,
        state: &StripeSubscriptionState,
        observed: &StripeObservation,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        let Some(known) = &self.known else {
            return Ok(creation(state, observed));
        };
        if known.subscription_id != state.subscription_id {
            return Err(SubscriptionError::WrongSubscription);
        }
        if observed.key(state.status) <= known.newest.key(known.status) {
            return Ok(Vec::new());
        }
        Ok(known.changes_to(state, observed))
    }
}

impl Aggregate for Subscription {
    const TYPE: &'static str = "Subscription";
    type Command = SubscriptionCommand;
    type Event = SubscriptionEvent;
    type Error = SubscriptionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            SubscriptionCommand::ApplyStripeState { state, observed } => {
                // Decided in full before the first write: `write` applies each event at once.
                for event in self.decide_stripe_state(&state, &observed)? {
                    sink.write(event, self).await;
                }
            }
            SubscriptionCommand::RecordPayment { payment } => {
                if !self.paid_invoices.contains(&payment.invoice_id) {
                    sink.write(SubscriptionEvent::PaymentRecorded { payment }, self)
                        .await;
                }
            }
            SubscriptionCommand::RecordPaymentFailure {
                invoice_id,
                member_id,
                customer_id,
                amount_due,
                currency,
                attempt_count,
                failed_at,
            } => {
                let attempt = (invoice_id, attempt_count);
                if !self.failed_attempts.contains(&attempt) {
                    let (invoice_id, attempt_count) = attempt;
                    let event = SubscriptionEvent::PaymentFailed {
                        invoice_id,
                        member_id,
                        customer_id,
                        amount_due,
                        currency,
                        attempt_count,
                        failed_at,
                    };
                    sink.write(event, self).await;
                }
            }
            SubscriptionCommand::StartSitePurchase {
                purchase_id,
                session_id,
                member_id,
                sites,
                price_id,
                amount,
                currency,
                at,
            } => {
                if !self.purchases.contains_key(&purchase_id.to_string()) {
                    let event = SubscriptionEvent::SitePurchaseStarted {
                        purchase_id: Some(purchase_id),
                        session_id,
                        member_id,
                        sites,
                        price_id,
                        amount,
                        currency,
                        started_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            SubscriptionCommand::StartLicensePurchase {
                purchase_id,
                session_id,
                member_id,
                quantity,
                price_id,
                amount,
                currency,
                at,
            } => {
                if !self.purchases.contains_key(&purchase_id.to_string()) {
                    let event = SubscriptionEvent::LicensePurchaseStarted {
                        purchase_id,
                        session_id,
                        member_id,
                        quantity,
                        price_id,
                        amount,
                        currency,
                        started_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            SubscriptionCommand::CompletePurchase { purchase, at } => {
                if let Some(p) = self.pending_purchase(&purchase) {
                    sink.write(p.ended(PurchaseState::Completed, at), self)
                        .await;
                }
            }
            SubscriptionCommand::ExpirePurchase { purchase, at } => {
                if let Some(p) = self.pending_purchase(&purchase) {
                    sink.write(p.ended(PurchaseState::Expired, at), self).await;
                }
            }
            SubscriptionCommand::RecordItemRemoval { item_id, observed } => {
                if let Some(item) = self.item(&item_id).cloned() {
                    let event = SubscriptionEvent::SubscriptionItemRemoved {
                        item_id,
                        site: item.site,
                        observed,
                    };
                    sink.write(event, self).await;
                }
            }
            SubscriptionCommand::AssignItemSite { site, session_id } => {
                if let [item] = self.items() {
                    if item.site.is_none() {
                        let event = SubscriptionEvent::SubscriptionItemSiteAssigned {
                            item_id: item.item_id.clone(),
                            site,
                            session_id,
                        };
                        sink.write(event, self).await;
                    }
                }
            }
            SubscriptionCommand::RecordRefund {
                charge_id,
                invoice_id,
                member_id,
                customer_id,
                amount_refunded,
                currency,
                refunded_at,
            } => {
                let before = self.refunded.get(&charge_id).copied().unwrap_or(0);
                let amount = amount_refunded.saturating_sub(before);
                if amount > 0 {
                    let event = SubscriptionEvent::PaymentRefunded {
                        charge_id,
                        invoice_id,
                        member_id,
                        customer_id,
                        amount,
                        currency,
                        refunded_at,
                    };
                    sink.write(event, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let watermark = event.observed().cloned();
        match event {
            SubscriptionEvent::SubscriptionCreated {
                subscription_id,
                member_id,
                customer_id,
                status,
                current_period_start,
                current_period_end,
                cancel_at_period_end,
                created,
                observed,
            } => {
                self.known = Some(Known {
                    subscription_id,
                    member_id,
                    customer_id,
                    status,
                    items: Vec::new(),
                    current_period_start,
                    current_period_end,
                    cancel_at_period_end,
                    cancel_at: None,
                    canceled_at: None,
                    created,
                    newest: observed,
                });
            }
            SubscriptionEvent::PaymentRecorded { payment } => {
                self.paid_invoices.insert(payment.invoice_id);
            }
            SubscriptionEvent::SitePurchaseStarted {
                purchase_id,
                session_id,
                ..
            } => {
                let key = purchase_id.map_or_else(|| session_id.clone(), |id| id.to_string());
                let purchase = Purchase {
                    session_id,
                    license_purchase_id: None,
                    state: PurchaseState::Pending,
                };
                self.purchases.insert(key, purchase);
            }
            SubscriptionEvent::LicensePurchaseStarted {
                purchase_id,
                session_id,
                ..
            } => {
                let purchase = Purchase {
                    session_id,
                    license_purchase_id: Some(purchase_id),
                    state: PurchaseState::Pending,
                };
                self.purchases.insert(purchase_id.to_string(), purchase);
            }
            SubscriptionEvent::SitePurchaseCompleted { session_id, .. } => {
                self.end_purchase(&session_id, PurchaseState::Completed);
            }
            SubscriptionEvent::SitePurchaseExpired { session_id, .. } => {
                self.end_purchase(&session_id, PurchaseState::Expired);
            }
            SubscriptionEvent::LicensePurchaseCompleted { purchase_id, .. } => {
                if let Some(p) = self.purchases.get_mut(&purchase_id.to_string()) {
                    p.state = PurchaseState::Completed;
                }
            }
            SubscriptionEvent::LicensePurchaseExpired { purchase_id, .. } => {
                if let Some(p) = self.purchases.get_mut(&purchase_id.to_string()) {
                    p.state = PurchaseState::Expired;
                }
            }
            SubscriptionEvent::PaymentFailed {
                invoice_id,
                attempt_count,
                ..
            } => {
                self.failed_attempts.insert((invoice_id, attempt_count));
            }
            SubscriptionEvent::PaymentRefunded {
                charge_id, amount, ..
            } => {
                let total = self.refunded.entry(charge_id).or_insert(0);
                *total = total.saturating_add(amount);
            }
            change => {
                if let Some(known) = &mut self.known {
                    known.apply_change(change);
                }
            }
        }
        // Every event from a Stripe state moves the watermark to that state; `status` is
        // already the status it had.
        if let (Some(known), Some(watermark)) = (&mut self.known, watermark) {
            known.newest = watermark;
        }
    }
}

impl Known {
    fn apply_change(&mut self, event: SubscriptionEvent) {
        match event {
            SubscriptionEvent::SubscriptionActivated { status, .. } => self.status = status,
            SubscriptionEvent::SubscriptionStatusChanged { to, .. } => self.status = to,
            SubscriptionEvent::SubscriptionItemAdded { item, .. } => self.upsert_item(item),
            SubscriptionEvent::SubscriptionItemRemoved { item_id, .. } => {
                self.items.retain(|i| i.item_id != item_id);
            }
            SubscriptionEvent::SubscriptionItemQuantityChanged { item_id, to, .. } => {
                if let Some(item) = self.item_mut(&item_id) {
                    item.quantity = to;
                }
            }
            SubscriptionEvent::SubscriptionItemSiteAssigned { item_id, site, .. } => {
                if let Some(item) = self.item_mut(&item_id) {
                    item.site = Some(site);
                    item.purchase_type = PurchaseType::Site;
                }
            }
            SubscriptionEvent::SubscriptionPlanChanged { item_id, to, .. } => {
                if let Some(item) = self.item_mut(&item_id) {
                    item.price = to;
                }
            }
            SubscriptionEvent::SubscriptionPeriodChanged {
                current_period_start,
                current_period_end,
                ..
            } => {
                self.current_period_start = current_period_start;
                self.current_period_end = current_period_end;
            }
            SubscriptionEvent::SubscriptionCancellationScheduled { cancel_at, .. } => {
                self.cancel_at_period_end = true;
                self.cancel_at = cancel_at;
            }
            SubscriptionEvent::SubscriptionCancellationUnscheduled { .. } => {
                self.cancel_at_period_end = false;
                self.cancel_at = None;
            }
            SubscriptionEvent::SubscriptionCanceled { canceled_at, .. } => {
                self.canceled_at = Some(canceled_at);
            }
            SubscriptionEvent::SubscriptionStateObserved { .. }
            | SubscriptionEvent::SubscriptionCreated { .. }
            | SubscriptionEvent::PaymentRecorded { .. }
            | SubscriptionEvent::PaymentFailed { .. }
            | SubscriptionEvent::PaymentRefunded { .. }
            | SubscriptionEvent::SitePurchaseStarted { .. }
            | SubscriptionEvent::SitePurchaseCompleted { .. }
            | SubscriptionEvent::SitePurchaseExpired { .. }
            | SubscriptionEvent::LicensePurchaseStarted { .. }
            | SubscriptionEvent::LicensePurchaseCompleted { .. }
            | SubscriptionEvent::LicensePurchaseExpired { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type SubscriptionTest = TestFramework<Subscription>;
    use SubscriptionEvent as E;
    use SubscriptionStatus as S;

    const MONTH: i64 = 30 * 24 * 3600;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("valid time")
    }

    fn member() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
    }

    fn price(price_id: &str, unit_amount: i64) -> Price {
        Price {
            price_id: price_id.into(),
            product_id: Some("prod_1".into()),
            unit_amount,
            currency: "usd".into(),
            interval: BillingInterval::Month,
            interval_count: 1,
        }
    }

    fn site_item() -> SubscriptionItem {
        SubscriptionItem {
            item_id: "si_site".into(),
            price: price("price_site", 1000),
            quantity: 1,
            site: Some("example.com".into()),
            purchase_type: PurchaseType::Site,
            license_purchase_id: None,
        }
    }

    fn seats_item(quantity: u32) -> SubscriptionItem {
        SubscriptionItem {
            item_id: "si_seats".into(),
            price: price("price_seat", 500),
            quantity,
            site: None,
            purchase_type: PurchaseType::Quantity,
            license_purchase_id: None,
        }
    }

    fn state(status: SubscriptionStatus) -> StripeSubscriptionState {
        StripeSubscriptionState {
            subscription_id: "sub_1".into(),
            customer_id: "cus_1".into(),
            member_id: member(),
            status,
            items: vec![site_item()],
            current_period_start: Some(t(100)),
            current_period_end: Some(t(100 + MONTH)),
            cancel_at_period_end: false,
            cancel_at: None,
            canceled_at: None,
            created: t(100),
        }
    }

    fn obs(event_type: &str, created: i64, event_id: &str) -> StripeObservation {
        StripeObservation {
            event_id: event_id.into(),
            event_type: event_type.into(),
            created,
        }
    }

    fn created_at(created: i64) -> StripeObservation {
        obs(
            StripeObservation::SUBSCRIPTION_CREATED,
            created,
            &format!("evt_{created}"),
        )
    }

    fn updated_at(created: i64) -> StripeObservation {
        obs(
            StripeObservation::SUBSCRIPTION_UPDATED,
            created,
            &format!("evt_{created}"),
        )
    }

    fn deleted_at(created: i64) -> StripeObservation {
        obs(
            StripeObservation::SUBSCRIPTION_DELETED,
            created,
            &format!("evt_{created}"),
        )
    }

    fn apply(state: StripeSubscriptionState, observed: StripeObservation) -> SubscriptionCommand {
        SubscriptionCommand::ApplyStripeState { state, observed }
    }

    /// The events of first seeing `state(status)` (one site item) by `observed`.
    fn creation_of(status: SubscriptionStatus, observed: &StripeObservation) -> Vec<E> {
        let mut events = vec![
            E::SubscriptionCreated {
                subscription_id: "sub_1".into(),
                member_id: member(),
                customer_id: "cus_1".into(),
                status,
                current_period_start: Some(t(100)),
                current_period_end: Some(t(100 + MONTH)),
                cancel_at_period_end: false,
                created: t(100),
                observed: observed.clone(),
            },
            E::SubscriptionItemAdded {
                item: site_item(),
                observed: observed.clone(),
            },
        ];
        if status.is_activated() {
            events.push(E::SubscriptionActivated {
                status,
                observed: observed.clone(),
            });
        }
        events
    }

    /// An active subscription, last seen by an update at t=200.
    fn active_at_200() -> Vec<E> {
        let mut events = creation_of(S::Active, &created_at(100));
        events.push(E::SubscriptionStateObserved {
            observed: updated_at(200),
        });
        events
    }

    fn payment(invoice_id: &str) -> Payment {
        Payment {
            invoice_id: invoice_id.into(),
            member_id: member(),
            customer_id: "cus_1".into(),
            amount_paid: 1000,
            currency: "usd".into(),
            billing_reason: Some("subscription_cycle".into()),
            payment_intent_id: Some("pi_1".into()),
            period_start: Some(t(100)),
            period_end: Some(t(100 + MONTH)),
            paid_at: t(150),
        }
    }

    fn failure(attempt_count: u32) -> SubscriptionCommand {
        SubscriptionCommand::RecordPaymentFailure {
            invoice_id: "in_1".into(),
            member_id: member(),
            customer_id: "cus_1".into(),
            amount_due: 1000,
            currency: "usd".into(),
            attempt_count,
            failed_at: t(150),
        }
    }

    fn failed(attempt_count: u32) -> E {
        E::PaymentFailed {
            invoice_id: "in_1".into(),
            member_id: member(),
            customer_id: "cus_1".into(),
            amount_due: 1000,
            currency: "usd".into(),
            attempt_count,
            failed_at: t(150),
        }
    }

    fn refund(amount_refunded: i64) -> SubscriptionCommand {
        SubscriptionCommand::RecordRefund {
            charge_id: "ch_1".into(),
            invoice_id: Some("in_1".into()),
            member_id: member(),
            customer_id: "cus_1".into(),
            amount_refunded,
            currency: "usd".into(),
            refunded_at: t(160),
        }
    }

    fn refunded(amount: i64) -> E {
        E::PaymentRefunded {
            charge_id: "ch_1".into(),
            invoice_id: Some("in_1".into()),
            member_id: member(),
            customer_id: "cus_1".into(),
            amount,
            currency: "usd".into(),
            refunded_at: t(160),
        }
    }

    // --- values ---

    fn purchase_id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa)
    }

    #[test]
    fn a_site_purchase_is_pending_until_completed_or_expired_once() {
        let start = || SubscriptionCommand::StartSitePurchase {
            purchase_id: purchase_id(),
            session_id: "cs_1".into(),
            member_id: member(),
            sites: vec!["new.example.com".into()],
            price_id: "price_site".into(),
            amount: 500,
            currency: "usd".into(),
            at: t(10),
        };
        let started = E::SitePurchaseStarted {
            purchase_id: Some(purchase_id()),
            session_id: "cs_1".into(),
            member_id: member(),
            sites: vec!["new.example.com".into()],
            price_id: "price_site".into(),
            amount: 500,
            currency: "usd".into(),
            started_at: t(10),
        };
        TestFramework::<Subscription>::with(())
            .given_no_previous_events()
            .when(start())
            .then_expect_events(vec![started.clone()]);
        TestFramework::<Subscription>::with(())
            .given(vec![started.clone()])
            .when(start())
            .then_expect_events(vec![]);
        let completed = E::SitePurchaseCompleted {
            session_id: "cs_1".into(),
            completed_at: t(20),
        };
        let complete = |at| SubscriptionCommand::CompletePurchase {
            purchase: purchase_id().to_string(),
            at: t(at),
        };
        TestFramework::<Subscription>::with(())
            .given(vec![started.clone()])
            .when(complete(20))
            .then_expect_events(vec![completed.clone()]);
        // The second trigger of one payment (`payment_intent.succeeded` after
        // `checkout.session.completed`) completes nothing more.
        TestFramework::<Subscription>::with(())
            .given(vec![started.clone(), completed.clone()])
            .when(complete(21))
            .then_expect_events(vec![]);
        TestFramework::<Subscription>::with(())
            .given(vec![started, completed])
            .when(SubscriptionCommand::ExpirePurchase {
                purchase: purchase_id().to_string(),
                at: t(30),
            })
            .then_expect_events(vec![]);
        TestFramework::<Subscription>::with(())
            .given_no_previous_events()
            .when(SubscriptionCommand::CompletePurchase {
                purchase: "cs_unknown".into(),
                at: t(20),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_site_purchase_recorded_without_a_purchase_id_is_found_by_its_session() {
        let started = E::SitePurchaseStarted {
            purchase_id: None,
            session_id: "cs_old".into(),
            member_id: member(),
            sites: vec!["new.example.com".into()],
            price_id: "price_site".into(),
            amount: 500,
            currency: "usd".into(),
            started_at: t(10),
        };
        // As stored before purchase ids: no `purchase_id` key at all.
        let json = serde_json::to_value(&started).expect("serialises");
        assert!(json["SitePurchaseStarted"].get("purchase_id").is_none());
        let back: SubscriptionEvent = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, started);
        TestFramework::<Subscription>::with(())
            .given(vec![started])
            .when(SubscriptionCommand::ExpirePurchase {
                purchase: "cs_old".into(),
                at: t(30),
            })
            .then_expect_events(vec![E::SitePurchaseExpired {
                session_id: "cs_old".into(),
                expired_at: t(30),
            }]);
    }

    #[test]
    fn a_license_purchase_is_pending_until_completed_or_expired_once() {
        let start = || SubscriptionCommand::StartLicensePurchase {
            purchase_id: purchase_id(),
            session_id: "cs_seats".into(),
            member_id: member(),
            quantity: 3,
            price_id: "price_seat".into(),
            amount: 1500,
            currency: "usd".into(),
            at: t(10),
        };
        let started = E::LicensePurchaseStarted {
            purchase_id: purchase_id(),
            session_id: "cs_seats".into(),
            member_id: member(),
            quantity: 3,
            price_id: "price_seat".into(),
            amount: 1500,
            currency: "usd".into(),
            started_at: t(10),
        };
        TestFramework::<Subscription>::with(())
            .given_no_previous_events()
            .when(start())
            .then_expect_events(vec![started.clone()]);
        TestFramework::<Subscription>::with(())
            .given(vec![started.clone()])
            .when(start())
            .then_expect_events(vec![]);
        let expired = E::LicensePurchaseExpired {
            purchase_id: purchase_id(),
            session_id: "cs_seats".into(),
            expired_at: t(30),
        };
        let expire = || SubscriptionCommand::ExpirePurchase {
            purchase: purchase_id().to_string(),
            at: t(30),
        };
        TestFramework::<Subscription>::with(())
            .given(vec![started.clone()])
            .when(expire())
            .then_expect_events(vec![expired.clone()]);
        TestFramework::<Subscription>::with(())
            .given(vec![started.clone(), expired])
            .when(SubscriptionCommand::CompletePurchase {
                purchase: purchase_id().to_string(),
                at: t(40),
            })
            .then_expect_events(vec![]);
        let completed = E::LicensePurchaseCompleted {
            purchase_id: purchase_id(),
            session_id: "cs_seats".into(),
            completed_at: t(20),
        };
        TestFramework::<Subscription>::with(())
            .given(vec![started.clone()])
            .when(SubscriptionCommand::CompletePurchase {
                purchase: purchase_id().to_string(),
                at: t(20),
            })
            .then_expect_events(vec![completed.clone()]);
        TestFramework::<Subscription>::with(())
            .given(vec![started, completed])
            .when(expire())
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_item_removed_through_the_api_is_recorded_once_and_older_states_do_not_restore_it() {
        let created = creation_of(SubscriptionStatus::Active, &created_at(100));
        let removal = obs(
            "memberledger.subscription_item.deleted",
            150,
            "api_delete_si_site",
        );
        TestFramework::<Subscription>::with(())
            .given(created.clone())
            .when(SubscriptionCommand::RecordItemRemoval {
                item_id: site_item().item_id,
                observed: removal.clone(),
            })
            .then_expect_events(vec![E::SubscriptionItemRemoved {
                item_id: site_item().item_id,
                site: site_item().site,
                observed: removal.clone(),
            }]);
        let mut after = created;
        after.push(E::SubscriptionItemRemoved {
            item_id: site_item().item_id,
            site: site_item().site,
            observed: removal,
        });
        TestFramework::<Subscription>::with(())
            .given(after.clone())
            .when(SubscriptionCommand::RecordItemRemoval {
                item_id: site_item().item_id,
                observed: obs(
                    "memberledger.subscription_item.deleted",
                    151,
                    "api_delete_again",
                ),
            })
            .then_expect_events(vec![]);
        // A webhook sent before the removal still lists the item: it is stale.
        TestFramework::<Subscription>::with(())
            .given(after)
            .when(apply(state(SubscriptionStatus::Active), updated_at(120)))
            .then_expect_events(vec![]);
    }

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

    #[test]
    fn event_types_are_the_variant_names_at_version_one() {
        let event = E::SubscriptionStateObserved {
            observed: updated_at(1),
        };
        assert_eq!(event.event_type(), "SubscriptionStateObserved");
        assert_eq!(event.event_version(), "1.0");
        assert_eq!(
            E::PaymentRecorded {
                payment: payment("in_1")
            }
            .event_type(),
            "PaymentRecorded"
        );
        assert_eq!(refunded(1).event_type(), "PaymentRefunded");
    }

    // --- ordering ---

    #[test]
    fn a_later_second_orders_after_everything_earlier() {
        assert!(deleted_at(100).key(S::Canceled) < created_at(101).key(S::Incomplete));
    }

    #[test]
    fn in_the_same_second_created_orders_before_updated_before_deleted() {
        let created = obs(StripeObservation::SUBSCRIPTION_CREATED, 100, "evt_c");
        let updated = obs(StripeObservation::SUBSCRIPTION_UPDATED, 100, "evt_b");
        let deleted = obs(StripeObservation::SUBSCRIPTION_DELETED, 100, "evt_a");
        assert!(created.key(S::Canceled) < updated.key(S::Incomplete));
        assert!(updated.key(S::Canceled) < deleted.key(S::Incomplete));
    }

    #[test]
    fn in_the_same_second_and_type_the_lifecycle_orders_the_statuses() {
        let ranked = [
            S::Incomplete,
            S::Trialing,
            S::Active,
            S::PastDue,
            S::Unpaid,
            S::Canceled,
        ];
        for pair in ranked.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                obs("x", 100, "evt_z").key(a) < obs("x", 100, "evt_a").key(b),
                "{a} < {b}"
            );
        }
        // Equal ranks fall through to the event id.
        assert!(obs("x", 100, "evt_a").key(S::Paused) < obs("x", 100, "evt_b").key(S::Unpaid));
        assert!(
            obs("x", 100, "evt_a").key(S::Canceled)
                < obs("x", 100, "evt_b").key(S::IncompleteExpired)
        );
    }

    #[test]
    fn only_the_same_event_has_an_equal_key() {
        assert!(updated_at(100).key(S::Active) == updated_at(100).key(S::Active));
        assert!(obs("x", 100, "evt_a").key(S::Active) < obs("x", 100, "evt_b").key(S::Active));
    }

    // --- creation ---

    #[test]
    fn first_state_emits_created_then_its_items_then_activated() {
        let observed = created_at(100);
        SubscriptionTest::with(())
            .given_no_previous_events()
            .when(apply(state(S::Active), observed.clone()))
            .then_expect_events(vec![
                E::SubscriptionCreated {
                    subscription_id: "sub_1".into(),
                    member_id: member(),
                    customer_id: "cus_1".into(),
                    status: S::Active,
                    current_period_start: Some(t(100)),
                    current_period_end: Some(t(100 + MONTH)),
                    cancel_at_period_end: false,
                    created: t(100),
                    observed: observed.clone(),
                },
                E::SubscriptionItemAdded {
                    item: site_item(),
                    observed: observed.clone(),
                },
                E::SubscriptionActivated {
                    status: S::Active,
                    observed,
                },
            ]);
    }

    #[test]
    fn first_state_adds_items_in_the_given_order() {
        let observed = created_at(100);
        let mut first = state(S::Incomplete);
        first.items = vec![site_item(), seats_item(3)];
        let mut expected = creation_of(S::Incomplete, &observed);
        expected.push(E::SubscriptionItemAdded {
            item: seats_item(3),
            observed: observed.clone(),
        });
        SubscriptionTest::with(())
            .given_no_previous_events()
            .when(apply(first, observed))
            .then_expect_events(expected);
    }

    #[test]
    fn an_incomplete_subscription_is_created_but_not_activated() {
        SubscriptionTest::with(())
            .given_no_previous_events()
            .when(apply(state(S::Incomplete), created_at(100)))
            .then_expect_events(creation_of(S::Incomplete, &created_at(100)));
    }

    #[test]
    fn first_state_canceling_at_period_end_schedules_the_cancellation() {
        let observed = updated_at(150);
        let mut first = state(S::Active);
        first.cancel_at_period_end = true;
        first.cancel_at = Some(t(100 + MONTH));
        let mut expected = creation_of(S::Active, &observed);
        if let Some(E::SubscriptionCreated {
            cancel_at_period_end,
            ..
        }) = expected.first_mut()
        {
            *cancel_at_period_end = true;
        }
        expected.push(E::SubscriptionCancellationScheduled {
            cancel_at: Some(t(100 + MONTH)),
            observed: observed.clone(),
        });
        SubscriptionTest::with(())
            .given_no_previous_events()
            .when(apply(first, observed))
            .then_expect_events(expected);
    }

    #[test]
    fn first_state_already_deleted_is_created_and_canceled() {
        let observed = deleted_at(400);
        let mut first = state(S::Canceled);
        first.canceled_at = Some(t(390));
        let mut expected = creation_of(S::Canceled, &observed);
        expected.push(E::SubscriptionCanceled {
            canceled_at: t(390),
            observed: observed.clone(),
        });
        SubscriptionTest::with(())
            .given_no_previous_events()
            .when(apply(first, observed))
            .then_expect_events(expected);
    }

    #[test]
    fn a_cancellation_without_canceled_at_is_dated_by_the_event() {
        let observed = deleted_at(400);
        let mut expected = creation_of(S::Canceled, &observed);
        expected.push(E::SubscriptionCanceled {
            canceled_at: t(400),
            observed: observed.clone(),
        });
        SubscriptionTest::with(())
            .given_no_previous_events()
            .when(apply(state(S::Canceled), observed))
            .then_expect_events(expected);
    }

    #[test]
    fn a_cancellation_with_an_event_time_out_of_range_is_dated_by_the_subscription() {
        let observed = obs(StripeObservation::SUBSCRIPTION_DELETED, i64::MAX, "evt_x");
        let mut expected = creation_of(S::Canceled, &observed);
        expected.push(E::SubscriptionCanceled {
            canceled_at: t(100),
            observed: observed.clone(),
        });
        SubscriptionTest::with(())
            .given_no_previous_events()
            .when(apply(state(S::Canceled), observed))
            .then_expect_events(expected);
    }

    #[test]
    fn an_item_listed_twice_is_added_once() {
        let mut first = state(S::Incomplete);
        first.items = vec![site_item(), site_item()];
        SubscriptionTest::with(())
            .given_no_previous_events()
            .when(apply(first, created_at(100)))
            .then_expect_events(creation_of(S::Incomplete, &created_at(100)));
    }

    // --- ordering applied ---

    #[test]
    fn an_older_state_emits_nothing() {
        let mut old = state(S::PastDue);
        old.items = vec![];
        SubscriptionTest::with(())
            .given(active_at_200())
            .when(apply(old, updated_at(150)))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_redelivered_state_emits_nothing() {
        SubscriptionTest::with(())
            .given(creation_of(S::Active, &created_at(100)))
            .when(apply(state(S::Active), created_at(100)))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_newer_state_that_changes_nothing_emits_state_observed() {
        SubscriptionTest::with(())
            .given(creation_of(S::Active, &created_at(100)))
            .when(apply(state(S::Active), updated_at(200)))
            .then_expect_events(vec![E::SubscriptionStateObserved {
                observed: updated_at(200),
            }]);
    }

    #[test]
    fn state_observed_moves_the_watermark() {
        SubscriptionTest::with(())
            .given(active_at_200())
            .when(apply(state(S::PastDue), updated_at(199)))
            .then_expect_events(vec![]);
    }

    #[test]
    fn in_the_same_second_a_deletion_wins_over_an_update() {
        let observed = deleted_at(200);
        SubscriptionTest::with(())
            .given(active_at_200())
            .when(apply(state(S::Canceled), observed.clone()))
            .then_expect_events(vec![
                E::SubscriptionStatusChanged {
                    from: S::Active,
                    to: S::Canceled,
                    observed: observed.clone(),
                },
                E::SubscriptionCanceled {
                    canceled_at: t(200),
                    observed,
                },
            ]);
    }

    #[test]
    fn in_the_same_second_a_created_event_loses_to_an_update() {
        SubscriptionTest::with(())
            .given(active_at_200())
            .when(apply(
                state(S::Incomplete),
                obs(StripeObservation::SUBSCRIPTION_CREATED, 200, "evt_zzz"),
            ))
            .then_expect_events(vec![]);
    }

    #[test]
    fn in_the_same_second_the_later_lifecycle_status_wins_over_the_event_id() {
        let past_due = obs(StripeObservation::SUBSCRIPTION_UPDATED, 200, "evt_m");
        let mut given = creation_of(S::Active, &created_at(100));
        given.push(E::SubscriptionStatusChanged {
            from: S::Active,
            to: S::PastDue,
            observed: past_due,
        });
        let earlier_id = obs(StripeObservation::SUBSCRIPTION_UPDATED, 200, "evt_a");
        let later_id = obs(StripeObservation::SUBSCRIPTION_UPDATED, 200, "evt_z");
        SubscriptionTest::with(())
            .given(given.clone())
            .when(apply(state(S::Active), later_id))
            .then_expect_events(vec![]);
        SubscriptionTest::with(())
            .given(given)
            .when(apply(state(S::Unpaid), earlier_id.clone()))
            .then_expect_events(vec![E::SubscriptionStatusChanged {
                from: S::PastDue,
                to: S::Unpaid,
                observed: earlier_id,
            }]);
    }

    #[test]
    fn in_the_same_second_and_status_the_event_id_decides() {
        let given = || {
            let mut events = creation_of(S::Active, &created_at(100));
            events.push(E::SubscriptionStateObserved {
                observed: obs(StripeObservation::SUBSCRIPTION_UPDATED, 200, "evt_m"),
            });
            events
        };
        let mut two_seats = state(S::Active);
        two_seats.items.push(seats_item(2));
        let lower = obs(StripeObservation::SUBSCRIPTION_UPDATED, 200, "evt_a");
        let higher = obs(StripeObservation::SUBSCRIPTION_UPDATED, 200, "evt_z");
        SubscriptionTest::with(())
            .given(given())
            .when(apply(two_seats.clone(), lower))
            .then_expect_events(vec![]);
        SubscriptionTest::with(())
            .given(given())
            .when(apply(two_seats, higher.clone()))
            .then_expect_events(vec![E::SubscriptionItemAdded {
                item: seats_item(2),
                observed: higher,
            }]);
    }

    #[test]
    fn a_state_of_another_subscription_is_refused() {
        let mut other = state(S::Active);
        other.subscription_id = "sub_2".into();
        SubscriptionTest::with(())
            .given(creation_of(S::Active, &created_at(100)))
            .when(apply(other, updated_at(200)))
            .then_expect_error(SubscriptionError::WrongSubscription);
    }

    // --- changes ---

    #[test]
    fn a_new_item_emits_item_added() {
        let mut next = state(S::Active);
        next.items.push(seats_item(2));
        SubscriptionTest::with(())
            .given(creation_of(S::Active, &created_at(100)))
            .when(apply(next, updated_at(200)))
            .then_expect_events(vec![E::SubscriptionItemAdded {
                item: seats_item(2),
                observed: updated_at(200),
            }]);
    }

    #[test]
    fn a_missing_item_emits_item_removed_with_its_site() {
        let mut next = state(S::Active);
        next.items = vec![];
        SubscriptionTest::with(())
            .given(creation_of(S::Active, &created_at(100)))
            .when(apply(next, updated_at(200)))
            .then_expect_events(vec![E::SubscriptionItemRemoved {
                item_id: "si_site".into(),
                site: Some("example.com".into()),
                observed: updated_at(200),
            }]);
    }

    #[test]
    fn a_new_quantity_emits_quantity_changed() {
        let mut given = creation_of(S::Active, &created_at(100));
        given.push(E::SubscriptionItemAdded {
            item: seats_item(2),
            observed: created_at(100),
        });
        let mut next = state(S::Active);
        next.items.push(seats_item(5));
        SubscriptionTest::with(())
            .given(given)
            .when(apply(next, updated_at(200)))
            .then_expect_events(vec![E::SubscriptionItemQuantityChanged {
                item_id: "si_seats".into(),
                from: 2,
                to: 5,
                observed: updated_at(200),
            }]);
    }

    #[test]
    fn a_new_price_emits_plan_changed() {
        let mut next = state(S::Active);
        next.items[0].price = price("price_site_pro", 2500);
        SubscriptionTest::with(())
            .given(creation_of(S::Active, &created_at(100)))
            .when(apply(next, updated_at(200)))
            .then_expect_events(vec![E::SubscriptionPlanChanged {
                item_id: "si_site".into(),
                from: price("price_site", 1000),
                to: price("price_site_pro", 2500),
                observed: updated_at(200),
            }]);
    }

    #[test]
    fn a_new_amount_or_interval_of_the_same_price_id_emits_plan_changed() {
        let mut yearly = price("price_site", 10000);
        yearly.interval = BillingInterval::Year;
        let mut next = state(S::Active);
        next.items[0].price = yearly.clone();
        SubscriptionTest::with(())
            .given(creation_of(S::Active, &created_at(100)))
            .when(apply(next, updated_at(200)))
            .then_expect_events(vec![E::SubscriptionPlanChanged {
                item_id: "si_site".into(),
                from: price("price_site", 1000),
                to: yearly,
                observed: updated_at(200),
            }]);
    }

    #[test]
    fn a_changed_site_of_an_existing_item_is_ignored() {
        let mut next = state(S::Active);
        next.items[0].site = Some("other.example".into());
        SubscriptionTest::with(())
            .given(creation_of(S::Active, &created_at(100)))
            .when(apply(next, updated_at(200)))
            .then_expect_events(vec![E::SubscriptionStateObserved {
                observed: updated_at(200),
            }]);
    }

    #[test]
    fn a_new_period_emits_period_changed() {
        let mut next = state(S::Active);
        next.current_period_start = Some(t(100 + MONTH));
        next.current_period_end = Some(t(100 + 2 * MONTH));
        SubscriptionTest::with(())
            .given(creation_of(S::Active, &created_at(100)))
            .when(apply(next, updated_at(100 + MONTH)))
            .then_expect_events(vec![E::SubscriptionPeriodChanged {
                current_period_start: Some(t(100 + MONTH)),
                current_period_end: Some(t(100 + 2 * MONTH)),
                observed: updated_at(100 + MONTH),
            }]);
    }

    #[test]
    fn canceling_at_period_end_emits_cancellation_scheduled() {
        let mut next = state(S::Active);
        next.cancel_at_period_end = true;
        next.cancel_at = Some(t(100 + MONTH));
        SubscriptionTest::with(())
            .given(creation_of(S::Active, &created_at(100)))
            .when(apply(next, updated_at(200)))
            .then_expect_events(vec![E::SubscriptionCancellationScheduled {
                cancel_at: Some(t(100 + MONTH)),
                observed: updated_at(200),
            }]);
    }

    #[test]
    fn resuming_a_scheduled_cancellation_emits_cancellation_unscheduled() {
        let mut given = creation_of(S::Active, &created_at(100));
        given.push(E::SubscriptionCancellationScheduled {
            cancel_at: Some(t(100 + MONTH)),
            observed: updated_at(200),
        });
        SubscriptionTest::with(())
            .given(given)
            .when(apply(state(S::Active), updated_at(300)))
            .then_expect_events(vec![E::SubscriptionCancellationUnscheduled {
                observed: updated_at(300),
            }]);
    }

    #[test]
    fn deletion_emits_status_changed_then_canceled() {
        let mut deleted = state(S::Canceled);
        deleted.canceled_at = Some(t(395));
        SubscriptionTest::with(())
            .given(active_at_200())
            .when(apply(deleted, deleted_at(400)))
            .then_expect_events(vec![
                E::SubscriptionStatusChanged {
                    from: S::Active,
                    to: S::Canceled,
                    observed: deleted_at(400),
                },
                E::SubscriptionCanceled {
                    canceled_at: t(395),
                    observed: deleted_at(400),
                },
            ]);
    }

    #[test]
    fn paying_an_incomplete_subscription_activates_it() {
        SubscriptionTest::with(())
            .given(creation_of(S::Incomplete, &created_at(100)))
            .when(apply(state(S::Active), updated_at(101)))
            .then_expect_events(vec![
                E::SubscriptionStatusChanged {
                    from: S::Incomplete,
                    to: S::Active,
                    observed: updated_at(101),
                },
                E::SubscriptionActivated {
                    status: S::Active,
                    observed: updated_at(101),
                },
            ]);
    }

    #[test]
    fn recovering_from_past_due_activates_again() {
        let mut given = creation_of(S::Active, &created_at(100));
        given.push(E::SubscriptionStatusChanged {
            from: S::Active,
            to: S::PastDue,
            observed: updated_at(200),
        });
        SubscriptionTest::with(())
            .given(given)
            .when(apply(state(S::Active), updated_at(201)))
            .then_expect_events(vec![
                E::SubscriptionStatusChanged {
                    from: S::PastDue,
                    to: S::Active,
                    observed: updated_at(201),
                },
                E::SubscriptionActivated {
                    status: S::Active,
                    observed: updated_at(201),
                },
            ]);
    }

    #[test]
    fn a_trial_turning_active_is_not_activated_twice() {
        SubscriptionTest::with(())
            .given(creation_of(S::Trialing, &created_at(100)))
            .when(apply(state(S::Active), updated_at(200)))
            .then_expect_events(vec![E::SubscriptionStatusChanged {
                from: S::Trialing,
                to: S::Active,
                observed: updated_at(200),
            }]);
    }

    #[test]
    fn many_changes_in_one_state_come_in_the_documented_order() {
        let mut given = creation_of(S::Incomplete, &created_at(100));
        given.push(E::SubscriptionItemAdded {
            item: seats_item(2),
            observed: created_at(100),
        });
        let extra = SubscriptionItem {
            item_id: "si_extra".into(),
            price: price("price_extra", 300),
            quantity: 1,
            site: Some("extra.example".into()),
            purchase_type: PurchaseType::Site,
            license_purchase_id: None,
        };
        let mut seats = seats_item(4);
        seats.price = price("price_seat_v2", 600);
        let mut next = state(S::Active);
        next.items = vec![extra.clone(), seats];
        next.current_period_end = Some(t(200 + MONTH));
        next.cancel_at_period_end = true;
        let o = updated_at(200);
        SubscriptionTest::with(())
            .given(given)
            .when(apply(next, o.clone()))
            .then_expect_events(vec![
                E::SubscriptionItemRemoved {
                    item_id: "si_site".into(),
                    site: Some("example.com".into()),
                    observed: o.clone(),
                },
                E::SubscriptionItemAdded {
                    item: extra,
                    observed: o.clone(),
                },
                E::SubscriptionPlanChanged {
                    item_id: "si_seats".into(),
                    from: price("price_seat", 500),
                    to: price("price_seat_v2", 600),
                    observed: o.clone(),
                },
                E::SubscriptionItemQuantityChanged {
                    item_id: "si_seats".into(),
                    from: 2,
                    to: 4,
                    observed: o.clone(),
                },
                E::SubscriptionPeriodChanged {
                    current_period_start: Some(t(100)),
                    current_period_end: Some(t(200 + MONTH)),
                    observed: o.clone(),
                },
                E::SubscriptionCancellationScheduled {
                    cancel_at: None,
                    observed: o.clone(),
                },
                E::SubscriptionStatusChanged {
                    from: S::Incomplete,
                    to: S::Active,
                    observed: o.clone(),
                },
                E::SubscriptionActivated {
                    status: S::Active,
                    observed: o,
                },
            ]);
    }

    // --- state ---

    #[test]
    fn the_state_follows_the_events() {
        let mut subscription = Subscription::default();
        assert!(!subscription.exists());
        assert_eq!(subscription.status(), None);
        assert!(subscription.items().is_empty());
        assert_eq!(subscription.mrr(), 0);
        for event in creation_of(S::Active, &created_at(100)) {
            subscription.apply(event);
        }
        subscription.apply(E::SubscriptionItemAdded {
            item: seats_item(2),
            observed: updated_at(200),
        });
        assert!(subscription.exists());
        assert_eq!(subscription.member_id(), Some(member()));
        assert_eq!(subscription.status(), Some(S::Active));
        let ids: Vec<&str> = subscription
            .items()
            .iter()
            .map(|i| i.item_id.as_str())
            .collect();
        assert_eq!(ids, vec!["si_seats", "si_site"]);
        assert_eq!(subscription.mrr(), 2000);
        assert_eq!(subscription.newest_observation(), Some(&updated_at(200)));
        subscription.apply(E::SubscriptionCancellationScheduled {
            cancel_at: Some(t(100 + MONTH)),
            observed: updated_at(300),
        });
        assert!(subscription.cancel_at_period_end());
        assert_eq!(subscription.cancel_at(), Some(t(100 + MONTH)));
        assert_eq!(subscription.mrr(), 0);
    }

    #[tokio::test]
    async fn the_state_survives_a_snapshot_round_trip() {
        let (mut subscription, _) = deliver(&lifecycle(), &[0, 2, 4]).await;
        subscription.apply(E::PaymentRecorded {
            payment: payment("in_1"),
        });
        subscription.apply(failed(2));
        subscription.apply(refunded(300));
        let json = serde_json::to_string(&subscription).expect("serialises");
        let back: Subscription = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, subscription);
    }

    // --- payments ---

    #[test]
    fn a_payment_is_recorded() {
        SubscriptionTest::with(())
            .given(creation_of(S::Active, &created_at(100)))
            .when(SubscriptionCommand::RecordPayment {
                payment: payment("in_1"),
            })
            .then_expect_events(vec![E::PaymentRecorded {
                payment: payment("in_1"),
            }]);
    }

    #[test]
    fn a_payment_of_a_recorded_invoice_emits_nothing() {
        SubscriptionTest::with(())
            .given(vec![E::PaymentRecorded {
                payment: payment("in_1"),
            }])
            .when(SubscriptionCommand::RecordPayment {
                payment: payment("in_1"),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_payment_of_another_invoice_is_recorded_too() {
        SubscriptionTest::with(())
            .given(vec![E::PaymentRecorded {
                payment: payment("in_1"),
            }])
            .when(SubscriptionCommand::RecordPayment {
                payment: payment("in_2"),
            })
            .then_expect_events(vec![E::PaymentRecorded {
                payment: payment("in_2"),
            }]);
    }

    #[test]
    fn a_payment_can_arrive_before_the_subscription() {
        SubscriptionTest::with(())
            .given_no_previous_events()
            .when(SubscriptionCommand::RecordPayment {
                payment: payment("in_1"),
            })
            .then_expect_events(vec![E::PaymentRecorded {
                payment: payment("in_1"),
            }]);
    }

    #[test]
    fn the_subscription_can_arrive_after_its_payment() {
        SubscriptionTest::with(())
            .given(vec![E::PaymentRecorded {
                payment: payment("in_1"),
            }])
            .when(apply(state(S::Active), created_at(100)))
            .then_expect_events(creation_of(S::Active, &created_at(100)));
    }

    #[test]
    fn each_failed_attempt_is_recorded_once() {
        SubscriptionTest::with(())
            .given_no_previous_events()
            .when(failure(1))
            .then_expect_events(vec![failed(1)]);
        SubscriptionTest::with(())
            .given(vec![failed(1)])
            .when(failure(1))
            .then_expect_events(vec![]);
        SubscriptionTest::with(())
            .given(vec![failed(1)])
            .when(failure(2))
            .then_expect_events(vec![failed(2)]);
    }

    #[test]
    fn a_first_refund_records_the_refunded_total() {
        SubscriptionTest::with(())
            .given_no_previous_events()
            .when(refund(500))
            .then_expect_events(vec![refunded(500)]);
    }

    #[test]
    fn a_further_refund_records_only_the_increase() {
        SubscriptionTest::with(())
            .given(vec![refunded(500)])
            .when(refund(800))
            .then_expect_events(vec![refunded(300)]);
    }

    #[test]
    fn a_refund_total_that_did_not_grow_emits_nothing() {
        SubscriptionTest::with(())
            .given(vec![refunded(500), refunded(300)])
            .when(refund(800))
            .then_expect_events(vec![]);
        SubscriptionTest::with(())
            .given(vec![refunded(500)])
            .when(refund(300))
            .then_expect_events(vec![]);
        SubscriptionTest::with(())
            .given_no_previous_events()
            .when(refund(0))
            .then_expect_events(vec![]);
    }

    // --- convergence ---

    /// A lifecycle: created incomplete, paid, past due (with more seats and a new period),
    /// recovered, cancellation scheduled (and an item added), deleted, and an update in the
    /// deletion's second.
    fn lifecycle() -> Vec<(StripeSubscriptionState, StripeObservation)> {
        let extra = SubscriptionItem {
            item_id: "si_extra".into(),
            price: price("price_extra", 300),
            quantity: 1,
            site: Some("extra.example".into()),
            purchase_type: PurchaseType::Site,
            license_purchase_id: None,
        };
        let mut s1 = state(S::Incomplete);
        s1.items = vec![site_item(), seats_item(2)];
        let mut s2 = s1.clone();
        s2.status = S::Active;
        let mut s3 = s2.clone();
        s3.status = S::PastDue;
        s3.items = vec![site_item(), seats_item(3)];
        s3.current_period_start = Some(t(100 + MONTH));
        s3.current_period_end = Some(t(100 + 2 * MONTH));
        let mut s4 = s3.clone();
        s4.status = S::Active;
        let mut s5 = s4.clone();
        s5.items.push(extra);
        s5.cancel_at_period_end = true;
        s5.cancel_at = Some(t(100 + 2 * MONTH));
        let mut s6 = s5.clone();
        s6.status = S::Canceled;
        s6.canceled_at = Some(t(400));
        let mut s7 = s5.clone();
        s7.status = S::PastDue;
        vec![
            (s1, created_at(100)),
            (s2, updated_at(101)),
            (s3, updated_at(200)),
            (s4, updated_at(201)),
            (s5, updated_at(300)),
            (s6, deleted_at(400)),
            (
                s7,
                obs(StripeObservation::SUBSCRIPTION_UPDATED, 400, "evt_400b"),
            ),
        ]
    }

    /// All orderings of `0..n`, deterministically.
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut all = Vec::new();
        for shorter in permutations(n - 1) {
            for at in 0..=shorter.len() {
                let mut longer = shorter.clone();
                longer.insert(at, n - 1);
                all.push(longer);
            }
        }
        all
    }

    /// Handles each delivery in turn; returns the subscription and every event emitted.
    async fn deliver(
        states: &[(StripeSubscriptionState, StripeObservation)],
        order: &[usize],
    ) -> (Subscription, Vec<E>) {
        let mut subscription = Subscription::default();
        let mut events = Vec::new();
        for &i in order {
            let (state, observed) = states[i].clone();
            let sink = EventSink::default();
            subscription
                .handle(apply(state, observed), &(), &sink)
                .await
                .expect("same subscription");
            events.extend(sink.collect().await);
        }
        (subscription, events)
    }

    #[tokio::test]
    async fn in_order_delivery_ends_canceled_with_the_last_items() {
        let states = lifecycle();
        let (subscription, events) = deliver(&states, &[0, 1, 2, 3, 4, 5, 6]).await;
        assert_eq!(subscription.status(), Some(S::Canceled));
        assert!(subscription.cancel_at_period_end());
        assert_eq!(subscription.canceled_at(), Some(t(400)));
        let mut last_items = states[5].0.items.clone();
        last_items.sort_by(|a, b| a.item_id.cmp(&b.item_id));
        assert_eq!(subscription.items(), &last_items[..]);
        assert_eq!(subscription.mrr(), 0);
        assert_eq!(subscription.newest_observation(), Some(&deleted_at(400)));
        // s7 came after the deletion in its second: stale.
        assert!(events
            .iter()
            .all(|e| e.observed().map(|o| o.event_id.as_str()) != Some("evt_400b")));
    }

    #[tokio::test]
    async fn every_delivery_order_with_redeliveries_converges_on_the_in_order_state() {
        let states = lifecycle();
        let (expected, _) = deliver(&states, &[0, 1, 2, 3, 4, 5, 6]).await;
        let orders = permutations(states.len());
        assert_eq!(orders.len(), 5040);
        for (n, order) in orders.iter().enumerate() {
            // Redeliver one state at once and another at the end.
            let mut deliveries = order.clone();
            deliveries.insert(n % order.len() + 1, order[n % order.len()]);
            deliveries.push(order[(n / 7) % order.len()]);
            let (subscription, events) = deliver(&states, &deliveries).await;
            assert_eq!(subscription, expected, "delivery order {deliveries:?}");

            // The events rebuild the same state.
            let mut rebuilt = Subscription::default();
            for event in events {
                rebuilt.apply(event);
            }
            assert_eq!(rebuilt, expected, "rebuilt from {deliveries:?}");
        }
    }

    #[test]
    fn a_payment_link_site_is_assigned_to_the_only_item_once() {
        let created = creation_of(SubscriptionStatus::Active, &created_at(100));
        let observed = created_at(100);
        let quantity_only: Vec<E> = created
            .iter()
            .cloned()
            .map(|e| match e {
                E::SubscriptionItemAdded { .. } => E::SubscriptionItemAdded {
                    item: seats_item(1),
                    observed: observed.clone(),
                },
                other => other,
            })
            .collect();
        let mut two_items = created;
        two_items.push(E::SubscriptionItemAdded {
            item: seats_item(1),
            observed,
        });
        let assign = || SubscriptionCommand::AssignItemSite {
            site: "linked.example.com".into(),
            session_id: "cs_link".into(),
        };
        let item_id = quantity_only
            .iter()
            .find_map(|e| match e {
                E::SubscriptionItemAdded { item, .. } => Some(item.item_id.clone()),
                _ => None,
            })
            .expect("one item");
        let assigned = E::SubscriptionItemSiteAssigned {
            item_id: item_id.clone(),
            site: "linked.example.com".into(),
            session_id: "cs_link".into(),
        };
        TestFramework::<Subscription>::with(())
            .given(quantity_only.clone())
            .when(assign())
            .then_expect_events(vec![assigned.clone()]);
        let mut again = quantity_only.clone();
        again.push(assigned.clone());
        TestFramework::<Subscription>::with(())
            .given(again.clone())
            .when(assign())
            .then_expect_events(vec![]);
        let mut sub = Subscription::default();
        for e in again {
            sub.apply(e);
        }
        let item = sub.item(&item_id).expect("item");
        assert_eq!(item.site.as_deref(), Some("linked.example.com"));
        assert_eq!(item.purchase_type, PurchaseType::Site);
        // Not for an unknown subscription, nor one with two items.
        TestFramework::<Subscription>::with(())
            .given_no_previous_events()
            .when(assign())
            .then_expect_events(vec![]);
        TestFramework::<Subscription>::with(())
            .given(two_items)
            .when(assign())
            .then_expect_events(vec![]);
    }
}
