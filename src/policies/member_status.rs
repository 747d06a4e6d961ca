//! The member status policy: whether a member pays, from their subscriptions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberCommand, Subscription, SubscriptionEvent, SubscriptionStatus};
use async_trait::async_trait;
use projections::{Handles, Projection, ProjectionError, StoredEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{caused_by, Commands};
use crate::store::CommandBus;

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

#[cfg(test)]
mod tests {
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
