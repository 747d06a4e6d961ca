//! `/v1/members`: the admin's view of members.

use aggregates::{
    AttributionContext, EmailAddress, Labels, MemberCommand, MemberName, MemberSource, Note,
    ValueError,
};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use uuid::Uuid;

use super::auth::AdminAuth;
use super::cursor;
use super::problem::bad_request;
use super::problem::{command_error, db_error};
use super::problem::{FieldError, Problem};
use super::state::{ApiTags, RequestId, State};
use crate::members::{self, CreateMemberError, NewMember};
use crate::store::{Actor, EventMetadata};

/// Read models a member write is visible in once it returns.
const MEMBER_READ_MODELS: &[&str] = &["member_list", "members_created_events"];

pub struct MembersApi {
    pub state: State,
}

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
    #[oai(validator(min_length = 3, max_length = 254))]
    pub email: String,
    #[oai(validator(max_length = 191))]
    pub name: Option<String>,
    #[oai(validator(max_length = 2000))]
    pub note: Option<String>,
    #[oai(validator(max_items = 100))]
    pub labels: Option<Vec<String>>,
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

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum CreateMemberResponse {
    /// The member was created.
    #[oai(status = 201)]
    Created(Json<MemberView>, #[oai(header = "Location")] String),
    /// The body is not valid JSON of the expected shape.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No valid admin token.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// A member with this email already exists.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// Fields failed validation; `errors` names them.
    #[oai(status = 422, content_type = "application/problem+json")]
    Invalid(Json<Problem>),
    /// The body is not `application/json`.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// An unexpected error; it is logged under the request id.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// The database is unavailable; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ListMembersResponse {
    /// A page of members.
    #[oai(status = 200)]
    Ok(Json<MemberPage>),
    /// A query parameter is invalid.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No valid admin token.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// A query parameter is out of range.
    #[oai(status = 422, content_type = "application/problem+json")]
    Invalid(Json<Problem>),
    /// An unexpected error; it is logged under the request id.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// The database is unavailable; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum MemberDashboardResponse {
    /// The member's dashboard.
    #[oai(status = 200)]
    Ok(Json<super::dashboard::Dashboard>),
    /// The id is not a UUID.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No valid admin token.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// No member has this id.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// An unexpected error; it is logged under the request id.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// The database is unavailable; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

super::problem::problem_responses!(MemberDashboardResponse {
    400 => BadRequest, 401 => Unauthorized, 404 => NotFound
});

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum TimelineResponse {
    /// A page of the member's events.
    #[oai(status = 200)]
    Ok(Json<TimelinePage>),
    /// The id, a query parameter or the cursor is malformed.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No valid admin token.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// No member has this id.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// A query parameter is out of range.
    #[oai(status = 422, content_type = "application/problem+json")]
    Invalid(Json<Problem>),
    /// An unexpected error; it is logged under the request id.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// The database is unavailable; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum GetMemberResponse {
    /// The member, with subscriptions and license count.
    #[oai(status = 200)]
    Ok(Json<MemberDetail>),
    /// The id is not a UUID.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No valid admin token.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// No member has this id.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// An unexpected error; it is logged under the request id.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// The database is unavailable; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum UpdateMemberResponse {
    /// The member after the change.
    #[oai(status = 200)]
    Ok(Json<MemberView>),
    /// The body is not valid JSON of the expected shape, or the id is not a UUID.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No valid admin token.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// No member has this id.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// Another member has this email.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// Fields failed validation; `errors` names them.
    #[oai(status = 422, content_type = "application/problem+json")]
    Invalid(Json<Problem>),
    /// The body is not `application/json`.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// An unexpected error; it is logged under the request id.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// The database is unavailable; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

super::problem::problem_responses!(CreateMemberResponse {
    400 => BadRequest, 401 => Unauthorized, 409 => Conflict, 415 => UnsupportedMediaType, 422 => Invalid
});
super::problem::problem_responses!(ListMembersResponse {
    400 => BadRequest, 401 => Unauthorized, 422 => Invalid
});
super::problem::problem_responses!(TimelineResponse {
    400 => BadRequest, 401 => Unauthorized, 404 => NotFound, 422 => Invalid
});
super::problem::problem_responses!(GetMemberResponse {
    400 => BadRequest, 401 => Unauthorized, 404 => NotFound
});
super::problem::problem_responses!(UpdateMemberResponse {
    400 => BadRequest, 401 => Unauthorized, 404 => NotFound, 409 => Conflict, 415 => UnsupportedMediaType, 422 => Invalid
});

#[OpenApi(prefix_path = "/v1/members", tag = "ApiTags::Members")]
impl MembersApi {
    /// Create a member
    ///
    /// Creates a member with a unique email (compared case-insensitively). The response is
    /// sent once the member is visible to `GET /v1/members/{id}` and the member list.
    #[oai(path = "/", method = "post", operation_id = "createMember")]
    async fn create(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        body: Json<CreateMemberRequest>,
    ) -> CreateMemberResponse {
        match self.create_member(&request_id, body.0).await {
            Ok(member) => {
                let location = format!("/v1/members/{}", member.id);
                CreateMemberResponse::Created(Json(member), location)
            }
            Err(problem) => problem.into(),
        }
    }

    /// List members
    ///
    /// Newest first, filtered, paged with an opaque cursor.
    #[oai(path = "/", method = "get", operation_id = "listMembers")]
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per query parameter"
    )]
    async fn list(
        &self,
        _auth: AdminAuth,
        /// Only members with this status.
        status: Query<Option<MemberStatusDto>>,
        /// Case-insensitive substring of the email or name.
        #[oai(validator(max_length = 191, pattern = "^[^\\x00]*$"))]
        search: Query<Option<String>>,
        /// Only members subscribed to this newsletter.
        newsletter: Query<Option<Uuid>>,
        /// Only members created after this time (exclusive).
        created_after: Query<Option<DateTime<Utc>>>,
        /// Only members created before this time (exclusive).
        created_before: Query<Option<DateTime<Utc>>>,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<i64>,
        /// `next_cursor` of the previous page.
        #[oai(validator(max_length = 200))]
        cursor: Query<Option<String>>,
    ) -> ListMembersResponse {
        let filter = ListFilter {
            status: status.0,
            search: search.0,
            newsletter: newsletter.0,
            created_after: created_after.0,
            created_before: created_before.0,
            limit: limit.0,
            cursor: cursor.0,
        };
        match list_members(&self.state, filter).await {
            Ok(page) => ListMembersResponse::Ok(Json(page)),
            Err(problem) => problem.into(),
        }
    }

    /// Get a member
    #[oai(path = "/:id", method = "get", operation_id = "getMember")]
    async fn get(&self, _auth: AdminAuth, id: Path<Uuid>) -> GetMemberResponse {
        match member_detail(&self.state, id.0).await {
            Ok(Some(member)) => GetMemberResponse::Ok(Json(member)),
            Ok(None) => Problem::not_found("no member has this id").into(),
            Err(problem) => problem.into(),
        }
    }

    /// A member's dashboard
    ///
    /// What the member sees at `GET /v1/me/dashboard`.
    #[oai(
        path = "/:id/dashboard",
        method = "get",
        operation_id = "getMemberDashboard"
    )]
    async fn dashboard(&self, _auth: AdminAuth, id: Path<Uuid>) -> MemberDashboardResponse {
        match super::dashboard::load(&self.state.pool, id.0).await {
            Ok(Some(dashboard)) => MemberDashboardResponse::Ok(Json(dashboard)),
            Ok(None) => Problem::not_found("no member has this id").into(),
            Err(err) => db_error(err).into(),
        }
    }

    /// A member's timeline
    ///
    /// Everything that happened to the member (profile changes, status changes, subscription
    /// changes, payments, licenses), newest first.
    #[oai(
        path = "/:id/timeline",
        method = "get",
        operation_id = "getMemberTimeline"
    )]
    async fn timeline(
        &self,
        _auth: AdminAuth,
        id: Path<Uuid>,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<i64>,
        /// `next_cursor` of the previous page.
        #[oai(validator(max_length = 200))]
        cursor: Query<Option<String>>,
    ) -> TimelineResponse {
        match timeline(&self.state, id.0, limit.0, cursor.0.as_deref()).await {
            Ok(page) => TimelineResponse::Ok(Json(page)),
            Err(problem) => problem.into(),
        }
    }

    /// Update a member
    ///
    /// Changes the given properties. A new email must not belong to another member.
    #[oai(path = "/:id", method = "patch", operation_id = "updateMember")]
    async fn update(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        id: Path<Uuid>,
        body: Json<UpdateMemberRequest>,
    ) -> UpdateMemberResponse {
        match self.update_member(&request_id, id.0, body.0).await {
            Ok(member) => UpdateMemberResponse::Ok(Json(member)),
            Err(problem) => problem.into(),
        }
    }
}

fn default_limit() -> i64 {
    20
}

/// Collects every invalid field instead of stopping at the first.
#[derive(Default)]
struct Validation(Vec<FieldError>);

impl Validation {
    fn check<T>(&mut self, field: &str, result: Result<T, ValueError>) -> Option<T> {
        result
            .map_err(|e| self.0.push(FieldError::new(field, e.reason())))
            .ok()
    }

    fn finish(self) -> Result<(), Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(self.0))
        }
    }
}

impl MembersApi {
    async fn create_member(
        &self,
        request_id: &RequestId,
        body: CreateMemberRequest,
    ) -> Result<MemberView, Problem> {
        let mut v = Validation::default();
        let email = v.check("email", EmailAddress::parse(&body.email));
        let name = v.check(
            "name",
            body.name.as_deref().map(MemberName::parse).transpose(),
        );
        let note = v.check("note", body.note.as_deref().map(Note::parse).transpose());
        let labels = v.check(
            "labels",
            Labels::parse(body.labels.as_deref().unwrap_or_default()),
        );
        v.finish()?;
        let (Some(email), Some(name), Some(note), Some(labels)) = (email, name, note, labels)
        else {
            return Err(Problem::internal());
        };
        let source = match body.source.unwrap_or(CreateSourceDto::Admin) {
            CreateSourceDto::Admin => MemberSource::Admin,
            CreateSourceDto::Api => MemberSource::Api,
            CreateSourceDto::Import => MemberSource::Import,
        };

        let context = match source {
            MemberSource::Api => AttributionContext::Api,
            MemberSource::Import => AttributionContext::Import,
            _ => AttributionContext::Admin,
        };
        let new = NewMember {
            email,
            name: name.flatten(),
            note: note.flatten(),
            labels,
            source,
            attribution: Some(aggregates::attribution::for_context(context)),
            newsletters: Vec::new(),
        };
        let (member_id, position) = members::create(
            &self.state.pool,
            &self.state.members,
            new,
            metadata(request_id),
        )
        .await
        .map_err(create_error)?;
        self.state
            .read_your_writes(MEMBER_READ_MODELS, position)
            .await;
        find_member(&self.state, member_id).await?.ok_or_else(|| {
            Problem::unavailable("the member was created but is not readable yet; retry the GET")
        })
    }

    async fn update_member(
        &self,
        request_id: &RequestId,
        member_id: Uuid,
        body: UpdateMemberRequest,
    ) -> Result<MemberView, Problem> {
        let mut v = Validation::default();
        let email = body
            .email
            .as_deref()
            .and_then(|e| v.check("email", EmailAddress::parse(e)));
        let name = match body.name {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(name) => v.check("name", MemberName::parse(&name)),
        };
        let note = match body.note {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(note) => v.check("note", Note::parse(&note)),
        };
        let labels = body
            .labels
            .as_deref()
            .and_then(|l| v.check("labels", Labels::parse(l)));
        v.finish()?;

        let aggregate_id = member_id.to_string();
        let mut position = None;
        if name.is_some() || note.is_some() || labels.is_some() {
            let command = MemberCommand::UpdateMember {
                name,
                note,
                labels,
                at: Utc::now(),
            };
            position = self
                .state
                .members
                .execute(&aggregate_id, command, metadata(request_id))
                .await
                .map_err(command_error)?;
        }
        if let Some(email) = email {
            position = members::change_email(
                &self.state.pool,
                &self.state.members,
                member_id,
                email,
                metadata(request_id),
            )
            .await
            .map_err(create_error)?
            .or(position);
        }
        if let Some(position) = position {
            self.state
                .read_your_writes(MEMBER_READ_MODELS, Some(position))
                .await;
        }
        find_member(&self.state, member_id)
            .await?
            .ok_or_else(|| Problem::not_found("no member has this id"))
    }
}

fn metadata(request_id: &RequestId) -> EventMetadata {
    EventMetadata::for_request(&request_id.0, Actor::Admin)
}

fn create_error(err: CreateMemberError) -> Problem {
    match err {
        CreateMemberError::EmailTaken => {
            Problem::conflict("email-taken", "another member has this email")
                .with_field("email", "is already used by another member")
        }
        CreateMemberError::Store(err) => command_error(err),
        CreateMemberError::Database(err) => db_error(err),
    }
}

struct ListFilter {
    status: Option<MemberStatusDto>,
    search: Option<String>,
    newsletter: Option<Uuid>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    limit: i64,
    cursor: Option<String>,
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

async fn member_detail(state: &State, id: Uuid) -> Result<Option<MemberDetail>, Problem> {
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
    Ok(Some(MemberDetail {
        member,
        subscriptions,
        license_count,
        active_license_count,
        attribution,
    }))
}

async fn timeline(
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

async fn list_members(state: &State, filter: ListFilter) -> Result<MemberPage, Problem> {
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
    let status = filter.status.map(|s| match s {
        MemberStatusDto::Free => "free",
        MemberStatusDto::Paid => "paid",
        MemberStatusDto::Comped => "comped",
    });
    let search = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            format!(
                "%{}%",
                s.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            )
        });
    let rows: Vec<MemberRow> = sqlx::query_as(&format!(
        "SELECT {MEMBER_COLUMNS} FROM member_list
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR email ILIKE $2 OR name ILIKE $2)
           AND ($3::timestamptz IS NULL OR created_at > $3)
           AND ($4::timestamptz IS NULL OR created_at < $4)
           AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6))
           AND ($8::uuid IS NULL OR EXISTS (SELECT 1 FROM member_newsletters n
                                            WHERE n.member_id = member_list.id AND n.newsletter_id = $8))
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
