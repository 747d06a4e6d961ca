//! A new subscription's Checkout Session completing: the customer's member, the further sites
//! bought with it, and the site a Payment Link's custom field names.

use aggregates::SubscriptionCommand;
use anyhow::{anyhow, Context};
use serde_json::Value;

use super::read::{custom_field_site, id_of, session_contact, text};
use super::{Outcome, Translator};
use crate::store::EventMetadata;
use crate::stripe::purchase_metadata::{self, key, new_item, site_item_metadata};

impl Translator {
    pub(super) async fn checkout_completed(
        &self,
        session: &Value,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let Some(customer) = id_of(&session["customer"]) else {
            return Ok(Outcome::Ignored("the session has no customer".into()));
        };
        self.member_for_customer(customer, &session_contact(session), metadata)
            .await?;
        if let (Some(subscription_id), Some(sites)) = (
            id_of(&session["subscription"]),
            purchase_metadata::checkout_sites(session),
        ) {
            if session["payment_status"] == "unpaid" {
                return Ok(Outcome::Ignored(
                    "the extra sites are added when the payment succeeds".into(),
                ));
            }
            self.add_checkout_sites(session, subscription_id, sites)
                .await?;
        }
        // A Payment Link names the site in a custom field, not in the subscription's metadata.
        // When Stripe's subscription state came first, its only item gets the site now.
        if let (Some(subscription_id), Some(site)) = (
            id_of(&session["subscription"]),
            text(&session["metadata"][key::SITE])
                .is_none()
                .then(|| custom_field_site(session))
                .flatten(),
        ) {
            let command = SubscriptionCommand::AssignItemSite {
                site: site.to_string(),
                session_id: text(&session["id"]).unwrap_or_default().to_owned(),
            };
            self.subscriptions
                .execute(subscription_id, command, metadata.clone())
                .await
                .map_err(|e| anyhow!("assigning {site} to {subscription_id}: {e}"))?;
        }
        Ok(Outcome::Processed)
    }

    /// A new subscription bought for several sites: the first is the price's item (named by
    /// `metadata.site`), each further one was charged its first period at checkout and is
    /// added now as its own item (`metadata.site`, no proration). Once per site: one already on
    /// the subscription is skipped, and each call has an idempotency key from session and site.
    async fn add_checkout_sites(
        &self,
        session: &Value,
        subscription_id: &str,
        sites: &str,
    ) -> anyhow::Result<()> {
        let session_id = text(&session["id"]).context("the session has no id")?;
        let subscription = self.load_subscription(subscription_id).await?;
        let mut items = Vec::new();
        for site in sites.split(',').filter(|s| !s.is_empty()).skip(1) {
            if !subscription
                .items()
                .iter()
                .any(|i| i.site.as_deref() == Some(site))
            {
                let item = new_item(session, subscription_id, 1, site_item_metadata(site))?;
                items.push((format!("add-site-{session_id}-{site}"), item));
            }
        }
        self.add_items(items).await
    }
}
