//! `member_comps`: each member's complimentary access (tier and end), while they have it.
//! Inline: the admin's grant is answered with the member as it then is, and the sweeper reads
//! the comps whose `until` passed.

use std::collections::HashMap;

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{member_id, Handles, Mode, Projection, ProjectionError, StoredEvent};

pub struct MemberComps;

type Row = (Uuid, Option<DateTime<Utc>>, DateTime<Utc>);

#[async_trait]
impl Projection for MemberComps {
    fn name(&self) -> &'static str {
        "member_comps"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["member_comps"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::only(
            Member::TYPE,
            &[MemberEvent::COMP_GRANTED, MemberEvent::COMP_ENDED],
        )];
        HANDLES
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    /// Folds the batch per member to its last comp (or none), then upserts the comps and
    /// deletes the ended ones, one statement each.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut last: HashMap<Uuid, Option<Row>> = HashMap::new();
        for event in events {
            if event.aggregate_type != Member::TYPE {
                continue;
            }
            match event.decode::<MemberEvent>()? {
                MemberEvent::MemberCompGranted {
                    tier_id,
                    until,
                    granted_at,
                } => {
                    last.insert(member_id(event)?, Some((tier_id, until, granted_at)));
                }
                MemberEvent::MemberCompEnded { .. } => {
                    last.insert(member_id(event)?, None);
                }
                _ => {}
            }
        }
        let (mut ids, mut tiers, mut untils, mut granted, mut ended) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (id, row) in last {
            match row {
                Some((tier, until, at)) => {
                    ids.push(id);
                    tiers.push(tier);
                    untils.push(until);
                    granted.push(at);
                }
                None => ended.push(id),
            }
        }
        if !ended.is_empty() {
            sqlx::query("DELETE FROM member_comps WHERE member_id = ANY($1)")
                .bind(ended)
                .execute(&mut *conn)
                .await?;
        }
        if !ids.is_empty() {
            sqlx::query(
                "INSERT INTO member_comps (member_id, tier_id, until, granted_at)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[])
                 ON CONFLICT (member_id) DO UPDATE
                 SET tier_id = EXCLUDED.tier_id, until = EXCLUDED.until, granted_at = EXCLUDED.granted_at",
            )
            .bind(ids)
            .bind(tiers)
            .bind(untils)
            .bind(granted)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
