//! Stripe events into commands. Works from the raw JSON (as stored), so an event async-stripe's
//! typed parser rejected is processed the same way, and API-version differences in where a
//! field lives (e.g. the period on the subscription or on its items) are handled in one place
//! ([`read`]).

mod checkout;
mod customers;
pub use customers::{group_checkouts, GROUP_CHECKOUTS, GROUP_MEMBER};
mod invoices;
mod purchases;
pub mod read;
mod subscriptions;

use std::sync::Arc;

use aggregates::{License, Member, StripeObservation, Subscription};
use anyhow::{anyhow, Context};
use sqlx::PgPool;

use super::client::{NewItem, StripeApi};
use super::inbox::ClaimedEvent;
use super::purchase_metadata;
use crate::store::{Actor, CommandBus, EventMetadata};

/// How an event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Processed,
    /// Stored, but nothing to do (a type we do not handle, or an object that is not ours).
    Ignored(String),
    /// Not yet: it needs another event of its customer first (the reason says which). The inbox
    /// runs it again as soon as an event of the customer is processed.
    Deferred(String),
}

/// A handler's way of saying [`Outcome::Deferred`] from deep inside (e.g. the customer has no
/// member yet): returned as an error, so `?` carries it up, and turned into the outcome by
/// [`Translator::handle`]. Only for what another event of the same customer supplies; anything
/// else is a failure for an operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Waiting(pub String);

pub struct Translator {
    pub pool: PgPool,
    pub members: Arc<CommandBus<Member>>,
    pub subscriptions: Arc<CommandBus<Subscription>>,
    pub licenses: Arc<CommandBus<License>>,
    pub stripe: Option<StripeApi>,
}

impl Translator {
    pub async fn handle(&self, event: &ClaimedEvent) -> anyhow::Result<Outcome> {
        match self.dispatch(event).await {
            Err(err) if err.chain().any(|cause| cause.is::<Waiting>()) => {
                Ok(Outcome::Deferred(format!("{err:#}")))
            }
            result => result,
        }
    }

    /// Every event type `dispatch` acts on; others are stored and ignored. What
    /// `stripe reconcile` fetches (and what a webhook endpoint needs to send).
    pub const HANDLED: &'static [&'static str] = &[
        "charge.refunded",
        "checkout.session.async_payment_succeeded",
        "checkout.session.completed",
        "checkout.session.expired",
        "customer.subscription.created",
        "customer.subscription.deleted",
        "customer.subscription.updated",
        "invoice.paid",
        "invoice.payment_failed",
        "invoice.payment_succeeded",
        "payment_intent.succeeded",
    ];

    async fn dispatch(&self, event: &ClaimedEvent) -> anyhow::Result<Outcome> {
        let raw = &event.payload;
        let object = &raw["data"]["object"];
        let created = raw["created"]
            .as_i64()
            .context("the event has no created time")?;
        let observed = StripeObservation {
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            created,
        };
        let metadata = EventMetadata {
            correlation_id: event.id.clone(),
            causation_id: event.id.clone(),
            actor: Actor::Stripe,
        };
        match event.event_type.as_str() {
            // A purchase adding to a subscription: its session completing and its payment
            // intent succeeding are two triggers of one payment.
            "checkout.session.completed" | "payment_intent.succeeded"
                if purchase_metadata::adds_to_existing(object) =>
            {
                self.purchase_paid(object, created, &metadata).await
            }
            "checkout.session.expired" if purchase_metadata::adds_to_existing(object) => {
                self.purchase_expired(object, created, &metadata).await
            }
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                self.checkout_completed(object, &metadata).await
            }
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted" => {
                self.subscription_changed(object, observed, &metadata).await
            }
            "invoice.payment_succeeded" | "invoice.paid" => {
                self.invoice_paid(object, created, &metadata).await
            }
            "invoice.payment_failed" => self.invoice_failed(object, created, &metadata).await,
            "charge.refunded" => self.charge_refunded(object, created, &metadata).await,
            other => Ok(Outcome::Ignored(format!("{other} events are not handled"))),
        }
    }

    async fn load_subscription(&self, subscription_id: &str) -> anyhow::Result<Subscription> {
        self.subscriptions
            .load(subscription_id)
            .await
            .map_err(|e| anyhow!("loading subscription {subscription_id}: {e}"))
    }

    /// Adds each item at Stripe under its idempotency key.
    async fn add_items(&self, items: Vec<(String, NewItem)>) -> anyhow::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let api = self
            .stripe
            .as_ref()
            .context("adding subscription items needs STRIPE_SECRET_KEY; will retry")?;
        for (key, item) in items {
            api.add_item(&item, &key)
                .await
                .map_err(|e| anyhow!("adding an item to {}: {e}", item.subscription_id))?;
        }
        Ok(())
    }
}
