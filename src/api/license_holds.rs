//! An operator's holds on a license (admin): suspend with a reason and unsuspend, revoke for
//! good. Each is a command on the License aggregate: its event shows on the member's timeline
//! and dashboard, and validation answers `SUSPENDED` or `REVOKED`.

use aggregates::cqrs_es::AggregateError;
use aggregates::{LicenseCommand, LicenseError};
use chrono::Utc;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::auth::AdminAuth;
use super::dashboard::DashboardLicense;
use super::problem::{command_error, FieldError, Problem};
use super::state::{ApiTags, RequestId, State};
use crate::api::problem::api_response;
use crate::store::{Actor, EventMetadata};

pub struct LicenseHoldsApi {
    pub state: State,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct HoldRequest {
    /// Why, in words: kept on the license and shown on the member's timeline.
    #[oai(validator(min_length = 1, max_length = 500))]
    pub reason: String,
}

api_response! {
    pub enum HoldResponse {
        /// The license as it is now.
        #[oai(status = 200)]
        Ok(Json<DashboardLicense>),
    }
    problems {
        /// The body is not valid JSON of the expected shape.
        400 => BadRequest,
        /// No admin token.
        401 => Unauthorized,
        /// No license has this id.
        404 => NotFound,
        /// Refused: `/problems/license-revoked` (a revoked license is final).
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation (`reason` empty or too long).
        422 => Invalid,
    }
}

#[OpenApi(prefix_path = "/v1/licenses", tag = "ApiTags::Licenses")]
impl LicenseHoldsApi {
    /// Suspend a license
    ///
    /// Holds the license: it validates as `SUSPENDED` (whatever its subscription does) and
    /// cannot be activated on a domain until unsuspended. Suspending a suspended license
    /// changes nothing.
    #[oai(
        path = "/:id/suspension",
        method = "post",
        operation_id = "suspendLicense"
    )]
    async fn suspend(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        id: Path<Uuid>,
        body: Json<HoldRequest>,
    ) -> HoldResponse {
        self.hold(&request_id, id.0, Hold::Suspend, &body.0.reason)
            .await
            .into()
    }

    /// Unsuspend a license
    ///
    /// Lifts the suspension: the license validates as its status and domain say again.
    #[oai(
        path = "/:id/suspension",
        method = "delete",
        operation_id = "unsuspendLicense"
    )]
    async fn unsuspend(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        id: Path<Uuid>,
    ) -> HoldResponse {
        self.hold(&request_id, id.0, Hold::Unsuspend, "")
            .await
            .into()
    }

    /// Revoke a license
    ///
    /// Ends the license for good: it validates as `REVOKED` from now on, and cannot be
    /// suspended, unsuspended or activated again.
    #[oai(
        path = "/:id/revocation",
        method = "post",
        operation_id = "revokeLicense"
    )]
    async fn revoke(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        id: Path<Uuid>,
        body: Json<HoldRequest>,
    ) -> HoldResponse {
        self.hold(&request_id, id.0, Hold::Revoke, &body.0.reason)
            .await
            .into()
    }
}

/// What an operator does to a license.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    Suspend,
    Unsuspend,
    Revoke,
}

impl Hold {
    /// Its command; a suspension and a revocation need a reason in words (422 `reason`).
    fn command(self, reason: &str) -> Result<LicenseCommand, Problem> {
        let at = Utc::now();
        Ok(match self {
            Self::Suspend => LicenseCommand::SuspendLicense {
                reason: valid_reason(reason)?,
                at,
            },
            Self::Unsuspend => LicenseCommand::UnsuspendLicense { at },
            Self::Revoke => LicenseCommand::RevokeLicense {
                reason: valid_reason(reason)?,
                at,
            },
        })
    }
}

/// A reason as stored: trimmed, not blank, no control characters but tab and newline.
fn valid_reason(raw: &str) -> Result<String, Problem> {
    let reason = raw.trim();
    if reason.is_empty()
        || reason
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Problem::validation(vec![FieldError::new(
            "reason",
            "give a reason in words (no control characters)",
        )]));
    }
    Ok(reason.to_owned())
}

impl LicenseHoldsApi {
    /// Takes `hold` on license `id` as the admin (`reason`: why, for a suspension or a
    /// revocation) and answers the license as the inline read model now has it.
    pub(crate) async fn hold(
        &self,
        request_id: &RequestId,
        id: Uuid,
        hold: Hold,
        reason: &str,
    ) -> Result<DashboardLicense, Problem> {
        let state = &self.state;
        state
            .licenses
            .execute(
                &id.to_string(),
                hold.command(reason)?,
                EventMetadata::for_request(&request_id.0, Actor::Admin),
            )
            .await
            .map_err(|err| match err {
                // The aggregate's own wording is the member's ("you have no license with this
                // key"); an admin names a license by its id.
                AggregateError::UserError(LicenseError::NotFound) => {
                    Problem::not_found("no license has this id")
                }
                err => command_error(err),
            })?;
        super::dashboard::license_by_id(&state.pool, id).await
    }
}

impl From<Result<DashboardLicense, Problem>> for HoldResponse {
    fn from(result: Result<DashboardLicense, Problem>) -> Self {
        match result {
            Ok(license) => Self::Ok(Json(license)),
            Err(problem) => problem.into(),
        }
    }
}

impl poem_openapi::types::Example for HoldRequest {
    fn example() -> Self {
        Self {
            reason: "chargeback under review".into(),
        }
    }
}
