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

tokio::task_local! {
    /// The customer whose claimed events this task runs, and those of them that are checkouts
    /// naming the customer's email ([`group_checkouts`]): an event waiting for its member
    /// finds the checkout it waits for here, without asking the inbox.
    pub static GROUP_CHECKOUTS: (Option<String>, Vec<String>);
}

/// The customer of `events` (one group's) and the ids of those that are checkouts naming the
/// customer's email: what `checkout_in_inbox` looks for, among events being processed (as
/// claimed events are).
pub fn group_checkouts(
    customer_id: Option<&str>,
    events: &[crate::stripe::inbox::ClaimedEvent],
) -> (Option<String>, Vec<String>) {
    let checkouts = events
        .iter()
        .filter(|e| {
            CHECKOUTS.contains(&e.event_type.as_str())
                && !e.payload["data"]["object"]["customer_details"]["email"].is_null()
        })
        .map(|e| e.id.clone())
        .collect();
    (customer_id.map(str::to_owned), checkouts)
}

/// The checkouts that name a customer's email (`customer_details.email`).
const CHECKOUTS: [&str; 2] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
];

/// A checkout of `customer_id` other than `event_id` that names their email, if the group
/// this task runs is the customer's and has one (none outside a group's task).
fn checkout_in_group(customer_id: &str, event_id: &str) -> Option<String> {
    GROUP_CHECKOUTS
        .try_with(|(customer, checkouts)| {
            if customer.as_deref() != Some(customer_id) {
                return None;
            }
            checkouts.iter().find(|id| *id != event_id).cloned()
        })
        .ok()
        .flatten()
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
        // In Stripe's order a new customer's subscription comes before the checkout that
        // names them. When this task's group holds that checkout, the event waits for it
        // without a query: the checkout, run next, finds or makes the member (whether or not
        // the customer was linked before), and this event follows it.
        if contact.email.is_none() && contact.member_id.is_none() {
            if let Some(checkout) = checkout_in_group(customer_id, &metadata.correlation_id) {
                return Err(Waiting(format!(
                    "customer {customer_id}'s checkout {checkout} is in the same group: waiting for it"
                ))
                .into());
            }
        }
        // An event naming the address (a checkout) asks for the link and the address's
        // member in one round trip.
        let email = contact.email.and_then(|e| EmailAddress::parse(e).ok());
        let (linked, by_email) = lookup(&self.pool, customer_id, email.as_ref()).await?;
        if let Some(member_id) = linked {
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
            member_id = Some(match by_email {
                Some(member_id) => member_id,
                None => {
                    self.member_by_email(customer_id, contact, metadata, email.is_some())
                        .await?
                }
            });
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

    /// The member of the customer's address: found, or created. `looked_up`: the address
    /// the event names was looked up already (by [`lookup`]) and holds no member.
    async fn member_by_email(
        &self,
        customer_id: &str,
        contact: &Contact<'_>,
        metadata: &EventMetadata,
        looked_up: bool,
    ) -> anyhow::Result<Uuid> {
        let (email, name) = match contact.email {
            Some(email) => (email.to_owned(), contact.name.map(str::to_owned)),
            None => {
                // The customer's checkout names them and is in the inbox already (in Stripe's
                // order it comes after the subscription): wait for it rather than ask Stripe.
                let event_id = &metadata.correlation_id;
                let checkout = match checkout_in_group(customer_id, event_id) {
                    Some(checkout) => Some(checkout),
                    None => checkout_in_inbox(&self.pool, customer_id, event_id).await?,
                };
                if let Some(checkout) = checkout {
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
        if !looked_up {
            if let Some(member_id) = members::find_by_email(&self.pool, &email).await? {
                return Ok(member_id);
            }
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

/// The member linked to the customer, and the member holding `email` (compared as
/// [`members::find_by_email`] does), in one statement.
async fn lookup(
    pool: &PgPool,
    customer_id: &str,
    email: Option<&EmailAddress>,
) -> Result<(Option<Uuid>, Option<Uuid>), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT member_id FROM stripe_customers WHERE customer_id = $1),
                (SELECT member_id FROM member_emails WHERE email = $2)",
    )
    .bind(customer_id)
    .bind(email.map(EmailAddress::normalized))
    .fetch_one(pool)
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
           AND type = ANY($3)
           AND status IN ('pending', 'processing', 'deferred')
           AND payload::json->'data'->'object'->'customer_details'->>'email' IS NOT NULL
         LIMIT 1",
    )
    .bind(customer_id)
    .bind(event_id)
    .bind(&CHECKOUTS[..])
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::stripe::inbox::ClaimedEvent;

    fn claimed(id: &str, event_type: &str, email: serde_json::Value) -> ClaimedEvent {
        ClaimedEvent {
            id: id.to_owned(),
            event_type: event_type.to_owned(),
            customer_id: Some("cus_1".to_owned()),
            payload: json!({ "data": { "object": { "customer_details": { "email": email } } } }),
            attempts: 1,
            created: chrono::Utc::now(),
            received_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_group_names_its_checkouts_with_an_email_and_only_for_its_customer() {
        let events = [
            claimed("evt_sub", "customer.subscription.created", json!(null)),
            claimed("evt_no_email", "checkout.session.completed", json!(null)),
            claimed(
                "evt_async",
                "checkout.session.async_payment_succeeded",
                json!("a@example.com"),
            ),
            claimed(
                "evt_expired",
                "checkout.session.expired",
                json!("a@example.com"),
            ),
        ];
        let group = group_checkouts(Some("cus_1"), &events);
        assert_eq!(group.1, ["evt_async"]);
        GROUP_CHECKOUTS
            .scope(group, async {
                assert_eq!(
                    checkout_in_group("cus_1", "evt_sub").as_deref(),
                    Some("evt_async")
                );
                assert_eq!(checkout_in_group("cus_1", "evt_async"), None, "not itself");
                assert_eq!(
                    checkout_in_group("cus_2", "evt_sub"),
                    None,
                    "another customer's"
                );
            })
            .await;
        assert_eq!(
            checkout_in_group("cus_1", "evt_sub"),
            None,
            "outside a group"
        );
    }
}
