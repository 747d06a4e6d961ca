//! Sites or license seats added to an existing subscription: paid (the session completing or
//! its payment intent succeeding) or expired unpaid.

use aggregates::{
    CancelReason, License, LicenseCommand, PurchaseState, PurchaseType, SubscriptionCommand,
};
use anyhow::{anyhow, Context};
use chrono::DateTime;
use serde_json::Value;

use super::read::{is_paid, text};
use super::{Outcome, Translator};
use crate::store::EventMetadata;
use crate::stripe::purchase_metadata::{
    self, key, license_purchase, metadata_field, new_item, purchase_key, seats_item_metadata,
    site_item_metadata,
};

impl Translator {
    /// A payment for sites or license seats added to an existing subscription: add their
    /// items at Stripe, then complete the purchase. Once: a purchase already completed (by the
    /// other trigger of the same payment, or a redelivery) calls Stripe no more, and each call
    /// has an idempotency key derived from the purchase. The items themselves arrive with
    /// `customer.subscription.updated`; a license purchase's reserved keys activate then.
    pub(super) async fn purchase_paid(
        &self,
        object: &Value,
        created: i64,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let id = text(&object["id"]).context("the object has no id")?;
        if !is_paid(object) {
            return Ok(Outcome::Ignored(format!("{id} is not paid yet")));
        }
        let field = |key| metadata_field(object, key);
        let Some(purchase) = purchase_key(object) else {
            return Ok(Outcome::Ignored(format!(
                "payment {id} names no purchase; its session's completion adds the items"
            )));
        };
        let subscription_id = field(key::EXISTING_SUBSCRIPTION_ID)?;
        let subscription = self.load_subscription(subscription_id).await?;
        if subscription
            .purchase(&purchase)
            .is_some_and(|p| p.state == PurchaseState::Completed)
        {
            return Ok(Outcome::Ignored(format!(
                "purchase {purchase} is complete already"
            )));
        }
        let mut items = Vec::new();
        if field(key::PURCHASE_TYPE)? == PurchaseType::Quantity.as_str() {
            let (purchase_id, quantity) = license_purchase(object)?;
            let metadata = seats_item_metadata(purchase_id);
            let item = new_item(object, subscription_id, u64::from(quantity), metadata)?;
            items.push((format!("add-seats-{purchase}"), item));
        } else {
            for site in field(key::SITES)?.split(',').filter(|s| !s.is_empty()) {
                let item = new_item(object, subscription_id, 1, site_item_metadata(site))?;
                items.push((format!("add-site-{purchase}-{site}"), item));
            }
        }
        self.add_items(items).await?;
        let command = SubscriptionCommand::CompletePurchase {
            purchase: purchase.clone(),
            at: DateTime::from_timestamp(created, 0).unwrap_or_default(),
        };
        self.subscriptions
            .execute(subscription_id, command, metadata.clone())
            .await
            .map_err(|e| anyhow!("completing purchase {purchase}: {e}"))?;
        Ok(Outcome::Processed)
    }

    /// A purchase's session expired unpaid: a license purchase's reserved keys are canceled,
    /// and the purchase is no longer pending.
    pub(super) async fn purchase_expired(
        &self,
        session: &Value,
        created: i64,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let purchase = purchase_key(session).context("the session has no id")?;
        let subscription_id = metadata_field(session, key::EXISTING_SUBSCRIPTION_ID)?;
        let at = DateTime::from_timestamp(created, 0).unwrap_or_default();
        if purchase_metadata::is_license_purchase(session) {
            let (purchase_id, quantity) = license_purchase(session)?;
            for seat in 1..=quantity {
                let license_id = License::id_for_purchase(purchase_id, seat);
                let command = LicenseCommand::CancelPendingLicense {
                    reason: CancelReason::CheckoutExpired,
                    at,
                };
                self.licenses
                    .execute(&license_id.to_string(), command, metadata.clone())
                    .await
                    .map_err(|e| anyhow!("canceling key {license_id}: {e}"))?;
            }
        }
        let command = SubscriptionCommand::ExpirePurchase {
            purchase: purchase.clone(),
            at,
        };
        self.subscriptions
            .execute(subscription_id, command, metadata.clone())
            .await
            .map_err(|e| anyhow!("expiring purchase {purchase}: {e}"))?;
        Ok(Outcome::Processed)
    }
}
