//! "Delete my account": the member erases their own account (`crate::erasure`, the same path as
//! `DELETE /v1/me`), after confirming on a page that says what it does.

use askama::Template;
use poem::web::Data;
use poem::{get, handler, Request, Response, Route};
use serde::Deserialize;
use uuid::Uuid;

use super::{member_layout, signed_in};
use crate::api::problem::{FieldError, Problem};
use crate::api::state::{RequestId, State};
use crate::store::{Actor, EventMetadata};
use crate::web::page::{self, Layout, Notice};
use crate::web::{forms, session};

pub fn routes() -> Route {
    Route::new().at("/", get(show).post(delete))
}

#[derive(Template)]
#[template(path = "portal/delete_account.html")]
struct DeletePage {
    layout: Layout,
    /// A subscription Stripe has not ended (erasure would be refused).
    has_subscriptions: bool,
}

async fn render(req: &Request, state: &State, member_id: Uuid, notice: Option<Notice>) -> Response {
    let open: Result<bool, sqlx::Error> = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM subscriptions
                        WHERE member_id = $1 AND status NOT IN ('canceled', 'incomplete_expired'))",
    )
    .bind(member_id)
    .fetch_one(&state.pool)
    .await;
    let Ok(open) = open else {
        return page::error_page(
            poem::http::StatusCode::SERVICE_UNAVAILABLE,
            "reading your subscriptions",
        );
    };
    let has_subscriptions =
        open && state.erasure.active_subscriptions == crate::erasure::ActiveSubscriptions::Refuse;
    let status = if notice.as_ref().is_some_and(|n| n.error) {
        poem::http::StatusCode::CONFLICT
    } else {
        poem::http::StatusCode::OK
    };
    page::html_status(
        status,
        &DeletePage {
            layout: member_layout(req, "Delete your account", notice),
            has_subscriptions,
        },
    )
}

#[handler]
pub async fn show(req: &Request, state: Data<&State>) -> Response {
    match signed_in(req, &state).await {
        Ok(member_id) => render(req, &state, member_id, None).await,
        Err(resp) => resp,
    }
}

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

/// Erases the member once the box is ticked, signs the browser out and shows the sign-in page
/// with a notice; a refusal (a subscription that has not ended) shows this page with it.
#[handler]
pub async fn delete(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let member_id = match signed_in(req, &state).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let form: DeleteForm = match forms::read(req, &body) {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    if form.confirm != "yes" {
        let problem = Problem::validation(vec![FieldError::new(
            "confirm",
            "tick the box to confirm that your account is erased for good",
        )]);
        return render(req, &state, member_id, Some(Notice::from_problem(&problem))).await;
    }
    let metadata = EventMetadata::for_request(&request_id.0 .0, Actor::Member(member_id));
    match state.erase_member(member_id, metadata).await {
        Ok(()) => {
            // The erasure ended every session of the member's; the cookie goes too.
            session::clear(req, &state, session::MEMBER_COOKIE, "/account");
            page::see_other("/account/signin?done=deleted")
        }
        Err(err) => {
            let problem = crate::api::members::erase_problem(err);
            render(req, &state, member_id, Some(Notice::from_problem(&problem))).await
        }
    }
}
