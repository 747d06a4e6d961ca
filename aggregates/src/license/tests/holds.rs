//! An operator's holds on a license: suspension (lifted by unsuspending) and revocation (final).

use super::*;

fn suspend(reason: &str) -> LicenseCommand {
    LicenseCommand::SuspendLicense {
        reason: reason.into(),
        at: at(),
    }
}

fn suspended(reason: &str) -> LicenseEvent {
    LicenseEvent::LicenseSuspended {
        reason: reason.into(),
        suspended_at: at(),
    }
}

fn revoked(reason: &str) -> LicenseEvent {
    LicenseEvent::LicenseRevoked {
        reason: reason.into(),
        revoked_at: at(),
    }
}

#[test]
fn a_license_is_suspended_once_and_unsuspended_once() {
    LicenseTest::with(())
        .given(vec![issued()])
        .when(suspend("chargeback"))
        .then_expect_events(vec![suspended("chargeback")]);
    LicenseTest::with(())
        .given(vec![issued(), suspended("chargeback")])
        .when(suspend("again"))
        .then_expect_events(vec![]);
    LicenseTest::with(())
        .given(vec![issued(), suspended("chargeback")])
        .when(LicenseCommand::UnsuspendLicense { at: at() })
        .then_expect_events(vec![LicenseEvent::LicenseUnsuspended {
            unsuspended_at: at(),
        }]);
    LicenseTest::with(())
        .given(vec![issued()])
        .when(LicenseCommand::UnsuspendLicense { at: at() })
        .then_expect_events(vec![]);
}

#[test]
fn a_revoked_license_stays_revoked_and_cannot_be_suspended_or_activated() {
    LicenseTest::with(())
        .given(vec![issued(), suspended("support")])
        .when(LicenseCommand::RevokeLicense {
            reason: "fraud".into(),
            at: at(),
        })
        .then_expect_events(vec![revoked("fraud")]);
    LicenseTest::with(())
        .given(vec![issued(), revoked("fraud")])
        .when(LicenseCommand::RevokeLicense {
            reason: "again".into(),
            at: at(),
        })
        .then_expect_events(vec![]);
    LicenseTest::with(())
        .given(vec![issued(), revoked("fraud")])
        .when(suspend("x"))
        .then_expect_error(LicenseError::Revoked);
    LicenseTest::with(())
        .given(vec![issued(), revoked("fraud")])
        .when(LicenseCommand::UnsuspendLicense { at: at() })
        .then_expect_error(LicenseError::Revoked);
    LicenseTest::with(())
        .given(vec![seat_issued(), revoked("fraud")])
        .when(activate("a.example.com"))
        .then_expect_error(LicenseError::Revoked);
}

#[test]
fn a_suspended_key_cannot_be_activated_and_keeps_its_hold_through_reactivation() {
    LicenseTest::with(())
        .given(vec![seat_issued(), suspended("support")])
        .when(activate("a.example.com"))
        .then_expect_error(LicenseError::Suspended);
    let mut license = License::default();
    for event in [
        seat_issued(),
        suspended("support"),
        LicenseEvent::LicenseDeactivated {
            reason: DeactivationReason::SubscriptionInactive,
            deactivated_at: at(),
        },
        LicenseEvent::LicenseReactivated {
            reactivated_at: at(),
        },
    ] {
        license.apply(event);
    }
    assert_eq!(license.status(), Some(LicenseStatus::Active));
    assert_eq!(license.suspension(), Some("support"));
}

#[test]
fn suspending_a_license_that_does_not_exist_is_refused() {
    LicenseTest::with(())
        .given_no_previous_events()
        .when(suspend("x"))
        .then_expect_error(LicenseError::NotFound);
}
