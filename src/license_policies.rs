//! License policies: what a key may do, named per product (Keygen's policies). A policy says on
//! how many domains (machines) a key may be activated at once, whether on patterns
//! (`*.example.com`), when the key expires on its own (with its subscription, a fixed number of
//! days after issue, or never), how long it keeps validating after a failed payment, how long an
//! activation lives without a heartbeat, and which entitlements (feature flags) it grants.
//!
//! Policies are operators' configuration in `license_policies`, not events: a license names its
//! policy by id in its own events (`LicenseGranted`, `LicensePolicyChanged`), and its expiry is
//! computed when the policy is given to it, so editing a policy's duration never moves the
//! expiry of keys already issued; limits, grace, heartbeat and entitlements are read live.
//! A key without a policy keeps the rules it always had: one domain, no expiry of its own.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

/// Whether `id` can name a policy: 1 to 63 of a-z, 0-9, `-` and `_`, starting with a letter or
/// digit (as the table's check says). Anything else names none, and is never sent to the database.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && matches!(b, b'-' | b'_'))
        })
}

/// How a key under a policy expires on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum ExpiryStrategy {
    /// It ends with its subscription (deactivated when the subscription is canceled); an
    /// operator's key never expires on its own.
    Subscription,
    /// `duration_days` after it was issued.
    Duration,
    Never,
}

impl ExpiryStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscription => "subscription",
            Self::Duration => "duration",
            Self::Never => "never",
        }
    }

    fn parse(raw: &str) -> Self {
        match raw {
            "duration" => Self::Duration,
            "never" => Self::Never,
            _ => Self::Subscription,
        }
    }
}

/// A policy as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub max_machines: i32,
    pub domain_patterns: bool,
    pub expiry: ExpiryStrategy,
    pub duration_days: Option<i32>,
    pub grace_days: Option<i32>,
    pub heartbeat_minutes: Option<i32>,
    pub entitlements: Vec<String>,
    /// The Stripe products whose site and seat keys get this policy.
    pub products: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Policy {
    /// The expiry it gives a key issued at `issued_at`.
    pub fn expiry_from(&self, issued_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match (self.expiry, self.duration_days) {
            (ExpiryStrategy::Duration, Some(days)) => Some(issued_at + Duration::days(days.into())),
            _ => None,
        }
    }

    /// The machine limit a key under it has; a key without a policy has one.
    pub fn limit(policy: Option<&Self>) -> u32 {
        policy.map_or(1, |p| u32::try_from(p.max_machines).unwrap_or(1).max(1))
    }
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    id: String,
    name: String,
    max_machines: i32,
    domain_patterns: bool,
    expiry: String,
    duration_days: Option<i32>,
    grace_days: Option<i32>,
    heartbeat_minutes: Option<i32>,
    entitlements: Vec<String>,
    products: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<PolicyRow> for Policy {
    fn from(row: PolicyRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            max_machines: row.max_machines,
            domain_patterns: row.domain_patterns,
            expiry: ExpiryStrategy::parse(&row.expiry),
            duration_days: row.duration_days,
            grace_days: row.grace_days,
            heartbeat_minutes: row.heartbeat_minutes,
            entitlements: row.entitlements,
            products: row.products,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const SELECT: &str = "SELECT p.id, p.name, p.max_machines, p.domain_patterns, p.expiry, \
     p.duration_days, p.grace_days, p.heartbeat_minutes, p.entitlements, \
     coalesce((SELECT array_agg(pp.product_id ORDER BY pp.product_id) \
               FROM license_policy_products pp WHERE pp.policy_id = p.id), '{}') AS products, \
     p.created_at, p.updated_at FROM license_policies p";

pub async fn list(pool: &PgPool) -> Result<Vec<Policy>, sqlx::Error> {
    let rows: Vec<PolicyRow> = sqlx::query_as(&format!("{SELECT} ORDER BY p.id"))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(Policy::from).collect())
}

pub async fn get<'e>(
    executor: impl PgExecutor<'e>,
    id: &str,
) -> Result<Option<Policy>, sqlx::Error> {
    if !valid_id(id) {
        return Ok(None);
    }
    let row: Option<PolicyRow> = sqlx::query_as(&format!("{SELECT} WHERE p.id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await?;
    Ok(row.map(Policy::from))
}

/// The policy license `license_id` is under, if any.
pub async fn of_license(pool: &PgPool, license_id: Uuid) -> Result<Option<Policy>, sqlx::Error> {
    let row: Option<PolicyRow> = sqlx::query_as(&format!(
        "{SELECT} JOIN licenses l ON l.policy_id = p.id WHERE l.id = $1"
    ))
    .bind(license_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Policy::from))
}

/// The policy of a Stripe product's keys, if it has one.
pub async fn for_product(
    conn: &mut PgConnection,
    product_id: &str,
) -> Result<Option<Policy>, sqlx::Error> {
    let row: Option<PolicyRow> = sqlx::query_as(&format!(
        "{SELECT} JOIN license_policy_products x ON x.policy_id = p.id WHERE x.product_id = $1"
    ))
    .bind(product_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Policy::from))
}

/// What an operator sets; `id` comes from the path.
#[derive(Debug, Clone)]
pub struct PolicyTerms {
    pub name: String,
    pub max_machines: i32,
    pub domain_patterns: bool,
    pub expiry: ExpiryStrategy,
    pub duration_days: Option<i32>,
    pub grace_days: Option<i32>,
    pub heartbeat_minutes: Option<i32>,
    pub entitlements: Vec<String>,
    pub products: Vec<String>,
}

/// Why a policy was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// A product named belongs to another policy.
    #[error("product {product} already has policy {policy}")]
    ProductTaken { product: String, policy: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Creates or replaces policy `id`; returns it and whether it was created. Its products are
/// exactly `terms.products` afterwards.
pub async fn put(pool: &PgPool, id: &str, terms: &PolicyTerms) -> Result<(Policy, bool), PutError> {
    let mut tx = crate::db::begin(pool, crate::db::PoolName::Main).await?;
    let created: bool = sqlx::query_scalar(
        "INSERT INTO license_policies (id, name, max_machines, domain_patterns, expiry,
             duration_days, grace_days, heartbeat_minutes, entitlements)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name,
             max_machines = EXCLUDED.max_machines, domain_patterns = EXCLUDED.domain_patterns,
             expiry = EXCLUDED.expiry, duration_days = EXCLUDED.duration_days,
             grace_days = EXCLUDED.grace_days, heartbeat_minutes = EXCLUDED.heartbeat_minutes,
             entitlements = EXCLUDED.entitlements, updated_at = now()
         RETURNING xmax = 0",
    )
    .bind(id)
    .bind(&terms.name)
    .bind(terms.max_machines)
    .bind(terms.domain_patterns)
    .bind(terms.expiry.as_str())
    .bind(terms.duration_days)
    .bind(terms.grace_days)
    .bind(terms.heartbeat_minutes)
    .bind(&terms.entitlements)
    .fetch_one(&mut *tx)
    .await?;
    // Another policy's products are refused, not taken over.
    let taken: Option<(String, String)> = sqlx::query_as(
        "SELECT product_id, policy_id FROM license_policy_products
         WHERE product_id = ANY($1) AND policy_id <> $2 ORDER BY product_id LIMIT 1",
    )
    .bind(&terms.products)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((product, policy)) = taken {
        return Err(PutError::ProductTaken { product, policy });
    }
    sqlx::query(
        "DELETE FROM license_policy_products WHERE policy_id = $1 AND NOT product_id = ANY($2)",
    )
    .bind(id)
    .bind(&terms.products)
    .execute(&mut *tx)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO license_policy_products (product_id, policy_id)
         SELECT unnest($1::text[]), $2 ON CONFLICT (product_id) DO NOTHING",
    )
    .bind(&terms.products)
    .bind(id)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        // Taken by a concurrent PUT of another policy between the check and the insert.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(PutError::ProductTaken {
                product: terms.products.join(", "),
                policy: "another".into(),
            })
        }
        Err(e) => return Err(e.into()),
    }
    let policy = get(&mut *tx, id).await?.ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    Ok((policy, created))
}

/// Why a policy was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("no policy has this id")]
    NotFound,
    /// Keys are under it: change their policy first.
    #[error("{0} license(s) are under this policy")]
    InUse(i64),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub async fn delete(pool: &PgPool, id: &str) -> Result<(), DeleteError> {
    if !valid_id(id) {
        return Err(DeleteError::NotFound);
    }
    let mut tx = crate::db::begin(pool, crate::db::PoolName::Main).await?;
    // Locks the policy so that no key is given it while it goes.
    let exists: Option<String> =
        sqlx::query_scalar("SELECT id FROM license_policies WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(DeleteError::NotFound);
    }
    let in_use: i64 = sqlx::query_scalar("SELECT count(*) FROM licenses WHERE policy_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if in_use > 0 {
        return Err(DeleteError::InUse(in_use));
    }
    sqlx::query("DELETE FROM license_policies WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(expiry: ExpiryStrategy, duration_days: Option<i32>) -> Policy {
        Policy {
            id: "pro".into(),
            name: "Pro".into(),
            max_machines: 3,
            domain_patterns: false,
            expiry,
            duration_days,
            grace_days: None,
            heartbeat_minutes: None,
            entitlements: vec![],
            products: vec![],
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn only_a_duration_policy_gives_an_expiry_counted_from_issue() {
        let issued = DateTime::parse_from_rfc3339("2026-01-31T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            policy(ExpiryStrategy::Duration, Some(30)).expiry_from(issued),
            Some(issued + Duration::days(30))
        );
        assert_eq!(
            policy(ExpiryStrategy::Never, None).expiry_from(issued),
            None
        );
        assert_eq!(
            policy(ExpiryStrategy::Subscription, None).expiry_from(issued),
            None
        );
    }

    #[test]
    fn a_key_without_a_policy_has_one_machine() {
        assert_eq!(Policy::limit(None), 1);
        assert_eq!(Policy::limit(Some(&policy(ExpiryStrategy::Never, None))), 3);
    }
}
