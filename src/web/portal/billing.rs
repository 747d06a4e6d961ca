//! Billing: the dashboard's "Payment method, cancel or resume" button opens a Stripe Billing
//! Portal session (`POST /v1/me/billing-portal`'s function), which returns to the dashboard.

use poem::web::Data;
use poem::{handler, Request, Response};

use super::dashboard::render;
use super::signed_in;
use crate::api::state::State;
use crate::web::forms;
use crate::web::page::{self, Notice};

/// On to Stripe's billing page, or the dashboard with why not.
#[handler]
pub async fn open(req: &Request, body: String, state: Data<&State>) -> Response {
    let member_id = match signed_in(req, &state).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    if let Err(resp) = forms::read::<Vec<(String, String)>>(req, &body) {
        return resp;
    }
    let return_url = format!("{}/account?done=billing", state.public_url);
    match crate::api::billing_portal::open(&state, member_id, &return_url).await {
        Ok(url) => page::see_other(&url),
        Err(problem) => render(req, &state, member_id, Some(Notice::from_problem(&problem))).await,
    }
}
