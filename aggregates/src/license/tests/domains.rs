use cqrs_es::DomainEvent;

use super::*;

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
        .when(LicenseCommand::ReleaseDomain {
            domain: None,
            at: at(),
        })
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
        .when(LicenseCommand::ReleaseDomain {
            domain: None,
            at: at(),
        })
        .then_expect_events(vec![]);
    LicenseTest::with(())
        .given(vec![
            seat_issued(),
            activated("shop.example.com"),
            released("shop.example.com"),
        ])
        .when(LicenseCommand::ReleaseDomain {
            domain: None,
            at: at(),
        })
        .then_expect_events(vec![]);
    LicenseTest::with(())
        .given(vec![issued()])
        .when(LicenseCommand::ReleaseDomain {
            domain: None,
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn releasing_an_unknown_license_is_refused() {
    LicenseTest::with(())
        .given_no_previous_events()
        .when(LicenseCommand::ReleaseDomain {
            domain: None,
            at: at(),
        })
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
        .when(LicenseCommand::ReleaseDomain {
            domain: None,
            at: at(),
        })
        .then_expect_events(vec![released("shop.example.com")]);
}

#[test]
fn a_deactivated_license_keeps_its_domain_and_a_reactivation_restores_it() {
    let mut license = License::default();
    license.apply(seat_issued());
    license.apply(activated("shop.example.com"));
    license.apply(deactivated());
    assert_eq!(license.status(), Some(LicenseStatus::Inactive));
    assert_eq!(domains(&license), ["shop.example.com"]);
    license.apply(reactivated());
    assert_eq!(domains(&license), ["shop.example.com"]);
    assert_eq!(license.machines()[0].activated_at, at());
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
    issued.remove("machines");
    issued.remove("policy_id");
    issued.remove("expires_at");
    let back: License = serde_json::from_value(json).expect("deserialises");
    assert_eq!(back, license);
    assert!(back.machines().is_empty());

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
fn activation_events_have_their_names_and_versions() {
    assert_eq!(activated("a.com").event_type(), "LicenseActivatedOnDomain");
    assert_eq!(released("a.com").event_type(), "LicenseDomainReleased");
    assert_eq!(activated("a.com").event_version(), "1.1");
    assert_eq!(released("a.com").event_version(), "1.0");
    let json = serde_json::to_value(activated("a.com")).expect("serialises");
    assert_eq!(
        json,
        serde_json::json!({"LicenseActivatedOnDomain": {
            "domain": "a.com", "ip": null, "activated_at": "2026-11-24T12:00:00Z"
        }})
    );
}

#[test]
fn an_activation_stored_at_1_0_is_upcast_to_one_without_an_address() {
    let mut payload = serde_json::json!({"LicenseActivatedOnDomain": {
        "domain": "a.com", "activated_at": "2026-11-24T12:00:00Z"
    }});
    assert!(crate::upcast::needs_upcast(
        "License",
        "LicenseActivatedOnDomain",
        "1.0"
    ));
    let version = crate::upcast::upcast("License", "LicenseActivatedOnDomain", "1.0", &mut payload);
    assert_eq!(version, "1.1");
    let event: LicenseEvent = serde_json::from_value(payload).expect("parses");
    assert_eq!(event, activated("a.com"));
}

fn domains(license: &License) -> Vec<&str> {
    license
        .machines()
        .iter()
        .map(|m| m.domain.as_str())
        .collect()
}
