//! Admin bearer tokens: from `ADMIN_TOKEN`, or generated and stored as hashes only.

use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use super::State;

/// An admin bearer token (`Authorization: Bearer <token>`).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_admin")]
pub struct AdminAuth(());

async fn check_admin(req: &Request, bearer: Bearer) -> poem::Result<()> {
    let state = req
        .data::<State>()
        .ok_or_else(|| poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR))?;
    match state.admin_tokens.verify(&bearer.token).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(poem::Error::from_status(
            poem::http::StatusCode::UNAUTHORIZED,
        )),
        Err(err) => {
            tracing::error!(error = %err, "checking an admin token");
            Err(poem::Error::from_string(
                "the database is unavailable; retry later",
                poem::http::StatusCode::SERVICE_UNAVAILABLE,
            ))
        }
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub struct AdminTokens {
    pool: PgPool,
    /// Hash of `ADMIN_TOKEN`, when set. Never stored.
    configured: Option<[u8; 32]>,
}

impl AdminTokens {
    pub fn new(pool: PgPool, configured: Option<&str>) -> Self {
        Self {
            pool,
            configured: configured.map(hash),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<bool, sqlx::Error> {
        let candidate = hash(token);
        if self
            .configured
            .is_some_and(|c| bool::from(c.ct_eq(&candidate)))
        {
            return Ok(true);
        }
        // Looked up by hash: the token itself never reaches the database.
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM admin_tokens WHERE token_hash = $1)")
            .bind(&candidate[..])
            .fetch_one(&self.pool)
            .await
    }
}

/// A new random admin token (256 bits, base64url).
pub fn generate_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "mlat_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Creates a token, stores its hash and returns it (to be shown once).
pub async fn create_stored_token(pool: &PgPool, label: &str) -> Result<String, sqlx::Error> {
    let token = generate_token();
    sqlx::query("INSERT INTO admin_tokens (token_hash, label) VALUES ($1, $2)")
        .bind(&hash(&token)[..])
        .bind(label)
        .execute(pool)
        .await?;
    Ok(token)
}

pub async fn stored_token_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM admin_tokens")
        .fetch_one(pool)
        .await
}

/// Deletes the stored tokens, and ends the admin console's sessions with them: a session does
/// not record which token opened it, and one opened with a revoked token must not outlive it.
pub async fn revoke_stored_tokens(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let revoked = sqlx::query("DELETE FROM admin_tokens")
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("UPDATE admin_sessions SET revoked_at = now() WHERE revoked_at IS NULL")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(revoked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_long_and_distinct() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.len() >= 40, "{a}");
    }
}
