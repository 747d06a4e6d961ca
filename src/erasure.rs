//! Erasure of a member (GDPR's right to erasure) in an append-only log.
//!
//! `DELETE /v1/members/{id}` (admin), `DELETE /v1/me` and the portal's "delete my account" call
//! [`erase`]:
//!
//! 1. **Subscriptions first.** A member who still pays (a subscription Stripe has not ended)
//!    is refused with 409 (`ERASURE_ACTIVE_SUBSCRIPTIONS=refuse`, the default), or those
//!    subscriptions are canceled at Stripe at once (`cancel`); their cancellation comes back
//!    through the webhooks like any other.
//! 2. **The Stripe customer** is kept (`ERASURE_STRIPE_CUSTOMER=keep`, the default: Stripe
//!    keeps its own records for tax and disputes) or deleted at Stripe (`delete`).
//! 3. **`MemberErased`** is appended (after `MemberCompEnded` and the newsletters' unsubscribes
//!    when there are any). Its appending transaction ([`in_erasing_transaction`]) also removes
//!    the member from the inline read models (list, email lookup, suppressions: the address is
//!    free for a new member at once), scrubs the personal data kept outside the log (below), and
//!    destroys the data keys of the member and its licenses (`store::personal`). The event and
//!    all of this commit together or not at all; the asynchronous read models (the timeline)
//!    drop the member's rows when they apply the event.
//!
//! Outside the log, the transaction scrubs: the Stripe events the inbox stored for the member's
//! customers or naming an address of theirs (contact fields nulled, any string with one of
//! their addresses replaced), queued and sent emails to them, sign-in codes, sessions, pending
//! email changes, rate-limit counters per address (keyed by the address's hash; older ones by
//! the address), import reports' rows of their
//! addresses, the stored payloads of outbound webhook deliveries of their events, and the
//! activation addresses (IPs) of their licenses. Addresses are compared lowercased as the
//! server lowercases them, every cased letter and not only ASCII (`casefold`, whatever the
//! cluster's locale), and searched in a stored event in each JSON spelling ([`json_spellings`]).
//!
//! An upload still being imported (`member_import_chunks`, deleted when its import ends) is
//! not searched: a file that names the member would create them again as a new member, as a
//! later signup would.
//!
//! PostgreSQL keeps old row versions until `VACUUM` reclaims them (autovacuum does, soon after)
//! and WAL segments until they are recycled; backups taken before the erasure still hold the
//! data key. Operators restoring a backup re-run the erasures recorded after it
//! (`MemberErased` events in the log they restore into, or their own records).

use std::sync::Arc;

use aggregates::cqrs_es::{Aggregate, AggregateError};
use aggregates::{License, Member, MemberCommand, MemberError, MemberEvent};
use chrono::Utc;
use projections::StoredEvent;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::store::personal;
use crate::store::{CommandBus, EventMetadata};
use crate::stripe::client::{CallError, StripeApi};

/// What erasure does with subscriptions Stripe has not ended (`ERASURE_ACTIVE_SUBSCRIPTIONS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ActiveSubscriptions {
    /// Refuse the erasure (409) until they have ended.
    #[default]
    Refuse,
    /// Cancel them at Stripe at once, then erase.
    Cancel,
}

/// What erasure does with the member's Stripe customers (`ERASURE_STRIPE_CUSTOMER`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StripeCustomers {
    /// Keep them at Stripe (Stripe's records are its own, kept for tax and disputes).
    #[default]
    Keep,
    /// Delete them at Stripe.
    Delete,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ErasureSettings {
    pub active_subscriptions: ActiveSubscriptions,
    pub stripe_customers: StripeCustomers,
}

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("no member has this id")]
    NotFound,
    /// Subscriptions Stripe has not ended, refused by the settings.
    #[error("the member has subscriptions that have not ended: {}", .0.join(", "))]
    ActiveSubscriptions(Vec<String>),
    /// Stripe must be called (to cancel or delete) and no key is configured.
    #[error("erasing this member needs Stripe calls and STRIPE_SECRET_KEY is not set")]
    NoStripe,
    #[error("Stripe: {0}")]
    Stripe(#[from] CallError),
    #[error(transparent)]
    Command(AggregateError<MemberError>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Erases `member_id` (see the module docs); `Ok` once `MemberErased` is committed.
pub async fn erase(
    pool: &PgPool,
    members: &Arc<CommandBus<Member>>,
    stripe: Option<&StripeApi>,
    settings: ErasureSettings,
    member_id: Uuid,
    metadata: EventMetadata,
) -> Result<(), EraseError> {
    let id = member_id.to_string();
    let member = members.load(&id).await.map_err(EraseError::Command)?;
    if !member.exists() {
        return Err(EraseError::NotFound);
    }
    let open: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM subscriptions
         WHERE member_id = $1 AND status NOT IN ('canceled', 'incomplete_expired')
         ORDER BY id",
    )
    .bind(member_id)
    .fetch_all(pool)
    .await?;
    if !open.is_empty() {
        match settings.active_subscriptions {
            ActiveSubscriptions::Refuse => return Err(EraseError::ActiveSubscriptions(open)),
            ActiveSubscriptions::Cancel => {
                let api = stripe.ok_or(EraseError::NoStripe)?;
                for subscription in &open {
                    api.cancel_subscription(subscription).await?;
                }
            }
        }
    }
    if settings.stripe_customers == StripeCustomers::Delete {
        let customers = member.stripe_customers();
        if !customers.is_empty() {
            let api = stripe.ok_or(EraseError::NoStripe)?;
            for customer in customers {
                api.delete_customer(customer).await?;
            }
        }
    }
    members
        .execute(&id, MemberCommand::Erase { at: Utc::now() }, metadata)
        .await
        .map_err(EraseError::Command)?;
    Ok(())
}

/// The personal data of a member that the log and the Stripe link tables know.
#[derive(Debug, Default)]
struct Known {
    /// Every address the member had, lowercased.
    emails: Vec<String>,
    customers: Vec<String>,
    licenses: Vec<Uuid>,
}

impl Known {
    /// Reads them in the erasing transaction, before the data key is destroyed.
    async fn gather(conn: &mut PgConnection, member_id: &str) -> Result<Self, sqlx::Error> {
        let mut events: Vec<StoredEvent> = sqlx::query_as(&format!(
            "SELECT {} FROM events e WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
            crate::eventlog::EVENT_COLUMNS
        ))
        .bind(Member::TYPE)
        .bind(member_id)
        .fetch_all(&mut *conn)
        .await?;
        personal::open_events(&mut *conn, &mut events).await?;
        let mut known = Self::default();
        for event in &events {
            let Ok(event) = event.decode::<MemberEvent>() else {
                continue;
            };
            match event {
                MemberEvent::MemberCreated { email, .. }
                | MemberEvent::MemberEmailDisabled { email, .. }
                | MemberEvent::MemberEmailEnabled { email, .. } => known.emails.push(email),
                MemberEvent::MemberEmailChanged {
                    old_email,
                    new_email,
                    ..
                } => known.emails.extend([old_email, new_email]),
                MemberEvent::MemberStripeCustomerLinked { customer_id, .. } => {
                    known.customers.push(customer_id);
                }
                _ => {}
            }
        }
        let uuid: Uuid = member_id.parse().unwrap_or_default();
        let customers: Vec<String> =
            sqlx::query_scalar("SELECT customer_id FROM stripe_customers WHERE member_id = $1")
                .bind(uuid)
                .fetch_all(&mut *conn)
                .await?;
        known.customers.extend(customers);
        // `licenses` is inline: every license of the member as of this transaction.
        known.licenses = sqlx::query_scalar("SELECT id FROM licenses WHERE member_id = $1")
            .bind(uuid)
            .fetch_all(&mut *conn)
            .await?;
        for list in [&mut known.emails, &mut known.customers] {
            for item in list.iter_mut() {
                *item = item.to_lowercase();
            }
            list.sort();
            list.dedup();
        }
        // Placeholders (events read after an earlier, partial erasure) are nobody's address.
        known.emails.retain(|e| !e.ends_with("@erased.invalid"));
        Ok(known)
    }
}

/// Called by the event repository in the transaction that appends `stored`: for each member
/// these events erase, scrubs what is kept outside the log and destroys the data keys (see the
/// module docs).
pub(crate) async fn in_erasing_transaction(
    conn: &mut PgConnection,
    stored: &[StoredEvent],
) -> Result<(), sqlx::Error> {
    for event in stored {
        if event.aggregate_type != Member::TYPE || event.event_type != MemberEvent::ERASED {
            continue;
        }
        let known = Known::gather(conn, &event.aggregate_id).await?;
        let member_id: Uuid = event.aggregate_id.parse().unwrap_or_default();
        scrub(conn, member_id, &known).await?;
        let subjects: Vec<(String, String)> =
            std::iter::once((Member::TYPE.to_owned(), event.aggregate_id.clone()))
                .chain(
                    known
                        .licenses
                        .iter()
                        .map(|id| (License::TYPE.to_owned(), id.to_string())),
                )
                .collect();
        personal::shred(conn, &subjects).await?;
    }
    Ok(())
}

async fn scrub(conn: &mut PgConnection, member_id: Uuid, known: &Known) -> Result<(), sqlx::Error> {
    let emails = &known.emails;
    scrub_stripe_events(conn, known).await?;
    scrub_deliveries(conn, member_id, known).await?;
    for statement in [
        "DELETE FROM outbox_emails WHERE member_id = $1 OR casefold(to_address) = ANY($2)",
        "DELETE FROM login_codes WHERE email = ANY($2)",
        "DELETE FROM member_sessions WHERE member_id = $1",
        "DELETE FROM email_change_requests WHERE member_id = $1 OR casefold(new_email) = ANY($2)",
        "DELETE FROM member_import_refusals WHERE casefold(email) = ANY($2)",
        // Activation addresses; `LicenseActivatedOnDomain.ip` reads as null once the license's
        // key is destroyed, so a rebuild gives the same.
        "UPDATE licenses SET machines = (
             SELECT coalesce(jsonb_agg(m || '{\"ip\": null}' ORDER BY n), '[]')
             FROM jsonb_array_elements(machines) WITH ORDINALITY AS x(m, n))
         WHERE member_id = $1 AND machines @? '$[*] ? (@.ip != null)'",
    ] {
        sqlx::query(statement)
            .bind(member_id)
            .bind(emails)
            .execute(&mut *conn)
            .await?;
    }
    // Counters per address (`rate_limit::address_key`: hashed; older ones: the address).
    let suffixes: Vec<String> = emails
        .iter()
        .flat_map(|e| crate::rate_limit::address_key_suffixes(e))
        .collect();
    sqlx::query("DELETE FROM rate_limits WHERE split_part(key, ':email:', 2) = ANY($1)")
        .bind(&suffixes)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Stripe's fields with a customer's contact details, wherever they appear in an event.
const STRIPE_CONTACT_FIELDS: &[&str] = &[
    "customer_email",
    "customer_name",
    "customer_phone",
    "customer_address",
    "customer_shipping",
    "customer_details",
    "billing_details",
    "shipping_details",
    "shipping",
    "receipt_email",
];

/// A customer object's own contact fields.
const STRIPE_CUSTOMER_FIELDS: &[&str] = &["email", "name", "phone", "address", "description"];

/// Nulls contact fields and replaces any string holding one of `emails`.
fn redact_stripe(value: &mut Value, emails: &[String]) {
    match value {
        Value::Object(map) => {
            let customer = map.get("object").and_then(Value::as_str) == Some("customer");
            for (key, field) in map.iter_mut() {
                let contact = STRIPE_CONTACT_FIELDS.contains(&key.as_str())
                    || (customer && STRIPE_CUSTOMER_FIELDS.contains(&key.as_str()));
                if contact {
                    *field = Value::Null;
                } else {
                    redact_stripe(field, emails);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_stripe(v, emails)),
        Value::String(text) => {
            let lower = text.to_lowercase();
            if emails.iter().any(|e| lower.contains(e.as_str())) {
                *text = "[erased]".to_owned();
            }
        }
        _ => {}
    }
}

/// The ways JSON text can spell `email` (lowercased) inside a string, lowercased as
/// `casefold` lowercases the text around it. `"` and `\` are always escaped; an encoder may
/// also escape `/` (as `\/`), HTML's `<`, `>` and `&` (`\u003c`…, as Go's does), and every
/// character beyond ASCII (`\u00e9`, as Python's `ensure_ascii` does; a surrogate pair beyond
/// the Basic Multilingual Plane). An encoder escapes a kind of character everywhere or nowhere,
/// so each combination is one spelling. Lowercasing the text lowercases an escape's hex
/// digits, not the letter it stands for: an escaped letter is spelled as the lowercase letter
/// and as the uppercase one (an address typed in capitals), not mixed within one address.
fn json_spellings(email: &str) -> Vec<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Beyond {
        Raw,
        Lower,
        Upper,
    }
    let mut spellings = Vec::new();
    for slash in [false, true] {
        for html in [false, true] {
            for beyond in [Beyond::Raw, Beyond::Lower, Beyond::Upper] {
                let mut out = String::with_capacity(email.len() + 8);
                for c in email.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '/' if slash => out.push_str("\\/"),
                        '<' | '>' | '&' if html => push_escaped(&mut out, c),
                        c if c.is_ascii() || beyond == Beyond::Raw => out.push(c),
                        c if beyond == Beyond::Lower => push_escaped(&mut out, c),
                        c => {
                            let mut upper = c.to_uppercase();
                            match (upper.next(), upper.next()) {
                                (Some(u), None) => push_escaped(&mut out, u),
                                _ => push_escaped(&mut out, c),
                            }
                        }
                    }
                }
                if !spellings.contains(&out) {
                    spellings.push(out);
                }
            }
        }
    }
    spellings
}

/// `c` as JSON's `\uXXXX` escape (two, a surrogate pair, beyond U+FFFF), in lowercase hex.
fn push_escaped(out: &mut String, c: char) {
    let mut units = [0u16; 2];
    for unit in c.encode_utf16(&mut units) {
        out.push_str(&format!("\\u{unit:04x}"));
    }
}

async fn scrub_stripe_events(conn: &mut PgConnection, known: &Known) -> Result<(), sqlx::Error> {
    if known.customers.is_empty() && known.emails.is_empty() {
        return Ok(());
    }
    // The payload is searched as stored, the JSON text Stripe sent: an address appears there
    // in one of its JSON spellings. `LIKE ANY` lowercases each payload once for all of them.
    let spellings: Vec<String> = known
        .emails
        .iter()
        .flat_map(|e| json_spellings(e))
        .map(|spelling| crate::db::like_containing(&spelling))
        .collect();
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT id, payload::json FROM stripe_events
         WHERE customer_id = ANY($1) OR casefold(payload) LIKE ANY($2)
         FOR UPDATE",
    )
    .bind(&known.customers)
    .bind(&spellings)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = Vec::new();
    let mut payloads = Vec::new();
    for (id, mut payload) in rows {
        let before = payload.clone();
        redact_stripe(&mut payload, &known.emails);
        if payload != before {
            ids.push(id);
            // As text, as the column keeps it: a payload `jsonb` could not hold (a `\u0000`
            // in a string) is stored, so it must be scrubbed too.
            payloads.push(payload.to_string());
        }
    }
    if !ids.is_empty() {
        sqlx::query(
            "UPDATE stripe_events s SET payload = r.p
             FROM unnest($1::text[], $2::text[]) AS r(id, p) WHERE s.id = r.id",
        )
        .bind(&ids)
        .bind(&payloads)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Outbound webhook deliveries carry a copy of the event (`outbound::payload`): their personal
/// fields become the placeholders, as the log now reads.
async fn scrub_deliveries(
    conn: &mut PgConnection,
    member_id: Uuid,
    known: &Known,
) -> Result<(), sqlx::Error> {
    let subjects: Vec<String> = std::iter::once(member_id)
        .chain(known.licenses.iter().copied())
        .map(|id| id.to_string())
        .collect();
    let rows: Vec<(Uuid, Value)> = sqlx::query_as(
        "SELECT id, payload FROM webhook_deliveries WHERE payload->>'aggregate_id' = ANY($1) FOR UPDATE",
    )
    .bind(&subjects)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = Vec::new();
    let mut payloads = Vec::new();
    for (id, mut payload) in rows {
        let text = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_owned);
        let (Some(aggregate_type), Some(aggregate_id), Some(event_type)) =
            (text("aggregate_type"), text("aggregate_id"), text("type"))
        else {
            continue;
        };
        let Some(data) = payload.get_mut("data") else {
            continue;
        };
        if personal::erase_fields(&aggregate_type, &aggregate_id, &event_type, data) {
            ids.push(id);
            payloads.push(payload);
        }
    }
    if !ids.is_empty() {
        sqlx::query(
            "UPDATE webhook_deliveries d SET payload = r.p
             FROM unnest($1::uuid[], $2::jsonb[]) AS r(id, p) WHERE d.id = r.id",
        )
        .bind(&ids)
        .bind(&payloads)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stripe_payloads_lose_contact_details_and_the_members_addresses() {
        let mut event = json!({
            "id": "evt_1",
            "data": {"object": {
                "object": "checkout.session",
                "customer": "cus_1",
                "customer_details": {"email": "ada@example.com", "name": "Ada"},
                "customer_email": "ada@example.com",
                "metadata": {"note": "for Ada@Example.com"},
                "line_items": [{"description": "Gold", "price": {"product": {"name": "Gold"}}}]
            }},
        });
        redact_stripe(&mut event, &["ada@example.com".to_owned()]);
        let object = &event["data"]["object"];
        assert_eq!(object["customer_details"], Value::Null);
        assert_eq!(object["customer_email"], Value::Null);
        assert_eq!(object["metadata"]["note"], "[erased]");
        // Not the member's: kept.
        assert_eq!(object["customer"], "cus_1");
        assert_eq!(object["line_items"][0]["price"]["product"]["name"], "Gold");

        let mut customer = json!({"object": "customer", "id": "cus_1", "email": "ada@example.com",
                                  "name": "Ada", "address": {"city": "London"}, "currency": "usd"});
        redact_stripe(&mut customer, &[]);
        assert_eq!(customer["name"], Value::Null);
        assert_eq!(customer["address"], Value::Null);
        assert_eq!(customer["currency"], "usd");
    }

    /// Whether some spelling of `email` occurs in `text` lowercased (as `casefold` does).
    fn spelled_in(email: &str, text: &str) -> bool {
        let text = text.to_lowercase();
        json_spellings(email)
            .iter()
            .any(|s| text.contains(s.as_str()))
    }

    #[test]
    fn an_address_is_found_in_each_way_an_encoder_writes_it() {
        let email = "josé.o'neil/ü&co@exämple.com";
        for written in [
            // As typed, in capitals, by an encoder escaping nothing it need not.
            r#"{"note":"JOSÉ.O'NEIL/Ü&CO@EXÄMPLE.COM"}"#,
            // Python's `ensure_ascii`.
            r#"{"note":"jos\u00e9.o'neil/\u00fc&co@ex\u00e4mple.com"}"#,
            // The same in capitals, uppercase hex.
            r#"{"note":"JOS\u00C9.O'NEIL/\u00DC&CO@EX\u00C4MPLE.COM"}"#,
            // `/` escaped (PHP), HTML's characters escaped (Go).
            r#"{"note":"josé.o'neil\/ü&co@exämple.com"}"#,
            r#"{"note":"josé.o'neil/ü\u0026co@exämple.com"}"#,
        ] {
            assert!(spelled_in(email, written), "not found in {written}");
            let decoded: Value = serde_json::from_str(written).expect("valid JSON");
            assert!(decoded["note"]
                .as_str()
                .expect("a string")
                .to_lowercase()
                .contains(email));
        }
        assert!(!spelled_in(
            email,
            r#"{"note":"jose.o'neil/u&co@example.com"}"#
        ));
        // A quote and a backslash are escaped by every encoder; beyond the Basic Multilingual
        // Plane, a surrogate pair.
        assert_eq!(json_spellings(r#"a"b\c@x.io"#), [r#"a\"b\\c@x.io"#]);
        assert!(json_spellings("😀@x.io").contains(&r"\ud83d\ude00@x.io".to_owned()));
    }
}
