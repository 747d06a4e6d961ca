//! RFC 9457 problem details: the one shape every error of the API takes.

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

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
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
