//! `member_timeline`: one row per event concerning a member, with a short human summary and
//! the event's fields (`data`, the payload's inner object), newest first per member.
//! `created_at` is when the event was recorded.
//!
//! - Member events belong to the member (the aggregate id).
//! - Subscription events belong to the subscription's member: `SubscriptionCreated` and the
//!   payment events carry it; for the others it is looked up in the helper table
//!   `timeline_subscription_members`, filled from those events. A subscription's events before
//!   its `SubscriptionCreated` can only be payments, so they are always shown.
//! - License events belong to the member the license was issued to (helper
//!   `timeline_license_members`, filled from `LicenseIssued` and `LicenseReserved`).
//!
//! An event whose member is not known is skipped.

use aggregates::cqrs_es::Aggregate;
use aggregates::{
    License, LicenseEvent, Member, MemberEvent, Price, Subscription, SubscriptionEvent,
};
use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    erased_members, member_id as aggregate_uuid, Handles, Projection, ProjectionError, StoredEvent,
};

pub struct MemberTimeline;

#[async_trait]
impl Projection for MemberTimeline {
    fn name(&self) -> &'static str {
        "member_timeline"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "member_timeline",
            "timeline_subscription_members",
            "timeline_license_members",
        ]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[
            Handles::all(Member::TYPE),
            Handles::all(Subscription::TYPE),
            Handles::all(License::TYPE),
        ];
        HANDLES
    }

    /// Decodes the batch, reads the helper rows of the subscriptions and licenses it names,
    /// follows them through the batch in memory (in log order, so an event sees the member its
    /// predecessors named), then writes each changed helper row once and every timeline row
    /// with one `INSERT`.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut decoded = Vec::with_capacity(events.len());
        let mut subscription_ids: Vec<&str> = Vec::new();
        let mut license_ids: Vec<Uuid> = Vec::new();
        for event in events {
            let d = if event.aggregate_type == Member::TYPE {
                Decoded::Member(aggregate_uuid(event)?, event.decode()?)
            } else if event.aggregate_type == Subscription::TYPE {
                subscription_ids.push(&event.aggregate_id);
                Decoded::Subscription(event.decode()?)
            } else if event.aggregate_type == License::TYPE {
                let license_id = aggregate_uuid(event)?;
                license_ids.push(license_id);
                Decoded::License(license_id, event.decode()?)
            } else {
                continue;
            };
            decoded.push((event, d));
        }
        let mut owners = Owners::load(conn, &subscription_ids, &license_ids).await?;

        let mut rows = TimelineRows::default();
        for (event, d) in decoded {
            let entry = match d {
                Decoded::Member(member_id, e) => Some((member_id, member_summary(e))),
                Decoded::Subscription(e) => owners.subscription_entry(&event.aggregate_id, e),
                Decoded::License(license_id, e) => owners.license_entry(license_id, e),
            };
            if let Some((member_id, summary)) = entry {
                rows.push(event, member_id, summary);
            }
        }
        owners.write(conn).await?;
        rows.write(conn).await?;
        // An erased member's timeline is theirs: it goes, with the personal data its entries'
        // `data` held (addresses, names, activation addresses).
        let erased = erased_members(events)?;
        if !erased.is_empty() {
            sqlx::query("DELETE FROM member_timeline WHERE member_id = ANY($1)")
                .bind(&erased)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

enum Decoded {
    Member(Uuid, MemberEvent),
    Subscription(SubscriptionEvent),
    License(Uuid, LicenseEvent),
}

/// The helper tables' rows a batch concerns, as the batch changes them.
struct Owners {
    subscriptions: HashMap<String, Uuid>,
    licenses: HashMap<Uuid, Uuid>,
    changed_subscriptions: HashSet<String>,
    changed_licenses: HashSet<Uuid>,
}

impl Owners {
    async fn load(
        conn: &mut PgConnection,
        subscription_ids: &[&str],
        license_ids: &[Uuid],
    ) -> Result<Self, ProjectionError> {
        let subscriptions: Vec<(String, Uuid)> = if subscription_ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(
                "SELECT subscription_id, member_id FROM timeline_subscription_members
                 WHERE subscription_id = ANY($1::text[])",
            )
            .bind(subscription_ids)
            .fetch_all(&mut *conn)
            .await?
        };
        let licenses: Vec<(Uuid, Uuid)> = if license_ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(
                "SELECT license_id, member_id FROM timeline_license_members
                 WHERE license_id = ANY($1::uuid[])",
            )
            .bind(license_ids)
            .fetch_all(&mut *conn)
            .await?
        };
        Ok(Self {
            subscriptions: subscriptions.into_iter().collect(),
            licenses: licenses.into_iter().collect(),
            changed_subscriptions: HashSet::new(),
            changed_licenses: HashSet::new(),
        })
    }

    fn subscription_entry(
        &mut self,
        sub: &str,
        event: SubscriptionEvent,
    ) -> Option<(Uuid, String)> {
        // Members named by the event itself: the subscription's own creation names its member;
        // a payment or purchase only fills the gap until then.
        let named = match &event {
            SubscriptionEvent::SubscriptionCreated { member_id, .. } => {
                self.subscriptions.insert(sub.to_owned(), *member_id);
                self.changed_subscriptions.insert(sub.to_owned());
                Some(*member_id)
            }
            SubscriptionEvent::PaymentRecorded { payment } => Some(payment.member_id),
            SubscriptionEvent::PaymentFailed { member_id, .. }
            | SubscriptionEvent::PaymentRefunded { member_id, .. }
            | SubscriptionEvent::SitePurchaseStarted { member_id, .. }
            | SubscriptionEvent::LicensePurchaseStarted { member_id, .. } => Some(*member_id),
            _ => None,
        };
        let member_id = match named {
            Some(member_id) => {
                if !self.subscriptions.contains_key(sub) {
                    self.subscriptions.insert(sub.to_owned(), member_id);
                    self.changed_subscriptions.insert(sub.to_owned());
                }
                member_id
            }
            None => *self.subscriptions.get(sub)?,
        };
        Some((member_id, subscription_summary(sub, event)))
    }

    fn license_entry(&mut self, license_id: Uuid, event: LicenseEvent) -> Option<(Uuid, String)> {
        let member_id = if let LicenseEvent::LicenseIssued { member_id, .. }
        | LicenseEvent::LicenseReserved { member_id, .. }
        | LicenseEvent::LicenseGranted { member_id, .. } = &event
        {
            self.licenses.insert(license_id, *member_id);
            self.changed_licenses.insert(license_id);
            *member_id
        } else {
            *self.licenses.get(&license_id)?
        };
        Some((member_id, license_summary(event)))
    }

    async fn write(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        if !self.changed_subscriptions.is_empty() {
            let (ids, members): (Vec<&str>, Vec<Uuid>) = self
                .changed_subscriptions
                .iter()
                .filter_map(|sub| Some((sub.as_str(), *self.subscriptions.get(sub)?)))
                .unzip();
            sqlx::query(
                "INSERT INTO timeline_subscription_members (subscription_id, member_id)
                 SELECT * FROM unnest($1::text[], $2::uuid[])
                 ON CONFLICT (subscription_id) DO UPDATE SET member_id = EXCLUDED.member_id",
            )
            .bind(ids)
            .bind(members)
            .execute(&mut *conn)
            .await?;
        }
        if !self.changed_licenses.is_empty() {
            let (ids, members): (Vec<Uuid>, Vec<Uuid>) = self
                .changed_licenses
                .iter()
                .filter_map(|license| Some((*license, *self.licenses.get(license)?)))
                .unzip();
            sqlx::query(
                "INSERT INTO timeline_license_members (license_id, member_id)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[])
                 ON CONFLICT (license_id) DO UPDATE SET member_id = EXCLUDED.member_id",
            )
            .bind(ids)
            .bind(members)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// The batch's timeline rows, column by column.
#[derive(Default)]
struct TimelineRows<'a> {
    id: Vec<i64>,
    member_id: Vec<Uuid>,
    aggregate_type: Vec<&'a str>,
    aggregate_id: Vec<&'a str>,
    event_type: Vec<&'a str>,
    summary: Vec<String>,
    /// JSON text: the column is `json`, which PostgreSQL checks but does not convert.
    data: Vec<String>,
    created_at: Vec<DateTime<Utc>>,
}

impl<'a> TimelineRows<'a> {
    fn push(&mut self, event: &'a StoredEvent, member_id: Uuid, summary: String) {
        // `{"Variant": {...}}` → `{...}`; `{}` for an event without fields.
        let data = event
            .payload
            .as_object()
            .and_then(|variant| variant.values().next())
            .filter(|inner| inner.is_object())
            .map_or_else(|| "{}".to_owned(), ToString::to_string);
        self.id.push(event.global_position);
        self.member_id.push(member_id);
        self.aggregate_type.push(&event.aggregate_type);
        self.aggregate_id.push(&event.aggregate_id);
        self.event_type.push(&event.event_type);
        self.summary.push(summary);
        self.data.push(data);
        self.created_at.push(event.recorded_at);
    }

    async fn write(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        if self.id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO member_timeline
                 (id, member_id, aggregate_type, aggregate_id, event_type, summary, data,
                  created_at)
             SELECT id, member_id, aggregate_type, aggregate_id, event_type, summary, data::json,
                    created_at
             FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::timestamptz[])
                  AS r(id, member_id, aggregate_type, aggregate_id, event_type, summary, data,
                       created_at)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(self.id)
        .bind(self.member_id)
        .bind(self.aggregate_type)
        .bind(self.aggregate_id)
        .bind(self.event_type)
        .bind(self.summary)
        .bind(self.data)
        .bind(self.created_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

fn member_summary(event: MemberEvent) -> String {
    match event {
        MemberEvent::MemberCreated { email, source, .. } => {
            format!("Member {email} created (source: {})", source.as_str())
        }
        MemberEvent::MemberUpdated { .. } => "Profile updated".to_owned(),
        MemberEvent::MemberEmailChanged {
            old_email,
            new_email,
            ..
        } => format!("Email changed from {old_email} to {new_email}"),
        MemberEvent::MemberStatusChanged { from, to, .. } => {
            format!("Status changed from {} to {}", from.as_str(), to.as_str())
        }
        MemberEvent::MemberStripeCustomerLinked { customer_id, .. } => {
            format!("Stripe customer {customer_id} linked")
        }
        MemberEvent::MemberLoggedIn { method, .. } => {
            format!("Signed in with an emailed {}", method.as_str())
        }
        MemberEvent::NewsletterSubscribed { newsletter_id, .. } => {
            format!("Subscribed to newsletter {newsletter_id}")
        }
        MemberEvent::NewsletterUnsubscribed { newsletter_id, .. } => {
            format!("Unsubscribed from newsletter {newsletter_id}")
        }
        MemberEvent::MemberEmailDisabled { email, reason, .. } => {
            format!("Email to {email} disabled: {reason}")
        }
        MemberEvent::MemberEmailEnabled { email, .. } => format!("Email to {email} enabled again"),
        MemberEvent::MemberCompGranted { tier_id, until, .. } => match until {
            Some(until) => format!(
                "Complimentary access to tier {tier_id} given until {}",
                until.format("%Y-%m-%d %H:%M UTC")
            ),
            None => format!("Complimentary access to tier {tier_id} given without end"),
        },
        MemberEvent::MemberCompEnded {
            tier_id, reason, ..
        } => format!(
            "Complimentary access to tier {tier_id} ended ({})",
            reason.as_str()
        ),
        MemberEvent::MemberErased { .. } => "Personal data erased".to_owned(),
    }
}

fn subscription_summary(sub: &str, event: SubscriptionEvent) -> String {
    match event {
        SubscriptionEvent::SubscriptionCreated { status, .. } => {
            format!("Subscription {sub} created ({})", status.as_str())
        }
        SubscriptionEvent::SubscriptionActivated { status, .. } => {
            format!("Subscription {sub} activated ({})", status.as_str())
        }
        SubscriptionEvent::SubscriptionStatusChanged { from, to, .. } => format!(
            "Subscription {sub} status changed from {} to {}",
            from.as_str(),
            to.as_str()
        ),
        SubscriptionEvent::SubscriptionItemAdded { item, .. } => {
            let site = item
                .site
                .as_deref()
                .map(|site| format!(" for {site}"))
                .unwrap_or_default();
            format!(
                "Item {} added to subscription {sub}: {} × {}{site}",
                item.item_id,
                item.quantity,
                price_summary(&item.price)
            )
        }
        SubscriptionEvent::SubscriptionItemRemoved { item_id, site, .. } => {
            let site = site.map(|site| format!(" ({site})")).unwrap_or_default();
            format!("Item {item_id} removed from subscription {sub}{site}")
        }
        SubscriptionEvent::SubscriptionItemQuantityChanged {
            item_id, from, to, ..
        } => format!("Quantity of item {item_id} of subscription {sub} changed from {from} to {to}"),
        SubscriptionEvent::SubscriptionItemSiteAssigned {
            item_id, site, session_id,
        } => format!("Item {item_id} of subscription {sub} licenses {site} (named at checkout {session_id})"),
        SubscriptionEvent::SubscriptionPlanChanged {
            item_id, from, to, ..
        } => format!(
            "Item {item_id} of subscription {sub} changed from {} to {}",
            price_summary(&from),
            price_summary(&to)
        ),
        SubscriptionEvent::SubscriptionPeriodChanged {
            current_period_start,
            current_period_end,
            ..
        } => format!(
            "Subscription {sub} billing period now {} to {}",
            day(current_period_start),
            day(current_period_end)
        ),
        SubscriptionEvent::SubscriptionCancellationScheduled { cancel_at, .. } => match cancel_at {
            Some(at) => format!(
                "Cancellation of subscription {sub} scheduled for {}",
                day(Some(at))
            ),
            None => format!("Cancellation of subscription {sub} scheduled"),
        },
        SubscriptionEvent::SubscriptionCancellationUnscheduled { .. } => {
            format!("Scheduled cancellation of subscription {sub} withdrawn")
        }
        SubscriptionEvent::SubscriptionCanceled { .. } => format!("Subscription {sub} canceled"),
        SubscriptionEvent::SubscriptionDiscountChanged { to, .. } => match to.as_slice() {
            [] => format!("Discount on subscription {sub} ended; full price from now on"),
            discounts => format!(
                "Discount on subscription {sub}: {}",
                discounts
                    .iter()
                    .map(discount_summary)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        SubscriptionEvent::OfferRedeemed { offer_id, .. } => {
            format!("Subscription {sub} started with offer {offer_id}")
        }
        SubscriptionEvent::SubscriptionStateObserved { observed } => format!(
            "Subscription {sub} seen unchanged in Stripe event {}",
            observed.event_id
        ),
        SubscriptionEvent::PaymentRecorded { payment } => format!(
            "Payment of {} {} recorded for invoice {}",
            payment.amount_paid, payment.currency, payment.invoice_id
        ),
        SubscriptionEvent::PaymentFailed {
            invoice_id,
            amount_due,
            currency,
            attempt_count,
            ..
        } => format!(
            "Payment of {amount_due} {currency} failed for invoice {invoice_id} (attempt {attempt_count})"
        ),
        SubscriptionEvent::PaymentRefunded {
            charge_id,
            invoice_id,
            amount,
            currency,
            ..
        } => match invoice_id {
            Some(invoice_id) => {
                format!("Refund of {amount} {currency} recorded for invoice {invoice_id}")
            }
            None => format!("Refund of {amount} {currency} recorded for charge {charge_id}"),
        },
        SubscriptionEvent::SitePurchaseStarted { sites, amount, currency, .. } => {
            format!("Purchase of {} started ({amount} {currency})", sites.join(", "))
        }
        SubscriptionEvent::SitePurchaseCompleted { session_id, .. } => {
            format!("Site purchase {session_id} paid; sites added")
        }
        SubscriptionEvent::SitePurchaseExpired { session_id, .. } => {
            format!("Site purchase {session_id} expired unpaid")
        }
        SubscriptionEvent::LicensePurchaseStarted {
            quantity,
            amount,
            currency,
            ..
        } => format!("Purchase of {quantity} license key(s) started ({amount} {currency})"),
        SubscriptionEvent::LicensePurchaseCompleted { session_id, .. } => {
            format!("License purchase {session_id} paid; keys activated")
        }
        SubscriptionEvent::LicensePurchaseExpired { session_id, .. } => {
            format!("License purchase {session_id} expired unpaid; keys canceled")
        }
    }
}

/// `20% off for 3 months`, `5.00 usd off once`, `25.5% off forever, until 2027-01-01`.
fn discount_summary(discount: &aggregates::Discount) -> String {
    let off = match &discount.off {
        aggregates::DiscountOff::PercentHundredths(p) if p % 100 == 0 => format!("{}%", p / 100),
        aggregates::DiscountOff::PercentHundredths(p) => {
            let hundredths = format!("{:02}", p % 100);
            format!("{}.{}%", p / 100, hundredths.trim_end_matches('0'))
        }
        aggregates::DiscountOff::Amount { amount, currency } => format!("{amount} {currency}"),
    };
    let duration = match discount.duration {
        aggregates::DiscountDuration::Once => "once".to_owned(),
        aggregates::DiscountDuration::Repeating(months) => format!("for {months} months"),
        aggregates::DiscountDuration::Forever => "forever".to_owned(),
    };
    match discount.end {
        Some(end) => format!("{off} off {duration}, until {}", day(Some(end))),
        None => format!("{off} off {duration}"),
    }
}

fn license_summary(event: LicenseEvent) -> String {
    match event {
        LicenseEvent::LicenseIssued {
            key,
            subscription_id,
            site,
            seat,
            ..
        } => match (site, seat) {
            (Some(site), _) => format!("License {key} issued for {site}"),
            (None, Some(seat)) => {
                format!("License {key} issued for seat {seat} of subscription {subscription_id}")
            }
            (None, None) => format!("License {key} issued for subscription {subscription_id}"),
        },
        LicenseEvent::LicenseReserved { key, seat, .. } => {
            format!("License {key} reserved (seat {seat} of a purchase), pending payment")
        }
        LicenseEvent::PendingLicenseActivated { item_id, .. } => {
            format!("License paid and activated (item {item_id})")
        }
        LicenseEvent::LicenseCanceled { reason, .. } => {
            format!("License canceled ({})", reason.as_str().replace('_', " "))
        }
        LicenseEvent::LicenseDeactivated { reason, .. } => {
            format!(
                "License deactivated ({})",
                reason.as_str().replace('_', " ")
            )
        }
        LicenseEvent::LicenseReactivated { .. } => "License reactivated".to_owned(),
        LicenseEvent::LicenseActivatedOnDomain { domain, .. } => {
            format!("License activated on {domain}")
        }
        LicenseEvent::LicenseDomainReleased { domain, .. } => {
            format!("License released from {domain}")
        }
        LicenseEvent::LicenseSuspended { reason, .. } => format!("License suspended: {reason}"),
        LicenseEvent::LicenseUnsuspended { .. } => "License unsuspended".to_owned(),
        LicenseEvent::LicenseRevoked { reason, .. } => format!("License revoked: {reason}"),
        LicenseEvent::LicenseGranted {
            key,
            policy_id,
            expires_at,
            note,
            ..
        } => {
            let mut summary = format!("License {key} granted by an operator");
            if let Some(policy) = policy_id {
                summary.push_str(&format!(", policy {policy}"));
            }
            if let Some(at) = expires_at {
                summary.push_str(&format!(", expires {}", at.format("%Y-%m-%d %H:%M UTC")));
            }
            if let Some(note) = note {
                summary.push_str(&format!(": {note}"));
            }
            summary
        }
        LicenseEvent::LicensePolicyChanged {
            policy_id,
            expires_at,
            ..
        } => {
            let policy = match policy_id {
                Some(policy) => format!("License policy set to {policy}"),
                None => "License policy removed".to_owned(),
            };
            format!("{policy}; {}", expiry_phrase(expires_at))
        }
        LicenseEvent::LicenseExpiryChanged { expires_at, .. } => {
            format!("License expiry changed: {}", expiry_phrase(expires_at))
        }
        LicenseEvent::LicenseMachineExpired {
            domain,
            last_seen_at,
            ..
        } => format!(
            "License activation on {domain} freed: no heartbeat since {}",
            last_seen_at.format("%Y-%m-%d %H:%M UTC")
        ),
    }
}

fn expiry_phrase(expires_at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    match expires_at {
        Some(at) => format!("expires {}", at.format("%Y-%m-%d %H:%M UTC")),
        None => "no expiry of its own".to_owned(),
    }
}

/// `price_123 (1000 usd per month)`, amounts in minor units.
fn price_summary(price: &Price) -> String {
    let interval = price.interval.as_str();
    let every = if price.interval_count == 1 {
        interval.to_owned()
    } else {
        format!("{} {interval}s", price.interval_count)
    };
    format!(
        "{} ({} {} per {every})",
        price.price_id, price.unit_amount, price.currency
    )
}

fn day(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "unknown".to_owned(),
        |at| at.format("%Y-%m-%d").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use aggregates::{MemberStatus, Payment, StripeObservation};
    use chrono::TimeZone;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_000, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn summaries_read_as_sentences() {
        let status = MemberEvent::MemberStatusChanged {
            from: MemberStatus::Free,
            to: MemberStatus::Paid,
            reason: "sub_1".into(),
            changed_at: at(),
        };
        assert_eq!(member_summary(status), "Status changed from free to paid");
        let tier_id = Uuid::from_u128(7);
        let granted = MemberEvent::MemberCompGranted {
            tier_id,
            until: None,
            granted_at: at(),
        };
        assert_eq!(
            member_summary(granted),
            format!("Complimentary access to tier {tier_id} given without end")
        );
        let ended = MemberEvent::MemberCompEnded {
            tier_id,
            reason: aggregates::CompEndReason::Expired,
            ended_at: at(),
        };
        assert_eq!(
            member_summary(ended),
            format!("Complimentary access to tier {tier_id} ended (expired)")
        );

        let payment = SubscriptionEvent::PaymentRecorded {
            payment: Payment {
                invoice_id: "in_123".into(),
                member_id: Uuid::nil(),
                customer_id: "cus_1".into(),
                amount_paid: 1000,
                currency: "usd".into(),
                billing_reason: None,
                payment_intent_id: None,
                period_start: None,
                period_end: None,
                paid_at: at(),
            },
        };
        assert_eq!(
            subscription_summary("sub_1", payment),
            "Payment of 1000 usd recorded for invoice in_123"
        );

        let canceled = SubscriptionEvent::SubscriptionCancellationScheduled {
            cancel_at: Some(at()),
            observed: StripeObservation {
                event_id: "evt_1".into(),
                event_type: "customer.subscription.updated".into(),
                created: 1_790_000_000,
            },
        };
        assert_eq!(
            subscription_summary("sub_1", canceled),
            "Cancellation of subscription sub_1 scheduled for 2026-09-21"
        );

        let issued = LicenseEvent::LicenseIssued {
            license_id: Uuid::nil(),
            key: "KEY-AAAA-BBBB-CCCC".into(),
            member_id: Uuid::nil(),
            subscription_id: "sub_1".into(),
            item_id: "si_1".into(),
            purchase_type: aggregates::PurchaseType::Site,
            site: Some("example.com".into()),
            seat: None,
            issued_at: at(),
        };
        assert_eq!(
            license_summary(issued),
            "License KEY-AAAA-BBBB-CCCC issued for example.com"
        );
        assert_eq!(
            license_summary(LicenseEvent::LicenseActivatedOnDomain {
                domain: "shop.example.com".into(),
                ip: Some("203.0.113.9".into()),
                activated_at: at(),
            }),
            "License activated on shop.example.com"
        );
        assert_eq!(
            license_summary(LicenseEvent::LicenseDomainReleased {
                domain: "shop.example.com".into(),
                released_at: at(),
            }),
            "License released from shop.example.com"
        );
    }

    #[test]
    fn prices_name_their_interval() {
        let price = Price {
            price_id: "price_1".into(),
            product_id: None,
            unit_amount: 3000,
            currency: "eur".into(),
            interval: aggregates::BillingInterval::Month,
            interval_count: 3,
        };
        assert_eq!(price_summary(&price), "price_1 (3000 eur per 3 months)");
    }
}
