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
//! change is thus one read and one write, whatever the batch's size.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};

use aggregates::cqrs_es::Aggregate;
use aggregates::mrr::discounted_mrr;
use aggregates::{
    Discount, Price, StripeObservation, Subscription, SubscriptionEvent, SubscriptionItem,
    SubscriptionStatus,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

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

impl Rows {
    /// Reads, in one statement, every row the events can touch: their subscriptions and those
    /// subscriptions' items, items they name, and the pending sites and license purchases of
    /// the sessions and purchases they name.
    async fn load(
        conn: &mut PgConnection,
        events: &[(&StoredEvent, SubscriptionEvent)],
    ) -> Result<Self, ProjectionError> {
        let mut subscriptions = BTreeSet::new();
        let mut items = BTreeSet::new();
        let mut sessions = BTreeSet::new();
        let mut purchases = BTreeSet::new();
        for (event, change) in events {
            subscriptions.insert(event.aggregate_id.clone());
            match change {
                SubscriptionEvent::SubscriptionItemAdded { item, .. } => {
                    items.insert(item.item_id.clone());
                }
                SubscriptionEvent::SitePurchaseStarted { session_id, .. }
                | SubscriptionEvent::SitePurchaseCompleted { session_id, .. }
                | SubscriptionEvent::SitePurchaseExpired { session_id, .. } => {
                    sessions.insert(session_id.clone());
                }
                SubscriptionEvent::LicensePurchaseStarted { purchase_id, .. }
                | SubscriptionEvent::LicensePurchaseCompleted { purchase_id, .. }
                | SubscriptionEvent::LicensePurchaseExpired { purchase_id, .. } => {
                    purchases.insert(*purchase_id);
                }
                _ => {}
            }
        }
        let subscriptions: Vec<String> = subscriptions.into_iter().collect();
        let items: Vec<String> = items.into_iter().collect();
        let sessions: Vec<String> = sessions.into_iter().collect();
        let purchases: Vec<Uuid> = purchases.into_iter().collect();
        let sqlx::types::Json(loaded): sqlx::types::Json<Loaded> = sqlx::query_scalar(
            "SELECT json_build_object(
                 'subscriptions', (SELECT coalesce(json_agg(s), '[]') FROM subscriptions s
                                   WHERE s.id = ANY($1)),
                 'items', (SELECT coalesce(json_agg(i), '[]') FROM subscription_items i
                           WHERE i.subscription_id = ANY($1) OR i.id = ANY($2)),
                 'sites', (SELECT coalesce(json_agg(p), '[]') FROM pending_sites p
                           WHERE p.session_id = ANY($3)),
                 'purchases', (SELECT coalesce(json_agg(l), '[]') FROM license_purchases l
                               WHERE l.purchase_id = ANY($4)))",
        )
        .bind(&subscriptions)
        .bind(&items)
        .bind(&sessions)
        .bind(&purchases)
        .fetch_one(&mut *conn)
        .await?;
        Ok(Self {
            subscriptions: loaded
                .subscriptions
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect(),
            items: loaded
                .items
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect(),
            sites: loaded
                .sites
                .into_iter()
                .map(|r| ((r.session_id.clone(), r.site.clone()), r))
                .collect(),
            purchases: loaded
                .purchases
                .into_iter()
                .map(|r| (r.purchase_id, r))
                .collect(),
            ..Self::default()
        })
    }

    /// The subscription's row, to change, if it exists.
    fn subscription(&mut self, id: &str) -> Option<&mut SubscriptionRow> {
        let row = self.subscriptions.get_mut(id)?;
        self.changed_subscriptions.insert(id.to_owned());
        Some(row)
    }

    /// Moves `updated_at` forward; returns whether the subscription exists.
    fn touch(&mut self, id: &str, at: DateTime<Utc>) -> bool {
        match self.subscription(id) {
            Some(row) => {
                row.updated_at = row.updated_at.max(at);
                true
            }
            None => false,
        }
    }

    /// The subscription's item `item_id`, to change, if it exists.
    fn item(&mut self, subscription_id: &str, item_id: &str) -> Option<&mut ItemRow> {
        let row = self
            .items
            .get_mut(item_id)
            .filter(|row| row.subscription_id == subscription_id)?;
        self.changed_items.insert(item_id.to_owned());
        Some(row)
    }

    /// Applies one event to the rows, as the statements of one event at a time did.
    fn fold(
        &mut self,
        event: &StoredEvent,
        change: SubscriptionEvent,
    ) -> Result<(), ProjectionError> {
        let id = event.aggregate_id.as_str();
        match change {
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
                if !self.subscriptions.contains_key(id) {
                    self.subscriptions.insert(
                        id.to_owned(),
                        SubscriptionRow {
                            id: id.to_owned(),
                            member_id,
                            customer_id,
                            status: status.as_str().to_owned(),
                            cancel_at_period_end,
                            cancel_at: None,
                            current_period_start,
                            current_period_end,
                            created_at: created,
                            canceled_at: None,
                            mrr: 0,
                            currency: None,
                            updated_at: observed_at(&observed, event),
                            past_due_since: (status == SubscriptionStatus::PastDue)
                                .then(|| observed_at(&observed, event)),
                            discounts: Vec::new(),
                        },
                    );
                    self.changed_subscriptions.insert(id.to_owned());
                }
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionActivated { status, observed }
            | SubscriptionEvent::SubscriptionStatusChanged {
                to: status,
                observed,
                ..
            } => {
                if let Some(row) = self.subscription(id) {
                    row.status = status.as_str().to_owned();
                    row.updated_at = row.updated_at.max(observed_at(&observed, event));
                    row.past_due_since = match status {
                        SubscriptionStatus::PastDue => row
                            .past_due_since
                            .or_else(|| Some(observed_at(&observed, event))),
                        _ => None,
                    };
                }
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionCanceled {
                canceled_at,
                observed,
            } => {
                if let Some(row) = self.subscription(id) {
                    row.status = SubscriptionStatus::Canceled.as_str().to_owned();
                    row.canceled_at = Some(canceled_at);
                    row.past_due_since = None;
                    row.updated_at = row.updated_at.max(observed_at(&observed, event));
                }
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionPeriodChanged {
                current_period_start,
                current_period_end,
                observed,
            } => {
                if let Some(row) = self.subscription(id) {
                    row.current_period_start = current_period_start;
                    row.current_period_end = current_period_end;
                    row.updated_at = row.updated_at.max(observed_at(&observed, event));
                }
            }
            SubscriptionEvent::SubscriptionCancellationScheduled {
                cancel_at,
                observed,
            } => {
                if let Some(row) = self.subscription(id) {
                    row.cancel_at_period_end = true;
                    row.cancel_at = cancel_at;
                    row.updated_at = row.updated_at.max(observed_at(&observed, event));
                }
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionCancellationUnscheduled { observed } => {
                if let Some(row) = self.subscription(id) {
                    row.cancel_at_period_end = false;
                    row.cancel_at = None;
                    row.updated_at = row.updated_at.max(observed_at(&observed, event));
                }
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionItemAdded { item, observed } => {
                let at = observed_at(&observed, event);
                if !self.touch(id, at) {
                    return Ok(());
                }
                let fields = ItemRow {
                    id: item.item_id.clone(),
                    subscription_id: id.to_owned(),
                    price_id: item.price.price_id,
                    product_id: item.price.product_id,
                    unit_amount: item.price.unit_amount,
                    currency: item.price.currency,
                    interval: item.price.interval.as_str().to_owned(),
                    interval_count: to_i32(item.price.interval_count),
                    quantity: to_i32(item.quantity),
                    site: item.site,
                    purchase_type: item.purchase_type.as_str().to_owned(),
                    status: "active".to_owned(),
                    added_at: at,
                    removed_at: None,
                };
                // An item added again keeps its subscription and when it was first added.
                let row = match self.items.remove(&item.item_id) {
                    Some(old) => ItemRow {
                        subscription_id: old.subscription_id,
                        added_at: old.added_at,
                        ..fields
                    },
                    None => fields,
                };
                self.changed_items.insert(row.id.clone());
                self.items.insert(row.id.clone(), row);
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionItemRemoved {
                item_id, observed, ..
            } => {
                let at = observed_at(&observed, event);
                if let Some(row) = self.item(id, &item_id).filter(|r| r.status == "active") {
                    row.status = "removed".to_owned();
                    row.removed_at = Some(at);
                }
                self.touch(id, at);
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionItemQuantityChanged {
                item_id,
                to,
                observed,
                ..
            } => {
                if let Some(row) = self.item(id, &item_id) {
                    row.quantity = to_i32(to);
                }
                self.touch(id, observed_at(&observed, event));
                self.refresh_mrr(event, id)?;
            }
            SubscriptionEvent::SubscriptionItemSiteAssigned { item_id, site, .. } => {
                if let Some(row) = self.item(id, &item_id) {
                    row.site = Some(site);
                    row.purchase_type = "site".to_owned();
                }
            }
            SubscriptionEvent::SubscriptionPlanChanged {
                item_id,
                to,
                observed,
                ..
            } => {
                if let Some(row) = self.item(id, &item_id) {
                    row.price_id = to.price_id;
                    row.product_id = to.product_id;
                    row.unit_amount = to.unit_amount;
                    row.currency = to.currency;
                    row.interval = to.interval.as_str().to_owned();
                    row.interval_count = to_i32(to.interval_count);
                }
                self.touch(id, observed_at(&observed, event));
                self.refresh_mrr(event, id)?;
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
                    let key = (session_id.clone(), site.clone());
                    if self.sites.contains_key(&key) {
                        continue;
                    }
                    self.sites.insert(
                        key.clone(),
                        SiteRow {
                            session_id: session_id.clone(),
                            site,
                            subscription_id: id.to_owned(),
                            member_id,
                            amount,
                            currency: currency.clone(),
                            status: "pending".to_owned(),
                            created_at: started_at,
                            updated_at: started_at,
                        },
                    );
                    self.changed_sites.insert(key);
                }
            }
            SubscriptionEvent::SitePurchaseCompleted {
                session_id,
                completed_at: at,
            } => self.set_sites(&session_id, "paid", at),
            SubscriptionEvent::SitePurchaseExpired {
                session_id,
                expired_at: at,
            } => self.set_sites(&session_id, "expired", at),
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
                if let Entry::Vacant(vacant) = self.purchases.entry(purchase_id) {
                    vacant.insert(PurchaseRow {
                        purchase_id,
                        session_id,
                        subscription_id: id.to_owned(),
                        member_id,
                        quantity: to_i32(quantity),
                        amount,
                        currency,
                        status: "pending".to_owned(),
                        created_at: started_at,
                        updated_at: started_at,
                    });
                    self.changed_purchases.insert(purchase_id);
                }
            }
            SubscriptionEvent::LicensePurchaseCompleted {
                purchase_id,
                completed_at: at,
                ..
            } => self.set_purchase(purchase_id, "paid", at),
            SubscriptionEvent::LicensePurchaseExpired {
                purchase_id,
                expired_at: at,
                ..
            } => self.set_purchase(purchase_id, "expired", at),
            SubscriptionEvent::SubscriptionDiscountChanged { to, observed, .. } => {
                if let Some(row) = self.subscription(id) {
                    row.discounts = to;
                    row.updated_at = observed_at(&observed, event);
                }
                self.refresh_mrr(event, id)?;
            }
            // Nothing tracked here changed; payments are in `members_payment_events`,
            // redemptions in `offer_redemptions`.
            SubscriptionEvent::SubscriptionStateObserved { .. }
            | SubscriptionEvent::OfferRedeemed { .. }
            | SubscriptionEvent::PaymentRecorded { .. }
            | SubscriptionEvent::PaymentFailed { .. }
            | SubscriptionEvent::PaymentRefunded { .. } => {}
        }
        Ok(())
    }

    fn set_sites(&mut self, session_id: &str, status: &str, at: DateTime<Utc>) {
        for (key, row) in self.sites.iter_mut().filter(|(k, _)| k.0 == session_id) {
            row.status = status.to_owned();
            row.updated_at = at;
            self.changed_sites.insert(key.clone());
        }
    }

    fn set_purchase(&mut self, purchase_id: Uuid, status: &str, at: DateTime<Utc>) {
        if let Some(row) = self.purchases.get_mut(&purchase_id) {
            row.status = status.to_owned();
            row.updated_at = at;
            self.changed_purchases.insert(purchase_id);
        }
    }

    /// Recomputes the subscription's MRR and currency from its status and active items.
    fn refresh_mrr(&mut self, event: &StoredEvent, id: &str) -> Result<(), ProjectionError> {
        let Some(subscription) = self.subscriptions.get(id) else {
            return Ok(());
        };
        let status: SubscriptionStatus = parse_name(&subscription.status, event)?;
        let cancel_at_period_end = subscription.cancel_at_period_end;
        let mut active: Vec<&ItemRow> = self
            .items
            .values()
            .filter(|i| i.subscription_id == id && i.status == "active")
            .collect();
        active.sort_by(|a, b| a.id.cmp(&b.id));
        let mut items = Vec::with_capacity(active.len());
        for row in active {
            items.push(SubscriptionItem {
                item_id: row.id.clone(),
                price: Price {
                    price_id: row.price_id.clone(),
                    product_id: row.product_id.clone(),
                    unit_amount: row.unit_amount,
                    currency: row.currency.clone(),
                    interval: parse_name(&row.interval, event)?,
                    interval_count: to_u32(row.interval_count),
                },
                quantity: to_u32(row.quantity),
                site: row.site.clone(),
                purchase_type: parse_name(&row.purchase_type, event)?,
                license_purchase_id: None,
            });
        }
        let mrr = discounted_mrr(
            status,
            cancel_at_period_end,
            &items,
            &subscription.discounts,
        );
        let currency = items.first().map(|item| item.price.currency.clone());
        if let Some(row) = self.subscription(id) {
            row.mrr = mrr;
            if currency.is_some() {
                row.currency = currency;
            }
        }
        Ok(())
    }

    /// Writes each table's changed rows with one statement.
    async fn store(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let subscriptions: Vec<&SubscriptionRow> = self
            .changed_subscriptions
            .iter()
            .filter_map(|id| self.subscriptions.get(id))
            .collect();
        if !subscriptions.is_empty() {
            let rows = &subscriptions;
            sqlx::query(
                "INSERT INTO subscriptions
                     (id, member_id, customer_id, status, cancel_at_period_end, cancel_at,
                      current_period_start, current_period_end, created_at, canceled_at, mrr,
                      currency, updated_at, past_due_since, discounts)
                 SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::bool[],
                                      $6::timestamptz[], $7::timestamptz[], $8::timestamptz[],
                                      $9::timestamptz[], $10::timestamptz[], $11::bigint[],
                                      $12::text[], $13::timestamptz[], $14::timestamptz[],
                                      $15::jsonb[])
                 ON CONFLICT (id) DO UPDATE
                 SET status = EXCLUDED.status,
                     cancel_at_period_end = EXCLUDED.cancel_at_period_end,
                     cancel_at = EXCLUDED.cancel_at,
                     current_period_start = EXCLUDED.current_period_start,
                     current_period_end = EXCLUDED.current_period_end,
                     canceled_at = EXCLUDED.canceled_at, mrr = EXCLUDED.mrr,
                     currency = EXCLUDED.currency, updated_at = EXCLUDED.updated_at,
                     past_due_since = EXCLUDED.past_due_since,
                     discounts = EXCLUDED.discounts",
            )
            .bind(crate::column!(rows, id))
            .bind(crate::column!(rows, member_id))
            .bind(crate::column!(rows, customer_id))
            .bind(crate::column!(rows, status))
            .bind(crate::column!(rows, cancel_at_period_end))
            .bind(crate::column!(rows, cancel_at))
            .bind(crate::column!(rows, current_period_start))
            .bind(crate::column!(rows, current_period_end))
            .bind(crate::column!(rows, created_at))
            .bind(crate::column!(rows, canceled_at))
            .bind(crate::column!(rows, mrr))
            .bind(crate::column!(rows, currency))
            .bind(crate::column!(rows, updated_at))
            .bind(crate::column!(rows, past_due_since))
            .bind(
                rows.iter()
                    .map(|r| sqlx::types::Json(r.discounts.clone()))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await?;
        }
        let items: Vec<&ItemRow> = self
            .changed_items
            .iter()
            .filter_map(|id| self.items.get(id))
            .collect();
        if !items.is_empty() {
            let rows = &items;
            sqlx::query(
                "INSERT INTO subscription_items
                     (id, subscription_id, price_id, product_id, unit_amount, currency, interval,
                      interval_count, quantity, site, purchase_type, status, added_at, removed_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                      $5::bigint[], $6::text[], $7::text[], $8::int[], $9::int[],
                                      $10::text[], $11::text[], $12::text[], $13::timestamptz[],
                                      $14::timestamptz[])
                 ON CONFLICT (id) DO UPDATE
                 SET price_id = EXCLUDED.price_id, product_id = EXCLUDED.product_id,
                     unit_amount = EXCLUDED.unit_amount, currency = EXCLUDED.currency,
                     interval = EXCLUDED.interval, interval_count = EXCLUDED.interval_count,
                     quantity = EXCLUDED.quantity, site = EXCLUDED.site,
                     purchase_type = EXCLUDED.purchase_type, status = EXCLUDED.status,
                     removed_at = EXCLUDED.removed_at",
            )
            .bind(crate::column!(rows, id))
            .bind(crate::column!(rows, subscription_id))
            .bind(crate::column!(rows, price_id))
            .bind(crate::column!(rows, product_id))
            .bind(crate::column!(rows, unit_amount))
            .bind(crate::column!(rows, currency))
            .bind(crate::column!(rows, interval))
            .bind(crate::column!(rows, interval_count))
            .bind(crate::column!(rows, quantity))
            .bind(crate::column!(rows, site))
            .bind(crate::column!(rows, purchase_type))
            .bind(crate::column!(rows, status))
            .bind(crate::column!(rows, added_at))
            .bind(crate::column!(rows, removed_at))
            .execute(&mut *conn)
            .await?;
        }
        let sites: Vec<&SiteRow> = self
            .changed_sites
            .iter()
            .filter_map(|key| self.sites.get(key))
            .collect();
        if !sites.is_empty() {
            let rows = &sites;
            sqlx::query(
                "INSERT INTO pending_sites
                     (session_id, site, subscription_id, member_id, amount, currency, status,
                      created_at, updated_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[],
                                      $5::bigint[], $6::text[], $7::text[], $8::timestamptz[],
                                      $9::timestamptz[])
                 ON CONFLICT (session_id, site) DO UPDATE
                 SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at",
            )
            .bind(crate::column!(rows, session_id))
            .bind(crate::column!(rows, site))
            .bind(crate::column!(rows, subscription_id))
            .bind(crate::column!(rows, member_id))
            .bind(crate::column!(rows, amount))
            .bind(crate::column!(rows, currency))
            .bind(crate::column!(rows, status))
            .bind(crate::column!(rows, created_at))
            .bind(crate::column!(rows, updated_at))
            .execute(&mut *conn)
            .await?;
        }
        let purchases: Vec<&PurchaseRow> = self
            .changed_purchases
            .iter()
            .filter_map(|id| self.purchases.get(id))
            .collect();
        if !purchases.is_empty() {
            let rows = &purchases;
            sqlx::query(
                "INSERT INTO license_purchases
                     (purchase_id, session_id, subscription_id, member_id, quantity, amount,
                      currency, status, created_at, updated_at)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::int[],
                                      $6::bigint[], $7::text[], $8::text[], $9::timestamptz[],
                                      $10::timestamptz[])
                 ON CONFLICT (purchase_id) DO UPDATE
                 SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at",
            )
            .bind(crate::column!(rows, purchase_id))
            .bind(crate::column!(rows, session_id))
            .bind(crate::column!(rows, subscription_id))
            .bind(crate::column!(rows, member_id))
            .bind(crate::column!(rows, quantity))
            .bind(crate::column!(rows, amount))
            .bind(crate::column!(rows, currency))
            .bind(crate::column!(rows, status))
            .bind(crate::column!(rows, created_at))
            .bind(crate::column!(rows, updated_at))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
