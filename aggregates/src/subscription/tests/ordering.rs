use super::*;

#[test]
fn a_later_second_orders_after_everything_earlier() {
    assert!(deleted_at(100).key(S::Canceled) < created_at(101).key(S::Incomplete));
}

#[test]
fn in_the_same_second_created_orders_before_updated_before_deleted() {
    let created = obs(StripeObservation::SUBSCRIPTION_CREATED, 100, "evt_c");
    let updated = obs(StripeObservation::SUBSCRIPTION_UPDATED, 100, "evt_b");
    let deleted = obs(StripeObservation::SUBSCRIPTION_DELETED, 100, "evt_a");
    assert!(created.key(S::Canceled) < updated.key(S::Incomplete));
    assert!(updated.key(S::Canceled) < deleted.key(S::Incomplete));
}

#[test]
fn in_the_same_second_and_type_the_lifecycle_orders_the_statuses() {
    let ranked = [
        S::Incomplete,
        S::Trialing,
        S::Active,
        S::PastDue,
        S::Unpaid,
        S::Canceled,
    ];
    for pair in ranked.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            obs("x", 100, "evt_z").key(a) < obs("x", 100, "evt_a").key(b),
            "{a} < {b}"
        );
    }
    // Equal ranks fall through to the event id.
    assert!(obs("x", 100, "evt_a").key(S::Paused) < obs("x", 100, "evt_b").key(S::Unpaid));
    assert!(
        obs("x", 100, "evt_a").key(S::Canceled) < obs("x", 100, "evt_b").key(S::IncompleteExpired)
    );
}

#[test]
fn only_the_same_event_has_an_equal_key() {
    assert!(updated_at(100).key(S::Active) == updated_at(100).key(S::Active));
    assert!(obs("x", 100, "evt_a").key(S::Active) < obs("x", 100, "evt_b").key(S::Active));
}

#[test]
fn an_older_state_emits_nothing() {
    let mut old = state(S::PastDue);
    old.items = vec![];
    SubscriptionTest::with(())
        .given(active_at_200())
        .when(apply(old, updated_at(150)))
        .then_expect_events(vec![]);
}

#[test]
fn a_redelivered_state_emits_nothing() {
    SubscriptionTest::with(())
        .given(creation_of(S::Active, &created_at(100)))
        .when(apply(state(S::Active), created_at(100)))
        .then_expect_events(vec![]);
}

#[test]
fn a_newer_state_that_changes_nothing_emits_state_observed() {
    SubscriptionTest::with(())
        .given(creation_of(S::Active, &created_at(100)))
        .when(apply(state(S::Active), updated_at(200)))
        .then_expect_events(vec![E::SubscriptionStateObserved {
            observed: updated_at(200),
        }]);
}

#[test]
fn state_observed_moves_the_watermark() {
    SubscriptionTest::with(())
        .given(active_at_200())
        .when(apply(state(S::PastDue), updated_at(199)))
        .then_expect_events(vec![]);
}

#[test]
fn in_the_same_second_a_deletion_wins_over_an_update() {
    let observed = deleted_at(200);
    SubscriptionTest::with(())
        .given(active_at_200())
        .when(apply(state(S::Canceled), observed.clone()))
        .then_expect_events(vec![
            E::SubscriptionStatusChanged {
                from: S::Active,
                to: S::Canceled,
                observed: observed.clone(),
            },
            E::SubscriptionCanceled {
                canceled_at: t(200),
                observed,
            },
        ]);
}

#[test]
fn in_the_same_second_a_created_event_loses_to_an_update() {
    SubscriptionTest::with(())
        .given(active_at_200())
        .when(apply(
            state(S::Incomplete),
            obs(StripeObservation::SUBSCRIPTION_CREATED, 200, "evt_zzz"),
        ))
        .then_expect_events(vec![]);
}

#[test]
fn in_the_same_second_the_later_lifecycle_status_wins_over_the_event_id() {
    let past_due = obs(StripeObservation::SUBSCRIPTION_UPDATED, 200, "evt_m");
    let mut given = creation_of(S::Active, &created_at(100));
    given.push(E::SubscriptionStatusChanged {
        from: S::Active,
        to: S::PastDue,
        observed: past_due,
    });
    let earlier_id = obs(StripeObservation::SUBSCRIPTION_UPDATED, 200, "evt_a");
    let later_id = obs(StripeObservation::SUBSCRIPTION_UPDATED, 200, "evt_z");
    SubscriptionTest::with(())
        .given(given.clone())
        .when(apply(state(S::Active), later_id))
        .then_expect_events(vec![]);
    SubscriptionTest::with(())
        .given(given)
        .when(apply(state(S::Unpaid), earlier_id.clone()))
        .then_expect_events(vec![E::SubscriptionStatusChanged {
            from: S::PastDue,
            to: S::Unpaid,
            observed: earlier_id,
        }]);
}

#[test]
fn in_the_same_second_and_status_the_event_id_decides() {
    let given = || {
        let mut events = creation_of(S::Active, &created_at(100));
        events.push(E::SubscriptionStateObserved {
            observed: obs(StripeObservation::SUBSCRIPTION_UPDATED, 200, "evt_m"),
        });
        events
    };
    let mut two_seats = state(S::Active);
    two_seats.items.push(seats_item(2));
    let lower = obs(StripeObservation::SUBSCRIPTION_UPDATED, 200, "evt_a");
    let higher = obs(StripeObservation::SUBSCRIPTION_UPDATED, 200, "evt_z");
    SubscriptionTest::with(())
        .given(given())
        .when(apply(two_seats.clone(), lower))
        .then_expect_events(vec![]);
    SubscriptionTest::with(())
        .given(given())
        .when(apply(two_seats, higher.clone()))
        .then_expect_events(vec![E::SubscriptionItemAdded {
            item: seats_item(2),
            observed: higher,
        }]);
}

#[test]
fn a_state_of_another_subscription_is_refused() {
    let mut other = state(S::Active);
    other.subscription_id = "sub_2".into();
    SubscriptionTest::with(())
        .given(creation_of(S::Active, &created_at(100)))
        .when(apply(other, updated_at(200)))
        .then_expect_error(SubscriptionError::WrongSubscription);
}
