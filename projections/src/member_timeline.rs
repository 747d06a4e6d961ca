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
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{member_id as aggregate_uuid, Handles, Projection, ProjectionError, StoredEvent};

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

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let entry = if event.aggregate_type == Member::TYPE {
            let member_id = aggregate_uuid(event)?;
            Some((member_id, member_summary(event.decode::<MemberEvent>()?)))
        } else if event.aggregate_type == Subscription::TYPE {
            subscription_entry(conn, event).await?
        } else if event.aggregate_type == License::TYPE {
            license_entry(conn, event).await?
        } else {
            None
        };
        let Some((member_id, summary)) = entry else {
            return Ok(());
        };
        // `{"Variant": {...}}` → `{...}`.
        let data = event
            .payload
            .as_object()
            .and_then(|variant| variant.values().next())
            .filter(|inner| inner.is_object())
            .cloned()
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
        sqlx::query(
            "INSERT INTO member_timeline
                 (id, member_id, aggregate_type, aggregate_id, event_type, summary, data,
                  created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(event.global_position)
        .bind(member_id)
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(&event.event_type)
        .bind(summary)
        .bind(data)
        .bind(event.recorded_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

async fn subscription_entry(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Option<(Uuid, String)>, ProjectionError> {
    let sub = event.aggregate_id.as_str();
    let decoded = event.decode::<SubscriptionEvent>()?;
    // Members named by the event itself.
    let named = match &decoded {
        SubscriptionEvent::SubscriptionCreated { member_id, .. } => {
            remember_subscription(conn, sub, *member_id, true).await?;
            Some(*member_id)
        }
        SubscriptionEvent::PaymentRecorded { payment } => {
            remember_subscription(conn, sub, payment.member_id, false).await?;
            Some(payment.member_id)
        }
        SubscriptionEvent::PaymentFailed { member_id, .. }
        | SubscriptionEvent::PaymentRefunded { member_id, .. }
        | SubscriptionEvent::SitePurchaseStarted { member_id, .. }
        | SubscriptionEvent::LicensePurchaseStarted { member_id, .. } => {
            remember_subscription(conn, sub, *member_id, false).await?;
            Some(*member_id)
        }
        _ => None,
    };
    let member_id = match named {
        Some(member_id) => member_id,
        None => {
            let known: Option<Uuid> = sqlx::query_scalar(
                "SELECT member_id FROM timeline_subscription_members WHERE subscription_id = $1",
            )
            .bind(sub)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(member_id) = known else {
                return Ok(None);
            };
            member_id
        }
    };
    Ok(Some((member_id, subscription_summary(sub, decoded))))
}

/// `authoritative`: the subscription's own creation names its member; a payment only fills
/// the gap until then.
async fn remember_subscription(
    conn: &mut PgConnection,
    subscription_id: &str,
    member_id: Uuid,
    authoritative: bool,
) -> Result<(), ProjectionError> {
    let sql = if authoritative {
        "INSERT INTO timeline_subscription_members (subscription_id, member_id) VALUES ($1, $2)
         ON CONFLICT (subscription_id) DO UPDATE SET member_id = EXCLUDED.member_id"
    } else {
        "INSERT INTO timeline_subscription_members (subscription_id, member_id) VALUES ($1, $2)
         ON CONFLICT (subscription_id) DO NOTHING"
    };
    sqlx::query(sql)
        .bind(subscription_id)
        .bind(member_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn license_entry(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Option<(Uuid, String)>, ProjectionError> {
    let license_id = aggregate_uuid(event)?;
    let decoded = event.decode::<LicenseEvent>()?;
    let member_id = if let LicenseEvent::LicenseIssued { member_id, .. }
    | LicenseEvent::LicenseReserved { member_id, .. } = &decoded
    {
        sqlx::query(
            "INSERT INTO timeline_license_members (license_id, member_id) VALUES ($1, $2)
             ON CONFLICT (license_id) DO UPDATE SET member_id = EXCLUDED.member_id",
        )
        .bind(license_id)
        .bind(*member_id)
        .execute(&mut *conn)
        .await?;
        *member_id
    } else {
        let known: Option<Uuid> = sqlx::query_scalar(
            "SELECT member_id FROM timeline_license_members WHERE license_id = $1",
        )
        .bind(license_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(member_id) = known else {
            return Ok(None);
        };
        member_id
    };
    Ok(Some((member_id, license_summary(decoded))))
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
