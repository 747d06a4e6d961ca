//! The emails members expect (issue #17): a welcome on signup and on the first payment, a
//! payment-failed notice, and cancellation confirmations, sent through the email outbox.
//!
//! - **A policy on the log.** `member_mail` reads the log like any projection (own checkpoint,
//!   advisory lock) and writes its messages into `outbox_emails` in its batch's transaction, so
//!   a message exists exactly when its event was applied (`UNIQUE (global_position, kind)`
//!   keeps a re-run from queueing twice). It starts at the head of the log when first deployed
//!   (migration 20261206000090): history gets no emails.
//! - **Who gets what.** Welcome: members created by a verified signup (source `signup`); not
//!   members an admin or the API created, imported ones, or those the Stripe translator created
//!   for a paying customer (they get the first-payment welcome). First-payment welcome: the
//!   first `PaymentRecorded` with an amount above zero of each member (`policy_member_mail_paid`).
//!   Payment failed: every `PaymentFailed`. Cancellation: `SubscriptionCancellationScheduled`
//!   (it will end on a date) and `SubscriptionCanceled` (it has ended). `MEMBER_EMAILS` chooses
//!   the kinds sent.
//! - **Unsubscribe.** Every member email carries the member's signed unsubscribe link (body and
//!   `List-Unsubscribe`, with one-click `List-Unsubscribe-Post`, RFC 8058). Unsubscribing
//!   leaves newsletters; account and billing notices such as these are transactional and keep
//!   coming while the member has an account, which each email says.
//! - **Suppression.** A member whose address refused mail for good (`member_email_suppressions`,
//!   see `mail`) gets nothing queued; the mailer also skips queued ones.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aggregates::cqrs_es::Aggregate;
use aggregates::{Member, MemberEvent, MemberSource, Subscription, SubscriptionEvent};
use askama::Template;
use async_trait::async_trait;
use projections::{Handles, Projection, ProjectionError, StoredEvent};
use sqlx::PgConnection;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::web::page::{date, money};

/// The kinds of member email, as `MEMBER_EMAILS` and `outbox_emails.kind` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Welcome,
    WelcomePaid,
    PaymentFailed,
    Cancellation,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Welcome,
        Kind::WelcomePaid,
        Kind::PaymentFailed,
        Kind::Cancellation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Welcome => "welcome",
            Self::WelcomePaid => "welcome_paid",
            Self::PaymentFailed => "payment_failed",
            Self::Cancellation => "cancellation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s.trim())
    }
}

/// How member emails are written.
#[derive(Debug, Clone)]
pub struct MemberMailSettings {
    /// The links in the emails point here (`PUBLIC_URL`).
    pub public_url: String,
    /// Who the emails are from, in words (`MAIL_FROM`'s name, else `PUBLIC_URL`'s host).
    pub site_name: String,
    /// The kinds sent (`MEMBER_EMAILS`).
    pub kinds: Vec<Kind>,
}

impl Default for MemberMailSettings {
    fn default() -> Self {
        Self {
            public_url: "http://localhost:8080".to_owned(),
            site_name: "memberledger".to_owned(),
            kinds: Kind::ALL.to_vec(),
        }
    }
}

impl MemberMailSettings {
    /// The name people know the site by: `MAIL_FROM`'s display name, else the host.
    pub fn site_name_from(mail_from: &str, public_url: &str) -> String {
        if let Ok(mailbox) = mail_from.parse::<lettre::message::Mailbox>() {
            if let Some(name) = mailbox.name.filter(|n| !n.trim().is_empty()) {
                return name;
            }
        }
        public_url
            .split("://")
            .nth(1)
            .unwrap_or(public_url)
            .split(['/', ':'])
            .next()
            .unwrap_or("memberledger")
            .to_owned()
    }
}

/// What one email says, beyond its kind.
#[derive(Debug, Clone, Default)]
struct Facts {
    /// Money of a payment or failure, as people read it.
    amount: Option<String>,
    attempt: Option<i64>,
    /// When a scheduled cancellation takes effect.
    ends_on: Option<String>,
    /// A subscription that has ended (not only scheduled to).
    ended: bool,
}

struct Wanted {
    position: i64,
    member_id: Uuid,
    kind: Kind,
    facts: Facts,
}

#[derive(Template)]
#[template(path = "email/member.txt")]
struct TextBody<'a> {
    kind: &'a str,
    name: &'a str,
    site: &'a str,
    account_url: &'a str,
    billing_url: &'a str,
    unsubscribe_url: &'a str,
    amount: &'a str,
    attempt: i64,
    ends_on: &'a str,
    ended: bool,
}

#[derive(Template)]
#[template(path = "email/member.html")]
struct HtmlBody<'a> {
    kind: &'a str,
    name: &'a str,
    site: &'a str,
    account_url: &'a str,
    billing_url: &'a str,
    unsubscribe_url: &'a str,
    amount: &'a str,
    attempt: i64,
    ends_on: &'a str,
    ended: bool,
    subject: &'a str,
}

/// A member email, rendered.
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn subject(kind: Kind, site: &str, facts: &Facts) -> String {
    let amount = facts.amount.as_deref().unwrap_or_default();
    match kind {
        Kind::Welcome => format!("Welcome to {site}"),
        Kind::WelcomePaid => format!("Welcome to your paid membership of {site}"),
        Kind::PaymentFailed => format!("Your payment of {amount} to {site} failed"),
        Kind::Cancellation if facts.ended => format!("Your {site} subscription has ended"),
        Kind::Cancellation => format!("Your {site} subscription is canceled"),
    }
}

/// Renders a member email (text and HTML).
fn render(
    settings: &MemberMailSettings,
    kind: Kind,
    name: Option<&str>,
    unsubscribe_url: &str,
    facts: &Facts,
) -> Result<Rendered, askama::Error> {
    let base = settings.public_url.trim_end_matches('/');
    let account_url = format!("{base}/account");
    // The dashboard's billing button opens Stripe's Billing Portal.
    let billing_url = account_url.clone();
    let name = name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or("");
    let subject = subject(kind, &settings.site_name, facts);
    let amount = facts.amount.as_deref().unwrap_or_default();
    let ends_on = facts.ends_on.as_deref().unwrap_or_default();
    let attempt = facts.attempt.unwrap_or(1);
    let text = TextBody {
        kind: kind.as_str(),
        name,
        site: &settings.site_name,
        account_url: &account_url,
        billing_url: &billing_url,
        unsubscribe_url,
        amount,
        attempt,
        ends_on,
        ended: facts.ended,
    }
    .render()?;
    let html = HtmlBody {
        kind: kind.as_str(),
        name,
        site: &settings.site_name,
        account_url: &account_url,
        billing_url: &billing_url,
        unsubscribe_url,
        amount,
        attempt,
        ends_on,
        ended: facts.ended,
        subject: &subject,
    }
    .render()?;
    Ok(Rendered {
        subject,
        text,
        html,
    })
}

/// The policy that queues member emails.
pub struct MemberMail {
    pub settings: MemberMailSettings,
    /// The unsubscribe links' key (`server_secrets`, `links`), read once.
    links_key: OnceCell<[u8; 32]>,
}

impl MemberMail {
    pub fn new(settings: MemberMailSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            links_key: OnceCell::new(),
        })
    }

    fn sends(&self, kind: Kind) -> bool {
        self.settings.kinds.contains(&kind)
    }

    async fn links_key(&self, conn: &mut PgConnection) -> Result<[u8; 32], ProjectionError> {
        if let Some(key) = self.links_key.get() {
            return Ok(*key);
        }
        // Made by `WebKeys::load` at start, before any runner.
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT secret FROM server_secrets WHERE name = 'links'")
                .fetch_optional(&mut *conn)
                .await?;
        let key: [u8; 32] = stored
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| ProjectionError::Command("the links key is not made yet".to_owned()))?;
        let _ = self.links_key.set(key);
        Ok(key)
    }

    /// The email `event` calls for, if any, and to whom (in log order).
    fn wanted(&self, event: &StoredEvent) -> Result<Option<Pending>, ProjectionError> {
        let pending = |to, kind, facts| {
            Some(Pending {
                position: event.global_position,
                to,
                kind,
                facts,
            })
        };
        if event.aggregate_type == Member::TYPE {
            if let MemberEvent::MemberCreated {
                member_id, source, ..
            } = event.decode::<MemberEvent>()?
            {
                if source == MemberSource::Signup && self.sends(Kind::Welcome) {
                    let to = Whom::Member(member_id);
                    return Ok(pending(to, Kind::Welcome, Facts::default()));
                }
            }
            return Ok(None);
        }
        let subscription = || Whom::MemberOf(event.aggregate_id.clone());
        Ok(match event.decode::<SubscriptionEvent>()? {
            SubscriptionEvent::PaymentRecorded { payment }
                if payment.amount_paid > 0 && self.sends(Kind::WelcomePaid) =>
            {
                let facts = Facts {
                    amount: Some(money(payment.amount_paid, &payment.currency)),
                    ..Facts::default()
                };
                let to = Whom::FirstPayment(payment.member_id);
                pending(to, Kind::WelcomePaid, facts)
            }
            SubscriptionEvent::PaymentFailed {
                member_id,
                amount_due,
                currency,
                attempt_count,
                ..
            } if self.sends(Kind::PaymentFailed) => {
                let facts = Facts {
                    amount: Some(money(amount_due, &currency)),
                    attempt: Some(i64::from(attempt_count)),
                    ..Facts::default()
                };
                pending(Whom::Member(member_id), Kind::PaymentFailed, facts)
            }
            SubscriptionEvent::SubscriptionCancellationScheduled { cancel_at, .. }
                if self.sends(Kind::Cancellation) =>
            {
                let facts = Facts {
                    ends_on: cancel_at.map(date),
                    ..Facts::default()
                };
                pending(subscription(), Kind::Cancellation, facts)
            }
            SubscriptionEvent::SubscriptionCanceled { .. } if self.sends(Kind::Cancellation) => {
                let facts = Facts {
                    ended: true,
                    ..Facts::default()
                };
                pending(subscription(), Kind::Cancellation, facts)
            }
            _ => None,
        })
    }
}

/// Who an email of the batch goes to, as its event says.
enum Whom {
    Member(Uuid),
    /// The member, if this is their first payment above zero: the first-payment welcome.
    FirstPayment(Uuid),
    /// The member of this subscription.
    MemberOf(String),
}

/// An email an event of the batch calls for, before its recipient is known.
struct Pending {
    position: i64,
    to: Whom,
    kind: Kind,
    facts: Facts,
}

/// Resolves the batch's recipients with two statements: the first-payment welcomes claim their
/// members in `policy_member_mail_paid` (in the batch's transaction; a member already there,
/// or twice in the batch, is welcomed once), and the subscriptions' members are read from the
/// inline `subscriptions` read model (written with a subscription's creation, which comes
/// before its cancellation in the log).
async fn recipients(
    conn: &mut PgConnection,
    pending: Vec<Pending>,
) -> Result<Vec<Wanted>, sqlx::Error> {
    let paying: Vec<Uuid> = pending
        .iter()
        .filter_map(|p| match p.to {
            Whom::FirstPayment(member_id) => Some(member_id),
            _ => None,
        })
        .collect();
    let first_paid: HashSet<Uuid> = if paying.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar(
            "INSERT INTO policy_member_mail_paid (member_id)
             SELECT DISTINCT * FROM unnest($1::uuid[]) ON CONFLICT DO NOTHING
             RETURNING member_id",
        )
        .bind(&paying)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    let subscriptions: Vec<&str> = pending
        .iter()
        .filter_map(|p| match &p.to {
            Whom::MemberOf(subscription_id) => Some(subscription_id.as_str()),
            _ => None,
        })
        .collect();
    let members_of: HashMap<String, Uuid> = if subscriptions.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as("SELECT id, member_id FROM subscriptions WHERE id = ANY($1)")
            .bind(&subscriptions)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect()
    };
    let mut welcomed = HashSet::new();
    Ok(pending
        .into_iter()
        .filter_map(|p| {
            let member_id = match p.to {
                Whom::Member(member_id) => member_id,
                Whom::FirstPayment(member_id) => (first_paid.contains(&member_id)
                    && welcomed.insert(member_id))
                .then_some(member_id)?,
                Whom::MemberOf(subscription_id) => *members_of.get(&subscription_id)?,
            };
            Some(Wanted {
                position: p.position,
                member_id,
                kind: p.kind,
                facts: p.facts,
            })
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct Recipient {
    id: Uuid,
    email: String,
    name: Option<String>,
}

#[async_trait]
impl Projection for MemberMail {
    fn name(&self) -> &'static str {
        "member_mail"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["policy_member_mail_paid"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[
            Handles::only(Member::TYPE, &[MemberEvent::CREATED]),
            Handles::only(
                Subscription::TYPE,
                &[
                    "PaymentRecorded",
                    "PaymentFailed",
                    "SubscriptionCancellationScheduled",
                    "SubscriptionCanceled",
                ],
            ),
        ];
        HANDLES
    }

    /// Emails already went out: a replay would send them again.
    fn rebuildable(&self) -> bool {
        false
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut pending = Vec::new();
        for event in events {
            pending.extend(self.wanted(event)?);
        }
        let wanted = recipients(conn, pending).await?;
        if wanted.is_empty() {
            return Ok(());
        }
        let members: Vec<Uuid> = wanted.iter().map(|w| w.member_id).collect();
        // Their current address and name; members suppressed or gone get nothing.
        let recipients: Vec<Recipient> = sqlx::query_as(
            "SELECT l.id, l.email, l.name FROM member_list l
             WHERE l.id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM member_email_suppressions s WHERE s.member_id = l.id)",
        )
        .bind(&members)
        .fetch_all(&mut *conn)
        .await?;
        let key = self.links_key(conn).await?;
        let mut rows = Rows::default();
        for w in wanted {
            let Some(to) = recipients.iter().find(|r| r.id == w.member_id) else {
                continue;
            };
            let unsubscribe =
                crate::links::unsubscribe_url(&self.settings.public_url, &key, w.member_id);
            let email = render(
                &self.settings,
                w.kind,
                to.name.as_deref(),
                &unsubscribe,
                &w.facts,
            )
            .map_err(|e| ProjectionError::Command(format!("rendering an email: {e}")))?;
            rows.ids.push(Uuid::now_v7());
            rows.to.push(to.email.clone());
            rows.subjects.push(email.subject);
            rows.texts.push(email.text);
            rows.htmls.push(email.html);
            rows.members.push(w.member_id);
            rows.kinds.push(w.kind.as_str());
            rows.unsubscribe.push(unsubscribe);
            rows.positions.push(w.position);
        }
        if rows.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO outbox_emails (id, to_address, subject, text_body, html_body, member_id, kind,
                                        unsubscribe_url, global_position)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::uuid[], $7::text[], $8::text[], $9::bigint[])
             ON CONFLICT (global_position, kind) WHERE global_position IS NOT NULL DO NOTHING",
        )
        .bind(&rows.ids)
        .bind(&rows.to)
        .bind(&rows.subjects)
        .bind(&rows.texts)
        .bind(&rows.htmls)
        .bind(&rows.members)
        .bind(&rows.kinds)
        .bind(&rows.unsubscribe)
        .bind(&rows.positions)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

#[derive(Default)]
struct Rows {
    ids: Vec<Uuid>,
    to: Vec<String>,
    subjects: Vec<String>,
    texts: Vec<String>,
    htmls: Vec<String>,
    members: Vec<Uuid>,
    kinds: Vec<&'static str>,
    unsubscribe: Vec<String>,
    positions: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_renders_with_its_unsubscribe_link_and_facts_in_both_bodies() {
        let settings = MemberMailSettings {
            site_name: "Ada's <Club>".to_owned(),
            public_url: "https://m.test".to_owned(),
            ..MemberMailSettings::default()
        };
        let unsubscribe = "https://m.test/account/unsubscribe?member=1&key=ab";
        for kind in Kind::ALL {
            let facts = Facts {
                amount: Some("20.00 USD".to_owned()),
                attempt: Some(2),
                ends_on: Some("6 Dec 2026".to_owned()),
                ended: false,
            };
            let email = render(&settings, kind, Some("Ada"), unsubscribe, &facts).expect("renders");
            assert!(email.text.contains(unsubscribe), "{kind:?}: {}", email.text);
            assert!(
                email
                    .html
                    .contains("href=\"https://m.test/account/unsubscribe?member=1&#38;key=ab\""),
                "{kind:?}: {}",
                email.html
            );
            assert!(email.text.contains("Hi Ada"), "{kind:?}");
            assert!(
                email.html.contains("Ada&#39;s &#60;Club&#62;"),
                "escaped: {}",
                email.html
            );
            assert!(email.text.contains("newsletters"), "{kind:?}");
            if matches!(kind, Kind::PaymentFailed | Kind::WelcomePaid) {
                assert!(email.subject.contains("20.00 USD") || email.text.contains("20.00 USD"));
            }
        }
        assert_eq!(Kind::parse(" payment_failed"), Some(Kind::PaymentFailed));
        assert_eq!(Kind::parse("newsletter"), None);
        assert_eq!(
            MemberMailSettings::site_name_from("Ada's Club <a@b.test>", "https://x.test"),
            "Ada's Club"
        );
        assert_eq!(
            MemberMailSettings::site_name_from("a@b.test", "https://members.x.test:8443/p"),
            "members.x.test"
        );
    }
}
