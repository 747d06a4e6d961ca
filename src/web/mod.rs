//! The pages people use in a browser: the member portal (`/account`), the admin console
//! (`/admin`) and their assets (`/assets`). Server-rendered from askama templates compiled
//! into the binary, with a little plain JavaScript; no build step.
//!
//! The pages call the same functions as the API and keep its limits. What differs:
//! - the session is an HttpOnly, SameSite=Lax cookie (Secure on an https `PUBLIC_URL`), kept
//!   apart from API bearer tokens (`auth::SessionKind`);
//! - every form that changes something carries an integrity token (poem's `Csrf`: a token in
//!   the form checked against an encrypted cookie; its key is shared by every instance through
//!   `server_secrets`), and a post without a valid one is refused;
//! - errors are pages in words, never a problem document;
//! - every page is sent with a Content-Security-Policy that allows no inline script, and
//!   `frame-ancestors 'none'`.

use std::sync::Arc;

use poem::http::{header, HeaderValue};
use poem::middleware::Csrf;
use poem::web::cookie::SameSite;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use sqlx::PgPool;

use crate::api::state::State;

pub mod admin;
pub mod assets;
pub mod forms;
pub mod page;
pub mod portal;
pub mod session;

/// Keys every instance shares (`server_secrets`).
#[derive(Clone)]
pub struct WebKeys {
    /// Encrypts the forms' integrity cookie.
    pub csrf: [u8; 32],
    /// Signs links that work without a session (unsubscribe).
    pub links: [u8; 32],
}

impl WebKeys {
    pub async fn load(pool: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(Self {
            csrf: crate::secrets::shared_key(pool, "csrf").await?,
            links: crate::secrets::shared_key(pool, "links").await?,
        })
    }
}

/// The name of the forms' integrity cookie.
pub const CSRF_COOKIE: &str = "ml_csrf";

/// `routes` (the portal's or the admin console's) as pages: with the pages' headers, HTML
/// error pages, and integrity tokens for their forms.
pub fn pages(routes: Route, state: &State, keys: &WebKeys) -> impl Endpoint {
    let secure = state.public_url.starts_with("https://");
    // Built once: it depends on the settings only.
    let policy = HeaderValue::from_str(&content_security_policy(state))
        .expect("the Content-Security-Policy is ASCII");
    routes
        .with(
            Csrf::new()
                .key(keys.csrf)
                .cookie_name(CSRF_COOKIE)
                .secure(secure)
                .same_site(SameSite::Lax)
                .ttl(std::time::Duration::from_secs(24 * 60 * 60)),
        )
        .data(keys.clone())
        .around(move |next, req| page_headers(next, req, policy.clone()))
        .boxed()
}

/// Where magic links pointed before the portal: on to the portal's sign-in, query and all.
#[poem::handler]
pub fn old_signin_link(req: &Request) -> Response {
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    page::see_other(&format!("/account/signin{query}"))
}

/// The Content-Security-Policy of every page: scripts, styles and images only from here, forms
/// posted here or to Stripe's pages (Checkout and the Billing Portal, where a form's answer
/// redirects), never framed.
fn content_security_policy(state: &State) -> String {
    let mut form_action = vec![
        "'self'".to_owned(),
        "https://checkout.stripe.com".to_owned(),
        "https://billing.stripe.com".to_owned(),
    ];
    // A Stripe stand-in (STRIPE_API_BASE, in tests) serves its pages at its own origin.
    if let Some(origin) = state
        .stripe
        .api_base
        .as_deref()
        .and_then(|base| url::Url::parse(base).ok())
        .map(|url| url.origin().ascii_serialization())
    {
        form_action.push(origin);
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action {}; frame-ancestors 'none'; base-uri 'none'",
        form_action.join(" ")
    )
}

/// Headers of every page, and an HTML page for what went wrong outside a handler (an unknown
/// path, a method a route does not take).
async fn page_headers<E: Endpoint>(
    next: Arc<E>,
    req: Request,
    policy: HeaderValue,
) -> poem::Result<Response> {
    let path = req.original_uri().path().to_owned();
    let mut resp = match next.call(req).await {
        Ok(resp) => resp.into_response(),
        Err(err) => page::error_page_at(&path, err.status(), &err.to_string()),
    };
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages show a member's own data: never kept by a cache or the back button's store.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
