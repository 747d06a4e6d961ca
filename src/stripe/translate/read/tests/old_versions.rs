//! Old API versions' shapes (`stripe-fixtures/old_shapes/`) read as today's do.

use stripe_fixtures::{ApiVersion, Lifecycle};

use super::*;

fn events(version: ApiVersion) -> (Lifecycle, Vec<Value>) {
    let l = Lifecycle::new("old");
    let events = l.events_in(version);
    (l, events)
}

fn object<'a>(events: &'a [Value], event_type: &str) -> &'a Value {
    &events
        .iter()
        .find(|e| e["type"] == event_type)
        .unwrap_or_else(|| panic!("a {event_type}"))["data"]["object"]
}

#[test]
fn subscription_items_read_their_plan_when_they_have_no_price() {
    let (l, events) = events(ApiVersion::V2019_12_03);
    let subscription = object(&events, "customer.subscription.updated");
    assert!(subscription["items"]["data"][0].get("price").is_none());
    let state = subscription_state(subscription, member()).expect("a state");
    assert_eq!(
        state.items,
        vec![SubscriptionItem {
            item_id: l.item.clone(),
            price: Price {
                price_id: "plan_GoldMonthly2019".into(),
                product_id: Some("prod_GoldMembership".into()),
                unit_amount: 2000,
                currency: "usd".into(),
                interval: BillingInterval::Month,
                interval_count: 1,
            },
            quantity: 1,
            site: Some(l.site.clone()),
            purchase_type: PurchaseType::Site,
            license_purchase_id: None,
        }]
    );
    assert_eq!(state.current_period_start, Some(at(l.start)));
    assert_eq!(state.current_period_end, Some(at(l.start + 30 * 86_400)));
}

#[test]
fn a_plan_reads_its_decimal_amount_and_interval_count() {
    let (_, events) = events(ApiVersion::V2019_12_03);
    let mut item = object(&events, "customer.subscription.updated")["items"]["data"][0].clone();
    item["plan"]["amount"] = Value::Null;
    item["plan"]["amount_decimal"] = json!("4999.5");
    item["plan"]["interval"] = json!("year");
    item["plan"]["interval_count"] = json!(2);
    let price = subscription_item(&item).expect("an item").price;
    assert_eq!(
        (price.unit_amount, price.interval, price.interval_count),
        (4999, BillingInterval::Year, 2)
    );
}

#[test]
fn items_with_price_and_plan_read_the_price() {
    let (_, events) = events(ApiVersion::V2022_11_15);
    let state = subscription_state(object(&events, "customer.subscription.updated"), member())
        .expect("a state");
    assert_eq!(state.items[0].price.price_id, "price_GoldMonthly2022");
    assert_eq!(state.items[0].price.unit_amount, 2000);
}

#[test]
fn every_version_reads_to_the_same_subscription_as_todays_shape() {
    let today = Lifecycle::new("old");
    let today_state = subscription_state(&today.subscription_object("active", 2, false), member())
        .expect("today's state");
    for version in ApiVersion::ALL {
        let (_, events) = events(version);
        let state = subscription_state(object(&events, "customer.subscription.updated"), member())
            .expect("a state");
        let strip = |s: &StripeSubscriptionState| {
            let mut items = s.items.clone();
            for item in &mut items {
                item.price.price_id.clear();
                item.price.product_id = None;
            }
            (
                s.subscription_id.clone(),
                s.customer_id.clone(),
                s.status,
                items,
                s.current_period_start,
                s.current_period_end,
            )
        };
        assert_eq!(strip(&state), strip(&today_state), "{}", version.name());
    }
}

#[test]
fn old_invoices_name_their_subscription_and_payment_at_the_top() {
    for version in ApiVersion::ALL {
        let (l, events) = events(version);
        let invoice = object(&events, "invoice.payment_succeeded");
        assert!(invoice.get("parent").is_none(), "{}", version.name());
        assert_eq!(invoice_subscription(invoice), Some(l.subscription.as_str()));
        let payment = payment(invoice, member(), CREATED).expect("a payment");
        assert_eq!(payment.amount_paid, 2000);
        assert_eq!(
            payment.payment_intent_id,
            Some(format!("pi_in_{}_1", l.tag))
        );
        assert_eq!(payment.period_end, Some(at(l.start + 30 * 86_400)));
        assert_eq!(payment.paid_at, at(l.start + 2));
    }
}

#[test]
fn an_invoice_naming_its_subscription_only_on_its_lines_is_read() {
    let (l, events) = events(ApiVersion::V2019_12_03);
    let invoice = without(
        object(&events, "invoice.payment_succeeded").clone(),
        "subscription",
    );
    assert_eq!(
        invoice_subscription(&invoice),
        Some(l.subscription.as_str())
    );
    // Basil's lines name it in their parent.
    let mut basil = fixture("invoice");
    basil["parent"] = Value::Null;
    basil["lines"]["data"][0]["parent"]["type"] = json!("subscription_item_details");
    basil["lines"]["data"][0]["parent"]["subscription_item_details"]["subscription"] =
        json!("sub_fromline");
    assert_eq!(invoice_subscription(&basil), Some("sub_fromline"));
    assert!(invoice_is_for_subscription(
        &json!({ "billing_reason": "subscription_cycle" })
    ));
    assert!(!invoice_is_for_subscription(
        &json!({ "billing_reason": "manual" })
    ));
}

#[test]
fn a_2019_session_names_its_buyer_by_customer_email() {
    let (l, events) = events(ApiVersion::V2019_12_03);
    let session = object(&events, "checkout.session.completed");
    assert!(session.get("customer_details").is_none());
    assert_eq!(session_contact(session).email, Some(l.email.as_str()));
}
