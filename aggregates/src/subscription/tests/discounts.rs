use super::*;

fn offer() -> Uuid {
    Uuid::from_u128(0x0ffe_0000_0000_7000_8000_0000_0000_0001)
}

/// 20 % off for three months from t=100.
fn twenty_percent() -> Discount {
    Discount {
        discount_id: Some("di_1".into()),
        coupon_id: Some("co_launch".into()),
        off: DiscountOff::PercentHundredths(2000),
        duration: DiscountDuration::Repeating(3),
        end: Some(t(100 + 3 * MONTH)),
    }
}

fn with_offer(status: SubscriptionStatus, discounts: Vec<Discount>) -> StripeSubscriptionState {
    StripeSubscriptionState {
        discounts,
        offer_id: Some(offer()),
        ..state(status)
    }
}

fn redeemed(observed: StripeObservation) -> E {
    E::OfferRedeemed {
        offer_id: offer(),
        member_id: member(),
        customer_id: "cus_1".into(),
        redeemed_at: t(observed.created),
        observed,
    }
}

/// The events of creating the subscription with the offer at t=100.
fn created_with_offer() -> Vec<E> {
    let observed = created_at(100);
    let mut events = creation_of(S::Active, &observed);
    events.insert(
        2,
        E::SubscriptionDiscountChanged {
            from: vec![],
            to: vec![twenty_percent()],
            observed: observed.clone(),
        },
    );
    events.push(redeemed(observed));
    events
}

fn after(events: Vec<E>) -> Subscription {
    let mut subscription = Subscription::default();
    for event in events {
        subscription.apply(event);
    }
    subscription
}

#[test]
fn a_subscription_started_with_an_offer_records_its_discount_and_the_redemption() {
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(apply(
            with_offer(S::Active, vec![twenty_percent()]),
            created_at(100),
        ))
        .then_expect_events(created_with_offer());
    let subscription = after(created_with_offer());
    assert_eq!(subscription.mrr(), 800, "1000 a month, 20 % off");
    assert!(subscription.redeemed(offer()));
}

#[test]
fn a_redelivered_or_later_state_with_the_offer_does_not_redeem_it_again() {
    SubscriptionTest::with(())
        .given(created_with_offer())
        .when(apply(
            with_offer(S::Active, vec![twenty_percent()]),
            created_at(100),
        ))
        .then_expect_events(vec![]);
    SubscriptionTest::with(())
        .given(created_with_offer())
        .when(apply(
            with_offer(S::Active, vec![twenty_percent()]),
            updated_at(200),
        ))
        .then_expect_events(vec![E::SubscriptionStateObserved {
            observed: updated_at(200),
        }]);
}

#[test]
fn an_update_delivered_before_the_creation_redeems_once_and_the_creation_is_stale() {
    let first = updated_at(200);
    let mut events = creation_of(S::Active, &first);
    events.insert(
        2,
        E::SubscriptionDiscountChanged {
            from: vec![],
            to: vec![twenty_percent()],
            observed: first.clone(),
        },
    );
    events.push(redeemed(first.clone()));
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(apply(with_offer(S::Active, vec![twenty_percent()]), first))
        .then_expect_events(events.clone());
    SubscriptionTest::with(())
        .given(events)
        .when(apply(
            with_offer(S::Active, vec![twenty_percent()]),
            created_at(100),
        ))
        .then_expect_events(vec![]);
}

#[test]
fn a_state_without_the_discount_ends_it_and_mrr_is_full_price_again() {
    let ended = E::SubscriptionDiscountChanged {
        from: vec![twenty_percent()],
        to: vec![],
        observed: updated_at(200),
    };
    SubscriptionTest::with(())
        .given(created_with_offer())
        .when(apply(with_offer(S::Active, vec![]), updated_at(200)))
        .then_expect_events(vec![ended.clone()]);
    let mut events = created_with_offer();
    events.push(ended);
    let subscription = after(events);
    assert_eq!(subscription.mrr(), 1000);
    assert!(subscription.discounts().is_empty());
}

#[test]
fn a_discount_whose_end_passed_by_the_observation_no_longer_counts() {
    let late = updated_at(100 + 3 * MONTH);
    SubscriptionTest::with(())
        .given(created_with_offer())
        .when(apply(
            with_offer(S::Active, vec![twenty_percent()]),
            late.clone(),
        ))
        .then_expect_events(vec![E::SubscriptionDiscountChanged {
            from: vec![twenty_percent()],
            to: vec![],
            observed: late,
        }]);
}

#[test]
fn a_yearly_price_with_an_amount_off_counts_the_discounted_year_over_twelve_months() {
    let mut yearly = state(S::Active);
    yearly.items[0].price.interval = BillingInterval::Year;
    yearly.items[0].price.unit_amount = 5000;
    let off = Discount {
        discount_id: None,
        coupon_id: Some("co_year".into()),
        off: DiscountOff::Amount {
            amount: 1000,
            currency: "usd".into(),
        },
        duration: DiscountDuration::Forever,
        end: None,
    };
    yearly.discounts = vec![off];
    let mut subscription = Subscription::default();
    let events = subscription
        .decide_stripe_state(&yearly, &created_at(100))
        .expect("applies");
    for event in events {
        subscription.apply(event);
    }
    assert_eq!(subscription.mrr(), 333, "(5000 - 1000) / 12");
    assert!(
        !subscription.redeemed(offer()),
        "no offer named: nothing redeemed"
    );
}
