//! The request and response bodies of `/v1/members`.

use chrono::{DateTime, Utc};
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Enum, Object};
use uuid::Uuid;

use crate::api::declared::{EmailString, LabelString, TextString};

/// A member.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Member")]
pub struct MemberView {
    pub id: Uuid,
    #[oai(validator(max_length = 254))]
    pub email: String,
    #[oai(nullable)]
    pub name: Option<String>,
    /// The admin's private note.
    #[oai(nullable)]
    pub note: Option<String>,
    pub labels: Vec<String>,
    pub status: MemberStatusDto,
    pub source: MemberSourceDto,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "MemberStatus", rename_all = "snake_case")]
pub enum MemberStatusDto {
    Free,
    Paid,
    Comped,
}

impl MemberStatusDto {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Paid => "paid",
            Self::Comped => "comped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "MemberSource", rename_all = "snake_case")]
pub enum MemberSourceDto {
    Admin,
    Api,
    Import,
    Signup,
    Stripe,
}

/// A member with their subscriptions and license count.
#[derive(Debug, Clone, Object)]
#[oai(rename = "MemberDetail")]
pub struct MemberDetail {
    #[oai(flatten)]
    pub member: MemberView,
    pub subscriptions: Vec<MemberSubscription>,
    /// Licenses issued to the member, active or not.
    pub license_count: i64,
    /// Of which active.
    pub active_license_count: i64,
    /// Where the member came from.
    pub attribution: Option<MemberAttribution>,
    /// The page where the member unsubscribes from newsletters without signing in, for the
    /// emails sent to them (signed with a server key; it works until the key is changed).
    pub unsubscribe_url: String,
    /// Set while the member's email is disabled: their address refused mail for good, so no
    /// member email is sent to it until the member (signed in) or an admin enables it again
    /// (`POST /v1/members/{id}/email/enable`). Absent otherwise.
    #[oai(skip_serializing_if_is_none)]
    pub email_disabled: Option<EmailDisabled>,
    /// Set while the member has complimentary access: a tier given for free
    /// (`PUT /v1/members/{id}/complimentary`). Absent otherwise.
    #[oai(skip_serializing_if_is_none)]
    pub complimentary: Option<Complimentary>,
}

/// A tier given to a member for free.
#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct Complimentary {
    pub tier_id: Uuid,
    /// The tier's name.
    pub tier_name: String,
    /// When it ends on its own; `null`: it does not.
    #[oai(nullable)]
    pub until: Option<DateTime<Utc>>,
    /// When it was given, or last changed.
    pub granted_at: DateTime<Utc>,
}

/// Gives a member a tier for free, or changes the tier or end of the one they have.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ComplimentaryRequest {
    /// The tier; not archived.
    pub tier_id: Uuid,
    /// When it ends on its own, in the future; absent or `null`: without end.
    pub until: Option<DateTime<Utc>>,
}

impl poem_openapi::types::Example for ComplimentaryRequest {
    fn example() -> Self {
        Self {
            tier_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001),
            until: None,
        }
    }
}

/// Why a member's email is disabled.
#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct EmailDisabled {
    /// The address that refused mail.
    pub email: String,
    /// The mail server's permanent refusal.
    pub reason: String,
    pub disabled_at: DateTime<Utc>,
}

/// Where a member came from: the page that led to the signup and the referrer.
#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct MemberAttribution {
    /// `post`, `page`, `tag`, `author` or `url`.
    #[oai(rename = "type")]
    #[sqlx(rename = "attribution_type")]
    #[oai(nullable)]
    pub kind: Option<String>,
    /// The slug of the post, page, tag or author.
    #[sqlx(rename = "attribution_id")]
    #[oai(nullable)]
    pub id: Option<String>,
    /// The path of the page.
    #[sqlx(rename = "attribution_url")]
    #[oai(nullable)]
    pub url: Option<String>,
    #[oai(nullable)]
    pub referrer_source: Option<String>,
    #[oai(nullable)]
    pub referrer_medium: Option<String>,
    #[oai(nullable)]
    pub referrer_url: Option<String>,
    #[oai(nullable)]
    pub utm_source: Option<String>,
    #[oai(nullable)]
    pub utm_medium: Option<String>,
    #[oai(nullable)]
    pub utm_campaign: Option<String>,
    #[oai(nullable)]
    pub utm_term: Option<String>,
    #[oai(nullable)]
    pub utm_content: Option<String>,
}

/// One of a member's Stripe subscriptions.
#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct MemberSubscription {
    /// Stripe's subscription id (`sub_...`).
    pub id: String,
    /// Stripe's status (`active`, `past_due`, `canceled`, ...).
    pub status: String,
    /// Monthly recurring revenue in minor units (0 while trialing, canceled or set to cancel).
    pub mrr: i64,
    #[oai(nullable)]
    pub currency: Option<String>,
    #[oai(nullable)]
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub created_at: DateTime<Utc>,
}

/// One event in a member's history.
#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct TimelineEntry {
    /// The event's global log position.
    pub id: i64,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// A one-line description.
    pub summary: String,
    /// The event's fields.
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// A page of a member's history, newest first.
#[derive(Debug, Clone, Object)]
pub struct TimelinePage {
    pub items: Vec<TimelineEntry>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// How a member created through this API came to be; `admin` when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "CreateMemberSource", rename_all = "snake_case")]
pub enum CreateSourceDto {
    Admin,
    Api,
    Import,
}

#[derive(Debug, Clone, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct CreateMemberRequest {
    /// Unique among members, ignoring case.
    #[oai(validator(min_length = 3, max_length = 254))]
    pub email: EmailString,
    /// Blank means no name; no control characters but tab and newline.
    #[oai(validator(max_length = 191))]
    pub name: Option<TextString>,
    /// The admin's private note; blank means none; no control characters but tab and newline.
    #[oai(validator(max_length = 2000))]
    pub note: Option<TextString>,
    /// Each not blank; duplicates (ignoring case) are dropped, the first spelling kept.
    #[oai(validator(max_items = 100))]
    pub labels: Option<Vec<LabelString>>,
    // No doc comment here: on an enum-typed property it makes the spec wrap the `$ref` in an
    // `allOf`, which client generators (openapi-python-client) reject; the enum documents it.
    pub source: Option<CreateSourceDto>,
}

impl poem_openapi::types::Example for CreateMemberRequest {
    fn example() -> Self {
        Self {
            email: "ada@example.com".into(),
            name: Some("Ada Lovelace".into()),
            note: None,
            labels: Some(vec!["vip".into()]),
            source: None,
        }
    }
}

/// Changes to a member; absent properties stay as they are, `null` clears a name or note.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct UpdateMemberRequest {
    #[oai(validator(min_length = 3, max_length = 254))]
    pub email: Option<String>,
    #[oai(nullable, validator(max_length = 191))]
    pub name: MaybeUndefined<String>,
    #[oai(nullable, validator(max_length = 2000))]
    pub note: MaybeUndefined<String>,
    #[oai(validator(max_items = 100))]
    pub labels: Option<Vec<String>>,
}

/// A page of members, newest first.
#[derive(Debug, Clone, Object)]
pub struct MemberPage {
    pub items: Vec<MemberView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

impl poem_openapi::types::Example for UpdateMemberRequest {
    fn example() -> Self {
        Self {
            email: None,
            name: MaybeUndefined::Value("Ada Lovelace".into()),
            note: MaybeUndefined::Null,
            labels: Some(vec!["vip".into()]),
        }
    }
}
