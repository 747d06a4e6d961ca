use super::*;

#[test]
fn a_payment_is_recorded() {
    SubscriptionTest::with(())
        .given(creation_of(S::Active, &created_at(100)))
        .when(SubscriptionCommand::RecordPayment {
            payment: payment("in_1"),
        })
        .then_expect_events(vec![E::PaymentRecorded {
            payment: payment("in_1"),
        }]);
}

#[test]
fn a_payment_of_a_recorded_invoice_emits_nothing() {
    SubscriptionTest::with(())
        .given(vec![E::PaymentRecorded {
            payment: payment("in_1"),
        }])
        .when(SubscriptionCommand::RecordPayment {
            payment: payment("in_1"),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_payment_of_another_invoice_is_recorded_too() {
    SubscriptionTest::with(())
        .given(vec![E::PaymentRecorded {
            payment: payment("in_1"),
        }])
        .when(SubscriptionCommand::RecordPayment {
            payment: payment("in_2"),
        })
        .then_expect_events(vec![E::PaymentRecorded {
            payment: payment("in_2"),
        }]);
}

#[test]
fn a_payment_can_arrive_before_the_subscription() {
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(SubscriptionCommand::RecordPayment {
            payment: payment("in_1"),
        })
        .then_expect_events(vec![E::PaymentRecorded {
            payment: payment("in_1"),
        }]);
}

#[test]
fn the_subscription_can_arrive_after_its_payment() {
    SubscriptionTest::with(())
        .given(vec![E::PaymentRecorded {
            payment: payment("in_1"),
        }])
        .when(apply(state(S::Active), created_at(100)))
        .then_expect_events(creation_of(S::Active, &created_at(100)));
}

#[test]
fn each_failed_attempt_is_recorded_once() {
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(failure(1))
        .then_expect_events(vec![failed(1)]);
    SubscriptionTest::with(())
        .given(vec![failed(1)])
        .when(failure(1))
        .then_expect_events(vec![]);
    SubscriptionTest::with(())
        .given(vec![failed(1)])
        .when(failure(2))
        .then_expect_events(vec![failed(2)]);
}

#[test]
fn a_first_refund_records_the_refunded_total() {
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(refund(500))
        .then_expect_events(vec![refunded(500)]);
}

#[test]
fn a_further_refund_records_only_the_increase() {
    SubscriptionTest::with(())
        .given(vec![refunded(500)])
        .when(refund(800))
        .then_expect_events(vec![refunded(300)]);
}

#[test]
fn a_refund_total_that_did_not_grow_emits_nothing() {
    SubscriptionTest::with(())
        .given(vec![refunded(500), refunded(300)])
        .when(refund(800))
        .then_expect_events(vec![]);
    SubscriptionTest::with(())
        .given(vec![refunded(500)])
        .when(refund(300))
        .then_expect_events(vec![]);
    SubscriptionTest::with(())
        .given_no_previous_events()
        .when(refund(0))
        .then_expect_events(vec![]);
}
