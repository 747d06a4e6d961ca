//! An operator's license management (admin), beside the holds of `license_holds`: grant a key
//! without Stripe (`POST /v1/licenses`), read one, change its expiry or its policy, release one
//! of its domains. Each change is a command on the License aggregate, so it is an event on the
//! member's timeline and shows on the dashboard. The CLI (`memberledger licenses ...`) calls
//! the same functions.

use aggregates::cqrs_es::AggregateError;
use aggregates::{LicenseCommand, LicenseError};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::auth::AdminAuth;
use super::dashboard::{license_by_id, DashboardLicense};
use super::problem::{command_error, db_error, FieldError, Problem};
use super::state::{ApiTags, RequestId, State};
use crate::api::problem::api_response;
use crate::license_policies::{self as policies, Policy};
use crate::store::{Actor, EventMetadata};

pub struct LicenseAdminApi {
    pub state: State,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct GrantLicenseRequest {
    /// The member to grant it to; or give `email`.
    pub member_id: Option<Uuid>,
    /// The member's email address (an existing member's); or give `member_id`.
    #[oai(validator(max_length = 254))]
    pub email: Option<String>,
    /// Its policy; none: one domain, no expiry of its own.
    pub policy_id: Option<String>,
    /// When it expires; default: as its policy says (`duration` days from now), else never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Why it is granted (a trial, a partner, support).
    #[oai(validator(max_length = 500))]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ChangeExpiryRequest {
    /// The new expiry; null: it does not expire on its own. A time in the past ends it now
    /// (it validates as `EXPIRED`).
    #[oai(nullable)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ChangePolicyRequest {
    /// The policy; null: none (one domain, no expiry of its own). The key's expiry becomes
    /// what the policy gives a key issued when this one was (change it afterwards to differ).
    #[oai(nullable)]
    pub policy_id: Option<String>,
}

api_response! {
    pub enum GrantLicenseResponse {
        /// The key, granted.
        #[oai(status = 201)]
        Created(Json<DashboardLicense>),
    }
    problems {
        /// The body is not valid JSON of the expected shape.
        400 => BadRequest,
        /// No admin token.
        401 => Unauthorized,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation: neither or both of `member_id` and `email`, no such member
        /// or policy, or `expires_at` in the past.
        422 => Invalid,
    }
}

api_response! {
    pub enum LicenseResponse {
        /// The license as it is now.
        #[oai(status = 200)]
        Ok(Json<DashboardLicense>),
    }
    problems {
        /// The request is malformed.
        400 => BadRequest,
        /// No admin token.
        401 => Unauthorized,
        /// No license has this id.
        404 => NotFound,
        /// Refused: `/problems/license-revoked` (a revoked license is final).
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation (`policy_id`: no such policy).
        422 => Invalid,
    }
}

#[OpenApi(tag = "ApiTags::Licenses")]
impl LicenseAdminApi {
    /// Grant a license key
    ///
    /// Issues a key to a member without Stripe (a trial, a partner, support): a key activated
    /// on domains (`POST /v1/me/licenses/{key}/activation`) under its policy's machine limit.
    /// It is active until it expires, is suspended or is revoked.
    #[oai(path = "/v1/licenses", method = "post", operation_id = "grantLicense")]
    async fn grant(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        body: Json<GrantLicenseRequest>,
    ) -> GrantLicenseResponse {
        match self.grant_license(&request_id, body.0).await {
            Ok(license) => GrantLicenseResponse::Created(Json(license)),
            Err(problem) => problem.into(),
        }
    }

    /// Get a license
    #[oai(path = "/v1/licenses/:id", method = "get", operation_id = "getLicense")]
    async fn get(&self, _auth: AdminAuth, id: Path<Uuid>) -> LicenseResponse {
        license_by_id(&self.state.pool, id.0).await.into()
    }

    /// Extend or shorten a license's expiry
    #[oai(
        path = "/v1/licenses/:id/expiry",
        method = "put",
        operation_id = "changeLicenseExpiry"
    )]
    async fn change_expiry(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        id: Path<Uuid>,
        body: Json<ChangeExpiryRequest>,
    ) -> LicenseResponse {
        self.set_expiry(&request_id, id.0, body.0.expires_at)
            .await
            .into()
    }

    /// Change a license's policy
    #[oai(
        path = "/v1/licenses/:id/policy",
        method = "put",
        operation_id = "changeLicensePolicy"
    )]
    async fn change_policy(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        id: Path<Uuid>,
        body: Json<ChangePolicyRequest>,
    ) -> LicenseResponse {
        self.set_policy(&request_id, id.0, body.0.policy_id.as_deref())
            .await
            .into()
    }

    /// Release one domain of a license
    ///
    /// Frees one activation (machine) of a key, so that its member can activate another
    /// domain. Answers the license also when it was not activated there.
    #[oai(
        path = "/v1/licenses/:id/machines/:domain",
        method = "delete",
        operation_id = "releaseLicenseMachine"
    )]
    async fn release_machine(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        id: Path<Uuid>,
        /// The domain, as the license lists it (`*.example.com` for a pattern).
        domain: Path<String>,
    ) -> LicenseResponse {
        let command = LicenseCommand::ReleaseDomain {
            domain: Some(domain.0.trim().to_ascii_lowercase()),
            at: Utc::now(),
        };
        self.run(&request_id, id.0, command).await.into()
    }
}

impl LicenseAdminApi {
    pub(crate) async fn grant_license(
        &self,
        request_id: &RequestId,
        body: GrantLicenseRequest,
    ) -> Result<DashboardLicense, Problem> {
        let pool = &self.state.pool;
        let member_id = self.member(body.member_id, body.email.as_deref()).await?;
        let policy = match body.policy_id.as_deref() {
            Some(id) => Some(self.policy(id).await?),
            None => None,
        };
        let now = Utc::now();
        let expires_at = plausible(body.expires_at)?;
        if expires_at.is_some_and(|at| at <= now) {
            return Err(Problem::validation(vec![FieldError::new(
                "expires_at",
                "must be in the future",
            )]));
        }
        let note = body
            .note
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        if note
            .as_deref()
            .is_some_and(|n| n.chars().any(|c| c.is_control() && c != '\n' && c != '\t'))
        {
            return Err(Problem::validation(vec![FieldError::new(
                "note",
                "no control characters but tab and newline",
            )]));
        }
        let license_id = Uuid::now_v7();
        let key = crate::license_keys::reserve(pool, license_id)
            .await
            .map_err(db_error)?;
        let command = LicenseCommand::GrantLicense {
            license_id,
            key,
            member_id,
            expires_at: expires_at.or_else(|| policy.as_ref().and_then(|p| p.expiry_from(now))),
            policy_id: policy.map(|p| p.id),
            note,
            at: now,
        };
        self.run(request_id, license_id, command).await
    }

    /// Extends or shortens license `id`'s expiry (`None`: never on its own).
    pub(crate) async fn set_expiry(
        &self,
        request_id: &RequestId,
        id: Uuid,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<DashboardLicense, Problem> {
        let command = LicenseCommand::ChangeExpiry {
            expires_at: plausible(expires_at)?,
            at: Utc::now(),
        };
        self.run(request_id, id, command).await
    }

    /// Puts license `id` under `policy_id` (`None`: none), with the expiry that policy gives a
    /// key issued when it was.
    pub(crate) async fn set_policy(
        &self,
        request_id: &RequestId,
        id: Uuid,
        policy_id: Option<&str>,
    ) -> Result<DashboardLicense, Problem> {
        let issued_at = license_by_id(&self.state.pool, id).await?.created_at;
        let policy = match policy_id {
            Some(policy_id) => Some(self.policy(policy_id).await?),
            None => None,
        };
        let command = LicenseCommand::ChangePolicy {
            expires_at: policy.as_ref().and_then(|p| p.expiry_from(issued_at)),
            policy_id: policy.map(|p| p.id),
            at: Utc::now(),
        };
        self.run(request_id, id, command).await
    }

    /// Runs `command` on license `id` as the admin and answers the license as the inline read
    /// model now has it.
    pub(crate) async fn run(
        &self,
        request_id: &RequestId,
        id: Uuid,
        command: LicenseCommand,
    ) -> Result<DashboardLicense, Problem> {
        self.state
            .licenses
            .execute(
                &id.to_string(),
                command,
                EventMetadata::for_request(&request_id.0, Actor::Admin),
            )
            .await
            .map_err(|err| match err {
                // The aggregate's own wording is the member's; an admin names it by its id.
                AggregateError::UserError(LicenseError::NotFound) => {
                    Problem::not_found("no license has this id")
                }
                err => command_error(err),
            })?;
        license_by_id(&self.state.pool, id).await
    }
}

/// An expiry between the years 1970 and 9999 (what every reader and the database take), or a
/// 422 naming `expires_at`.
fn plausible(at: Option<DateTime<Utc>>) -> Result<Option<DateTime<Utc>>, Problem> {
    use chrono::Datelike;
    match at {
        Some(t) if !(1970..=9999).contains(&t.year()) => {
            Err(Problem::validation(vec![FieldError::new(
                "expires_at",
                "must be between the years 1970 and 9999",
            )]))
        }
        _ => Ok(at),
    }
}

impl LicenseAdminApi {
    /// The member named by id or by email (exactly one of them), or a 422 naming the field.
    async fn member(&self, id: Option<Uuid>, email: Option<&str>) -> Result<Uuid, Problem> {
        let pool = &self.state.pool;
        let invalid =
            |field: &str, reason: &str| Problem::validation(vec![FieldError::new(field, reason)]);
        match (id, email) {
            (Some(id), None) => {
                let exists: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM member_list WHERE id = $1)")
                        .bind(id)
                        .fetch_one(pool)
                        .await
                        .map_err(db_error)?;
                if exists {
                    Ok(id)
                } else {
                    Err(invalid("member_id", "no member has this id"))
                }
            }
            (None, Some(email)) => {
                let email = aggregates::EmailAddress::parse(email)
                    .map_err(|e| invalid("email", e.reason()))?;
                crate::members::find_by_email(pool, &email)
                    .await
                    .map_err(db_error)?
                    .ok_or_else(|| invalid("email", "no member has this email address"))
            }
            _ => Err(invalid("member_id", "give either member_id or email")),
        }
    }

    /// Policy `id`, or a 422 naming `policy_id`.
    async fn policy(&self, id: &str) -> Result<Policy, Problem> {
        policies::get(&self.state.pool, id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| {
                Problem::validation(vec![FieldError::new("policy_id", "no policy has this id")])
            })
    }
}

impl From<Result<DashboardLicense, Problem>> for LicenseResponse {
    fn from(result: Result<DashboardLicense, Problem>) -> Self {
        match result {
            Ok(license) => Self::Ok(Json(license)),
            Err(problem) => problem.into(),
        }
    }
}

impl poem_openapi::types::Example for GrantLicenseRequest {
    fn example() -> Self {
        Self {
            member_id: None,
            email: Some("partner@example.com".into()),
            policy_id: Some("pro".into()),
            expires_at: None,
            note: Some("partner program".into()),
        }
    }
}

impl poem_openapi::types::Example for ChangeExpiryRequest {
    fn example() -> Self {
        Self {
            expires_at: Some(
                chrono::DateTime::<Utc>::from_timestamp(1_830_297_600, 0).unwrap_or_default(),
            ),
        }
    }
}

impl poem_openapi::types::Example for ChangePolicyRequest {
    fn example() -> Self {
        Self {
            policy_id: Some("pro".into()),
        }
    }
}
