//! Changing the email address: the form sends a confirmation link to the new address
//! (`crate::email_change`), and nothing changes until it is used. The link opens a page with a
//! button, not the change itself: mail scanners open links in emails, and would use it up.

use askama::Template;
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{get, handler, Request, Response, Route};
use serde::Deserialize;

use super::{member_layout, signed_in};
use crate::api::problem::{FieldError, Problem};
use crate::api::state::{RequestId, State};
use crate::email_change::{self, EmailChangeError};
use crate::web::forms;
use crate::web::page::{self, Layout, Notice};
use crate::web::session;

pub fn routes() -> Route {
    Route::new()
        .at("/", get(show).post(request))
        .at("/confirm", get(confirm_page).post(confirm))
        .at("/enable", poem::post(enable))
}

#[derive(Template)]
#[template(path = "portal/email.html")]
struct EmailPage {
    layout: Layout,
    current: String,
    new_email: String,
    /// The link is on its way: the form is not shown again.
    sent: bool,
    /// Why the address is disabled (it refused mail for good), while it is.
    disabled: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/email_confirm.html")]
struct ConfirmPage {
    layout: Layout,
    token: String,
}

/// The member's address as the sign-in table has it.
async fn current_email(state: &State, member_id: uuid::Uuid) -> Result<String, Response> {
    sqlx::query_scalar::<_, String>(
        "SELECT email FROM member_emails WHERE member_id = $1 ORDER BY reserved_at DESC LIMIT 1",
    )
    .bind(member_id)
    .fetch_optional(&state.pool)
    .await
    .map(Option::unwrap_or_default)
    .map_err(|err| page::error_page(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()))
}

#[derive(Deserialize)]
pub struct ShowQuery {
    enabled: Option<String>,
}

#[handler]
pub async fn show(req: &Request, state: Data<&State>, Query(query): Query<ShowQuery>) -> Response {
    let member_id = match signed_in(req, &state).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let notice = query
        .enabled
        .map(|_| Notice::info("Your email is enabled: we send you emails again."));
    match current_email(&state, member_id).await {
        Ok(current) => page::html(&EmailPage {
            layout: member_layout(req, "Email address", notice),
            current,
            new_email: String::new(),
            sent: false,
            disabled: disabled_reason(&state, member_id).await,
        }),
        Err(resp) => resp,
    }
}

/// Why the member's email is disabled, while it is (nothing when the database cannot say: the
/// page still works).
async fn disabled_reason(state: &State, member_id: uuid::Uuid) -> Option<String> {
    crate::api::members::email_disabled(&state.pool, member_id)
        .await
        .ok()
        .flatten()
        .map(|d| d.reason)
}

/// The signed-in member lifts the suppression of their address: signing in by an emailed code
/// proved it receives mail again.
#[handler]
pub async fn enable(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let member_id = match signed_in(req, &state).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    if let Err(resp) = forms::read::<std::collections::HashMap<String, String>>(req, &body) {
        return resp;
    }
    let metadata = crate::store::EventMetadata::for_request(
        &request_id.0 .0,
        crate::store::Actor::Member(member_id),
    );
    if let Err(err) = crate::members::enable_email(&state.members, member_id, metadata).await {
        let problem = crate::api::problem::command_error(err)
            .when_unavailable("the change could not be saved; retry");
        let current = match current_email(&state, member_id).await {
            Ok(current) => current,
            Err(resp) => return resp,
        };
        return page::html_status(
            problem.status_code(),
            &EmailPage {
                layout: member_layout(req, "Email address", Some(Notice::from_problem(&problem))),
                current,
                new_email: String::new(),
                sent: false,
                disabled: disabled_reason(&state, member_id).await,
            },
        );
    }
    page::see_other("/account/email?enabled=1")
}

#[derive(Deserialize)]
struct EmailForm {
    #[serde(default)]
    new_email: String,
}

/// Sends the confirmation link to the new address.
#[handler]
pub async fn request(req: &Request, body: String, state: Data<&State>) -> Response {
    let member_id = match signed_in(req, &state).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let form: EmailForm = match forms::read(req, &body) {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let current = match current_email(&state, member_id).await {
        Ok(current) => current,
        Err(resp) => return resp,
    };
    let again = |status: StatusCode, notice: Notice| {
        page::html_status(
            status,
            &EmailPage {
                layout: member_layout(req, "Email address", Some(notice)),
                current: current.clone(),
                new_email: form.new_email.clone(),
                sent: false,
                disabled: None,
            },
        )
    };
    let email = match aggregates::EmailAddress::parse(form.new_email.trim()) {
        Ok(email) => email,
        Err(e) => {
            let problem = Problem::validation(vec![FieldError::new("new_email", e.reason())]);
            return again(problem.status_code(), Notice::from_problem(&problem));
        }
    };
    let ip = crate::api::edge::client_ip(req);
    match email_change::request(&state.sign_in, &state.public_url, member_id, &email, ip).await {
        Ok(()) => page::html(&EmailPage {
            layout: member_layout(
                req,
                "Email address",
                Some(Notice::info(format!(
                    "We sent a link to {email}. Open it and press the button to confirm; until then your address stays {current}. The link works for 24 hours."
                ))),
            ),
            current: current.clone(),
            new_email: email.to_string(),
            sent: true,
            disabled: None,
        }),
        Err(EmailChangeError::Unchanged) => again(
            StatusCode::UNPROCESSABLE_ENTITY,
            Notice::error("That is already your email address."),
        ),
        Err(err) => {
            let problem = problem(err);
            again(problem.status_code(), Notice::from_problem(&problem))
        }
    }
}

/// A refusal as the API would say it, for [`Notice::from_problem`].
fn problem(err: EmailChangeError) -> Problem {
    match err {
        EmailChangeError::RateLimited(wait) => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("too many attempts; retry in {} s", wait.as_secs()),
        ),
        EmailChangeError::Unchanged => Problem::validation(vec![FieldError::new(
            "new_email",
            "is already your email address",
        )]),
        EmailChangeError::InvalidLink => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-link",
            "this confirmation link is wrong, expired or already used; ask for a new one from your account",
        ),
        EmailChangeError::Taken => Problem::conflict(
            "email-taken",
            "another member already uses this address, so your address was not changed",
        ),
        EmailChangeError::Database(err) => crate::api::problem::db_error(err),
        EmailChangeError::Command(detail) => {
            tracing::warn!(detail, "changing a member's email");
            Problem::unavailable("the change could not be saved; retry")
        }
    }
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// The link's page: a button that uses it (whether or not this browser is signed in).
#[handler]
pub async fn confirm_page(req: &Request, Query(query): Query<TokenQuery>) -> Response {
    page::html(&ConfirmPage {
        layout: Layout {
            member_nav: false,
            ..member_layout(req, "Confirm your new email address", None)
        },
        token: query.token,
    })
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    token: String,
}

#[handler]
pub async fn confirm(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let form: TokenForm = match forms::read(req, &body) {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let ip = crate::api::edge::client_ip(req);
    match email_change::confirm(&state.sign_in, form.token.trim(), ip, &request_id.0 .0).await {
        Ok((member_id, _)) => {
            // Signed in here as this member: back to the account; otherwise to sign in with
            // the new address.
            match session::member(req, &state).await {
                Ok(Some(id)) if id == member_id => page::see_other("/account?done=email-changed"),
                _ => page::see_other("/account/signin?done=email-changed"),
            }
        }
        Err(err) => {
            let problem = problem(err);
            page::html_status(
                problem.status_code(),
                &ConfirmPage {
                    layout: Layout {
                        member_nav: false,
                        ..member_layout(
                            req,
                            "Confirm your new email address",
                            Some(Notice::from_problem(&problem)),
                        )
                    },
                    token: String::new(),
                },
            )
        }
    }
}
