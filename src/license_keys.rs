//! The unique `license_keys` lookup: every license key, reserved for one license before the
//! license's first event names it.

use aggregates::LicenseKey;
use rand::RngCore;
use sqlx::PgPool;
use uuid::Uuid;

/// The license's key: the one reserved for it before (a retry, or a re-run after a crash), or
/// a new random one (CSPRNG) reserved now.
pub async fn reserve(pool: &PgPool, license_id: Uuid) -> Result<LicenseKey, sqlx::Error> {
    loop {
        let existing: Option<String> =
            sqlx::query_scalar("SELECT key FROM license_keys WHERE license_id = $1")
                .bind(license_id)
                .fetch_optional(pool)
                .await?;
        if let Some(key) = existing {
            return LicenseKey::parse(&key).map_err(|e| sqlx::Error::Decode(Box::new(e)));
        }
        let mut bytes = [0u8; 12];
        rand::rng().fill_bytes(&mut bytes);
        let key = LicenseKey::from_random_bytes(bytes);
        // A key collision (or a concurrent reservation for this license) inserts nothing: look again.
        sqlx::query(
            "INSERT INTO license_keys (key, license_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(key.as_str())
        .bind(license_id)
        .execute(pool)
        .await?;
    }
}
