//! Email: messages are written to the `outbox_emails` table together with what caused them,
//! and a mailer delivers them over SMTP (lettre), retrying failures with backoff. Without
//! `SMTP_URL` (development) each message is written to the log instead, clearly marked; but
//! not when `PUBLIC_URL` is https (a deployment), where a logged code or magic link would hand
//! sign-ins to whoever reads the logs: then only the recipient and subject are logged.
//! Delivery problems never reach the API's responses.

use std::time::Duration;

use anyhow::Context;
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Settings;

const NOTIFY_CHANNEL: &str = "outbox_email";
/// Delivery attempts before a message is given up.
pub const MAX_ATTEMPTS: i32 = 10;

/// A message to send.
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Queues `email` in the caller's transaction: it is sent only if that transaction commits.
pub async fn enqueue(conn: &mut PgConnection, email: &Email) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO outbox_emails (id, to_address, subject, text_body, html_body) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(&email.to)
    .bind(&email.subject)
    .bind(&email.text)
    .bind(&email.html)
    .execute(conn)
    .await?;
    Ok(id)
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// No SMTP: the message goes to the log, its body only when `reveal`.
    Log {
        reveal: bool,
    },
}

/// Whether, without SMTP, messages (sign-in codes, magic links) may be written to the log:
/// only outside a deployment, i.e. when `PUBLIC_URL` is not https.
pub fn may_log_contents(settings: &Settings) -> bool {
    settings.mail.smtp_url.is_none() && !settings.public_url.starts_with("https://")
}

pub struct Mailer {
    pool: PgPool,
    transport: Transport,
    from: Mailbox,
}

impl Mailer {
    pub fn new(pool: PgPool, all: &Settings) -> anyhow::Result<Self> {
        let settings = &all.mail;
        let from: Mailbox = settings
            .from
            .parse()
            .with_context(|| format!("MAIL_FROM {:?} is not a mailbox", settings.from))?;
        let transport = match &settings.smtp_url {
            Some(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .context("SMTP_URL is not a valid smtp:// or smtps:// URL")?
                    .timeout(Some(Duration::from_secs(15)))
                    .build(),
            ),
            None => Transport::Log {
                reveal: may_log_contents(all),
            },
        };
        Ok(Self {
            pool,
            transport,
            from,
        })
    }

    /// Delivers due messages until `shutdown`, woken by new ones.
    pub async fn run(self, shutdown: CancellationToken) {
        let poll = Duration::from_secs(2);
        crate::eventlog::drain_on_notice(
            &self.pool,
            NOTIFY_CHANNEL,
            poll,
            &shutdown,
            "the mailer",
            || self.deliver_due(),
        )
        .await;
    }

    /// Sends the oldest due message; returns whether there was one.
    async fn deliver_due(&self) -> Result<bool, sqlx::Error> {
        let mut tx = crate::db::begin(&self.pool, crate::db::PoolName::Main).await?;
        let row: Option<(Uuid, String, String, String, String, i32)> = sqlx::query_as(
            "SELECT id, to_address, subject, text_body, html_body, attempts FROM outbox_emails
             WHERE sent_at IS NULL AND next_attempt_at <= now() AND attempts < $1
             ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(MAX_ATTEMPTS)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, to, subject, text, html, attempts)) = row else {
            return Ok(false);
        };
        let email = Email {
            to,
            subject,
            text,
            html,
        };
        match self.send(&email).await {
            Ok(()) => {
                crate::metrics::email_delivery("sent");
                sqlx::query("UPDATE outbox_emails SET sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tracing::info!(email_id = %id, "email sent");
            }
            Err(err) => {
                crate::metrics::email_delivery("failed");
                let delay = Duration::from_secs(
                    2u64.saturating_pow(u32::try_from(attempts).unwrap_or(0).min(12)),
                );
                tracing::warn!(email_id = %id, attempt = attempts + 1, error = format!("{err:#}"), "email delivery failed; will retry");
                sqlx::query(
                    "UPDATE outbox_emails SET attempts = attempts + 1, last_error = $2, next_attempt_at = now() + $3
                     WHERE id = $1",
                )
                .bind(id)
                .bind(format!("{err:#}"))
                .bind(delay)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn send(&self, email: &Email) -> anyhow::Result<()> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(email
                .to
                .parse()
                .with_context(|| format!("{:?} is not a mailbox", email.to))?)
            .subject(&email.subject)
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(email.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(email.html.clone()),
                    ),
            )
            .context("building the message")?;
        match &self.transport {
            Transport::Smtp(smtp) => {
                smtp.send(message).await.context("sending over SMTP")?;
            }
            Transport::Log { reveal: false } => {
                // Not even the subject: it carries the code.
                tracing::warn!(
                    to = %email.to,
                    "EMAIL NOT SENT: no SMTP_URL is configured, and PUBLIC_URL is https so its \
                     contents are not logged; configure SMTP_URL"
                );
            }
            Transport::Log { reveal: true } => {
                tracing::warn!(
                    to = %email.to,
                    subject = %email.subject,
                    body = %email.text,
                    "EMAIL NOT SENT (no SMTP_URL configured; development mode): message follows"
                );
            }
        }
        Ok(())
    }
}

/// Escapes text for HTML bodies.
pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
