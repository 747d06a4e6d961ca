use super::*;

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
