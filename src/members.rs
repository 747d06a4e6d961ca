//! Creating members: shared by the admin API and the Stripe translator, so the unique-email
//! rule is kept in one place.

use aggregates::cqrs_es::AggregateError;
use aggregates::Attribution;
use aggregates::{
    EmailAddress, Labels, Member, MemberCommand, MemberError, MemberName, MemberSource, Note,
};
use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{member_emails, CommandBus, EventMetadata, LogPosition};

pub struct NewMember {
    pub email: EmailAddress,
    pub name: Option<MemberName>,
    pub note: Option<Note>,
    pub labels: Labels,
    pub source: MemberSource,
    pub attribution: Option<Attribution>,
    pub newsletters: Vec<Uuid>,
}

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
