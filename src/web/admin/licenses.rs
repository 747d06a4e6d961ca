//! An operator's holds on a license from a member's page: suspend, unsuspend, revoke. The same
//! function as the admin API's (`LicenseHoldsApi::hold`), then back to the member's page.

use aggregates::LicenseCommand;
use chrono::Utc;
use poem::web::Data;
use poem::{handler, Request, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::signed_in;
use crate::api::license_holds::{reason, LicenseHoldsApi};
use crate::api::state::{RequestId, State};
use crate::web::{forms, page};

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
    let form: HoldForm = match forms::read(req, &body) {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    if let Err(resp) = signed_in(req, &state).await {
        return resp;
    }
    let (Ok(license), Ok(member)) = (form.license.parse::<Uuid>(), form.member.parse::<Uuid>())
    else {
        return page::error_page_at("/admin", poem::http::StatusCode::NOT_FOUND, "");
    };
    let back = |outcome: &str| page::see_other(&format!("/admin/members/{member}?{outcome}"));
    let command = match form.action.as_str() {
        "unsuspend" => LicenseCommand::UnsuspendLicense { at: Utc::now() },
        "suspend" | "revoke" => {
            let Ok(reason) = reason(&form.reason) else {
                return back("refused=reason");
            };
            if form.action == "suspend" {
                LicenseCommand::SuspendLicense {
                    reason,
                    at: Utc::now(),
                }
            } else {
                LicenseCommand::RevokeLicense {
                    reason,
                    at: Utc::now(),
                }
            }
        }
        _ => return page::error_page_at("/admin", poem::http::StatusCode::BAD_REQUEST, ""),
    };
    let done = match &command {
        LicenseCommand::SuspendLicense { .. } => "suspended",
        LicenseCommand::UnsuspendLicense { .. } => "unsuspended",
        _ => "revoked",
    };
    let api = LicenseHoldsApi {
        state: state.clone(),
    };
    match api.hold(&request_id, license, command).await {
        Ok(_) => {
            tracing::info!(%license, action = done, "admin console: a license hold");
            back(&format!("done={done}"))
        }
        Err(problem) if problem.status == 409 => back("refused=revoked"),
        Err(problem) if problem.status == 404 => back("refused=not-found"),
        Err(_) => back("refused=unavailable"),
    }
}
