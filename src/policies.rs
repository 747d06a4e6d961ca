//! Policies: reactions across aggregates, run by the projection runner with their own
//! checkpoints. They turn events into commands that are idempotent (deterministic license ids,
//! "set status" rather than "toggle"), so re-running a batch after a crash changes nothing.
//! Their state lives in `policy_*` tables written in the runner's transaction.
//!
//! A batch runs in two phases. First its events update the policy's tables, in order, in the
//! runner's transaction, and say which commands follow ([`Commands`]); then those commands run,
//! in order for each aggregate and [`CONCURRENT_AGGREGATES`] aggregates at once. A command
//! depends only on the policy's tables, never on another command's result, so the split changes
//! nothing but the wait: a batch of a thousand subscriptions no longer waits for a thousand
//! commits one after the other. If a command fails the batch's transaction rolls back and the
//! batch runs again; the commands that went through are idempotent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aggregates::cqrs_es::{Aggregate, AggregateError};
use aggregates::{
    DeactivationReason, License, LicenseCommand, Member, MemberCommand, MemberEvent, PurchaseType,
    Subscription, SubscriptionEvent, SubscriptionStatus,
};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use projections::{Handles, Projection, ProjectionError, StoredEvent};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::store::{Actor, CommandBus, EventMetadata};

/// Metadata for a command a policy issues because of `event`.
fn caused_by(event: &StoredEvent) -> EventMetadata {
    EventMetadata {
        correlation_id: event.metadata["correlation_id"]
            .as_str()
            .map_or_else(|| format!("event:{}", event.global_position), str::to_owned),
        causation_id: format!("event:{}", event.global_position),
        actor: Actor::System,
    }
}

fn command_error<E: std::error::Error>(err: AggregateError<E>) -> ProjectionError {
    ProjectionError::Command(err.to_string())
}

/// How many aggregates' commands a policy's batch runs at once.
pub const CONCURRENT_AGGREGATES: usize = 8;

/// The commands a policy's batch issues, in the order its events asked for them.
struct Commands<A: Aggregate> {
    issued: Vec<(String, A::Command, EventMetadata)>,
}

impl<A> Commands<A>
where
    A: Aggregate + 'static,
    A::Command: Clone,
{
    fn new() -> Self {
        Self { issued: Vec::new() }
    }

    fn push(&mut self, aggregate_id: String, command: A::Command, metadata: EventMetadata) {
        self.issued.push((aggregate_id, command, metadata));
    }

    /// Runs the commands: one aggregate's in order, different aggregates' concurrently.
    async fn run(self, bus: &CommandBus<A>) -> Result<(), ProjectionError> {
        type Group<A> = (String, Vec<(<A as Aggregate>::Command, EventMetadata)>);
        let mut groups: Vec<Group<A>> = Vec::new();
        let mut slots: HashMap<String, usize> = HashMap::new();
        for (aggregate_id, command, metadata) in self.issued {
            let slot = match slots.get(&aggregate_id) {
                Some(&slot) => slot,
                None => {
                    slots.insert(aggregate_id.clone(), groups.len());
                    groups.push((aggregate_id, Vec::new()));
                    groups.len() - 1
                }
            };
            groups[slot].1.push((command, metadata));
        }
        futures::stream::iter(groups)
            .map(|(aggregate_id, commands)| async move {
                for (command, metadata) in commands {
                    bus.execute(&aggregate_id, command, metadata)
                        .await
                        .map_err(command_error)?;
                }
                Ok::<(), ProjectionError>(())
            })
            .buffer_unordered(CONCURRENT_AGGREGATES)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

/// Tells each member whether any of their subscriptions is paying (active, trialing, past due
/// or unpaid), each time that changes; the Member aggregate then applies the status rule
/// (`MemberStatus::of`: `paid`, else `comped` with complimentary access, else `free`). Only
/// this policy says whether a member pays (`SetPaying`), so what a member was last told is
/// what the policy's table said before the event at hand.
pub struct MemberStatusPolicy {
    pub members: Arc<CommandBus<Member>>,
}

#[async_trait]
impl Projection for MemberStatusPolicy {
    fn name(&self) -> &'static str {
        "member_status_policy"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["policy_member_subscriptions"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::only(
            Subscription::TYPE,
            &[
                SubscriptionEvent::CREATED,
                SubscriptionEvent::STATUS_CHANGED,
            ],
        )];
        HANDLES
    }

    fn rebuildable(&self) -> bool {
        false
    }

    /// Set-based: one read of every subscription of the members the batch concerns, the
    /// events folded in order in memory, one write of the rows they changed. An event that
    /// changes whether its member pays (as the table stands after it) tells the member; one
    /// that does not (a second paying subscription, a past-due one still paying) issues no
    /// command.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut changes = Vec::new();
        for event in events
            .iter()
            .filter(|e| e.aggregate_type == Subscription::TYPE)
        {
            match event.decode::<SubscriptionEvent>()? {
                SubscriptionEvent::SubscriptionCreated {
                    member_id, status, ..
                } => changes.push((event, Some(member_id), status)),
                SubscriptionEvent::SubscriptionStatusChanged { to, .. } => {
                    changes.push((event, None, to));
                }
                _ => {}
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let mut table = PaidSubscriptions::load(conn, &changes).await?;
        let mut commands = Commands::new();
        for (event, created_for, status) in changes {
            let subscription_id = event.aggregate_id.as_str();
            // A change of a subscription the policy never saw created: nothing to say.
            let Some(member_id) = created_for.or_else(|| table.owner(subscription_id)) else {
                continue;
            };
            let before = table.paying(member_id);
            match created_for {
                Some(member_id) => table.upsert(subscription_id, member_id, status.is_paid()),
                None => table.set_paid(subscription_id, status.is_paid()),
            }
            let paying = table.paying(member_id);
            // The member was told `before` when it last changed (only this policy says
            // whether a member pays): the same again would change nothing, and would cost a
            // load of the member.
            if paying == before {
                continue;
            }
            let command = MemberCommand::SetPaying {
                paying,
                reason: format!("subscription {subscription_id} is {}", status.as_str()),
                at: event.recorded_at,
            };
            commands.push(member_id.to_string(), command, caused_by(event));
        }
        table.store(conn).await?;
        commands.run(&self.members).await
    }
}

/// The rows of `policy_member_subscriptions` a batch concerns, as its events change them.
struct PaidSubscriptions {
    /// Subscription → (member, paid).
    rows: HashMap<String, (Uuid, bool)>,
    changed: HashSet<String>,
}

impl PaidSubscriptions {
    /// Every subscription of the members the changes concern: those created for one, and the
    /// owners of the subscriptions they change.
    async fn load(
        conn: &mut PgConnection,
        changes: &[(&StoredEvent, Option<Uuid>, SubscriptionStatus)],
    ) -> Result<Self, ProjectionError> {
        let subscriptions: Vec<&str> = changes
            .iter()
            .map(|(e, ..)| e.aggregate_id.as_str())
            .collect();
        let members: Vec<Uuid> = changes.iter().filter_map(|(_, m, _)| *m).collect();
        let rows: Vec<(String, Uuid, bool)> = sqlx::query_as(
            "SELECT subscription_id, member_id, paid FROM policy_member_subscriptions
             WHERE member_id = ANY($2)
                OR member_id IN (SELECT member_id FROM policy_member_subscriptions
                                 WHERE subscription_id = ANY($1))",
        )
        .bind(&subscriptions)
        .bind(&members)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Self {
            rows: rows.into_iter().map(|(s, m, p)| (s, (m, p))).collect(),
            changed: HashSet::new(),
        })
    }

    /// A subscription created: its row (a row that exists keeps its member).
    fn upsert(&mut self, subscription_id: &str, member_id: Uuid, paid: bool) {
        self.rows
            .entry(subscription_id.to_owned())
            .and_modify(|row| row.1 = paid)
            .or_insert((member_id, paid));
        self.changed.insert(subscription_id.to_owned());
    }

    /// The member a subscription the policy has belongs to.
    fn owner(&self, subscription_id: &str) -> Option<Uuid> {
        self.rows
            .get(subscription_id)
            .map(|&(member_id, _)| member_id)
    }

    /// A subscription's status changed (one the policy has).
    fn set_paid(&mut self, subscription_id: &str, paid: bool) {
        if let Some(row) = self.rows.get_mut(subscription_id) {
            row.1 = paid;
            self.changed.insert(subscription_id.to_owned());
        }
    }

    /// Whether any of the member's subscriptions pays.
    fn paying(&self, member_id: Uuid) -> bool {
        self.rows.values().any(|&(m, paid)| m == member_id && paid)
    }

    /// Writes the changed rows in one statement.
    async fn store(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let mut subscriptions = Vec::with_capacity(self.changed.len());
        let mut members = Vec::with_capacity(self.changed.len());
        let mut paid = Vec::with_capacity(self.changed.len());
        for id in &self.changed {
            if let Some(&(member_id, is_paid)) = self.rows.get(id) {
                subscriptions.push(id.as_str());
                members.push(member_id);
                paid.push(is_paid);
            }
        }
        sqlx::query(
            "INSERT INTO policy_member_subscriptions (subscription_id, member_id, paid)
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::bool[])
             ON CONFLICT (subscription_id) DO UPDATE SET paid = EXCLUDED.paid",
        )
        .bind(&subscriptions)
        .bind(&members)
        .bind(&paid)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

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

/// Every policy the server runs.
pub fn all(
    pool: &PgPool,
    members: Arc<CommandBus<Member>>,
    licenses: Arc<CommandBus<License>>,
    mail: crate::member_mail::MemberMailSettings,
) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(MemberStatusPolicy { members }),
        Arc::new(LicensePolicy {
            pool: pool.clone(),
            licenses,
        }),
        Arc::new(crate::outbound::OutboundWebhooks),
        crate::member_mail::MemberMail::new(mail),
    ]
}

#[cfg(test)]
mod paid_subscriptions_tests {
    use super::*;

    #[test]
    fn a_member_pays_while_any_of_their_subscriptions_does() {
        let member = Uuid::now_v7();
        let other = Uuid::now_v7();
        let mut table = PaidSubscriptions {
            rows: HashMap::from([
                ("sub_a".to_owned(), (member, true)),
                ("sub_other".to_owned(), (other, true)),
            ]),
            changed: HashSet::new(),
        };
        table.upsert("sub_b", member, true);
        assert!(table.paying(member));
        table.set_paid("sub_a", false);
        assert!(table.paying(member), "sub_b still pays");
        assert_eq!(table.owner("sub_b"), Some(member));
        table.set_paid("sub_b", false);
        assert!(!table.paying(member));
        assert!(
            table.paying(other),
            "another member's subscription counts for them only"
        );
        assert_eq!(table.owner("sub_unknown"), None);
        table.set_paid("sub_unknown", true);
        assert!(!table.rows.contains_key("sub_unknown"));
        // A subscription created again keeps the member it has.
        table.upsert("sub_other", member, false);
        assert_eq!(table.rows["sub_other"], (other, false));
        assert!(!table.paying(other));
        let mut changed: Vec<&str> = table.changed.iter().map(String::as_str).collect();
        changed.sort_unstable();
        assert_eq!(changed, ["sub_a", "sub_b", "sub_other"]);
    }
}
