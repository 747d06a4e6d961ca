//! Creating members (the admin API, sign-up and the Stripe translator) and changing a member's
//! email. One member per email is enforced by the inline `member_emails` projection, in the
//! command's own transaction: a refused address leaves no event and no row behind.

use aggregates::cqrs_es::AggregateError;
use aggregates::Attribution;
use aggregates::{
    EmailAddress, Labels, Member, MemberCommand, MemberError, MemberName, MemberSource, Note,
};
use chrono::{DateTime, SubsecRound, Utc};
use projections::member_emails::EMAIL_TAKEN;
use sqlx::PgPool;
use uuid::Uuid;

use crate::eventlog::LogPosition;
use crate::store::{inline_refusal, CommandBus, EventMetadata};

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

/// Creates the member; refused when another member has the email. Returns its id and its
/// creation time, to the microsecond as the read models store it (so an answer built from the
/// command's fields equals what a read of the member shows).
pub async fn create(
    bus: &CommandBus<Member>,
    new: NewMember,
    metadata: EventMetadata,
) -> Result<(Uuid, DateTime<Utc>), CreateMemberError> {
    let member_id = Uuid::now_v7();
    let at = Utc::now().trunc_subsecs(6);
    let command = MemberCommand::CreateMember {
        member_id,
        email: new.email,
        name: new.name,
        note: new.note,
        labels: new.labels,
        source: new.source,
        attribution: new.attribution.map(Box::new),
        newsletters: new.newsletters,
        at,
    };
    bus.execute_new(&member_id.to_string(), command, metadata)
        .await
        .map_err(refused_email)?;
    Ok((member_id, at))
}

/// The member holding `email` (compared case-insensitively), if any.
pub async fn find_by_email(
    pool: &PgPool,
    email: &EmailAddress,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT member_id FROM member_emails WHERE email = $1")
        .bind(email.normalized())
        .fetch_optional(pool)
        .await
}

/// Gives `member_id` the address `email`; refused when another member holds it.
pub async fn change_email(
    bus: &CommandBus<Member>,
    member_id: Uuid,
    email: EmailAddress,
    metadata: EventMetadata,
) -> Result<Option<LogPosition>, CreateMemberError> {
    let command = MemberCommand::ChangeEmail {
        email,
        at: Utc::now(),
    };
    bus.execute(&member_id.to_string(), command, metadata)
        .await
        .map_err(refused_email)
}

fn refused_email(err: AggregateError<MemberError>) -> CreateMemberError {
    match inline_refusal(&err) {
        Some(refusal) if refusal.reason == EMAIL_TAKEN => CreateMemberError::EmailTaken,
        _ => CreateMemberError::Store(err),
    }
}

/// The member Stripe customer `customer_id` belongs to, linking it to `member_id` unless a
/// member holds it already: the unique lookup `stripe_customers` decides (whoever claims first
/// keeps it), then the holder's aggregate records the link (a no-op when it has). Returns the
/// holder, which a caller that proposed another member must tell apart.
pub async fn link_stripe_customer(
    pool: &PgPool,
    bus: &CommandBus<Member>,
    customer_id: &str,
    member_id: Uuid,
    metadata: EventMetadata,
) -> anyhow::Result<Uuid> {
    let claimed: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO stripe_customers (customer_id, member_id) VALUES ($1, $2)
         ON CONFLICT (customer_id) DO NOTHING RETURNING member_id",
    )
    .bind(customer_id)
    .bind(member_id)
    .fetch_optional(pool)
    .await?;
    let holder = match claimed {
        Some(holder) => holder,
        // Read in a statement of its own: one that also inserted would not see a holder that
        // committed while it waited on the key.
        None => {
            sqlx::query_scalar("SELECT member_id FROM stripe_customers WHERE customer_id = $1")
                .bind(customer_id)
                .fetch_one(pool)
                .await?
        }
    };
    let command = MemberCommand::LinkStripeCustomer {
        customer_id: customer_id.to_owned(),
        at: Utc::now(),
    };
    bus.execute(&holder.to_string(), command, metadata)
        .await
        .map_err(|e| anyhow::anyhow!("linking customer {customer_id} to member {holder}: {e}"))?;
    Ok(holder)
}

/// Lifts the suppression of a member's email (the member signed in, or an admin); a no-op
/// when it is not disabled. Refused with `NotFound` when there is no such member.
pub async fn enable_email(
    members: &CommandBus<Member>,
    member_id: Uuid,
    metadata: EventMetadata,
) -> Result<(), AggregateError<MemberError>> {
    let command = MemberCommand::EnableEmail { at: Utc::now() };
    members
        .execute(&member_id.to_string(), command, metadata)
        .await
        .map(|_| ())
}
