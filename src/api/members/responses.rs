//! One response enum per `/v1/members` operation, every status documented.

use poem_openapi::payload::Json;

use super::json::{MemberDetail, MemberPage, MemberView, TimelinePage};
use crate::api::dashboard::Dashboard;
use crate::api::problem::api_response;

api_response! {
    pub enum CreateMemberResponse {
        /// The member was created.
        #[oai(status = 201)]
        Created(Json<MemberView>, #[oai(header = "Location")] String),
    }
    problems {
        /// The body is not valid JSON of the expected shape.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// A member with this email already exists.
        409 => Conflict,
        /// Fields failed validation; `errors` names them.
        422 => Invalid,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
    }
}

api_response! {
    pub enum ExportMembersResponse {
        /// The CSV file (`text/csv`), streamed.
        #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
        Ok(
            poem_openapi::payload::Binary<poem::Body>,
            #[oai(header = "Content-Disposition")] String,
        ),
    }
    problems {
        /// A query parameter is malformed.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// A query parameter failed validation.
        422 => Invalid,
    }
}

api_response! {
    pub enum ListMembersResponse {
        /// A page of members.
        #[oai(status = 200)]
        Ok(Json<MemberPage>),
    }
    problems {
        /// A query parameter is invalid.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// A query parameter is out of range.
        422 => Invalid,
    }
}

api_response! {
    pub enum MemberDashboardResponse {
        /// The member's dashboard.
        #[oai(status = 200)]
        Ok(Json<Dashboard>),
    }
    problems {
        /// The id is not a UUID.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No member has this id.
        404 => NotFound,
    }
}

api_response! {
    pub enum TimelineResponse {
        /// A page of the member's events.
        #[oai(status = 200)]
        Ok(Json<TimelinePage>),
    }
    problems {
        /// The id, a query parameter or the cursor is malformed.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No member has this id.
        404 => NotFound,
        /// A query parameter is out of range.
        422 => Invalid,
    }
}

api_response! {
    pub enum GetMemberResponse {
        /// The member, with subscriptions and license count.
        #[oai(status = 200)]
        Ok(Json<MemberDetail>),
    }
    problems {
        /// The id is not a UUID.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No member has this id.
        404 => NotFound,
    }
}

api_response! {
    pub enum UpdateMemberResponse {
        /// The member after the change.
        #[oai(status = 200)]
        Ok(Json<MemberView>),
    }
    problems {
        /// The body is not valid JSON of the expected shape, or the id is not a UUID.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No member has this id.
        404 => NotFound,
        /// Another member has this email.
        409 => Conflict,
        /// Fields failed validation; `errors` names them.
        422 => Invalid,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
    }
}

api_response! {
    pub enum EnableMemberEmailResponse {
        /// The member, whose email is enabled (it was, or is now).
        #[oai(status = 200)]
        Ok(Json<MemberDetail>),
    }
    problems {
        /// The id is not a UUID.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No member has this id.
        404 => NotFound,
    }
}

api_response! {
    pub enum SetComplimentaryResponse {
        /// The member with the complimentary access as it now is.
        #[oai(status = 200)]
        Ok(Json<MemberDetail>),
    }
    problems {
        /// The body is not valid JSON of the expected shape, or the id is not a UUID.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No member has this id.
        404 => NotFound,
        /// The tier is unknown or archived, or `until` is not in the future; `errors` names
        /// the field.
        422 => Invalid,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
    }
}

api_response! {
    pub enum EndComplimentaryResponse {
        /// The member without complimentary access (they had none, or it ended now).
        #[oai(status = 200)]
        Ok(Json<MemberDetail>),
    }
    problems {
        /// The id is not a UUID.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No member has this id.
        404 => NotFound,
    }
}

api_response! {
    pub enum EraseMemberResponse {
        /// Erased: the member's personal data is gone from the read models and can no longer
        /// be read from the log; the address is free for a new member.
        #[oai(status = 204)]
        Erased,
    }
    problems {
        /// The id is not a UUID.
        400 => BadRequest,
        /// No valid admin token (or member session, for `DELETE /v1/me`).
        401 => Unauthorized,
        /// No member has this id (or it is erased already).
        404 => NotFound,
        /// The member has subscriptions Stripe has not ended and erasure is configured to
        /// refuse (`ERASURE_ACTIVE_SUBSCRIPTIONS=refuse`); cancel them first.
        409 => Conflict,
        /// Stripe refused or could not be reached while canceling subscriptions or deleting
        /// the customer; nothing was erased. Retry.
        502 => BadGateway,
    }
}
