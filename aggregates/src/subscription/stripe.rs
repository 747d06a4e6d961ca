//! What Stripe tells a subscription: its state as one Stripe object showed it, which event
//! showed it (and how such observations order), and a paid invoice.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::billing::{Discount, SubscriptionItem, SubscriptionStatus};

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
    /// The discounts on it (coupons, e.g. an offer's), as far as their terms are known; those
    /// whose `end` passed by the observation do not count.
    #[serde(default)]
    pub discounts: Vec<Discount>,
    /// The offer it was bought with: our checkout's `offer_id` metadata, else the offer whose
    /// coupon is among its discounts.
    #[serde(default)]
    pub offer_id: Option<Uuid>,
}

impl StripeSubscriptionState {
    /// The discounts still in force when `observed` showed the state.
    pub fn discounts_in_force(&self, observed: &StripeObservation) -> Vec<Discount> {
        let at = observed.observed_at().unwrap_or(self.created);
        self.discounts
            .iter()
            .filter(|d| d.in_force_at(at))
            .cloned()
            .collect()
    }
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
            lifecycle_rank(status),
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

/// Where the status sits in a subscription's lifecycle; breaks same-second ties between
/// Stripe states (see [`StripeObservation::key`]).
fn lifecycle_rank(status: SubscriptionStatus) -> u8 {
    match status {
        SubscriptionStatus::Incomplete => 0,
        SubscriptionStatus::Trialing => 1,
        SubscriptionStatus::Active => 2,
        SubscriptionStatus::PastDue => 3,
        SubscriptionStatus::Unpaid | SubscriptionStatus::Paused => 4,
        SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired => 5,
    }
}
