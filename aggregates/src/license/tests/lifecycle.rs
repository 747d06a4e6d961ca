use cqrs_es::DomainEvent;

use super::*;

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
