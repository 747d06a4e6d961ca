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

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Subscription::TYPE {
            return Ok(());
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
            _ => return Ok(()),
        };
        // No conflict target: covers both the primary key and the one-payment-per-invoice index.
        sqlx::query(
            "INSERT INTO members_payment_events
                 (id, member_id, subscription_id, invoice_id, kind, amount, currency, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT DO NOTHING",
        )
        .bind(event.global_position)
        .bind(row.member_id)
        .bind(&event.aggregate_id)
        .bind(row.invoice_id)
        .bind(row.kind)
        .bind(row.amount)
        .bind(row.currency)
        .bind(row.created_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
