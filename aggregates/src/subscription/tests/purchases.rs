use super::*;

fn purchase_id() -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa)
}

#[test]
fn a_site_purchase_is_pending_until_completed_or_expired_once() {
    let start = || SubscriptionCommand::StartSitePurchase {
        purchase_id: purchase_id(),
        session_id: "cs_1".into(),
        member_id: member(),
        sites: vec!["new.example.com".into()],
        price_id: "price_site".into(),
        amount: 500,
        currency: "usd".into(),
        at: t(10),
    };
    let started = E::SitePurchaseStarted {
        purchase_id: Some(purchase_id()),
        session_id: "cs_1".into(),
        member_id: member(),
        sites: vec!["new.example.com".into()],
        price_id: "price_site".into(),
        amount: 500,
        currency: "usd".into(),
        started_at: t(10),
    };
    TestFramework::<Subscription>::with(())
        .given_no_previous_events()
        .when(start())
        .then_expect_events(vec![started.clone()]);
    TestFramework::<Subscription>::with(())
        .given(vec![started.clone()])
        .when(start())
        .then_expect_events(vec![]);
    let completed = E::SitePurchaseCompleted {
        session_id: "cs_1".into(),
        completed_at: t(20),
    };
    let complete = |at| SubscriptionCommand::CompletePurchase {
        purchase: purchase_id().to_string(),
        at: t(at),
    };
    TestFramework::<Subscription>::with(())
        .given(vec![started.clone()])
        .when(complete(20))
        .then_expect_events(vec![completed.clone()]);
    // The second trigger of one payment (`payment_intent.succeeded` after
    // `checkout.session.completed`) completes nothing more.
    TestFramework::<Subscription>::with(())
        .given(vec![started.clone(), completed.clone()])
        .when(complete(21))
        .then_expect_events(vec![]);
    TestFramework::<Subscription>::with(())
        .given(vec![started, completed])
        .when(SubscriptionCommand::ExpirePurchase {
            purchase: purchase_id().to_string(),
            at: t(30),
        })
        .then_expect_events(vec![]);
    TestFramework::<Subscription>::with(())
        .given_no_previous_events()
        .when(SubscriptionCommand::CompletePurchase {
            purchase: "cs_unknown".into(),
            at: t(20),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_site_purchase_recorded_without_a_purchase_id_is_found_by_its_session() {
    let started = E::SitePurchaseStarted {
        purchase_id: None,
        session_id: "cs_old".into(),
        member_id: member(),
        sites: vec!["new.example.com".into()],
        price_id: "price_site".into(),
        amount: 500,
        currency: "usd".into(),
        started_at: t(10),
    };
    // As stored before purchase ids: no `purchase_id` key at all.
    let json = serde_json::to_value(&started).expect("serialises");
    assert!(json["SitePurchaseStarted"].get("purchase_id").is_none());
    let back: SubscriptionEvent = serde_json::from_value(json).expect("deserialises");
    assert_eq!(back, started);
    TestFramework::<Subscription>::with(())
        .given(vec![started])
        .when(SubscriptionCommand::ExpirePurchase {
            purchase: "cs_old".into(),
            at: t(30),
        })
        .then_expect_events(vec![E::SitePurchaseExpired {
            session_id: "cs_old".into(),
            expired_at: t(30),
        }]);
}

#[test]
fn a_license_purchase_is_pending_until_completed_or_expired_once() {
    let start = || SubscriptionCommand::StartLicensePurchase {
        purchase_id: purchase_id(),
        session_id: "cs_seats".into(),
        member_id: member(),
        quantity: 3,
        price_id: "price_seat".into(),
        amount: 1500,
        currency: "usd".into(),
        at: t(10),
    };
    let started = E::LicensePurchaseStarted {
        purchase_id: purchase_id(),
        session_id: "cs_seats".into(),
        member_id: member(),
        quantity: 3,
        price_id: "price_seat".into(),
        amount: 1500,
        currency: "usd".into(),
        started_at: t(10),
    };
    TestFramework::<Subscription>::with(())
        .given_no_previous_events()
        .when(start())
        .then_expect_events(vec![started.clone()]);
    TestFramework::<Subscription>::with(())
        .given(vec![started.clone()])
        .when(start())
        .then_expect_events(vec![]);
    let expired = E::LicensePurchaseExpired {
        purchase_id: purchase_id(),
        session_id: "cs_seats".into(),
        expired_at: t(30),
    };
    let expire = || SubscriptionCommand::ExpirePurchase {
        purchase: purchase_id().to_string(),
        at: t(30),
    };
    TestFramework::<Subscription>::with(())
        .given(vec![started.clone()])
        .when(expire())
        .then_expect_events(vec![expired.clone()]);
    TestFramework::<Subscription>::with(())
        .given(vec![started.clone(), expired])
        .when(SubscriptionCommand::CompletePurchase {
            purchase: purchase_id().to_string(),
            at: t(40),
        })
        .then_expect_events(vec![]);
    let completed = E::LicensePurchaseCompleted {
        purchase_id: purchase_id(),
        session_id: "cs_seats".into(),
        completed_at: t(20),
    };
    TestFramework::<Subscription>::with(())
        .given(vec![started.clone()])
        .when(SubscriptionCommand::CompletePurchase {
            purchase: purchase_id().to_string(),
            at: t(20),
        })
        .then_expect_events(vec![completed.clone()]);
    TestFramework::<Subscription>::with(())
        .given(vec![started, completed])
        .when(expire())
        .then_expect_events(vec![]);
}

fn site_purchase_by(member_id: Uuid) -> SubscriptionCommand {
    SubscriptionCommand::StartSitePurchase {
        purchase_id: purchase_id(),
        session_id: "cs_1".into(),
        member_id,
        sites: vec!["new.example.com".into()],
        price_id: "price_site".into(),
        amount: 500,
        currency: "usd".into(),
        at: t(300),
    }
}

fn license_purchase_by(member_id: Uuid) -> SubscriptionCommand {
    SubscriptionCommand::StartLicensePurchase {
        purchase_id: purchase_id(),
        session_id: "cs_1".into(),
        member_id,
        quantity: 2,
        price_id: "price_seat".into(),
        amount: 1000,
        currency: "usd".into(),
        at: t(300),
    }
}

#[test]
fn a_purchase_on_an_ended_subscription_is_refused() {
    let mut ended = active_at_200();
    ended.push(E::SubscriptionStatusChanged {
        from: S::Active,
        to: S::Canceled,
        observed: deleted_at(250),
    });
    ended.push(E::SubscriptionCanceled {
        canceled_at: t(250),
        observed: deleted_at(250),
    });
    for command in [site_purchase_by(member()), license_purchase_by(member())] {
        TestFramework::<Subscription>::with(())
            .given(ended.clone())
            .when(command)
            .then_expect_error(SubscriptionError::Ended);
    }
}

#[test]
fn a_purchase_by_another_member_is_refused() {
    let other = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0bad);
    for command in [site_purchase_by(other), license_purchase_by(other)] {
        TestFramework::<Subscription>::with(())
            .given(active_at_200())
            .when(command)
            .then_expect_error(SubscriptionError::OtherMember);
    }
}
