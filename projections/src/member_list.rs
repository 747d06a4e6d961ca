//! `member_list`: one row per member, what the admin lists, filters and reads.

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent, MemberStatus};
use async_trait::async_trait;
use sqlx::PgConnection;

use crate::{member_id, Handles, Mode, Projection, ProjectionError, StoredEvent};

pub struct MemberList;

#[async_trait]
impl Projection for MemberList {
    fn name(&self) -> &'static str {
        "member_list"
    }

    fn version(&self) -> i32 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["member_list"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::only(
            Member::TYPE,
            &[
                MemberEvent::CREATED,
                MemberEvent::UPDATED,
                MemberEvent::EMAIL_CHANGED,
                MemberEvent::STATUS_CHANGED,
            ],
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
        if event.aggregate_type != Member::TYPE {
            return Ok(());
        }
        let id = member_id(event)?;
        match event.decode::<MemberEvent>()? {
            MemberEvent::MemberCreated {
                email,
                name,
                note,
                labels,
                source,
                created_at,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO member_list
                         (id, email, name, note, labels, status, source, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                )
                .bind(id)
                .bind(email)
                .bind(name)
                .bind(note)
                .bind(labels)
                .bind(MemberStatus::Free.as_str())
                .bind(source.as_str())
                .bind(created_at)
                .execute(&mut *conn)
                .await?;
            }
            MemberEvent::MemberUpdated {
                name,
                note,
                labels,
                updated_at,
            } => {
                sqlx::query(
                    "UPDATE member_list SET name = $2, note = $3, labels = $4, updated_at = $5
                     WHERE id = $1",
                )
                .bind(id)
                .bind(name)
                .bind(note)
                .bind(labels)
                .bind(updated_at)
                .execute(&mut *conn)
                .await?;
            }
            MemberEvent::MemberEmailChanged {
                new_email,
                changed_at,
                ..
            } => {
                sqlx::query("UPDATE member_list SET email = $2, updated_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(new_email)
                    .bind(changed_at)
                    .execute(&mut *conn)
                    .await?;
            }
            MemberEvent::MemberStatusChanged { to, changed_at, .. } => {
                sqlx::query("UPDATE member_list SET status = $2, updated_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(to.as_str())
                    .bind(changed_at)
                    .execute(&mut *conn)
                    .await?;
            }
            MemberEvent::MemberStripeCustomerLinked { .. }
            | MemberEvent::MemberLoggedIn { .. }
            | MemberEvent::NewsletterSubscribed { .. }
            | MemberEvent::NewsletterUnsubscribed { .. } => {}
        }
        Ok(())
    }
}
