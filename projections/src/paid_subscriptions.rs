//! `members_paid_subscription_events`: one row whenever a subscription's monthly recurring
//! revenue or plan changes, with `mrr_delta` = new MRR − old MRR, so that summing `mrr_delta`
//! (per subscription, member, or over all rows up to a date) gives the MRR at that point; a
//! canceled subscription sums to 0.
//!
//! The projection keeps what it needs of each subscription in its helper table
//! `paid_subscription_state` (status, cancellation flag, items, MRR, plan, currency) and
//! recomputes MRR with [`aggregates::mrr::discounted_mrr`] after every event that can change
//! it. MRR is 0 while trialing, incomplete, incomplete_expired, paused or canceled, and once a
//! cancellation is scheduled; while a discount is in force (an offer's coupon) it is the
//! discounted amount, and the row of `SubscriptionDiscountChanged` that ends it (`updated`)
//! brings it back to full price.
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

use std::collections::HashMap;

use aggregates::cqrs_es::Aggregate;
use aggregates::mrr::discounted_mrr;
use aggregates::{Discount, Subscription, SubscriptionEvent, SubscriptionItem, SubscriptionStatus};
use async_trait::async_trait;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::member_subscriptions::observed_at;
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
    /// The discounts in force.
    discounts: Vec<Discount>,
}

impl PaidState {
    /// Recomputes MRR, plan and currency from status, flag and items.
    fn refresh(&mut self) {
        self.items.sort_by(|a, b| a.item_id.cmp(&b.item_id));
        self.mrr = discounted_mrr(
            self.status,
            self.cancel_at_period_end,
            &self.items,
            &self.discounts,
        );
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
    Discount,
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
        let mut decoded = Vec::with_capacity(events.len());
        for event in events
            .iter()
            .filter(|e| e.aggregate_type == Subscription::TYPE)
        {
            decoded.push((event, event.decode::<SubscriptionEvent>()?));
        }
        if decoded.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<String> = decoded
            .iter()
            .map(|(e, _)| e.aggregate_id.clone())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut batch = Batch {
            states: load(conn, events[0].global_position, &ids).await?,
            histories: histories(conn, &ids).await?,
            ..Batch::default()
        };
        for (event, change) in decoded {
            batch.fold(event, change);
        }
        batch.store(conn).await
    }
}

/// What the projection's rows say of a subscription's past, as far as the next row's `type`
/// goes.
#[derive(Debug, Clone, Copy, Default)]
struct History {
    /// It has rows (its next row is not its `created` one).
    has_rows: bool,
    /// The `mrr_delta` of its `created` row, which later events of the creation still change.
    created_delta: Option<i64>,
    /// Its other rows that raised MRR.
    other_raises: i64,
}

impl History {
    /// Whether it paid before: a row that raised MRR.
    fn paid_before(&self) -> bool {
        self.created_delta.is_some_and(|d| d > 0) || self.other_raises > 0
    }
}

/// A row of `members_paid_subscription_events` to insert.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    member_id: Uuid,
    subscription_id: String,
    kind: &'static str,
    from_plan: Option<String>,
    to_plan: Option<String>,
    currency: Option<String>,
    mrr_delta: i64,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// A batch folded in memory: the states and histories of the subscriptions it touches, read in
/// two statements, then written back in three (states, new rows, changes to `created` rows
/// written before the batch). Event by event, this is exactly what one event at a time did.
#[derive(Debug, Default)]
struct Batch {
    states: HashMap<String, PaidState>,
    histories: HashMap<String, History>,
    changed_states: Vec<String>,
    rows: Vec<Row>,
    /// Changes to a `created` row from before the batch: its plan and currency, and what to
    /// add to its `mrr_delta`.
    created_changes: HashMap<String, (Option<String>, Option<String>, i64)>,
}

impl Batch {
    fn fold(&mut self, event: &StoredEvent, decoded: SubscriptionEvent) {
        let subscription_id = event.aggregate_id.as_str();
        let old = self.states.get(subscription_id).cloned();
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
                    discounts: Vec::new(),
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
                SubscriptionEvent::SubscriptionDiscountChanged { to, observed, .. },
                Some(mut state),
            ) => {
                state.discounts = to;
                (state, Change::Discount, observed)
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
            _ => return,
        };
        let mut new = new;
        new.refresh();
        if old.as_ref() == Some(&new) {
            return;
        }
        let (old_mrr, old_plan, old_status) = match &old {
            Some(state) => (state.mrr, state.plan.clone(), Some(state.status)),
            None => (0, None, None),
        };
        if !self.changed_states.iter().any(|id| id == subscription_id) {
            self.changed_states.push(subscription_id.to_owned());
        }
        self.states.insert(subscription_id.to_owned(), new.clone());
        if new.mrr == old_mrr && new.plan == old_plan {
            return;
        }
        let delta = new.mrr - old_mrr;
        let history = self
            .histories
            .entry(subscription_id.to_owned())
            .or_default();
        if history.has_rows && observed.event_id == new.created_event_id {
            // Still the creation: its only row is the `created` one.
            history.created_delta = Some(history.created_delta.unwrap_or(0) + delta);
            let in_batch = self
                .rows
                .iter_mut()
                .find(|r| r.subscription_id == subscription_id && r.kind == "created");
            if let Some(row) = in_batch {
                row.to_plan.clone_from(&new.plan);
                row.currency.clone_from(&new.currency);
                row.mrr_delta += delta;
            } else {
                let change = self
                    .created_changes
                    .entry(subscription_id.to_owned())
                    .or_insert((None, None, 0));
                change.0.clone_from(&new.plan);
                change.1.clone_from(&new.currency);
                change.2 += delta;
            }
            return;
        }
        let kind = if !history.has_rows {
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
            if history.paid_before() {
                "reactivated"
            } else {
                "updated"
            }
        } else {
            "updated"
        };
        if kind == "created" {
            history.created_delta = Some(delta);
        } else if delta > 0 {
            history.other_raises += 1;
        }
        history.has_rows = true;
        self.rows.push(Row {
            id: event.global_position,
            member_id: new.member_id,
            subscription_id: subscription_id.to_owned(),
            kind,
            from_plan: old_plan,
            to_plan: new.plan.clone(),
            currency: new.currency.clone(),
            mrr_delta: delta,
            created_at: observed_at(&observed, event),
        });
    }

    async fn store(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let states: Vec<(&String, &PaidState)> = self
            .changed_states
            .iter()
            .filter_map(|id| self.states.get(id).map(|s| (id, s)))
            .collect();
        save(conn, &states).await?;
        if !self.rows.is_empty() {
            sqlx::query(
                "INSERT INTO members_paid_subscription_events
                     (id, member_id, subscription_id, type, from_plan, to_plan, currency,
                      mrr_delta, created_at)
                 SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[],
                                      $5::text[], $6::text[], $7::text[], $8::bigint[],
                                      $9::timestamptz[])
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(crate::column!(self.rows, id))
            .bind(crate::column!(self.rows, member_id))
            .bind(crate::column!(self.rows, subscription_id))
            .bind(crate::column!(self.rows, kind))
            .bind(crate::column!(self.rows, from_plan))
            .bind(crate::column!(self.rows, to_plan))
            .bind(crate::column!(self.rows, currency))
            .bind(crate::column!(self.rows, mrr_delta))
            .bind(crate::column!(self.rows, created_at))
            .execute(&mut *conn)
            .await?;
        }
        if !self.created_changes.is_empty() {
            let mut ids = Vec::new();
            let mut plans = Vec::new();
            let mut currencies = Vec::new();
            let mut deltas = Vec::new();
            for (id, (plan, currency, delta)) in self.created_changes {
                ids.push(id);
                plans.push(plan);
                currencies.push(currency);
                deltas.push(delta);
            }
            sqlx::query(
                "UPDATE members_paid_subscription_events e
                 SET to_plan = c.plan, currency = c.currency, mrr_delta = e.mrr_delta + c.delta
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
                     AS c(subscription_id, plan, currency, delta)
                 WHERE e.subscription_id = c.subscription_id AND e.type = 'created'",
            )
            .bind(ids)
            .bind(plans)
            .bind(currencies)
            .bind(deltas)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

type StateRow = (
    String,
    Uuid,
    String,
    bool,
    Json<Vec<SubscriptionItem>>,
    i64,
    Option<String>,
    Option<String>,
    String,
    Json<Vec<Discount>>,
);

/// The states of these subscriptions (`position`: the batch's first event, named if a stored
/// status cannot be read back).
async fn load(
    conn: &mut PgConnection,
    position: i64,
    ids: &[String],
) -> Result<HashMap<String, PaidState>, ProjectionError> {
    let rows: Vec<StateRow> = sqlx::query_as(
        "SELECT subscription_id, member_id, status, cancel_at_period_end, items, mrr, plan,
                currency, created_event_id, discounts
         FROM paid_subscription_state WHERE subscription_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut states = HashMap::with_capacity(rows.len());
    for (
        subscription_id,
        member_id,
        status,
        cancel_at_period_end,
        Json(items),
        mrr,
        plan,
        currency,
        created_event_id,
        Json(discounts),
    ) in rows
    {
        let status =
            serde_json::from_value(serde_json::Value::String(status)).map_err(|source| {
                ProjectionError::Decode {
                    position,
                    event_type: "paid_subscription_state.status".to_owned(),
                    source,
                }
            })?;
        states.insert(
            subscription_id,
            PaidState {
                member_id,
                status,
                cancel_at_period_end,
                items,
                mrr,
                plan,
                currency,
                created_event_id,
                discounts,
            },
        );
    }
    Ok(states)
}

/// What the rows of these subscriptions say (see [`History`]).
async fn histories(
    conn: &mut PgConnection,
    ids: &[String],
) -> Result<HashMap<String, History>, ProjectionError> {
    let rows: Vec<(String, Option<i64>, i64)> = sqlx::query_as(
        "SELECT subscription_id,
                max(mrr_delta) FILTER (WHERE type = 'created'),
                count(*) FILTER (WHERE type <> 'created' AND mrr_delta > 0)
         FROM members_paid_subscription_events WHERE subscription_id = ANY($1)
         GROUP BY subscription_id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, created_delta, other_raises)| {
            let history = History {
                has_rows: true,
                created_delta,
                other_raises,
            };
            (id, history)
        })
        .collect())
}

async fn save(
    conn: &mut PgConnection,
    states: &[(&String, &PaidState)],
) -> Result<(), ProjectionError> {
    if states.is_empty() {
        return Ok(());
    }
    macro_rules! column {
        ($state:ident => $value:expr) => {
            states.iter().map(|(_, $state)| $value).collect::<Vec<_>>()
        };
    }
    let ids: Vec<&String> = states.iter().map(|(id, _)| *id).collect();
    // The items as JSON text per row: Postgres has no arrays of differently sized arrays.
    let items: Vec<String> = states
        .iter()
        .map(|(_, s)| serde_json::to_string(&s.items))
        .collect::<Result<_, _>>()
        .map_err(|source| ProjectionError::Decode {
            position: 0,
            event_type: "paid_subscription_state.items".to_owned(),
            source,
        })?;
    let discounts: Vec<String> = states
        .iter()
        .map(|(_, s)| serde_json::to_string(&s.discounts))
        .collect::<Result<_, _>>()
        .map_err(|source| ProjectionError::Decode {
            position: 0,
            event_type: "paid_subscription_state.discounts".to_owned(),
            source,
        })?;
    sqlx::query(
        "INSERT INTO paid_subscription_state
             (subscription_id, member_id, status, cancel_at_period_end, items, mrr, plan, currency,
              created_event_id, discounts)
         SELECT id, member_id, status, cancel_at_period_end, items::jsonb, mrr, plan, currency,
                created_event_id, discounts::jsonb
         FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bool[], $5::text[], $6::bigint[],
                     $7::text[], $8::text[], $9::text[], $10::text[])
             AS s(id, member_id, status, cancel_at_period_end, items, mrr, plan, currency,
                  created_event_id, discounts)
         ON CONFLICT (subscription_id) DO UPDATE
         SET status = EXCLUDED.status, cancel_at_period_end = EXCLUDED.cancel_at_period_end,
             items = EXCLUDED.items, mrr = EXCLUDED.mrr, plan = EXCLUDED.plan,
             currency = EXCLUDED.currency, discounts = EXCLUDED.discounts",
    )
    .bind(ids)
    .bind(column!(s => s.member_id))
    .bind(column!(s => s.status.as_str()))
    .bind(column!(s => s.cancel_at_period_end))
    .bind(items)
    .bind(column!(s => s.mrr))
    .bind(column!(s => s.plan.clone()))
    .bind(column!(s => s.currency.clone()))
    .bind(column!(s => s.created_event_id.clone()))
    .bind(discounts)
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
            discounts: Vec::new(),
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
