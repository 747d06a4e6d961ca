//! The License aggregate itself: its state, its ids, what it answers, and how it handles
//! commands and applies events.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DeactivationReason, LicenseCommand, LicenseError, LicenseEvent, LicenseStatus};
use crate::billing::PurchaseType;

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
    /// Why an operator suspended it, while suspended.
    #[serde(default)]
    suspension: Option<String>,
    /// Why it was revoked, once revoked (final).
    #[serde(default)]
    revocation: Option<String>,
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

    /// Why an operator suspended it, while it is suspended.
    pub fn suspension(&self) -> Option<&str> {
        self.issued.as_ref().and_then(|i| i.suspension.as_deref())
    }

    /// Why it was revoked, once it is.
    pub fn revocation(&self) -> Option<&str> {
        self.issued.as_ref().and_then(|i| i.revocation.as_deref())
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
                if issued.revocation.is_some() {
                    return Err(LicenseError::Revoked);
                }
                if issued.suspension.is_some() {
                    return Err(LicenseError::Suspended);
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
            LicenseCommand::SuspendLicense { reason, at } => {
                let issued = self.issued.as_ref().ok_or(LicenseError::NotFound)?;
                if issued.revocation.is_some() {
                    return Err(LicenseError::Revoked);
                }
                if issued.suspension.is_none() {
                    let event = LicenseEvent::LicenseSuspended {
                        reason,
                        suspended_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            LicenseCommand::UnsuspendLicense { at } => {
                let issued = self.issued.as_ref().ok_or(LicenseError::NotFound)?;
                if issued.revocation.is_some() {
                    return Err(LicenseError::Revoked);
                }
                if issued.suspension.is_some() {
                    let event = LicenseEvent::LicenseUnsuspended { unsuspended_at: at };
                    sink.write(event, self).await;
                }
            }
            LicenseCommand::RevokeLicense { reason, at } => {
                let issued = self.issued.as_ref().ok_or(LicenseError::NotFound)?;
                if issued.revocation.is_none() {
                    let event = LicenseEvent::LicenseRevoked {
                        reason,
                        revoked_at: at,
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
                    suspension: None,
                    revocation: None,
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
                    suspension: None,
                    revocation: None,
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
            LicenseEvent::LicenseSuspended { reason, .. } => {
                if let Some(issued) = &mut self.issued {
                    issued.suspension = Some(reason);
                }
            }
            LicenseEvent::LicenseUnsuspended { .. } => {
                if let Some(issued) = &mut self.issued {
                    issued.suspension = None;
                }
            }
            LicenseEvent::LicenseRevoked { reason, .. } => {
                if let Some(issued) = &mut self.issued {
                    issued.revocation = Some(reason);
                    issued.suspension = None;
                }
            }
        }
    }
}
