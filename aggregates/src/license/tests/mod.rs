//! Given/when/then tests of the License aggregate, by topic; the helpers they share.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::*;
use crate::billing::PurchaseType;
use crate::values::SiteDomain;

mod domains;
mod holds;
mod ids;
mod keys;
mod lifecycle;
mod machines;
mod purchases;

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

fn domain(raw: &str) -> SiteDomain {
    SiteDomain::parse(raw).expect("valid domain")
}

fn activate(raw: &str) -> LicenseCommand {
    LicenseCommand::ActivateOnDomain {
        domain: domain(raw),
        wildcard: false,
        ip: None,
        max_machines: 1,
        stale: Vec::new(),
        at: at(),
    }
}

fn activated(domain: &str) -> LicenseEvent {
    LicenseEvent::LicenseActivatedOnDomain {
        domain: domain.into(),
        ip: None,
        activated_at: at(),
    }
}

fn purchase() -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa)
}

/// Seat 1 of quantity item `si_q`, issued.
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
