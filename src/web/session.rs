//! The browser's sessions: the member's (`ml_session`, path `/account`) and the admin's
//! (`ml_admin`, path `/admin`), each an HttpOnly, SameSite=Lax cookie holding a random token
//! whose hash is stored (Secure on an https `PUBLIC_URL`).

use std::time::Duration;

use poem::web::cookie::{Cookie, SameSite};
use poem::Request;
use uuid::Uuid;

use crate::api::state::State;
use crate::auth::{self, SessionKind};

pub const MEMBER_COOKIE: &str = "ml_session";
pub const ADMIN_COOKIE: &str = "ml_admin";

/// A session cookie for `path`, living `ttl` (the server slides its own expiry on use; the
/// cookie outlives it and is simply refused once the session has expired).
pub fn cookie(state: &State, name: &str, token: &str, path: &str, ttl: Duration) -> Cookie {
    let mut cookie = Cookie::new_with_str(name, token);
    cookie.set_http_only(true);
    cookie.set_same_site(SameSite::Lax);
    cookie.set_secure(state.public_url.starts_with("https://"));
    cookie.set_path(path);
    cookie.set_max_age(ttl);
    cookie
}

/// Sets `cookie` on the response (through the request's cookie jar).
pub fn set(req: &Request, cookie: Cookie) {
    req.cookie().add(cookie);
}

/// Clears the cookie `name` of `path`.
pub fn clear(req: &Request, state: &State, name: &str, path: &str) {
    req.cookie()
        .add(cookie(state, name, "", path, Duration::from_secs(0)));
}

/// The token of the cookie `name`, if the browser sent one.
pub fn token(req: &Request, name: &str) -> Option<String> {
    req.cookie()
        .get(name)
        .map(|c| c.value_str().to_owned())
        .filter(|t| !t.is_empty() && t.len() <= 128)
}

/// The signed-in member, if the browser's session cookie is a live browser session.
pub async fn member(req: &Request, state: &State) -> Result<Option<Uuid>, sqlx::Error> {
    match token(req, MEMBER_COOKIE) {
        Some(token) => auth::authenticate(&state.sign_in, &token, SessionKind::Browser).await,
        None => Ok(None),
    }
}
