//! The admin console under `/admin`: signing in with an admin token (then a cookie session,
//! `sessions.rs`), the overview with its charts, members with their timeline and dashboard,
//! failed Stripe events with retry, and the projections with rebuild. Every page calls the
//! same functions as the admin API.

use poem::http::StatusCode;
use poem::{get, post, Request, Response, Route};

use super::page::{self, Layout, Notice};
use crate::api::state::State;

mod charts;
mod licenses;
mod members;
mod overview;
mod policies;
mod projections;
mod sessions;
mod signin;
mod stripe_events;
mod webhooks;

pub fn routes() -> Route {
    Route::new()
        .at("/", get(overview::show))
        .at("/signin", get(signin::signin_page).post(signin::sign_in))
        .at("/signout", post(signin::sign_out))
        .at("/members", get(members::list))
        .at("/members/:id", get(members::detail))
        .at("/members/email/enable", post(members::enable_email))
        .at("/licenses/hold", post(licenses::hold))
        .at("/licenses/grant", post(licenses::grant))
        .at("/licenses/change", post(licenses::change))
        .at("/policies", get(policies::list).post(policies::save))
        .at("/stripe-events", get(stripe_events::list))
        .at("/stripe-events/retry", post(stripe_events::retry))
        .at("/webhooks", get(webhooks::list).post(webhooks::register))
        .at("/webhooks/enable", post(webhooks::enable))
        .at("/webhooks/redeliver", post(webhooks::redeliver))
        .at("/webhooks/:id", get(webhooks::deliveries))
        .at("/projections", get(projections::list))
        .at("/projections/rebuild", post(projections::rebuild))
}

/// The layout of an admin page for a signed-in operator.
fn admin_layout(req: &Request, title: &str, notice: Option<Notice>) -> Layout {
    Layout {
        title: title.to_owned(),
        csrf: super::forms::token(req),
        member_nav: false,
        admin_nav: true,
        notice,
    }
}

/// Nothing, when the browser holds a live admin session (which this use extends), or the
/// answer to give instead: the sign-in page (303) without one, an error page when the database
/// cannot say.
async fn signed_in(req: &Request, state: &State) -> Result<(), Response> {
    match sessions::check(req, state).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(page::see_other("/admin/signin")),
        Err(err) => Err(unavailable(&err)),
    }
}

/// A posted form, once its integrity token is checked and the browser holds a live admin
/// session: the form, or the answer to give instead.
async fn admin_form<T: serde::de::DeserializeOwned>(
    req: &Request,
    body: &str,
    state: &State,
) -> Result<T, Response> {
    let form = super::forms::read(req, body)?;
    signed_in(req, state).await?;
    Ok(form)
}

/// The page for a database that did not answer.
fn unavailable(err: &sqlx::Error) -> Response {
    tracing::warn!(error = %err, "an admin page could not read the database");
    page::error_page(StatusCode::SERVICE_UNAVAILABLE, &err.to_string())
}
