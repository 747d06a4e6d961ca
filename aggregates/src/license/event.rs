//! What happened to a license, as stored: one variant per event type, at version 1.0 but
//! `LicenseActivatedOnDomain` (1.1).

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
    /// An operator granted the license without Stripe (1.0): a key activated on domains, under
    /// `policy_id`, ending at `expires_at` (when given).
    LicenseGranted {
        license_id: Uuid,
        key: String,
        member_id: Uuid,
        policy_id: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        note: Option<String>,
        granted_at: DateTime<Utc>,
    },
    /// The license was put under `policy_id` (`None`: no policy), with the expiry that policy
    /// gives it: by an operator, or at issue for a Stripe key whose product has a policy.
    LicensePolicyChanged {
        policy_id: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        changed_at: DateTime<Utc>,
    },
    /// An operator extended or shortened the license's own expiry (`None`: never on its own).
    LicenseExpiryChanged {
        expires_at: Option<DateTime<Utc>>,
        changed_at: DateTime<Utc>,
    },
    /// A quantity license was activated on `domain` (normalised, as [`SiteDomain`] makes it;
    /// `*.example.com` for a pattern), from address `ip`. 1.1 added `ip` (1.0: without it).
    LicenseActivatedOnDomain {
        domain: String,
        #[serde(default)]
        ip: Option<String>,
        activated_at: DateTime<Utc>,
    },
    /// The license was released from `domain`.
    LicenseDomainReleased {
        domain: String,
        released_at: DateTime<Utc>,
    },
    /// The activation on `domain` was freed: no heartbeat since `last_seen_at`, longer than its
    /// policy allows.
    LicenseMachineExpired {
        domain: String,
        last_seen_at: DateTime<Utc>,
        expired_at: DateTime<Utc>,
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
    pub const GRANTED: &'static str = "LicenseGranted";
    pub const POLICY_CHANGED: &'static str = "LicensePolicyChanged";
    pub const EXPIRY_CHANGED: &'static str = "LicenseExpiryChanged";
    pub const MACHINE_EXPIRED: &'static str = "LicenseMachineExpired";
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
            Self::LicenseGranted { .. } => Self::GRANTED,
            Self::LicensePolicyChanged { .. } => Self::POLICY_CHANGED,
            Self::LicenseExpiryChanged { .. } => Self::EXPIRY_CHANGED,
            Self::LicenseMachineExpired { .. } => Self::MACHINE_EXPIRED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::LicenseActivatedOnDomain { .. } => "1.1",
            _ => "1.0",
        }
        .to_owned()
    }
}
