//! The License aggregate: one license key, issued because of one cause (a site item, one seat
//! of a quantity item, or one seat of a license purchase). Its id is derived from that cause, so
//! a repeated cause (a webhook delivered twice, a policy re-run) cannot issue a second key.
//!
//! A license purchase (`POST /v1/me/license-purchases`) reserves its keys before the member
//! pays: they are `pending` until the payment adds their item to the subscription (then
//! `active`), or `canceled` when the checkout expires unpaid.

use std::fmt;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::billing::PurchaseType;
use crate::values::SiteDomain;

/// `KEY-XXXX-XXXX-XXXX`, each X from a 32-character alphabet without look-alikes (60 bits).
/// Generated outside the aggregate (CSPRNG, reserved unique in a lookup table) and passed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct LicenseKey(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LicenseStatus {
    /// Reserved by a license purchase that is not paid yet.
    Pending,
    Active,
    Inactive,
    /// A pending key whose purchase was never paid. Final, unless a payment still arrives.
    Canceled,
}

/// Why a pending key was canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The purchase's Checkout Session expired unpaid.
    CheckoutExpired,
    /// The purchase never got a Checkout Session (Stripe was unreachable) and the member
    /// started another one instead.
    CheckoutAbandoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeactivationReason {
    /// The site's item was removed from the subscription.
    ItemRemoved,
    /// A quantity item's quantity went below this seat.
    QuantityReduced,
    SubscriptionCanceled,
    /// The subscription is `unpaid`, `incomplete`, `incomplete_expired` or `paused`.
    SubscriptionInactive,
    /// The item turned out to be a site's (a Payment Link named it after the item arrived):
    /// the site's license replaces the seat key issued for it meanwhile.
    Replaced,
}

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
    /// bound to that domain already (see [`License::same_site`]); refused for a site license,
    /// an inactive license, or one bound to another domain.
    ActivateOnDomain {
        domain: SiteDomain,
        at: DateTime<Utc>,
    },
    /// Unbinds the license from its domain. A no-op when it has none; allowed while inactive.
    ReleaseDomain { at: DateTime<Utc> },
}

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
}

/// Why a text is not a [`LicenseKey`]; the message is meant for an API client.
///
/// Its own type rather than [`crate::ValueError`], whose constructor is private to `values`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseKeyError {
    #[error("must look like KEY-XXXX-XXXX-XXXX")]
    WrongShape,
    #[error(
        "contains {0:?}, which license keys never use (they use A-Z without I and O, and 2-9)"
    )]
    InvalidCharacter(char),
}

impl LicenseKey {
    /// The characters of a key: A-Z and 2-9 without the look-alikes 0/O and 1/I. 32 of them,
    /// so a random byte maps to one without bias (256 % 32 == 0).
    pub const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

    const PREFIX: &str = "KEY-";
    const GROUPS: usize = 3;
    const GROUP_LEN: usize = 4;
    /// `KEY-XXXX-XXXX-XXXX`
    const LEN: usize = 4 + 3 * 5 - 1;

    /// Accepts exactly `KEY-XXXX-XXXX-XXXX` with each X from [`Self::ALPHABET`], in any case
    /// (normalised to upper case). No trimming: the caller trims if it wants to.
    pub fn parse(raw: &str) -> Result<Self, LicenseKeyError> {
        let key = raw.to_ascii_uppercase();
        let Some(groups) = key.strip_prefix(Self::PREFIX) else {
            return Err(LicenseKeyError::WrongShape);
        };
        if key.len() != Self::LEN {
            return Err(LicenseKeyError::WrongShape);
        }
        let groups: Vec<&str> = groups.split('-').collect();
        if groups.len() != Self::GROUPS || groups.iter().any(|g| g.len() != Self::GROUP_LEN) {
            return Err(LicenseKeyError::WrongShape);
        }
        for c in groups.iter().flat_map(|g| g.chars()) {
            if !u8::try_from(c).is_ok_and(|b| Self::ALPHABET.contains(&b)) {
                return Err(LicenseKeyError::InvalidCharacter(c));
            }
        }
        Ok(Self(key))
    }

    /// A key from 12 random bytes, each mapped to `ALPHABET[b % 32]`. The caller supplies the
    /// bytes from a CSPRNG (and reserves the key as unique).
    pub fn from_random_bytes(bytes: [u8; 12]) -> Self {
        let mut key = String::with_capacity(Self::LEN);
        key.push_str(Self::PREFIX);
        for (i, b) in bytes.iter().enumerate() {
            if i > 0 && i % Self::GROUP_LEN == 0 {
                key.push('-');
            }
            // In bounds: the index is below 32.
            key.push(char::from(Self::ALPHABET[usize::from(b % 32)]));
        }
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LicenseKey {
    type Error = LicenseKeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<LicenseKey> for String {
    fn from(value: LicenseKey) -> Self {
        value.0
    }
}

impl fmt::Display for LicenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl LicenseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Canceled => "canceled",
        }
    }
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CheckoutExpired => "checkout_expired",
            Self::CheckoutAbandoned => "checkout_abandoned",
        }
    }
}

impl DeactivationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ItemRemoved => "item_removed",
            Self::QuantityReduced => "quantity_reduced",
            Self::SubscriptionCanceled => "subscription_canceled",
            Self::SubscriptionInactive => "subscription_inactive",
            Self::Replaced => "replaced",
        }
    }
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
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
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
}

/// What an issued license is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
struct Issued {
    license_id: Uuid,
    key: String,
    member_id: Uuid,
    subscription_id: String,
    /// `None` while a reserved key is not paid for.
    item_id: Option<String>,
    /// The license purchase that reserved it, if one did.
    #[serde(default)]
    purchase_id: Option<Uuid>,
    purchase_type: PurchaseType,
    site: Option<String>,
    seat: Option<u32>,
    status: LicenseStatus,
    /// Why it was deactivated last; `None` while it never was.
    deactivation_reason: Option<DeactivationReason>,
    /// The domain a quantity license is activated on. Kept while the license is inactive, so
    /// a reactivation restores it. Defaulted: states stored before activation existed load.
    #[serde(default)]
    activated_domain: Option<String>,
    #[serde(default)]
    activated_at: Option<DateTime<Utc>>,
}

/// One license key for one cause. The id is [`License::id_for_site`] or
/// [`License::id_for_seat`] of that cause.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct License {
    issued: Option<Issued>,
}

impl License {
    /// The UUIDv5 namespace of license ids. It must never change: ids derived from it are
    /// stored as aggregate ids, and a change would issue every license a second time.
    pub const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1c_9a3e_52b4_4f0e_9c77_1e0b_4a2d_8f35);

    /// The license of a site item: UUIDv5 of `site:{item_id}` in [`Self::ID_NAMESPACE`].
    pub fn id_for_site(subscription_item_id: &str) -> Uuid {
        Uuid::new_v5(
            &Self::ID_NAMESPACE,
            format!("site:{subscription_item_id}").as_bytes(),
        )
    }

    /// The license of seat `seat` (1-based) of a quantity item: UUIDv5 of
    /// `seat:{item_id}:{seat}` in [`Self::ID_NAMESPACE`].
    pub fn id_for_seat(subscription_item_id: &str, seat: u32) -> Uuid {
        Uuid::new_v5(
            &Self::ID_NAMESPACE,
            format!("seat:{subscription_item_id}:{seat}").as_bytes(),
        )
    }

    /// Seat `seat` (1-based) of license purchase `purchase_id`: UUIDv5 of
    /// `purchase:{purchase_id}:{seat}` in [`Self::ID_NAMESPACE`].
    pub fn id_for_purchase(purchase_id: Uuid, seat: u32) -> Uuid {
        Uuid::new_v5(
            &Self::ID_NAMESPACE,
            format!("purchase:{purchase_id}:{seat}").as_bytes(),
        )
    }

    /// Whether the license was issued (or reserved).
    pub fn exists(&self) -> bool {
        self.issued.is_some()
    }

    pub fn status(&self) -> Option<LicenseStatus> {
        self.issued.as_ref().map(|i| i.status)
    }

    pub fn key(&self) -> Option<&str> {
        self.issued.as_ref().map(|i| i.key.as_str())
    }

    pub fn member_id(&self) -> Option<Uuid> {
        self.issued.as_ref().map(|i| i.member_id)
    }

    pub fn license_id(&self) -> Option<Uuid> {
        self.issued.as_ref().map(|i| i.license_id)
    }

    pub fn subscription_id(&self) -> Option<&str> {
        self.issued.as_ref().map(|i| i.subscription_id.as_str())
    }

    /// The subscription item it belongs to; `None` for a reserved key not paid for yet.
    pub fn item_id(&self) -> Option<&str> {
        self.issued.as_ref().and_then(|i| i.item_id.as_deref())
    }

    /// The license purchase that reserved it.
    pub fn purchase_id(&self) -> Option<Uuid> {
        self.issued.as_ref().and_then(|i| i.purchase_id)
    }

    pub fn purchase_type(&self) -> Option<PurchaseType> {
        self.issued.as_ref().map(|i| i.purchase_type)
    }

    pub fn site(&self) -> Option<&str> {
        self.issued.as_ref().and_then(|i| i.site.as_deref())
    }

    pub fn seat(&self) -> Option<u32> {
        self.issued.as_ref().and_then(|i| i.seat)
    }

    /// Why the license was deactivated last (kept after a reactivation).
    pub fn deactivation_reason(&self) -> Option<DeactivationReason> {
        self.issued.as_ref().and_then(|i| i.deactivation_reason)
    }

    /// The domain a quantity license is activated on (kept while it is inactive).
    pub fn activated_domain(&self) -> Option<&str> {
        self.issued
            .as_ref()
            .and_then(|i| i.activated_domain.as_deref())
    }

    pub fn activated_at(&self) -> Option<DateTime<Utc>> {
        self.issued.as_ref().and_then(|i| i.activated_at)
    }

    /// Whether two normalised domains are the same site for licensing: equal ignoring ASCII
    /// case once one leading `www.` is dropped from each (`www.example.com` is
    /// `example.com`). Other subdomains are other sites (`shop.example.com` is not
    /// `example.com`), and `www.com` keeps its `www`.
    pub fn same_site(a: &str, b: &str) -> bool {
        fn bare(domain: &str) -> &str {
            match domain.get(..4).zip(domain.get(4..)) {
                Some((www, rest)) if www.eq_ignore_ascii_case("www.") && rest.contains('.') => rest,
                _ => domain,
            }
        }
        bare(a).eq_ignore_ascii_case(bare(b))
    }
}

impl Aggregate for License {
    const TYPE: &'static str = "License";
    type Command = LicenseCommand;
    type Event = LicenseEvent;
    type Error = LicenseError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            LicenseCommand::IssueLicense {
                license_id,
                key,
                member_id,
                subscription_id,
                item_id,
                purchase_type,
                site,
                seat,
                at,
            } => {
                // Idempotent: the first key stays, even when a retry brings another one.
                match self.status() {
                    None => {
                        let event = LicenseEvent::LicenseIssued {
                            license_id,
                            key: key.into(),
                            member_id,
                            subscription_id,
                            item_id,
                            purchase_type,
                            site,
                            seat,
                            issued_at: at,
                        };
                        sink.write(event, self).await;
                    }
                    // Paid: a payment that arrives even after its checkout was given up on
                    // still gets its keys.
                    Some(LicenseStatus::Pending | LicenseStatus::Canceled) => {
                        let event = LicenseEvent::PendingLicenseActivated {
                            subscription_id,
                            item_id,
                            activated_at: at,
                        };
                        sink.write(event, self).await;
                    }
                    Some(LicenseStatus::Active | LicenseStatus::Inactive) => {}
                }
            }
            LicenseCommand::ReserveLicense {
                license_id,
                key,
                member_id,
                subscription_id,
                purchase_id,
                seat,
                at,
            } => {
                if !self.exists() {
                    let event = LicenseEvent::LicenseReserved {
                        license_id,
                        key: key.into(),
                        member_id,
                        subscription_id,
                        purchase_id,
                        seat,
                        reserved_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            LicenseCommand::CancelPendingLicense { reason, at } => {
                let status = self.status().ok_or(LicenseError::NotFound)?;
                if status == LicenseStatus::Pending {
                    let event = LicenseEvent::LicenseCanceled {
                        reason,
                        canceled_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            LicenseCommand::DeactivateLicense { reason, at } => {
                let status = self.status().ok_or(LicenseError::NotFound)?;
                if status == LicenseStatus::Active {
                    let event = LicenseEvent::LicenseDeactivated {
                        reason,
                        deactivated_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            LicenseCommand::ReactivateLicense { at } => {
                let status = self.status().ok_or(LicenseError::NotFound)?;
                if status == LicenseStatus::Inactive {
                    let event = LicenseEvent::LicenseReactivated { reactivated_at: at };
                    sink.write(event, self).await;
                }
            }
            LicenseCommand::ActivateOnDomain { domain, at } => {
                let issued = self.issued.as_ref().ok_or(LicenseError::NotFound)?;
                if issued.purchase_type != PurchaseType::Quantity {
                    return Err(LicenseError::SiteLicense);
                }
                match issued.status {
                    LicenseStatus::Active => {}
                    LicenseStatus::Pending => return Err(LicenseError::Pending),
                    LicenseStatus::Inactive | LicenseStatus::Canceled => {
                        return Err(LicenseError::Inactive)
                    }
                }
                match &issued.activated_domain {
                    Some(current) if Self::same_site(current, domain.as_str()) => {}
                    Some(current) => {
                        return Err(LicenseError::AlreadyActivated {
                            domain: current.clone(),
                        })
                    }
                    None => {
                        let event = LicenseEvent::LicenseActivatedOnDomain {
                            domain: domain.into(),
                            activated_at: at,
                        };
                        sink.write(event, self).await;
                    }
                }
            }
            LicenseCommand::ReleaseDomain { at } => {
                let issued = self.issued.as_ref().ok_or(LicenseError::NotFound)?;
                if let Some(domain) = issued.activated_domain.clone() {
                    let event = LicenseEvent::LicenseDomainReleased {
                        domain,
                        released_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            LicenseEvent::LicenseIssued {
                license_id,
                key,
                member_id,
                subscription_id,
                item_id,
                purchase_type,
                site,
                seat,
                ..
            } => {
                self.issued = Some(Issued {
                    license_id,
                    key,
                    member_id,
                    subscription_id,
                    item_id: Some(item_id),
                    purchase_id: None,
                    purchase_type,
                    site,
                    seat,
                    status: LicenseStatus::Active,
                    deactivation_reason: None,
                    activated_domain: None,
                    activated_at: None,
                });
            }
            LicenseEvent::LicenseReserved {
                license_id,
                key,
                member_id,
                subscription_id,
                purchase_id,
                seat,
                ..
            } => {
                self.issued = Some(Issued {
                    license_id,
                    key,
                    member_id,
                    subscription_id,
                    item_id: None,
                    purchase_id: Some(purchase_id),
                    purchase_type: PurchaseType::Quantity,
                    site: None,
                    seat: Some(seat),
                    status: LicenseStatus::Pending,
                    deactivation_reason: None,
                    activated_domain: None,
                    activated_at: None,
                });
            }
            LicenseEvent::PendingLicenseActivated {
                subscription_id,
                item_id,
                ..
            } => {
                if let Some(issued) = &mut self.issued {
                    issued.subscription_id = subscription_id;
                    issued.item_id = Some(item_id);
                    issued.status = LicenseStatus::Active;
                }
            }
            LicenseEvent::LicenseCanceled { .. } => {
                if let Some(issued) = &mut self.issued {
                    issued.status = LicenseStatus::Canceled;
                }
            }
            LicenseEvent::LicenseDeactivated { reason, .. } => {
                if let Some(issued) = &mut self.issued {
                    issued.status = LicenseStatus::Inactive;
                    issued.deactivation_reason = Some(reason);
                }
            }
            LicenseEvent::LicenseReactivated { .. } => {
                if let Some(issued) = &mut self.issued {
                    issued.status = LicenseStatus::Active;
                }
            }
            LicenseEvent::LicenseActivatedOnDomain {
                domain,
                activated_at,
            } => {
                if let Some(issued) = &mut self.issued {
                    issued.activated_domain = Some(domain);
                    issued.activated_at = Some(activated_at);
                }
            }
            LicenseEvent::LicenseDomainReleased { .. } => {
                if let Some(issued) = &mut self.issued {
                    issued.activated_domain = None;
                    issued.activated_at = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;

    type LicenseTest = TestFramework<License>;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    fn member() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
    }

    fn key(raw: &str) -> LicenseKey {
        LicenseKey::parse(raw).expect("valid key")
    }

    fn issue(raw_key: &str) -> LicenseCommand {
        LicenseCommand::IssueLicense {
            license_id: License::id_for_site("si_1"),
            key: key(raw_key),
            member_id: member(),
            subscription_id: "sub_1".into(),
            item_id: "si_1".into(),
            purchase_type: PurchaseType::Site,
            site: Some("example.com".into()),
            seat: None,
            at: at(),
        }
    }

    fn issued() -> LicenseEvent {
        LicenseEvent::LicenseIssued {
            license_id: License::id_for_site("si_1"),
            key: "KEY-ABCD-EFGH-JK23".into(),
            member_id: member(),
            subscription_id: "sub_1".into(),
            item_id: "si_1".into(),
            purchase_type: PurchaseType::Site,
            site: Some("example.com".into()),
            seat: None,
            issued_at: at(),
        }
    }

    fn deactivated() -> LicenseEvent {
        LicenseEvent::LicenseDeactivated {
            reason: DeactivationReason::ItemRemoved,
            deactivated_at: at(),
        }
    }

    fn deactivate() -> LicenseCommand {
        LicenseCommand::DeactivateLicense {
            reason: DeactivationReason::ItemRemoved,
            at: at(),
        }
    }

    #[test]
    fn issue_license_emits_license_issued() {
        LicenseTest::with(())
            .given_no_previous_events()
            .when(issue("KEY-ABCD-EFGH-JK23"))
            .then_expect_events(vec![issued()]);
    }

    #[test]
    fn issuing_an_issued_license_again_is_a_no_op_even_with_another_key() {
        LicenseTest::with(())
            .given(vec![issued()])
            .when(issue("KEY-ABCD-EFGH-JK23"))
            .then_expect_events(vec![]);
        LicenseTest::with(())
            .given(vec![issued()])
            .when(issue("KEY-ZZZZ-ZZZZ-ZZZZ"))
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_issued_license_is_active_with_its_first_key() {
        let mut license = License::default();
        license.apply(issued());
        assert!(license.exists());
        assert_eq!(license.status(), Some(LicenseStatus::Active));
        assert_eq!(license.key(), Some("KEY-ABCD-EFGH-JK23"));
        assert_eq!(license.member_id(), Some(member()));
        assert_eq!(license.site(), Some("example.com"));
        license.apply(deactivated());
        assert_eq!(license.status(), Some(LicenseStatus::Inactive));
        assert_eq!(
            license.deactivation_reason(),
            Some(DeactivationReason::ItemRemoved)
        );
    }

    #[test]
    fn the_state_survives_a_snapshot_round_trip() {
        let mut license = License::default();
        license.apply(issued());
        license.apply(deactivated());
        let json = serde_json::to_string(&license).expect("serialises");
        let back: License = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, license);
    }

    #[test]
    fn deactivating_an_active_license_emits_license_deactivated() {
        LicenseTest::with(())
            .given(vec![issued()])
            .when(deactivate())
            .then_expect_events(vec![deactivated()]);
    }

    #[test]
    fn deactivating_an_inactive_license_emits_nothing() {
        LicenseTest::with(())
            .given(vec![issued(), deactivated()])
            .when(LicenseCommand::DeactivateLicense {
                reason: DeactivationReason::SubscriptionCanceled,
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn reactivating_an_inactive_license_emits_license_reactivated() {
        LicenseTest::with(())
            .given(vec![issued(), deactivated()])
            .when(LicenseCommand::ReactivateLicense { at: at() })
            .then_expect_events(vec![LicenseEvent::LicenseReactivated {
                reactivated_at: at(),
            }]);
    }

    #[test]
    fn reactivating_an_active_license_emits_nothing() {
        LicenseTest::with(())
            .given(vec![issued()])
            .when(LicenseCommand::ReactivateLicense { at: at() })
            .then_expect_events(vec![]);
        LicenseTest::with(())
            .given(vec![
                issued(),
                deactivated(),
                LicenseEvent::LicenseReactivated {
                    reactivated_at: at(),
                },
            ])
            .when(LicenseCommand::ReactivateLicense { at: at() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn deactivating_an_unknown_license_is_refused() {
        LicenseTest::with(())
            .given_no_previous_events()
            .when(deactivate())
            .then_expect_error(LicenseError::NotFound);
    }

    #[test]
    fn reactivating_an_unknown_license_is_refused() {
        LicenseTest::with(())
            .given_no_previous_events()
            .when(LicenseCommand::ReactivateLicense { at: at() })
            .then_expect_error(LicenseError::NotFound);
    }

    fn seat_issued() -> LicenseEvent {
        LicenseEvent::LicenseIssued {
            license_id: License::id_for_seat("si_q", 1),
            key: "KEY-QQQQ-EFGH-JK23".into(),
            member_id: member(),
            subscription_id: "sub_1".into(),
            item_id: "si_q".into(),
            purchase_type: PurchaseType::Quantity,
            site: None,
            seat: Some(1),
            issued_at: at(),
        }
    }

    fn domain(raw: &str) -> SiteDomain {
        SiteDomain::parse(raw).expect("valid domain")
    }

    fn activate(raw: &str) -> LicenseCommand {
        LicenseCommand::ActivateOnDomain {
            domain: domain(raw),
            at: at(),
        }
    }

    fn activated(domain: &str) -> LicenseEvent {
        LicenseEvent::LicenseActivatedOnDomain {
            domain: domain.into(),
            activated_at: at(),
        }
    }

    fn released(domain: &str) -> LicenseEvent {
        LicenseEvent::LicenseDomainReleased {
            domain: domain.into(),
            released_at: at(),
        }
    }

    fn reactivated() -> LicenseEvent {
        LicenseEvent::LicenseReactivated {
            reactivated_at: at(),
        }
    }

    #[test]
    fn activating_an_active_quantity_license_binds_it_to_the_normalised_domain() {
        LicenseTest::with(())
            .given(vec![seat_issued()])
            .when(activate("https://Shop.Example.com/wp-admin"))
            .then_expect_events(vec![activated("shop.example.com")]);
    }

    #[test]
    fn activating_on_the_same_domain_again_is_a_no_op() {
        LicenseTest::with(())
            .given(vec![seat_issued(), activated("shop.example.com")])
            .when(activate("SHOP.example.com"))
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_www_variant_is_the_same_domain() {
        LicenseTest::with(())
            .given(vec![seat_issued(), activated("example.com")])
            .when(activate("www.example.com"))
            .then_expect_events(vec![]);
        LicenseTest::with(())
            .given(vec![seat_issued(), activated("www.example.com")])
            .when(activate("example.com"))
            .then_expect_events(vec![]);
    }

    #[test]
    fn activating_on_another_domain_while_one_is_set_is_refused() {
        LicenseTest::with(())
            .given(vec![seat_issued(), activated("shop.example.com")])
            .when(activate("other.example.com"))
            .then_expect_error(LicenseError::AlreadyActivated {
                domain: "shop.example.com".into(),
            });
    }

    #[test]
    fn a_site_license_cannot_be_activated_on_a_domain() {
        LicenseTest::with(())
            .given(vec![issued()])
            .when(activate("example.com"))
            .then_expect_error(LicenseError::SiteLicense);
        LicenseTest::with(())
            .given(vec![issued()])
            .when(activate("other.example.com"))
            .then_expect_error(LicenseError::SiteLicense);
    }

    #[test]
    fn an_inactive_license_cannot_be_activated() {
        LicenseTest::with(())
            .given(vec![
                seat_issued(),
                LicenseEvent::LicenseDeactivated {
                    reason: DeactivationReason::QuantityReduced,
                    deactivated_at: at(),
                },
            ])
            .when(activate("shop.example.com"))
            .then_expect_error(LicenseError::Inactive);
    }

    #[test]
    fn activating_an_unknown_license_is_refused() {
        LicenseTest::with(())
            .given_no_previous_events()
            .when(activate("shop.example.com"))
            .then_expect_error(LicenseError::NotFound);
    }

    #[test]
    fn releasing_unbinds_the_domain_so_another_can_be_activated() {
        LicenseTest::with(())
            .given(vec![seat_issued(), activated("shop.example.com")])
            .when(LicenseCommand::ReleaseDomain { at: at() })
            .then_expect_events(vec![released("shop.example.com")]);
        LicenseTest::with(())
            .given(vec![
                seat_issued(),
                activated("shop.example.com"),
                released("shop.example.com"),
            ])
            .when(activate("other.example.com"))
            .then_expect_events(vec![activated("other.example.com")]);
    }

    #[test]
    fn releasing_without_a_domain_is_a_no_op() {
        LicenseTest::with(())
            .given(vec![seat_issued()])
            .when(LicenseCommand::ReleaseDomain { at: at() })
            .then_expect_events(vec![]);
        LicenseTest::with(())
            .given(vec![
                seat_issued(),
                activated("shop.example.com"),
                released("shop.example.com"),
            ])
            .when(LicenseCommand::ReleaseDomain { at: at() })
            .then_expect_events(vec![]);
        LicenseTest::with(())
            .given(vec![issued()])
            .when(LicenseCommand::ReleaseDomain { at: at() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn releasing_an_unknown_license_is_refused() {
        LicenseTest::with(())
            .given_no_previous_events()
            .when(LicenseCommand::ReleaseDomain { at: at() })
            .then_expect_error(LicenseError::NotFound);
    }

    #[test]
    fn an_inactive_license_can_still_release_its_domain() {
        LicenseTest::with(())
            .given(vec![
                seat_issued(),
                activated("shop.example.com"),
                deactivated(),
            ])
            .when(LicenseCommand::ReleaseDomain { at: at() })
            .then_expect_events(vec![released("shop.example.com")]);
    }

    #[test]
    fn a_deactivated_license_keeps_its_domain_and_a_reactivation_restores_it() {
        let mut license = License::default();
        license.apply(seat_issued());
        license.apply(activated("shop.example.com"));
        license.apply(deactivated());
        assert_eq!(license.status(), Some(LicenseStatus::Inactive));
        assert_eq!(license.activated_domain(), Some("shop.example.com"));
        license.apply(reactivated());
        assert_eq!(license.activated_domain(), Some("shop.example.com"));
        assert_eq!(license.activated_at(), Some(at()));
        LicenseTest::with(())
            .given(vec![
                seat_issued(),
                activated("shop.example.com"),
                deactivated(),
                reactivated(),
            ])
            .when(activate("other.example.com"))
            .then_expect_error(LicenseError::AlreadyActivated {
                domain: "shop.example.com".into(),
            });
    }

    #[test]
    fn a_state_stored_before_activation_existed_still_loads() {
        let mut license = License::default();
        license.apply(seat_issued());
        let mut json = serde_json::to_value(&license).expect("serialises");
        let issued = json["issued"].as_object_mut().expect("issued state");
        issued.remove("activated_domain");
        issued.remove("activated_at");
        let back: License = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, license);
        assert_eq!(back.activated_domain(), None);

        license.apply(activated("shop.example.com"));
        let json = serde_json::to_string(&license).expect("serialises");
        let back: License = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, license);
    }

    #[test]
    fn same_site_ignores_case_and_one_leading_www_only() {
        assert!(License::same_site("example.com", "example.com"));
        assert!(License::same_site("www.example.com", "example.com"));
        assert!(License::same_site("example.com", "WWW.Example.com"));
        assert!(!License::same_site("shop.example.com", "example.com"));
        assert!(!License::same_site("www.shop.example.com", "example.com"));
        assert!(!License::same_site("www.com", "com"));
        assert!(!License::same_site("example.com", "example.org"));
        assert!(!License::same_site("wwwexample.com", "example.com"));
    }

    #[test]
    fn activation_events_have_their_names_at_version_one() {
        assert_eq!(activated("a.com").event_type(), "LicenseActivatedOnDomain");
        assert_eq!(released("a.com").event_type(), "LicenseDomainReleased");
        assert_eq!(activated("a.com").event_version(), "1.0");
        assert_eq!(released("a.com").event_version(), "1.0");
        let json = serde_json::to_value(activated("a.com")).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"LicenseActivatedOnDomain": {
                "domain": "a.com", "activated_at": "2026-11-24T12:00:00Z"
            }})
        );
    }

    #[test]
    fn event_types_are_the_variant_names_at_version_one() {
        assert_eq!(issued().event_type(), "LicenseIssued");
        assert_eq!(deactivated().event_type(), "LicenseDeactivated");
        assert_eq!(
            LicenseEvent::LicenseReactivated {
                reactivated_at: at()
            }
            .event_type(),
            "LicenseReactivated"
        );
        assert_eq!(issued().event_version(), "1.0");
    }

    #[test]
    fn a_well_formed_key_parses() {
        assert_eq!(key("KEY-ABCD-EFGH-JK23").as_str(), "KEY-ABCD-EFGH-JK23");
        assert_eq!(key("KEY-2345-6789-ZZZZ").to_string(), "KEY-2345-6789-ZZZZ");
    }

    #[test]
    fn a_lower_case_key_is_normalised_to_upper_case() {
        assert_eq!(key("key-abcd-efgh-jk23").as_str(), "KEY-ABCD-EFGH-JK23");
        assert_eq!(key("Key-aBcD-EFGH-jk23").as_str(), "KEY-ABCD-EFGH-JK23");
    }

    #[test]
    fn a_key_with_a_wrong_prefix_is_rejected() {
        for raw in ["LIC-ABCD-EFGH-JK23", "KEYABCD-EFGH-JK23X", "ABCD-EFGH-JK23"] {
            assert_eq!(
                LicenseKey::parse(raw),
                Err(LicenseKeyError::WrongShape),
                "{raw}"
            );
        }
    }

    #[test]
    fn a_key_of_the_wrong_length_or_grouping_is_rejected() {
        for raw in [
            "",
            "KEY-",
            "KEY-ABCD-EFGH-JK2",
            "KEY-ABCD-EFGH-JK234",
            "KEY-ABCD-EFGH-JK23-ABCD",
            "KEY-ABCDE-FGH-JK23",
            "KEY-ABCD-EFGHJ-K23",
            "KEY-ABCD-EFGH-JK23 ",
            " KEY-ABCD-EFGH-JK23",
        ] {
            assert_eq!(
                LicenseKey::parse(raw),
                Err(LicenseKeyError::WrongShape),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn look_alike_characters_are_rejected() {
        for (raw, c) in [
            ("KEY-0BCD-EFGH-JK23", '0'),
            ("KEY-OBCD-EFGH-JK23", 'O'),
            ("KEY-ABCD-1FGH-JK23", '1'),
            ("KEY-ABCD-EFGH-JKI3", 'I'),
            ("KEY-ABCD-EFGH-oK23", 'O'),
            ("KEY-AB_D-EFGH-JK23", '_'),
        ] {
            assert_eq!(
                LicenseKey::parse(raw),
                Err(LicenseKeyError::InvalidCharacter(c)),
                "{raw}"
            );
        }
    }

    #[test]
    fn non_ascii_input_is_rejected_without_panicking() {
        assert!(LicenseKey::parse("KEY-ÄBCD-EFGH-JK2").is_err());
        assert!(LicenseKey::parse("KEY-ÄBC-EFGH-JK23").is_err());
    }

    #[test]
    fn keys_round_trip_through_serde() {
        let json = serde_json::to_string(&key("key-abcd-efgh-jk23")).expect("serialises");
        assert_eq!(json, "\"KEY-ABCD-EFGH-JK23\"");
        let back: LicenseKey = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, key("KEY-ABCD-EFGH-JK23"));
        assert!(serde_json::from_str::<LicenseKey>("\"KEY-0000-0000-0000\"").is_err());
    }

    #[test]
    fn a_key_from_random_bytes_always_parses() {
        for start in 0..=255u8 {
            let mut bytes = [0u8; 12];
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = start
                    .wrapping_mul(31)
                    .wrapping_add((i as u8).wrapping_mul(97));
            }
            let generated = LicenseKey::from_random_bytes(bytes);
            assert_eq!(LicenseKey::parse(generated.as_str()), Ok(generated.clone()));
        }
    }

    #[test]
    fn random_bytes_map_onto_the_alphabet_modulo_32() {
        let bytes = [0, 1, 2, 3, 31, 32, 33, 255, 8, 9, 10, 11];
        assert_eq!(
            LicenseKey::from_random_bytes(bytes).as_str(),
            "KEY-ABCD-9AB9-JKLM"
        );
    }

    #[test]
    fn license_ids_are_deterministic() {
        assert_eq!(License::id_for_site("si_1"), License::id_for_site("si_1"));
        assert_eq!(
            License::id_for_seat("si_1", 2),
            License::id_for_seat("si_1", 2)
        );
        assert_eq!(
            License::id_for_site("si_1").get_version(),
            Some(uuid::Version::Sha1)
        );
    }

    #[test]
    fn license_ids_differ_for_different_causes() {
        let ids = [
            License::id_for_site("si_1"),
            License::id_for_site("si_2"),
            License::id_for_seat("si_1", 1),
            License::id_for_seat("si_1", 2),
            License::id_for_seat("si_2", 1),
            License::id_for_seat("si_11", 1),
            License::id_for_seat("si_1", 11),
        ];
        for (i, a) in ids.iter().enumerate() {
            for b in ids.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn the_id_namespace_never_changes() {
        assert_eq!(
            License::id_for_site("si_1"),
            Uuid::new_v5(&License::ID_NAMESPACE, b"site:si_1")
        );
        assert_eq!(
            License::ID_NAMESPACE.to_string(),
            "6d1c9a3e-52b4-4f0e-9c77-1e0b4a2d8f35"
        );
    }

    fn purchase() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa)
    }

    fn reserve() -> LicenseCommand {
        LicenseCommand::ReserveLicense {
            license_id: License::id_for_purchase(purchase(), 2),
            key: key("KEY-PPPP-EFGH-JK23"),
            member_id: member(),
            subscription_id: "sub_1".into(),
            purchase_id: purchase(),
            seat: 2,
            at: at(),
        }
    }

    fn reserved() -> LicenseEvent {
        LicenseEvent::LicenseReserved {
            license_id: License::id_for_purchase(purchase(), 2),
            key: "KEY-PPPP-EFGH-JK23".into(),
            member_id: member(),
            subscription_id: "sub_1".into(),
            purchase_id: purchase(),
            seat: 2,
            reserved_at: at(),
        }
    }

    fn issue_purchased() -> LicenseCommand {
        LicenseCommand::IssueLicense {
            license_id: License::id_for_purchase(purchase(), 2),
            key: key("KEY-ZZZZ-ZZZZ-ZZZZ"),
            member_id: member(),
            subscription_id: "sub_1".into(),
            item_id: "si_seats".into(),
            purchase_type: PurchaseType::Quantity,
            site: None,
            seat: Some(2),
            at: at(),
        }
    }

    fn pending_activated() -> LicenseEvent {
        LicenseEvent::PendingLicenseActivated {
            subscription_id: "sub_1".into(),
            item_id: "si_seats".into(),
            activated_at: at(),
        }
    }

    fn cancel() -> LicenseCommand {
        LicenseCommand::CancelPendingLicense {
            reason: CancelReason::CheckoutExpired,
            at: at(),
        }
    }

    fn canceled() -> LicenseEvent {
        LicenseEvent::LicenseCanceled {
            reason: CancelReason::CheckoutExpired,
            canceled_at: at(),
        }
    }

    #[test]
    fn reserving_a_key_makes_a_pending_quantity_license_without_an_item() {
        LicenseTest::with(())
            .given_no_previous_events()
            .when(reserve())
            .then_expect_events(vec![reserved()]);
        let mut license = License::default();
        license.apply(reserved());
        assert_eq!(license.status(), Some(LicenseStatus::Pending));
        assert_eq!(license.item_id(), None);
        assert_eq!(license.purchase_id(), Some(purchase()));
        assert_eq!(license.purchase_type(), Some(PurchaseType::Quantity));
        assert_eq!(license.seat(), Some(2));
        assert_eq!(license.key(), Some("KEY-PPPP-EFGH-JK23"));
    }

    #[test]
    fn reserving_an_existing_license_again_is_a_no_op() {
        LicenseTest::with(())
            .given(vec![reserved()])
            .when(reserve())
            .then_expect_events(vec![]);
        LicenseTest::with(())
            .given(vec![reserved(), pending_activated()])
            .when(reserve())
            .then_expect_events(vec![]);
    }

    #[test]
    fn issuing_a_reserved_key_activates_it_on_its_item_and_keeps_its_key() {
        LicenseTest::with(())
            .given(vec![reserved()])
            .when(issue_purchased())
            .then_expect_events(vec![pending_activated()]);
        let mut license = License::default();
        license.apply(reserved());
        license.apply(pending_activated());
        assert_eq!(license.status(), Some(LicenseStatus::Active));
        assert_eq!(license.item_id(), Some("si_seats"));
        assert_eq!(license.key(), Some("KEY-PPPP-EFGH-JK23"));
        LicenseTest::with(())
            .given(vec![reserved(), pending_activated()])
            .when(issue_purchased())
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_pending_key_is_canceled_once_and_a_paid_one_never() {
        LicenseTest::with(())
            .given(vec![reserved()])
            .when(cancel())
            .then_expect_events(vec![canceled()]);
        LicenseTest::with(())
            .given(vec![reserved(), canceled()])
            .when(cancel())
            .then_expect_events(vec![]);
        LicenseTest::with(())
            .given(vec![reserved(), pending_activated()])
            .when(cancel())
            .then_expect_events(vec![]);
        LicenseTest::with(())
            .given_no_previous_events()
            .when(cancel())
            .then_expect_error(LicenseError::NotFound);
    }

    #[test]
    fn a_payment_for_a_canceled_key_still_activates_it() {
        LicenseTest::with(())
            .given(vec![reserved(), canceled()])
            .when(issue_purchased())
            .then_expect_events(vec![pending_activated()]);
    }

    #[test]
    fn pending_and_canceled_keys_cannot_be_activated_on_a_domain() {
        LicenseTest::with(())
            .given(vec![reserved()])
            .when(activate("shop.example.com"))
            .then_expect_error(LicenseError::Pending);
        LicenseTest::with(())
            .given(vec![reserved(), canceled()])
            .when(activate("shop.example.com"))
            .then_expect_error(LicenseError::Inactive);
        LicenseTest::with(())
            .given(vec![reserved(), pending_activated()])
            .when(activate("shop.example.com"))
            .then_expect_events(vec![activated("shop.example.com")]);
    }

    #[test]
    fn deactivation_and_reactivation_leave_pending_keys_alone() {
        LicenseTest::with(())
            .given(vec![reserved()])
            .when(deactivate())
            .then_expect_events(vec![]);
        LicenseTest::with(())
            .given(vec![reserved()])
            .when(LicenseCommand::ReactivateLicense { at: at() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn purchase_ids_are_deterministic_per_seat_and_distinct_from_item_seats() {
        assert_eq!(
            License::id_for_purchase(purchase(), 1),
            License::id_for_purchase(purchase(), 1)
        );
        assert_ne!(
            License::id_for_purchase(purchase(), 1),
            License::id_for_purchase(purchase(), 2)
        );
        assert_ne!(
            License::id_for_purchase(purchase(), 1),
            License::id_for_seat(&purchase().to_string(), 1)
        );
    }
}
