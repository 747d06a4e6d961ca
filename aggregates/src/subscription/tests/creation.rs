use super::*;

#[test]
fn first_state_emits_created_then_its_items_then_activated() {
    let observed = created_at(100);
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(apply(state(S::Active), observed.clone()))
        .then_expect_events(vec![
            E::SubscriptionCreated {
                subscription_id: "sub_1".into(),
                member_id: member(),
                customer_id: "cus_1".into(),
                status: S::Active,
                current_period_start: Some(t(100)),
                current_period_end: Some(t(100 + MONTH)),
                cancel_at_period_end: false,
                created: t(100),
                observed: observed.clone(),
            },
            E::SubscriptionItemAdded {
                item: site_item(),
                observed: observed.clone(),
            },
            E::SubscriptionActivated {
                status: S::Active,
                observed,
            },
        ]);
}

#[test]
fn first_state_adds_items_in_the_given_order() {
    let observed = created_at(100);
    let mut first = state(S::Incomplete);
    first.items = vec![site_item(), seats_item(3)];
    let mut expected = creation_of(S::Incomplete, &observed);
    expected.push(E::SubscriptionItemAdded {
        item: seats_item(3),
        observed: observed.clone(),
    });
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(apply(first, observed))
        .then_expect_events(expected);
}

#[test]
fn an_incomplete_subscription_is_created_but_not_activated() {
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(apply(state(S::Incomplete), created_at(100)))
        .then_expect_events(creation_of(S::Incomplete, &created_at(100)));
}

#[test]
fn first_state_canceling_at_period_end_schedules_the_cancellation() {
    let observed = updated_at(150);
    let mut first = state(S::Active);
    first.cancel_at_period_end = true;
    first.cancel_at = Some(t(100 + MONTH));
    let mut expected = creation_of(S::Active, &observed);
    if let Some(E::SubscriptionCreated {
        cancel_at_period_end,
        ..
    }) = expected.first_mut()
    {
        *cancel_at_period_end = true;
    }
    expected.push(E::SubscriptionCancellationScheduled {
        cancel_at: Some(t(100 + MONTH)),
        observed: observed.clone(),
    });
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(apply(first, observed))
        .then_expect_events(expected);
}

#[test]
fn first_state_already_deleted_is_created_and_canceled() {
    let observed = deleted_at(400);
    let mut first = state(S::Canceled);
    first.canceled_at = Some(t(390));
    let mut expected = creation_of(S::Canceled, &observed);
    expected.push(E::SubscriptionCanceled {
        canceled_at: t(390),
        observed: observed.clone(),
    });
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(apply(first, observed))
        .then_expect_events(expected);
}

#[test]
fn a_cancellation_without_canceled_at_is_dated_by_the_event() {
    let observed = deleted_at(400);
    let mut expected = creation_of(S::Canceled, &observed);
    expected.push(E::SubscriptionCanceled {
        canceled_at: t(400),
        observed: observed.clone(),
    });
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(apply(state(S::Canceled), observed))
        .then_expect_events(expected);
}

#[test]
fn a_cancellation_with_an_event_time_out_of_range_is_dated_by_the_subscription() {
    let observed = obs(StripeObservation::SUBSCRIPTION_DELETED, i64::MAX, "evt_x");
    let mut expected = creation_of(S::Canceled, &observed);
    expected.push(E::SubscriptionCanceled {
        canceled_at: t(100),
        observed: observed.clone(),
    });
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(apply(state(S::Canceled), observed))
        .then_expect_events(expected);
}

#[test]
fn an_item_listed_twice_is_added_once() {
    let mut first = state(S::Incomplete);
    first.items = vec![site_item(), site_item()];
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(apply(first, created_at(100)))
        .then_expect_events(creation_of(S::Incomplete, &created_at(100)));
}
