//! RFC 9457 problem details: the one shape every error of the API takes.

use aggregates::cqrs_es::AggregateError;
use aggregates::{LicenseError, MemberError, NewsletterError, SubscriptionError};
use poem::http::StatusCode;
use poem::IntoResponse;
use poem_openapi::payload::Json;
use poem_openapi::Object;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error, as `application/problem+json` (RFC 9457).
#[derive(Debug, Clone, Object)]
#[oai(rename = "Problem")]
pub struct Problem {
    /// A URI reference naming the kind of problem.
    #[oai(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time.
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
    /// The request id, to find this request in the logs.
    #[oai(skip_serializing_if_is_none)]
    pub instance: Option<String>,
    /// Per-field errors, for invalid input; absent when no single field is at fault.
    #[oai(default, skip_serializing_if_is_empty)]
    pub errors: Vec<FieldError>,
}

/// Why one field of the input was rejected.
#[derive(Debug, Clone, Object)]
pub struct FieldError {
    /// The field, as named in the request (query parameter or JSON property path).
    pub field: String,
    /// Why it was rejected.
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            instance: None,
            errors: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "the request has invalid fields",
            )
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn conflict(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an unexpected error occurred; it has been logged",
        )
    }

    pub fn with_field(mut self, field: impl Into<String>, reason: impl Into<String>) -> Self {
        self.errors.push(FieldError::new(field, reason));
        self
    }

    /// A 503 says what the client should know before it retries (what was done already);
    /// any other problem is left as it is.
    pub fn when_unavailable(mut self, detail: &str) -> Self {
        if self.status == 503 {
            self.detail = Some(detail.to_owned());
        }
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The detail (or title) and every field error on one line, for the command line.
    pub fn in_words(self) -> String {
        let mut message = self.detail.unwrap_or(self.title);
        for e in self.errors {
            message.push_str(&format!("; {}: {}", e.field, e.reason));
        }
        message
    }

    pub fn json(self) -> Json<Self> {
        Json(self)
    }

    /// Turns any error poem or poem-openapi produced (unparsable JSON, a wrong content type,
    /// a bad query parameter, a missing token, an unknown route) into a problem.
    pub fn from_poem(err: &poem::Error) -> Self {
        use poem_openapi::error::{
            AuthorizationError, ContentTypeError, ParseParamError, ParsePathError,
            ParseRequestPayloadError,
        };
        let status = err.status();
        // Unparsable input is a 400; input that parses but breaks a constraint a 422.
        if let Some(e) = err.downcast_ref::<ParseParamError>() {
            if let Some(constraint) = broken_constraint(&e.reason) {
                return Self::validation(vec![FieldError::new(e.name, constraint)]);
            }
            return Self::bad_request(format!("invalid parameter `{}`", e.name))
                .with_field(e.name, &e.reason);
        }
        if let Some(e) = err.downcast_ref::<ParsePathError>() {
            return Self::new(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "invalid path parameter",
            )
            .with_field("path", &e.reason);
        }
        if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
            if let (Some(field), Some(constraint)) =
                (validation_field(&e.reason), broken_constraint(&e.reason))
            {
                return Self::validation(vec![FieldError::new(field, constraint)]);
            }
            return Self::bad_request(format!("the request body is invalid: {}", e.reason));
        }
        if err.is::<ContentTypeError>() {
            return Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                err.to_string(),
            );
        }
        if err.is::<AuthorizationError>() || status == StatusCode::UNAUTHORIZED {
            return Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            );
        }
        let kind = match status {
            StatusCode::NOT_FOUND => "not-found",
            StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
            s if s.is_server_error() => "internal",
            _ => "bad-request",
        };
        if status.is_server_error() {
            tracing::error!(error = %err, "request failed");
            return Self {
                status: status.as_u16(),
                title: status.canonical_reason().unwrap_or("Error").to_owned(),
                ..Self::internal()
            };
        }
        Self::new(status, kind, err.to_string())
    }
}

/// The `bad_request_handler` of every operation: poem-openapi's parse errors become the
/// operation's problem response.
pub fn bad_request<T: From<Problem>>(err: poem::Error) -> T {
    T::from(Problem::from_poem(&err))
}

/// poem-openapi reports a broken constraint as "field `name` verification failed. maxLength(191)";
/// this returns "violates maxLength(191)".
fn broken_constraint(reason: &str) -> Option<String> {
    const MARK: &str = "verification failed. ";
    let start = reason.find(MARK)? + MARK.len();
    Some(format!("violates {}", reason[start..].trim()))
}

fn validation_field(reason: &str) -> Option<String> {
    let start = reason.find("field `").map(|i| i + "field `".len())?;
    let end = reason[start..].find('`')? + start;
    Some(reason[start..end].to_owned())
}

impl IntoResponse for Problem {
    fn into_response(self) -> poem::Response {
        let status = self.status_code();
        let body =
            serde_json::to_vec(&poem_openapi::types::ToJSON::to_json(&self)).unwrap_or_default();
        poem::Response::builder()
            .status(status)
            .content_type(PROBLEM_JSON)
            .body(body)
    }
}

/// A database failure, logged with its cause. The database down or busy (no connection in
/// time, a statement past its timeout, a lock not granted; `bounds::is_unavailable`) is a 503
/// the client retries (`Retry-After` is added to every 503); any other failure is a bug, 500.
pub fn db_error(err: sqlx::Error) -> Problem {
    if matches!(err, sqlx::Error::PoolTimedOut) {
        crate::metrics::pool_timed_out();
    }
    if crate::bounds::is_unavailable(&err) {
        tracing::error!(error = %err, "database unavailable");
        Problem::unavailable("the database is unavailable; retry later")
    } else {
        tracing::error!(error = %err, "database error");
        Problem::internal()
    }
}

/// How the API answers an aggregate's refusal of a command: a 4xx problem naming why.
pub trait Refusal: std::error::Error {
    fn problem(&self) -> Problem;
}

/// The one answer to a failed command: a domain refusal gets its 4xx problem; a concurrent
/// change that outlasted the bus's retries, or the database, 503 (retry later); anything else
/// is logged and answered 500.
pub fn command_error<E: Refusal>(err: AggregateError<E>) -> Problem {
    match err {
        AggregateError::UserError(refusal) => refusal.problem(),
        AggregateError::AggregateConflict => {
            Problem::unavailable("the resource is being changed concurrently; retry")
        }
        AggregateError::DatabaseConnectionError(e) => {
            tracing::error!(error = %e, "event store unavailable");
            Problem::unavailable("the database is unavailable; retry later")
        }
        // postgres-es reports a timed-out pool or statement while loading as unexpected.
        AggregateError::UnexpectedError(e) if crate::bounds::caused_by_unavailable(&*e) => {
            tracing::error!(error = %e, "event store unavailable");
            Problem::unavailable("the database is unavailable; retry later")
        }
        AggregateError::DeserializationError(e) | AggregateError::UnexpectedError(e) => {
            tracing::error!(error = %e, "command failed");
            Problem::internal()
        }
    }
}

impl Refusal for MemberError {
    fn problem(&self) -> Problem {
        match self {
            Self::NotFound => Problem::not_found("no member has this id"),
            Self::AlreadyExists => Problem::conflict("member-exists", "the member already exists"),
            Self::CompUntilPassed => {
                Problem::validation(vec![FieldError::new("until", "must be in the future")])
            }
        }
    }
}

impl Refusal for NewsletterError {
    fn problem(&self) -> Problem {
        match self {
            Self::NotFound => Problem::not_found("no newsletter has this id"),
            Self::AlreadyExists => {
                Problem::conflict("newsletter-exists", "the newsletter already exists")
            }
        }
    }
}

impl Refusal for LicenseError {
    fn problem(&self) -> Problem {
        match self {
            Self::NotFound => Problem::not_found("you have no license with this key"),
            Self::SiteLicense => Problem::conflict(
                "site-license",
                "a site license is bound to its site; only quantity keys are activated on a domain",
            ),
            Self::Inactive => Problem::conflict(
                "license-inactive",
                "the license is not active, so it cannot be activated",
            ),
            Self::Pending => Problem::conflict(
                "license-pending",
                "the key's purchase is not paid yet, so it cannot be activated",
            ),
            Self::AlreadyActivated { domain } => Problem::conflict(
                "license-already-activated",
                format!("the key is already activated on {domain}; release it first"),
            )
            .with_field("domain", format!("the key is activated on {domain}")),
            Self::TooManyMachines { limit } => Problem::conflict(
                "license-too-many-machines",
                format!(
                    "the key is activated on {limit} domain(s), the limit of its policy; \
                     release one first"
                ),
            )
            .with_field(
                "domain",
                format!("the key's limit of {limit} domain(s) is reached"),
            ),
            Self::Suspended => Problem::conflict(
                "license-suspended",
                "the license is suspended; it cannot be activated until it is unsuspended",
            ),
            Self::Revoked => {
                Problem::conflict("license-revoked", "the license is revoked for good")
            }
        }
    }
}

impl Refusal for SubscriptionError {
    fn problem(&self) -> Problem {
        match self {
            Self::WrongSubscription => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong-subscription",
                "the Stripe state belongs to a different subscription",
            ),
            Self::Ended => Problem::conflict(
                "subscription-ended",
                "the subscription has ended; nothing can be added to it",
            ),
            Self::OtherMember => Problem::conflict(
                "subscription-of-another-member",
                "the subscription belongs to another member",
            ),
        }
    }
}

/// Declares an operation's response enum: its success variants as written, then one variant
/// per problem status it lists (each `application/problem+json`, with its doc line), then the
/// 500 and 503 every operation can answer; and maps a [`Problem`] to the variant of its status
/// (an unlisted status is logged and answered 500). `unavailable:` replaces the 503's doc line.
macro_rules! api_response {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident $(( $($fields:tt)* ))?, )*
        }
        problems {
            $( $(#[doc = $pdoc:literal])* $status:literal => $pvariant:ident, )*
        }
        unavailable: $unavailable:literal
    ) => {
        $(#[$meta])*
        #[derive(poem_openapi::ApiResponse)]
        #[oai(bad_request_handler = "crate::api::problem::bad_request")]
        $vis enum $name {
            $( $(#[$vmeta])* $variant $(( $($fields)* ))?, )*
            $(
                $(#[doc = $pdoc])*
                #[oai(status = $status, content_type = "application/problem+json")]
                $pvariant(poem_openapi::payload::Json<$crate::api::problem::Problem>),
            )*
            /// An unexpected error; it is logged under the request id.
            #[oai(status = 500, content_type = "application/problem+json")]
            Internal(poem_openapi::payload::Json<$crate::api::problem::Problem>),
            #[doc = $unavailable]
            #[oai(status = 503, content_type = "application/problem+json")]
            Unavailable(poem_openapi::payload::Json<$crate::api::problem::Problem>),
        }

        impl From<$crate::api::problem::Problem> for $name {
            fn from(problem: $crate::api::problem::Problem) -> Self {
                match problem.status {
                    $($status => Self::$pvariant(poem_openapi::payload::Json(problem)),)*
                    503 => Self::Unavailable(poem_openapi::payload::Json(problem)),
                    _ => {
                        if problem.status != 500 {
                            tracing::error!(status = problem.status, "undocumented status mapped to 500");
                        }
                        Self::Internal(poem_openapi::payload::Json(
                            $crate::api::problem::Problem::internal(),
                        ))
                    }
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $($body:tt)* }
        problems { $($problems:tt)* }
    ) => {
        $crate::api::problem::api_response! {
            $(#[$meta])*
            $vis enum $name { $($body)* }
            problems { $($problems)* }
            unavailable: "The database is unavailable; retry later."
        }
    };
}
pub(crate) use api_response;
