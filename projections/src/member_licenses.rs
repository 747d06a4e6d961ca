//! `member_licenses`: one row per license key, with its current status (`pending` until a
//! license purchase is paid, `active`, `inactive`, or `canceled` when the purchase was not paid)
//! and, while inactive or canceled, why; for a quantity key the domain it is activated on
//! (`used_site`, kept while inactive). Times are the events' own.

use aggregates::cqrs_es::Aggregate;
use aggregates::{License, LicenseEvent, LicenseStatus, PurchaseType};
use async_trait::async_trait;
use sqlx::PgConnection;

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
        for event in events {
            self.apply_event(conn, event).await?;
        }
        Ok(())
    }
}

impl MemberLicenses {
    /// Applies one event, in the batch's transaction.
    async fn apply_event(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != License::TYPE {
            return Ok(());
        }
        // The aggregate id is the license's UUID.
        let id = license_id(event)?;
        match event.decode::<LicenseEvent>()? {
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
            } => {
                // Conflicts on the id only: a key reused by another license is an error.
                sqlx::query(
                    "INSERT INTO licenses
                         (id, key, member_id, subscription_id, item_id, purchase_type, site, seat,
                          status, deactivation_reason, issued_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $10)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(key)
                .bind(member_id)
                .bind(subscription_id)
                .bind(item_id)
                .bind(purchase_type.as_str())
                .bind(site)
                .bind(seat.map(to_i32))
                .bind(LicenseStatus::Active.as_str())
                .bind(issued_at)
                .execute(&mut *conn)
                .await?;
            }
            LicenseEvent::LicenseReserved {
                key,
                member_id,
                subscription_id,
                purchase_id,
                seat,
                reserved_at,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO licenses
                         (id, key, member_id, subscription_id, item_id, purchase_type, site, seat,
                          status, deactivation_reason, issued_at, updated_at, purchase_id)
                     VALUES ($1, $2, $3, $4, NULL, $5, NULL, $6, $7, NULL, $8, $8, $9)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(key)
                .bind(member_id)
                .bind(subscription_id)
                .bind(PurchaseType::Quantity.as_str())
                .bind(to_i32(seat))
                .bind(LicenseStatus::Pending.as_str())
                .bind(reserved_at)
                .bind(purchase_id)
                .execute(&mut *conn)
                .await?;
            }
            LicenseEvent::PendingLicenseActivated {
                subscription_id,
                item_id,
                activated_at,
            } => {
                sqlx::query(
                    "UPDATE licenses SET status = $2, subscription_id = $3, item_id = $4,
                            deactivation_reason = NULL, updated_at = $5
                     WHERE id = $1",
                )
                .bind(id)
                .bind(LicenseStatus::Active.as_str())
                .bind(subscription_id)
                .bind(item_id)
                .bind(activated_at)
                .execute(&mut *conn)
                .await?;
            }
            LicenseEvent::LicenseCanceled {
                reason,
                canceled_at,
            } => {
                sqlx::query(
                    "UPDATE licenses SET status = $2, deactivation_reason = $3, updated_at = $4
                     WHERE id = $1",
                )
                .bind(id)
                .bind(LicenseStatus::Canceled.as_str())
                .bind(reason.as_str())
                .bind(canceled_at)
                .execute(&mut *conn)
                .await?;
            }
            LicenseEvent::LicenseDeactivated {
                reason,
                deactivated_at,
            } => {
                sqlx::query(
                    "UPDATE licenses SET status = $2, deactivation_reason = $3, updated_at = $4
                     WHERE id = $1",
                )
                .bind(id)
                .bind(LicenseStatus::Inactive.as_str())
                .bind(reason.as_str())
                .bind(deactivated_at)
                .execute(&mut *conn)
                .await?;
            }
            LicenseEvent::LicenseReactivated { reactivated_at } => {
                sqlx::query(
                    "UPDATE licenses SET status = $2, deactivation_reason = NULL, updated_at = $3
                     WHERE id = $1",
                )
                .bind(id)
                .bind(LicenseStatus::Active.as_str())
                .bind(reactivated_at)
                .execute(&mut *conn)
                .await?;
            }
            LicenseEvent::LicenseActivatedOnDomain {
                domain,
                activated_at,
            } => {
                sqlx::query(
                    "UPDATE licenses SET used_site = $2, activated_at = $3, updated_at = $3
                     WHERE id = $1",
                )
                .bind(id)
                .bind(domain)
                .bind(activated_at)
                .execute(&mut *conn)
                .await?;
            }
            LicenseEvent::LicenseDomainReleased { released_at, .. } => {
                sqlx::query(
                    "UPDATE licenses SET used_site = NULL, activated_at = NULL, updated_at = $2
                     WHERE id = $1",
                )
                .bind(id)
                .bind(released_at)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}
