//! The Subscription aggregate itself: its state, what it answers, and how it handles commands
//! and applies events.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::apply_state::Known;
use super::{
    Purchase, PurchaseState, StripeObservation, SubscriptionCommand, SubscriptionError,
    SubscriptionEvent,
};
use crate::billing::{Discount, SubscriptionItem, SubscriptionStatus};

/// A Stripe subscription (aggregate id = Stripe's `sub_...`) and the payments of its invoices.
///
/// Payments can be recorded before any Stripe state was applied (the invoice webhook came
/// first); the subscription [`exists`](Subscription::exists) only once a state was applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Subscription {
    pub(super) known: Option<Known>,
    paid_invoices: BTreeSet<String>,
    /// `(invoice_id, attempt_count)`
    failed_attempts: BTreeSet<(String, u32)>,
    /// Refunded total so far per charge id.
    refunded: BTreeMap<String, i64>,
    /// Purchases of sites or license seats, by purchase id (or session id when recorded
    /// without one).
    #[serde(default)]
    pub(super) purchases: BTreeMap<String, Purchase>,
    /// The offers it was started with (`OfferRedeemed`), each recorded once.
    #[serde(default)]
    pub(super) redeemed_offers: BTreeSet<Uuid>,
}

impl Subscription {
    /// A new purchase adds to a subscription of the member who pays that has not ended. Before
    /// any Stripe state is applied there is nothing to refuse it on (the API checked the read
    /// model); once one is, a stale read model cannot start a purchase on an ended
    /// subscription or another member's.
    fn check_purchasable(&self, member_id: Uuid) -> Result<(), SubscriptionError> {
        let Some(known) = &self.known else {
            return Ok(());
        };
        if known.member_id != member_id {
            return Err(SubscriptionError::OtherMember);
        }
        if matches!(
            known.status,
            SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired
        ) {
            return Err(SubscriptionError::Ended);
        }
        Ok(())
    }

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

    /// Monthly recurring revenue in minor units, with the discounts in force; 0 before the
    /// subscription exists. See [`crate::mrr::discounted_mrr`].
    pub fn mrr(&self) -> i64 {
        self.known.as_ref().map_or(0, |k| {
            crate::mrr::discounted_mrr(k.status, k.cancel_at_period_end, &k.items, &k.discounts)
        })
    }

    /// The discounts in force, as of the newest applied Stripe state.
    pub fn discounts(&self) -> &[Discount] {
        self.known.as_ref().map_or(&[], |k| k.discounts.as_slice())
    }

    /// Whether `OfferRedeemed` was recorded for this offer.
    pub fn redeemed(&self, offer_id: Uuid) -> bool {
        self.redeemed_offers.contains(&offer_id)
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
                    self.check_purchasable(member_id)?;
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
                    self.check_purchasable(member_id)?;
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
                    discounts: Vec::new(),
                    newest: observed,
                });
            }
            SubscriptionEvent::OfferRedeemed { offer_id, .. } => {
                self.redeemed_offers.insert(offer_id);
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
