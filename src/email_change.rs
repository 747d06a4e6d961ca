//! Changing a member's email address: the new address is sent a single-use link, and nothing
//! changes until it is used. Only the link's hash is stored (`email_change_requests`); a link
//! works for [`LINK_TTL`], and a newer request replaces an older one. Requests are limited per
//! member, per new address and per IP like sign-in codes, so the form cannot be used to flood
//! someone's inbox.

use std::net::IpAddr;
use std::time::Duration;

use aggregates::EmailAddress;
use chrono::Utc;
use uuid::Uuid;

use crate::auth::{limit, random_token, token_hash, AuthError, SignIn};
use crate::mail::{self, html_escape, Email};
use crate::members::{self, CreateMemberError};
use crate::store::{Actor, EventMetadata};

/// How long a confirmation link works.
pub const LINK_TTL: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum EmailChangeError {
    #[error("too many attempts; retry in {} s", .0.as_secs())]
    RateLimited(Duration),
    #[error("the address is already the member's")]
    Unchanged,
    #[error("the link is wrong, expired or used")]
    InvalidLink,
    #[error("another member has this email")]
    Taken,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Command(String),
}

impl From<AuthError> for EmailChangeError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::RateLimited(wait) => Self::RateLimited(wait),
            AuthError::Database(e) => Self::Database(e),
            other => Self::Command(other.to_string()),
        }
    }
}

/// Emails a confirmation link for `new_email` to that address. `public_url` is where the
/// portal is served.
pub async fn request(
    sign_in: &SignIn,
    public_url: &str,
    member_id: Uuid,
    new_email: &EmailAddress,
    ip: Option<IpAddr>,
) -> Result<(), EmailChangeError> {
    let settings = &sign_in.settings;
    let current: Option<String> = sqlx::query_scalar(
        "SELECT email FROM member_emails WHERE member_id = $1 ORDER BY reserved_at DESC LIMIT 1",
    )
    .bind(member_id)
    .fetch_optional(&sign_in.pool)
    .await?;
    if current.as_deref() == Some(new_email.normalized().as_str()) {
        return Err(EmailChangeError::Unchanged);
    }
    if let Some(ip) = ip {
        limit(
            &sign_in.pool,
            "email_change_per_ip",
            format!("email-change:ip:{ip}"),
            settings.code_per_ip,
        )
        .await?;
    }
    limit(
        &sign_in.pool,
        "email_change_per_member",
        format!("email-change:member:{member_id}"),
        settings.code_per_email,
    )
    .await?;
    limit(
        &sign_in.pool,
        "email_change_per_email",
        crate::rate_limit::address_key("email-change", &new_email.normalized()),
        settings.code_per_email,
    )
    .await?;

    let token = random_token();
    let expires_at = Utc::now() + chrono::Duration::from_std(LINK_TTL).unwrap_or_default();
    let mut tx = sign_in.pool.begin().await?;
    // A newer request replaces the older ones.
    sqlx::query(
        "UPDATE email_change_requests SET expires_at = now()
         WHERE member_id = $1 AND used_at IS NULL AND expires_at > now()",
    )
    .bind(member_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO email_change_requests (token_hash, member_id, new_email, expires_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(token_hash(&token))
    .bind(member_id)
    .bind(new_email.as_str())
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    let link = format!(
        "{}/account/email/confirm?token={token}",
        public_url.trim_end_matches('/')
    );
    mail::enqueue(&mut tx, &confirmation_email(new_email.as_str(), &link)).await?;
    tx.commit().await?;
    Ok(())
}

fn confirmation_email(to: &str, link: &str) -> Email {
    let hours = LINK_TTL.as_secs() / 3600;
    let intro = "Someone, probably you, asked to use this address for their membership.";
    let text = format!(
        "{intro}\n\nTo confirm, open this link and press the button:\n{link}\n\n\
         The link works once, for {hours} hours. Until it is used, nothing changes. \
         If you did not ask for this, ignore this email."
    );
    let html = format!(
        "<p>{intro}</p><p><a href=\"{href}\">Confirm your new email address</a></p>\
         <p>The link works once, for {hours} hours. Until it is used, nothing changes. \
         If you did not ask for this, ignore this email.</p>",
        intro = html_escape(intro),
        href = html_escape(link),
    );
    Email {
        to: to.to_owned(),
        subject: "Confirm your new email address".to_owned(),
        text,
        html,
    }
}

/// Uses a confirmation link: the member's address becomes the new one, the link is spent, and
/// sign-in codes still open for the old address stop working. Returns the member and the new
/// address. An address another member took meanwhile changes nothing (and the link stays
/// unused).
pub async fn confirm(
    sign_in: &SignIn,
    token: &str,
    ip: Option<IpAddr>,
    request_id: &str,
) -> Result<(Uuid, EmailAddress), EmailChangeError> {
    if let Some(ip) = ip {
        limit(
            &sign_in.pool,
            "email_change_confirm_per_ip",
            format!("email-change-confirm:ip:{ip}"),
            sign_in.settings.verify_per_ip,
        )
        .await?;
    }
    let mut tx = sign_in.pool.begin().await?;
    // Locked until the change is written: a second use of the same link waits, then finds it
    // used.
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT member_id, new_email FROM email_change_requests
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
         FOR UPDATE",
    )
    .bind(token_hash(token))
    .fetch_optional(&mut *tx)
    .await?;
    let (member_id, new_email) = row.ok_or(EmailChangeError::InvalidLink)?;
    let email = EmailAddress::parse(&new_email)
        .map_err(|e| EmailChangeError::Command(format!("stored email: {e}")))?;
    let metadata = EventMetadata::for_request(request_id, Actor::Member(member_id));
    match members::change_email(&sign_in.members, member_id, email.clone(), metadata).await {
        Ok(_) => {}
        Err(CreateMemberError::EmailTaken) => return Err(EmailChangeError::Taken),
        Err(CreateMemberError::Database(e)) => return Err(e.into()),
        Err(CreateMemberError::Store(e)) => return Err(EmailChangeError::Command(e.to_string())),
    }
    sqlx::query("UPDATE email_change_requests SET used_at = now() WHERE token_hash = $1")
        .bind(token_hash(token))
        .execute(&mut *tx)
        .await?;
    // A code sent to the old address no longer signs anyone in.
    sqlx::query(
        "UPDATE login_codes SET invalidated_at = now()
         WHERE member_id = $1 AND used_at IS NULL AND invalidated_at IS NULL",
    )
    .bind(member_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((member_id, email))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confirmation_email_carries_the_link_escaped() {
        let email = confirmation_email(
            "new@example.com",
            "https://m.test/account/email/confirm?token=a&b",
        );
        assert_eq!(email.to, "new@example.com");
        assert!(email
            .text
            .contains("https://m.test/account/email/confirm?token=a&b"));
        assert!(email.text.contains("24 hours"));
        assert!(email.html.contains("token=a&amp;b"));
    }
}
