//! Reading the rows a batch touches in one statement, and writing back the changed ones.

use std::collections::BTreeSet;

use aggregates::SubscriptionEvent;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::*;

impl Rows {
    /// Reads, in one statement, every row the events can touch: their subscriptions and those
    /// subscriptions' items, items they name, and the pending sites and license purchases of
    /// the sessions and purchases they name.
    pub(super) async fn load(
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
    pub(super) fn subscription(&mut self, id: &str) -> Option<&mut SubscriptionRow> {
        let row = self.subscriptions.get_mut(id)?;
        self.changed_subscriptions.insert(id.to_owned());
        Some(row)
    }

    /// Moves `updated_at` forward; returns whether the subscription exists.
    pub(super) fn touch(&mut self, id: &str, at: DateTime<Utc>) -> bool {
        match self.subscription(id) {
            Some(row) => {
                row.updated_at = row.updated_at.max(at);
                true
            }
            None => false,
        }
    }

    /// The subscription's item `item_id`, to change, if it exists.
    pub(super) fn item(&mut self, subscription_id: &str, item_id: &str) -> Option<&mut ItemRow> {
        let row = self
            .items
            .get_mut(item_id)
            .filter(|row| row.subscription_id == subscription_id)?;
        self.changed_items.insert(item_id.to_owned());
        Some(row)
    }

    /// Writes each table's changed rows with one statement.
    pub(super) async fn store(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
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
