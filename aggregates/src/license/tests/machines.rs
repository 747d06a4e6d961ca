//! Policies: machine limits, domain patterns, heartbeats that stopped, expiry, grants.

use chrono::Duration;

use super::*;

fn activate_on(raw: &str, max_machines: u32) -> LicenseCommand {
    LicenseCommand::ActivateOnDomain {
        domain: domain(raw),
        wildcard: false,
        ip: Some("203.0.113.9".into()),
        max_machines,
        stale: Vec::new(),
        at: at(),
    }
}

fn activated_from(domain: &str) -> LicenseEvent {
    LicenseEvent::LicenseActivatedOnDomain {
        domain: domain.into(),
        ip: Some("203.0.113.9".into()),
        activated_at: at(),
    }
}

fn on_three() -> Vec<LicenseEvent> {
    vec![
        seat_issued(),
        activated("a.example.com"),
        activated("b.example.com"),
        activated("c.example.com"),
    ]
}

#[test]
fn a_three_machine_key_activates_on_three_domains_and_refuses_a_fourth() {
    LicenseTest::with(())
        .given(vec![
            seat_issued(),
            activated("a.example.com"),
            activated("b.example.com"),
        ])
        .when(activate_on("c.example.com", 3))
        .then_expect_events(vec![activated_from("c.example.com")]);
    LicenseTest::with(())
        .given(on_three())
        .when(activate_on("d.example.com", 3))
        .then_expect_error(LicenseError::TooManyMachines { limit: 3 });
    // Where it is activated already, nothing changes, at the limit too.
    LicenseTest::with(())
        .given(on_three())
        .when(activate_on("www.b.example.com", 3))
        .then_expect_events(vec![]);
}

#[test]
fn releasing_one_domain_makes_room_for_another() {
    let released = LicenseEvent::LicenseDomainReleased {
        domain: "b.example.com".into(),
        released_at: at(),
    };
    LicenseTest::with(())
        .given(on_three())
        .when(LicenseCommand::ReleaseDomain {
            domain: Some("B.example.com".into()),
            at: at(),
        })
        .then_expect_events(vec![released.clone()]);
    let mut given = on_three();
    given.push(released);
    LicenseTest::with(())
        .given(given)
        .when(activate_on("d.example.com", 3))
        .then_expect_events(vec![activated_from("d.example.com")]);
}

#[test]
fn releasing_without_a_domain_releases_every_one() {
    let released = |d: &str| LicenseEvent::LicenseDomainReleased {
        domain: d.into(),
        released_at: at(),
    };
    LicenseTest::with(())
        .given(on_three())
        .when(LicenseCommand::ReleaseDomain {
            domain: None,
            at: at(),
        })
        .then_expect_events(vec![
            released("a.example.com"),
            released("b.example.com"),
            released("c.example.com"),
        ]);
}

#[test]
fn a_stale_activation_is_expired_to_make_room() {
    let last_seen = at() - Duration::hours(3);
    LicenseTest::with(())
        .given(on_three())
        .when(LicenseCommand::ActivateOnDomain {
            domain: domain("d.example.com"),
            wildcard: false,
            ip: None,
            max_machines: 3,
            stale: vec![("a.example.com".into(), last_seen)],
            at: at(),
        })
        .then_expect_events(vec![
            LicenseEvent::LicenseMachineExpired {
                domain: "a.example.com".into(),
                last_seen_at: last_seen,
                expired_at: at(),
            },
            activated("d.example.com"),
        ]);
}

#[test]
fn expiring_a_machine_frees_it_and_is_a_no_op_when_it_is_gone() {
    let expire = LicenseCommand::ExpireMachine {
        domain: "b.example.com".into(),
        last_seen_at: at(),
        at: at(),
    };
    LicenseTest::with(())
        .given(on_three())
        .when(expire.clone())
        .then_expect_events(vec![LicenseEvent::LicenseMachineExpired {
            domain: "b.example.com".into(),
            last_seen_at: at(),
            expired_at: at(),
        }]);
    LicenseTest::with(())
        .given(vec![seat_issued()])
        .when(expire)
        .then_expect_events(vec![]);
}

#[test]
fn a_pattern_is_one_machine_that_covers_the_names_under_it() {
    LicenseTest::with(())
        .given(vec![seat_issued()])
        .when(LicenseCommand::ActivateOnDomain {
            domain: domain("example.com"),
            wildcard: true,
            ip: None,
            max_machines: 2,
            stale: Vec::new(),
            at: at(),
        })
        .then_expect_events(vec![activated("*.example.com")]);
    assert!(License::covers("*.example.com", "shop.example.com"));
    assert!(License::covers("*.example.com", "a.b.example.com"));
    assert!(License::covers("*.example.com", "example.com"));
    assert!(!License::covers("*.example.com", "notexample.com"));
    assert!(!License::covers("*.example.com", "example.org"));
    assert!(!License::covers("shop.example.com", "a.shop.example.com"));
}

fn granted(expires_at: Option<DateTime<Utc>>) -> LicenseEvent {
    LicenseEvent::LicenseGranted {
        license_id: Uuid::from_u128(7),
        key: "KEY-GGGG-EFGH-JK23".into(),
        member_id: member(),
        policy_id: Some("pro".into()),
        expires_at,
        note: Some("partner".into()),
        granted_at: at(),
    }
}

#[test]
fn an_operator_grants_a_key_once_and_it_activates_like_a_seat() {
    let grant = LicenseCommand::GrantLicense {
        license_id: Uuid::from_u128(7),
        key: key("KEY-GGGG-EFGH-JK23"),
        member_id: member(),
        policy_id: Some("pro".into()),
        expires_at: None,
        note: Some("partner".into()),
        at: at(),
    };
    LicenseTest::with(())
        .given_no_previous_events()
        .when(grant.clone())
        .then_expect_events(vec![granted(None)]);
    LicenseTest::with(())
        .given(vec![granted(None)])
        .when(grant)
        .then_expect_events(vec![]);
    LicenseTest::with(())
        .given(vec![granted(None)])
        .when(activate_on("shop.example.com", 1))
        .then_expect_events(vec![activated_from("shop.example.com")]);
    let mut license = License::default();
    license.apply(granted(None));
    assert_eq!(license.status(), Some(LicenseStatus::Active));
    assert_eq!(license.subscription_id(), None);
    assert_eq!(license.policy_id(), Some("pro"));
}

#[test]
fn expiry_is_extended_or_shortened_and_unchanged_is_a_no_op() {
    let later = at() + Duration::days(30);
    LicenseTest::with(())
        .given(vec![granted(Some(at()))])
        .when(LicenseCommand::ChangeExpiry {
            expires_at: Some(later),
            at: at(),
        })
        .then_expect_events(vec![LicenseEvent::LicenseExpiryChanged {
            expires_at: Some(later),
            changed_at: at(),
        }]);
    LicenseTest::with(())
        .given(vec![granted(Some(later))])
        .when(LicenseCommand::ChangeExpiry {
            expires_at: Some(later),
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_policy_change_carries_its_expiry_and_a_revoked_license_takes_neither() {
    let change = LicenseCommand::ChangePolicy {
        policy_id: Some("trial".into()),
        expires_at: Some(at()),
        at: at(),
    };
    LicenseTest::with(())
        .given(vec![seat_issued()])
        .when(change.clone())
        .then_expect_events(vec![LicenseEvent::LicensePolicyChanged {
            policy_id: Some("trial".into()),
            expires_at: Some(at()),
            changed_at: at(),
        }]);
    let revoked = LicenseEvent::LicenseRevoked {
        reason: "fraud".into(),
        revoked_at: at(),
    };
    LicenseTest::with(())
        .given(vec![seat_issued(), revoked.clone()])
        .when(change)
        .then_expect_error(LicenseError::Revoked);
    LicenseTest::with(())
        .given(vec![seat_issued(), revoked])
        .when(LicenseCommand::ChangeExpiry {
            expires_at: None,
            at: at(),
        })
        .then_expect_error(LicenseError::Revoked);
}
