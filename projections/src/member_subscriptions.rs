//! `member_subscriptions`: each subscription (`subscriptions`) and its items
//! (`subscription_items`) as Stripe last showed them, with the subscription's current MRR,
//! recomputed from its active items with [`aggregates::mrr::subscription_mrr`].
//!
//! Times of Stripe-derived changes (`added_at`, `removed_at`, `updated_at`) are the Stripe
//! event's `created` (`observed.created`), falling back to the time the event was recorded if
//! that is out of range; `created_at`, `canceled_at`, `cancel_at` and the period are Stripe's
//! own. Payments are not shown here (see `members_payment_events`), so a payment recorded
//! before its subscription's `SubscriptionCreated` is ignored, as are changes of a subscription
//! not created yet.

use aggregates::cqrs_es::Aggregate;
use aggregates::mrr::subscription_mrr;
use aggregates::{
    Price, StripeObservation, Subscription, SubscriptionEvent, SubscriptionItem, SubscriptionStatus,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::PgConnection;

use crate::{Handles, Mode, Projection, ProjectionError, StoredEvent};

pub struct MemberSubscriptions;

/// When Stripe created the event that carried a change (else when the event was recorded).
pub(crate) fn observed_at(observed: &StripeObservation, event: &StoredEvent) -> DateTime<Utc> {
    observed.observed_at().unwrap_or(event.recorded_at)
}

/// Reads back a unit enum variant stored by its `as_str` name (which is also its serde form).
pub(crate) fn parse_name<T: DeserializeOwned>(
    name: &str,
    event: &StoredEvent,
) -> Result<T, ProjectionError> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|source| {
        ProjectionError::Decode {
            position: event.global_position,
            event_type: event.event_type.clone(),
            source,
        }
    })
}

/// Postgres has no unsigned integers; counts beyond `i32::MAX` do not occur.
pub(crate) fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn to_u32(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

#[async_trait]
impl Projection for MemberSubscriptions {
    fn name(&self) -> &'static str {
        "member_subscriptions"
    }

    fn version(&self) -> i32 {
        // 3: `license_purchases` (migration 20261124000009).
        3
    }

    fn looked_up_by(&self) -> &'static [&'static str] {
        &["subscription_items_subscription"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "subscriptions",
            "subscription_items",
            "pending_sites",
            "license_purchases",
        ]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::all(Subscription::TYPE)];
        HANDLES
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply_event(conn, event).await?;
        }
        Ok(())
    }
}

impl MemberSubscriptions {
    /// Applies one event, in the batch's transaction.
    async fn apply_event(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Subscription::TYPE {
            return Ok(());
        }
        let id = event.aggregate_id.as_str();
        match event.decode::<SubscriptionEvent>()? {
            SubscriptionEvent::SubscriptionCreated {
                member_id,
                customer_id,
                status,
                current_period_start,
                current_period_end,
                cancel_at_period_end,
                created,
                observed,
                ..
            } => {
                // `cancel_at` comes with the `SubscriptionCancellationScheduled` that follows
                // when the subscription starts with a cancellation scheduled.
                sqlx::query(
                    "INSERT INTO subscriptions
                         (id, member_id, customer_id, status, cancel_at_period_end, cancel_at,
                          current_period_start, current_period_end, created_at, canceled_at, mrr,
                          currency, updated_at)
                     VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, NULL, 0, NULL, $9)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(member_id)
                .bind(customer_id)
                .bind(status.as_str())
                .bind(cancel_at_period_end)
                .bind(current_period_start)
                .bind(current_period_end)
                .bind(created)
                .bind(observed_at(&observed, event))
                .execute(&mut *conn)
                .await?;
                refresh_mrr(conn, event, id).await?;
            }
            SubscriptionEvent::SubscriptionActivated { status, observed } => {
                set_status(conn, event, id, status, &observed).await?;
            }
            SubscriptionEvent::SubscriptionStatusChanged { to, observed, .. } => {
                set_status(conn, event, id, to, &observed).await?;
            }
            SubscriptionEvent::SubscriptionCanceled {
                canceled_at,
                observed,
            } => {
                sqlx::query(
                    "UPDATE subscriptions
                     SET status = $2, canceled_at = $3, updated_at = GREATEST(updated_at, $4)
                     WHERE id = $1",
                )
                .bind(id)
                .bind(SubscriptionStatus::Canceled.as_str())
                .bind(canceled_at)
                .bind(observed_at(&observed, event))
                .execute(&mut *conn)
                .await?;
                refresh_mrr(conn, event, id).await?;
            }
            SubscriptionEvent::SubscriptionPeriodChanged {
                current_period_start,
                current_period_end,
                observed,
            } => {
                sqlx::query(
                    "UPDATE subscriptions
                     SET current_period_start = $2, current_period_end = $3,
                         updated_at = GREATEST(updated_at, $4)
                     WHERE id = $1",
                )
                .bind(id)
                .bind(current_period_start)
                .bind(current_period_end)
                .bind(observed_at(&observed, event))
                .execute(&mut *conn)
                .await?;
            }
            SubscriptionEvent::SubscriptionCancellationScheduled {
                cancel_at,
                observed,
            } => {
                sqlx::query(
                    "UPDATE subscriptions
                     SET cancel_at_period_end = TRUE,
                         cancel_at = $2,
                         updated_at = GREATEST(updated_at, $3)
                     WHERE id = $1",
                )
                .bind(id)
                .bind(cancel_at)
                .bind(observed_at(&observed, event))
                .execute(&mut *conn)
                .await?;
                refresh_mrr(conn, event, id).await?;
            }
            SubscriptionEvent::SubscriptionCancellationUnscheduled { observed } => {
                sqlx::query(
                    "UPDATE subscriptions
                     SET cancel_at_period_end = FALSE, cancel_at = NULL,
                         updated_at = GREATEST(updated_at, $2)
                     WHERE id = $1",
                )
                .bind(id)
                .bind(observed_at(&observed, event))
                .execute(&mut *conn)
                .await?;
                refresh_mrr(conn, event, id).await?;
            }
            SubscriptionEvent::SubscriptionItemAdded { item, observed } => {
                let at = observed_at(&observed, event);
                if !touch(conn, id, at).await? {
                    return Ok(());
                }
                sqlx::query(
                    "INSERT INTO subscription_items
                         (id, subscription_id, price_id, product_id, unit_amount, currency,
                          interval, interval_count, quantity, site, purchase_type, status,
                          added_at, removed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'active', $12, NULL)
                     ON CONFLICT (id) DO UPDATE
                     SET price_id = EXCLUDED.price_id, product_id = EXCLUDED.product_id,
                         unit_amount = EXCLUDED.unit_amount, currency = EXCLUDED.currency,
                         interval = EXCLUDED.interval, interval_count = EXCLUDED.interval_count,
                         quantity = EXCLUDED.quantity, site = EXCLUDED.site,
                         purchase_type = EXCLUDED.purchase_type, status = 'active',
                         removed_at = NULL",
                )
                .bind(&item.item_id)
                .bind(id)
                .bind(&item.price.price_id)
                .bind(&item.price.product_id)
                .bind(item.price.unit_amount)
                .bind(&item.price.currency)
                .bind(item.price.interval.as_str())
                .bind(to_i32(item.price.interval_count))
                .bind(to_i32(item.quantity))
                .bind(&item.site)
                .bind(item.purchase_type.as_str())
                .bind(at)
                .execute(&mut *conn)
                .await?;
                refresh_mrr(conn, event, id).await?;
            }
            SubscriptionEvent::SubscriptionItemRemoved {
                item_id, observed, ..
            } => {
                let at = observed_at(&observed, event);
                sqlx::query(
                    "UPDATE subscription_items SET status = 'removed', removed_at = $3
                     WHERE id = $1 AND subscription_id = $2 AND status = 'active'",
                )
                .bind(item_id)
                .bind(id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                touch(conn, id, at).await?;
                refresh_mrr(conn, event, id).await?;
            }
            SubscriptionEvent::SubscriptionItemQuantityChanged {
                item_id,
                to,
                observed,
                ..
            } => {
                sqlx::query(
                    "UPDATE subscription_items SET quantity = $3
                     WHERE id = $1 AND subscription_id = $2",
                )
                .bind(item_id)
                .bind(id)
                .bind(to_i32(to))
                .execute(&mut *conn)
                .await?;
                touch(conn, id, observed_at(&observed, event)).await?;
                refresh_mrr(conn, event, id).await?;
            }
            SubscriptionEvent::SubscriptionItemSiteAssigned { item_id, site, .. } => {
                sqlx::query(
                    "UPDATE subscription_items SET site = $3, purchase_type = 'site'
                     WHERE id = $1 AND subscription_id = $2",
                )
                .bind(item_id)
                .bind(id)
                .bind(site)
                .execute(&mut *conn)
                .await?;
            }
            SubscriptionEvent::SubscriptionPlanChanged {
                item_id,
                to,
                observed,
                ..
            } => {
                sqlx::query(
                    "UPDATE subscription_items
                     SET price_id = $3, product_id = $4, unit_amount = $5, currency = $6,
                         interval = $7, interval_count = $8
                     WHERE id = $1 AND subscription_id = $2",
                )
                .bind(item_id)
                .bind(id)
                .bind(&to.price_id)
                .bind(&to.product_id)
                .bind(to.unit_amount)
                .bind(&to.currency)
                .bind(to.interval.as_str())
                .bind(to_i32(to.interval_count))
                .execute(&mut *conn)
                .await?;
                touch(conn, id, observed_at(&observed, event)).await?;
                refresh_mrr(conn, event, id).await?;
            }
            SubscriptionEvent::SitePurchaseStarted {
                session_id,
                member_id,
                sites,
                amount,
                currency,
                started_at,
                ..
            } => {
                for site in sites {
                    sqlx::query(
                        "INSERT INTO pending_sites (session_id, site, subscription_id, member_id, amount, currency, status, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) ON CONFLICT DO NOTHING",
                    )
                    .bind(&session_id)
                    .bind(site)
                    .bind(id)
                    .bind(member_id)
                    .bind(amount)
                    .bind(&currency)
                    .bind(started_at)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            SubscriptionEvent::SitePurchaseCompleted {
                session_id,
                completed_at,
            } => {
                sqlx::query("UPDATE pending_sites SET status = 'paid', updated_at = $2 WHERE session_id = $1")
                    .bind(session_id)
                    .bind(completed_at)
                    .execute(&mut *conn)
                    .await?;
            }
            SubscriptionEvent::SitePurchaseExpired {
                session_id,
                expired_at,
            } => {
                sqlx::query("UPDATE pending_sites SET status = 'expired', updated_at = $2 WHERE session_id = $1")
                    .bind(session_id)
                    .bind(expired_at)
                    .execute(&mut *conn)
                    .await?;
            }
            SubscriptionEvent::LicensePurchaseStarted {
                purchase_id,
                session_id,
                member_id,
                quantity,
                amount,
                currency,
                started_at,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO license_purchases (purchase_id, session_id, subscription_id, member_id, quantity, amount, currency, status, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8) ON CONFLICT DO NOTHING",
                )
                .bind(purchase_id)
                .bind(session_id)
                .bind(id)
                .bind(member_id)
                .bind(to_i32(quantity))
                .bind(amount)
                .bind(currency)
                .bind(started_at)
                .execute(&mut *conn)
                .await?;
            }
            SubscriptionEvent::LicensePurchaseCompleted {
                purchase_id,
                completed_at: at,
                ..
            }
            | SubscriptionEvent::LicensePurchaseExpired {
                purchase_id,
                expired_at: at,
                ..
            } => {
                let status = if event.event_type == SubscriptionEvent::LICENSE_PURCHASE_COMPLETED {
                    "paid"
                } else {
                    "expired"
                };
                sqlx::query("UPDATE license_purchases SET status = $2, updated_at = $3 WHERE purchase_id = $1")
                    .bind(purchase_id)
                    .bind(status)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
            }
            // Nothing tracked here changed; payments are in `members_payment_events`.
            SubscriptionEvent::SubscriptionStateObserved { .. }
            | SubscriptionEvent::PaymentRecorded { .. }
            | SubscriptionEvent::PaymentFailed { .. }
            | SubscriptionEvent::PaymentRefunded { .. } => {}
        }
        Ok(())
    }
}

/// Moves `updated_at` forward; returns whether the subscription exists.
async fn touch(
    conn: &mut PgConnection,
    id: &str,
    at: DateTime<Utc>,
) -> Result<bool, ProjectionError> {
    let result =
        sqlx::query("UPDATE subscriptions SET updated_at = GREATEST(updated_at, $2) WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
    Ok(result.rows_affected() > 0)
}

async fn set_status(
    conn: &mut PgConnection,
    event: &StoredEvent,
    id: &str,
    status: SubscriptionStatus,
    observed: &StripeObservation,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE subscriptions SET status = $2, updated_at = GREATEST(updated_at, $3)
         WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(observed_at(observed, event))
    .execute(&mut *conn)
    .await?;
    refresh_mrr(conn, event, id).await
}

type ItemRow = (
    String,
    String,
    Option<String>,
    i64,
    String,
    String,
    i32,
    i32,
    Option<String>,
    String,
);

/// Recomputes the subscription's MRR and currency from its status and active items.
async fn refresh_mrr(
    conn: &mut PgConnection,
    event: &StoredEvent,
    id: &str,
) -> Result<(), ProjectionError> {
    let subscription: Option<(String, bool)> =
        sqlx::query_as("SELECT status, cancel_at_period_end FROM subscriptions WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((status, cancel_at_period_end)) = subscription else {
        return Ok(());
    };
    let status: SubscriptionStatus = parse_name(&status, event)?;
    let rows: Vec<ItemRow> = sqlx::query_as(
        "SELECT id, price_id, product_id, unit_amount, currency, interval, interval_count,
                quantity, site, purchase_type
         FROM subscription_items WHERE subscription_id = $1 AND status = 'active'
         ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for (
        item_id,
        price_id,
        product_id,
        unit_amount,
        currency,
        interval,
        interval_count,
        quantity,
        site,
        purchase_type,
    ) in rows
    {
        items.push(SubscriptionItem {
            item_id,
            price: Price {
                price_id,
                product_id,
                unit_amount,
                currency,
                interval: parse_name(&interval, event)?,
                interval_count: to_u32(interval_count),
            },
            quantity: to_u32(quantity),
            site,
            purchase_type: parse_name(&purchase_type, event)?,
            license_purchase_id: None,
        });
    }
    let mrr = subscription_mrr(status, cancel_at_period_end, &items);
    let currency = items.first().map(|item| item.price.currency.clone());
    sqlx::query(
        "UPDATE subscriptions SET mrr = $2, currency = COALESCE($3, currency) WHERE id = $1",
    )
    .bind(id)
    .bind(mrr)
    .bind(currency)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
