//! `member_email_suppressions`: one row per member whose address refused mail for good (a
//! permanent SMTP failure), while it is suppressed (Ghost's email suppression list).
//!
//! Inline: the member emails policy and the mailer check it before queueing and sending, and
//! the admin's answer and the portal read it right after the member's write.

use std::collections::HashMap;

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{member_id, Handles, Mode, Projection, ProjectionError, StoredEvent};

pub struct MemberEmailSuppressions;

struct Row {
    member_id: Uuid,
    email: String,
    reason: String,
    disabled_at: DateTime<Utc>,
}

#[async_trait]
impl Projection for MemberEmailSuppressions {
    fn name(&self) -> &'static str {
        "member_email_suppressions"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["member_email_suppressions"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::only(
            Member::TYPE,
            &[
                MemberEvent::EMAIL_DISABLED,
                MemberEvent::EMAIL_ENABLED,
                // A new address is not suppressed.
                MemberEvent::EMAIL_CHANGED,
                MemberEvent::ERASED,
            ],
        )];
        HANDLES
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    /// Each event says the whole state (suppressed with a reason, or not), so a member's last
    /// event in the batch is its row: one `DELETE` and one upsert.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut last: HashMap<Uuid, Option<Row>> = HashMap::new();
        for event in events {
            let id = member_id(event)?;
            let state = match event.decode::<MemberEvent>()? {
                MemberEvent::MemberEmailDisabled {
                    email,
                    reason,
                    disabled_at,
                } => Some(Row {
                    member_id: id,
                    email,
                    reason,
                    disabled_at,
                }),
                MemberEvent::MemberEmailEnabled { .. }
                | MemberEvent::MemberEmailChanged { .. }
                | MemberEvent::MemberErased { .. } => None,
                _ => continue,
            };
            last.insert(id, state);
        }
        let (cleared, rows): (Vec<Uuid>, Vec<Row>) = last.into_iter().fold(
            (Vec::new(), Vec::new()),
            |(mut cleared, mut rows), (id, state)| {
                match state {
                    Some(row) => rows.push(row),
                    None => cleared.push(id),
                }
                (cleared, rows)
            },
        );
        if !cleared.is_empty() {
            sqlx::query("DELETE FROM member_email_suppressions WHERE member_id = ANY($1)")
                .bind(&cleared)
                .execute(&mut *conn)
                .await?;
        }
        if !rows.is_empty() {
            sqlx::query(
                "INSERT INTO member_email_suppressions (member_id, email, reason, disabled_at)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
                 ON CONFLICT (member_id) DO UPDATE
                 SET email = EXCLUDED.email, reason = EXCLUDED.reason, disabled_at = EXCLUDED.disabled_at",
            )
            .bind(column!(rows, member_id))
            .bind(column!(rows, email))
            .bind(column!(rows, reason))
            .bind(column!(rows, disabled_at))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
