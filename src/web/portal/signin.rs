//! Signing in with the emailed code or the magic link, signing up, signing out.
//!
//! The magic link opens a page with a button rather than signing in on the GET: mail scanners
//! open links in emails, and a single-use link they followed would be used up.

use askama::Template;
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::member_layout;
use crate::api::problem::{FieldError, Problem};
use crate::api::sessions::{auth_problem, signup};
use crate::api::state::{RequestId, State};
use crate::auth::{self, AuthError, Credentials, SessionKind, Signup};
use crate::web::forms;
use crate::web::page::{self, Layout, Notice};
use crate::web::session::{self, MEMBER_COOKIE};

#[derive(Template)]
#[template(path = "portal/signin.html")]
struct SignInPage {
    layout: Layout,
    email: String,
}

#[derive(Template)]
#[template(path = "portal/code.html")]
struct CodePage {
    layout: Layout,
    email: String,
}

#[derive(Template)]
#[template(path = "portal/link.html")]
struct LinkPage {
    layout: Layout,
    token: String,
}

#[derive(Template)]
#[template(path = "portal/signup.html")]
struct SignUpPage {
    layout: Layout,
    name: String,
    email: String,
    newsletters: Vec<NewsletterChoice>,
}

struct NewsletterChoice {
    id: Uuid,
    name: String,
    description: String,
    checked: bool,
}

fn layout(req: &Request, title: &str, notice: Option<Notice>) -> Layout {
    Layout {
        member_nav: false,
        ..member_layout(req, title, notice)
    }
}

#[derive(Deserialize)]
pub struct SignInQuery {
    token: Option<String>,
    done: Option<String>,
}

/// The sign-in page; with `?token=` (the magic link), the page that uses it.
#[handler]
pub async fn signin_page(
    req: &Request,
    state: Data<&State>,
    Query(query): Query<SignInQuery>,
) -> Response {
    if let Some(token) = query.token.filter(|t| !t.is_empty()) {
        return page::html(&LinkPage {
            layout: layout(req, "Sign in", None),
            token,
        });
    }
    if let Ok(Some(_)) = session::member(req, &state).await {
        return page::see_other("/account");
    }
    let notice = match query.done.as_deref() {
        Some("signed-out") => Some(Notice::info("You are signed out.")),
        Some("deleted") => Some(Notice::info(
            "Your account is deleted and your personal data erased.",
        )),
        Some("email-changed") => Some(Notice::info(
            "Your email address is changed. Sign in with the new one.",
        )),
        _ => None,
    };
    page::html(&SignInPage {
        layout: layout(req, "Sign in", notice),
        email: String::new(),
    })
}

#[derive(Deserialize)]
struct EmailForm {
    #[serde(default)]
    email: String,
}

/// Emails a code (and a link) to a member: the code page, whether or not the email is known.
#[handler]
pub async fn request_code(req: &Request, body: String, state: Data<&State>) -> Response {
    let form: EmailForm = match forms::read(req, &body) {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let email = match aggregates::EmailAddress::parse(form.email.trim()) {
        Ok(email) => email,
        Err(e) => {
            let problem = Problem::validation(vec![FieldError::new("email", e.reason())]);
            return page::html_status(
                poem::http::StatusCode::UNPROCESSABLE_ENTITY,
                &SignInPage {
                    layout: layout(req, "Sign in", Some(Notice::from_problem(&problem))),
                    email: form.email,
                },
            );
        }
    };
    send_code(req, &state, &email, None, |notice| SignInPage {
        layout: layout(req, "Sign in", Some(notice)),
        email: form.email.clone(),
    })
    .await
}

/// Sends the code, then the code page; on a refusal, `again` (the form, with the notice).
async fn send_code<T: Template>(
    req: &Request,
    state: &State,
    email: &aggregates::EmailAddress,
    signup: Option<Signup>,
    again: impl FnOnce(Notice) -> T,
) -> Response {
    let ip = crate::api::edge::client_ip(req);
    match auth::request_code(&state.sign_in, email, signup, ip).await {
        Ok(()) => page::html(&CodePage {
            layout: layout(
                req,
                "Check your email",
                Some(Notice::info(format!(
                    "If {email} belongs to a member, or you are signing up, a 6-digit code and a sign-in link are on their way. They work for 10 minutes."
                ))),
            ),
            email: email.to_string(),
        }),
        Err(err) => {
            let problem = auth_problem(err);
            page::html_status(
                problem.status_code(),
                &again(Notice::from_problem(&problem)),
            )
        }
    }
}

/// The sign-up page: name, email, newsletters, and the visitor's history (a hidden field the
/// page's script fills from what `member-attribution.js` recorded on the member site).
#[handler]
pub async fn signup_form(req: &Request, state: Data<&State>) -> Response {
    match newsletter_choices(&state, None).await {
        Ok(newsletters) => page::html(&SignUpPage {
            layout: layout(req, "Sign up", None),
            name: String::new(),
            email: String::new(),
            newsletters,
        }),
        Err(err) => page::error_page(err.status_code(), "reading newsletters"),
    }
}

/// The active newsletters, checked as `chosen` says or, without a choice, as their
/// `subscribe_on_signup`.
async fn newsletter_choices(
    state: &State,
    chosen: Option<&[Uuid]>,
) -> Result<Vec<NewsletterChoice>, Problem> {
    let rows: Vec<(Uuid, String, Option<String>, bool)> = sqlx::query_as(
        "SELECT id, name, description, subscribe_on_signup FROM newsletters
         WHERE status = 'active' ORDER BY name",
    )
    .fetch_all(&state.pool)
    .await
    .map_err(crate::api::problem::db_error)?;
    Ok(rows
        .into_iter()
        .map(|(id, name, description, on_signup)| NewsletterChoice {
            checked: chosen.map_or(on_signup, |c| c.contains(&id)),
            id,
            name,
            description: description.unwrap_or_default(),
        })
        .collect())
}

/// Sign-up: the same code as sign-in, and the member is created once the email is verified.
#[handler]
pub async fn request_signup(req: &Request, body: String, state: Data<&State>) -> Response {
    let fields: Vec<(String, String)> = match forms::read(req, &body) {
        Ok(fields) => fields,
        Err(resp) => return resp,
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let (name, email_raw) = (field("name"), field("email"));
    let chosen: Vec<Uuid> = fields
        .iter()
        .filter(|(n, _)| n == "newsletter")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    // A history the script could not read is dropped, not shown to the member as an error:
    // attribution is ours to want, not theirs to fix.
    let history: Option<Vec<aggregates::attribution::UrlHistoryEntry>> =
        serde_json::from_str(&field("url_history")).ok();
    let history = history.filter(|h| !h.is_empty());
    let email = aggregates::EmailAddress::parse(&email_raw);
    let checked = signup(
        &state,
        Some(name.as_str()).filter(|n| !n.is_empty()),
        history.clone(),
        Some(chosen.clone()),
    )
    .or_else(|problem| {
        // A malformed history alone does not stop a signup.
        if problem
            .errors
            .iter()
            .all(|e| e.field.starts_with("url_history"))
        {
            signup(
                &state,
                Some(name.as_str()).filter(|n| !n.is_empty()),
                None,
                Some(chosen.clone()),
            )
        } else {
            Err(problem)
        }
    });
    let again = |notice: Notice| async {
        let newsletters = newsletter_choices(&state, Some(&chosen))
            .await
            .unwrap_or_default();
        SignUpPage {
            layout: layout(req, "Sign up", Some(notice)),
            name: name.clone(),
            email: email_raw.clone(),
            newsletters,
        }
    };
    let (email, signup) = match (email, checked) {
        (Ok(email), Ok(signup)) => (email, signup),
        (email, checked) => {
            let mut errors = Vec::new();
            if let Err(e) = email {
                errors.push(FieldError::new("email", e.reason()));
            }
            if let Err(problem) = checked {
                errors.extend(problem.errors);
            }
            let problem = Problem::validation(errors);
            return page::html_status(
                poem::http::StatusCode::UNPROCESSABLE_ENTITY,
                &again(Notice::from_problem(&problem)).await,
            );
        }
    };
    let form = again(Notice::default()).await;
    send_code(req, &state, &email, Some(signup), |notice| SignUpPage {
        layout: layout(req, "Sign up", Some(notice)),
        ..form
    })
    .await
}

#[derive(Deserialize)]
struct VerifyForm {
    email: Option<String>,
    code: Option<String>,
    token: Option<String>,
}

/// A code or a magic link's token: a browser session, and on to the dashboard.
#[handler]
pub async fn verify(
    req: &Request,
    body: String,
    state: Data<&State>,
    request_id: Data<&RequestId>,
) -> Response {
    let form: VerifyForm = match forms::read(req, &body) {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let email_raw = form.email.clone().unwrap_or_default();
    let credentials = match (form.token.filter(|t| !t.is_empty()), form.code) {
        (Some(token), _) => Credentials::Token { token },
        (None, Some(code)) => match aggregates::EmailAddress::parse(email_raw.trim()) {
            Ok(email) => Credentials::Code { email, code },
            Err(_) => return page::see_other("/account/signin"),
        },
        (None, None) => return page::see_other("/account/signin"),
    };
    let by_link = matches!(credentials, Credentials::Token { .. });
    let ip = crate::api::edge::client_ip(req);
    match auth::verify(
        &state.sign_in,
        credentials,
        SessionKind::Browser,
        ip,
        &request_id.0 .0,
    )
    .await
    {
        Ok(signed_in) => {
            session::set(
                req,
                session::cookie(
                    &state,
                    MEMBER_COOKIE,
                    &signed_in.session_token,
                    "/account",
                    state.sign_in.settings.session_ttl,
                ),
            );
            page::see_other("/account")
        }
        Err(err) => {
            let status = match &err {
                AuthError::InvalidCredentials => poem::http::StatusCode::UNAUTHORIZED,
                AuthError::RateLimited(_) => poem::http::StatusCode::TOO_MANY_REQUESTS,
                _ => poem::http::StatusCode::SERVICE_UNAVAILABLE,
            };
            let notice = match err {
                AuthError::InvalidCredentials if by_link => Notice::error(
                    "This sign-in link is wrong, expired or already used. Ask for a new one below.",
                ),
                AuthError::InvalidCredentials => Notice::error(
                    "That code is wrong, expired or already used. Check the latest email, or ask for a new code.",
                ),
                other => Notice::from_problem(&auth_problem(other)),
            };
            if by_link {
                page::html_status(
                    status,
                    &SignInPage {
                        layout: layout(req, "Sign in", Some(notice)),
                        email: String::new(),
                    },
                )
            } else {
                page::html_status(
                    status,
                    &CodePage {
                        layout: layout(req, "Check your email", Some(notice)),
                        email: email_raw,
                    },
                )
            }
        }
    }
}

/// Ends the browser's session.
#[handler]
pub async fn sign_out(req: &Request, body: String, state: Data<&State>) -> Response {
    if let Err(resp) = forms::read::<Vec<(String, String)>>(req, &body) {
        return resp;
    }
    if let Some(token) = session::token(req, MEMBER_COOKIE) {
        if let Err(err) = auth::revoke(&state.sign_in, &token).await {
            return page::error_page(
                poem::http::StatusCode::SERVICE_UNAVAILABLE,
                &err.to_string(),
            );
        }
    }
    session::clear(req, &state, MEMBER_COOKIE, "/account");
    page::see_other("/account/signin?done=signed-out")
}
