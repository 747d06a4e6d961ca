//! The member's newsletters: every active one with a checkbox; saving sets exactly the checked
//! ones, through the same function as `PATCH /v1/me`.

use askama::Template;
use poem::web::Data;
use poem::{get, handler, Request, Response, Route};
use uuid::Uuid;

use super::{member_layout, signed_in};
use crate::api::me::{me, MeApi, MyNewsletter, UpdateMeRequest};
use crate::api::problem::{FieldError, Problem};
use crate::api::state::{RequestId, State};
use crate::web::forms;
use crate::web::page::{self, Layout, Notice};

pub fn routes() -> Route {
    Route::new().at("/", get(show).post(save))
}

#[derive(Template)]
#[template(path = "portal/newsletters.html")]
struct NewslettersPage {
    layout: Layout,
    newsletters: Vec<MyNewsletter>,
}

/// The page with the member's current choices, and `notice` above it.
async fn render(req: &Request, state: &State, member_id: Uuid, notice: Option<Notice>) -> Response {
    let status = if notice.as_ref().is_some_and(|n| n.error) {
        poem::http::StatusCode::UNPROCESSABLE_ENTITY
    } else {
        poem::http::StatusCode::OK
    };
    match me(state, member_id).await {
        Ok(me) => page::html_status(
            status,
            &NewslettersPage {
                layout: member_layout(req, "Newsletters", notice),
                newsletters: me.newsletters,
            },
        ),
        Err(problem) => page::error_page(problem.status_code(), "reading newsletters"),
    }
}

#[handler]
pub async fn show(req: &Request, state: Data<&State>) -> Response {
    match signed_in(req, &state).await {
        Ok(member_id) => render(req, &state, member_id, None).await,
        Err(resp) => resp,
    }
}

/// Saves the checked newsletters (`newsletter`, repeated); the others are unsubscribed.
#[handler]
pub async fn save(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let member_id = match signed_in(req, &state).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let fields: Vec<(String, String)> = match forms::read(req, &body) {
        Ok(fields) => fields,
        Err(resp) => return resp,
    };
    let chosen: Result<Vec<Uuid>, _> = fields
        .iter()
        .filter(|(name, _)| name == "newsletter")
        .map(|(_, value)| value.parse::<Uuid>())
        .collect();
    let result = match chosen {
        Ok(chosen) => MeApi {
            state: state.clone(),
        }
        .update_me(
            member_id,
            &request_id,
            UpdateMeRequest {
                name: poem_openapi::types::MaybeUndefined::Undefined,
                newsletters: Some(chosen),
            },
        )
        .await
        .map(|_| ()),
        Err(_) => Err(Problem::validation(vec![FieldError::new(
            "newsletters",
            "the form named a newsletter that does not exist; reload the page",
        )])),
    };
    match result {
        Ok(()) => page::see_other("/account?done=newsletters"),
        Err(problem) => render(req, &state, member_id, Some(Notice::from_problem(&problem))).await,
    }
}
