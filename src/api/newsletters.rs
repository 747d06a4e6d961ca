//! `/v1/newsletters`: the newsletters members can subscribe to (admin).

use aggregates::{NewsletterCommand, NewsletterStatus};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Enum, Object, OpenApi};
use uuid::Uuid;

use super::auth::AdminAuth;
use super::problem::api_response;
use super::problem::{command_error, db_error};
use super::problem::{FieldError, Problem};
use super::state::{ApiTags, RequestId, State};
use crate::store::{Actor, EventMetadata};

pub struct NewslettersApi {
    pub state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "NewsletterStatus", rename_all = "snake_case")]
pub enum NewsletterStatusDto {
    Active,
    /// Kept for history; members cannot subscribe.
    Archived,
}

impl From<NewsletterStatusDto> for NewsletterStatus {
    fn from(value: NewsletterStatusDto) -> Self {
        match value {
            NewsletterStatusDto::Active => Self::Active,
            NewsletterStatusDto::Archived => Self::Archived,
        }
    }
}

/// A newsletter.
#[derive(Debug, Clone, Object, sqlx::FromRow)]
#[oai(rename = "Newsletter")]
pub struct NewsletterView {
    pub id: Uuid,
    pub name: String,
    #[oai(nullable)]
    pub description: Option<String>,
    /// `active` or `archived`.
    pub status: String,
    /// New members who sign up without choosing are subscribed to it.
    pub subscribe_on_signup: bool,
    /// Members subscribed now.
    pub member_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new newsletter; `status` defaults to `active`.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct CreateNewsletterRequest {
    #[oai(validator(min_length = 1, max_length = 191, pattern = "^[^\\x00]*$"))]
    pub name: String,
    #[oai(validator(max_length = 2000, pattern = "^[^\\x00]*$"))]
    pub description: Option<String>,
    // Documented on the struct: a doc comment on an enum-typed property wraps its `$ref` in an
    // `allOf`, which client generators (openapi-python-client) reject.
    pub status: Option<NewsletterStatusDto>,
    /// Default `false`.
    #[oai(default)]
    pub subscribe_on_signup: bool,
}

/// Changes; absent properties stay, `description: null` clears it.
#[derive(Debug, Clone, Object)]
pub struct UpdateNewsletterRequest {
    #[oai(validator(min_length = 1, max_length = 191, pattern = "^[^\\x00]*$"))]
    pub name: Option<String>,
    #[oai(validator(max_length = 2000, pattern = "^[^\\x00]*$"))]
    pub description: MaybeUndefined<String>,
    pub status: Option<NewsletterStatusDto>,
    pub subscribe_on_signup: Option<bool>,
}

#[derive(Debug, Clone, Object)]
pub struct NewsletterList {
    pub items: Vec<NewsletterView>,
}

macro_rules! newsletter_response {
    ($name:ident, $ok_status:literal, $ok_doc:literal, $ok:ty $(, $extra:ident)*) => {
        api_response! {
            pub enum $name {
                #[doc = $ok_doc]
                #[oai(status = $ok_status)]
                Ok(Json<$ok>),
            }
            problems {
                /// The request is malformed.
                400 => BadRequest,
                /// No valid admin token.
                401 => Unauthorized,
                /// No newsletter has this id.
                404 => NotFound,
                /// The body is not `application/json`.
                415 => UnsupportedMediaType,
                /// Fields failed validation; `errors` names them.
                422 => Invalid,
            }
        }
    };
}

newsletter_response!(
    CreateNewsletterResponse,
    201,
    "The newsletter was created.",
    NewsletterView
);
newsletter_response!(NewsletterResponse, 200, "The newsletter.", NewsletterView);
newsletter_response!(
    ListNewslettersResponse,
    200,
    "Every newsletter, active first.",
    NewsletterList
);

fn text_field(field: &str, value: &str, max: usize) -> Result<Option<String>, Problem> {
    let trimmed = value.trim();
    if trimmed.chars().count() > max {
        return Err(Problem::validation(vec![FieldError::new(
            field,
            format!("must be at most {max} characters"),
        )]));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

#[OpenApi(prefix_path = "/v1/newsletters", tag = "ApiTags::Newsletters")]
impl NewslettersApi {
    /// Create a newsletter
    #[oai(path = "/", method = "post", operation_id = "createNewsletter")]
    async fn create(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        body: Json<CreateNewsletterRequest>,
    ) -> CreateNewsletterResponse {
        let body = body.0;
        let result = async {
            let name = text_field("name", &body.name, 191)?.ok_or_else(|| {
                Problem::validation(vec![FieldError::new("name", "must not be blank")])
            })?;
            let description = match body.description.as_deref() {
                Some(d) => text_field("description", d, 2000)?,
                None => None,
            };
            let id = Uuid::now_v7();
            let command = NewsletterCommand::CreateNewsletter {
                newsletter_id: id,
                name,
                description,
                status: body.status.map_or(NewsletterStatus::Active, Into::into),
                subscribe_on_signup: body.subscribe_on_signup,
                at: Utc::now(),
            };
            self.execute(id, command, &request_id).await?;
            find(&self.state, id)
                .await?
                .ok_or_else(|| Problem::unavailable("created but not readable yet; retry"))
        }
        .await;
        match result {
            Ok(newsletter) => CreateNewsletterResponse::Ok(Json(newsletter)),
            Err(problem) => problem.into(),
        }
    }

    /// List newsletters
    #[oai(path = "/", method = "get", operation_id = "listNewsletters")]
    async fn list(&self, _auth: AdminAuth) -> ListNewslettersResponse {
        let rows: Result<Vec<NewsletterView>, _> =
            sqlx::query_as(&format!("{SELECT} ORDER BY n.status, n.created_at, n.id"))
                .fetch_all(&self.state.pool)
                .await;
        match rows {
            Ok(items) => ListNewslettersResponse::Ok(Json(NewsletterList { items })),
            Err(err) => db_error(err).into(),
        }
    }

    /// Get a newsletter
    #[oai(path = "/:id", method = "get", operation_id = "getNewsletter")]
    async fn get(&self, _auth: AdminAuth, id: Path<Uuid>) -> NewsletterResponse {
        match find(&self.state, id.0).await {
            Ok(Some(n)) => NewsletterResponse::Ok(Json(n)),
            Ok(None) => Problem::not_found("no newsletter has this id").into(),
            Err(problem) => problem.into(),
        }
    }

    /// Update a newsletter
    ///
    /// Rename, describe, archive or reactivate it, or change whether signups get it.
    #[oai(path = "/:id", method = "patch", operation_id = "updateNewsletter")]
    async fn update(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        id: Path<Uuid>,
        body: Json<UpdateNewsletterRequest>,
    ) -> NewsletterResponse {
        let body = body.0;
        let result = async {
            let name = match body.name.as_deref() {
                Some(n) => Some(text_field("name", n, 191)?.ok_or_else(|| {
                    Problem::validation(vec![FieldError::new("name", "must not be blank")])
                })?),
                None => None,
            };
            let description = match &body.description {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(d) => Some(text_field("description", d, 2000)?),
            };
            let command = NewsletterCommand::UpdateNewsletter {
                name,
                description,
                status: body.status.map(Into::into),
                subscribe_on_signup: body.subscribe_on_signup,
                at: Utc::now(),
            };
            self.execute(id.0, command, &request_id).await?;
            find(&self.state, id.0)
                .await?
                .ok_or_else(|| Problem::not_found("no newsletter has this id"))
        }
        .await;
        match result {
            Ok(newsletter) => NewsletterResponse::Ok(Json(newsletter)),
            Err(problem) => problem.into(),
        }
    }
}

const SELECT: &str = "SELECT n.id, n.name, n.description, n.status, n.subscribe_on_signup,
        (SELECT count(*) FROM member_newsletters m WHERE m.newsletter_id = n.id) AS member_count,
        n.created_at, n.updated_at
     FROM newsletters n";

async fn find(state: &State, id: Uuid) -> Result<Option<NewsletterView>, Problem> {
    sqlx::query_as(&format!("{SELECT} WHERE n.id = $1"))
        .bind(id)
        .fetch_optional(&state.pool)
        .await
        .map_err(db_error)
}

impl NewslettersApi {
    async fn execute(
        &self,
        id: Uuid,
        command: NewsletterCommand,
        request_id: &RequestId,
    ) -> Result<(), Problem> {
        let metadata = EventMetadata::for_request(&request_id.0, Actor::Admin);
        self.state
            .newsletters
            .execute(&id.to_string(), command, metadata)
            .await
            .map_err(command_error)?;
        Ok(())
    }
}

impl poem_openapi::types::Example for CreateNewsletterRequest {
    fn example() -> Self {
        Self {
            name: "Weekly".into(),
            description: Some("The week's posts, every Friday.".into()),
            status: None,
            subscribe_on_signup: true,
        }
    }
}
