//! Verifying a memberledger license file offline, in Rust, with `ed25519-dalek`, `base64`,
//! `serde_json` and `chrono`. The test suite runs this file as it is
//! (`tests/api/license_files.rs`).
//!
//! `keys` are the `(kid, public_key)` pairs of `GET /v1/licenses/public-key` (or
//! `memberledger licenses public-key`) that the software ships with.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// The license's facts (`key`, `status`, `domains`, `seat`, `license_expires_at`, ...) when
/// `file` is signed by one of `keys` and not stale at `now`; else why not.
pub fn verify(
    file: &str,
    keys: &[(String, String)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<serde_json::Value, String> {
    let body: String = file
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    let envelope: serde_json::Value = serde_json::from_slice(
        &STANDARD
            .decode(body)
            .map_err(|e| format!("not a license file: {e}"))?,
    )
    .map_err(|e| format!("not a license file: {e}"))?;
    let field = |name: &str| {
        envelope[name]
            .as_str()
            .ok_or_else(|| format!("the file has no {name}"))
    };
    if field("alg")? != "ed25519" || field("enc")? != "base64" {
        return Err("an unknown signing scheme".into());
    }
    let kid = field("kid")?;
    let (_, public_key) = keys
        .iter()
        .find(|(id, _)| id == kid)
        .ok_or_else(|| format!("signed by key {kid}, which this software does not have"))?;
    let public_key: [u8; 32] = STANDARD
        .decode(public_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or("a public key is not 32 bytes of base64")?;
    let public_key = VerifyingKey::from_bytes(&public_key).map_err(|e| e.to_string())?;
    let signature: [u8; 64] = STANDARD
        .decode(field("sig")?)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or("the signature is not 64 bytes of base64")?;
    let data = field("data")?;
    // The signature covers `license/` and the base64 text: checked before anything is decoded.
    public_key
        .verify(
            format!("license/{data}").as_bytes(),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| "the signature does not match: the file was changed".to_owned())?;
    let facts: serde_json::Value = serde_json::from_slice(
        &STANDARD
            .decode(data)
            .map_err(|e| format!("unreadable data: {e}"))?,
    )
    .map_err(|e| format!("unreadable data: {e}"))?;
    let expires_at = facts["expires_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .ok_or("the file has no expiry")?;
    if now > expires_at {
        return Err("the file has expired: fetch a new one".into());
    }
    Ok(facts)
}
