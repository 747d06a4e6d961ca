//! Given/when/then tests of the Subscription aggregate, by topic; the helpers they share.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::*;

mod changes;
mod convergence;
mod creation;
mod discounts;
mod ordering;
mod payments;
mod purchases;
mod state;

type SubscriptionTest = TestFramework<Subscription>;
use SubscriptionEvent as E;
use SubscriptionStatus as S;

const MONTH: i64 = 30 * 24 * 3600;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("valid time")
}

fn member() -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
}

fn price(price_id: &str, unit_amount: i64) -> Price {
    Price {
        price_id: price_id.into(),
        product_id: Some("prod_1".into()),
        unit_amount,
        currency: "usd".into(),
        interval: BillingInterval::Month,
        interval_count: 1,
    }
}

fn site_item() -> SubscriptionItem {
    SubscriptionItem {
        item_id: "si_site".into(),
        price: price("price_site", 1000),
        quantity: 1,
        site: Some("example.com".into()),
        purchase_type: PurchaseType::Site,
        license_purchase_id: None,
    }
}

fn seats_item(quantity: u32) -> SubscriptionItem {
    SubscriptionItem {
        item_id: "si_seats".into(),
        price: price("price_seat", 500),
        quantity,
        site: None,
        purchase_type: PurchaseType::Quantity,
        license_purchase_id: None,
    }
}

fn state(status: SubscriptionStatus) -> StripeSubscriptionState {
    StripeSubscriptionState {
        subscription_id: "sub_1".into(),
        customer_id: "cus_1".into(),
        member_id: member(),
        status,
        items: vec![site_item()],
        current_period_start: Some(t(100)),
        current_period_end: Some(t(100 + MONTH)),
        cancel_at_period_end: false,
        cancel_at: None,
        canceled_at: None,
        created: t(100),
        discounts: Vec::new(),
        offer_id: None,
    }
}

fn obs(event_type: &str, created: i64, event_id: &str) -> StripeObservation {
    StripeObservation {
        event_id: event_id.into(),
        event_type: event_type.into(),
        created,
    }
}

fn created_at(created: i64) -> StripeObservation {
    obs(
        StripeObservation::SUBSCRIPTION_CREATED,
        created,
        &format!("evt_{created}"),
    )
}

fn updated_at(created: i64) -> StripeObservation {
    obs(
        StripeObservation::SUBSCRIPTION_UPDATED,
        created,
        &format!("evt_{created}"),
    )
}

fn deleted_at(created: i64) -> StripeObservation {
    obs(
        StripeObservation::SUBSCRIPTION_DELETED,
        created,
        &format!("evt_{created}"),
    )
}

fn apply(state: StripeSubscriptionState, observed: StripeObservation) -> SubscriptionCommand {
    SubscriptionCommand::ApplyStripeState { state, observed }
}

/// The events of first seeing `state(status)` (one site item) by `observed`.
fn creation_of(status: SubscriptionStatus, observed: &StripeObservation) -> Vec<E> {
    let mut events = vec![
        E::SubscriptionCreated {
            subscription_id: "sub_1".into(),
            member_id: member(),
            customer_id: "cus_1".into(),
            status,
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
    ];
    if status.is_activated() {
        events.push(E::SubscriptionActivated {
            status,
            observed: observed.clone(),
        });
    }
    events
}

/// An active subscription, last seen by an update at t=200.
fn active_at_200() -> Vec<E> {
    let mut events = creation_of(S::Active, &created_at(100));
    events.push(E::SubscriptionStateObserved {
        observed: updated_at(200),
    });
    events
}

fn payment(invoice_id: &str) -> Payment {
    Payment {
        invoice_id: invoice_id.into(),
        member_id: member(),
        customer_id: "cus_1".into(),
        amount_paid: 1000,
        currency: "usd".into(),
        billing_reason: Some("subscription_cycle".into()),
        payment_intent_id: Some("pi_1".into()),
        period_start: Some(t(100)),
        period_end: Some(t(100 + MONTH)),
        paid_at: t(150),
    }
}

fn failure(attempt_count: u32) -> SubscriptionCommand {
    SubscriptionCommand::RecordPaymentFailure {
        invoice_id: "in_1".into(),
        member_id: member(),
        customer_id: "cus_1".into(),
        amount_due: 1000,
        currency: "usd".into(),
        attempt_count,
        failed_at: t(150),
    }
}

fn failed(attempt_count: u32) -> E {
    E::PaymentFailed {
        invoice_id: "in_1".into(),
        member_id: member(),
        customer_id: "cus_1".into(),
        amount_due: 1000,
        currency: "usd".into(),
        attempt_count,
        failed_at: t(150),
    }
}

fn refund(amount_refunded: i64) -> SubscriptionCommand {
    SubscriptionCommand::RecordRefund {
        charge_id: "ch_1".into(),
        invoice_id: Some("in_1".into()),
        member_id: member(),
        customer_id: "cus_1".into(),
        amount_refunded,
        currency: "usd".into(),
        refunded_at: t(160),
    }
}

fn refunded(amount: i64) -> E {
    E::PaymentRefunded {
        charge_id: "ch_1".into(),
        invoice_id: Some("in_1".into()),
        member_id: member(),
        customer_id: "cus_1".into(),
        amount,
        currency: "usd".into(),
        refunded_at: t(160),
    }
}

/// A lifecycle: created incomplete, paid, past due (with more seats and a new period),
/// recovered, cancellation scheduled (and an item added), deleted, and an update in the
/// deletion's second.
fn lifecycle() -> Vec<(StripeSubscriptionState, StripeObservation)> {
    let extra = SubscriptionItem {
        item_id: "si_extra".into(),
        price: price("price_extra", 300),
        quantity: 1,
        site: Some("extra.example".into()),
        purchase_type: PurchaseType::Site,
        license_purchase_id: None,
    };
    let mut s1 = state(S::Incomplete);
    s1.items = vec![site_item(), seats_item(2)];
    let mut s2 = s1.clone();
    s2.status = S::Active;
    let mut s3 = s2.clone();
    s3.status = S::PastDue;
    s3.items = vec![site_item(), seats_item(3)];
    s3.current_period_start = Some(t(100 + MONTH));
    s3.current_period_end = Some(t(100 + 2 * MONTH));
    let mut s4 = s3.clone();
    s4.status = S::Active;
    let mut s5 = s4.clone();
    s5.items.push(extra);
    s5.cancel_at_period_end = true;
    s5.cancel_at = Some(t(100 + 2 * MONTH));
    let mut s6 = s5.clone();
    s6.status = S::Canceled;
    s6.canceled_at = Some(t(400));
    let mut s7 = s5.clone();
    s7.status = S::PastDue;
    vec![
        (s1, created_at(100)),
        (s2, updated_at(101)),
        (s3, updated_at(200)),
        (s4, updated_at(201)),
        (s5, updated_at(300)),
        (s6, deleted_at(400)),
        (
            s7,
            obs(StripeObservation::SUBSCRIPTION_UPDATED, 400, "evt_400b"),
        ),
    ]
}

/// Handles each delivery in turn; returns the subscription and every event emitted.
async fn deliver(
    states: &[(StripeSubscriptionState, StripeObservation)],
    order: &[usize],
) -> (Subscription, Vec<E>) {
    let mut subscription = Subscription::default();
    let mut events = Vec::new();
    for &i in order {
        let (state, observed) = states[i].clone();
        let sink = EventSink::default();
        subscription
            .handle(apply(state, observed), &(), &sink)
            .await
            .expect("same subscription");
        events.extend(sink.collect().await);
    }
    (subscription, events)
}
