//! `/v1/me`: a signed-in member's own profile, newsletters, dashboard and licenses. A member
//! session only ever reaches its own member.

use aggregates::{MemberCommand, MemberName};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::dashboard::{self, Dashboard, DashboardLicense};
use super::members::{find_member, MemberStatusDto};
use super::problem::command_error;
use super::problem::db_error;
use super::problem::{FieldError, Problem};
use super::sessions::MemberAuth;
use super::state::{ApiTags, RequestId, State};
use crate::api::problem::api_response;
use crate::store::{Actor, EventMetadata};

pub struct MeApi {
    pub state: State,
}

/// The signed-in member.
#[derive(Debug, Clone, Object)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    #[oai(nullable)]
    pub name: Option<String>,
    pub status: MemberStatusDto,
    /// Every active newsletter, and whether the member subscribes to it.
    pub newsletters: Vec<MyNewsletter>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct MyNewsletter {
    pub id: Uuid,
    pub name: String,
    #[oai(nullable)]
    pub description: Option<String>,
    pub subscribed: bool,
}

/// Changes to the member's own profile; absent properties stay as they are.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct UpdateMeRequest {
    /// `null` clears the name.
    #[oai(validator(max_length = 191))]
    pub name: MaybeUndefined<String>,
    /// The newsletters to be subscribed to, exactly (others are unsubscribed).
    #[oai(validator(max_items = 100))]
    pub newsletters: Option<Vec<Uuid>>,
}

api_response! {
    pub enum MeResponse {
        /// The member.
        #[oai(status = 200)]
        Ok(Json<Me>),
    }
    problems {
        /// The body is not valid JSON of the expected shape.
        400 => BadRequest,
        /// No valid member session.
        401 => Unauthorized,
        /// The session's member does not exist.
        404 => NotFound,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation (e.g. an unknown or archived newsletter).
        422 => Invalid,
    }
}

api_response! {
    pub enum MyDashboardResponse {
        /// The member's dashboard; sections are empty while nothing exists.
        #[oai(status = 200)]
        Ok(Json<Dashboard>),
    }
    problems {
        /// The request is malformed.
        400 => BadRequest,
        /// No valid member session.
        401 => Unauthorized,
    }
}

/// The member's license keys.
#[derive(Debug, Clone, Object)]
pub struct LicenseList {
    pub items: Vec<DashboardLicense>,
}

api_response! {
    pub enum MyLicensesResponse {
        /// The member's license keys, newest first.
        #[oai(status = 200)]
        Ok(Json<LicenseList>),
    }
    problems {
        /// The request is malformed.
        400 => BadRequest,
        /// No valid member session.
        401 => Unauthorized,
    }
}

#[OpenApi(prefix_path = "/v1/me", tag = "ApiTags::Me")]
impl MeApi {
    /// The signed-in member
    #[oai(path = "/", method = "get", operation_id = "getMe")]
    async fn get(&self, session: MemberAuth) -> MeResponse {
        match me(&self.state, session.0.member_id).await {
            Ok(me) => MeResponse::Ok(Json(me)),
            Err(problem) => problem.into(),
        }
    }

    /// Update the signed-in member
    ///
    /// Changes the name and which newsletters the member subscribes to.
    #[oai(path = "/", method = "patch", operation_id = "updateMe")]
    async fn update(
        &self,
        session: MemberAuth,
        request_id: Data<&RequestId>,
        body: Json<UpdateMeRequest>,
    ) -> MeResponse {
        match self
            .update_me(session.0.member_id, &request_id, body.0)
            .await
        {
            Ok(me) => MeResponse::Ok(Json(me)),
            Err(problem) => problem.into(),
        }
    }

    /// Delete my account
    ///
    /// Erases the signed-in member's personal data, as `DELETE /v1/members/{id}` does, and
    /// ends every session of theirs. Refused with 409 while a subscription has not ended
    /// (unless the server cancels them: `ERASURE_ACTIVE_SUBSCRIPTIONS=cancel`).
    #[oai(path = "/", method = "delete", operation_id = "deleteMe")]
    async fn delete(
        &self,
        session: MemberAuth,
        request_id: Data<&RequestId>,
    ) -> super::members::EraseMemberResponse {
        let member_id = session.0.member_id;
        let metadata = EventMetadata::for_request(&request_id.0 .0, Actor::Member(member_id));
        match self.state.erase_member(member_id, metadata).await {
            Ok(()) => super::members::EraseMemberResponse::Erased,
            Err(err) => super::members::erase_problem(err).into(),
        }
    }

    /// The signed-in member's dashboard
    ///
    /// Subscriptions with items and periods, sites, payments and license keys.
    #[oai(path = "/dashboard", method = "get", operation_id = "getMyDashboard")]
    async fn dashboard(&self, session: MemberAuth) -> MyDashboardResponse {
        match dashboard::load(&self.state.pool, session.0.member_id).await {
            Ok(Some(dashboard)) => MyDashboardResponse::Ok(Json(dashboard)),
            Ok(None) => Problem::unavailable("the member is not readable yet; retry").into(),
            Err(err) => db_error(err).into(),
        }
    }

    /// The signed-in member's license keys
    #[oai(path = "/licenses", method = "get", operation_id = "listMyLicenses")]
    async fn licenses(&self, session: MemberAuth) -> MyLicensesResponse {
        match dashboard::licenses(&self.state.pool, session.0.member_id).await {
            Ok(items) => MyLicensesResponse::Ok(Json(LicenseList { items })),
            Err(err) => db_error(err).into(),
        }
    }
}

pub(crate) async fn me(state: &State, member_id: Uuid) -> Result<Me, Problem> {
    let member = find_member(state, member_id)
        .await?
        .ok_or_else(|| Problem::unavailable("the member is not readable yet; retry"))?;
    let newsletters: Vec<MyNewsletter> = sqlx::query_as(
        "SELECT n.id, n.name, n.description,
                EXISTS (SELECT 1 FROM member_newsletters m WHERE m.newsletter_id = n.id AND m.member_id = $1) AS subscribed
         FROM newsletters n WHERE n.status = 'active' ORDER BY n.created_at, n.id",
    )
    .bind(member_id)
    .fetch_all(&state.pool)
    .await
    .map_err(db_error)?;
    Ok(Me {
        id: member.id,
        email: member.email,
        name: member.name,
        status: member.status,
        newsletters,
        created_at: member.created_at,
    })
}

impl MeApi {
    /// Applies `body` (also what the portal's newsletters page saves through).
    pub(crate) async fn update_me(
        &self,
        member_id: Uuid,
        request_id: &RequestId,
        body: UpdateMeRequest,
    ) -> Result<Me, Problem> {
        let state = &self.state;
        let name = match body.name {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(name) => Some(
                MemberName::parse(&name)
                    .map_err(|e| Problem::validation(vec![FieldError::new("name", e.reason())]))?,
            ),
        };
        let mut commands = Vec::new();
        if name.is_some() {
            commands.push(MemberCommand::UpdateMember {
                name,
                note: None,
                labels: None,
                at: Utc::now(),
            });
        }
        if let Some(wanted) = body.newsletters {
            let active: Vec<Uuid> =
                sqlx::query_scalar("SELECT id FROM newsletters WHERE status = 'active'")
                    .fetch_all(&state.pool)
                    .await
                    .map_err(db_error)?;
            if let Some(unknown) = wanted.iter().find(|id| !active.contains(id)) {
                return Err(Problem::validation(vec![FieldError::new(
                    "newsletters",
                    format!("{unknown} is not an active newsletter"),
                )]));
            }
            let current: Vec<Uuid> = sqlx::query_scalar(
                "SELECT newsletter_id FROM member_newsletters WHERE member_id = $1",
            )
            .bind(member_id)
            .fetch_all(&state.pool)
            .await
            .map_err(db_error)?;
            for id in wanted.iter().filter(|id| !current.contains(id)) {
                commands.push(MemberCommand::SubscribeNewsletter {
                    newsletter_id: *id,
                    at: Utc::now(),
                });
            }
            for id in current.iter().filter(|id| !wanted.contains(id)) {
                commands.push(MemberCommand::UnsubscribeNewsletter {
                    newsletter_id: *id,
                    at: Utc::now(),
                });
            }
        }
        for command in commands {
            let metadata = EventMetadata::for_request(&request_id.0, Actor::Member(member_id));
            state
                .members
                .execute(&member_id.to_string(), command, metadata)
                .await
                .map_err(|e| {
                    command_error(e).when_unavailable("the change could not be saved; retry")
                })?;
        }
        me(state, member_id).await
    }
}

impl poem_openapi::types::Example for UpdateMeRequest {
    fn example() -> Self {
        Self {
            name: poem_openapi::types::MaybeUndefined::Value("Ada Lovelace".into()),
            newsletters: Some(vec![uuid::Uuid::from_u128(
                0x0190_a000_0000_7000_8000_0000_0000_0001,
            )]),
        }
    }
}
