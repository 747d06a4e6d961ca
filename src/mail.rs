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
/// The most messages one delivery transaction claims. Sent one by one over SMTP, recorded
/// together; were the process to die mid-batch, the batch's messages are sent again (as one
/// would be before), so it stays small.
const DELIVERY_BATCH: i64 = 16;

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

    /// Sends the oldest due messages, up to [`DELIVERY_BATCH`] of them in one transaction
    /// that holds them (`FOR UPDATE SKIP LOCKED`: other instances take others) and records
    /// every outcome with one statement; returns whether there was one.
    async fn deliver_due(&self) -> Result<bool, sqlx::Error> {
        let mut tx = crate::db::begin(&self.pool, crate::db::PoolName::Main).await?;
        let due: Vec<Due> = sqlx::query_as(
            "SELECT o.id, o.to_address, o.subject, o.text_body, o.html_body, o.attempts, o.member_id,
                    o.kind, o.unsubscribe_url, s.reason AS suppressed
             FROM outbox_emails o
             LEFT JOIN member_email_suppressions s ON s.member_id = o.member_id
             WHERE o.sent_at IS NULL AND o.given_up_at IS NULL AND o.next_attempt_at <= now()
               AND o.attempts < $1
             ORDER BY o.next_attempt_at LIMIT $2 FOR UPDATE OF o SKIP LOCKED",
        )
        .bind(MAX_ATTEMPTS)
        .bind(DELIVERY_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            return Ok(false);
        }
        let mut outcomes = Outcomes::default();
        for due in &due {
            self.deliver(due, &mut outcomes).await;
        }
        outcomes.record(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Sends one claimed message and notes what became of it.
    async fn deliver(&self, due: &Due, outcomes: &mut Outcomes) {
        let id = due.id;
        if let Some(reason) = &due.suppressed {
            // Queued before the address was disabled: not sent, not retried.
            crate::metrics::email_delivery("suppressed");
            tracing::info!(email_id = %id, "email not sent: the member's email is disabled");
            outcomes.give_up(id, format!("the member's email is disabled: {reason}"));
            return;
        }
        match self.send(due).await {
            Ok(()) => {
                crate::metrics::email_delivery("sent");
                tracing::info!(email_id = %id, "email sent");
                outcomes.sent(id);
            }
            Err(failure) if failure.permanent => {
                crate::metrics::email_delivery("refused");
                let reason = format!("{:#}", failure.error);
                tracing::warn!(email_id = %id, error = %reason, "email refused for good; not retried");
                if let (true, Some(member_id)) = (failure.address_refused, due.member_id) {
                    // Not the batch's failure: the messages sent before this one stay sent.
                    if let Err(err) = self
                        .disable_member_email(id, member_id, &due.to_address, &reason)
                        .await
                    {
                        tracing::error!(email_id = %id, error = %err, "disabling a refused member email failed");
                    }
                }
                outcomes.give_up(id, reason);
            }
            Err(failure) => {
                crate::metrics::email_delivery("failed");
                let err = failure.error;
                let delay = Duration::from_secs(
                    2u64.saturating_pow(u32::try_from(due.attempts).unwrap_or(0).min(12)),
                );
                tracing::warn!(email_id = %id, attempt = due.attempts + 1, error = format!("{err:#}"), "email delivery failed; will retry");
                outcomes.retry(id, format!("{err:#}"), delay);
            }
        }
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
/// What became of a batch of claimed messages, recorded with one statement: sent; given up
/// (refused for good, or the member's email disabled); or failed, to be tried again after a
/// delay unless that was the last attempt.
#[derive(Default)]
struct Outcomes {
    ids: Vec<Uuid>,
    sent: Vec<bool>,
    given_up: Vec<bool>,
    errors: Vec<Option<String>>,
    retry_after_s: Vec<Option<f64>>,
}

impl Outcomes {
    fn push(
        &mut self,
        id: Uuid,
        sent: bool,
        given_up: bool,
        error: Option<String>,
        retry: Option<Duration>,
    ) {
        self.ids.push(id);
        self.sent.push(sent);
        self.given_up.push(given_up);
        self.errors.push(error);
        self.retry_after_s.push(retry.map(|d| d.as_secs_f64()));
    }

    fn sent(&mut self, id: Uuid) {
        self.push(id, true, false, None, None);
    }

    fn give_up(&mut self, id: Uuid, reason: String) {
        self.push(id, false, true, Some(reason), None);
    }

    fn retry(&mut self, id: Uuid, error: String, after: Duration) {
        self.push(id, false, false, Some(error), Some(after));
    }

    async fn record(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE outbox_emails o SET
                 attempts = o.attempts + 1,
                 last_error = r.error,
                 sent_at = CASE WHEN r.sent THEN now() ELSE o.sent_at END,
                 given_up_at = CASE
                     WHEN r.given_up THEN now()
                     WHEN r.retry_after_s IS NOT NULL AND o.attempts + 1 >= $6 THEN now()
                     ELSE o.given_up_at END,
                 next_attempt_at = CASE
                     WHEN r.retry_after_s IS NOT NULL
                         THEN now() + r.retry_after_s * interval '1 second'
                     ELSE o.next_attempt_at END
             FROM unnest($1::uuid[], $2::bool[], $3::bool[], $4::text[], $5::float8[])
                  AS r(id, sent, given_up, error, retry_after_s)
             WHERE o.id = r.id",
        )
        .bind(&self.ids)
        .bind(&self.sent)
        .bind(&self.given_up)
        .bind(&self.errors)
        .bind(&self.retry_after_s)
        .bind(MAX_ATTEMPTS)
        .execute(conn)
        .await?;
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
