//! The read queries of `/v1/members`, over the `member_list` and lifecycle read models.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::json::*;
use crate::api::cursor;
use crate::api::problem::{db_error, FieldError, Problem};
use crate::api::state::State;

/// What the member list is narrowed to (the API's query parameters, and the admin console's).
pub(crate) struct ListFilter {
    pub(crate) status: Option<MemberStatusDto>,
    pub(crate) search: Option<String>,
    pub(crate) newsletter: Option<Uuid>,
    /// Only members with this label (exact).
    pub(crate) label: Option<String>,
    pub(crate) created_after: Option<DateTime<Utc>>,
    pub(crate) created_before: Option<DateTime<Utc>>,
    pub(crate) limit: i64,
    pub(crate) cursor: Option<String>,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    id: Uuid,
    email: String,
    name: Option<String>,
    note: Option<String>,
    labels: Vec<String>,
    status: String,
    source: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<MemberRow> for MemberView {
    fn from(row: MemberRow) -> Self {
        let status = match row.status.as_str() {
            "paid" => MemberStatusDto::Paid,
            "comped" => MemberStatusDto::Comped,
            _ => MemberStatusDto::Free,
        };
        let source = match row.source.as_str() {
            "api" => MemberSourceDto::Api,
            "import" => MemberSourceDto::Import,
            "signup" => MemberSourceDto::Signup,
            "stripe" => MemberSourceDto::Stripe,
            _ => MemberSourceDto::Admin,
        };
        Self {
            id: row.id,
            email: row.email,
            name: row.name,
            note: row.note,
            labels: row.labels,
            status,
            source,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A member just created, as its `MemberCreated` makes its member_list row (see
/// `projections::member_list`): free, updated when created.
pub(super) struct CreatedView {
    pub email: String,
    pub name: Option<String>,
    pub note: Option<String>,
    pub labels: Vec<String>,
    pub source: aggregates::MemberSource,
}

impl CreatedView {
    pub fn into_view(self, id: Uuid, created_at: DateTime<Utc>) -> MemberView {
        MemberView::from(MemberRow {
            id,
            email: self.email,
            name: self.name,
            note: self.note,
            labels: self.labels,
            status: aggregates::MemberStatus::Free.as_str().to_owned(),
            source: self.source.as_str().to_owned(),
            created_at,
            updated_at: created_at,
        })
    }
}

const MEMBER_COLUMNS: &str =
    "id, email, name, note, labels, status, source, created_at, updated_at";

pub(crate) async fn find_member(state: &State, id: Uuid) -> Result<Option<MemberView>, Problem> {
    let row: Option<MemberRow> = sqlx::query_as(&format!(
        "SELECT {MEMBER_COLUMNS} FROM member_list WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&state.pool)
    .await
    .map_err(db_error)?;
    Ok(row.map(MemberView::from))
}

/// The member with subscriptions, license counts, attribution and unsubscribe link (signed
/// with `links_key`).
pub(super) async fn member_detail(
    state: &State,
    links_key: &[u8; 32],
    id: Uuid,
) -> Result<Option<MemberDetail>, Problem> {
    let Some(member) = find_member(state, id).await? else {
        return Ok(None);
    };
    let subscriptions: Vec<MemberSubscription> = sqlx::query_as(
        "SELECT id, status, mrr, currency, current_period_end, cancel_at_period_end, created_at
         FROM subscriptions WHERE member_id = $1 ORDER BY created_at DESC, id",
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await
    .map_err(db_error)?;
    let (license_count, active_license_count): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'active') FROM licenses WHERE member_id = $1",
    )
    .bind(id)
    .fetch_one(&state.pool)
    .await
    .map_err(db_error)?;
    let attribution: Option<MemberAttribution> = sqlx::query_as(
        "SELECT attribution_type, attribution_id, attribution_url, referrer_source, referrer_medium, referrer_url,
                utm_source, utm_medium, utm_campaign, utm_term, utm_content
         FROM members_created_events WHERE member_id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await
    .map_err(db_error)?;
    let email_disabled = email_disabled(&state.pool, id).await.map_err(db_error)?;
    let complimentary: Option<Complimentary> = sqlx::query_as(
        "SELECT c.tier_id, t.name AS tier_name, c.until, c.granted_at
         FROM member_comps c JOIN tiers t ON t.id = c.tier_id WHERE c.member_id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await
    .map_err(db_error)?;
    Ok(Some(MemberDetail {
        member,
        subscriptions,
        license_count,
        active_license_count,
        attribution,
        unsubscribe_url: crate::links::unsubscribe_url(&state.public_url, links_key, id),
        email_disabled,
        complimentary,
    }))
}

/// Why the member's email is disabled, while it is.
pub(crate) async fn email_disabled(
    pool: &sqlx::PgPool,
    id: Uuid,
) -> Result<Option<EmailDisabled>, sqlx::Error> {
    sqlx::query_as(
        "SELECT email, reason, disabled_at FROM member_email_suppressions WHERE member_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub(crate) async fn timeline(
    state: &State,
    id: Uuid,
    limit: i64,
    after: Option<&str>,
) -> Result<TimelinePage, Problem> {
    let before = match after {
        None => None,
        Some(c) => Some(cursor::decode_position(c).ok_or_else(|| {
            Problem::bad_request("the cursor is not one this API returned")
                .with_field("cursor", "is malformed")
        })?),
    };
    if find_member(state, id).await?.is_none() {
        return Err(Problem::not_found("no member has this id"));
    }
    let mut items: Vec<TimelineEntry> = sqlx::query_as(
        "SELECT id, event_type, aggregate_type, aggregate_id, summary, data, created_at
         FROM member_timeline
         WHERE member_id = $1 AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await
    .map_err(db_error)?;
    let next_cursor = if items.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        items.pop();
        items.last().map(|e| cursor::encode_position(e.id))
    } else {
        None
    };
    Ok(TimelinePage { items, next_cursor })
}

pub(crate) async fn list_members(state: &State, filter: ListFilter) -> Result<MemberPage, Problem> {
    let after = match filter.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(cursor::decode::<Uuid>(cursor).ok_or_else(|| {
            Problem::bad_request("the cursor is not one this API returned")
                .with_field("cursor", "is malformed")
        })?),
    };
    if let (Some(a), Some(b)) = (filter.created_after, filter.created_before) {
        if a >= b {
            return Err(Problem::validation(vec![FieldError::new(
                "created_before",
                "must be later than created_after",
            )]));
        }
    }
    let status = filter.status.map(MemberStatusDto::as_str);
    let search = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    // Case-insensitive in every script: `ILIKE` (the C locale's, ASCII only) for an ASCII term,
    // which matches the same rows; else both sides lowercased as the server lowercases
    // (`casefold`, ICU's), which costs more per row.
    let beyond_ascii = search.is_some_and(|s| !s.is_ascii());
    let search = search.map(|s| {
        if beyond_ascii {
            crate::db::like_containing(&s.to_lowercase())
        } else {
            crate::db::like_containing(s)
        }
    });
    let rows: Vec<MemberRow> = sqlx::query_as(&format!(
        "SELECT {MEMBER_COLUMNS} FROM member_list
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL
                OR CASE WHEN $10 THEN casefold(email) LIKE $2 OR casefold(name) LIKE $2
                        ELSE email ILIKE $2 OR name ILIKE $2 END)
           AND ($3::timestamptz IS NULL OR created_at > $3)
           AND ($4::timestamptz IS NULL OR created_at < $4)
           AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6))
           AND ($8::uuid IS NULL OR EXISTS (SELECT 1 FROM member_newsletters n
                                            WHERE n.member_id = member_list.id AND n.newsletter_id = $8))
           AND ($9::text IS NULL OR $9 = ANY (labels))
         ORDER BY created_at DESC, id DESC
         LIMIT $7"
    ))
    .bind(status)
    .bind(search)
    .bind(filter.created_after)
    .bind(filter.created_before)
    .bind(after.map(|(t, _)| t))
    .bind(after.map(|(_, id)| id))
    .bind(filter.limit + 1)
    .bind(filter.newsletter)
    .bind(filter.label)
    .bind(beyond_ascii)
    .fetch_all(&state.pool)
    .await
    .map_err(db_error)?;
    let mut items: Vec<MemberView> = rows.into_iter().map(MemberView::from).collect();
    let next_cursor = if items.len() > usize::try_from(filter.limit).unwrap_or(usize::MAX) {
        items.pop();
        items
            .last()
            .map(|m| cursor::encode(m.created_at, &m.id.to_string()))
    } else {
        None
    };
    Ok(MemberPage { items, next_cursor })
}
