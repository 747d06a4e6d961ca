//! `member_licenses`: one row per license key, with its current status (`pending` until a
//! license purchase is paid, `active`, `inactive`, or `canceled` when the purchase was not paid)
//! and, while inactive or canceled, why; for a quantity key the domain it is activated on
//! (`used_site`, kept while inactive) and every domain it is activated on (`machines`, a JSON
//! array, oldest first); an operator's holds (`suspension_reason` while suspended, `revoked_at`
//! and `revocation_reason` once revoked); its policy (`policy_id`) and own expiry
//! (`expires_at`); for a key an operator granted, no subscription and the `grant_note`. Times
//! are the events' own.
//!
//! A batch is applied set-based: the rows of the licenses it touches are read in one statement,
//! the events are folded into them in memory, in order, and the changed rows are written back
//! in one multi-row upsert.

use std::collections::HashMap;

use aggregates::cqrs_es::Aggregate;
use aggregates::{License, LicenseEvent, LicenseStatus, PurchaseType};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::member_subscriptions::to_i32;
use crate::{member_id as license_id, Handles, Mode, Projection, ProjectionError, StoredEvent};

pub struct MemberLicenses;

#[async_trait]
impl Projection for MemberLicenses {
    fn name(&self) -> &'static str {
        "member_licenses"
    }

    fn version(&self) -> i32 {
        // 2: `used_site` and `activated_at` (migration 20261124000006).
        // 3: pending and canceled keys of license purchases, `purchase_id` (20261124000009).
        3
    }

    fn tables(&self) -> &'static [&'static str] {
        &["licenses"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[Handles::all(License::TYPE)];
        HANDLES
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut ids = Vec::with_capacity(events.len());
        let mut decoded = Vec::with_capacity(events.len());
        for event in events.iter().filter(|e| e.aggregate_type == License::TYPE) {
            // The aggregate id is the license's UUID.
            let id = license_id(event)?;
            ids.push(id);
            decoded.push((id, event.decode::<LicenseEvent>()?));
        }
        if decoded.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        ids.dedup();
        let mut rows: HashMap<Uuid, LicenseRow> = sqlx::query_as::<_, LicenseRow>(&format!(
            "SELECT {COLUMNS} FROM licenses WHERE id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
        let mut changed = Vec::new();
        for (id, event) in decoded {
            if fold(&mut rows, id, event) && !changed.contains(&id) {
                changed.push(id);
            }
        }
        let changed: Vec<&LicenseRow> = changed.iter().filter_map(|id| rows.get(id)).collect();
        store(conn, &changed).await
    }
}

const COLUMNS: &str = "id, key, member_id, subscription_id, item_id, purchase_type, site, seat, \
     status, deactivation_reason, issued_at, updated_at, purchase_id, used_site, activated_at, \
     suspension_reason, revoked_at, revocation_reason, policy_id, expires_at, grant_note, machines";

/// A row of `licenses` (but its generated `key_sha256`).
#[derive(Debug, Clone, sqlx::FromRow)]
struct LicenseRow {
    id: Uuid,
    key: String,
    member_id: Uuid,
    subscription_id: Option<String>,
    item_id: Option<String>,
    purchase_type: String,
    site: Option<String>,
    seat: Option<i32>,
    status: String,
    deactivation_reason: Option<String>,
    issued_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    purchase_id: Option<Uuid>,
    used_site: Option<String>,
    activated_at: Option<DateTime<Utc>>,
    /// Why an operator holds it, while suspended.
    suspension_reason: Option<String>,
    revoked_at: Option<DateTime<Utc>>,
    revocation_reason: Option<String>,
    policy_id: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    grant_note: Option<String>,
    machines: Json<Vec<MachineRow>>,
}

/// One activation, as `licenses.machines` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineRow {
    pub domain: String,
    pub activated_at: DateTime<Utc>,
    pub ip: Option<String>,
}

impl LicenseRow {
    /// A new row with no activation, hold, policy or expiry.
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: Uuid,
        key: String,
        member_id: Uuid,
        subscription_id: Option<String>,
        purchase_type: PurchaseType,
        status: LicenseStatus,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            key,
            member_id,
            subscription_id,
            item_id: None,
            purchase_type: purchase_type.as_str().to_owned(),
            site: None,
            seat: None,
            status: status.as_str().to_owned(),
            deactivation_reason: None,
            issued_at: at,
            updated_at: at,
            purchase_id: None,
            used_site: None,
            activated_at: None,
            suspension_reason: None,
            revoked_at: None,
            revocation_reason: None,
            policy_id: None,
            expires_at: None,
            grant_note: None,
            machines: Json(Vec::new()),
        }
    }

    /// `used_site` and `activated_at` follow the oldest activation.
    fn machines_changed(&mut self) {
        let first = self.machines.0.first();
        self.used_site = first.map(|m| m.domain.clone());
        self.activated_at = first.map(|m| m.activated_at);
    }
}

/// Applies one event to the rows in memory; returns whether a row changed. A key issued again
/// (a replayed event) leaves its row as it is; a change of a license without a row does nothing.
fn fold(rows: &mut HashMap<Uuid, LicenseRow>, id: Uuid, event: LicenseEvent) -> bool {
    match event {
        LicenseEvent::LicenseIssued {
            key,
            member_id,
            subscription_id,
            item_id,
            purchase_type,
            site,
            seat,
            issued_at,
            ..
        } => insert(
            rows,
            LicenseRow {
                item_id: Some(item_id),
                site,
                seat: seat.map(to_i32),
                ..LicenseRow::new(
                    id,
                    key,
                    member_id,
                    Some(subscription_id),
                    purchase_type,
                    LicenseStatus::Active,
                    issued_at,
                )
            },
        ),
        LicenseEvent::LicenseReserved {
            key,
            member_id,
            subscription_id,
            purchase_id,
            seat,
            reserved_at,
            ..
        } => insert(
            rows,
            LicenseRow {
                seat: Some(to_i32(seat)),
                purchase_id: Some(purchase_id),
                ..LicenseRow::new(
                    id,
                    key,
                    member_id,
                    Some(subscription_id),
                    PurchaseType::Quantity,
                    LicenseStatus::Pending,
                    reserved_at,
                )
            },
        ),
        LicenseEvent::LicenseGranted {
            key,
            member_id,
            policy_id,
            expires_at,
            note,
            granted_at,
            ..
        } => insert(
            rows,
            LicenseRow {
                policy_id,
                expires_at,
                grant_note: note,
                ..LicenseRow::new(
                    id,
                    key,
                    member_id,
                    None,
                    PurchaseType::Quantity,
                    LicenseStatus::Active,
                    granted_at,
                )
            },
        ),
        other => {
            let Some(row) = rows.get_mut(&id) else {
                return false;
            };
            match other {
                LicenseEvent::PendingLicenseActivated {
                    subscription_id,
                    item_id,
                    activated_at,
                } => {
                    row.status = LicenseStatus::Active.as_str().to_owned();
                    row.subscription_id = Some(subscription_id);
                    row.item_id = Some(item_id);
                    row.deactivation_reason = None;
                    row.updated_at = activated_at;
                }
                LicenseEvent::LicenseCanceled {
                    reason,
                    canceled_at,
                } => {
                    row.status = LicenseStatus::Canceled.as_str().to_owned();
                    row.deactivation_reason = Some(reason.as_str().to_owned());
                    row.updated_at = canceled_at;
                }
                LicenseEvent::LicenseDeactivated {
                    reason,
                    deactivated_at,
                } => {
                    row.status = LicenseStatus::Inactive.as_str().to_owned();
                    row.deactivation_reason = Some(reason.as_str().to_owned());
                    row.updated_at = deactivated_at;
                }
                LicenseEvent::LicenseReactivated { reactivated_at } => {
                    row.status = LicenseStatus::Active.as_str().to_owned();
                    row.deactivation_reason = None;
                    row.updated_at = reactivated_at;
                }
                LicenseEvent::LicenseActivatedOnDomain {
                    domain,
                    ip,
                    activated_at,
                } => {
                    row.machines.0.push(MachineRow {
                        domain,
                        activated_at,
                        ip,
                    });
                    row.machines_changed();
                    row.updated_at = activated_at;
                }
                LicenseEvent::LicenseDomainReleased {
                    domain,
                    released_at: at,
                }
                | LicenseEvent::LicenseMachineExpired {
                    domain,
                    expired_at: at,
                    ..
                } => {
                    row.machines.0.retain(|m| m.domain != domain);
                    row.machines_changed();
                    row.updated_at = at;
                }
                LicenseEvent::LicensePolicyChanged {
                    policy_id,
                    expires_at,
                    changed_at,
                } => {
                    row.policy_id = policy_id;
                    row.expires_at = expires_at;
                    row.updated_at = changed_at;
                }
                LicenseEvent::LicenseExpiryChanged {
                    expires_at,
                    changed_at,
                } => {
                    row.expires_at = expires_at;
                    row.updated_at = changed_at;
                }
                LicenseEvent::LicenseSuspended {
                    reason,
                    suspended_at,
                } => {
                    row.suspension_reason = Some(reason);
                    row.updated_at = suspended_at;
                }
                LicenseEvent::LicenseUnsuspended { unsuspended_at } => {
                    row.suspension_reason = None;
                    row.updated_at = unsuspended_at;
                }
                LicenseEvent::LicenseRevoked { reason, revoked_at } => {
                    row.suspension_reason = None;
                    row.revoked_at = Some(revoked_at);
                    row.revocation_reason = Some(reason);
                    row.updated_at = revoked_at;
                }
                LicenseEvent::LicenseIssued { .. }
                | LicenseEvent::LicenseReserved { .. }
                | LicenseEvent::LicenseGranted { .. } => return false,
            }
            true
        }
    }
}

/// A new row, unless the license has one.
fn insert(rows: &mut HashMap<Uuid, LicenseRow>, row: LicenseRow) -> bool {
    if rows.contains_key(&row.id) {
        return false;
    }
    rows.insert(row.id, row);
    true
}

/// Writes the rows in one statement. A key that another license already has is refused by the
/// unique index, as it should be.
async fn store(conn: &mut PgConnection, rows: &[&LicenseRow]) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO licenses ({COLUMNS})
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::int[], $9::text[], $10::text[],
                              $11::timestamptz[], $12::timestamptz[], $13::uuid[], $14::text[],
                              $15::timestamptz[], $16::text[], $17::timestamptz[], $18::text[],
                              $19::text[], $20::timestamptz[], $21::text[], $22::jsonb[])
         ON CONFLICT (id) DO UPDATE
         SET subscription_id = EXCLUDED.subscription_id, item_id = EXCLUDED.item_id,
             status = EXCLUDED.status, deactivation_reason = EXCLUDED.deactivation_reason,
             updated_at = EXCLUDED.updated_at, used_site = EXCLUDED.used_site,
             activated_at = EXCLUDED.activated_at,
             suspension_reason = EXCLUDED.suspension_reason, revoked_at = EXCLUDED.revoked_at,
             revocation_reason = EXCLUDED.revocation_reason, policy_id = EXCLUDED.policy_id,
             expires_at = EXCLUDED.expires_at, machines = EXCLUDED.machines"
    ))
    .bind(crate::column!(rows, id))
    .bind(crate::column!(rows, key))
    .bind(crate::column!(rows, member_id))
    .bind(crate::column!(rows, subscription_id))
    .bind(crate::column!(rows, item_id))
    .bind(crate::column!(rows, purchase_type))
    .bind(crate::column!(rows, site))
    .bind(crate::column!(rows, seat))
    .bind(crate::column!(rows, status))
    .bind(crate::column!(rows, deactivation_reason))
    .bind(crate::column!(rows, issued_at))
    .bind(crate::column!(rows, updated_at))
    .bind(crate::column!(rows, purchase_id))
    .bind(crate::column!(rows, used_site))
    .bind(crate::column!(rows, activated_at))
    .bind(crate::column!(rows, suspension_reason))
    .bind(crate::column!(rows, revoked_at))
    .bind(crate::column!(rows, revocation_reason))
    .bind(crate::column!(rows, policy_id))
    .bind(crate::column!(rows, expires_at))
    .bind(crate::column!(rows, grant_note))
    .bind(crate::column!(rows, machines))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
