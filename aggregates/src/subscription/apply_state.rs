//! Applying Stripe states: what the subscription knows from the newest applied state, and the
//! events a newer state makes of it.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    StripeObservation, StripeSubscriptionState, Subscription, SubscriptionError, SubscriptionEvent,
};
use crate::billing::{Discount, PurchaseType, SubscriptionItem, SubscriptionStatus};

/// The subscription as the newest applied Stripe state showed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub(super) struct Known {
    pub(super) subscription_id: String,
    pub(super) member_id: Uuid,
    pub(super) customer_id: String,
    pub(super) status: SubscriptionStatus,
    /// Sorted by `item_id`, one per id, so the order does not depend on the delivery order.
    pub(super) items: Vec<SubscriptionItem>,
    pub(super) current_period_start: Option<DateTime<Utc>>,
    pub(super) current_period_end: Option<DateTime<Utc>>,
    pub(super) cancel_at_period_end: bool,
    pub(super) cancel_at: Option<DateTime<Utc>>,
    pub(super) canceled_at: Option<DateTime<Utc>>,
    pub(super) created: DateTime<Utc>,
    /// The discounts in force as of the newest applied state.
    #[serde(default)]
    pub(super) discounts: Vec<Discount>,
    /// The newest applied observation; with `status` (the status that state had) it is the
    /// ordering watermark.
    pub(super) newest: StripeObservation,
}

impl Known {
    pub(super) fn item(&self, item_id: &str) -> Option<&SubscriptionItem> {
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
        let discounts = state.discounts_in_force(observed);
        if discounts != self.discounts {
            events.push(SubscriptionEvent::SubscriptionDiscountChanged {
                from: self.discounts.clone(),
                to: discounts,
                observed: obs(),
            });
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
    let discounts = state.discounts_in_force(observed);
    if !discounts.is_empty() {
        events.push(SubscriptionEvent::SubscriptionDiscountChanged {
            from: Vec::new(),
            to: discounts,
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

impl Subscription {
    /// The events applying `state` produces: none when it is not newer than the newest
    /// applied state (stale or a redelivery), else at least one.
    pub(super) fn decide_stripe_state(
        &self,
        state: &StripeSubscriptionState,
        observed: &StripeObservation,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        let mut events = match &self.known {
            None => creation(state, observed),
            Some(known) => {
                if known.subscription_id != state.subscription_id {
                    return Err(SubscriptionError::WrongSubscription);
                }
                if observed.key(state.status) <= known.newest.key(known.status) {
                    return Ok(Vec::new());
                }
                known.changes_to(state, observed)
            }
        };
        // The first applied state that names an offer redeems it; stale states and
        // redeliveries were refused above, so it is recorded once whatever the order.
        if let Some(offer_id) = state.offer_id {
            if !self.redeemed_offers.contains(&offer_id) {
                let redeemed = SubscriptionEvent::OfferRedeemed {
                    offer_id,
                    member_id: self.member_id().unwrap_or(state.member_id),
                    customer_id: state.customer_id.clone(),
                    redeemed_at: observed.observed_at().unwrap_or(state.created),
                    observed: observed.clone(),
                };
                if let [SubscriptionEvent::SubscriptionStateObserved { .. }] = events.as_slice() {
                    events.clear();
                }
                events.push(redeemed);
            }
        }
        Ok(events)
    }
}

impl Known {
    pub(super) fn apply_change(&mut self, event: SubscriptionEvent) {
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
            SubscriptionEvent::SubscriptionDiscountChanged { to, .. } => self.discounts = to,
            SubscriptionEvent::SubscriptionStateObserved { .. }
            | SubscriptionEvent::OfferRedeemed { .. }
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
