//! `members_created_events`: one row per member creation, with its source (and, once signup
//! attribution exists, where the member came from).

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent};
use async_trait::async_trait;
use sqlx::PgConnection;

use crate::{member_id, Handles, Mode, Projection, ProjectionError, StoredEvent};

pub struct MembersCreatedEvents;

#[async_trait]
impl Projection for MembersCreatedEvents {
    fn name(&self) -> &'static str {
        "members_created_events"
    }

    fn version(&self) -> i32 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["members_created_events"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::only(Member::TYPE, &[MemberEvent::CREATED])];
        HANDLES
    }

    fn mode(&self) -> Mode {
        Mode::Inline
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
            source,
            created_at,
            attribution,
            ..
        } = event.decode::<MemberEvent>()?
        {
            let a = attribution.map(|a| *a).unwrap_or_default();
            sqlx::query(
                "INSERT INTO members_created_events
                     (id, member_id, created_at, source, attribution_id, attribution_type, attribution_url,
                      referrer_source, referrer_medium, referrer_url,
                      utm_source, utm_medium, utm_campaign, utm_term, utm_content)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(event.global_position)
            .bind(member_id(event)?)
            .bind(created_at)
            .bind(source.as_str())
            .bind(a.attribution_id)
            .bind(a.attribution_type.map(|t| t.as_str()))
            .bind(a.attribution_url)
            .bind(a.referrer_source)
            .bind(a.referrer_medium)
            .bind(a.referrer_url)
            .bind(a.utm_source)
            .bind(a.utm_medium)
            .bind(a.utm_campaign)
            .bind(a.utm_term)
            .bind(a.utm_content)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
