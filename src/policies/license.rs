//! The license policy: license keys follow subscription items, seats and comps.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aggregates::cqrs_es::Aggregate;
use aggregates::{
    DeactivationReason, License, LicenseCommand, Member, MemberEvent, PurchaseType, Subscription,
    SubscriptionEvent, SubscriptionStatus,
};
use async_trait::async_trait;
use projections::{Handles, Projection, ProjectionError, StoredEvent};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{caused_by, Commands};
use crate::store::CommandBus;

/// Licenses follow subscription items: a site item → one license for that site; a quantity
/// item → one per seat; the item of a license purchase → that purchase's reserved keys, which
/// it activates (one per seat, so seats beyond the purchase get new keys). They are active while
/// the subscription grants licenses (active, trialing, past due) and the item (or seat) exists,
/// issued only once it does (no license without payment), deactivated when the item goes or the subscription is canceled, unpaid or
/// paused, reactivated when it is active again.
///
/// Complimentary access gets the license a paid subscription to its tier's product gets (one
/// seat key, under the product's license policy if it has one): issued with the comp
/// ([`License::id_for_comp`], so a member given the tier again gets the same key back),
/// deactivated (`complimentary_ended`) when the comp ends or moves to another tier.
pub struct LicensePolicy {
    pub pool: PgPool,
    pub licenses: Arc<CommandBus<License>>,
}

#[derive(serde::Deserialize)]
struct PolicyItem {
    item_id: String,
    purchase_type: String,
    site: Option<String>,
    quantity: i32,
    removed: bool,
    license_purchase_id: Option<Uuid>,
    product_id: Option<String>,
}

#[async_trait]
impl Projection for LicensePolicy {
    fn name(&self) -> &'static str {
        "license_policy"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "policy_license_subscriptions",
            "policy_license_items",
            "policy_licenses",
            "policy_license_paid_subscriptions",
            "policy_license_comps",
        ]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[
            Handles::only(
                Subscription::TYPE,
                &[
                    SubscriptionEvent::CREATED,
                    SubscriptionEvent::STATUS_CHANGED,
                    SubscriptionEvent::ITEM_ADDED,
                    SubscriptionEvent::ITEM_REMOVED,
                    SubscriptionEvent::ITEM_SITE_ASSIGNED,
                    SubscriptionEvent::ITEM_QUANTITY_CHANGED,
                    SubscriptionEvent::PAYMENT_RECORDED,
                ],
            ),
            Handles::only(
                Member::TYPE,
                &[MemberEvent::COMP_GRANTED, MemberEvent::COMP_ENDED],
            ),
        ];
        HANDLES
    }

    fn rebuildable(&self) -> bool {
        false
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut commands = Commands::new();
        for event in events {
            self.apply_event(conn, event, &mut commands).await?;
        }
        commands.run(&self.licenses).await
    }
}

impl LicensePolicy {
    /// Applies one event to the policy's tables, in the batch's transaction, and says which
    /// commands follow.
    async fn apply_event(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
        commands: &mut Commands<License>,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type == Member::TYPE {
            return self.apply_comp(conn, event, commands).await;
        }
        if event.aggregate_type != Subscription::TYPE {
            return Ok(());
        }
        let subscription_id = &event.aggregate_id;
        match event.decode::<SubscriptionEvent>()? {
            SubscriptionEvent::SubscriptionCreated {
                member_id, status, ..
            } => {
                sqlx::query(
                    "INSERT INTO policy_license_subscriptions (subscription_id, member_id, status) VALUES ($1, $2, $3)
                     ON CONFLICT (subscription_id) DO UPDATE SET status = EXCLUDED.status",
                )
                .bind(subscription_id)
                .bind(member_id)
                .bind(status.as_str())
                .execute(&mut *conn)
                .await?;
            }
            SubscriptionEvent::SubscriptionStatusChanged { to, .. } => {
                sqlx::query("UPDATE policy_license_subscriptions SET status = $2 WHERE subscription_id = $1")
                    .bind(subscription_id)
                    .bind(to.as_str())
                    .execute(&mut *conn)
                    .await?;
            }
            SubscriptionEvent::SubscriptionItemAdded { item, .. } => {
                sqlx::query(
                    "INSERT INTO policy_license_items (item_id, subscription_id, purchase_type, site, quantity, license_purchase_id, product_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (item_id) DO UPDATE SET quantity = EXCLUDED.quantity, removed = false",
                )
                .bind(&item.item_id)
                .bind(subscription_id)
                .bind(item.purchase_type.as_str())
                .bind(&item.site)
                .bind(i32::try_from(item.quantity).unwrap_or(i32::MAX))
                .bind(item.license_purchase_id)
                .bind(&item.price.product_id)
                .execute(&mut *conn)
                .await?;
            }
            SubscriptionEvent::SubscriptionItemRemoved { item_id, .. } => {
                sqlx::query("UPDATE policy_license_items SET removed = true WHERE item_id = $1")
                    .bind(item_id)
                    .execute(&mut *conn)
                    .await?;
            }
            SubscriptionEvent::SubscriptionItemSiteAssigned { item_id, site, .. } => {
                sqlx::query(
                    "UPDATE policy_license_items SET purchase_type = $2, site = $3 WHERE item_id = $1",
                )
                .bind(item_id)
                .bind(PurchaseType::Site.as_str())
                .bind(site)
                .execute(&mut *conn)
                .await?;
            }
            SubscriptionEvent::SubscriptionItemQuantityChanged { item_id, to, .. } => {
                sqlx::query("UPDATE policy_license_items SET quantity = $2 WHERE item_id = $1")
                    .bind(item_id)
                    .bind(i32::try_from(to).unwrap_or(i32::MAX))
                    .execute(&mut *conn)
                    .await?;
            }
            // May come before the subscription itself (`RecordPayment` works before it is known).
            SubscriptionEvent::PaymentRecorded { .. } => {
                sqlx::query(
                    "INSERT INTO policy_license_paid_subscriptions (subscription_id) VALUES ($1)
                     ON CONFLICT DO NOTHING",
                )
                .bind(subscription_id)
                .execute(&mut *conn)
                .await?;
            }
            _ => return Ok(()),
        }
        self.reconcile(conn, subscription_id, event, commands).await
    }
}

impl LicensePolicy {
    /// A comp given or ended: the member's comp licenses of other tiers are deactivated, the
    /// one of the comp's tier is granted (or reactivated).
    async fn apply_comp(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
        commands: &mut Commands<License>,
    ) -> Result<(), ProjectionError> {
        let member_id: Uuid =
            event
                .aggregate_id
                .parse()
                .map_err(|_| ProjectionError::BadAggregateId {
                    position: event.global_position,
                    aggregate_id: event.aggregate_id.clone(),
                })?;
        let tier_id = match event.decode::<MemberEvent>()? {
            MemberEvent::MemberCompGranted { tier_id, .. } => Some(tier_id),
            MemberEvent::MemberCompEnded { .. } => None,
            _ => return Ok(()),
        };
        let metadata = caused_by(event);
        let ended: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE policy_license_comps SET active = false
             WHERE member_id = $1 AND active AND tier_id IS DISTINCT FROM $2
             RETURNING license_id",
        )
        .bind(member_id)
        .bind(tier_id)
        .fetch_all(&mut *conn)
        .await?;
        for license_id in ended {
            let command = LicenseCommand::DeactivateLicense {
                reason: DeactivationReason::ComplimentaryEnded,
                at: event.recorded_at,
            };
            commands.push(license_id.to_string(), command, metadata.clone());
        }
        let Some(tier_id) = tier_id else {
            return Ok(());
        };
        let license_id = License::id_for_comp(member_id, tier_id);
        let active: Option<bool> =
            sqlx::query_scalar("SELECT active FROM policy_license_comps WHERE license_id = $1")
                .bind(license_id)
                .fetch_optional(&mut *conn)
                .await?;
        let command = match active {
            Some(true) => return Ok(()),
            Some(false) => LicenseCommand::ReactivateLicense {
                at: event.recorded_at,
            },
            None => {
                let tier: Option<(String, String)> =
                    sqlx::query_as("SELECT name, stripe_product_id FROM tiers WHERE id = $1")
                        .bind(tier_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                let policy = match &tier {
                    Some((_, product)) => {
                        crate::license_policies::for_product(&mut *conn, product).await?
                    }
                    None => None,
                };
                let key = crate::license_keys::reserve(&self.pool, license_id).await?;
                LicenseCommand::GrantLicense {
                    license_id,
                    key,
                    member_id,
                    expires_at: policy
                        .as_ref()
                        .and_then(|p| p.expiry_from(event.recorded_at)),
                    policy_id: policy.map(|p| p.id),
                    note: Some(match tier {
                        Some((name, _)) => format!("complimentary access to tier {name}"),
                        None => format!("complimentary access to tier {tier_id}"),
                    }),
                    at: event.recorded_at,
                }
            }
        };
        commands.push(license_id.to_string(), command, metadata);
        sqlx::query(
            "INSERT INTO policy_license_comps (license_id, member_id, tier_id, active)
             VALUES ($1, $2, $3, true)
             ON CONFLICT (license_id) DO UPDATE SET active = true",
        )
        .bind(license_id)
        .bind(member_id)
        .bind(tier_id)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// One license the policy wants, and whether it should be active.
struct Wanted {
    license_id: Uuid,
    item_id: String,
    /// The item's Stripe product: its policy, if it has one, is given to a new key.
    product_id: Option<String>,
    purchase_type: PurchaseType,
    site: Option<String>,
    seat: Option<u32>,
    active: bool,
    reason: DeactivationReason,
    /// Not issued yet and not active, but issued (then deactivated) in order: see
    /// `ended_after_paying`.
    issue_inactive: bool,
}

impl LicensePolicy {
    async fn reconcile(
        &self,
        conn: &mut PgConnection,
        subscription_id: &str,
        event: &StoredEvent,
        commands: &mut Commands<License>,
    ) -> Result<(), ProjectionError> {
        // Everything the policy knows of the subscription, in one round trip: it runs for every
        // event of every subscription.
        type Known = (
            Uuid,
            String,
            bool,
            sqlx::types::Json<Vec<PolicyItem>>,
            sqlx::types::Json<Vec<(Uuid, bool, String, Option<i32>)>>,
        );
        let known: Option<Known> = sqlx::query_as(
            "SELECT s.member_id, s.status,
                    EXISTS (SELECT 1 FROM policy_license_paid_subscriptions p
                            WHERE p.subscription_id = $1),
                    (SELECT coalesce(json_agg(i ORDER BY i.item_id), '[]')
                     FROM (SELECT item_id, purchase_type, site, quantity, removed,
                                  license_purchase_id, product_id
                           FROM policy_license_items WHERE subscription_id = $1) i),
                    (SELECT coalesce(json_agg(json_build_array(l.license_id, l.active, l.item_id, l.seat)), '[]')
                     FROM policy_licenses l JOIN policy_license_items i USING (item_id)
                     WHERE i.subscription_id = $1)
             FROM policy_license_subscriptions s WHERE s.subscription_id = $1",
        )
        .bind(subscription_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((member_id, status, paid_before, items, licenses)) = known else {
            return Ok(());
        };
        let (items, licenses) = (items.0, licenses.0);
        let status = SubscriptionStatus::parse(&status);
        let paying = status.is_some_and(SubscriptionStatus::grants_licenses);
        let inactive_reason = if status == Some(SubscriptionStatus::Canceled) {
            DeactivationReason::SubscriptionCanceled
        } else {
            DeactivationReason::SubscriptionInactive
        };
        // Canceled or unpaid is only reached after paying. Seen so, with a payment recorded,
        // but never paying here (its deletion was processed before its activation, which is
        // then stale): in order its licenses were issued and later deactivated, so they are
        // issued now, deactivated, and end where in-order delivery leaves them.
        let ended = matches!(
            status,
            Some(SubscriptionStatus::Canceled | SubscriptionStatus::Unpaid)
        );
        let ended_after_paying = ended && paid_before;
        let current: HashMap<Uuid, bool> = licenses
            .iter()
            .map(|(license_id, active, ..)| (*license_id, *active))
            .collect();
        // The highest seat issued per item.
        let mut seats_issued: HashMap<String, i32> = HashMap::new();
        for (_, _, item_id, seat) in &licenses {
            if let Some(seat) = seat {
                let issued = seats_issued.entry(item_id.clone()).or_insert(*seat);
                *issued = (*issued).max(*seat);
            }
        }

        let mut wanted = Vec::new();
        for item in &items {
            let item_reason = if item.removed {
                DeactivationReason::ItemRemoved
            } else {
                inactive_reason
            };
            if item.purchase_type == PurchaseType::Site.as_str() {
                wanted.push(Wanted {
                    license_id: License::id_for_site(&item.item_id),
                    item_id: item.item_id.clone(),
                    product_id: item.product_id.clone(),
                    purchase_type: PurchaseType::Site,
                    site: item.site.clone(),
                    seat: None,
                    active: paying && !item.removed,
                    reason: item_reason,
                    issue_inactive: ended_after_paying,
                });
                continue;
            }
            let issued = seats_issued.get(&item.item_id).copied().unwrap_or(0);
            for seat in 1..=item.quantity.max(issued) {
                let seat_u32 = u32::try_from(seat).unwrap_or(0);
                let beyond = seat > item.quantity;
                let license_id = match item.license_purchase_id {
                    Some(purchase_id) => License::id_for_purchase(purchase_id, seat_u32),
                    None => License::id_for_seat(&item.item_id, seat_u32),
                };
                wanted.push(Wanted {
                    license_id,
                    item_id: item.item_id.clone(),
                    product_id: item.product_id.clone(),
                    purchase_type: PurchaseType::Quantity,
                    site: None,
                    seat: Some(seat_u32),
                    active: paying && !item.removed && !beyond,
                    reason: if beyond && !item.removed {
                        DeactivationReason::QuantityReduced
                    } else {
                        item_reason
                    },
                    issue_inactive: ended_after_paying && !beyond,
                });
            }
        }

        let metadata = caused_by(event);
        // An active license no longer wanted at all: a seat key of an item that turned out to
        // be a site's, whose site license replaces it.
        let wanted_ids: HashSet<Uuid> = wanted.iter().map(|w| w.license_id).collect();
        for (license_id, _) in current
            .iter()
            .filter(|(id, active)| **active && !wanted_ids.contains(*id))
        {
            let command = LicenseCommand::DeactivateLicense {
                reason: DeactivationReason::Replaced,
                at: event.recorded_at,
            };
            commands.push(license_id.to_string(), command, metadata.clone());
            sqlx::query("UPDATE policy_licenses SET active = false WHERE license_id = $1")
                .bind(license_id)
                .execute(&mut *conn)
                .await?;
        }
        for want in wanted {
            let aggregate_id = want.license_id.to_string();
            match current.get(&want.license_id) {
                // Issued only once it should be active (no license without payment), or, for a
                // subscription that ended after paying, issued and deactivated at once. A key a
                // license purchase reserved is activated (see `LicenseCommand::IssueLicense`).
                None if want.active || want.issue_inactive => {
                    let key = crate::license_keys::reserve(&self.pool, want.license_id).await?;
                    let command = LicenseCommand::IssueLicense {
                        license_id: want.license_id,
                        key,
                        member_id,
                        subscription_id: subscription_id.to_owned(),
                        item_id: want.item_id.clone(),
                        purchase_type: want.purchase_type,
                        site: want.site.clone(),
                        seat: want.seat,
                        at: event.recorded_at,
                    };
                    commands.push(aggregate_id.clone(), command, metadata.clone());
                    // A key of a product with a policy is issued under it (at its first
                    // issue only: an operator's later change is not undone).
                    if let Some(product) = &want.product_id {
                        if let Some(policy) =
                            crate::license_policies::for_product(&mut *conn, product).await?
                        {
                            let command = LicenseCommand::ChangePolicy {
                                expires_at: policy.expiry_from(event.recorded_at),
                                policy_id: Some(policy.id),
                                at: event.recorded_at,
                            };
                            commands.push(aggregate_id.clone(), command, metadata.clone());
                        }
                    }
                    if !want.active {
                        let command = LicenseCommand::DeactivateLicense {
                            reason: want.reason,
                            at: event.recorded_at,
                        };
                        commands.push(aggregate_id.clone(), command, metadata.clone());
                    }
                }
                None => continue,
                Some(&active) if active == want.active => continue,
                Some(_) if want.active => {
                    let command = LicenseCommand::ReactivateLicense {
                        at: event.recorded_at,
                    };
                    commands.push(aggregate_id.clone(), command, metadata.clone());
                }
                Some(_) => {
                    let command = LicenseCommand::DeactivateLicense {
                        reason: want.reason,
                        at: event.recorded_at,
                    };
                    commands.push(aggregate_id.clone(), command, metadata.clone());
                }
            }
            sqlx::query(
                "INSERT INTO policy_licenses (license_id, item_id, seat, active) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (license_id) DO UPDATE SET active = EXCLUDED.active",
            )
            .bind(want.license_id)
            .bind(&want.item_id)
            .bind(want.seat.and_then(|s| i32::try_from(s).ok()))
            .bind(want.active)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
