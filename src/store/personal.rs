//! Personal data in an append-only log: crypto-shredding.
//!
//! Each aggregate whose events carry personal fields (a member: email, name, note, the
//! attribution URLs; a license: the address a domain was activated from) has its own data key
//! in `personal_data_keys`. Appends store those fields encrypted with it (AES-256-GCM, a random
//! nonce, the aggregate and field as associated data) as the string `pii:v1:<base64>`; every
//! reader of the log (aggregates loading, projection runners, rebuilds, the export) opens them
//! with the key. Erasure destroys the key: the ciphertext stays where it is, the log keeps every
//! event, its order and its positions, and readers see the erased placeholder instead
//! ([`Field::erased`]): `erased-<member id>@erased.invalid` for an address, `null` otherwise.
//! After erasure no new personal data is stored for the aggregate: an append writes the
//! placeholder.
//!
//! Events written before this existed hold the fields in clear; [`redact_plain`] overwrites
//! those fields of one aggregate's events with the placeholder when it is erased (the one
//! rewrite of stored payloads, and only of fields no reader may see any more).

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use aggregates::cqrs_es::persist::SerializedEvent;
use aggregates::cqrs_es::Aggregate;
use aggregates::{License, LicenseEvent, Member, MemberEvent};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};

const SEALED: &str = "pii:v1:";

/// What a personal field reads as once its aggregate is erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erased {
    /// `erased-<aggregate id>@erased.invalid`: still an address (fields that must hold one
    /// stay valid), unique per member (a rebuild of the unique email lookup meets no
    /// duplicate), and never deliverable (`.invalid` is reserved).
    Address,
    Null,
}

/// A personal field: a JSON pointer inside the event's payload (below its type's key).
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub pointer: &'static str,
    pub erased: Erased,
}

impl Field {
    const fn address(pointer: &'static str) -> Self {
        Self {
            pointer,
            erased: Erased::Address,
        }
    }

    const fn text(pointer: &'static str) -> Self {
        Self {
            pointer,
            erased: Erased::Null,
        }
    }

    /// The placeholder for this field of aggregate `aggregate_id`.
    pub fn erased(&self, aggregate_id: &str) -> Value {
        match self.erased {
            Erased::Address => Value::String(erased_address(aggregate_id)),
            Erased::Null => Value::Null,
        }
    }
}

/// The address an erased member reads as.
pub fn erased_address(member_id: &str) -> String {
    format!("erased-{member_id}@erased.invalid")
}

/// The personal fields of an event type (none for most).
pub fn fields(aggregate_type: &str, event_type: &str) -> &'static [Field] {
    const CREATED: &[Field] = &[
        Field::address("/email"),
        Field::text("/name"),
        Field::text("/note"),
        Field::text("/attribution/attribution_url"),
        Field::text("/attribution/referrer_url"),
    ];
    const UPDATED: &[Field] = &[Field::text("/name"), Field::text("/note")];
    const EMAIL_CHANGED: &[Field] = &[Field::address("/old_email"), Field::address("/new_email")];
    const EMAIL: &[Field] = &[Field::address("/email")];
    const ACTIVATED: &[Field] = &[Field::text("/ip")];
    match (aggregate_type, event_type) {
        (Member::TYPE, MemberEvent::CREATED) => CREATED,
        (Member::TYPE, MemberEvent::UPDATED) => UPDATED,
        (Member::TYPE, MemberEvent::EMAIL_CHANGED) => EMAIL_CHANGED,
        (Member::TYPE, MemberEvent::EMAIL_DISABLED | MemberEvent::EMAIL_ENABLED) => EMAIL,
        (License::TYPE, LicenseEvent::ACTIVATED_ON_DOMAIN) => ACTIVATED,
        _ => &[],
    }
}

/// Replaces the personal fields present in `inner` (an event's fields, below its type's key)
/// with their placeholders; returns whether any changed.
pub fn erase_fields(
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    inner: &mut Value,
) -> bool {
    let mut changed = false;
    for field in fields(aggregate_type, event_type) {
        if let Some(value) = inner.pointer_mut(field.pointer) {
            let placeholder = field.erased(aggregate_id);
            if !value.is_null() && *value != placeholder {
                *value = placeholder;
                changed = true;
            }
        }
    }
    changed
}

/// One event of the log, seen by [`seal`] and [`open`].
pub struct Sealable<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub event_type: &'a str,
    /// The whole payload (`{"<event type>": {...}}`).
    pub payload: &'a mut Value,
}

impl Sealable<'_> {
    fn fields(&self) -> &'static [Field] {
        fields(self.aggregate_type, self.event_type)
    }

    fn subject(&self) -> (String, String) {
        (self.aggregate_type.to_owned(), self.aggregate_id.to_owned())
    }

    /// Calls `f` with each of the event's personal fields that holds a value.
    fn each_present(&mut self, mut f: impl FnMut(&Field, &mut Value)) {
        let fields = self.fields();
        let Some(inner) = self.payload.get_mut(self.event_type) else {
            return;
        };
        for field in fields {
            if let Some(value) = inner.pointer_mut(field.pointer) {
                if !value.is_null() {
                    f(field, value);
                }
            }
        }
    }
}

/// An event as some reader or writer of the log holds it.
pub trait LogEvent {
    fn sealable(&mut self) -> Sealable<'_>;
}

impl LogEvent for projections::StoredEvent {
    fn sealable(&mut self) -> Sealable<'_> {
        Sealable {
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            event_type: &self.event_type,
            // Unshared when just read: no copy.
            payload: std::sync::Arc::make_mut(&mut self.payload),
        }
    }
}

impl LogEvent for SerializedEvent {
    fn sealable(&mut self) -> Sealable<'_> {
        Sealable {
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            event_type: &self.event_type,
            payload: &mut self.payload,
        }
    }
}

impl LogEvent for crate::export::ExportedEvent {
    fn sealable(&mut self) -> Sealable<'_> {
        Sealable {
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            event_type: &self.event_type,
            payload: &mut self.payload,
        }
    }
}

/// [`open`] for events as their reader holds them.
pub async fn open_events<'e, E: PgExecutor<'e>, T: LogEvent>(
    executor: E,
    events: &mut [T],
) -> Result<(), sqlx::Error> {
    let mut sealables: Vec<Sealable<'_>> = events.iter_mut().map(LogEvent::sealable).collect();
    open(executor, &mut sealables).await
}

/// Data keys by `(aggregate type, aggregate id)`; `None`: shredded. An aggregate absent has no
/// key (its sealed fields, if any, read as erased).
pub type Keys = HashMap<(String, String), Option<Vec<u8>>>;

/// Joins the key of each `s(t, i)`: one primary-key lookup per subject, whatever the table's
/// statistics say. (A join of the table with the subjects was planned from statistics that lag
/// behind a growing table: as a scan of every key of the type, 2 ms a batch with 20,000
/// members, the largest statement of member creation.) `OFFSET 0` keeps the planner from
/// flattening the subquery into such a join.
const BY_PRIMARY_KEY: &str = "CROSS JOIN LATERAL (
         SELECT key FROM personal_data_keys p
         WHERE p.aggregate_type = s.t AND p.aggregate_id = s.i
         OFFSET 0) k";

/// The keys of `subjects` that exist (`None`: shredded).
async fn keys<'e, E: PgExecutor<'e>>(
    executor: E,
    subjects: &[(String, String)],
) -> Result<Keys, sqlx::Error> {
    let (types, ids) = columns(subjects);
    let rows: Vec<(String, String, Option<Vec<u8>>)> = sqlx::query_as(&format!(
        "SELECT s.t, s.i, k.key FROM unnest($1::text[], $2::text[]) AS s(t, i) {BY_PRIMARY_KEY}"
    ))
    .bind(&types)
    .bind(&ids)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|(t, i, k)| ((t, i), k)).collect())
}

/// `subjects` as the two arrays `unnest` takes.
fn columns(subjects: &[(String, String)]) -> (Vec<&str>, Vec<&str>) {
    subjects
        .iter()
        .map(|(t, i)| (t.as_str(), i.as_str()))
        .unzip()
}

fn cipher(key: &[u8]) -> Option<Aes256Gcm> {
    Aes256Gcm::new_from_slice(key).ok()
}

fn associated(subject: &(String, String), field: &Field) -> String {
    format!("{}/{}{}", subject.0, subject.1, field.pointer)
}

fn encrypt(cipher: &Aes256Gcm, aad: &str, value: &Value) -> Value {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let plain = value.to_string();
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain.as_bytes(),
                aad: aad.as_bytes(),
            },
        )
        // AES-GCM fails only for messages beyond 64 GiB.
        .expect("a personal field fits AES-GCM's message limit");
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&sealed);
    Value::String(format!("{SEALED}{}", STANDARD_NO_PAD.encode(bytes)))
}

fn decrypt(cipher: &Aes256Gcm, aad: &str, sealed: &str) -> Option<Value> {
    let bytes = STANDARD_NO_PAD.decode(sealed).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let (nonce, body) = bytes.split_at(12);
    let plain = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: aad.as_bytes(),
            },
        )
        .ok()?;
    serde_json::from_slice(&plain).ok()
}

/// Whether `value` is a sealed field.
pub fn is_sealed(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.starts_with(SEALED))
}

/// Keys made for aggregates whose first event is being appended: the caller inserts them with
/// the events, in the same statement (a creation costs no extra round trip).
#[derive(Debug, Default)]
pub struct NewKeys {
    pub aggregate_types: Vec<String>,
    pub aggregate_ids: Vec<String>,
    pub keys: Vec<Vec<u8>>,
}

fn fresh_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

/// Encrypts the personal fields of `events` (about to be appended) in place; an erased
/// aggregate's fields become the placeholder. Aggregates whose first event is among them get
/// a new key, returned for the caller to insert with the events; the others' keys are read,
/// or created when missing (an aggregate older than sealing), in one statement of the
/// appending transaction.
pub async fn seal(
    conn: &mut PgConnection,
    events: &mut [SerializedEvent],
) -> Result<NewKeys, sqlx::Error> {
    let mut new: Vec<(String, String)> = Vec::new();
    let mut existing: Vec<(String, String)> = Vec::new();
    for event in events.iter_mut() {
        if fields(&event.aggregate_type, &event.event_type).is_empty() {
            continue;
        }
        let subject = event.sealable().subject();
        let starts = events_start(event);
        if starts {
            new.push(subject);
        } else {
            existing.push(subject);
        }
    }
    if new.is_empty() && existing.is_empty() {
        return Ok(NewKeys::default());
    }
    new.sort();
    new.dedup();
    existing.sort();
    existing.dedup();
    existing.retain(|s| new.binary_search(s).is_err());
    let mut keys: Keys = Keys::new();
    let mut made = NewKeys::default();
    for (aggregate_type, aggregate_id) in new {
        let key = fresh_key();
        made.aggregate_types.push(aggregate_type.clone());
        made.aggregate_ids.push(aggregate_id.clone());
        made.keys.push(key.clone());
        keys.insert((aggregate_type, aggregate_id), Some(key));
    }
    if !existing.is_empty() {
        keys.extend(get_or_create(conn, &existing).await?);
    }
    for event in events.iter_mut() {
        let mut event = event.sealable();
        let subject = event.subject();
        let cipher = match keys.get(&subject) {
            Some(Some(key)) => cipher(key),
            _ => None,
        };
        event.each_present(|field, value| {
            *value = match &cipher {
                Some(cipher) => encrypt(cipher, &associated(&subject, field), value),
                None => field.erased(&subject.1),
            };
        });
    }
    Ok(made)
}

/// Whether `event` is its aggregate's first (cqrs-es numbers them from 1).
fn events_start(event: &SerializedEvent) -> bool {
    event.sequence == 1
}

/// The keys of `subjects`, those missing created.
async fn get_or_create(
    conn: &mut PgConnection,
    subjects: &[(String, String)],
) -> Result<Keys, sqlx::Error> {
    let fresh: Vec<Vec<u8>> = subjects.iter().map(|_| fresh_key()).collect();
    let (types, ids) = columns(subjects);
    // Creates the missing keys and reads all in one round trip: the inserted rows come from
    // RETURNING, the existing ones from the statement's snapshot.
    let rows: Vec<(String, String, Option<Vec<u8>>)> = sqlx::query_as(&format!(
        "WITH wanted AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) AS w(t, i, k)),
         created AS (
             INSERT INTO personal_data_keys (aggregate_type, aggregate_id, key)
             SELECT t, i, k FROM wanted
             ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING
             RETURNING aggregate_type, aggregate_id, key)
         SELECT aggregate_type, aggregate_id, key FROM created
         UNION ALL
         SELECT s.t, s.i, k.key FROM wanted s {BY_PRIMARY_KEY}"
    ))
    .bind(&types)
    .bind(&ids)
    .bind(&fresh)
    .fetch_all(&mut *conn)
    .await?;
    let mut keys: Keys = rows.into_iter().map(|(t, i, k)| ((t, i), k)).collect();
    if keys.len() < subjects.len() {
        // Created by a transaction that committed after this statement's snapshot was taken
        // (it waited on the conflict): a new statement sees it.
        let missing: Vec<(String, String)> = subjects
            .iter()
            .filter(|s| !keys.contains_key(*s))
            .cloned()
            .collect();
        keys.extend(self::keys(&mut *conn, &missing).await?);
    }
    Ok(keys)
}

/// Decrypts the sealed fields of `events` in place; those whose key is shredded (or that do
/// not open) read as the placeholder. Costs one query when some event has a sealed field.
pub async fn open<'e, E: PgExecutor<'e>>(
    executor: E,
    events: &mut [Sealable<'_>],
) -> Result<(), sqlx::Error> {
    let mut subjects: Vec<(String, String)> = Vec::new();
    for event in events.iter_mut() {
        if event.fields().is_empty() {
            continue;
        }
        let mut sealed = false;
        event.each_present(|_, value| sealed |= is_sealed(value));
        if sealed {
            subjects.push(event.subject());
        }
    }
    if subjects.is_empty() {
        return Ok(());
    }
    subjects.sort();
    subjects.dedup();
    let keys = keys(executor, &subjects).await?;
    open_sealables(&keys, events);
    Ok(())
}

/// [`open`] with the keys already read (an aggregate's load reads its key with its events).
pub fn open_with<T: LogEvent>(keys: &Keys, events: &mut [T]) {
    let mut sealables: Vec<Sealable<'_>> = events.iter_mut().map(LogEvent::sealable).collect();
    open_sealables(keys, &mut sealables);
}

fn open_sealables(keys: &Keys, events: &mut [Sealable<'_>]) {
    for event in events.iter_mut() {
        if event.fields().is_empty() {
            continue;
        }
        let subject = event.subject();
        let cipher = match keys.get(&subject) {
            Some(Some(key)) => cipher(key),
            _ => None,
        };
        event.each_present(|field, value| {
            let Some(sealed) = value.as_str().and_then(|s| s.strip_prefix(SEALED)) else {
                return;
            };
            *value = cipher
                .as_ref()
                .and_then(|c| decrypt(c, &associated(&subject, field), sealed))
                .unwrap_or_else(|| field.erased(&subject.1));
        });
    }
}

/// Destroys the keys of `subjects` (creating shredded rows for those that had none, so that
/// nothing personal is stored for them later), then overwrites any field of their events still
/// in clear (written before sealing existed) with the placeholder. Returns how many stored
/// events were rewritten that way.
pub async fn shred(
    conn: &mut PgConnection,
    subjects: &[(String, String)],
) -> Result<u64, sqlx::Error> {
    let (types, ids) = columns(subjects);
    sqlx::query(
        "INSERT INTO personal_data_keys (aggregate_type, aggregate_id, key, shredded_at)
         SELECT t, i, NULL, now() FROM unnest($1::text[], $2::text[]) AS s(t, i)
         ON CONFLICT (aggregate_type, aggregate_id)
         DO UPDATE SET key = NULL, shredded_at = coalesce(personal_data_keys.shredded_at, now())",
    )
    .bind(&types)
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    redact_plain(conn, subjects).await
}

/// Overwrites the personal fields still in clear in the events of `subjects` with their
/// placeholders (see the module docs).
async fn redact_plain(
    conn: &mut PgConnection,
    subjects: &[(String, String)],
) -> Result<u64, sqlx::Error> {
    let (types, ids) = columns(subjects);
    let rows: Vec<(i64, String, String, String, Value)> = sqlx::query_as(
        "SELECT e.global_position, e.aggregate_type, e.aggregate_id, e.event_type, e.payload::jsonb::json
         FROM events e JOIN unnest($1::text[], $2::text[]) AS s(t, i)
              ON e.aggregate_type = s.t AND e.aggregate_id = s.i",
    )
    .bind(&types)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut positions = Vec::new();
    let mut payloads = Vec::new();
    for (position, aggregate_type, aggregate_id, event_type, mut payload) in rows {
        let mut event = Sealable {
            aggregate_type: &aggregate_type,
            aggregate_id: &aggregate_id,
            event_type: &event_type,
            payload: &mut payload,
        };
        let mut changed = false;
        event.each_present(|field, value| {
            // Sealed fields are unreadable once the key is gone: only those in clear change.
            let placeholder = field.erased(&aggregate_id);
            if !is_sealed(value) && *value != placeholder {
                *value = placeholder;
                changed = true;
            }
        });
        if changed {
            positions.push(position);
            payloads.push(payload.to_string());
        }
    }
    if positions.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE events e SET payload = r.p::json
         FROM unnest($1::bigint[], $2::text[]) AS r(g, p) WHERE e.global_position = r.g",
    )
    .bind(&positions)
    .bind(&payloads)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn created(email: &str) -> Value {
        json!({"MemberCreated": {
            "member_id": "m1", "email": email, "name": "Ada", "note": null, "labels": [],
            "attribution": {"attribution_url": "/welcome", "referrer_url": null}
        }})
    }

    #[test]
    fn a_sealed_field_opens_only_with_its_key_and_its_place() {
        let key = [7u8; 32];
        let cipher = cipher(&key).expect("a 32-byte key");
        let subject = ("Member".to_owned(), "m1".to_owned());
        let field = Field::address("/email");
        let sealed = encrypt(
            &cipher,
            &associated(&subject, &field),
            &json!("ada@example.com"),
        );
        let text = sealed.as_str().expect("a string");
        assert!(text.starts_with(SEALED));
        assert!(!text.contains("ada"));
        let body = text.strip_prefix(SEALED).expect("sealed");
        assert_eq!(
            decrypt(&cipher, &associated(&subject, &field), body),
            Some(json!("ada@example.com"))
        );
        // Moved to another member or field, or opened with another key: nothing.
        let other = ("Member".to_owned(), "m2".to_owned());
        assert_eq!(decrypt(&cipher, &associated(&other, &field), body), None);
        let name = Field::text("/name");
        assert_eq!(decrypt(&cipher, &associated(&subject, &name), body), None);
        assert_eq!(
            decrypt(
                &super::cipher(&[8u8; 32]).expect("a 32-byte key"),
                &associated(&subject, &field),
                body
            ),
            None
        );
    }

    #[test]
    fn present_lists_the_personal_fields_that_hold_a_value() {
        let mut payload = created("ada@example.com");
        let mut event = Sealable {
            aggregate_type: "Member",
            aggregate_id: "m1",
            event_type: "MemberCreated",
            payload: &mut payload,
        };
        let mut found = Vec::new();
        event.each_present(|field, value| {
            found.push(field.pointer);
            *value = field.erased("m1");
        });
        assert_eq!(found, ["/email", "/name", "/attribution/attribution_url"]);
        assert_eq!(
            payload["MemberCreated"]["email"],
            "erased-m1@erased.invalid"
        );
        assert_eq!(payload["MemberCreated"]["name"], Value::Null);
        assert_eq!(payload["MemberCreated"]["labels"], json!([]));
    }

    #[test]
    fn events_without_personal_fields_have_none() {
        assert!(fields("Member", "MemberStatusChanged").is_empty());
        assert!(fields("Subscription", "SubscriptionCreated").is_empty());
        assert_eq!(fields("License", "LicenseActivatedOnDomain").len(), 1);
    }
}
