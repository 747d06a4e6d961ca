//! The unique-email rule, in one place: creating members (the admin API, sign-up and the Stripe
//! translator) and changing a member's email both reserve the address in the `member_emails`
//! lookup before the command runs, and give it back when nothing was written.

use aggregates::cqrs_es::AggregateError;
use aggregates::Attribution;
use aggregates::{
    EmailAddress, Labels, Member, MemberCommand, MemberError, MemberName, MemberSource, Note,
};
use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use crate::eventlog::LogPosition;
use crate::store::{CommandBus, EventMetadata};

pub struct NewMember {
    pub email: EmailAddress,
    pub name: Option<MemberName>,
    pub note: Option<Note>,
    pub labels: Labels,
    pub source: MemberSource,
    pub attribution: Option<Attribution>,
    pub newsletters: Vec<Uuid>,
}

/// Why creating a member, or changing its email, wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum CreateMemberError {
    #[error("another member has this email")]
    EmailTaken,
    #[error(transparent)]
    Store(#[from] AggregateError<MemberError>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Reserves the email, then creates the member; gives the email back if nothing was written.
pub async fn create(
    pool: &PgPool,
    bus: &CommandBus<Member>,
    new: NewMember,
    metadata: EventMetadata,
) -> Result<(Uuid, Option<LogPosition>), CreateMemberError> {
    let member_id = Uuid::now_v7();
    let normalized = new.email.normalized();
    if !member_emails::reserve(pool, &normalized, member_id).await? {
        return Err(CreateMemberError::EmailTaken);
    }
    let command = MemberCommand::CreateMember {
        member_id,
        email: new.email,
        name: new.name,
        note: new.note,
        labels: new.labels,
        source: new.source,
        attribution: new.attribution.map(Box::new),
        newsletters: new.newsletters,
        at: Utc::now(),
    };
    match bus.execute(&member_id.to_string(), command, metadata).await {
        Ok(position) => Ok((member_id, position)),
        Err(err) => {
            let _ = member_emails::release(pool, &normalized, member_id).await;
            Err(err.into())
        }
    }
}

/// The member holding `email` (compared case-insensitively), if any.
pub async fn find_by_email(
    pool: &PgPool,
    email: &EmailAddress,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT m.member_id FROM member_emails m
         WHERE m.email = $1
           AND EXISTS (SELECT 1 FROM events e WHERE e.aggregate_type = 'Member' AND e.aggregate_id = m.member_id::text)",
    )
    .bind(email.normalized())
    .fetch_optional(pool)
    .await
}

/// Gives `member_id` the address `email`: reserves it (refused when another member holds it),
/// runs the change, then releases the member's old addresses; on failure the new reservation is
/// given back unless the member held it already.
pub async fn change_email(
    pool: &PgPool,
    bus: &CommandBus<Member>,
    member_id: Uuid,
    email: EmailAddress,
    metadata: EventMetadata,
) -> Result<Option<LogPosition>, CreateMemberError> {
    let normalized = email.normalized();
    let held: Vec<String> =
        sqlx::query_scalar("SELECT email FROM member_emails WHERE member_id = $1")
            .bind(member_id)
            .fetch_all(pool)
            .await?;
    let already_held = held.contains(&normalized);
    if !member_emails::reserve(pool, &normalized, member_id).await? {
        return Err(CreateMemberError::EmailTaken);
    }
    let command = MemberCommand::ChangeEmail {
        email,
        at: Utc::now(),
    };
    match bus.execute(&member_id.to_string(), command, metadata).await {
        Ok(position) => {
            for old in held.iter().filter(|old| **old != normalized) {
                member_emails::release(pool, old, member_id).await?;
            }
            Ok(position)
        }
        Err(err) => {
            if !already_held {
                let _ = member_emails::release(pool, &normalized, member_id).await;
            }
            Err(err.into())
        }
    }
}

/// The unique email lookup. Addresses are stored lower-cased.
pub mod member_emails {
    use sqlx::PgPool;
    use uuid::Uuid;

    /// Reserves `email` for `member_id`. Returns false when another member holds it.
    ///
    /// A reservation is taken over only when it is over a minute old and its holder either
    /// never came to exist (the process died between reserving and creating) or now has
    /// another address (the process died before releasing the old one).
    pub async fn reserve(pool: &PgPool, email: &str, member_id: Uuid) -> Result<bool, sqlx::Error> {
        let row: Option<(Uuid,)> = sqlx::query_as(
            "INSERT INTO member_emails (email, member_id) VALUES ($1, $2)
             ON CONFLICT (email) DO UPDATE SET member_id = EXCLUDED.member_id, reserved_at = now()
             WHERE member_emails.member_id = EXCLUDED.member_id
                OR (member_emails.reserved_at < now() - interval '1 minute'
                    AND (NOT EXISTS (SELECT 1 FROM events e
                                     WHERE e.aggregate_type = 'Member'
                                       AND e.aggregate_id = member_emails.member_id::text)
                         OR EXISTS (SELECT 1 FROM member_list m
                                    WHERE m.id = member_emails.member_id
                                      AND lower(m.email) <> member_emails.email)))
             RETURNING member_id",
        )
        .bind(email)
        .bind(member_id)
        .fetch_optional(pool)
        .await?;
        Ok(row.is_some())
    }

    /// Gives `email` up, if `member_id` holds it.
    pub async fn release(pool: &PgPool, email: &str, member_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM member_emails WHERE email = $1 AND member_id = $2")
            .bind(email)
            .bind(member_id)
            .execute(pool)
            .await?;
        Ok(())
    }
}
