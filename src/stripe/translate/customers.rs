//! Stripe customer → member: linked already, named by our checkout, found by email, or
//! created.

use aggregates::{EmailAddress, Labels, MemberName, MemberSource, Note};
use anyhow::{anyhow, Context};
use sqlx::PgPool;
use uuid::Uuid;

use super::read::Contact;
use super::{Translator, Waiting};
use crate::members::{self, CreateMemberError, NewMember};
use crate::store::EventMetadata;

tokio::task_local! {
    /// The member of the customer whose claimed events this task runs, once one of them found
    /// it (`inbox::dispatch` runs a customer's group in order on one task): the group's other
    /// events do not read it again. A customer's member never changes once linked (the first
    /// link wins, `members::link_stripe_customer`).
    pub static GROUP_MEMBER: std::cell::RefCell<Option<(String, Uuid)>>;
}

/// The member [`GROUP_MEMBER`] knows for `customer_id` (none outside a group's task).
fn known_member(customer_id: &str) -> Option<Uuid> {
    GROUP_MEMBER
        .try_with(|known| {
            known
                .borrow()
                .as_ref()
                .filter(|(customer, _)| customer == customer_id)
                .map(|(_, member)| *member)
        })
        .ok()
        .flatten()
}

fn remember_member(customer_id: &str, member_id: Uuid) {
    let _ = GROUP_MEMBER.try_with(|known| {
        *known.borrow_mut() = Some((customer_id.to_owned(), member_id));
    });
}

impl Translator {
    /// The member of a Stripe customer: linked already, named by metadata, found by email, or
    /// created (source `stripe`). Never two members for one customer or one email: both are
    /// unique lookups.
    pub(super) async fn member_for_customer(
        &self,
        customer_id: &str,
        contact: &Contact<'_>,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Uuid> {
        if let Some(member_id) = known_member(customer_id) {
            return Ok(member_id);
        }
        let member_id = self.find_member(customer_id, contact, metadata).await?;
        remember_member(customer_id, member_id);
        Ok(member_id)
    }

    async fn find_member(
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
        // Whoever linked first wins; the aggregate of the winner is linked.
        crate::members::link_stripe_customer(
            &self.pool,
            &self.members,
            customer_id,
            member_id,
            metadata.clone(),
        )
        .await
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
                // The customer's checkout names them and is in the inbox already (in Stripe's
                // order it comes after the subscription): wait for it rather than ask Stripe.
                if let Some(checkout) =
                    checkout_in_inbox(&self.pool, customer_id, &metadata.correlation_id).await?
                {
                    return Err(Waiting(format!(
                        "customer {customer_id} has no member yet: waiting for their checkout {checkout}"
                    ))
                    .into());
                }
                let Some(api) = &self.stripe else {
                    return Err(Waiting(format!("customer {customer_id} has no member yet and its email is unknown: waiting for an event of the customer that names them (or set STRIPE_SECRET_KEY to fetch it)")).into());
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
        match members::create(&self.members, new, metadata.clone()).await {
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

async fn linked_member(pool: &PgPool, customer_id: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT member_id FROM stripe_customers WHERE customer_id = $1")
        .bind(customer_id)
        .fetch_optional(pool)
        .await
}

/// A checkout of the customer that carries their email, stored and not yet done (pending,
/// being processed, or itself waiting), other than `event_id`: it will name their member.
async fn checkout_in_inbox(
    pool: &PgPool,
    customer_id: &str,
    event_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM stripe_events
         WHERE customer_id = $1 AND id <> $2
           AND type IN ('checkout.session.completed', 'checkout.session.async_payment_succeeded')
           AND status IN ('pending', 'processing', 'deferred')
           AND payload->'data'->'object'->'customer_details'->>'email' IS NOT NULL
         LIMIT 1",
    )
    .bind(customer_id)
    .bind(event_id)
    .fetch_optional(pool)
    .await
}
