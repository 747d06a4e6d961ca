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
    /// Issues a license an operator grants without Stripe (a trial, a partner, support): a key
    /// activated on domains like a seat's, under `policy_id` when given, ending at `expires_at`
    /// when given. A no-op when the license exists.
    GrantLicense {
        license_id: Uuid,
        key: LicenseKey,
        member_id: Uuid,
        policy_id: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        /// Why, in words (shown to operators).
        note: Option<String>,
        at: DateTime<Utc>,
    },
    /// Puts the license under another policy (`None`: none, today's rules) with the expiry
    /// that policy gives it. A no-op when both are unchanged; refused once revoked.
    ChangePolicy {
        policy_id: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    /// Extends or shortens the license's own expiry (`None`: it does not expire on its own).
    /// A no-op when unchanged; refused once revoked.
    ChangeExpiry {
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    /// Activates a quantity license on a domain (a machine), or on every name under one when
    /// `wildcard` (`*.example.com`; the caller checks that the policy allows patterns). A no-op
    /// when activated there already (see [`License::same_site`](super::License::same_site));
    /// refused for a site license, a license that is held or not active, or one activated on
    /// `max_machines` domains already, counting none of `stale` (activations whose heartbeat
    /// stopped: they are expired first, as [`LicenseCommand::ExpireMachine`] does).
    ActivateOnDomain {
        domain: SiteDomain,
        wildcard: bool,
        /// The client's address, recorded with the activation.
        ip: Option<String>,
        max_machines: u32,
        /// Activations whose heartbeat stopped, with when each was last seen.
        stale: Vec<(String, DateTime<Utc>)>,
        at: DateTime<Utc>,
    },
    /// Releases the activation on `domain` (the same site as [`License::same_site`] says), or
    /// every activation when `None`. A no-op when there is none; allowed while inactive.
    ReleaseDomain {
        domain: Option<String>,
        at: DateTime<Utc>,
    },
    /// Frees an activation whose heartbeat stopped (last seen at `last_seen_at`). A no-op when
    /// the license is not activated on `domain`.
    ExpireMachine {
        domain: String,
        last_seen_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
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
    /// A one-machine key activated elsewhere (today's rule for keys without a policy).
    #[error("the license is already activated on {domain}")]
    AlreadyActivated { domain: String },
    /// Its policy's machine limit is reached: release one first.
    #[error("the license is activated on {limit} domain(s), its policy's limit")]
    TooManyMachines { limit: u32 },
    #[error("the license is suspended")]
    Suspended,
    #[error("the license is revoked")]
    Revoked,
}
