//! License files the licensed software verifies offline: the license's facts as JSON, signed
//! with Ed25519 (Keygen's `ED25519_SIGN` scheme), in a PEM-like envelope.
//!
//! ```text
//! -----BEGIN LICENSE FILE-----
//! base64 of {"enc":"base64","alg":"ed25519","kid":"...","data":"<base64 payload>","sig":"<base64>"}
//! -----END LICENSE FILE-----
//! ```
//!
//! The signature is over the bytes `license/` + `data` (the base64 text, as Keygen signs), so a
//! verifier checks it before decoding anything. `kid` names the signing key: rotation makes a
//! new active key and retires the old one, and every published key keeps its id, so software
//! knows which key a file needs. The payload carries its own `expires_at` (the file's, at most
//! [`FILE_TTL`] after issue): offline software must come back for a fresh file.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// How long a license file is good for offline.
pub const FILE_TTL: chrono::Duration = chrono::Duration::days(30);

pub const BEGIN: &str = "-----BEGIN LICENSE FILE-----";
pub const END: &str = "-----END LICENSE FILE-----";

/// A published verifying key.
#[derive(Debug, Clone, Serialize)]
pub struct PublicKey {
    pub kid: String,
    /// The 32-byte Ed25519 public key, base64.
    pub public_key: String,
    pub created_at: DateTime<Utc>,
    /// Retired keys no longer sign; files they signed verify only for software that keeps them.
    pub retired_at: Option<DateTime<Utc>>,
}

/// What a license file says.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LicenseFacts {
    pub license_id: Uuid,
    pub key: String,
    pub member_id: Uuid,
    /// `active`, `inactive`, `pending` or `canceled`, when the file was issued.
    pub status: String,
    /// `site` or `quantity`.
    pub purchase_type: String,
    /// The domains the key is good for: a site license's site, a quantity key's activations
    /// (`*.example.com` covers example.com and every name under it).
    #[sqlx(skip)]
    pub domains: Vec<String>,
    #[serde(skip)]
    pub site: Option<String>,
    #[serde(skip)]
    pub machines: sqlx::types::Json<Vec<crate::api::dashboard::LicenseMachine>>,
    /// How many domains it may be activated on (its policy's limit).
    pub max_machines: i32,
    /// Its policy, if it has one.
    pub policy_id: Option<String>,
    /// The feature flags its policy grants.
    pub entitlements: Vec<String>,
    pub seat: Option<i32>,
    /// An operator's holds: software refuses a suspended or revoked license.
    pub suspended: bool,
    pub revoked: bool,
    /// When the license itself ends (its own expiry, or its subscription's scheduled end,
    /// whichever is first), if it does.
    #[serde(serialize_with = "optional_seconds")]
    pub license_expires_at: Option<DateTime<Utc>>,
}

/// Times in files are RFC 3339 to the second, `Z`: what every language's parser reads.
fn seconds<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn optional_seconds<S: serde::Serializer>(
    at: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => seconds(at, s),
        None => s.serialize_none(),
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    #[serde(flatten)]
    license: &'a LicenseFacts,
    #[serde(serialize_with = "seconds")]
    issued_at: DateTime<Utc>,
    /// After this the file is stale: the software must fetch a new one.
    #[serde(serialize_with = "seconds")]
    expires_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    enc: &'static str,
    alg: &'static str,
    kid: &'a str,
    data: &'a str,
    sig: String,
}

/// A signed file.
#[derive(Debug, Clone)]
pub struct LicenseFile {
    pub certificate: String,
    pub kid: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

fn new_kid() -> String {
    format!("ml-{}", &Uuid::now_v7().simple().to_string()[..16])
}

fn signing_key(secret: &[u8]) -> Result<SigningKey, sqlx::Error> {
    let bytes: [u8; 32] = secret
        .try_into()
        .map_err(|_| sqlx::Error::Protocol("a license signing key is not 32 bytes".into()))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// The active signing key, made now if there is none (the first instance to ask makes it).
async fn active(pool: &PgPool) -> Result<(String, SigningKey), sqlx::Error> {
    loop {
        let found: Option<(String, Vec<u8>)> =
            sqlx::query_as("SELECT kid, secret FROM license_signing_keys WHERE retired_at IS NULL")
                .fetch_optional(pool)
                .await?;
        if let Some((kid, secret)) = found {
            return Ok((kid, signing_key(&secret)?));
        }
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        // Two instances at once: the unique index lets one in; both then read it.
        sqlx::query(
            "INSERT INTO license_signing_keys (kid, secret) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
        )
        .bind(new_kid())
        .bind(secret.as_slice())
        .execute(pool)
        .await?;
    }
}

/// Retires the active key and makes a new one; answers the new key's id.
pub async fn rotate(pool: &PgPool) -> Result<String, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE license_signing_keys SET retired_at = now() WHERE retired_at IS NULL")
        .execute(&mut *tx)
        .await?;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let kid = new_kid();
    sqlx::query("INSERT INTO license_signing_keys (kid, secret) VALUES ($1, $2)")
        .bind(&kid)
        .bind(secret.as_slice())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(kid)
}

/// Every verifying key, the active one first, then retired ones newest first (the active one is
/// made if there is none yet, so there is always one to publish).
pub async fn public_keys(pool: &PgPool) -> Result<Vec<PublicKey>, sqlx::Error> {
    active(pool).await?;
    type Row = (String, Vec<u8>, DateTime<Utc>, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT kid, secret, created_at, retired_at FROM license_signing_keys
         ORDER BY retired_at IS NOT NULL, created_at DESC",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(kid, secret, created_at, retired_at)| {
            Ok(PublicKey {
                kid,
                public_key: STANDARD.encode(signing_key(&secret)?.verifying_key().as_bytes()),
                created_at,
                retired_at,
            })
        })
        .collect()
}

/// The facts of the license with `key_sha256`, from the `licenses` read model.
pub async fn facts(pool: &PgPool, key_sha256: &[u8]) -> Result<Option<LicenseFacts>, sqlx::Error> {
    let facts: Option<LicenseFacts> = sqlx::query_as(
        "SELECT l.id AS license_id, l.key, l.member_id, l.status, l.purchase_type, l.site,
                l.machines, l.seat, l.policy_id,
                coalesce(p.max_machines, 1) AS max_machines,
                coalesce(p.entitlements, '{}') AS entitlements,
                l.suspension_reason IS NOT NULL AS suspended, l.revoked_at IS NOT NULL AS revoked,
                least(l.expires_at,
                      CASE WHEN s.status IS DISTINCT FROM 'canceled' THEN s.cancel_at END)
                    AS license_expires_at
         FROM licenses l LEFT JOIN subscriptions s ON s.id = l.subscription_id
         LEFT JOIN license_policies p ON p.id = l.policy_id
         WHERE l.key_sha256 = $1",
    )
    .bind(key_sha256)
    .fetch_optional(pool)
    .await?;
    Ok(facts.map(|mut f| {
        f.domains = if f.purchase_type == "site" {
            f.site.clone().into_iter().collect()
        } else {
            f.machines.0.iter().map(|m| m.domain.clone()).collect()
        };
        f
    }))
}

/// Signs `facts` with the active key, good for [`FILE_TTL`] from `now`.
pub async fn sign(
    pool: &PgPool,
    facts: &LicenseFacts,
    now: DateTime<Utc>,
) -> Result<LicenseFile, sqlx::Error> {
    let (kid, key) = active(pool).await?;
    let now = chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let expires_at = now + FILE_TTL;
    let payload = serde_json::to_vec(&Payload {
        license: facts,
        issued_at: now,
        expires_at,
    })
    .map_err(|e| sqlx::Error::Protocol(format!("encoding a license file: {e}")))?;
    let data = STANDARD.encode(payload);
    let sig = STANDARD.encode(key.sign(format!("license/{data}").as_bytes()).to_bytes());
    let envelope = serde_json::to_vec(&Envelope {
        enc: "base64",
        alg: "ed25519",
        kid: &kid,
        data: &data,
        sig,
    })
    .map_err(|e| sqlx::Error::Protocol(format!("encoding a license file: {e}")))?;
    let body = STANDARD.encode(envelope);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    Ok(LicenseFile {
        certificate: format!("{BEGIN}\n{}\n{END}\n", lines.join("\n")),
        kid,
        issued_at: now,
        expires_at,
    })
}
