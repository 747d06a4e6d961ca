//! Passwordless sign-in: an emailed 6-digit code and a single-use magic link, then a session
//! token. Only hashes of codes, links and sessions are stored.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aggregates::attribution::Attribution;
use aggregates::{EmailAddress, LoginMethod, Member, MemberCommand, MemberName, MemberSource};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::config::AuthSettings;
use crate::eventlog::LogPosition;
use crate::mail::{self, html_escape, Email};
use crate::members::{self, CreateMemberError, NewMember};
use crate::rate_limit::{self, Limit};
use crate::store::{Actor, CommandBus, EventMetadata};

/// What a signup asked for, kept with its code until the email is verified.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Signup {
    pub name: Option<String>,
    pub attribution: Option<Attribution>,
    /// Newsletters to subscribe to; `None`: the ones marked `subscribe_on_signup`.
    pub newsletters: Option<Vec<Uuid>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("too many attempts; retry in {} s", .0.as_secs())]
    RateLimited(Duration),
    #[error("the code or link is wrong, expired or used")]
    InvalidCredentials,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Command(String),
}

/// How a member proves they own their email.
pub enum Credentials {
    Code { email: EmailAddress, code: String },
    Token { token: String },
}

/// Who holds a session: an API client (a bearer token) or a browser (the portal's HttpOnly
/// cookie). Each is accepted only the way it was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Api,
    Browser,
}

impl SessionKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Browser => "browser",
        }
    }
}

/// A new session.
pub struct SignedIn {
    pub session_token: String,
    pub expires_at: DateTime<Utc>,
    pub member_id: Uuid,
    /// Where the sign-in (and a signup's creation) is in the log, for read-your-writes.
    pub position: Option<LogPosition>,
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().to_vec()
}

fn code_hash(id: Uuid, code: &str) -> Vec<u8> {
    sha256(&[id.as_bytes(), code.as_bytes()])
}

pub fn token_hash(token: &str) -> Vec<u8> {
    sha256(&[token.as_bytes()])
}

/// What sign-in works with: the database (codes, sessions, rate limits), the member command bus
/// (signups) and its settings.
#[derive(Clone)]
pub struct SignIn {
    pub pool: PgPool,
    pub members: Arc<CommandBus<Member>>,
    pub settings: AuthSettings,
}

/// 256 bits from the OS-seeded CSPRNG, base64url.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Counts a hit on the limit `name` (as the metrics label it) for `key`.
pub(crate) async fn limit(
    pool: &PgPool,
    name: &'static str,
    key: String,
    limit: Limit,
) -> Result<(), AuthError> {
    match rate_limit::hit(pool, &key, limit).await? {
        None => Ok(()),
        Some(wait) => {
            crate::metrics::rate_limited(name);
            Err(AuthError::RateLimited(wait))
        }
    }
}

/// Emails a code and a magic link to a known member, or to a new one signing up. Says nothing
/// about whether the email is known: the caller answers the same either way.
pub async fn request_code(
    sign_in: &SignIn,
    email: &EmailAddress,
    signup: Option<Signup>,
    ip: Option<IpAddr>,
) -> Result<(), AuthError> {
    let settings = &sign_in.settings;
    let normalized = email.normalized();
    if let Some(ip) = ip {
        limit(
            &sign_in.pool,
            "sign_in_code_per_ip",
            format!("code:ip:{ip}"),
            settings.code_per_ip,
        )
        .await?;
    }
    limit(
        &sign_in.pool,
        "sign_in_code_per_email",
        rate_limit::address_key("code", &normalized),
        settings.code_per_email,
    )
    .await?;

    let member_id = members::find_by_email(&sign_in.pool, email).await?;
    let signup = match (member_id, signup) {
        (Some(_), _) => None,
        (None, Some(signup)) => Some(signup),
        // Unknown and not signing up: nothing to send.
        (None, None) => return Ok(()),
    };
    let id = Uuid::now_v7();
    let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
    let token = random_token();
    let expires_at = Utc::now() + chrono::Duration::from_std(settings.code_ttl).unwrap_or_default();
    let mut tx = crate::db::begin(&sign_in.pool, crate::db::PoolName::Main).await?;
    // A new request invalidates the older ones.
    sqlx::query(
        "UPDATE login_codes SET invalidated_at = now()
         WHERE email = $1 AND used_at IS NULL AND invalidated_at IS NULL",
    )
    .bind(&normalized)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO login_codes (id, email, member_id, code_hash, token_hash, signup, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(&normalized)
    .bind(member_id)
    .bind(code_hash(id, &code))
    .bind(token_hash(&token))
    .bind(signup.as_ref().map(sqlx::types::Json))
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    let link = format!("{}?token={token}", settings.link_base);
    mail::enqueue(
        &mut tx,
        &sign_in_email(
            email.as_str(),
            &code,
            &link,
            signup.is_some(),
            settings.code_ttl,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn sign_in_email(to: &str, code: &str, link: &str, signup: bool, ttl: Duration) -> Email {
    let minutes = ttl.as_secs() / 60;
    let (subject, intro) = if signup {
        (
            format!("Confirm your signup: {code}"),
            "Confirm your email to finish signing up.",
        )
    } else {
        (
            format!("Your sign-in code: {code}"),
            "Use this code to sign in.",
        )
    };
    let text = format!(
        "{intro}\n\nYour code: {code}\n\nOr open this link:\n{link}\n\nThe code and the link work once, for {minutes} minutes. \
         If you did not ask for this, ignore this email."
    );
    let html = format!(
        "<p>{intro}</p><p>Your code: <strong style=\"font-size:1.5em;letter-spacing:0.2em\">{code}</strong></p>\
         <p><a href=\"{href}\">Sign in</a></p><p>The code and the link work once, for {minutes} minutes. \
         If you did not ask for this, ignore this email.</p>",
        intro = html_escape(intro),
        code = html_escape(code),
        href = html_escape(link),
    );
    Email {
        to: to.to_owned(),
        subject,
        text,
        html,
    }
}

#[derive(sqlx::FromRow)]
struct CodeRow {
    id: Uuid,
    email: String,
    member_id: Option<Uuid>,
    code_hash: Vec<u8>,
    attempts: i32,
    signup: Option<sqlx::types::Json<Signup>>,
}

/// Checks a code or link and opens a session. Codes and links work once; a code is burned
/// after `max_code_attempts` wrong tries.
pub async fn verify(
    sign_in: &SignIn,
    credentials: Credentials,
    kind: SessionKind,
    ip: Option<IpAddr>,
    request_id: &str,
) -> Result<SignedIn, AuthError> {
    let settings = &sign_in.settings;
    if let Some(ip) = ip {
        limit(
            &sign_in.pool,
            "sign_in_verify_per_ip",
            format!("verify:ip:{ip}"),
            settings.verify_per_ip,
        )
        .await?;
    }
    let mut tx = crate::db::begin(&sign_in.pool, crate::db::PoolName::Main).await?;
    let (row, method) = match &credentials {
        Credentials::Code { email, code } => {
            limit(
                &sign_in.pool,
                "sign_in_verify_per_email",
                rate_limit::address_key("verify", &email.normalized()),
                settings.verify_per_email,
            )
            .await?;
            let row: Option<CodeRow> = sqlx::query_as(
                "SELECT id, email, member_id, code_hash, attempts, signup FROM login_codes
                 WHERE email = $1 AND used_at IS NULL AND invalidated_at IS NULL AND expires_at > now()
                 ORDER BY created_at DESC LIMIT 1 FOR UPDATE",
            )
            .bind(email.normalized())
            .fetch_optional(&mut *tx)
            .await?;
            let row = row.ok_or(AuthError::InvalidCredentials)?;
            if !bool::from(row.code_hash.ct_eq(&code_hash(row.id, code.trim()))) {
                let burned = row.attempts + 1 >= settings.max_code_attempts;
                sqlx::query(
                    "UPDATE login_codes SET attempts = attempts + 1,
                         invalidated_at = CASE WHEN $2 THEN now() ELSE invalidated_at END
                     WHERE id = $1",
                )
                .bind(row.id)
                .bind(burned)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Err(AuthError::InvalidCredentials);
            }
            (row, LoginMethod::Code)
        }
        Credentials::Token { token } => {
            let row: Option<CodeRow> = sqlx::query_as(
                "SELECT id, email, member_id, code_hash, attempts, signup FROM login_codes
                 WHERE token_hash = $1 AND used_at IS NULL AND invalidated_at IS NULL AND expires_at > now()
                 FOR UPDATE",
            )
            .bind(token_hash(token))
            .fetch_optional(&mut *tx)
            .await?;
            (row.ok_or(AuthError::InvalidCredentials)?, LoginMethod::Link)
        }
    };
    sqlx::query("UPDATE login_codes SET used_at = now() WHERE id = $1")
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    let metadata = EventMetadata::for_request(request_id, Actor::System);
    let member_id = match row.member_id {
        Some(member_id) => member_id,
        None => {
            sign_up(
                sign_in,
                &row.email,
                row.signup.map(|s| s.0).unwrap_or_default(),
                &metadata,
            )
            .await?
        }
    };
    let metadata = EventMetadata::for_request(request_id, Actor::Member(member_id));
    let position = sign_in
        .members
        .execute(
            &member_id.to_string(),
            MemberCommand::RecordLogin {
                method,
                at: Utc::now(),
            },
            metadata,
        )
        .await
        .map_err(|e| AuthError::Command(e.to_string()))?;

    let session_token = random_token();
    let expires_at =
        Utc::now() + chrono::Duration::from_std(settings.session_ttl).unwrap_or_default();
    sqlx::query(
        "INSERT INTO member_sessions (token_hash, member_id, expires_at, kind) VALUES ($1, $2, $3, $4)",
    )
    .bind(token_hash(&session_token))
    .bind(member_id)
    .bind(expires_at)
    .bind(kind.as_str())
    .execute(&sign_in.pool)
    .await?;
    Ok(SignedIn {
        session_token,
        expires_at,
        member_id,
        position,
    })
}

/// Creates the member of a verified signup (or finds the one created meanwhile).
async fn sign_up(
    sign_in: &SignIn,
    email: &str,
    signup: Signup,
    metadata: &EventMetadata,
) -> Result<Uuid, AuthError> {
    let email =
        EmailAddress::parse(email).map_err(|e| AuthError::Command(format!("stored email: {e}")))?;
    let newsletters: Vec<Uuid> = match signup.newsletters {
        Some(ids) => sqlx::query_scalar("SELECT id FROM newsletters WHERE id = ANY($1) AND status = 'active' ORDER BY id")
            .bind(ids)
            .fetch_all(&sign_in.pool)
            .await?,
        None => sqlx::query_scalar("SELECT id FROM newsletters WHERE subscribe_on_signup AND status = 'active' ORDER BY id")
            .fetch_all(&sign_in.pool)
            .await?,
    };
    let new = NewMember {
        email: email.clone(),
        name: signup
            .name
            .as_deref()
            .and_then(|n| MemberName::parse(n).ok().flatten()),
        note: None,
        labels: aggregates::Labels::default(),
        source: MemberSource::Signup,
        attribution: signup.attribution,
        newsletters,
    };
    match members::create(&sign_in.members, new, metadata.clone()).await {
        Ok((member_id, _)) => Ok(member_id),
        Err(CreateMemberError::EmailTaken) => members::find_by_email(&sign_in.pool, &email)
            .await?
            .ok_or_else(|| {
                AuthError::Command(
                    "the email is being used by a member being created; retry".into(),
                )
            }),
        Err(CreateMemberError::Database(e)) => Err(e.into()),
        Err(CreateMemberError::Store(e)) => Err(AuthError::Command(e.to_string())),
    }
}

/// The member a session token of `kind` belongs to, sliding its expiry forward.
pub async fn authenticate(
    sign_in: &SignIn,
    token: &str,
    kind: SessionKind,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE member_sessions SET last_seen_at = now(), expires_at = now() + $2
         WHERE token_hash = $1 AND kind = $3 AND revoked_at IS NULL AND expires_at > now()
         RETURNING member_id",
    )
    .bind(token_hash(token))
    .bind(sign_in.settings.session_ttl)
    .bind(kind.as_str())
    .fetch_optional(&sign_in.pool)
    .await
}

/// Ends a session.
pub async fn revoke(sign_in: &SignIn, token: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE member_sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL")
        .bind(token_hash(token))
        .execute(&sign_in.pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_hashes_depend_on_the_code_and_the_row() {
        let id = Uuid::now_v7();
        assert_eq!(code_hash(id, "123456"), code_hash(id, "123456"));
        assert_ne!(code_hash(id, "123456"), code_hash(id, "123457"));
        assert_ne!(code_hash(id, "123456"), code_hash(Uuid::now_v7(), "123456"));
    }

    #[test]
    fn tokens_are_256_bits_and_distinct() {
        let a = random_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("base64").len(), 32);
        assert_ne!(a, random_token());
    }

    #[test]
    fn the_email_carries_code_and_link_escaped() {
        let email = sign_in_email(
            "a@example.com",
            "012345",
            "https://x.test/signin?token=a&b",
            false,
            Duration::from_secs(600),
        );
        assert!(email.subject.contains("012345"));
        assert!(
            email.text.contains("https://x.test/signin?token=a&b")
                && email.text.contains("10 minutes")
        );
        assert!(email.html.contains("token=a&amp;b"));
    }
}
