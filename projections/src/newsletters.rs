//! `newsletters` (each newsletter) and `member_newsletters` (who subscribes to what).

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent, Newsletter, NewsletterEvent};
use async_trait::async_trait;
use sqlx::PgConnection;

use crate::{member_id, Handles, Mode, Projection, ProjectionError, StoredEvent};

pub struct Newsletters;

#[async_trait]
impl Projection for Newsletters {
    fn name(&self) -> &'static str {
        "newsletters"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["newsletters", "member_newsletters"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[
            Handles::all(Newsletter::TYPE),
            Handles::only(
                Member::TYPE,
                &[
                    MemberEvent::NEWSLETTER_SUBSCRIBED,
                    MemberEvent::NEWSLETTER_UNSUBSCRIBED,
                ],
            ),
        ];
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
        if event.aggregate_type == Newsletter::TYPE {
            let id = member_id(event)?;
            match event.decode::<NewsletterEvent>()? {
                NewsletterEvent::NewsletterCreated {
                    name,
                    description,
                    status,
                    subscribe_on_signup,
                    created_at,
                    ..
                } => {
                    sqlx::query(
                        "INSERT INTO newsletters (id, name, description, status, subscribe_on_signup, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    )
                    .bind(id)
                    .bind(name)
                    .bind(description)
                    .bind(status.as_str())
                    .bind(subscribe_on_signup)
                    .bind(created_at)
                    .execute(&mut *conn)
                    .await?;
                }
                NewsletterEvent::NewsletterUpdated {
                    name,
                    description,
                    status,
                    subscribe_on_signup,
                    updated_at,
                } => {
                    sqlx::query(
                        "UPDATE newsletters SET name = $2, description = $3, status = $4, subscribe_on_signup = $5,
                             updated_at = $6
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(name)
                    .bind(description)
                    .bind(status.as_str())
                    .bind(subscribe_on_signup)
                    .bind(updated_at)
                    .execute(&mut *conn)
                    .await?;
                }
            }
        } else if event.aggregate_type == Member::TYPE {
            match event.decode::<MemberEvent>()? {
                MemberEvent::NewsletterSubscribed {
                    newsletter_id,
                    subscribed_at,
                } => {
                    sqlx::query(
                        "INSERT INTO member_newsletters (member_id, newsletter_id, subscribed_at) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(member_id(event)?)
                    .bind(newsletter_id)
                    .bind(subscribed_at)
                    .execute(&mut *conn)
                    .await?;
                }
                MemberEvent::NewsletterUnsubscribed { newsletter_id, .. } => {
                    sqlx::query("DELETE FROM member_newsletters WHERE member_id = $1 AND newsletter_id = $2")
                        .bind(member_id(event)?)
                        .bind(newsletter_id)
                        .execute(&mut *conn)
                        .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `members_login_events`: one row per sign-in.
pub struct MembersLoginEvents;

#[async_trait]
impl Projection for MembersLoginEvents {
    fn name(&self) -> &'static str {
        "members_login_events"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["members_login_events"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::only(Member::TYPE, &[MemberEvent::LOGGED_IN])];
        HANDLES
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Member::TYPE {
            return Ok(());
        }
        if let MemberEvent::MemberLoggedIn {
            method,
            logged_in_at,
        } = event.decode::<MemberEvent>()?
        {
            sqlx::query(
                "INSERT INTO members_login_events (id, member_id, method, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(event.global_position)
            .bind(member_id(event)?)
            .bind(method.as_str())
            .bind(logged_in_at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
