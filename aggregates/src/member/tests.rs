//! The Member aggregate's commands, given earlier events: what they append or refuse.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;
use crate::values::{EmailAddress, Labels, MemberName, Note};

type MemberTest = TestFramework<Member>;

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn id() -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
}

fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("valid email")
}

fn created() -> MemberEvent {
    MemberEvent::MemberCreated {
        member_id: id(),
        email: "ada@example.com".into(),
        name: Some("Ada".into()),
        note: None,
        labels: vec!["vip".into()],
        source: MemberSource::Admin,
        attribution: None,
        created_at: at(),
    }
}

fn create() -> MemberCommand {
    MemberCommand::CreateMember {
        member_id: id(),
        email: email("ada@example.com"),
        name: MemberName::parse("Ada").expect("valid"),
        note: None,
        labels: Labels::parse(&["vip"]).expect("valid"),
        source: MemberSource::Admin,
        attribution: None,
        newsletters: vec![],
        at: at(),
    }
}

#[test]
fn create_member_emits_member_created() {
    MemberTest::with(())
        .given_no_previous_events()
        .when(create())
        .then_expect_events(vec![created()]);
}

#[test]
fn a_signup_is_created_with_its_attribution_and_newsletters() {
    let attribution =
        crate::attribution::for_context(crate::attribution::AttributionContext::Import);
    let newsletter_id = Uuid::from_u128(5);
    let MemberCommand::CreateMember {
        member_id,
        email,
        name,
        note,
        labels,
        at: created_at,
        ..
    } = create()
    else {
        unreachable!("create() builds a CreateMember")
    };
    MemberTest::with(())
        .given_no_previous_events()
        .when(MemberCommand::CreateMember {
            member_id,
            email,
            name,
            note,
            labels,
            source: MemberSource::Signup,
            attribution: Some(Box::new(attribution.clone())),
            newsletters: vec![newsletter_id, newsletter_id],
            at: created_at,
        })
        .then_expect_events(vec![
            MemberEvent::MemberCreated {
                member_id: id(),
                email: "ada@example.com".into(),
                name: Some("Ada".into()),
                note: None,
                labels: vec!["vip".into()],
                source: MemberSource::Signup,
                attribution: Some(Box::new(attribution)),
                created_at: at(),
            },
            MemberEvent::NewsletterSubscribed {
                newsletter_id,
                subscribed_at: at(),
            },
        ]);
}

fn disabled() -> MemberEvent {
    MemberEvent::MemberEmailDisabled {
        email: "ada@example.com".into(),
        reason: "550 no such user".into(),
        disabled_at: at(),
    }
}

#[test]
fn a_permanent_failure_disables_the_email_once() {
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::DisableEmail {
            reason: "550 no such user".into(),
            at: at(),
        })
        .then_expect_events(vec![disabled()]);
    MemberTest::with(())
        .given(vec![created(), disabled()])
        .when(MemberCommand::DisableEmail {
            reason: "550 again".into(),
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn enabling_lifts_a_suppression_and_is_a_no_op_without_one() {
    let enabled = MemberEvent::MemberEmailEnabled {
        email: "ada@example.com".into(),
        enabled_at: at(),
    };
    MemberTest::with(())
        .given(vec![created(), disabled()])
        .when(MemberCommand::EnableEmail { at: at() })
        .then_expect_events(vec![enabled.clone()]);
    MemberTest::with(())
        .given(vec![created(), disabled(), enabled])
        .when(MemberCommand::EnableEmail { at: at() })
        .then_expect_events(vec![]);
    MemberTest::with(())
        .given_no_previous_events()
        .when(MemberCommand::EnableEmail { at: at() })
        .then_expect_error(MemberError::NotFound);
}

#[test]
fn a_new_address_is_not_suppressed() {
    let changed = MemberEvent::MemberEmailChanged {
        old_email: "ada@example.com".into(),
        new_email: "ada@new.example".into(),
        changed_at: at(),
    };
    MemberTest::with(())
        .given(vec![created(), disabled(), changed])
        .when(MemberCommand::EnableEmail { at: at() })
        .then_expect_events(vec![]);
}

#[test]
fn create_member_twice_is_refused() {
    MemberTest::with(())
        .given(vec![created()])
        .when(create())
        .then_expect_error(MemberError::AlreadyExists);
}

#[test]
fn update_changes_only_the_given_fields() {
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::UpdateMember {
            name: None,
            note: Some(Note::parse("met at a conference").expect("valid")),
            labels: None,
            at: at(),
        })
        .then_expect_events(vec![MemberEvent::MemberUpdated {
            name: Some("Ada".into()),
            note: Some("met at a conference".into()),
            labels: vec!["vip".into()],
            updated_at: at(),
        }]);
}

#[test]
fn update_can_clear_the_name() {
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::UpdateMember {
            name: Some(None),
            note: None,
            labels: Some(Labels::default()),
            at: at(),
        })
        .then_expect_events(vec![MemberEvent::MemberUpdated {
            name: None,
            note: None,
            labels: vec![],
            updated_at: at(),
        }]);
}

#[test]
fn update_that_changes_nothing_emits_nothing() {
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::UpdateMember {
            name: Some(MemberName::parse("Ada").expect("valid")),
            note: None,
            labels: None,
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn update_of_an_unknown_member_is_refused() {
    MemberTest::with(())
        .given_no_previous_events()
        .when(MemberCommand::UpdateMember {
            name: None,
            note: None,
            labels: None,
            at: at(),
        })
        .then_expect_error(MemberError::NotFound);
}

#[test]
fn change_email_records_old_and_new_address() {
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::ChangeEmail {
            email: email("ada@lovelace.dev"),
            at: at(),
        })
        .then_expect_events(vec![MemberEvent::MemberEmailChanged {
            old_email: "ada@example.com".into(),
            new_email: "ada@lovelace.dev".into(),
            changed_at: at(),
        }]);
}

#[test]
fn change_to_the_same_email_emits_nothing() {
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::ChangeEmail {
            email: email("ada@example.com"),
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn status_change_records_from_and_to() {
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::SetPaying {
            paying: true,
            reason: "sub_1".into(),
            at: at(),
        })
        .then_expect_events(vec![MemberEvent::MemberStatusChanged {
            from: MemberStatus::Free,
            to: MemberStatus::Paid,
            reason: "sub_1".into(),
            changed_at: at(),
        }]);
}

#[test]
fn status_change_to_the_current_status_emits_nothing() {
    let paid = MemberEvent::MemberStatusChanged {
        from: MemberStatus::Free,
        to: MemberStatus::Paid,
        reason: "sub_1".into(),
        changed_at: at(),
    };
    MemberTest::with(())
        .given(vec![created(), paid])
        .when(MemberCommand::SetPaying {
            paying: true,
            reason: "sub_2".into(),
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn linking_a_customer_twice_emits_once() {
    let linked = MemberEvent::MemberStripeCustomerLinked {
        customer_id: "cus_1".into(),
        linked_at: at(),
    };
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::LinkStripeCustomer {
            customer_id: "cus_1".into(),
            at: at(),
        })
        .then_expect_events(vec![linked.clone()]);
    MemberTest::with(())
        .given(vec![created(), linked])
        .when(MemberCommand::LinkStripeCustomer {
            customer_id: "cus_1".into(),
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn subscribing_twice_emits_once_and_unsubscribing_an_unsubscribed_one_nothing() {
    let newsletter_id = Uuid::from_u128(9);
    let subscribed = MemberEvent::NewsletterSubscribed {
        newsletter_id,
        subscribed_at: at(),
    };
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::SubscribeNewsletter {
            newsletter_id,
            at: at(),
        })
        .then_expect_events(vec![subscribed.clone()]);
    MemberTest::with(())
        .given(vec![created(), subscribed.clone()])
        .when(MemberCommand::SubscribeNewsletter {
            newsletter_id,
            at: at(),
        })
        .then_expect_events(vec![]);
    MemberTest::with(())
        .given(vec![created(), subscribed])
        .when(MemberCommand::UnsubscribeNewsletter {
            newsletter_id,
            at: at(),
        })
        .then_expect_events(vec![MemberEvent::NewsletterUnsubscribed {
            newsletter_id,
            unsubscribed_at: at(),
        }]);
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::UnsubscribeNewsletter {
            newsletter_id,
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn every_login_is_recorded() {
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::RecordLogin {
            method: LoginMethod::Link,
            at: at(),
        })
        .then_expect_events(vec![MemberEvent::MemberLoggedIn {
            method: LoginMethod::Link,
            logged_in_at: at(),
        }]);
}

fn tier() -> Uuid {
    Uuid::from_u128(0x71)
}

fn comp_granted(until: Option<DateTime<Utc>>) -> MemberEvent {
    MemberEvent::MemberCompGranted {
        tier_id: tier(),
        until,
        granted_at: at(),
    }
}

fn status(from: MemberStatus, to: MemberStatus, reason: &str) -> MemberEvent {
    MemberEvent::MemberStatusChanged {
        from,
        to,
        reason: reason.into(),
        changed_at: at(),
    }
}

#[test]
fn the_status_rule_puts_paying_before_a_comp() {
    assert_eq!(MemberStatus::of(true, true), MemberStatus::Paid);
    assert_eq!(MemberStatus::of(true, false), MemberStatus::Paid);
    assert_eq!(MemberStatus::of(false, true), MemberStatus::Comped);
    assert_eq!(MemberStatus::of(false, false), MemberStatus::Free);
}

#[test]
fn a_comp_makes_a_free_member_comped_and_its_end_free_again() {
    let reason = format!("complimentary access to tier {}", tier());
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::GrantComp {
            tier_id: tier(),
            until: None,
            at: at(),
        })
        .then_expect_events(vec![
            comp_granted(None),
            status(MemberStatus::Free, MemberStatus::Comped, &reason),
        ]);
    MemberTest::with(())
        .given(vec![
            created(),
            comp_granted(None),
            status(MemberStatus::Free, MemberStatus::Comped, &reason),
        ])
        .when(MemberCommand::EndComp {
            reason: CompEndReason::Revoked,
            at: at(),
        })
        .then_expect_events(vec![
            MemberEvent::MemberCompEnded {
                tier_id: tier(),
                reason: CompEndReason::Revoked,
                ended_at: at(),
            },
            status(
                MemberStatus::Comped,
                MemberStatus::Free,
                &format!("{reason} revoked"),
            ),
        ]);
}

#[test]
fn a_paying_member_stays_paid_with_a_comp_and_becomes_comped_when_paying_stops() {
    let paid = status(MemberStatus::Free, MemberStatus::Paid, "sub_1");
    MemberTest::with(())
        .given(vec![created(), paid.clone()])
        .when(MemberCommand::GrantComp {
            tier_id: tier(),
            until: None,
            at: at(),
        })
        .then_expect_events(vec![comp_granted(None)]);
    MemberTest::with(())
        .given(vec![created(), paid, comp_granted(None)])
        .when(MemberCommand::SetPaying {
            paying: false,
            reason: "sub_1 canceled".into(),
            at: at(),
        })
        .then_expect_events(vec![status(
            MemberStatus::Paid,
            MemberStatus::Comped,
            "sub_1 canceled",
        )]);
}

#[test]
fn the_same_comp_twice_emits_nothing_and_one_ending_in_the_past_is_refused() {
    MemberTest::with(())
        .given(vec![created(), comp_granted(None)])
        .when(MemberCommand::GrantComp {
            tier_id: tier(),
            until: None,
            at: at(),
        })
        .then_expect_events(vec![]);
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::GrantComp {
            tier_id: tier(),
            until: Some(at()),
            at: at(),
        })
        .then_expect_error(MemberError::CompUntilPassed);
}

#[test]
fn expiry_ends_only_a_comp_whose_until_has_passed() {
    let later = at() + chrono::Duration::days(1);
    MemberTest::with(())
        .given(vec![created(), comp_granted(Some(later))])
        .when(MemberCommand::EndComp {
            reason: CompEndReason::Expired,
            at: at(),
        })
        .then_expect_events(vec![]);
    MemberTest::with(())
        .given(vec![created(), comp_granted(None)])
        .when(MemberCommand::EndComp {
            reason: CompEndReason::Expired,
            at: later,
        })
        .then_expect_events(vec![]);
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::EndComp {
            reason: CompEndReason::Expired,
            at: later,
        })
        .then_expect_events(vec![]);
    MemberTest::with(())
        .given(vec![created(), comp_granted(Some(later))])
        .when(MemberCommand::EndComp {
            reason: CompEndReason::Expired,
            at: later,
        })
        .then_expect_events(vec![MemberEvent::MemberCompEnded {
            tier_id: tier(),
            reason: CompEndReason::Expired,
            ended_at: later,
        }]);
}

#[test]
fn change_email_of_an_unknown_member_is_refused() {
    MemberTest::with(())
        .given_no_previous_events()
        .when(MemberCommand::ChangeEmail {
            email: email("ada@example.com"),
            at: at(),
        })
        .then_expect_error(MemberError::NotFound);
}

#[test]
fn erasing_a_member_appends_member_erased() {
    MemberTest::with(())
        .given(vec![created()])
        .when(MemberCommand::Erase { at: at() })
        .then_expect_events(vec![MemberEvent::MemberErased { erased_at: at() }]);
}

#[test]
fn erasing_a_comped_member_ends_the_comp_and_the_status_first() {
    let tier_id = tier();
    MemberTest::with(())
        .given(vec![
            created(),
            comp_granted(None),
            status(MemberStatus::Free, MemberStatus::Comped, "comped"),
        ])
        .when(MemberCommand::Erase { at: at() })
        .then_expect_events(vec![
            MemberEvent::MemberCompEnded {
                tier_id,
                reason: CompEndReason::Revoked,
                ended_at: at(),
            },
            MemberEvent::MemberStatusChanged {
                from: MemberStatus::Comped,
                to: MemberStatus::Free,
                reason: format!("complimentary access to tier {tier_id} ended by erasure"),
                changed_at: at(),
            },
            MemberEvent::MemberErased { erased_at: at() },
        ]);
}

#[test]
fn an_erased_member_exists_for_no_command() {
    let erased = || vec![created(), MemberEvent::MemberErased { erased_at: at() }];
    MemberTest::with(())
        .given(erased())
        .when(MemberCommand::Erase { at: at() })
        .then_expect_error(MemberError::NotFound);
    MemberTest::with(())
        .given(erased())
        .when(MemberCommand::RecordLogin {
            method: LoginMethod::Code,
            at: at(),
        })
        .then_expect_error(MemberError::NotFound);
    MemberTest::with(())
        .given(erased())
        .when(create())
        .then_expect_error(MemberError::AlreadyExists);
}

#[test]
fn an_erased_member_keeps_no_personal_data_in_its_state() {
    use cqrs_es::Aggregate;

    let mut member = Member::default();
    member.apply(created());
    assert_eq!(member.email(), "ada@example.com");
    member.apply(MemberEvent::MemberErased { erased_at: at() });
    assert_eq!(member.email(), "");
    let state = serde_json::to_string(&member).expect("serialized");
    assert!(!state.contains("ada") && !state.contains("Ada"), "{state}");
}

#[test]
fn outside_state_about_an_erased_member_records_nothing() {
    MemberTest::with(())
        .given(vec![
            created(),
            MemberEvent::MemberErased { erased_at: at() },
        ])
        .when(MemberCommand::SetPaying {
            paying: true,
            reason: "sub_1 active".into(),
            at: at(),
        })
        .then_expect_events(vec![]);
}
