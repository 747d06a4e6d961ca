//! An operator's license management from a member's page: grant a key, change a key's expiry or
//! policy, and the holds (suspend, unsuspend, revoke). The same functions as the admin API's
//! (`LicenseAdminApi`, `LicenseHoldsApi::hold`), then back to the member's page.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem::{handler, Request, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::admin_form;
use crate::api::license_admin::{GrantLicenseRequest, LicenseAdminApi};
use crate::api::license_holds::{Hold, LicenseHoldsApi};
use crate::api::problem::{FieldError, Problem};
use crate::api::state::{RequestId, State};
use crate::web::page;

#[derive(Deserialize)]
struct HoldForm {
    #[serde(default)]
    license: String,
    #[serde(default)]
    member: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
}

#[handler]
pub async fn hold(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let form: HoldForm = match admin_form(req, &body, &state).await {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let (Ok(license), Ok(member)) = (form.license.parse::<Uuid>(), form.member.parse::<Uuid>())
    else {
        return page::error_page_at("/admin", poem::http::StatusCode::NOT_FOUND, "");
    };
    let back = |outcome: &str| page::see_other(&format!("/admin/members/{member}?{outcome}"));
    let (hold, done) = match form.action.as_str() {
        "suspend" => (Hold::Suspend, "suspended"),
        "unsuspend" => (Hold::Unsuspend, "unsuspended"),
        "revoke" => (Hold::Revoke, "revoked"),
        _ => return page::error_page_at("/admin", poem::http::StatusCode::BAD_REQUEST, ""),
    };
    let api = LicenseHoldsApi {
        state: state.clone(),
    };
    match api.hold(&request_id, license, hold, &form.reason).await {
        Ok(_) => {
            tracing::info!(%license, action = done, "admin console: a license hold");
            back(&format!("done={done}"))
        }
        Err(problem) => back(match problem.status {
            422 => "refused=reason",
            409 => "refused=revoked",
            404 => "refused=not-found",
            _ => "refused=unavailable",
        }),
    }
}

/// Where a license form sends the operator back to: the member's page, saying what happened
/// (`done=`) or why nothing did (`refused=`, from the API's problem).
fn back_to(member: Uuid, result: Result<(), Problem>, done: &str) -> Response {
    let outcome = match result {
        Ok(()) => format!("done={done}"),
        Err(problem) => {
            let refused = match (problem.status, problem.errors.first()) {
                (422, Some(e)) if e.field == "expires_at" => "expires",
                (422, Some(e)) if e.field == "policy_id" => "policy",
                (422, Some(e)) if e.field == "note" => "note",
                (409, _) => "revoked",
                (404, _) => "not-found",
                _ => "unavailable",
            };
            format!("refused={refused}")
        }
    };
    page::see_other(&format!("/admin/members/{member}?{outcome}"))
}

/// A date as the form gives it (`YYYY-MM-DD`): the end of that day, UTC; blank is none.
fn end_of_day(raw: &str) -> Result<Option<DateTime<Utc>>, Problem> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .map(|t| Some(t.and_utc()))
        .ok_or_else(|| {
            Problem::validation(vec![FieldError::new("expires_at", "a date, YYYY-MM-DD")])
        })
}

#[derive(Deserialize)]
struct GrantForm {
    #[serde(default)]
    member: String,
    #[serde(default)]
    policy: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    note: String,
}

/// Grants a key to the member (`POST /v1/licenses`).
#[handler]
pub async fn grant(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let form: GrantForm = match admin_form(req, &body, &state).await {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let Ok(member) = form.member.parse::<Uuid>() else {
        return page::error_page_at("/admin", poem::http::StatusCode::NOT_FOUND, "");
    };
    let api = LicenseAdminApi {
        state: state.clone(),
    };
    let result = async {
        let request = GrantLicenseRequest {
            member_id: Some(member),
            email: None,
            policy_id: Some(form.policy.trim().to_owned()).filter(|p| !p.is_empty()),
            expires_at: end_of_day(&form.expires)?,
            note: Some(form.note),
        };
        let license = api.grant_license(&request_id, request).await?;
        tracing::info!(license = %license.id, "admin console: a key granted");
        Ok(())
    };
    back_to(member, result.await, "granted")
}

#[derive(Deserialize)]
struct ChangeForm {
    #[serde(default)]
    license: String,
    #[serde(default)]
    member: String,
    /// `expiry` or `policy`.
    #[serde(default)]
    change: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    policy: String,
    /// For `release`: the domain.
    #[serde(default)]
    domain: String,
}

/// Changes a license's expiry (blank: never) or policy (blank: none), or releases one of its
/// domains.
#[handler]
pub async fn change(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let form: ChangeForm = match admin_form(req, &body, &state).await {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let (Ok(license), Ok(member)) = (form.license.parse::<Uuid>(), form.member.parse::<Uuid>())
    else {
        return page::error_page_at("/admin", poem::http::StatusCode::NOT_FOUND, "");
    };
    let api = LicenseAdminApi {
        state: state.clone(),
    };
    let (result, done) = match form.change.as_str() {
        "expiry" => {
            let result = match end_of_day(&form.expires) {
                Ok(at) => api.set_expiry(&request_id, license, at).await.map(drop),
                Err(problem) => Err(problem),
            };
            (result, "expiry")
        }
        "policy" => {
            let policy = Some(form.policy.trim()).filter(|p| !p.is_empty());
            let result = api.set_policy(&request_id, license, policy).await;
            (result.map(drop), "policy")
        }
        "release" => {
            let command = aggregates::LicenseCommand::ReleaseDomain {
                domain: Some(form.domain.trim().to_ascii_lowercase()),
                at: Utc::now(),
            };
            let result = api.run(&request_id, license, command).await;
            (result.map(drop), "released")
        }
        _ => return page::error_page_at("/admin", poem::http::StatusCode::BAD_REQUEST, ""),
    };
    back_to(member, result, done)
}
