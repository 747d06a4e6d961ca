//! An operator's holds on a license from a member's page: suspend, unsuspend, revoke. The same
//! function as the admin API's (`LicenseHoldsApi::hold`), then back to the member's page.

use poem::web::Data;
use poem::{handler, Request, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::signed_in;
use crate::api::license_holds::{Hold, LicenseHoldsApi};
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
