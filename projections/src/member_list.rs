//! `member_list`: one row per member, what the admin lists, filters and reads.

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent, MemberStatus};
use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    erased_members, member_id, text_array_literal, Handles, Mode, Projection, ProjectionError,
    StoredEvent,
};

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
                MemberEvent::ERASED,
            ],
        )];
        HANDLES
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    /// Folds the batch per member in Rust (a member created, updated and suspended in one
    /// batch is one row), then writes with one `INSERT` and one `UPDATE` over `unnest`.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut fold = Fold::default();
        for event in events {
            if event.aggregate_type != Member::TYPE {
                continue;
            }
            fold.add(member_id(event)?, event.decode::<MemberEvent>()?);
        }
        fold.write(conn).await?;
        let erased = erased_members(events)?;
        if !erased.is_empty() {
            sqlx::query("DELETE FROM member_list WHERE id = ANY($1)")
                .bind(&erased)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// A member's row as a `MemberCreated` in the batch starts it.
struct NewRow {
    id: Uuid,
    email: String,
    name: Option<String>,
    note: Option<String>,
    labels: Vec<String>,
    status: MemberStatus,
    source: &'static str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Changes to a row that exists before the batch (or not at all: then, as an `UPDATE` of
/// nothing, they change nothing).
struct Changes {
    id: Uuid,
    /// `(name, note, labels)`: `MemberUpdated` carries the whole editable profile.
    profile: Option<(Option<String>, Option<String>, Vec<String>)>,
    email: Option<String>,
    status: Option<MemberStatus>,
    updated_at: DateTime<Utc>,
}

enum Pending {
    Insert(usize),
    Update(usize),
}

#[derive(Default)]
struct Fold {
    inserts: Vec<NewRow>,
    updates: Vec<Changes>,
    by_member: HashMap<Uuid, Pending>,
}

impl Fold {
    fn add(&mut self, id: Uuid, event: MemberEvent) {
        if let MemberEvent::MemberCreated {
            email,
            name,
            note,
            labels,
            source,
            created_at,
            ..
        } = event
        {
            // A second creation of one member stays a second row, so the insert fails on the
            // key as the second of two single inserts would; changes before a creation
            // updated nothing (there was no row) or the creation fails on the key.
            if let Some(Pending::Update(u)) = self.by_member.get(&id) {
                self.updates[*u].profile = None;
                self.updates[*u].email = None;
                self.updates[*u].status = None;
            }
            self.inserts.push(NewRow {
                id,
                email,
                name,
                note,
                labels,
                status: MemberStatus::Free,
                source: source.as_str(),
                created_at,
                updated_at: created_at,
            });
            self.by_member
                .insert(id, Pending::Insert(self.inserts.len() - 1));
            return;
        }
        let (profile, email, status, at) = match event {
            MemberEvent::MemberUpdated {
                name,
                note,
                labels,
                updated_at,
            } => (Some((name, note, labels)), None, None, updated_at),
            MemberEvent::MemberEmailChanged {
                new_email,
                changed_at,
                ..
            } => (None, Some(new_email), None, changed_at),
            MemberEvent::MemberStatusChanged { to, changed_at, .. } => {
                (None, None, Some(to), changed_at)
            }
            MemberEvent::MemberCreated { .. }
            | MemberEvent::MemberStripeCustomerLinked { .. }
            | MemberEvent::MemberLoggedIn { .. }
            | MemberEvent::NewsletterSubscribed { .. }
            | MemberEvent::NewsletterUnsubscribed { .. }
            | MemberEvent::MemberEmailDisabled { .. }
            | MemberEvent::MemberEmailEnabled { .. }
            | MemberEvent::MemberCompGranted { .. }
            | MemberEvent::MemberCompEnded { .. }
            | MemberEvent::MemberErased { .. } => return,
        };
        match self.by_member.get(&id) {
            Some(Pending::Insert(i)) => {
                let row = &mut self.inserts[*i];
                if let Some((name, note, labels)) = profile {
                    (row.name, row.note, row.labels) = (name, note, labels);
                }
                if let Some(email) = email {
                    row.email = email;
                }
                if let Some(status) = status {
                    row.status = status;
                }
                row.updated_at = at;
            }
            Some(Pending::Update(u)) => {
                let row = &mut self.updates[*u];
                if profile.is_some() {
                    row.profile = profile;
                }
                if email.is_some() {
                    row.email = email;
                }
                if status.is_some() {
                    row.status = status;
                }
                row.updated_at = at;
            }
            None => {
                self.updates.push(Changes {
                    id,
                    profile,
                    email,
                    status,
                    updated_at: at,
                });
                self.by_member
                    .insert(id, Pending::Update(self.updates.len() - 1));
            }
        }
    }

    async fn write(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        // Updates first: they are of rows that existed before the batch.
        if !self.updates.is_empty() {
            let u = &self.updates;
            sqlx::query(
                "UPDATE member_list m SET
                     name = CASE WHEN u.has_profile THEN u.name ELSE m.name END,
                     note = CASE WHEN u.has_profile THEN u.note ELSE m.note END,
                     labels = COALESCE(u.labels::text[], m.labels),
                     email = COALESCE(u.email, m.email),
                     status = COALESCE(u.status, m.status),
                     updated_at = u.updated_at
                 FROM unnest($1::uuid[], $2::bool[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::timestamptz[])
                      AS u(id, has_profile, name, note, labels, email, status, updated_at)
                 WHERE m.id = u.id",
            )
            .bind(u.iter().map(|c| c.id).collect::<Vec<_>>())
            .bind(u.iter().map(|c| c.profile.is_some()).collect::<Vec<_>>())
            .bind(
                u.iter()
                    .map(|c| c.profile.as_ref().and_then(|p| p.0.clone()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                u.iter()
                    .map(|c| c.profile.as_ref().and_then(|p| p.1.clone()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                u.iter()
                    .map(|c| c.profile.as_ref().map(|p| text_array_literal(&p.2)))
                    .collect::<Vec<_>>(),
            )
            .bind(u.iter().map(|c| c.email.clone()).collect::<Vec<_>>())
            .bind(
                u.iter()
                    .map(|c| c.status.map(MemberStatus::as_str))
                    .collect::<Vec<_>>(),
            )
            .bind(u.iter().map(|c| c.updated_at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.inserts.is_empty() {
            let r = &self.inserts;
            sqlx::query(
                "INSERT INTO member_list
                     (id, email, name, note, labels, status, source, created_at, updated_at)
                 SELECT id, email, name, note, labels::text[], status, source, created_at, updated_at
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[])
                      AS r(id, email, name, note, labels, status, source, created_at, updated_at)",
            )
            .bind(r.iter().map(|n| n.id).collect::<Vec<_>>())
            .bind(r.iter().map(|n| n.email.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|n| n.name.as_deref()).collect::<Vec<_>>())
            .bind(r.iter().map(|n| n.note.as_deref()).collect::<Vec<_>>())
            .bind(
                r.iter()
                    .map(|n| text_array_literal(&n.labels))
                    .collect::<Vec<_>>(),
            )
            .bind(r.iter().map(|n| n.status.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|n| n.source).collect::<Vec<_>>())
            .bind(r.iter().map(|n| n.created_at).collect::<Vec<_>>())
            .bind(r.iter().map(|n| n.updated_at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
