//! Folding a subscription's events into its rows, in order, in memory.

use std::collections::hash_map::Entry;

use aggregates::mrr::discounted_mrr;
use aggregates::{Price, SubscriptionEvent, SubscriptionItem, SubscriptionStatus};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;

impl Rows {
    /// Applies one event to the rows, as the statements of one event at a time did.
    pub(super) fn fold(
        &mut self,
        event: &StoredEvent,
        change: SubscriptionEvent,
    ) -> Result<(), ProjectionError> {
        let id = event.aggregate_id.as_str();
        match change {
            SubscriptionEvent::SubscriptionCreated {
                member_id,
                customer_id,
                status,
                current_period_start,
                current_period_end,
                cancel_at_period_end,
                created,
                observed,
                ..
            } => {
                // `cancel_at` comes with the `SubscriptionCancellationScheduled` that follows
                // when the subscription starts with a cancellation scheduled.
                if !self.subscriptions.contains_key(id) {
                    self.subscriptions.insert(
                        id.to_owned(),
                        SubscriptionRow {
                            id: id.to_owned(),
                            member_id,
                            customer_id,
                            status: status.as_str().to_owned(),
                            cancel_at_period_end,
                            cancel_at: None,
                            current_period_start,
                            current_period_end,
                            created_at: created,
                            canceled_at: None,
                            mrr: 0,
                            currency: None,
                            updated_at: observed_at(&observed, event),
                            past_due_since: (status == SubscriptionStatus::PastDue)
                                .then(|| observed_at(&observed, event)),
                            discounts: Vec::new(),
                        },
                    );
                    self.changed_subscriptions.insert(id.to_owned());
                }
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionActivated { status, observed }
            | SubscriptionEvent::SubscriptionStatusChanged {
                to: status,
                observed,
                ..
            } => {
                if let Some(row) = self.subscription(id) {
                    row.status = status.as_str().to_owned();
                    row.updated_at = row.updated_at.max(observed_at(&observed, event));
                    row.past_due_since = match status {
                        SubscriptionStatus::PastDue => row
                            .past_due_since
                            .or_else(|| Some(observed_at(&observed, event))),
                        _ => None,
                    };
                }
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionCanceled {
                canceled_at,
                observed,
            } => {
                if let Some(row) = self.subscription(id) {
                    row.status = SubscriptionStatus::Canceled.as_str().to_owned();
                    row.canceled_at = Some(canceled_at);
                    row.past_due_since = None;
                    row.updated_at = row.updated_at.max(observed_at(&observed, event));
                }
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionPeriodChanged {
                current_period_start,
                current_period_end,
                observed,
            } => {
                if let Some(row) = self.subscription(id) {
                    row.current_period_start = current_period_start;
                    row.current_period_end = current_period_end;
                    row.updated_at = row.updated_at.max(observed_at(&observed, event));
                }
            }
            SubscriptionEvent::SubscriptionCancellationScheduled {
                cancel_at,
                observed,
            } => {
                if let Some(row) = self.subscription(id) {
                    row.cancel_at_period_end = true;
                    row.cancel_at = cancel_at;
                    row.updated_at = row.updated_at.max(observed_at(&observed, event));
                }
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionCancellationUnscheduled { observed } => {
                if let Some(row) = self.subscription(id) {
                    row.cancel_at_period_end = false;
                    row.cancel_at = None;
                    row.updated_at = row.updated_at.max(observed_at(&observed, event));
                }
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionItemAdded { item, observed } => {
                let at = observed_at(&observed, event);
                if !self.touch(id, at) {
                    return Ok(());
                }
                let fields = ItemRow {
                    id: item.item_id.clone(),
                    subscription_id: id.to_owned(),
                    price_id: item.price.price_id,
                    product_id: item.price.product_id,
                    unit_amount: item.price.unit_amount,
                    currency: item.price.currency,
                    interval: item.price.interval.as_str().to_owned(),
                    interval_count: to_i32(item.price.interval_count),
                    quantity: to_i32(item.quantity),
                    site: item.site,
                    purchase_type: item.purchase_type.as_str().to_owned(),
                    status: "active".to_owned(),
                    added_at: at,
                    removed_at: None,
                };
                // An item added again keeps its subscription and when it was first added.
                let row = match self.items.remove(&item.item_id) {
                    Some(old) => ItemRow {
                        subscription_id: old.subscription_id,
                        added_at: old.added_at,
                        ..fields
                    },
                    None => fields,
                };
                self.changed_items.insert(row.id.clone());
                self.items.insert(row.id.clone(), row);
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionItemRemoved {
                item_id, observed, ..
            } => {
                let at = observed_at(&observed, event);
                if let Some(row) = self.item(id, &item_id).filter(|r| r.status == "active") {
                    row.status = "removed".to_owned();
                    row.removed_at = Some(at);
                }
                self.touch(id, at);
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionItemQuantityChanged {
                item_id,
                to,
                observed,
                ..
            } => {
                if let Some(row) = self.item(id, &item_id) {
                    row.quantity = to_i32(to);
                }
                self.touch(id, observed_at(&observed, event));
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionItemSiteAssigned { item_id, site, .. } => {
                if let Some(row) = self.item(id, &item_id) {
                    row.site = Some(site);
                    row.purchase_type = "site".to_owned();
                }
            }
            SubscriptionEvent::SubscriptionPlanChanged {
                item_id,
                to,
                observed,
                ..
            } => {
                if let Some(row) = self.item(id, &item_id) {
                    row.price_id = to.price_id;
                    row.product_id = to.product_id;
                    row.unit_amount = to.unit_amount;
                    row.currency = to.currency;
                    row.interval = to.interval.as_str().to_owned();
                    row.interval_count = to_i32(to.interval_count);
                }
                self.touch(id, observed_at(&observed, event));
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SitePurchaseStarted {
                session_id,
                member_id,
                sites,
                amount,
                currency,
                started_at,
                ..
            } => {
                for site in sites {
                    let key = (session_id.clone(), site.clone());
                    if self.sites.contains_key(&key) {
                        continue;
                    }
                    self.sites.insert(
                        key.clone(),
                        SiteRow {
                            session_id: session_id.clone(),
                            site,
                            subscription_id: id.to_owned(),
                            member_id,
                            amount,
                            currency: currency.clone(),
                            status: "pending".to_owned(),
                            created_at: started_at,
                            updated_at: started_at,
                        },
                    );
                    self.changed_sites.insert(key);
                }
            }
            SubscriptionEvent::SitePurchaseCompleted {
                session_id,
                completed_at: at,
            } => self.set_sites(&session_id, "paid", at),
            SubscriptionEvent::SitePurchaseExpired {
                session_id,
                expired_at: at,
            } => self.set_sites(&session_id, "expired", at),
            SubscriptionEvent::LicensePurchaseStarted {
                purchase_id,
                session_id,
                member_id,
                quantity,
                amount,
                currency,
                started_at,
                ..
            } => {
                if let Entry::Vacant(vacant) = self.purchases.entry(purchase_id) {
                    vacant.insert(PurchaseRow {
                        purchase_id,
                        session_id,
                        subscription_id: id.to_owned(),
                        member_id,
                        quantity: to_i32(quantity),
                        amount,
                        currency,
                        status: "pending".to_owned(),
                        created_at: started_at,
                        updated_at: started_at,
                    });
                    self.changed_purchases.insert(purchase_id);
                }
            }
            SubscriptionEvent::LicensePurchaseCompleted {
                purchase_id,
                completed_at: at,
                ..
            } => self.set_purchase(purchase_id, "paid", at),
            SubscriptionEvent::LicensePurchaseExpired {
                purchase_id,
                expired_at: at,
                ..
            } => self.set_purchase(purchase_id, "expired", at),
            SubscriptionEvent::SubscriptionDiscountChanged { to, observed, .. } => {
                if let Some(row) = self.subscription(id) {
                    row.discounts = to;
                    row.updated_at = observed_at(&observed, event);
                }
                self.refresh_mrr(event, id)?;
            }
            // Nothing tracked here changed; payments are in `members_payment_events`,
            // redemptions in `offer_redemptions`.
            SubscriptionEvent::SubscriptionStateObserved { .. }
            | SubscriptionEvent::OfferRedeemed { .. }
            | SubscriptionEvent::PaymentRecorded { .. }
            | SubscriptionEvent::PaymentFailed { .. }
            | SubscriptionEvent::PaymentRefunded { .. } => {}
        }
        Ok(())
    }

    fn set_sites(&mut self, session_id: &str, status: &str, at: DateTime<Utc>) {
        for (key, row) in self.sites.iter_mut().filter(|(k, _)| k.0 == session_id) {
            row.status = status.to_owned();
            row.updated_at = at;
            self.changed_sites.insert(key.clone());
        }
    }

    fn set_purchase(&mut self, purchase_id: Uuid, status: &str, at: DateTime<Utc>) {
        if let Some(row) = self.purchases.get_mut(&purchase_id) {
            row.status = status.to_owned();
            row.updated_at = at;
            self.changed_purchases.insert(purchase_id);
        }
    }

    /// Recomputes the subscription's MRR and currency from its status and active items.
    fn refresh_mrr(&mut self, event: &StoredEvent, id: &str) -> Result<(), ProjectionError> {
        let Some(subscription) = self.subscriptions.get(id) else {
            return Ok(());
        };
        let status: SubscriptionStatus = parse_name(&subscription.status, event)?;
        let cancel_at_period_end = subscription.cancel_at_period_end;
        let mut active: Vec<&ItemRow> = self
            .items
            .values()
            .filter(|i| i.subscription_id == id && i.status == "active")
            .collect();
        active.sort_by(|a, b| a.id.cmp(&b.id));
        let mut items = Vec::with_capacity(active.len());
        for row in active {
            items.push(SubscriptionItem {
                item_id: row.id.clone(),
                price: Price {
                    price_id: row.price_id.clone(),
                    product_id: row.product_id.clone(),
                    unit_amount: row.unit_amount,
                    currency: row.currency.clone(),
                    interval: parse_name(&row.interval, event)?,
                    interval_count: to_u32(row.interval_count),
                },
                quantity: to_u32(row.quantity),
                site: row.site.clone(),
                purchase_type: parse_name(&row.purchase_type, event)?,
                license_purchase_id: None,
            });
        }
        let mrr = discounted_mrr(
            status,
            cancel_at_period_end,
            &items,
            &subscription.discounts,
        );
        let currency = items.first().map(|item| item.price.currency.clone());
        if let Some(row) = self.subscription(id) {
            row.mrr = mrr;
            if currency.is_some() {
                row.currency = currency;
            }
        }
        Ok(())
    }
}
