//! `member_subscriptions`: each subscription (`subscriptions`) and its items
//! (`subscription_items`) as Stripe last showed them, with the subscription's current MRR,
//! recomputed from its active items and the discounts in force (`discounts`) with
//! [`aggregates::mrr::discounted_mrr`].
//!
//! Times of Stripe-derived changes (`added_at`, `removed_at`, `updated_at`) are the Stripe
//! event's `created` (`observed.created`), falling back to the time the event was recorded if
//! that is out of range; `created_at`, `canceled_at`, `cancel_at` and the period are Stripe's
//! own. Payments are not shown here (see `members_payment_events`), so a payment recorded
//! before its subscription's `SubscriptionCreated` is ignored, as are changes of a subscription
//! not created yet.
//!
//! A batch is applied set-based: one statement reads the rows its events touch (subscriptions,
//! items, pending sites, license purchases), the events are folded into them in memory, in
//! order, and each table's changed rows are written back with one multi-row upsert. A status
//! change is thus one read and one write, whatever the batch's size. Here: the projection and
//! the rows; `load.rs` reads and writes them, `fold.rs` applies the events.

use std::collections::{BTreeSet, HashMap};

use aggregates::cqrs_es::Aggregate;
use aggregates::{Discount, StripeObservation, Subscription, SubscriptionEvent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Handles, Mode, Projection, ProjectionError, StoredEvent};

mod fold;
mod load;

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
        // 4: `subscriptions.past_due_since` (20261206000050).
        4
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
        let mut rows = Rows::load(conn, &decoded).await?;
        for (event, change) in decoded {
            rows.fold(event, change)?;
        }
        rows.store(conn).await
    }
}

/// A row of `subscriptions`.
#[derive(Debug, Clone, Deserialize)]
struct SubscriptionRow {
    id: String,
    member_id: Uuid,
    customer_id: String,
    status: String,
    cancel_at_period_end: bool,
    cancel_at: Option<DateTime<Utc>>,
    current_period_start: Option<DateTime<Utc>>,
    current_period_end: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    canceled_at: Option<DateTime<Utc>>,
    mrr: i64,
    currency: Option<String>,
    updated_at: DateTime<Utc>,
    /// Since when it is past due (a failed payment): a license policy's grace period starts
    /// here. `None` in any other status.
    #[serde(default)]
    past_due_since: Option<DateTime<Utc>>,
    /// The discounts in force (`SubscriptionDiscountChanged`).
    #[serde(default)]
    discounts: Vec<Discount>,
}

/// A row of `subscription_items`.
#[derive(Debug, Clone, Deserialize)]
struct ItemRow {
    id: String,
    subscription_id: String,
    price_id: String,
    product_id: Option<String>,
    unit_amount: i64,
    currency: String,
    interval: String,
    interval_count: i32,
    quantity: i32,
    site: Option<String>,
    purchase_type: String,
    status: String,
    added_at: DateTime<Utc>,
    removed_at: Option<DateTime<Utc>>,
}

/// A row of `pending_sites`.
#[derive(Debug, Clone, Deserialize)]
struct SiteRow {
    session_id: String,
    site: String,
    subscription_id: String,
    member_id: Uuid,
    amount: i64,
    currency: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A row of `license_purchases`.
#[derive(Debug, Clone, Deserialize)]
struct PurchaseRow {
    purchase_id: Uuid,
    session_id: String,
    subscription_id: String,
    member_id: Uuid,
    quantity: i32,
    amount: i64,
    currency: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The rows a batch touches, as one statement reads them.
#[derive(Debug, Default, Deserialize)]
struct Loaded {
    subscriptions: Vec<SubscriptionRow>,
    items: Vec<ItemRow>,
    sites: Vec<SiteRow>,
    purchases: Vec<PurchaseRow>,
}

/// The rows of a batch in memory, and which of them changed.
#[derive(Debug, Default)]
struct Rows {
    subscriptions: HashMap<String, SubscriptionRow>,
    items: HashMap<String, ItemRow>,
    sites: HashMap<(String, String), SiteRow>,
    purchases: HashMap<Uuid, PurchaseRow>,
    changed_subscriptions: BTreeSet<String>,
    changed_items: BTreeSet<String>,
    changed_sites: BTreeSet<(String, String)>,
    changed_purchases: BTreeSet<Uuid>,
}
