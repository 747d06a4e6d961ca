//! What can be asked of a license, and why it refuses.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{CancelReason, DeactivationReason, LicenseKey};
use crate::billing::PurchaseType;
use crate::values::SiteDomain;

#[derive(Debug, Clone, PartialEq)]
pub enum LicenseCommand {
    /// Issues the license, or activates it when it is a reserved (pending or canceled) key: the
    /// purchase was paid and `item_id` is its item. A no-op when it is issued already.
    IssueLicense {
        license_id: Uuid,
        key: LicenseKey,
        member_id: Uuid,
        subscription_id: String,
        item_id: String,
        purchase_type: PurchaseType,
        site: Option<String>,
        /// For quantity purchases: which seat (1-based).
        seat: Option<u32>,
        at: DateTime<Utc>,
    },
    /// Reserves a pending key for seat `seat` of license purchase `purchase_id`, before the
    /// member pays. A no-op when the license exists.
    ReserveLicense {
        license_id: Uuid,
        key: LicenseKey,
        member_id: Uuid,
        /// The subscription the purchase adds to.
        subscription_id: String,
        purchase_id: Uuid,
        seat: u32,
        at: DateTime<Utc>,
    },
    /// Cancels a pending key. A no-op unless pending (a paid key stays active).
    CancelPendingLicense {
        reason: CancelReason,
        at: DateTime<Utc>,
    },
    /// A no-op unless active.
    DeactivateLicense {
        reason: DeactivationReason,
        at: DateTime<Utc>,
    },
    /// A no-op when already active.
    ReactivateLicense { at: DateTime<Utc> },
    /// Binds a quantity license to the domain it is used on (one domain per key). A no-op when
    /// bound to that domain already (see [`License::same_site`](super::License::same_site));
    /// refused for a site license, an inactive license, or one bound to another domain.
    ActivateOnDomain {
        domain: SiteDomain,
        at: DateTime<Utc>,
    },
    /// Unbinds the license from its domain. A no-op when it has none; allowed while inactive.
    ReleaseDomain { at: DateTime<Utc> },
    /// An operator holds the license (abuse, a chargeback, a support case): it stops
    /// validating whatever its subscription does, until unsuspended. A no-op when suspended;
    /// refused once revoked.
    SuspendLicense { reason: String, at: DateTime<Utc> },
    /// Lifts a suspension. A no-op unless suspended; refused once revoked.
    UnsuspendLicense { at: DateTime<Utc> },
    /// Ends the license for good: it never validates again. A no-op when revoked already.
    RevokeLicense { reason: String, at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    #[error("the license does not exist")]
    NotFound,
    /// Only quantity licenses are activated on a domain; a site license is bound to its site.
    #[error("a site license is bound to its site and cannot be activated on a domain")]
    SiteLicense,
    #[error("the license is not active")]
    Inactive,
    /// A reserved key whose purchase is not paid yet.
    #[error("the license is not paid for yet")]
    Pending,
    #[error("the license is already activated on {domain}")]
    AlreadyActivated { domain: String },
    #[error("the license is suspended")]
    Suspended,
    #[error("the license is revoked")]
    Revoked,
}
