//! `/v1/auth`: passwordless sign-in for members, and the member session security scheme.

use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, SecurityScheme};
use uuid::Uuid;

use super::declared::{EmailString, EpochMillis, PathString, TextString};
use super::members::MemberView;
use super::problem::db_error;
use super::problem::{FieldError, Problem};
use super::state::{ApiTags, RequestId, State};
use crate::api::problem::api_response;
use crate::auth::{self, AuthError, Credentials, SessionKind, Signup};

/// A member session token (`Authorization: Bearer <session_token>` from `POST /v1/auth/verify`).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_member")]
pub struct MemberAuth(pub MemberSession);

pub struct MemberSession {
    pub member_id: Uuid,
    pub token: String,
}

async fn check_member(req: &Request, bearer: Bearer) -> poem::Result<MemberSession> {
    let state = req
        .data::<State>()
        .ok_or_else(|| poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR))?;
    match auth::authenticate(&state.sign_in, &bearer.token, SessionKind::Api).await {
        Ok(Some(member_id)) => Ok(MemberSession {
            member_id,
            token: bearer.token,
        }),
        Ok(None) => Err(poem::Error::from_status(
            poem::http::StatusCode::UNAUTHORIZED,
        )),
        Err(err) => {
            tracing::error!(error = %err, "checking a member session");
            Err(poem::Error::from_string(
                "the database is unavailable; retry later",
                poem::http::StatusCode::SERVICE_UNAVAILABLE,
            ))
        }
    }
}

/// One page the visitor saw before signing up, as the site's script records it.
#[derive(Debug, Clone, Object)]
pub struct UrlHistoryItem {
    /// The page's path, starting with a single `/` (query and fragment are ignored).
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub path: PathString,
    /// When, in milliseconds since the Unix epoch; entries older than 24 hours are ignored.
    pub time: EpochMillis,
    #[oai(validator(max_length = 191))]
    pub referrer_source: Option<String>,
    #[oai(validator(max_length = 191))]
    pub referrer_medium: Option<String>,
    #[oai(validator(max_length = 2048))]
    pub referrer_url: Option<String>,
    #[oai(validator(max_length = 191))]
    pub utm_source: Option<String>,
    #[oai(validator(max_length = 191))]
    pub utm_medium: Option<String>,
    #[oai(validator(max_length = 191))]
    pub utm_campaign: Option<String>,
    #[oai(validator(max_length = 191))]
    pub utm_term: Option<String>,
    #[oai(validator(max_length = 191))]
    pub utm_content: Option<String>,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct CodeRequest {
    #[oai(validator(min_length = 3, max_length = 254))]
    pub email: EmailString,
    /// Create the member when the email is verified, if it is not a member yet.
    #[oai(default)]
    pub signup: bool,
    /// For a signup: the member's name (no control characters but tab and newline).
    #[oai(validator(max_length = 191))]
    pub name: Option<TextString>,
    /// For a signup: the pages seen before signing up, for attribution (at most 100 sent; the
    /// newest 15 within 24 hours are used).
    #[oai(validator(max_items = 100))]
    pub url_history: Option<Vec<UrlHistoryItem>>,
    /// For a signup: newsletters to subscribe to; absent: those marked `subscribe_on_signup`.
    #[oai(validator(max_items = 50))]
    pub newsletters: Option<Vec<Uuid>>,
}

/// Either `email` and `code`, or `token` (from the magic link); any other combination is
/// refused (422, field `token`).
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct VerifyRequest {
    /// With `code`: the address the code was sent to.
    #[oai(validator(min_length = 3, max_length = 254))]
    pub email: Option<EmailString>,
    /// With `email`: the 6-digit code from the email.
    #[oai(validator(pattern = r"^\s*[0-9]{6}\s*$"))]
    pub code: Option<String>,
    /// Alone: the token of the magic link.
    #[oai(validator(min_length = 1, max_length = 128))]
    pub token: Option<String>,
}

/// A signed-in member's session.
#[derive(Debug, Clone, Object)]
pub struct SessionView {
    /// Send as `Authorization: Bearer <session_token>`. Shown only now.
    pub session_token: String,
    /// Moves forward with every use (30 days after the last request).
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub member: MemberView,
}

#[derive(Debug, Clone, Object)]
pub struct Accepted {
    /// Always `true`: whether an email was sent is not disclosed.
    pub accepted: bool,
}

api_response! {
    pub enum CodeResponse {
        /// Accepted. An email is on its way if the address belongs to a member (or signs up).
        #[oai(status = 202)]
        Accepted(Json<Accepted>),
        /// Too many requests for this email or from this address.
        #[oai(status = 429, content_type = "application/problem+json")]
        TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    }
    problems {
        /// The body is not valid JSON of the expected shape.
        400 => BadRequest,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation; `errors` names them.
        422 => Invalid,
    }
}

api_response! {
    pub enum VerifyResponse {
        /// Signed in.
        #[oai(status = 200)]
        Ok(Json<SessionView>),
        /// Too many attempts for this email or from this address.
        #[oai(status = 429, content_type = "application/problem+json")]
        TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    }
    problems {
        /// The body is not valid JSON of the expected shape.
        400 => BadRequest,
        /// The code or link is wrong, expired, used, or burned by too many wrong tries.
        401 => Unauthorized,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation; `errors` names them.
        422 => Invalid,
    }
}

api_response! {
    pub enum SignOutResponse {
        /// Signed out: the session token no longer works.
        #[oai(status = 204)]
        SignedOut,
    }
    problems {
        /// No valid member session.
        401 => Unauthorized,
    }
}

pub struct SessionsApi {
    pub state: State,
}

#[OpenApi(prefix_path = "/v1/auth", tag = "ApiTags::Auth")]
impl SessionsApi {
    /// Email a sign-in code
    ///
    /// Sends a 6-digit code and a magic link (both single-use, valid 10 minutes) to a member's
    /// email; with `signup: true`, also to a new email, creating the member once verified.
    /// Always answers 202, whether or not the email is known. A new request invalidates the
    /// codes sent before.
    #[oai(path = "/code", method = "post", operation_id = "requestSignInCode")]
    async fn request_code(
        &self,
        req: &Request,
        request_id: poem::web::Data<&RequestId>,
        body: Json<CodeRequest>,
    ) -> CodeResponse {
        let _ = request_id;
        let body = body.0;
        let email = match aggregates::EmailAddress::parse(&body.email) {
            Ok(email) => email,
            Err(e) => {
                return Problem::validation(vec![FieldError::new("email", e.reason())]).into()
            }
        };
        let signup = if body.signup {
            match self.signup(&body) {
                Ok(signup) => Some(signup),
                Err(problem) => return problem.into(),
            }
        } else {
            None
        };
        let ip = super::edge::client_ip(req);
        match auth::request_code(&self.state.sign_in, &email, signup, ip).await {
            Ok(()) => CodeResponse::Accepted(Json(Accepted { accepted: true })),
            Err(AuthError::RateLimited(wait)) => {
                let (problem, secs) = super::edge::too_many_requests(wait, "attempts");
                CodeResponse::TooManyRequests(Json(problem), secs)
            }
            Err(err) => auth_problem(err).into(),
        }
    }

    /// Verify a code or magic link
    ///
    /// Exchanges `{email, code}` or `{token}` for a session token (256 bits, 30 days after
    /// the last use). Five wrong codes burn the code.
    #[oai(path = "/verify", method = "post", operation_id = "verifySignIn")]
    async fn verify(
        &self,
        req: &Request,
        request_id: poem::web::Data<&RequestId>,
        body: Json<VerifyRequest>,
    ) -> VerifyResponse {
        let credentials = match body.0 {
            VerifyRequest {
                token: Some(token),
                email: None,
                code: None,
            } => Credentials::Token { token },
            VerifyRequest {
                email: Some(email),
                code: Some(code),
                token: None,
            } => match aggregates::EmailAddress::parse(&email) {
                Ok(email) => Credentials::Code { email, code },
                Err(e) => {
                    return Problem::validation(vec![FieldError::new("email", e.reason())]).into()
                }
            },
            _ => {
                return Problem::validation(vec![FieldError::new(
                    "token",
                    "send either `email` and `code`, or `token`",
                )])
                .into()
            }
        };
        let ip = super::edge::client_ip(req);
        let signed_in = match auth::verify(
            &self.state.sign_in,
            credentials,
            SessionKind::Api,
            ip,
            &request_id.0 .0,
        )
        .await
        {
            Ok(signed_in) => signed_in,
            Err(AuthError::RateLimited(wait)) => {
                let (problem, secs) = super::edge::too_many_requests(wait, "attempts");
                return VerifyResponse::TooManyRequests(Json(problem), secs);
            }
            Err(err) => return auth_problem(err).into(),
        };
        match super::members::find_member(&self.state, signed_in.member_id).await {
            Ok(Some(member)) => VerifyResponse::Ok(Json(SessionView {
                session_token: signed_in.session_token,
                expires_at: signed_in.expires_at,
                member,
            })),
            Ok(None) => Problem::unavailable(
                "signed in, but the member is not readable yet; retry GET /v1/me",
            )
            .into(),
            Err(problem) => problem.into(),
        }
    }

    /// Sign out
    ///
    /// Ends the session whose token is sent.
    #[oai(path = "/session", method = "delete", operation_id = "signOut")]
    async fn sign_out(&self, session: MemberAuth) -> SignOutResponse {
        match auth::revoke(&self.state.sign_in, &session.0.token).await {
            Ok(()) => SignOutResponse::SignedOut,
            Err(err) => db_error(err).into(),
        }
    }
}

impl SessionsApi {
    fn signup(&self, body: &CodeRequest) -> Result<Signup, Problem> {
        signup(
            &self.state,
            body.name.as_deref(),
            body.url_history
                .as_ref()
                .map(|items| items.iter().cloned().map(history_entry).collect()),
            body.newsletters.clone(),
        )
    }
}

/// What a signup asks for, checked: the name, and the attribution of the visitor's URL history
/// (the API's `url_history`, the portal's hidden field), or every field at fault.
pub(crate) fn signup(
    state: &State,
    name: Option<&str>,
    history: Option<Vec<aggregates::attribution::UrlHistoryEntry>>,
    newsletters: Option<Vec<Uuid>>,
) -> Result<Signup, Problem> {
    let mut errors = Vec::new();
    let name = match name.map(aggregates::MemberName::parse).transpose() {
        Ok(name) => name.flatten().map(aggregates::MemberName::into_inner),
        Err(e) => {
            errors.push(FieldError::new("name", e.reason()));
            None
        }
    };
    let attribution = match history {
        None => None,
        Some(entries) => {
            match aggregates::attribution::UrlHistory::parse(entries, chrono::Utc::now()) {
                Ok(history) => Some(aggregates::attribution::attribute(
                    &history,
                    &state.attribution_routes,
                    state.site_host.as_deref(),
                )),
                Err(history_errors) => {
                    errors.extend(
                        history_errors
                            .into_iter()
                            .map(|e| FieldError::new(e.field, e.reason)),
                    );
                    None
                }
            }
        }
    };
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    Ok(Signup {
        name,
        attribution,
        newsletters,
    })
}

pub(crate) fn history_entry(item: UrlHistoryItem) -> aggregates::attribution::UrlHistoryEntry {
    aggregates::attribution::UrlHistoryEntry {
        path: item.path.into(),
        time: item.time.0,
        referrer_source: item.referrer_source,
        referrer_medium: item.referrer_medium,
        referrer_url: item.referrer_url,
        utm_source: item.utm_source,
        utm_medium: item.utm_medium,
        utm_campaign: item.utm_campaign,
        utm_term: item.utm_term,
        utm_content: item.utm_content,
    }
}

pub(crate) fn auth_problem(err: AuthError) -> Problem {
    match err {
        AuthError::InvalidCredentials => Problem::new(
            poem::http::StatusCode::UNAUTHORIZED,
            "invalid-code",
            "the code or link is wrong, expired or already used",
        ),
        AuthError::RateLimited(wait) => super::edge::too_many_requests(wait, "attempts").0,
        AuthError::Database(err) => db_error(err),
        AuthError::Command(msg) => {
            tracing::error!(error = %msg, "sign-in failed");
            Problem::unavailable("signing in failed; retry")
        }
    }
}

impl poem_openapi::types::Example for CodeRequest {
    fn example() -> Self {
        Self {
            email: "ada@example.com".into(),
            signup: true,
            name: Some("Ada Lovelace".into()),
            url_history: Some(vec![UrlHistoryItem {
                path: "/welcome/".into(),
                time: EpochMillis(1_764_000_000_000),
                referrer_source: None,
                referrer_medium: None,
                referrer_url: Some("https://www.google.com/".into()),
                utm_source: None,
                utm_medium: None,
                utm_campaign: None,
                utm_term: None,
                utm_content: None,
            }]),
            newsletters: None,
        }
    }
}

impl poem_openapi::types::Example for VerifyRequest {
    fn example() -> Self {
        Self {
            email: Some("ada@example.com".into()),
            code: Some("123456".into()),
            token: None,
        }
    }
}
