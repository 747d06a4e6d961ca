//! A subscription created, updated or deleted at Stripe: its state applied as Stripe showed it.

use aggregates::{PurchaseType, SiteDomain, StripeObservation, SubscriptionCommand};
use anyhow::{anyhow, Context};
use serde_json::Value;

use super::read::{custom_field_site, id_of, subscription_contact, subscription_state, text};
use super::{Outcome, Translator};
use crate::store::EventMetadata;
use crate::stripe::purchase_metadata;

impl Translator {
    pub(super) async fn subscription_changed(
        &self,
        object: &Value,
        observed: StripeObservation,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let subscription_id = text(&object["id"]).context("the subscription has no id")?;
        let customer = id_of(&object["customer"]).context("the subscription has no customer")?;
        let member_id = self
            .member_for_customer(customer, &subscription_contact(object), metadata)
            .await?;
        let mut state = subscription_state(object, member_id)?;
        // Not ours (our checkouts name the purchase type): perhaps a Payment Link's.
        let from_elsewhere = !purchase_metadata::from_our_checkout(object);
        if let [item] = state.items.as_mut_slice() {
            if from_elsewhere && item.site.is_none() && item.license_purchase_id.is_none() {
                if let Some(site) = self.checkout_site(subscription_id).await? {
                    item.site = Some(site.to_string());
                    item.purchase_type = PurchaseType::Site;
                }
            }
        }
        self.subscriptions
            .execute(
                subscription_id,
                SubscriptionCommand::ApplyStripeState { state, observed },
                metadata.clone(),
            )
            .await
            .map_err(|e| anyhow!("applying subscription {subscription_id}: {e}"))?;
        Ok(Outcome::Processed)
    }

    /// The site a Payment Link checkout of this subscription named, from its
    /// `checkout.session.completed` in the inbox (stored, whether processed yet or not).
    async fn checkout_site(&self, subscription_id: &str) -> anyhow::Result<Option<SiteDomain>> {
        let sessions: Vec<Value> = sqlx::query_scalar(
            "SELECT payload->'data'->'object' FROM stripe_events
             WHERE type = 'checkout.session.completed'
               AND payload->'data'->'object'->>'subscription' = $1
             ORDER BY created",
        )
        .bind(subscription_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(sessions.iter().find_map(custom_field_site))
    }
}
