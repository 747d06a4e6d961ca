//! `members_payment_events`: one row per paid invoice, refund and failed payment attempt, for
//! revenue reporting. Times are the events' own (`paid_at`, `refunded_at`, `failed_at`); the
//! subscription is the event's aggregate id.
//!
//! A paid invoice is counted once: the aggregate already records a payment once per invoice,
//! and a unique index on `invoice_id` (for `kind = 'payment'`) is a second line of defence, on
//! which a repeated payment is dropped.

use aggregates::cqrs_es::Aggregate;
use aggregates::{Subscription, SubscriptionEvent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Handles, Projection, ProjectionError, StoredEvent};

pub struct MembersPaymentEvents;

struct PaymentRow {
    member_id: Uuid,
    invoice_id: Option<String>,
    kind: &'static str,
    amount: i64,
    currency: String,
    created_at: DateTime<Utc>,
}

#[async_trait]
impl Projection for MembersPaymentEvents {
    fn name(&self) -> &'static str {
        "members_payment_events"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["members_payment_events"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::only(
            Subscription::TYPE,
            &[
                SubscriptionEvent::PAYMENT_RECORDED,
                SubscriptionEvent::PAYMENT_REFUNDED,
                SubscriptionEvent::PAYMENT_FAILED,
            ],
        )];
        HANDLES
    }

    /// One multi-row `INSERT` in log order (`WITH ORDINALITY`), so that of two payments of one
    /// invoice in a batch the first is kept, as one by one.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut rows: Vec<(&StoredEvent, PaymentRow)> = Vec::new();
        for event in events {
            if event.aggregate_type != Subscription::TYPE {
                continue;
            }
            let row = match event.decode::<SubscriptionEvent>()? {
                SubscriptionEvent::PaymentRecorded { payment } => PaymentRow {
                    member_id: payment.member_id,
                    invoice_id: Some(payment.invoice_id),
                    kind: "payment",
                    amount: payment.amount_paid,
                    currency: payment.currency,
                    created_at: payment.paid_at,
                },
                SubscriptionEvent::PaymentRefunded {
                    invoice_id,
                    member_id,
                    amount,
                    currency,
                    refunded_at,
                    ..
                } => PaymentRow {
                    member_id,
                    invoice_id,
                    kind: "refund",
                    amount,
                    currency,
                    created_at: refunded_at,
                },
                SubscriptionEvent::PaymentFailed {
                    invoice_id,
                    member_id,
                    amount_due,
                    currency,
                    failed_at,
                    ..
                } => PaymentRow {
                    member_id,
                    invoice_id: Some(invoice_id),
                    kind: "failure",
                    amount: amount_due,
                    currency,
                    created_at: failed_at,
                },
                _ => continue,
            };
            rows.push((event, row));
        }
        if rows.is_empty() {
            return Ok(());
        }
        // No conflict target: covers both the primary key and the one-payment-per-invoice index.
        sqlx::query(
            "INSERT INTO members_payment_events
                 (id, member_id, subscription_id, invoice_id, kind, amount, currency, created_at)
             SELECT id, member_id, subscription_id, invoice_id, kind, amount, currency, created_at
             FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                         $6::bigint[], $7::text[], $8::timestamptz[])
                  WITH ORDINALITY AS r(id, member_id, subscription_id, invoice_id, kind, amount,
                                       currency, created_at, n)
             ORDER BY n
             ON CONFLICT DO NOTHING",
        )
        .bind(
            rows.iter()
                .map(|(e, _)| e.global_position)
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|(_, r)| r.member_id).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|(e, _)| e.aggregate_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, r)| r.invoice_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|(_, r)| r.kind).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.amount).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|(_, r)| r.currency.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|(_, r)| r.created_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
