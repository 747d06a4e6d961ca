//! Email: messages are written to the `outbox_emails` table together with what caused them,
//! and a mailer delivers them over SMTP (lettre), retrying failures with backoff. Without
//! `SMTP_URL` (development) each message is written to the log instead, clearly marked; but
//! not when `PUBLIC_URL` is https (a deployment), where a logged code or magic link would hand
//! sign-ins to whoever reads the logs: then only the recipient and subject are logged.
//! Delivery problems never reach the API's responses.
//!
//! A 5xx reply is permanent: the message is given up (`given_up_at`, the reply in
//! `last_error`), not retried. When it refused a member's address (550, 551, 553: not an
//! authentication or content refusal, which is ours to fix) the member's email is disabled
//! (`MemberEmailDisabled`, Ghost's suppression): member emails are no longer queued for them,
//! and those already queued are given up, until the member (signed in) or an admin enables it
//! again. Sign-in codes and email-change links are still sent: the member asked for them, and
//! signing in is how they lift the suppression.

use std::sync::Arc;
use std::time::Duration;

use aggregates::{Member, MemberCommand};
use anyhow::Context;
use chrono::Utc;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Settings;
use crate::store::{Actor, CommandBus, EventMetadata};

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
    /// Disables a member's email after a permanent refusal of their address; without it (a
    /// mailer outside the server) such a message is only given up.
    members: Option<Arc<CommandBus<Member>>>,
}

/// Why a message was not delivered.
struct Failure {
    error: anyhow::Error,
    /// The server refused for good (a 5xx reply): retrying cannot help.
    permanent: bool,
    /// It refused the recipient's address (550, 551 or 553): the member's email is disabled.
    address_refused: bool,
}

impl Failure {
    fn other(error: anyhow::Error) -> Self {
        Self {
            error,
            permanent: false,
            address_refused: false,
        }
    }
}

/// A message claimed for delivery.
#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    to_address: String,
    subject: String,
    text_body: String,
    html_body: String,
    attempts: i32,
    member_id: Option<Uuid>,
    kind: Option<String>,
    unsubscribe_url: Option<String>,
    /// Why the member's email is disabled, if it is.
    suppressed: Option<String>,
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
            members: None,
        })
    }

    /// Disables members' emails through `members` when their address is refused for good.
    pub fn with_members(mut self, members: Arc<CommandBus<Member>>) -> Self {
        self.members = Some(members);
        self
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
        let row: Option<Due> = sqlx::query_as(
            "SELECT o.id, o.to_address, o.subject, o.text_body, o.html_body, o.attempts, o.member_id,
                    o.kind, o.unsubscribe_url, s.reason AS suppressed
             FROM outbox_emails o
             LEFT JOIN member_email_suppressions s ON s.member_id = o.member_id
             WHERE o.sent_at IS NULL AND o.given_up_at IS NULL AND o.next_attempt_at <= now()
               AND o.attempts < $1
             ORDER BY o.next_attempt_at LIMIT 1 FOR UPDATE OF o SKIP LOCKED",
        )
        .bind(MAX_ATTEMPTS)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(due) = row else {
            return Ok(false);
        };
        let id = due.id;
        if let Some(reason) = &due.suppressed {
            // Queued before the address was disabled: not sent, not retried.
            crate::metrics::email_delivery("suppressed");
            tracing::info!(email_id = %id, "email not sent: the member's email is disabled");
            give_up(
                &mut tx,
                id,
                &format!("the member's email is disabled: {reason}"),
            )
            .await?;
            tx.commit().await?;
            return Ok(true);
        }
        match self.send(&due).await {
            Ok(()) => {
                crate::metrics::email_delivery("sent");
                sqlx::query("UPDATE outbox_emails SET sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tracing::info!(email_id = %id, "email sent");
            }
            Err(failure) if failure.permanent => {
                crate::metrics::email_delivery("refused");
                let reason = format!("{:#}", failure.error);
                tracing::warn!(email_id = %id, error = %reason, "email refused for good; not retried");
                if let (true, Some(member_id)) = (failure.address_refused, due.member_id) {
                    self.disable_member_email(id, member_id, &due.to_address, &reason)
                        .await?;
                }
                give_up(&mut tx, id, &reason).await?;
            }
            Err(failure) => {
                crate::metrics::email_delivery("failed");
                let err = failure.error;
                let delay = Duration::from_secs(
                    2u64.saturating_pow(u32::try_from(due.attempts).unwrap_or(0).min(12)),
                );
                tracing::warn!(email_id = %id, attempt = due.attempts + 1, error = format!("{err:#}"), "email delivery failed; will retry");
                sqlx::query(
                    "UPDATE outbox_emails SET attempts = attempts + 1, last_error = $2, next_attempt_at = now() + $3,
                         given_up_at = CASE WHEN attempts + 1 >= $4 THEN now() END
                     WHERE id = $1",
                )
                .bind(id)
                .bind(format!("{err:#}"))
                .bind(delay)
                .bind(MAX_ATTEMPTS)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A member's address refused mail for good: their email is disabled (an event on the
    /// member), unless it changed since the message was queued.
    async fn disable_member_email(
        &self,
        email_id: Uuid,
        member_id: Uuid,
        address: &str,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        let Some(members) = &self.members else {
            return Ok(());
        };
        let current: Option<String> =
            sqlx::query_scalar("SELECT email FROM member_list WHERE id = $1")
                .bind(member_id)
                .fetch_optional(&self.pool)
                .await?;
        if !current.is_some_and(|c| c.eq_ignore_ascii_case(address)) {
            return Ok(());
        }
        // Caused by the refused message (its outbox id).
        let metadata = EventMetadata::for_request(&format!("email:{email_id}"), Actor::System);
        let command = MemberCommand::DisableEmail {
            reason: reason.chars().take(500).collect(),
            at: Utc::now(),
        };
        if let Err(err) = members
            .execute(&member_id.to_string(), command, metadata)
            .await
        {
            // The message is still given up; the next refusal tries again.
            tracing::error!(member_id = %member_id, error = format!("{err:#}"), "disabling a refused member email failed");
        }
        Ok(())
    }

    async fn send(&self, email: &Due) -> Result<(), Failure> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(email
                .to_address
                .parse()
                .with_context(|| format!("{:?} is not a mailbox", email.to_address))
                .map_err(|error| Failure {
                    error,
                    permanent: true,
                    address_refused: false,
                })?)
            .subject(&email.subject);
        if let Some(kind) = &email.kind {
            // Which member email this is, for filters (and tests) to tell them from sign-ins.
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Memberledger-Email"),
                kind.clone(),
            ));
        }
        if let Some(url) = &email.unsubscribe_url {
            // RFC 2369, and RFC 8058's one-click: a POST to the same link unsubscribes.
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let message = builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(email.text_body.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(email.html_body.clone()),
                    ),
            )
            .context("building the message")
            .map_err(Failure::other)?;
        match &self.transport {
            Transport::Smtp(smtp) => {
                if let Err(err) = smtp.send(message).await {
                    let permanent = err.is_permanent();
                    let address_refused = permanent
                        && err.status().is_some_and(|code| {
                            ["550", "551", "553"].contains(&code.to_string().as_str())
                        });
                    return Err(Failure {
                        error: anyhow::Error::new(err).context("sending over SMTP"),
                        permanent,
                        address_refused,
                    });
                }
            }
            Transport::Log { reveal: false } => {
                // Not even the subject: it carries the code.
                tracing::warn!(
                    to = %email.to_address,
                    "EMAIL NOT SENT: no SMTP_URL is configured, and PUBLIC_URL is https so its \
                     contents are not logged; configure SMTP_URL"
                );
            }
            Transport::Log { reveal: true } => {
                tracing::warn!(
                    to = %email.to_address,
                    subject = %email.subject,
                    body = %email.text_body,
                    "EMAIL NOT SENT (no SMTP_URL configured; development mode): message follows"
                );
            }
        }
        Ok(())
    }
}

/// Marks a message not to be tried again, with why.
async fn give_up(conn: &mut PgConnection, id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox_emails SET attempts = attempts + 1, last_error = $2, given_up_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Escapes text for HTML bodies.
pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
