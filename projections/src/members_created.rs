//! `members_created_events`: one row per member creation, with its source (and, once signup
//! attribution exists, where the member came from).

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent};
use async_trait::async_trait;
use sqlx::PgConnection;

use crate::{member_id, Projection, ProjectionError, StoredEvent};

pub struct MembersCreatedEvents;

#[async_trait]
impl Projection for MembersCreatedEvents {
    fn name(&self) -> &'static str {
        "members_created_events"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["members_created_events"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Member::TYPE {
            return Ok(());
        }
        if let MemberEvent::MemberCreated {
            source, created_at, ..
        } = event.decode::<MemberEvent>()?
        {
            sqlx::query(
                "INSERT INTO members_created_events (id, member_id, created_at, source)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(event.global_position)
            .bind(member_id(event)?)
            .bind(created_at)
            .bind(source.as_str())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
