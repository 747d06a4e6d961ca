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
    /// `None` for a license an operator granted without Stripe.
    subscription_id: Option<String>,
    /// `None` while a reserved key is not paid for, and for a granted license.
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
    /// The domains a quantity license is activated on, oldest first. Kept while the license is
    /// inactive, so a reactivation restores them. Defaulted: states stored before activation
    /// existed load.
    #[serde(default)]
    machines: Vec<Machine>,
    /// Why an operator suspended it, while suspended.
    #[serde(default)]
    suspension: Option<String>,
    /// Why it was revoked, once revoked (final).
    #[serde(default)]
    revocation: Option<String>,
    /// The license policy it is under; `None`: today's rules (one domain, no expiry of its own).
    #[serde(default)]
    policy_id: Option<String>,
    /// When it stops validating on its own, if ever.
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// One activation of a quantity license: a domain (or `*.domain` pattern) and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Machine {
    pub domain: String,
    pub activated_at: DateTime<Utc>,
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

    /// The license of a member's complimentary access to a tier: UUIDv5 of
    /// `comp:{member_id}:{tier_id}` in [`Self::ID_NAMESPACE`]. The same key comes back when the
    /// member is given the tier again.
    pub fn id_for_comp(member_id: Uuid, tier_id: Uuid) -> Uuid {
        Uuid::new_v5(
            &Self::ID_NAMESPACE,
            format!("comp:{member_id}:{tier_id}").as_bytes(),
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

    /// `None` for a license an operator granted without Stripe.
    pub fn subscription_id(&self) -> Option<&str> {
        self.issued
            .as_ref()
            .and_then(|i| i.subscription_id.as_deref())
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

    /// The domains a quantity license is activated on, oldest first (kept while inactive).
    pub fn machines(&self) -> &[Machine] {
        self.issued.as_ref().map_or(&[], |i| i.machines.as_slice())
    }

    pub fn policy_id(&self) -> Option<&str> {
        self.issued.as_ref().and_then(|i| i.policy_id.as_deref())
    }

    /// When it stops validating on its own, if ever.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.issued.as_ref().and_then(|i| i.expires_at)
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

    /// Whether an activation on `machine` licenses `domain`: the same site, or for a pattern
    /// `*.example.com`, `example.com` itself or any name under it.
    pub fn covers(machine: &str, domain: &str) -> bool {
        match machine.strip_prefix("*.") {
            Some(base) => {
                let domain = domain.to_ascii_lowercase();
                let base = base.to_ascii_lowercase();
                domain == base || domain.ends_with(&format!(".{base}"))
            }
            None => Self::same_site(machine, domain),
        }
    }
}

impl License {
    /// The issued license, unless it is revoked (final).
    fn not_revoked(&self) -> Result<&Issued, LicenseError> {
        let issued = self.issued.as_ref().ok_or(LicenseError::NotFound)?;
        if issued.revocation.is_some() {
            return Err(LicenseError::Revoked);
        }
        Ok(issued)
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
            LicenseCommand::GrantLicense {
                license_id,
                key,
                member_id,
                policy_id,
                expires_at,
                note,
                at,
            } => {
                if !self.exists() {
                    let event = LicenseEvent::LicenseGranted {
                        license_id,
                        key: key.into(),
                        member_id,
                        policy_id,
                        expires_at,
                        note,
                        granted_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            LicenseCommand::ChangePolicy {
                policy_id,
                expires_at,
                at,
            } => {
                let issued = self.not_revoked()?;
                if issued.policy_id != policy_id || issued.expires_at != expires_at {
                    let event = LicenseEvent::LicensePolicyChanged {
                        policy_id,
                        expires_at,
                        changed_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            LicenseCommand::ChangeExpiry { expires_at, at } => {
                let issued = self.not_revoked()?;
                if issued.expires_at != expires_at {
                    let event = LicenseEvent::LicenseExpiryChanged {
                        expires_at,
                        changed_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            LicenseCommand::ActivateOnDomain {
                domain,
                wildcard,
                ip,
                max_machines,
                stale,
                at,
            } => {
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
                let domain = if wildcard {
                    format!("*.{}", domain.as_str())
                } else {
                    String::from(domain)
                };
                let same = |m: &Machine| {
                    m.domain.starts_with("*.") == domain.starts_with("*.")
                        && Self::same_site(&m.domain, &domain)
                };
                if issued.machines.iter().any(same) {
                    return Ok(());
                }
                let expired: Vec<&(String, DateTime<Utc>)> = stale
                    .iter()
                    .filter(|(d, _)| issued.machines.iter().any(|m| &m.domain == d))
                    .collect();
                let live = issued.machines.len() - expired.len();
                if live >= max_machines.max(1) as usize {
                    return Err(match (max_machines, issued.machines.first()) {
                        (0 | 1, Some(current)) if expired.is_empty() => {
                            LicenseError::AlreadyActivated {
                                domain: current.domain.clone(),
                            }
                        }
                        _ => LicenseError::TooManyMachines {
                            limit: max_machines.max(1),
                        },
                    });
                }
                let expired: Vec<(String, DateTime<Utc>)> = expired.into_iter().cloned().collect();
                for (domain, last_seen_at) in expired {
                    let event = LicenseEvent::LicenseMachineExpired {
                        domain,
                        last_seen_at,
                        expired_at: at,
                    };
                    sink.write(event, self).await;
                }
                let event = LicenseEvent::LicenseActivatedOnDomain {
                    domain,
                    ip,
                    activated_at: at,
                };
                sink.write(event, self).await;
            }
            LicenseCommand::ReleaseDomain { domain, at } => {
                let issued = self.issued.as_ref().ok_or(LicenseError::NotFound)?;
                let released: Vec<String> = issued
                    .machines
                    .iter()
                    .filter(|m| match &domain {
                        Some(d) => {
                            m.domain.eq_ignore_ascii_case(d) || Self::same_site(&m.domain, d)
                        }
                        None => true,
                    })
                    .map(|m| m.domain.clone())
                    .collect();
                for domain in released {
                    let event = LicenseEvent::LicenseDomainReleased {
                        domain,
                        released_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            LicenseCommand::ExpireMachine {
                domain,
                last_seen_at,
                at,
            } => {
                let issued = self.issued.as_ref().ok_or(LicenseError::NotFound)?;
                if issued.machines.iter().any(|m| m.domain == domain) {
                    let event = LicenseEvent::LicenseMachineExpired {
                        domain,
                        last_seen_at,
                        expired_at: at,
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
                    subscription_id: Some(subscription_id),
                    item_id: Some(item_id),
                    purchase_id: None,
                    purchase_type,
                    site,
                    seat,
                    status: LicenseStatus::Active,
                    deactivation_reason: None,
                    machines: Vec::new(),
                    suspension: None,
                    revocation: None,
                    policy_id: None,
                    expires_at: None,
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
                    subscription_id: Some(subscription_id),
                    item_id: None,
                    purchase_id: Some(purchase_id),
                    purchase_type: PurchaseType::Quantity,
                    site: None,
                    seat: Some(seat),
                    status: LicenseStatus::Pending,
                    deactivation_reason: None,
                    machines: Vec::new(),
                    suspension: None,
                    revocation: None,
                    policy_id: None,
                    expires_at: None,
                });
            }
            LicenseEvent::LicenseGranted {
                license_id,
                key,
                member_id,
                policy_id,
                expires_at,
                ..
            } => {
                self.issued = Some(Issued {
                    license_id,
                    key,
                    member_id,
                    subscription_id: None,
                    item_id: None,
                    purchase_id: None,
                    purchase_type: PurchaseType::Quantity,
                    site: None,
                    seat: None,
                    status: LicenseStatus::Active,
                    deactivation_reason: None,
                    machines: Vec::new(),
                    suspension: None,
                    revocation: None,
                    policy_id,
                    expires_at,
                });
            }
            LicenseEvent::LicensePolicyChanged {
                policy_id,
                expires_at,
                ..
            } => {
                if let Some(issued) = &mut self.issued {
                    issued.policy_id = policy_id;
                    issued.expires_at = expires_at;
                }
            }
            LicenseEvent::LicenseExpiryChanged { expires_at, .. } => {
                if let Some(issued) = &mut self.issued {
                    issued.expires_at = expires_at;
                }
            }
            LicenseEvent::PendingLicenseActivated {
                subscription_id,
                item_id,
                ..
            } => {
                if let Some(issued) = &mut self.issued {
                    issued.subscription_id = Some(subscription_id);
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
                ..
            } => {
                if let Some(issued) = &mut self.issued {
                    issued.machines.push(Machine {
                        domain,
                        activated_at,
                    });
                }
            }
            LicenseEvent::LicenseDomainReleased { domain, .. }
            | LicenseEvent::LicenseMachineExpired { domain, .. } => {
                if let Some(issued) = &mut self.issued {
                    issued.machines.retain(|m| m.domain != domain);
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
