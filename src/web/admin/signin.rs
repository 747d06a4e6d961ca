//! Signing in with an admin token, and signing out.

use askama::Template;
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::{sessions, unavailable};
use crate::api::state::State;
use crate::web::forms;
use crate::web::page::{self, Layout, Notice};

#[derive(Template)]
#[template(path = "admin/signin.html")]
struct SignInPage {
    layout: Layout,
}

fn signin_layout(req: &Request, notice: Option<Notice>) -> Layout {
    Layout {
        title: "Admin sign-in".to_owned(),
        csrf: forms::token(req),
        member_nav: false,
        admin_nav: false,
        notice,
    }
}

#[derive(Deserialize)]
pub struct SignInQuery {
    done: Option<String>,
}

/// The sign-in page; with a live session, on to the overview.
#[handler]
pub async fn signin_page(
    req: &Request,
    state: Data<&State>,
    Query(query): Query<SignInQuery>,
) -> Response {
    match sessions::check(req, &state).await {
        Ok(true) => return page::see_other("/admin"),
        Ok(false) => {}
        Err(err) => return unavailable(&err),
    }
    let notice = (query.done.as_deref() == Some("signed-out"))
        .then(|| Notice::info("You are signed out of the admin console."));
    page::html(&SignInPage {
        layout: signin_layout(req, notice),
    })
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    token: String,
}

/// An admin token: a session, and on to the overview. Tries are limited per client address
/// as a member's sign-in codes are (`AUTH_VERIFY_LIMIT_PER_IP`), every try counted, so a token
/// cannot be guessed at speed.
#[handler]
pub async fn sign_in(req: &Request, body: String, state: Data<&State>) -> Response {
    let form: TokenForm = match forms::read(req, &body) {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let again = |status: StatusCode, notice: Notice| {
        page::html_status(
            status,
            &SignInPage {
                layout: signin_layout(req, Some(notice)),
            },
        )
    };
    if let Some(ip) = crate::api::edge::client_ip(req) {
        match crate::rate_limit::hit(
            &state.pool,
            &format!("admin-sign-in:ip:{ip}"),
            state.sign_in.settings.verify_per_ip,
        )
        .await
        {
            Ok(None) => {}
            Ok(Some(wait)) => {
                crate::metrics::rate_limited("admin_sign_in_per_ip");
                return again(
                    StatusCode::TOO_MANY_REQUESTS,
                    Notice::error(format!(
                        "Too many tries. Try again in {} minutes.",
                        wait.as_secs().div_ceil(60).max(1)
                    )),
                );
            }
            Err(err) => return unavailable(&err),
        }
    }
    let token = form.token.trim();
    let valid = if token.is_empty() || token.len() > 512 {
        Ok(false)
    } else {
        state.admin_tokens.verify(token).await
    };
    match valid {
        Ok(true) => match sessions::open(req, &state).await {
            Ok(()) => {
                tracing::info!(ip = ?crate::api::edge::client_ip(req), "admin console: signed in");
                page::see_other("/admin")
            }
            Err(err) => unavailable(&err),
        },
        Ok(false) => {
            tracing::info!(ip = ?crate::api::edge::client_ip(req), "admin console: a wrong token refused");
            let mut notice = Notice::error("That is not an admin token. Nothing was signed in.");
            notice.fields.push((
                "Admin token".to_owned(),
                "Paste the token from ADMIN_TOKEN or from `memberledger admin-token`.".to_owned(),
            ));
            again(StatusCode::UNAUTHORIZED, notice)
        }
        Err(err) => unavailable(&err),
    }
}

/// Revokes the session and clears its cookie.
#[handler]
pub async fn sign_out(req: &Request, body: String, state: Data<&State>) -> Response {
    if let Err(resp) = forms::read::<Vec<(String, String)>>(req, &body) {
        return resp;
    }
    match sessions::revoke(req, &state).await {
        Ok(()) => page::see_other("/admin/signin?done=signed-out"),
        Err(err) => unavailable(&err),
    }
}
