//! The license policy: license keys follow subscription items, seats and comps.

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::cqrs_es::Aggregate;
use aggregates::{
    DeactivationReason, License, LicenseCommand, LicenseKey, Member, MemberEvent, PurchaseType,
    Subscription, SubscriptionEvent,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use projections::{Handles, Projection, ProjectionError, StoredEvent};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{caused_by, Commands};
use crate::store::{CommandBus, EventMetadata};

mod known;

use known::{Item, Known};

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
        // What the policy knows of the batch's subscriptions is read once, changed in memory
        // event by event, and written back once: a batch costs a few statements, not several
        // per event.
        let mut subscription_ids: Vec<String> = events
            .iter()
            .filter(|e| e.aggregate_type == Subscription::TYPE)
            .map(|e| e.aggregate_id.clone())
            .collect();
        subscription_ids.sort_unstable();
        subscription_ids.dedup();
        let mut known = known::load(conn, &subscription_ids).await?;
        let mut plan = Plan::default();
        for event in events {
            if event.aggregate_type == Member::TYPE {
                self.apply_comp(conn, event, &mut plan).await?;
            } else if let Some(subscription) = known.get_mut(&event.aggregate_id) {
                apply_subscription_event(subscription, event, &mut plan)?;
            }
        }
        known::store(conn, &known).await?;
        plan.run(conn, &self.pool, &self.licenses).await
    }
}

/// Applies one subscription event to what the policy knows of its subscription, and plans the
/// commands that follow.
fn apply_subscription_event(
    known: &mut Known,
    event: &StoredEvent,
    plan: &mut Plan,
) -> Result<(), ProjectionError> {
    let subscription_id = &event.aggregate_id;
    match event.decode::<SubscriptionEvent>()? {
        SubscriptionEvent::SubscriptionCreated {
            member_id, status, ..
        } => known.set_subscription(member_id, status.as_str()),
        SubscriptionEvent::SubscriptionStatusChanged { to, .. } => known.set_status(to.as_str()),
        SubscriptionEvent::SubscriptionItemAdded { item, .. } => known.add_item(Item {
            subscription_id: subscription_id.clone(),
            purchase_type: item.purchase_type.as_str().to_owned(),
            site: item.site,
            quantity: i32::try_from(item.quantity).unwrap_or(i32::MAX),
            removed: false,
            license_purchase_id: item.license_purchase_id,
            product_id: item.price.product_id,
            item_id: item.item_id,
        }),
        SubscriptionEvent::SubscriptionItemRemoved { item_id, .. } => {
            known.change_item(&item_id, |item| item.removed = true);
        }
        SubscriptionEvent::SubscriptionItemSiteAssigned { item_id, site, .. } => {
            known.change_item(&item_id, |item| {
                item.purchase_type = PurchaseType::Site.as_str().to_owned();
                item.site = Some(site);
            });
        }
        SubscriptionEvent::SubscriptionItemQuantityChanged { item_id, to, .. } => {
            known.change_item(&item_id, |item| {
                item.quantity = i32::try_from(to).unwrap_or(i32::MAX);
            });
        }
        // May come before the subscription itself (`RecordPayment` works before it is known).
        SubscriptionEvent::PaymentRecorded { .. } => known.set_paid(),
        _ => return Ok(()),
    }
    known.reconcile(subscription_id, event, plan);
    Ok(())
}

/// A step of a batch's plan for one license.
pub(super) enum Planned {
    Ready(LicenseCommand),
    /// A command that names the license's key: the keys of a batch's new licenses are
    /// reserved together.
    Keyed(Box<dyn FnOnce(LicenseKey) -> LicenseCommand + Send + Sync>),
    /// A new key of this product is put under the product's license policy, if it has one
    /// (looked up once per product and batch).
    ProductPolicy(String, DateTime<Utc>),
}

/// The commands a batch issues, in the order its events asked for them.
#[derive(Default)]
pub(super) struct Plan {
    steps: Vec<(Uuid, Planned, EventMetadata)>,
}

impl Plan {
    pub(super) fn push(&mut self, license_id: Uuid, step: Planned, metadata: &EventMetadata) {
        self.steps.push((license_id, step, metadata.clone()));
    }

    /// Reserves the new licenses' keys, looks up their products' policies, and runs the
    /// commands (see [`Commands::run`]).
    async fn run(
        self,
        conn: &mut PgConnection,
        pool: &PgPool,
        bus: &CommandBus<License>,
    ) -> Result<(), ProjectionError> {
        let keyed: Vec<Uuid> = self
            .steps
            .iter()
            .filter(|(_, step, _)| matches!(step, Planned::Keyed(_)))
            .map(|(license_id, ..)| *license_id)
            .collect();
        let crate::license_keys::Reserved { mut keys, new } =
            crate::license_keys::reserve_many(pool, &keyed).await?;
        let mut policies = HashMap::new();
        for (_, step, _) in &self.steps {
            if let Planned::ProductPolicy(product, _) = step {
                if !policies.contains_key(product) {
                    let policy = crate::license_policies::for_product(&mut *conn, product).await?;
                    policies.insert(product.clone(), policy);
                }
            }
        }
        let mut commands = Commands::new();
        for (license_id, step, metadata) in self.steps {
            let command = match step {
                Planned::Ready(command) => command,
                Planned::Keyed(command) => {
                    let key = keys.remove(&license_id).ok_or_else(|| {
                        ProjectionError::Command(format!(
                            "no key reserved for license {license_id}"
                        ))
                    })?;
                    // A license whose key is new has no events: its first command reads none.
                    if new.contains(&license_id) {
                        commands.push_new(license_id.to_string(), command(key), metadata);
                        continue;
                    }
                    command(key)
                }
                Planned::ProductPolicy(product, at) => match &policies[&product] {
                    Some(policy) => LicenseCommand::ChangePolicy {
                        expires_at: policy.expiry_from(at),
                        policy_id: Some(policy.id.clone()),
                        at,
                    },
                    None => continue,
                },
            };
            commands.push(license_id.to_string(), command, metadata);
        }
        commands.run(bus).await
    }
}

impl LicensePolicy {
    /// A comp given or ended: the member's comp licenses of other tiers are deactivated, the
    /// one of the comp's tier is granted (or reactivated).
    async fn apply_comp(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
        plan: &mut Plan,
    ) -> Result<(), ProjectionError> {
        let member_id = projections::member_id(event)?;
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
            plan.push(license_id, Planned::Ready(command), &metadata);
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
            Some(false) => Planned::Ready(LicenseCommand::ReactivateLicense {
                at: event.recorded_at,
            }),
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
                let at = event.recorded_at;
                let note = Some(match tier {
                    Some((name, _)) => format!("complimentary access to tier {name}"),
                    None => format!("complimentary access to tier {tier_id}"),
                });
                Planned::Keyed(Box::new(move |key| LicenseCommand::GrantLicense {
                    license_id,
                    key,
                    member_id,
                    expires_at: policy.as_ref().and_then(|p| p.expiry_from(at)),
                    policy_id: policy.map(|p| p.id),
                    note,
                    at,
                }))
            }
        };
        plan.push(license_id, command, &metadata);
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
