//! `member_emails`: the unique-email lookup, one row per member's current address (lower-cased).
//!
//! Inline: a `MemberCreated` or `MemberEmailChanged` whose address another member holds is
//! refused here, in the appending transaction, so the events roll back with it. This is the
//! one place the rule "one member per email" is enforced; there is no reservation to give back.

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent};
use async_trait::async_trait;
use sqlx::PgConnection;

use crate::{member_id, Handles, Mode, Projection, ProjectionError, StoredEvent};

pub struct MemberEmails;

/// Why [`MemberEmails`] refuses events.
pub const EMAIL_TAKEN: &str = "another member has this email";

#[async_trait]
impl Projection for MemberEmails {
    fn name(&self) -> &'static str {
        "member_emails"
    }

    fn version(&self) -> i32 {
        1
    }

    fn looked_up_by(&self) -> &'static [&'static str] {
        &["member_emails_member"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["member_emails"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::only(
            Member::TYPE,
            &[MemberEvent::CREATED, MemberEvent::EMAIL_CHANGED],
        )];
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
        let id = member_id(event)?;
        let email = match event.decode::<MemberEvent>()? {
            MemberEvent::MemberCreated { email, .. } => email,
            MemberEvent::MemberEmailChanged { new_email, .. } => new_email,
            _ => return Ok(()),
        };
        // Compared as `EmailAddress::normalized` does. The member's old address (if any) is
        // given up in the same statement.
        let held: Option<uuid::Uuid> = sqlx::query_scalar(
            "WITH released AS (DELETE FROM member_emails WHERE member_id = $2 AND email <> $1)
             INSERT INTO member_emails (email, member_id) VALUES ($1, $2)
             ON CONFLICT (email) DO UPDATE SET member_id = EXCLUDED.member_id
             WHERE member_emails.member_id = EXCLUDED.member_id
             RETURNING member_id",
        )
        .bind(email.to_lowercase())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        if held.is_none() {
            return Err(ProjectionError::Refused {
                projection: "member_emails",
                reason: EMAIL_TAKEN,
            });
        }
        Ok(())
    }
}
