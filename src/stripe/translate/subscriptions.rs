//! A subscription created, updated or deleted at Stripe: its state applied as Stripe showed it,
//! with its discounts and the offer it was bought with.

use aggregates::{
    Discount, DiscountDuration, DiscountOff, PurchaseType, SiteDomain, StripeObservation,
    StripeSubscriptionState, SubscriptionCommand,
};
use anyhow::{anyhow, Context};
use chrono::Months;
use serde_json::Value;
use uuid::Uuid;

use super::read::{
    custom_field_site, id_of, subscription_contact, subscription_discounts, subscription_state,
    text, time, SubscriptionDiscount,
};
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
        self.resolve_offer(object, &mut state).await?;
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

    /// The offer the subscription was bought with, and the terms of discounts whose coupon the
    /// object names only by id, from our `offers` (written by the API before any checkout
    /// could apply them). Nothing is fetched from Stripe: a discount whose coupon is no offer
    /// of ours and whose terms the event lacks counts as no discount (logged).
    async fn resolve_offer(
        &self,
        object: &Value,
        state: &mut StripeSubscriptionState,
    ) -> anyhow::Result<()> {
        let read = subscription_discounts(object);
        if read.is_empty() && state.offer_id.is_none() {
            return Ok(());
        }
        let mut ids: Vec<Uuid> = state.offer_id.into_iter().collect();
        ids.extend(read.iter().filter_map(|d| d.coupon_offer_id));
        let coupons: Vec<String> = read.iter().filter_map(|d| d.coupon_id.clone()).collect();
        let offers: Vec<OfferRow> = sqlx::query_as(
            "SELECT o.id, o.stripe_coupon_id, o.discount_type, o.discount_value, o.duration,
                    o.duration_months, t.currency
             FROM offers o LEFT JOIN tiers t ON t.id = o.tier_id
             WHERE o.id = ANY($1) OR o.stripe_coupon_id = ANY($2)",
        )
        .bind(&ids)
        .bind(&coupons)
        .fetch_all(&self.pool)
        .await
        .context("reading the subscription's offer")?;
        let named = state
            .offer_id
            .and_then(|id| offers.iter().find(|o| o.id == id));
        if let (Some(id), None) = (state.offer_id, named) {
            tracing::warn!(subscription_id = %state.subscription_id, offer_id = %id, "the subscription names an offer we do not have; no redemption recorded");
        }
        let by_coupon = |coupon: &str| offers.iter().find(|o| o.stripe_coupon_id == coupon);
        state.offer_id = named
            .or_else(|| read.iter().find_map(|d| by_coupon(d.coupon_id.as_deref()?)))
            .or_else(|| {
                read.iter()
                    .find_map(|d| offers.iter().find(|o| Some(o.id) == d.coupon_offer_id))
            })
            .map(|o| o.id);
        // Discounts whose terms the object lacks: the offer's whose coupon it is, or (a
        // discount named only by its id) the offer the checkout named.
        let start = time(&object["start_date"]).unwrap_or(state.created);
        let mut named_unused = named;
        for discount in read.iter().filter(|d| d.terms.is_none()) {
            let offer = match &discount.coupon_id {
                Some(coupon) => by_coupon(coupon),
                // Our checkout applies one coupon: the first discount named only by id.
                None => named_unused.take(),
            };
            match offer.and_then(|o| o.discount(discount, start)) {
                Some(terms) => state.discounts.push(terms),
                None => tracing::warn!(
                    subscription_id = %state.subscription_id,
                    discount_id = ?discount.discount_id,
                    coupon_id = ?discount.coupon_id,
                    "a discount's terms are not in the event and match no offer of ours; its MRR counts it undiscounted"
                ),
            }
        }
        Ok(())
    }

    /// The site a Payment Link checkout of this subscription named, from its
    /// `checkout.session.completed` in the inbox (stored, whether processed yet or not).
    async fn checkout_site(&self, subscription_id: &str) -> anyhow::Result<Option<SiteDomain>> {
        let sessions: Vec<Value> = sqlx::query_scalar(
            "SELECT payload::json->'data'->'object' FROM stripe_events
             WHERE type = 'checkout.session.completed'
               AND payload::json->'data'->'object'->>'subscription' = $1
             ORDER BY created",
        )
        .bind(subscription_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(sessions.iter().find_map(custom_field_site))
    }
}

/// An offer's terms as `offers` keeps them, with its tier's currency.
#[derive(sqlx::FromRow)]
struct OfferRow {
    id: Uuid,
    stripe_coupon_id: String,
    discount_type: String,
    discount_value: i64,
    duration: String,
    duration_months: Option<i32>,
    currency: Option<String>,
}

impl OfferRow {
    /// The discount this offer's coupon makes of `read` (which names it without terms): its
    /// own `end` when the object has one, else for a repeating offer its months from the
    /// discount's `start` (the subscription's start when not given), as Stripe counts them.
    fn discount(
        &self,
        read: &SubscriptionDiscount,
        start: chrono::DateTime<chrono::Utc>,
    ) -> Option<Discount> {
        let off = match self.discount_type.as_str() {
            "percent" => DiscountOff::PercentHundredths(
                u32::try_from(self.discount_value).ok()?.checked_mul(100)?,
            ),
            _ => DiscountOff::Amount {
                amount: self.discount_value,
                currency: self.currency.clone()?,
            },
        };
        let months = self.duration_months.and_then(|m| u32::try_from(m).ok());
        let duration = match (self.duration.as_str(), months) {
            ("repeating", Some(months)) => DiscountDuration::Repeating(months),
            ("forever", _) => DiscountDuration::Forever,
            _ => DiscountDuration::Once,
        };
        let end = read.end.or_else(|| match duration {
            DiscountDuration::Repeating(months) => read
                .start
                .unwrap_or(start)
                .checked_add_months(Months::new(months)),
            DiscountDuration::Once | DiscountDuration::Forever => None,
        });
        Some(Discount {
            discount_id: read.discount_id.clone(),
            coupon_id: read
                .coupon_id
                .clone()
                .or_else(|| Some(self.stripe_coupon_id.clone())),
            off,
            duration,
            end,
        })
    }
}
