//! `members_status_events`: one row per change of a member's status (free, paid, comped), for
//! analysts counting conversions and churn over time.

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent};
use async_trait::async_trait;
use sqlx::PgConnection;

use crate::{member_id, Handles, Projection, ProjectionError, StoredEvent};

pub struct MembersStatusEvents;

#[async_trait]
impl Projection for MembersStatusEvents {
    fn name(&self) -> &'static str {
        "members_status_events"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["members_status_events"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::only(Member::TYPE, &[MemberEvent::STATUS_CHANGED])];
        HANDLES
    }

    /// Rows keyed by log position, whatever the order: one multi-row `INSERT`.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let (mut ids, mut members, mut froms, mut tos, mut reasons, mut ats) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for event in events {
            if event.aggregate_type != Member::TYPE {
                continue;
            }
            if let MemberEvent::MemberStatusChanged {
                from,
                to,
                reason,
                changed_at,
            } = event.decode::<MemberEvent>()?
            {
                ids.push(event.global_position);
                members.push(member_id(event)?);
                froms.push(from.as_str());
                tos.push(to.as_str());
                reasons.push(reason);
                ats.push(changed_at);
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO members_status_events
                 (id, member_id, from_status, to_status, reason, created_at)
             SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                  $6::timestamptz[])
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(ids)
        .bind(members)
        .bind(froms)
        .bind(tos)
        .bind(reasons)
        .bind(ats)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
