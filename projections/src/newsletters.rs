//! `newsletters` (each newsletter) and `member_newsletters` (who subscribes to what).

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent, Newsletter, NewsletterEvent};
use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

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

    /// Folds the batch per newsletter and per (member, newsletter) in Rust, then writes each
    /// row once: `newsletters` with one `INSERT` and one `UPDATE`, `member_newsletters` with
    /// one `DELETE` and one `INSERT`.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut newsletters = NewsletterFold::default();
        // Per (member, newsletter): whether the batch unsubscribes (the row goes), and when
        // the first subscription after the last unsubscription was (the row it leaves).
        let mut subscriptions: HashMap<(Uuid, Uuid), (bool, Option<DateTime<Utc>>)> =
            HashMap::new();
        let mut order: Vec<(Uuid, Uuid)> = Vec::new();
        for event in events {
            if event.aggregate_type == Newsletter::TYPE {
                newsletters.add(member_id(event)?, event.decode::<NewsletterEvent>()?);
            } else if event.aggregate_type == Member::TYPE {
                let (newsletter_id, subscribed_at) = match event.decode::<MemberEvent>()? {
                    MemberEvent::NewsletterSubscribed {
                        newsletter_id,
                        subscribed_at,
                    } => (newsletter_id, Some(subscribed_at)),
                    MemberEvent::NewsletterUnsubscribed { newsletter_id, .. } => {
                        (newsletter_id, None)
                    }
                    _ => continue,
                };
                let key = (member_id(event)?, newsletter_id);
                let state = subscriptions.entry(key).or_insert_with(|| {
                    order.push(key);
                    (false, None)
                });
                match subscribed_at {
                    Some(at) => {
                        state.1.get_or_insert(at);
                    }
                    None => *state = (true, None),
                }
            }
        }
        newsletters.write(conn).await?;

        let gone: Vec<&(Uuid, Uuid)> = order
            .iter()
            .filter(|k| subscriptions.get(*k).is_some_and(|s| s.0))
            .collect();
        if !gone.is_empty() {
            sqlx::query(
                "DELETE FROM member_newsletters t
                 USING unnest($1::uuid[], $2::uuid[]) AS g(member_id, newsletter_id)
                 WHERE t.member_id = g.member_id AND t.newsletter_id = g.newsletter_id",
            )
            .bind(gone.iter().map(|k| k.0).collect::<Vec<_>>())
            .bind(gone.iter().map(|k| k.1).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        let kept: Vec<(&(Uuid, Uuid), DateTime<Utc>)> = order
            .iter()
            .filter_map(|k| Some((k, subscriptions.get(k)?.1?)))
            .collect();
        if !kept.is_empty() {
            sqlx::query(
                "INSERT INTO member_newsletters (member_id, newsletter_id, subscribed_at)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(kept.iter().map(|(k, _)| k.0).collect::<Vec<_>>())
            .bind(kept.iter().map(|(k, _)| k.1).collect::<Vec<_>>())
            .bind(kept.iter().map(|(_, at)| *at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// A newsletter's row: every event carries all its editable fields.
struct NewsletterRow {
    id: Uuid,
    name: String,
    description: Option<String>,
    status: &'static str,
    subscribe_on_signup: bool,
    created_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

/// Newsletters created in the batch (inserted) and those it only updates, each once.
#[derive(Default)]
struct NewsletterFold {
    inserts: Vec<NewsletterRow>,
    updates: Vec<NewsletterRow>,
    /// Where each newsletter's row is: `(is_insert, index)`.
    by_id: HashMap<Uuid, (bool, usize)>,
}

impl NewsletterFold {
    fn add(&mut self, id: Uuid, event: NewsletterEvent) {
        match event {
            NewsletterEvent::NewsletterCreated {
                name,
                description,
                status,
                subscribe_on_signup,
                created_at,
                ..
            } => {
                // A second creation stays a second row: the insert fails on the key, as the
                // second of two single inserts would.
                self.inserts.push(NewsletterRow {
                    id,
                    name,
                    description,
                    status: status.as_str(),
                    subscribe_on_signup,
                    created_at: Some(created_at),
                    updated_at: created_at,
                });
                self.by_id.insert(id, (true, self.inserts.len() - 1));
            }
            NewsletterEvent::NewsletterUpdated {
                name,
                description,
                status,
                subscribe_on_signup,
                updated_at,
            } => {
                let row = match self.by_id.get(&id) {
                    Some((true, i)) => &mut self.inserts[*i],
                    Some((false, i)) => &mut self.updates[*i],
                    None => {
                        self.updates.push(NewsletterRow {
                            id,
                            name: String::new(),
                            description: None,
                            status: "",
                            subscribe_on_signup: false,
                            created_at: None,
                            updated_at,
                        });
                        self.by_id.insert(id, (false, self.updates.len() - 1));
                        let last = self.updates.len() - 1;
                        &mut self.updates[last]
                    }
                };
                row.name = name;
                row.description = description;
                row.status = status.as_str();
                row.subscribe_on_signup = subscribe_on_signup;
                row.updated_at = updated_at;
            }
        }
    }

    async fn write(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        if !self.updates.is_empty() {
            let u = &self.updates;
            sqlx::query(
                "UPDATE newsletters n SET name = u.name, description = u.description, status = u.status,
                     subscribe_on_signup = u.subscribe_on_signup, updated_at = u.updated_at
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::timestamptz[])
                      AS u(id, name, description, status, subscribe_on_signup, updated_at)
                 WHERE n.id = u.id",
            )
            .bind(u.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.description.as_deref()).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.status).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.subscribe_on_signup).collect::<Vec<_>>())
            .bind(u.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.inserts.is_empty() {
            let r = &self.inserts;
            sqlx::query(
                "INSERT INTO newsletters (id, name, description, status, subscribe_on_signup, created_at, updated_at)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[],
                                      $6::timestamptz[], $7::timestamptz[])",
            )
            .bind(r.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.description.as_deref()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.status).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.subscribe_on_signup).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.created_at).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
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

    /// Rows keyed by log position, whatever the order: one multi-row `INSERT`.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let (mut ids, mut members, mut methods, mut ats) = (vec![], vec![], vec![], vec![]);
        for event in events {
            if event.aggregate_type != Member::TYPE {
                continue;
            }
            if let MemberEvent::MemberLoggedIn {
                method,
                logged_in_at,
            } = event.decode::<MemberEvent>()?
            {
                ids.push(event.global_position);
                members.push(member_id(event)?);
                methods.push(method.as_str());
                ats.push(logged_in_at);
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO members_login_events (id, member_id, method, created_at)
             SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::timestamptz[])
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(ids)
        .bind(members)
        .bind(methods)
        .bind(ats)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
