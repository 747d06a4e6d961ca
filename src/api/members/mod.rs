//! Members, as the admin manages them: `/v1/members`. The operations are here; their request
//! and response types in `json.rs` and `responses.rs`, the writes in `write.rs`, the read
//! queries in `queries.rs`.

mod json;
mod queries;
mod responses;
mod write;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use uuid::Uuid;

use super::auth::AdminAuth;
use super::problem::{db_error, Problem};
use super::state::{ApiTags, RequestId, State};
use crate::store::{Actor, EventMetadata};

pub use json::*;
use queries::member_detail;
pub(crate) use queries::{email_disabled, find_member};
pub(crate) use queries::{list_members, timeline, ListFilter};
pub use responses::*;
pub(crate) use write::erase_problem;

pub struct MembersApi {
    pub state: State,
}

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
            label: None,
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

    /// Export members as CSV
    ///
    /// Every member the filters keep, oldest first, streamed: Ghost's columns (`id`, `email`,
    /// `name`, `note`, `subscribed_to_emails`, `complimentary_plan`, `stripe_customer_id`,
    /// `created_at`, `labels` comma-separated), then `newsletters` (names, comma-separated),
    /// `status` and `source`. `memberledger members export` writes the same file.
    #[oai(path = "/export.csv", method = "get", operation_id = "exportMembers")]
    async fn export(
        &self,
        _auth: AdminAuth,
        /// Only members with this status.
        status: Query<Option<MemberStatusDto>>,
        /// Only members with this label (exact).
        #[oai(validator(max_length = 191, pattern = "^[^\\x00]*$"))]
        label: Query<Option<String>>,
        /// Only members subscribed to this newsletter.
        newsletter: Query<Option<Uuid>>,
        /// Only members created after this time (exclusive).
        created_after: Query<Option<DateTime<Utc>>>,
        /// Only members created before this time (exclusive).
        created_before: Query<Option<DateTime<Utc>>>,
    ) -> ExportMembersResponse {
        let filter = crate::members_export::ExportFilter {
            status: status.0.map(|s| s.as_str().to_owned()),
            label: label.0,
            newsletter: newsletter.0,
            created_after: created_after.0,
            created_before: created_before.0,
        };
        let body = poem::Body::from_bytes_stream(crate::members_export::stream(
            self.state.pool.clone(),
            filter,
        ));
        let file = format!(
            "attachment; filename=\"members-{}.csv\"",
            Utc::now().format("%Y-%m-%d")
        );
        ExportMembersResponse::Ok(poem_openapi::payload::Binary(body), file)
    }

    /// Get a member
    #[oai(path = "/:id", method = "get", operation_id = "getMember")]
    async fn get(
        &self,
        _auth: AdminAuth,
        keys: Data<&crate::web::WebKeys>,
        id: Path<Uuid>,
    ) -> GetMemberResponse {
        match member_detail(&self.state, &keys.links, id.0).await {
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

    /// Enable a member's email
    ///
    /// Lifts the suppression set when the member's address refused mail for good (a permanent
    /// SMTP failure): member emails are sent to it again. A no-op when it is not disabled.
    #[oai(
        path = "/:id/email/enable",
        method = "post",
        operation_id = "enableMemberEmail"
    )]
    async fn enable_email(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        keys: Data<&crate::web::WebKeys>,
        id: Path<Uuid>,
    ) -> EnableMemberEmailResponse {
        let metadata =
            crate::store::EventMetadata::for_request(&request_id.0 .0, crate::store::Actor::Admin);
        if let Err(err) = crate::members::enable_email(&self.state.members, id.0, metadata).await {
            return super::problem::command_error(err).into();
        }
        match member_detail(&self.state, &keys.links, id.0).await {
            Ok(Some(member)) => EnableMemberEmailResponse::Ok(Json(member)),
            Ok(None) => Problem::not_found("no member has this id").into(),
            Err(problem) => problem.into(),
        }
    }

    /// Give a member a tier for free
    ///
    /// Complimentary access: the member's status becomes `comped` (unless a subscription pays:
    /// `paid` wins), and they get the license a paid subscription to the tier would. With
    /// `until` it ends on its own then. Replaces the tier or end of the access they have.
    #[oai(
        path = "/:id/complimentary",
        method = "put",
        operation_id = "setMemberComplimentary"
    )]
    async fn put_complimentary(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        keys: Data<&crate::web::WebKeys>,
        id: Path<Uuid>,
        body: Json<ComplimentaryRequest>,
    ) -> SetComplimentaryResponse {
        if let Err(problem) = self.set_complimentary(&request_id, id.0, body.0).await {
            return problem.into();
        }
        match member_detail(&self.state, &keys.links, id.0).await {
            Ok(Some(member)) => SetComplimentaryResponse::Ok(Json(member)),
            Ok(None) => Problem::not_found("no member has this id").into(),
            Err(problem) => problem.into(),
        }
    }

    /// Take a member's complimentary access away
    ///
    /// The status goes back to what the subscriptions say, and the comp's license is
    /// deactivated. A no-op when the member has none.
    #[oai(
        path = "/:id/complimentary",
        method = "delete",
        operation_id = "endMemberComplimentary"
    )]
    async fn delete_complimentary(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        keys: Data<&crate::web::WebKeys>,
        id: Path<Uuid>,
    ) -> EndComplimentaryResponse {
        if let Err(problem) = self.end_complimentary(&request_id, id.0).await {
            return problem.into();
        }
        match member_detail(&self.state, &keys.links, id.0).await {
            Ok(Some(member)) => EndComplimentaryResponse::Ok(Json(member)),
            Ok(None) => Problem::not_found("no member has this id").into(),
            Err(problem) => problem.into(),
        }
    }

    /// Erase a member
    ///
    /// Erases the member's personal data (GDPR): email, name, note, attribution URLs and
    /// activation addresses are gone from every read model and export and can no longer be
    /// read from the event log, which keeps every event (crypto-shredding). The email is free
    /// for a new member at once. Subscriptions Stripe has not ended are refused with 409 or
    /// canceled first, and the Stripe customer kept or deleted, as configured.
    #[oai(path = "/:id", method = "delete", operation_id = "eraseMember")]
    async fn erase(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        id: Path<Uuid>,
    ) -> EraseMemberResponse {
        let metadata = EventMetadata::for_request(&request_id.0 .0, Actor::Admin);
        match self.state.erase_member(id.0, metadata).await {
            Ok(()) => EraseMemberResponse::Erased,
            Err(err) => write::erase_problem(err).into(),
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
