use super::*;

#[test]
fn a_new_item_emits_item_added() {
    let mut next = state(S::Active);
    next.items.push(seats_item(2));
    SubscriptionTest::with(())
        .given(creation_of(S::Active, &created_at(100)))
        .when(apply(next, updated_at(200)))
        .then_expect_events(vec![E::SubscriptionItemAdded {
            item: seats_item(2),
            observed: updated_at(200),
        }]);
}

#[test]
fn a_missing_item_emits_item_removed_with_its_site() {
    let mut next = state(S::Active);
    next.items = vec![];
    SubscriptionTest::with(())
        .given(creation_of(S::Active, &created_at(100)))
        .when(apply(next, updated_at(200)))
        .then_expect_events(vec![E::SubscriptionItemRemoved {
            item_id: "si_site".into(),
            site: Some("example.com".into()),
            observed: updated_at(200),
        }]);
}

#[test]
fn a_new_quantity_emits_quantity_changed() {
    let mut given = creation_of(S::Active, &created_at(100));
    given.push(E::SubscriptionItemAdded {
        item: seats_item(2),
        observed: created_at(100),
    });
    let mut next = state(S::Active);
    next.items.push(seats_item(5));
    SubscriptionTest::with(())
        .given(given)
        .when(apply(next, updated_at(200)))
        .then_expect_events(vec![E::SubscriptionItemQuantityChanged {
            item_id: "si_seats".into(),
            from: 2,
            to: 5,
            observed: updated_at(200),
        }]);
}

#[test]
fn a_new_price_emits_plan_changed() {
    let mut next = state(S::Active);
    next.items[0].price = price("price_site_pro", 2500);
    SubscriptionTest::with(())
        .given(creation_of(S::Active, &created_at(100)))
        .when(apply(next, updated_at(200)))
        .then_expect_events(vec![E::SubscriptionPlanChanged {
            item_id: "si_site".into(),
            from: price("price_site", 1000),
            to: price("price_site_pro", 2500),
            observed: updated_at(200),
        }]);
}

#[test]
fn a_new_amount_or_interval_of_the_same_price_id_emits_plan_changed() {
    let mut yearly = price("price_site", 10000);
    yearly.interval = BillingInterval::Year;
    let mut next = state(S::Active);
    next.items[0].price = yearly.clone();
    SubscriptionTest::with(())
        .given(creation_of(S::Active, &created_at(100)))
        .when(apply(next, updated_at(200)))
        .then_expect_events(vec![E::SubscriptionPlanChanged {
            item_id: "si_site".into(),
            from: price("price_site", 1000),
            to: yearly,
            observed: updated_at(200),
        }]);
}

#[test]
fn a_changed_site_of_an_existing_item_is_ignored() {
    let mut next = state(S::Active);
    next.items[0].site = Some("other.example".into());
    SubscriptionTest::with(())
        .given(creation_of(S::Active, &created_at(100)))
        .when(apply(next, updated_at(200)))
        .then_expect_events(vec![E::SubscriptionStateObserved {
            observed: updated_at(200),
        }]);
}

#[test]
fn a_new_period_emits_period_changed() {
    let mut next = state(S::Active);
    next.current_period_start = Some(t(100 + MONTH));
    next.current_period_end = Some(t(100 + 2 * MONTH));
    SubscriptionTest::with(())
        .given(creation_of(S::Active, &created_at(100)))
        .when(apply(next, updated_at(100 + MONTH)))
        .then_expect_events(vec![E::SubscriptionPeriodChanged {
            current_period_start: Some(t(100 + MONTH)),
            current_period_end: Some(t(100 + 2 * MONTH)),
            observed: updated_at(100 + MONTH),
        }]);
}

#[test]
fn canceling_at_period_end_emits_cancellation_scheduled() {
    let mut next = state(S::Active);
    next.cancel_at_period_end = true;
    next.cancel_at = Some(t(100 + MONTH));
    SubscriptionTest::with(())
        .given(creation_of(S::Active, &created_at(100)))
        .when(apply(next, updated_at(200)))
        .then_expect_events(vec![E::SubscriptionCancellationScheduled {
            cancel_at: Some(t(100 + MONTH)),
            observed: updated_at(200),
        }]);
}

#[test]
fn resuming_a_scheduled_cancellation_emits_cancellation_unscheduled() {
    let mut given = creation_of(S::Active, &created_at(100));
    given.push(E::SubscriptionCancellationScheduled {
        cancel_at: Some(t(100 + MONTH)),
        observed: updated_at(200),
    });
    SubscriptionTest::with(())
        .given(given)
        .when(apply(state(S::Active), updated_at(300)))
        .then_expect_events(vec![E::SubscriptionCancellationUnscheduled {
            observed: updated_at(300),
        }]);
}

#[test]
fn deletion_emits_status_changed_then_canceled() {
    let mut deleted = state(S::Canceled);
    deleted.canceled_at = Some(t(395));
    SubscriptionTest::with(())
        .given(active_at_200())
        .when(apply(deleted, deleted_at(400)))
        .then_expect_events(vec![
            E::SubscriptionStatusChanged {
                from: S::Active,
                to: S::Canceled,
                observed: deleted_at(400),
            },
            E::SubscriptionCanceled {
                canceled_at: t(395),
                observed: deleted_at(400),
            },
        ]);
}

#[test]
fn paying_an_incomplete_subscription_activates_it() {
    SubscriptionTest::with(())
        .given(creation_of(S::Incomplete, &created_at(100)))
        .when(apply(state(S::Active), updated_at(101)))
        .then_expect_events(vec![
            E::SubscriptionStatusChanged {
                from: S::Incomplete,
                to: S::Active,
                observed: updated_at(101),
            },
            E::SubscriptionActivated {
                status: S::Active,
                observed: updated_at(101),
            },
        ]);
}

#[test]
fn recovering_from_past_due_activates_again() {
    let mut given = creation_of(S::Active, &created_at(100));
    given.push(E::SubscriptionStatusChanged {
        from: S::Active,
        to: S::PastDue,
        observed: updated_at(200),
    });
    SubscriptionTest::with(())
        .given(given)
        .when(apply(state(S::Active), updated_at(201)))
        .then_expect_events(vec![
            E::SubscriptionStatusChanged {
                from: S::PastDue,
                to: S::Active,
                observed: updated_at(201),
            },
            E::SubscriptionActivated {
                status: S::Active,
                observed: updated_at(201),
            },
        ]);
}

#[test]
fn a_trial_turning_active_is_not_activated_twice() {
    SubscriptionTest::with(())
        .given(creation_of(S::Trialing, &created_at(100)))
        .when(apply(state(S::Active), updated_at(200)))
        .then_expect_events(vec![E::SubscriptionStatusChanged {
            from: S::Trialing,
            to: S::Active,
            observed: updated_at(200),
        }]);
}

#[test]
fn many_changes_in_one_state_come_in_the_documented_order() {
    let mut given = creation_of(S::Incomplete, &created_at(100));
    given.push(E::SubscriptionItemAdded {
        item: seats_item(2),
        observed: created_at(100),
    });
    let extra = SubscriptionItem {
        item_id: "si_extra".into(),
        price: price("price_extra", 300),
        quantity: 1,
        site: Some("extra.example".into()),
        purchase_type: PurchaseType::Site,
        license_purchase_id: None,
    };
    let mut seats = seats_item(4);
    seats.price = price("price_seat_v2", 600);
    let mut next = state(S::Active);
    next.items = vec![extra.clone(), seats];
    next.current_period_end = Some(t(200 + MONTH));
    next.cancel_at_period_end = true;
    let o = updated_at(200);
    SubscriptionTest::with(())
        .given(given)
        .when(apply(next, o.clone()))
        .then_expect_events(vec![
            E::SubscriptionItemRemoved {
                item_id: "si_site".into(),
                site: Some("example.com".into()),
                observed: o.clone(),
            },
            E::SubscriptionItemAdded {
                item: extra,
                observed: o.clone(),
            },
            E::SubscriptionPlanChanged {
                item_id: "si_seats".into(),
                from: price("price_seat", 500),
                to: price("price_seat_v2", 600),
                observed: o.clone(),
            },
            E::SubscriptionItemQuantityChanged {
                item_id: "si_seats".into(),
                from: 2,
                to: 4,
                observed: o.clone(),
            },
            E::SubscriptionPeriodChanged {
                current_period_start: Some(t(100)),
                current_period_end: Some(t(200 + MONTH)),
                observed: o.clone(),
            },
            E::SubscriptionCancellationScheduled {
                cancel_at: None,
                observed: o.clone(),
            },
            E::SubscriptionStatusChanged {
                from: S::Incomplete,
                to: S::Active,
                observed: o.clone(),
            },
            E::SubscriptionActivated {
                status: S::Active,
                observed: o,
            },
        ]);
}

#[test]
fn an_item_removed_through_the_api_is_recorded_once_and_older_states_do_not_restore_it() {
    let created = creation_of(SubscriptionStatus::Active, &created_at(100));
    let removal = obs(
        "memberledger.subscription_item.deleted",
        150,
        "api_delete_si_site",
    );
    TestFramework::<Subscription>::with(())
        .given(created.clone())
        .when(SubscriptionCommand::RecordItemRemoval {
            item_id: site_item().item_id,
            observed: removal.clone(),
        })
        .then_expect_events(vec![E::SubscriptionItemRemoved {
            item_id: site_item().item_id,
            site: site_item().site,
            observed: removal.clone(),
        }]);
    let mut after = created;
    after.push(E::SubscriptionItemRemoved {
        item_id: site_item().item_id,
        site: site_item().site,
        observed: removal,
    });
    TestFramework::<Subscription>::with(())
        .given(after.clone())
        .when(SubscriptionCommand::RecordItemRemoval {
            item_id: site_item().item_id,
            observed: obs(
                "memberledger.subscription_item.deleted",
                151,
                "api_delete_again",
            ),
        })
        .then_expect_events(vec![]);
    // A webhook sent before the removal still lists the item: it is stale.
    TestFramework::<Subscription>::with(())
        .given(after)
        .when(apply(state(SubscriptionStatus::Active), updated_at(120)))
        .then_expect_events(vec![]);
}

#[test]
fn a_payment_link_site_is_assigned_to_the_only_item_once() {
    let created = creation_of(SubscriptionStatus::Active, &created_at(100));
    let observed = created_at(100);
    let quantity_only: Vec<E> = created
        .iter()
        .cloned()
        .map(|e| match e {
            E::SubscriptionItemAdded { .. } => E::SubscriptionItemAdded {
                item: seats_item(1),
                observed: observed.clone(),
            },
            other => other,
        })
        .collect();
    let mut two_items = created;
    two_items.push(E::SubscriptionItemAdded {
        item: seats_item(1),
        observed,
    });
    let assign = || SubscriptionCommand::AssignItemSite {
        site: "linked.example.com".into(),
        session_id: "cs_link".into(),
    };
    let item_id = quantity_only
        .iter()
        .find_map(|e| match e {
            E::SubscriptionItemAdded { item, .. } => Some(item.item_id.clone()),
            _ => None,
        })
        .expect("one item");
    let assigned = E::SubscriptionItemSiteAssigned {
        item_id: item_id.clone(),
        site: "linked.example.com".into(),
        session_id: "cs_link".into(),
    };
    TestFramework::<Subscription>::with(())
        .given(quantity_only.clone())
        .when(assign())
        .then_expect_events(vec![assigned.clone()]);
    let mut again = quantity_only.clone();
    again.push(assigned.clone());
    TestFramework::<Subscription>::with(())
        .given(again.clone())
        .when(assign())
        .then_expect_events(vec![]);
    let mut sub = Subscription::default();
    for e in again {
        sub.apply(e);
    }
    let item = sub.item(&item_id).expect("item");
    assert_eq!(item.site.as_deref(), Some("linked.example.com"));
    assert_eq!(item.purchase_type, PurchaseType::Site);
    // Not for an unknown subscription, nor one with two items.
    TestFramework::<Subscription>::with(())
        .given_no_previous_events()
        .when(assign())
        .then_expect_events(vec![]);
    TestFramework::<Subscription>::with(())
        .given(two_items)
        .when(assign())
        .then_expect_events(vec![]);
}
