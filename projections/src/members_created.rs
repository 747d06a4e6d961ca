//! `members_created_events`: one row per member creation, with its source (and, once signup
//! attribution exists, where the member came from).

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{erased_members, member_id, Handles, Mode, Projection, ProjectionError, StoredEvent};

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
        const HANDLES: &[Handles] = &[Handles::only(
            Member::TYPE,
            &[MemberEvent::CREATED, MemberEvent::ERASED],
        )];
        HANDLES
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    /// One row per creation, whatever the order: one multi-row `INSERT`.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut rows = Rows::default();
        for event in events {
            if event.aggregate_type != Member::TYPE {
                continue;
            }
            if let MemberEvent::MemberCreated {
                source,
                created_at,
                attribution,
                ..
            } = event.decode::<MemberEvent>()?
            {
                let a = attribution.map(|a| *a).unwrap_or_default();
                rows.id.push(event.global_position);
                rows.member_id.push(member_id(event)?);
                rows.created_at.push(created_at);
                rows.source.push(source.as_str());
                rows.attribution_id.push(a.attribution_id);
                rows.attribution_type
                    .push(a.attribution_type.map(|t| t.as_str()));
                rows.attribution_url.push(a.attribution_url);
                rows.referrer_source.push(a.referrer_source);
                rows.referrer_medium.push(a.referrer_medium);
                rows.referrer_url.push(a.referrer_url);
                rows.utm_source.push(a.utm_source);
                rows.utm_medium.push(a.utm_medium);
                rows.utm_campaign.push(a.utm_campaign);
                rows.utm_term.push(a.utm_term);
                rows.utm_content.push(a.utm_content);
            }
        }
        if !rows.id.is_empty() {
            rows.write(conn).await?;
        }
        // The pages an erased member visited are theirs; where they came from (source,
        // referrer source and medium, UTM) stays for the counts.
        let erased = erased_members(events)?;
        if !erased.is_empty() {
            sqlx::query(
                "UPDATE members_created_events SET attribution_url = NULL, referrer_url = NULL
                 WHERE member_id = ANY($1)",
            )
            .bind(&erased)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

impl Rows {
    async fn write(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let rows = self;
        sqlx::query(
            "INSERT INTO members_created_events
                 (id, member_id, created_at, source, attribution_id, attribution_type, attribution_url,
                  referrer_source, referrer_medium, referrer_url,
                  utm_source, utm_medium, utm_campaign, utm_term, utm_content)
             SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                                  $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])",
        )
        .bind(rows.id)
        .bind(rows.member_id)
        .bind(rows.created_at)
        .bind(rows.source)
        .bind(rows.attribution_id)
        .bind(rows.attribution_type)
        .bind(rows.attribution_url)
        .bind(rows.referrer_source)
        .bind(rows.referrer_medium)
        .bind(rows.referrer_url)
        .bind(rows.utm_source)
        .bind(rows.utm_medium)
        .bind(rows.utm_campaign)
        .bind(rows.utm_term)
        .bind(rows.utm_content)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// The batch's rows, column by column (as `unnest` takes them).
#[derive(Default)]
struct Rows {
    id: Vec<i64>,
    member_id: Vec<Uuid>,
    created_at: Vec<DateTime<Utc>>,
    source: Vec<&'static str>,
    attribution_id: Vec<Option<String>>,
    attribution_type: Vec<Option<&'static str>>,
    attribution_url: Vec<Option<String>>,
    referrer_source: Vec<Option<String>>,
    referrer_medium: Vec<Option<String>>,
    referrer_url: Vec<Option<String>>,
    utm_source: Vec<Option<String>>,
    utm_medium: Vec<Option<String>>,
    utm_campaign: Vec<Option<String>>,
    utm_term: Vec<Option<String>>,
    utm_content: Vec<Option<String>>,
}
