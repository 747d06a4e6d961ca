//! Stripe events into commands. Works from the raw JSON (as stored), so an event async-stripe's
//! typed parser rejected is processed the same way, and API-version differences in where a
//! field lives (e.g. the period on the subscription or on its items) are handled in one place.

use std::sync::Arc;

use aggregates::{
    BillingInterval, CancelReason, EmailAddress, Labels, License, LicenseCommand, Member,
    MemberCommand, MemberName, MemberSource, Note, Payment, Price, PurchaseState, PurchaseType,
    SiteDomain, StripeObservation, StripeSubscriptionState, Subscription, SubscriptionCommand,
    SubscriptionItem, SubscriptionStatus,
};
use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::client::{NewItem, StripeApi};
use super::inbox::ClaimedEvent;
use super::purchase_metadata::{self, license_purchase, metadata_field, new_item, purchase_key};
use crate::members::{self, CreateMemberError, NewMember};
use crate::store::{Actor, CommandBus, EventMetadata};

/// How an event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Processed,
    /// Stored, but nothing to do (a type we do not handle, or an object that is not ours).
    Ignored(String),
}

pub struct Translator {
    pub pool: PgPool,
    pub members: Arc<CommandBus<Member>>,
    pub subscriptions: Arc<CommandBus<Subscription>>,
    pub licenses: Arc<CommandBus<License>>,
    pub stripe: Option<StripeApi>,
}

/// A Stripe id field that may be a plain id or an expanded object.
pub fn id_of(value: &Value) -> Option<&str> {
    value
        .as_str()
        .or_else(|| value["id"].as_str())
        .filter(|s| !s.is_empty())
}

fn text(value: &Value) -> Option<&str> {
    value.as_str().filter(|s| !s.is_empty())
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value.as_i64().and_then(|t| DateTime::from_timestamp(t, 0))
}

impl Translator {
    pub async fn handle(&self, event: &ClaimedEvent) -> anyhow::Result<Outcome> {
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

    async fn checkout_completed(
        &self,
        session: &Value,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let Some(customer) = id_of(&session["customer"]) else {
            return Ok(Outcome::Ignored("the session has no customer".into()));
        };
        let contact = Contact {
            email: text(&session["customer_details"]["email"])
                .or_else(|| text(&session["customer_email"])),
            name: text(&session["customer_details"]["name"]),
            member_id: text(&session["metadata"]["member_id"])
                .or_else(|| text(&session["client_reference_id"])),
        };
        self.member_for_customer(customer, &contact, metadata)
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
            text(&session["metadata"]["site"])
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
                let item = new_item(session, subscription_id, 1, vec![("site", site.to_owned())])?;
                items.push((format!("add-site-{session_id}-{site}"), item));
            }
        }
        self.add_items(items).await
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

    /// A payment for sites or license seats added to an existing subscription: add their
    /// items at Stripe, then complete the purchase. Once: a purchase already completed (by the
    /// other trigger of the same payment, or a redelivery) calls Stripe no more, and each call
    /// has an idempotency key derived from the purchase. The items themselves arrive with
    /// `customer.subscription.updated`; a license purchase's reserved keys activate then.
    async fn purchase_paid(
        &self,
        object: &Value,
        created: i64,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let id = text(&object["id"]).context("the object has no id")?;
        let is_session = object["object"] == "checkout.session";
        let paid = if is_session {
            object["payment_status"] == "paid"
        } else {
            object["status"] == "succeeded"
        };
        if !paid {
            return Ok(Outcome::Ignored(format!("{id} is not paid yet")));
        }
        let field = |key| metadata_field(object, key);
        let Some(purchase) = purchase_key(object) else {
            return Ok(Outcome::Ignored(format!(
                "payment {id} names no purchase; its session's completion adds the items"
            )));
        };
        let subscription_id = field("existing_subscription_id")?;
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
        if field("purchase_type")? == PurchaseType::Quantity.as_str() {
            let (purchase_id, quantity) = license_purchase(object)?;
            let metadata = vec![
                ("license_purchase_id", purchase_id.to_string()),
                ("purchase_type", PurchaseType::Quantity.as_str().to_owned()),
            ];
            let item = new_item(object, subscription_id, u64::from(quantity), metadata)?;
            items.push((format!("add-seats-{purchase}"), item));
        } else {
            for site in field("sites")?.split(',').filter(|s| !s.is_empty()) {
                let item = new_item(object, subscription_id, 1, vec![("site", site.to_owned())])?;
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
    async fn purchase_expired(
        &self,
        session: &Value,
        created: i64,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let purchase = purchase_key(session).context("the session has no id")?;
        let subscription_id = metadata_field(session, "existing_subscription_id")?;
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

    async fn subscription_changed(
        &self,
        object: &Value,
        observed: StripeObservation,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let subscription_id = text(&object["id"]).context("the subscription has no id")?;
        let customer = id_of(&object["customer"]).context("the subscription has no customer")?;
        let contact = Contact {
            email: None,
            name: None,
            member_id: text(&object["metadata"]["member_id"]),
        };
        let member_id = self
            .member_for_customer(customer, &contact, metadata)
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

    /// Who an invoice concerns; `None` for an invoice that is not for a subscription.
    async fn invoice_parties<'a>(
        &self,
        invoice: &'a Value,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Option<InvoiceParties<'a>>> {
        let Some(subscription_id) = invoice_subscription(invoice) else {
            return Ok(None);
        };
        let invoice_id = text(&invoice["id"]).context("the invoice has no id")?;
        let customer = id_of(&invoice["customer"]).context("the invoice has no customer")?;
        let contact = Contact {
            email: text(&invoice["customer_email"]),
            name: text(&invoice["customer_name"]),
            member_id: None,
        };
        let member_id = self
            .member_for_customer(customer, &contact, metadata)
            .await?;
        Ok(Some(InvoiceParties {
            subscription_id,
            invoice_id,
            customer,
            member_id,
        }))
    }

    async fn invoice_paid(
        &self,
        invoice: &Value,
        created: i64,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let Some(InvoiceParties {
            subscription_id,
            invoice_id,
            customer,
            member_id,
        }) = self.invoice_parties(invoice, metadata).await?
        else {
            return Ok(Outcome::Ignored(
                "the invoice is not for a subscription".into(),
            ));
        };
        let payment_intent_id = id_of(&invoice["payment_intent"])
            .or_else(|| id_of(&invoice["payments"]["data"][0]["payment"]["payment_intent"]))
            .map(str::to_owned);
        if let Some(intent) = &payment_intent_id {
            sqlx::query(
                "INSERT INTO stripe_payment_intents (payment_intent_id, invoice_id, subscription_id)
                 VALUES ($1, $2, $3) ON CONFLICT (payment_intent_id) DO NOTHING",
            )
            .bind(intent)
            .bind(invoice_id)
            .bind(subscription_id)
            .execute(&self.pool)
            .await?;
        }
        let payment = Payment {
            invoice_id: invoice_id.to_owned(),
            member_id,
            customer_id: customer.to_owned(),
            amount_paid: invoice["amount_paid"]
                .as_i64()
                .context("the invoice has no amount_paid")?,
            currency: text(&invoice["currency"])
                .context("the invoice has no currency")?
                .to_owned(),
            billing_reason: text(&invoice["billing_reason"]).map(str::to_owned),
            payment_intent_id,
            period_start: time(&invoice["lines"]["data"][0]["period"]["start"])
                .or_else(|| time(&invoice["period_start"])),
            period_end: time(&invoice["lines"]["data"][0]["period"]["end"])
                .or_else(|| time(&invoice["period_end"])),
            paid_at: time(&invoice["status_transitions"]["paid_at"])
                .or_else(|| DateTime::from_timestamp(created, 0))
                .unwrap_or_default(),
        };
        self.subscriptions
            .execute(
                subscription_id,
                SubscriptionCommand::RecordPayment { payment },
                metadata.clone(),
            )
            .await
            .map_err(|e| anyhow!("recording the payment of {invoice_id}: {e}"))?;
        Ok(Outcome::Processed)
    }

    async fn invoice_failed(
        &self,
        invoice: &Value,
        created: i64,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let Some(InvoiceParties {
            subscription_id,
            invoice_id,
            customer,
            member_id,
        }) = self.invoice_parties(invoice, metadata).await?
        else {
            return Ok(Outcome::Ignored(
                "the invoice is not for a subscription".into(),
            ));
        };
        let command = SubscriptionCommand::RecordPaymentFailure {
            invoice_id: invoice_id.to_owned(),
            member_id,
            customer_id: customer.to_owned(),
            amount_due: invoice["amount_due"].as_i64().unwrap_or(0),
            currency: text(&invoice["currency"]).unwrap_or("usd").to_owned(),
            attempt_count: invoice["attempt_count"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            failed_at: DateTime::from_timestamp(created, 0).unwrap_or_default(),
        };
        self.subscriptions
            .execute(subscription_id, command, metadata.clone())
            .await
            .map_err(|e| anyhow!("recording the failed payment of {invoice_id}: {e}"))?;
        Ok(Outcome::Processed)
    }

    async fn charge_refunded(
        &self,
        charge: &Value,
        created: i64,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let charge_id = text(&charge["id"]).context("the charge has no id")?;
        let invoice_id = id_of(&charge["invoice"]);
        let intent = id_of(&charge["payment_intent"]);
        if invoice_id.is_none() && intent.is_none() {
            return Ok(Outcome::Ignored("the charge is not for an invoice".into()));
        }
        let found: Option<(String, String)> = sqlx::query_as(
            "SELECT invoice_id, subscription_id FROM stripe_payment_intents
             WHERE payment_intent_id = $1 OR invoice_id = $2 LIMIT 1",
        )
        .bind(intent)
        .bind(invoice_id)
        .fetch_optional(&self.pool)
        .await?;
        // The invoice's own event may still be on its way: fail, and retry later.
        let Some((invoice_id, subscription_id)) = found else {
            bail!("no paid invoice is known yet for charge {charge_id}; will retry");
        };
        let customer = id_of(&charge["customer"]).context("the charge has no customer")?;
        let member_id = self
            .member_for_customer(customer, &Contact::default(), metadata)
            .await?;
        let command = SubscriptionCommand::RecordRefund {
            charge_id: charge_id.to_owned(),
            invoice_id: Some(invoice_id),
            member_id,
            customer_id: customer.to_owned(),
            amount_refunded: charge["amount_refunded"]
                .as_i64()
                .context("the charge has no amount_refunded")?,
            currency: text(&charge["currency"])
                .context("the charge has no currency")?
                .to_owned(),
            refunded_at: DateTime::from_timestamp(created, 0).unwrap_or_default(),
        };
        self.subscriptions
            .execute(&subscription_id, command, metadata.clone())
            .await
            .map_err(|e| anyhow!("recording the refund of {charge_id}: {e}"))?;
        Ok(Outcome::Processed)
    }

    /// The member of a Stripe customer: linked already, named by metadata, found by email, or
    /// created (source `stripe`). Never two members for one customer or one email: both are
    /// unique lookups.
    async fn member_for_customer(
        &self,
        customer_id: &str,
        contact: &Contact<'_>,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Uuid> {
        if let Some(member_id) = linked_member(&self.pool, customer_id).await? {
            return Ok(member_id);
        }
        let mut member_id = None;
        if let Some(id) = contact.member_id.and_then(|id| id.parse::<Uuid>().ok()) {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = 'Member' AND aggregate_id = $1)",
            )
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?;
            member_id = exists.then_some(id);
        }
        if member_id.is_none() {
            member_id = Some(self.member_by_email(customer_id, contact, metadata).await?);
        }
        let member_id = member_id.context("no member")?;
        sqlx::query("INSERT INTO stripe_customers (customer_id, member_id) VALUES ($1, $2) ON CONFLICT (customer_id) DO NOTHING")
            .bind(customer_id)
            .bind(member_id)
            .execute(&self.pool)
            .await?;
        // Whoever linked first wins; link the aggregate to the winner.
        let member_id = linked_member(&self.pool, customer_id)
            .await?
            .context("the customer link vanished")?;
        let command = MemberCommand::LinkStripeCustomer {
            customer_id: customer_id.to_owned(),
            at: Utc::now(),
        };
        self.members
            .execute(&member_id.to_string(), command, metadata.clone())
            .await
            .map_err(|e| anyhow!("linking customer {customer_id} to member {member_id}: {e}"))?;
        Ok(member_id)
    }

    async fn member_by_email(
        &self,
        customer_id: &str,
        contact: &Contact<'_>,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Uuid> {
        let (email, name) = match contact.email {
            Some(email) => (email.to_owned(), contact.name.map(str::to_owned)),
            None => {
                let Some(api) = &self.stripe else {
                    bail!("customer {customer_id} has no member yet and its email is unknown (set STRIPE_SECRET_KEY to fetch it); will retry");
                };
                let contact = api
                    .customer_contact(customer_id)
                    .await?
                    .with_context(|| format!("customer {customer_id} is deleted at Stripe"))?;
                let email = contact
                    .email
                    .with_context(|| format!("customer {customer_id} has no email at Stripe"))?;
                (email, contact.name)
            }
        };
        let email = EmailAddress::parse(&email)
            .map_err(|e| anyhow!("customer {customer_id}'s email {email:?} {e}"))?;
        if let Some(member_id) = members::find_by_email(&self.pool, &email).await? {
            return Ok(member_id);
        }
        let new = NewMember {
            email: email.clone(),
            name: name
                .as_deref()
                .and_then(|n| MemberName::parse(n).ok().flatten()),
            note: None::<Note>,
            labels: Labels::default(),
            source: MemberSource::Stripe,
            attribution: Some(aggregates::attribution::for_context(
                aggregates::AttributionContext::Stripe,
            )),
            newsletters: Vec::new(),
        };
        match members::create(&self.pool, &self.members, new, metadata.clone()).await {
            Ok((member_id, _)) => Ok(member_id),
            // Created concurrently (by the API, or another customer's event): use that member.
            Err(CreateMemberError::EmailTaken) => members::find_by_email(&self.pool, &email)
                .await?
                .with_context(|| {
                    format!("{email} is reserved by a member being created; will retry")
                }),
            Err(err) => Err(anyhow!("creating the member for {customer_id}: {err}")),
        }
    }
}

/// The site a Checkout Session's custom field names (key `site`, `domain` or `website`, as a
/// text or dropdown field), when it is a valid domain.
fn custom_field_site(session: &Value) -> Option<SiteDomain> {
    session["custom_fields"]
        .as_array()?
        .iter()
        .filter(|field| {
            field["key"].as_str().is_some_and(|key| {
                ["site", "domain", "website"]
                    .iter()
                    .any(|k| key.eq_ignore_ascii_case(k))
            })
        })
        .find_map(|field| {
            let raw = text(&field["text"]["value"]).or_else(|| text(&field["dropdown"]["value"]))?;
            SiteDomain::parse(raw)
                .map_err(|err| tracing::warn!(site = raw, error = %err, "ignoring an invalid site in a checkout custom field"))
                .ok()
        })
}

struct InvoiceParties<'a> {
    subscription_id: &'a str,
    invoice_id: &'a str,
    customer: &'a str,
    member_id: Uuid,
}

#[derive(Debug, Default)]
struct Contact<'a> {
    email: Option<&'a str>,
    name: Option<&'a str>,
    member_id: Option<&'a str>,
}

async fn linked_member(pool: &PgPool, customer_id: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT member_id FROM stripe_customers WHERE customer_id = $1")
        .bind(customer_id)
        .fetch_optional(pool)
        .await
}

/// The subscription an invoice bills: `subscription` in older API versions,
/// `parent.subscription_details.subscription` in newer ones.
fn invoice_subscription(invoice: &Value) -> Option<&str> {
    id_of(&invoice["subscription"])
        .or_else(|| id_of(&invoice["parent"]["subscription_details"]["subscription"]))
}

/// Reads a Stripe subscription object.
pub fn subscription_state(
    object: &Value,
    member_id: Uuid,
) -> anyhow::Result<StripeSubscriptionState> {
    let status_text = text(&object["status"]).context("the subscription has no status")?;
    let status = SubscriptionStatus::parse(status_text)
        .with_context(|| format!("unknown subscription status {status_text:?}"))?;
    let items_json = object["items"]["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut items = items_json
        .iter()
        .map(subscription_item)
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A checkout from `POST /v1/checkout/sessions` names its (first) site in the
    // subscription's metadata; the price's item, the only one Stripe knows no site of, is the
    // site's. Later sites carry their own `metadata.site`; license purchases their id.
    if let Some(site) = text(&object["metadata"]["site"]).and_then(|s| SiteDomain::parse(s).ok()) {
        let mut unnamed = items
            .iter_mut()
            .filter(|i| i.site.is_none() && i.license_purchase_id.is_none());
        if let (Some(item), None) = (unnamed.next(), unnamed.next()) {
            item.site = Some(site.to_string());
            item.purchase_type = PurchaseType::Site;
        }
    }
    let first_item = items_json.first().unwrap_or(&Value::Null);
    Ok(StripeSubscriptionState {
        subscription_id: text(&object["id"])
            .context("the subscription has no id")?
            .to_owned(),
        customer_id: id_of(&object["customer"])
            .context("the subscription has no customer")?
            .to_owned(),
        member_id,
        status,
        items,
        // Newer API versions keep the period on the items.
        current_period_start: time(&object["current_period_start"])
            .or_else(|| time(&first_item["current_period_start"])),
        current_period_end: time(&object["current_period_end"])
            .or_else(|| time(&first_item["current_period_end"])),
        cancel_at_period_end: object["cancel_at_period_end"].as_bool().unwrap_or(false),
        cancel_at: time(&object["cancel_at"]),
        canceled_at: time(&object["canceled_at"]),
        created: time(&object["created"]).context("the subscription has no created time")?,
    })
}

fn subscription_item(item: &Value) -> anyhow::Result<SubscriptionItem> {
    let item_id = text(&item["id"]).context("a subscription item has no id")?;
    let price = &item["price"];
    let recurring = &price["recurring"];
    let interval_text = text(&recurring["interval"]).unwrap_or("month");
    let interval = BillingInterval::parse(interval_text)
        .with_context(|| format!("item {item_id}: unknown interval {interval_text:?}"))?;
    let unit_amount = price["unit_amount"]
        .as_i64()
        .or_else(|| {
            text(&price["unit_amount_decimal"]).and_then(|d| d.split('.').next()?.parse().ok())
        })
        .unwrap_or(0);
    let license_purchase_id = text(&item["metadata"]["license_purchase_id"])
        .and_then(|raw| match raw.parse::<Uuid>() {
            Ok(id) => Some(id),
            Err(err) => {
                tracing::warn!(item_id, raw, error = %err, "ignoring an invalid license_purchase_id in item metadata");
                None
            }
        });
    let site = text(&item["metadata"]["site"]).and_then(|raw| match SiteDomain::parse(raw) {
        Ok(site) => Some(site.to_string()),
        Err(err) => {
            tracing::warn!(item_id, site = raw, error = %err, "ignoring an invalid site in item metadata");
            None
        }
    });
    Ok(SubscriptionItem {
        item_id: item_id.to_owned(),
        price: Price {
            price_id: text(&price["id"])
                .context("a subscription item has no price")?
                .to_owned(),
            product_id: id_of(&price["product"]).map(str::to_owned),
            unit_amount,
            currency: text(&price["currency"]).unwrap_or("usd").to_owned(),
            interval,
            interval_count: recurring["interval_count"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1)
                .max(1),
        },
        quantity: item["quantity"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1),
        purchase_type: if site.is_some() {
            PurchaseType::Site
        } else {
            PurchaseType::Quantity
        },
        site,
        license_purchase_id,
    })
}
