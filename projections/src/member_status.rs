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

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Member::TYPE {
            return Ok(());
        }
        if let MemberEvent::MemberStatusChanged {
            from,
            to,
            reason,
            changed_at,
        } = event.decode::<MemberEvent>()?
        {
            sqlx::query(
                "INSERT INTO members_status_events
                     (id, member_id, from_status, to_status, reason, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(event.global_position)
            .bind(member_id(event)?)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(reason)
            .bind(changed_at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
