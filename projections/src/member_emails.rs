//! `member_emails`: the unique-email lookup, one row per member's current address (lower-cased).
//!
//! Inline: a `MemberCreated` or `MemberEmailChanged` whose address another member holds is
//! refused here, in the appending transaction, so the events roll back with it. This is the
//! one place the rule "one member per email" is enforced; there is no reservation to give back.

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent};
use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{erased_members, member_id, Handles, Mode, Projection, ProjectionError, StoredEvent};

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
            &[
                MemberEvent::CREATED,
                MemberEvent::EMAIL_CHANGED,
                MemberEvent::ERASED,
            ],
        )];
        HANDLES
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    /// Replays the batch in memory over the rows it concerns (the holders of its addresses,
    /// the addresses of its members), refusing as one event at a time would (an address
    /// another member holds at that point of the batch), then writes the difference: one
    /// `DELETE` of the addresses given up, one `INSERT` of those taken. Addresses compare as
    /// `EmailAddress::normalized` does.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        // An erased member's address is free at once, also for a member created later in the
        // same batch (the erased member's own events before its erasure, read again, carry
        // the erased placeholder, not the address).
        let erased = erased_members(events)?;
        if !erased.is_empty() {
            sqlx::query("DELETE FROM member_emails WHERE member_id = ANY($1)")
                .bind(&erased)
                .execute(&mut *conn)
                .await?;
        }
        let mut claims = Vec::with_capacity(events.len());
        let mut only_creations = true;
        for event in events {
            let email = match event.decode::<MemberEvent>()? {
                MemberEvent::MemberCreated { email, .. } => email,
                MemberEvent::MemberEmailChanged { new_email, .. } => {
                    only_creations = false;
                    new_email
                }
                _ => continue,
            };
            claims.push((email.to_lowercase(), member_id(event)?));
        }
        if claims.is_empty() {
            return Ok(());
        }
        let emails: Vec<&str> = claims.iter().map(|(e, _)| e.as_str()).collect();
        let members: Vec<Uuid> = claims.iter().map(|(_, m)| *m).collect();
        // Members created in this batch, nothing else: a member's creation is its first event,
        // so none of them holds an address yet and there is nothing to release. With distinct
        // addresses, one insert decides (a conflict is another member's address), without
        // reading first: the common case, a command creating one member, is one statement.
        if only_creations && emails.iter().collect::<HashSet<_>>().len() == emails.len() {
            return claim(conn, &emails, &members).await;
        }
        let before: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT email, member_id FROM member_emails
             WHERE email = ANY($1::text[]) OR member_id = ANY($2::uuid[])",
        )
        .bind(&emails)
        .bind(&members)
        .fetch_all(&mut *conn)
        .await?;

        let mut holder: HashMap<String, Uuid> = HashMap::with_capacity(before.len());
        let mut held: HashMap<Uuid, Vec<String>> = HashMap::new();
        for (email, member) in &before {
            holder.insert(email.clone(), *member);
            held.entry(*member).or_default().push(email.clone());
        }
        for (email, member) in claims {
            if holder.get(&email).is_some_and(|held_by| *held_by != member) {
                return Err(refused());
            }
            // The member's old address is given up.
            for old in held
                .insert(member, vec![email.clone()])
                .into_iter()
                .flatten()
            {
                if old != email {
                    holder.remove(&old);
                }
            }
            holder.insert(email, member);
        }

        let before: HashSet<(String, Uuid)> = before.into_iter().collect();
        let released: Vec<&(String, Uuid)> = before
            .iter()
            .filter(|(e, m)| holder.get(e) != Some(m))
            .collect();
        if !released.is_empty() {
            sqlx::query(
                "DELETE FROM member_emails t USING unnest($1::text[], $2::uuid[]) AS r(email, member_id)
                 WHERE t.email = r.email AND t.member_id = r.member_id",
            )
            .bind(released.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>())
            .bind(released.iter().map(|(_, m)| *m).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        let claimed: Vec<(&String, &Uuid)> = holder
            .iter()
            .filter(|(e, m)| !before.contains(&((*e).clone(), **m)))
            .collect();
        if claimed.is_empty() {
            return Ok(());
        }
        // An address another transaction took since the read above is decided by the key: the
        // insert waits for it and then returns no row for that address.
        let emails: Vec<&str> = claimed.iter().map(|(e, _)| e.as_str()).collect();
        let members: Vec<Uuid> = claimed.iter().map(|(_, m)| **m).collect();
        claim(conn, &emails, &members).await
    }
}

/// Gives each member its address; refused when another member holds one of them.
async fn claim(
    conn: &mut PgConnection,
    emails: &[&str],
    members: &[Uuid],
) -> Result<(), ProjectionError> {
    let taken: Vec<String> = sqlx::query_scalar(
        "INSERT INTO member_emails (email, member_id)
         SELECT * FROM unnest($1::text[], $2::uuid[])
         ON CONFLICT (email) DO UPDATE SET member_id = EXCLUDED.member_id
         WHERE member_emails.member_id = EXCLUDED.member_id
         RETURNING email",
    )
    .bind(emails)
    .bind(members)
    .fetch_all(&mut *conn)
    .await?;
    if taken.len() != emails.len() {
        return Err(refused());
    }
    Ok(())
}

fn refused() -> ProjectionError {
    ProjectionError::Refused {
        projection: "member_emails",
        reason: EMAIL_TAKEN,
    }
}
