//! The unique `license_keys` lookup: every license key, reserved for one license before the
//! license's first event names it.

use std::collections::{HashMap, HashSet};

use aggregates::LicenseKey;
use rand::RngCore;
use sqlx::PgPool;
use uuid::Uuid;

/// The license's key: the one reserved for it before (a retry, or a re-run after a crash), or
/// a new random one (CSPRNG) reserved now.
pub async fn reserve(pool: &PgPool, license_id: Uuid) -> Result<LicenseKey, sqlx::Error> {
    let mut reserved = reserve_many(pool, &[license_id]).await?;
    reserved
        .keys
        .remove(&license_id)
        .ok_or_else(|| sqlx::Error::Protocol("no key reserved for the license".into()))
}

/// What [`reserve_many`] reserved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    /// Each license's key.
    pub keys: HashMap<Uuid, LicenseKey>,
    /// The licenses that had no key before: none has an event yet (every license's key is
    /// reserved, and committed, before its first event), so their first command can skip
    /// reading their events (`CommandBus::execute_new`).
    pub new: HashSet<Uuid>,
}

/// [`reserve`] for several licenses in one statement: new random keys are offered for all of
/// them at once, and what the table then holds for them is read back. A license that had a key
/// keeps it; one whose new key collided with another's gets another offer (one more statement).
pub async fn reserve_many(pool: &PgPool, license_ids: &[Uuid]) -> Result<Reserved, sqlx::Error> {
    let mut reserved = Reserved {
        keys: HashMap::with_capacity(license_ids.len()),
        new: HashSet::new(),
    };
    let mut missing: Vec<Uuid> = license_ids.to_vec();
    missing.sort_unstable();
    missing.dedup();
    while !missing.is_empty() {
        let offered: Vec<String> = missing
            .iter()
            .map(|_| {
                let mut bytes = [0u8; 12];
                rand::rng().fill_bytes(&mut bytes);
                LicenseKey::from_random_bytes(bytes).as_str().to_owned()
            })
            .collect();
        // A license that has a key, or a key that another license has, inserts nothing. The
        // second part reads the table as it was before the insert: a key from it was there.
        let held: Vec<(Uuid, String, bool)> = sqlx::query_as(
            "WITH offered AS (
                 INSERT INTO license_keys (key, license_id)
                 SELECT * FROM unnest($1::text[], $2::uuid[])
                 ON CONFLICT DO NOTHING
                 RETURNING license_id, key)
             SELECT license_id, key, true FROM offered
             UNION ALL
             SELECT license_id, key, false FROM license_keys WHERE license_id = ANY($2)",
        )
        .bind(&offered)
        .bind(&missing)
        .fetch_all(pool)
        .await?;
        for (license_id, key, new) in held {
            let key = LicenseKey::parse(&key).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            reserved.keys.insert(license_id, key);
            if new {
                reserved.new.insert(license_id);
            }
        }
        missing.retain(|id| !reserved.keys.contains_key(id));
    }
    Ok(reserved)
}
