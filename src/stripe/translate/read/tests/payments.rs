//! Invoices and charges: their subscription and payment intent, payments, failures and
//! refunds.

use super::*;

#[test]
fn invoice_subscription_reads_the_parent_of_newer_api_versions() {
    let invoice = fixture("invoice");
    assert_eq!(invoice["subscription"], Value::Null);
    assert_eq!(invoice_subscription(&invoice), Some("subscription"));
}

#[test]
fn invoice_subscription_reads_the_top_level_field_of_older_api_versions() {
    let mut invoice = without(fixture("invoice"), "parent");
    invoice["subscription"] = json!("sub_1Pgc6rB7WZ01zgkWNy0Cn5nw");
    assert_eq!(
        invoice_subscription(&invoice),
        Some("sub_1Pgc6rB7WZ01zgkWNy0Cn5nw")
    );
    invoice["subscription"] = fixture("subscription");
    assert_eq!(
        invoice_subscription(&invoice),
        Some("sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"),
        "expanded"
    );
}

#[test]
fn invoice_subscription_is_none_for_an_invoice_of_no_subscription() {
    let mut invoice = fixture("invoice");
    invoice["parent"]["subscription_details"] = Value::Null;
    assert_eq!(invoice_subscription(&invoice), None);
    assert_eq!(invoice_subscription(&without(invoice, "parent")), None);
}

#[test]
fn invoice_payment_intent_reads_either_api_versions_field() {
    let mut invoice = fixture("invoice");
    assert_eq!(
        invoice_payment_intent(&invoice),
        None,
        "neither in the example"
    );

    let mut invoice_payment = fixture("invoice_payment");
    invoice_payment["payment"]["payment_intent"] = json!("pi_1PgafyB7WZ01zgkWSjxsAJo3");
    invoice["payments"] = json!({ "object": "list", "data": [invoice_payment], "has_more": false });
    assert_eq!(
        invoice_payment_intent(&invoice),
        Some("pi_1PgafyB7WZ01zgkWSjxsAJo3"),
        "newer: the invoice's payments"
    );

    let mut older = without(invoice, "payments");
    older["payment_intent"] = fixture("payment_intent");
    assert_eq!(
        invoice_payment_intent(&older),
        Some("pi_1PgafyB7WZ01zgkWSjxsAJo3"),
        "older: the invoice's own field, here expanded"
    );
}

#[test]
fn payment_reads_the_example_invoice() {
    assert_eq!(
        payment(&fixture("invoice"), member(), CREATED).expect("a payment"),
        Payment {
            invoice_id: "in_1Pgc6tB7WZ01zgkWu9fdqL6I".into(),
            member_id: member(),
            customer_id: "cus_QXg1o8vcGmoR32".into(),
            amount_paid: 0,
            currency: "usd".into(),
            billing_reason: Some("manual".into()),
            payment_intent_id: None,
            period_start: Some(at(1_721_954_054)),
            period_end: Some(at(1_721_954_054)),
            paid_at: at(CREATED),
        }
    );
}

#[test]
fn payment_takes_the_paid_time_and_falls_back_to_the_invoices_period() {
    let mut invoice = without(fixture("invoice"), "lines");
    invoice["status_transitions"]["paid_at"] = json!(1_721_954_100);
    invoice["period_start"] = json!(1_721_000_000);
    invoice["period_end"] = json!(1_723_000_000);
    invoice["payment_intent"] = json!("pi_1PgafyB7WZ01zgkWSjxsAJo3");
    let payment = payment(&invoice, member(), CREATED).expect("a payment");
    assert_eq!(payment.paid_at, at(1_721_954_100));
    assert_eq!(payment.period_start, Some(at(1_721_000_000)));
    assert_eq!(payment.period_end, Some(at(1_723_000_000)));
    assert_eq!(
        payment.payment_intent_id.as_deref(),
        Some("pi_1PgafyB7WZ01zgkWSjxsAJo3")
    );
}

#[test]
fn payment_needs_the_amount_and_currency() {
    let invoice = fixture("invoice");
    let err = payment(&without(invoice.clone(), "amount_paid"), member(), CREATED)
        .expect_err("no amount");
    assert_eq!(err.to_string(), "the invoice has no amount_paid");
    let err = payment(&without(invoice, "currency"), member(), CREATED).expect_err("no currency");
    assert_eq!(err.to_string(), "the invoice has no currency");
}

#[test]
fn payment_failure_reads_the_example_invoice() {
    assert_eq!(
        payment_failure(&fixture("invoice"), member(), CREATED).expect("a failure"),
        SubscriptionCommand::RecordPaymentFailure {
            invoice_id: "in_1Pgc6tB7WZ01zgkWu9fdqL6I".into(),
            member_id: member(),
            customer_id: "cus_QXg1o8vcGmoR32".into(),
            amount_due: 1000,
            currency: "usd".into(),
            attempt_count: 0,
            failed_at: at(CREATED),
        }
    );
}

#[test]
fn payment_failure_defaults_an_absent_amount_currency_and_attempt_count() {
    let mut invoice = fixture("invoice");
    for key in ["amount_due", "currency", "attempt_count"] {
        invoice = without(invoice, key);
    }
    let SubscriptionCommand::RecordPaymentFailure {
        amount_due,
        currency,
        attempt_count,
        ..
    } = payment_failure(&invoice, member(), CREATED).expect("a failure")
    else {
        panic!("not a payment failure");
    };
    assert_eq!(
        (amount_due, currency.as_str(), attempt_count),
        (0, "usd", 0)
    );
}

#[test]
fn refund_reads_the_example_charge() {
    let mut charge = fixture("charge");
    charge["customer"] = json!("cus_QXg1o8vcGmoR32");
    assert_eq!(
        refund(&charge, "in_1".into(), member(), CREATED).expect("a refund"),
        SubscriptionCommand::RecordRefund {
            charge_id: "ch_1PgafuB7WZ01zgkWXYmPNZs8".into(),
            invoice_id: Some("in_1".into()),
            member_id: member(),
            customer_id: "cus_QXg1o8vcGmoR32".into(),
            amount_refunded: 0,
            currency: "usd".into(),
            refunded_at: at(CREATED),
        }
    );
}

#[test]
fn refund_needs_a_customer_and_the_amount_refunded() {
    let mut charge = fixture("charge");
    let err = refund(&charge, "in_1".into(), member(), CREATED).expect_err("null customer");
    assert_eq!(err.to_string(), "the charge has no customer");
    charge["customer"] = fixture("customer");
    let err = refund(
        &without(charge, "amount_refunded"),
        "in_1".into(),
        member(),
        CREATED,
    )
    .expect_err("no amount");
    assert_eq!(err.to_string(), "the charge has no amount_refunded");
}
