//! The admin console's cookie sessions (`admin_sessions`): opened by signing in with an admin
//! token, a random 256-bit token in the `ml_admin` cookie (path `/admin`) whose SHA-256 alone
//! is stored. A session lives 12 hours from its last use; signing out revokes it.
//!
//! The admin token itself never goes into a cookie: a cookie that leaks (a shared machine, a
//! copied profile) then gives at most a session that expires and that signing out ends, not a
//! credential for the API.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use poem::Request;
use rand::RngCore;

use crate::api::state::State;
use crate::auth::token_hash;
use crate::web::session::{self, ADMIN_COOKIE};

/// How long a session lasts after its last use.
pub const TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// The cookie's path: the console's pages only.
pub const PATH: &str = "/admin";

/// Opens a session and sets its cookie on the response.
pub async fn open(req: &Request, state: &State) -> Result<(), sqlx::Error> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    // Sessions long over are dropped here, the one place they are written.
    sqlx::query("DELETE FROM admin_sessions WHERE expires_at < now() - interval '7 days'")
        .execute(&state.pool)
        .await?;
    sqlx::query("INSERT INTO admin_sessions (token_hash, expires_at) VALUES ($1, now() + $2)")
        .bind(token_hash(&token))
        .bind(TTL)
        .execute(&state.pool)
        .await?;
    session::set(req, session::cookie(state, ADMIN_COOKIE, &token, PATH, TTL));
    Ok(())
}

/// Whether the browser holds a live session; a live one is extended by [`TTL`] from now, and
/// so is its cookie.
pub async fn check(req: &Request, state: &State) -> Result<bool, sqlx::Error> {
    let Some(token) = session::token(req, ADMIN_COOKIE) else {
        return Ok(false);
    };
    let live = sqlx::query(
        "UPDATE admin_sessions SET last_seen_at = now(), expires_at = now() + $2
         WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()",
    )
    .bind(token_hash(&token))
    .bind(TTL)
    .execute(&state.pool)
    .await?
    .rows_affected()
        == 1;
    if live {
        session::set(req, session::cookie(state, ADMIN_COOKIE, &token, PATH, TTL));
    }
    Ok(live)
}

/// Revokes the browser's session, if it has one, and clears its cookie.
pub async fn revoke(req: &Request, state: &State) -> Result<(), sqlx::Error> {
    if let Some(token) = session::token(req, ADMIN_COOKIE) {
        sqlx::query(
            "UPDATE admin_sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash(&token))
        .execute(&state.pool)
        .await?;
    }
    session::clear(req, state, ADMIN_COOKIE, PATH);
    Ok(())
}
