//! `tiers`: each tier as the admin API and the pricing page show it, and `tier_prices`: every
//! Stripe price a tier has had, with its cadence, so a subscription's price names its tier.
//! Inline: a tier write is answered from it, and checkout resolves a tier's price from it.

use std::collections::HashMap;

use aggregates::{TierEvent, TierPrice, TierProfile};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{member_id, Handles, Mode, Projection, ProjectionError, StoredEvent};

pub struct Tiers;

/// What a batch does to one tier: its new row, or the fields it changes.
#[derive(Default)]
struct Change {
    created: Option<(String, String, DateTime<Utc>)>,
    profile: Option<TierProfile>,
    prices: Option<(TierPrice, TierPrice)>,
    archived: Option<bool>,
    updated_at: Option<DateTime<Utc>>,
}

#[async_trait]
impl Projection for Tiers {
    fn name(&self) -> &'static str {
        "tiers"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["tiers", "tier_prices"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::all("Tier")];
        HANDLES
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    /// Folds the batch per tier, then writes the new tiers with one `INSERT` and the changed
    /// ones with one `UPDATE`.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut changes: HashMap<Uuid, Change> = HashMap::new();
        let mut order = Vec::new();
        // (price, tier, cadence) of every price the batch gives a tier.
        let mut prices: Vec<(String, Uuid, &'static str)> = Vec::new();
        for event in events {
            let id = member_id(event)?;
            let change = changes.entry(id).or_insert_with(|| {
                order.push(id);
                Change::default()
            });
            match event.decode::<TierEvent>()? {
                TierEvent::TierCreated {
                    profile,
                    currency,
                    stripe_product_id,
                    monthly,
                    yearly,
                    created_at,
                    ..
                } => {
                    prices.push((monthly.stripe_price_id.clone(), id, "month"));
                    prices.push((yearly.stripe_price_id.clone(), id, "year"));
                    change.created = Some((currency, stripe_product_id, created_at));
                    change.profile = Some(profile);
                    change.prices = Some((monthly, yearly));
                    change.archived = Some(false);
                    change.updated_at = Some(created_at);
                }
                TierEvent::TierUpdated {
                    profile,
                    updated_at,
                } => {
                    change.profile = Some(profile);
                    change.updated_at = Some(updated_at);
                }
                TierEvent::TierRepriced {
                    monthly,
                    yearly,
                    repriced_at,
                } => {
                    prices.push((monthly.stripe_price_id.clone(), id, "month"));
                    prices.push((yearly.stripe_price_id.clone(), id, "year"));
                    change.prices = Some((monthly, yearly));
                    change.updated_at = Some(repriced_at);
                }
                TierEvent::TierArchived { archived_at } => {
                    change.archived = Some(true);
                    change.updated_at = Some(archived_at);
                }
                TierEvent::TierUnarchived { unarchived_at } => {
                    change.archived = Some(false);
                    change.updated_at = Some(unarchived_at);
                }
            }
        }
        let (created, changed): (Vec<Uuid>, Vec<Uuid>) = order
            .into_iter()
            .partition(|id| changes[id].created.is_some());
        if !created.is_empty() {
            Columns::of(&created, &changes).bind(sqlx::query(
                "INSERT INTO tiers (id, name, description, benefits, visibility, monthly_amount,
                     monthly_price_id, yearly_amount, yearly_price_id, archived, updated_at,
                     currency, stripe_product_id, created_at)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[],
                     $6::bigint[], $7::text[], $8::bigint[], $9::text[], $10::boolean[],
                     $11::timestamptz[], $12::text[], $13::text[], $14::timestamptz[])
                 ON CONFLICT (id) DO NOTHING",
            ))
            .bind(
                created
                    .iter()
                    .map(|id| changes[id].created.as_ref().map(|c| c.0.clone()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                created
                    .iter()
                    .map(|id| changes[id].created.as_ref().map(|c| c.1.clone()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                created
                    .iter()
                    .map(|id| changes[id].created.as_ref().map(|c| c.2))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await?;
        }
        if !changed.is_empty() {
            // A NULL in a column leaves the field as it is (the batch did not change it).
            Columns::of(&changed, &changes).bind(sqlx::query(
                "UPDATE tiers t SET
                     name = coalesce(c.name, t.name),
                     description = CASE WHEN c.has_profile THEN c.description ELSE t.description END,
                     benefits = coalesce(c.benefits, t.benefits),
                     visibility = coalesce(c.visibility, t.visibility),
                     monthly_amount = coalesce(c.monthly_amount, t.monthly_amount),
                     monthly_price_id = coalesce(c.monthly_price_id, t.monthly_price_id),
                     yearly_amount = coalesce(c.yearly_amount, t.yearly_amount),
                     yearly_price_id = coalesce(c.yearly_price_id, t.yearly_price_id),
                     archived = coalesce(c.archived, t.archived),
                     updated_at = coalesce(c.updated_at, t.updated_at)
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[],
                     $6::bigint[], $7::text[], $8::bigint[], $9::text[], $10::boolean[],
                     $11::timestamptz[], $12::boolean[])
                     AS c(id, name, description, benefits, visibility, monthly_amount,
                          monthly_price_id, yearly_amount, yearly_price_id, archived, updated_at,
                          has_profile)
                 WHERE t.id = c.id",
            ))
            .bind(changed.iter().map(|id| changes[id].profile.is_some()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !prices.is_empty() {
            sqlx::query(
                "INSERT INTO tier_prices (price_id, tier_id, cadence)
                 SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[])
                 ON CONFLICT (price_id) DO NOTHING",
            )
            .bind(prices.iter().map(|p| p.0.clone()).collect::<Vec<_>>())
            .bind(prices.iter().map(|p| p.1).collect::<Vec<_>>())
            .bind(prices.iter().map(|p| p.2).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// The changed fields of some tiers, a column each (NULL where unchanged).
struct Columns {
    ids: Vec<Uuid>,
    names: Vec<Option<String>>,
    descriptions: Vec<Option<String>>,
    benefits: Vec<Option<serde_json::Value>>,
    visibilities: Vec<Option<&'static str>>,
    monthly_amounts: Vec<Option<i64>>,
    monthly_ids: Vec<Option<String>>,
    yearly_amounts: Vec<Option<i64>>,
    yearly_ids: Vec<Option<String>>,
    archived: Vec<Option<bool>>,
    updated_at: Vec<Option<DateTime<Utc>>>,
}

impl Columns {
    /// Binds the columns, in this order, as `$1` to `$11`.
    fn bind(
        self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(self.ids)
            .bind(self.names)
            .bind(self.descriptions)
            .bind(self.benefits)
            .bind(self.visibilities)
            .bind(self.monthly_amounts)
            .bind(self.monthly_ids)
            .bind(self.yearly_amounts)
            .bind(self.yearly_ids)
            .bind(self.archived)
            .bind(self.updated_at)
    }

    fn of(ids: &[Uuid], changes: &HashMap<Uuid, Change>) -> Self {
        let get = |id: &Uuid| &changes[id];
        let profile = |id: &Uuid| get(id).profile.as_ref();
        let prices = |id: &Uuid| get(id).prices.as_ref();
        Self {
            ids: ids.to_vec(),
            names: ids
                .iter()
                .map(|id| profile(id).map(|p| p.name.clone()))
                .collect(),
            descriptions: ids
                .iter()
                .map(|id| profile(id).and_then(|p| p.description.clone()))
                .collect(),
            benefits: ids
                .iter()
                .map(|id| profile(id).map(|p| serde_json::json!(p.benefits)))
                .collect(),
            visibilities: ids
                .iter()
                .map(|id| profile(id).map(|p| p.visibility.as_str()))
                .collect(),
            monthly_amounts: ids
                .iter()
                .map(|id| prices(id).map(|p| p.0.amount))
                .collect(),
            monthly_ids: ids
                .iter()
                .map(|id| prices(id).map(|p| p.0.stripe_price_id.clone()))
                .collect(),
            yearly_amounts: ids
                .iter()
                .map(|id| prices(id).map(|p| p.1.amount))
                .collect(),
            yearly_ids: ids
                .iter()
                .map(|id| prices(id).map(|p| p.1.stripe_price_id.clone()))
                .collect(),
            archived: ids.iter().map(|id| get(id).archived).collect(),
            updated_at: ids.iter().map(|id| get(id).updated_at).collect(),
        }
    }
}
