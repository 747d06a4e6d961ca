//! `members_paid_subscription_events`: one row whenever a subscription's monthly recurring
//! revenue or plan changes, with `mrr_delta` = new MRR − old MRR, so that summing `mrr_delta`
//! (per subscription, member, or over all rows up to a date) gives the MRR at that point; a
//! canceled subscription sums to 0.
//!
//! The projection keeps what it needs of each subscription in its helper table
//! `paid_subscription_state` (status, cancellation flag, items, MRR, plan, currency) and
//! recomputes MRR with [`aggregates::mrr::subscription_mrr`] after every event that can change
//! it. MRR is 0 while trialing, incomplete, incomplete_expired, paused or canceled, and once a
//! cancellation is scheduled.
//!
//! - `plan` is the price id of the first item by item id (none without items); `currency` that
//!   item's currency (kept from before once the last item is gone).
//! - `type`: `created` for a subscription's first row. `SubscriptionCreated` carries no items
//!   (one `SubscriptionItemAdded` per item follows, from the same Stripe event), so the changes
//!   of the whole creation (every event carrying the creating Stripe event's id) are folded
//!   into that one row: its `to_plan`, `currency` and `mrr_delta` are the subscription's plan,
//!   currency and MRR as created. After that: `canceled` when the
//!   status became canceled or a cancellation was scheduled; `reactivated` when a scheduled
//!   cancellation was withdrawn, or when a status change took MRR from 0 back to paying for a
//!   subscription that had paid before (a paused or lapsed subscription resuming; a trial or an
//!   incomplete first payment converting is `updated`); otherwise `updated`.
//! - `created_at` is the Stripe event's `created` time (`observed.created`), falling back to the
//!   time the event was recorded if that is out of range.
//! - Events of a subscription not created yet (only payments can come first) are ignored.

use aggregates::cqrs_es::Aggregate;
use aggregates::mrr::subscription_mrr;
use aggregates::{Subscription, SubscriptionEvent, SubscriptionItem, SubscriptionStatus};
use async_trait::async_trait;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::member_subscriptions::{observed_at, parse_name};
use crate::{Handles, Projection, ProjectionError, StoredEvent};

pub struct MembersPaidSubscriptionEvents;

/// One subscription as far as MRR goes: a row of `paid_subscription_state`.
#[derive(Debug, Clone, PartialEq)]
struct PaidState {
    member_id: Uuid,
    status: SubscriptionStatus,
    cancel_at_period_end: bool,
    /// Ordered by item id.
    items: Vec<SubscriptionItem>,
    mrr: i64,
    plan: Option<String>,
    currency: Option<String>,
    /// The Stripe event (`evt_...`) the subscription was created from.
    created_event_id: String,
}

impl PaidState {
    /// Recomputes MRR, plan and currency from status, flag and items.
    fn refresh(&mut self) {
        self.items.sort_by(|a, b| a.item_id.cmp(&b.item_id));
        self.mrr = subscription_mrr(self.status, self.cancel_at_period_end, &self.items);
        if let Some(first) = self.items.first() {
            self.plan = Some(first.price.price_id.clone());
            self.currency = Some(first.price.currency.clone());
        } else {
            self.plan = None;
        }
    }
}

/// What kind of change an event is, for the row's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Created,
    Status,
    Items,
    CancellationScheduled,
    CancellationUnscheduled,
    Canceled,
}

#[async_trait]
impl Projection for MembersPaidSubscriptionEvents {
    fn name(&self) -> &'static str {
        "members_paid_subscription_events"
    }

    fn version(&self) -> i32 {
        1
    }

    fn looked_up_by(&self) -> &'static [&'static str] {
        &["members_paid_subscription_events_subscription"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "members_paid_subscription_events",
            "paid_subscription_state",
        ]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::all(Subscription::TYPE)];
        HANDLES
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

impl MembersPaidSubscriptionEvents {
    /// Applies one event, in the batch's transaction.
    async fn apply_event(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Subscription::TYPE {
            return Ok(());
        }
        let subscription_id = event.aggregate_id.as_str();
        let decoded = event.decode::<SubscriptionEvent>()?;
        let old = load(conn, event, subscription_id).await?;

        let (new, change, observed) = match (decoded, old.clone()) {
            (
                SubscriptionEvent::SubscriptionCreated {
                    member_id,
                    status,
                    cancel_at_period_end,
                    observed,
                    ..
                },
                None,
            ) => {
                let state = PaidState {
                    member_id,
                    status,
                    cancel_at_period_end,
                    items: Vec::new(),
                    mrr: 0,
                    plan: None,
                    currency: None,
                    created_event_id: observed.event_id.clone(),
                };
                (state, Change::Created, observed)
            }
            (SubscriptionEvent::SubscriptionActivated { status, observed }, Some(mut state)) => {
                state.status = status;
                (state, Change::Status, observed)
            }
            (
                SubscriptionEvent::SubscriptionStatusChanged { to, observed, .. },
                Some(mut state),
            ) => {
                state.status = to;
                (state, Change::Status, observed)
            }
            (SubscriptionEvent::SubscriptionItemAdded { item, observed }, Some(mut state)) => {
                state.items.retain(|i| i.item_id != item.item_id);
                state.items.push(item);
                (state, Change::Items, observed)
            }
            (
                SubscriptionEvent::SubscriptionItemRemoved {
                    item_id, observed, ..
                },
                Some(mut state),
            ) => {
                state.items.retain(|i| i.item_id != item_id);
                (state, Change::Items, observed)
            }
            (
                SubscriptionEvent::SubscriptionItemQuantityChanged {
                    item_id,
                    to,
                    observed,
                    ..
                },
                Some(mut state),
            ) => {
                for item in state.items.iter_mut().filter(|i| i.item_id == item_id) {
                    item.quantity = to;
                }
                (state, Change::Items, observed)
            }
            (
                SubscriptionEvent::SubscriptionPlanChanged {
                    item_id,
                    to,
                    observed,
                    ..
                },
                Some(mut state),
            ) => {
                for item in state.items.iter_mut().filter(|i| i.item_id == item_id) {
                    item.price = to.clone();
                }
                (state, Change::Items, observed)
            }
            (
                SubscriptionEvent::SubscriptionCancellationScheduled { observed, .. },
                Some(mut state),
            ) => {
                state.cancel_at_period_end = true;
                (state, Change::CancellationScheduled, observed)
            }
            (
                SubscriptionEvent::SubscriptionCancellationUnscheduled { observed },
                Some(mut state),
            ) => {
                state.cancel_at_period_end = false;
                (state, Change::CancellationUnscheduled, observed)
            }
            (SubscriptionEvent::SubscriptionCanceled { observed, .. }, Some(mut state)) => {
                state.status = SubscriptionStatus::Canceled;
                (state, Change::Canceled, observed)
            }
            // Payments, periods, observations; a repeated creation; a change of a subscription
            // never created.
            _ => return Ok(()),
        };
        let mut new = new;
        new.refresh();
        if old.as_ref() == Some(&new) {
            return Ok(());
        }
        save(conn, subscription_id, &new).await?;

        let (old_mrr, old_plan, old_status) = match &old {
            Some(state) => (state.mrr, state.plan.clone(), Some(state.status)),
            None => (0, None, None),
        };
        if new.mrr == old_mrr && new.plan == old_plan {
            return Ok(());
        }

        let has_rows: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM members_paid_subscription_events
                            WHERE subscription_id = $1)",
        )
        .bind(subscription_id)
        .fetch_one(&mut *conn)
        .await?;
        if has_rows && observed.event_id == new.created_event_id {
            // Still the creation: its only row is the `created` one.
            sqlx::query(
                "UPDATE members_paid_subscription_events
                 SET to_plan = $2, currency = $3, mrr_delta = mrr_delta + $4
                 WHERE subscription_id = $1 AND type = 'created'",
            )
            .bind(subscription_id)
            .bind(&new.plan)
            .bind(&new.currency)
            .bind(new.mrr - old_mrr)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        let kind = if !has_rows {
            "created"
        } else if change == Change::Canceled
            || change == Change::CancellationScheduled
            || (new.status == SubscriptionStatus::Canceled
                && old_status != Some(SubscriptionStatus::Canceled))
        {
            "canceled"
        } else if change == Change::CancellationUnscheduled {
            "reactivated"
        } else if change == Change::Status && old_mrr == 0 && new.mrr > 0 {
            // Back to paying: a reactivation only if it paid before (not a trial converting).
            let paid_before: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM members_paid_subscription_events
                                WHERE subscription_id = $1 AND mrr_delta > 0)",
            )
            .bind(subscription_id)
            .fetch_one(&mut *conn)
            .await?;
            if paid_before {
                "reactivated"
            } else {
                "updated"
            }
        } else {
            "updated"
        };

        sqlx::query(
            "INSERT INTO members_paid_subscription_events
                 (id, member_id, subscription_id, type, from_plan, to_plan, currency, mrr_delta,
                  created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(event.global_position)
        .bind(new.member_id)
        .bind(subscription_id)
        .bind(kind)
        .bind(old_plan)
        .bind(&new.plan)
        .bind(&new.currency)
        .bind(new.mrr - old_mrr)
        .bind(observed_at(&observed, event))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

type StateRow = (
    Uuid,
    String,
    bool,
    Json<Vec<SubscriptionItem>>,
    i64,
    Option<String>,
    Option<String>,
    String,
);

async fn load(
    conn: &mut PgConnection,
    event: &StoredEvent,
    subscription_id: &str,
) -> Result<Option<PaidState>, ProjectionError> {
    let row: Option<StateRow> = sqlx::query_as(
        "SELECT member_id, status, cancel_at_period_end, items, mrr, plan, currency,
                created_event_id
         FROM paid_subscription_state WHERE subscription_id = $1",
    )
    .bind(subscription_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((
        member_id,
        status,
        cancel_at_period_end,
        Json(items),
        mrr,
        plan,
        currency,
        created_event_id,
    )) = row
    else {
        return Ok(None);
    };
    Ok(Some(PaidState {
        member_id,
        status: parse_name(&status, event)?,
        cancel_at_period_end,
        items,
        mrr,
        plan,
        currency,
        created_event_id,
    }))
}

async fn save(
    conn: &mut PgConnection,
    subscription_id: &str,
    state: &PaidState,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO paid_subscription_state
             (subscription_id, member_id, status, cancel_at_period_end, items, mrr, plan, currency,
              created_event_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (subscription_id) DO UPDATE
         SET status = EXCLUDED.status, cancel_at_period_end = EXCLUDED.cancel_at_period_end,
             items = EXCLUDED.items, mrr = EXCLUDED.mrr, plan = EXCLUDED.plan,
             currency = EXCLUDED.currency",
    )
    .bind(subscription_id)
    .bind(state.member_id)
    .bind(state.status.as_str())
    .bind(state.cancel_at_period_end)
    .bind(Json(&state.items))
    .bind(state.mrr)
    .bind(&state.plan)
    .bind(&state.currency)
    .bind(&state.created_event_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use aggregates::{BillingInterval, Price, PurchaseType};

    use super::*;

    fn item(item_id: &str, price_id: &str, unit_amount: i64) -> SubscriptionItem {
        SubscriptionItem {
            item_id: item_id.into(),
            price: Price {
                price_id: price_id.into(),
                product_id: None,
                unit_amount,
                currency: "usd".into(),
                interval: BillingInterval::Month,
                interval_count: 1,
            },
            quantity: 1,
            site: None,
            purchase_type: PurchaseType::Quantity,
            license_purchase_id: None,
        }
    }

    fn state(status: SubscriptionStatus, items: Vec<SubscriptionItem>) -> PaidState {
        PaidState {
            member_id: Uuid::nil(),
            status,
            cancel_at_period_end: false,
            items,
            mrr: 0,
            plan: None,
            currency: None,
            created_event_id: "evt_1".into(),
        }
    }

    #[test]
    fn plan_is_the_first_item_by_id_and_mrr_sums_items() {
        let mut paid = state(
            SubscriptionStatus::Active,
            vec![item("si_b", "price_b", 1000), item("si_a", "price_a", 500)],
        );
        paid.refresh();
        assert_eq!(paid.plan.as_deref(), Some("price_a"));
        assert_eq!(paid.currency.as_deref(), Some("usd"));
        assert_eq!(paid.mrr, 1500);

        paid.cancel_at_period_end = true;
        paid.refresh();
        assert_eq!(paid.mrr, 0);
    }

    #[test]
    fn currency_outlives_the_last_item() {
        let mut paid = state(
            SubscriptionStatus::Active,
            vec![item("si_a", "price_a", 500)],
        );
        paid.refresh();
        paid.items.clear();
        paid.refresh();
        assert_eq!(paid.plan, None);
        assert_eq!(paid.currency.as_deref(), Some("usd"));
        assert_eq!(paid.mrr, 0);
    }
}
