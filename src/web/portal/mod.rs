//! The member portal under `/account`: sign-in by code or magic link, sign-up with
//! attribution, the dashboard and what a member does from it.

use poem::{get, post, Request, Response, Route};
use uuid::Uuid;

use super::page::{self, Layout, Notice};
use super::session;
use crate::api::state::State;

mod actions;
mod billing;
mod dashboard;
mod delete;
mod email;
mod newsletters;
mod signin;
mod unsubscribe;

pub fn routes() -> Route {
    Route::new()
        .at("/", get(dashboard::show))
        .at(
            "/signin",
            get(signin::signin_page).post(signin::request_code),
        )
        .at(
            "/signup",
            get(signin::signup_form).post(signin::request_signup),
        )
        .at("/verify", post(signin::verify))
        .at("/signout", post(signin::sign_out))
        .at("/sites", post(actions::add_sites))
        .at(
            "/sites/remove",
            get(actions::confirm_remove).post(actions::remove_site),
        )
        .at("/keys", post(actions::buy_keys))
        .at("/keys/activate", post(actions::activate_key))
        .at("/keys/release", post(actions::release_key))
        .at("/billing", post(billing::open))
        .nest("/newsletters", newsletters::routes())
        .nest("/email", email::routes())
        .nest("/delete", delete::routes())
        .nest("/unsubscribe", unsubscribe::routes())
}

/// The layout of a portal page for a signed-in member.
pub(crate) fn member_layout(req: &Request, title: &str, notice: Option<Notice>) -> Layout {
    Layout {
        title: title.to_owned(),
        csrf: super::forms::token(req),
        member_nav: true,
        admin_nav: false,
        notice,
    }
}

/// The signed-in member, or the answer to give instead: the sign-in page (303) without a live
/// session, an error page when the database cannot say.
pub(crate) async fn signed_in(req: &Request, state: &State) -> Result<Uuid, Response> {
    match session::member(req, state).await {
        Ok(Some(member_id)) => Ok(member_id),
        Ok(None) => Err(page::see_other("/account/signin?next=account")),
        Err(err) => {
            tracing::warn!(error = %err, "reading a member's browser session");
            Err(page::error_page(
                poem::http::StatusCode::SERVICE_UNAVAILABLE,
                &err.to_string(),
            ))
        }
    }
}
