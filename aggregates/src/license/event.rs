//! What happened to a license, as stored: one variant per event type, all at version 1.0.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CancelReason, DeactivationReason};
use crate::billing::PurchaseType;
// For the doc link only; the event stores the domain as text.
#[cfg(doc)]
use crate::values::SiteDomain;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum LicenseEvent {
    LicenseIssued {
        license_id: Uuid,
        key: String,
        member_id: Uuid,
        subscription_id: String,
        item_id: String,
        purchase_type: PurchaseType,
        site: Option<String>,
        seat: Option<u32>,
        issued_at: DateTime<Utc>,
    },
    /// A pending key of a license purchase (status `pending`), before payment.
    LicenseReserved {
        license_id: Uuid,
        key: String,
        member_id: Uuid,
        subscription_id: String,
        purchase_id: Uuid,
        seat: u32,
        reserved_at: DateTime<Utc>,
    },
    /// A reserved key's purchase was paid: it is active, attached to the subscription's item.
    PendingLicenseActivated {
        subscription_id: String,
        item_id: String,
        activated_at: DateTime<Utc>,
    },
    /// A reserved key's purchase was not paid.
    LicenseCanceled {
        reason: CancelReason,
        canceled_at: DateTime<Utc>,
    },
    LicenseDeactivated {
        reason: DeactivationReason,
        deactivated_at: DateTime<Utc>,
    },
    LicenseReactivated {
        reactivated_at: DateTime<Utc>,
    },
    /// A quantity license was bound to `domain` (normalised, as [`SiteDomain`] makes it).
    LicenseActivatedOnDomain {
        domain: String,
        activated_at: DateTime<Utc>,
    },
    /// The license was unbound from `domain`.
    LicenseDomainReleased {
        domain: String,
        released_at: DateTime<Utc>,
    },
    /// An operator held the license: it does not validate until unsuspended.
    LicenseSuspended {
        reason: String,
        suspended_at: DateTime<Utc>,
    },
    LicenseUnsuspended {
        unsuspended_at: DateTime<Utc>,
    },
    /// The license ended for good.
    LicenseRevoked {
        reason: String,
        revoked_at: DateTime<Utc>,
    },
}

impl LicenseEvent {
    pub const ISSUED: &'static str = "LicenseIssued";
    pub const RESERVED: &'static str = "LicenseReserved";
    pub const PENDING_ACTIVATED: &'static str = "PendingLicenseActivated";
    pub const CANCELED: &'static str = "LicenseCanceled";
    pub const DEACTIVATED: &'static str = "LicenseDeactivated";
    pub const REACTIVATED: &'static str = "LicenseReactivated";
    pub const ACTIVATED_ON_DOMAIN: &'static str = "LicenseActivatedOnDomain";
    pub const DOMAIN_RELEASED: &'static str = "LicenseDomainReleased";
    pub const SUSPENDED: &'static str = "LicenseSuspended";
    pub const UNSUSPENDED: &'static str = "LicenseUnsuspended";
    pub const REVOKED: &'static str = "LicenseRevoked";
}

impl DomainEvent for LicenseEvent {
    fn event_type(&self) -> String {
        match self {
            Self::LicenseIssued { .. } => Self::ISSUED,
            Self::LicenseReserved { .. } => Self::RESERVED,
            Self::PendingLicenseActivated { .. } => Self::PENDING_ACTIVATED,
            Self::LicenseCanceled { .. } => Self::CANCELED,
            Self::LicenseDeactivated { .. } => Self::DEACTIVATED,
            Self::LicenseReactivated { .. } => Self::REACTIVATED,
            Self::LicenseActivatedOnDomain { .. } => Self::ACTIVATED_ON_DOMAIN,
            Self::LicenseDomainReleased { .. } => Self::DOMAIN_RELEASED,
            Self::LicenseSuspended { .. } => Self::SUSPENDED,
            Self::LicenseUnsuspended { .. } => Self::UNSUSPENDED,
            Self::LicenseRevoked { .. } => Self::REVOKED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
