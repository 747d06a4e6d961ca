//! Form posts: read as `application/x-www-form-urlencoded`, accepted only with the integrity
//! token the page rendered into them.

use poem::http::StatusCode;
use poem::web::{CsrfToken, CsrfVerifier};
use poem::{Request, Response};
use serde::de::DeserializeOwned;

use super::page;

/// The name of the hidden field that carries the integrity token.
pub const TOKEN_FIELD: &str = "csrf_token";

/// The token to render into a page's forms.
pub fn token(req: &Request) -> String {
    req.extensions()
        .get::<CsrfToken>()
        .map(|t| t.0.clone())
        .unwrap_or_default()
}

/// A form whose integrity token checked out, or the page to answer instead: 403 without a
/// valid token (nothing is done), 400 when the form cannot be read. `T` may take every field
/// as `Vec<(String, String)>` (repeated names, such as checkboxes).
pub fn read<T: DeserializeOwned>(req: &Request, raw: &str) -> Result<T, Response> {
    let path = req.original_uri().path();
    let unreadable = |detail: String| page::error_page_at(path, StatusCode::BAD_REQUEST, &detail);
    let fields: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|e| unreadable(e.to_string()))?;
    let token = fields
        .iter()
        .find(|(name, _)| name == TOKEN_FIELD)
        .map(|(_, value)| value.as_str())
        .unwrap_or_default();
    let valid = req
        .extensions()
        .get::<CsrfVerifier>()
        .is_some_and(|verifier| verifier.is_valid(token));
    if !valid {
        tracing::info!(
            path = req.uri().path(),
            "a form without a valid integrity token refused"
        );
        return Err(page::error_page_at(path, StatusCode::FORBIDDEN, ""));
    }
    serde_urlencoded::from_str(raw).map_err(|e| unreadable(e.to_string()))
}
