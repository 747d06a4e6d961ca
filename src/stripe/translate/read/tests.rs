//! The readers on Stripe's own example objects, in the shape of the API version they come
//! from, in the older shapes the readers still accept, and with fields left out.

use aggregates::{
    BillingInterval, Payment, Price, PurchaseType, SiteDomain, StripeSubscriptionState,
    SubscriptionCommand, SubscriptionItem, SubscriptionStatus,
};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::*;
use crate::stripe::fixtures::fixture;

const CREATED: i64 = 1_700_000_000;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).expect("a valid time")
}

fn member() -> Uuid {
    Uuid::from_u128(7)
}

fn without(mut object: Value, key: &str) -> Value {
    object
        .as_object_mut()
        .expect("an object")
        .remove(key)
        .expect("the field is there to remove");
    object
}

fn site(raw: &str) -> SiteDomain {
    SiteDomain::parse(raw).expect("a valid site")
}

#[test]
fn id_of_reads_a_plain_id_and_an_expanded_object() {
    let mut subscription = fixture("subscription");
    assert_eq!(id_of(&subscription["customer"]), Some("cus_QXg1o8vcGmoR32"));
    subscription["customer"] = fixture("customer");
    assert_eq!(id_of(&subscription["customer"]), Some("cus_QXg1o8vcGmoR32"));
}

#[test]
fn id_of_is_none_for_null_empty_or_absent_ids() {
    let session = fixture("checkout.session");
    assert_eq!(id_of(&session["customer"]), None, "null in the example");
    assert_eq!(id_of(&json!("")), None);
    assert_eq!(id_of(&json!({ "id": "" })), None);
    assert_eq!(id_of(&session["no_such_field"]), None);
}

#[test]
fn text_is_a_non_empty_string_and_time_is_unix_seconds() {
    let invoice = fixture("invoice");
    assert_eq!(text(&invoice["currency"]), Some("usd"));
    assert_eq!(text(&invoice["customer_email"]), None, "null");
    assert_eq!(text(&json!("")), None);
    assert_eq!(text(&invoice["amount_due"]), None, "a number is no text");
    assert_eq!(time(&invoice["created"]), Some(at(1_234_567_890)));
    assert_eq!(time(&invoice["status_transitions"]["paid_at"]), None);
    assert_eq!(time(&invoice["no_such_field"]), None);
}

#[test]
fn session_contact_reads_the_example_session() {
    assert_eq!(
        session_contact(&fixture("checkout.session")),
        Contact {
            email: Some("example@example.com"),
            name: None,
            member_id: None,
        }
    );
}

#[test]
fn session_contact_prefers_the_entered_details_and_the_member_our_checkout_named() {
    let mut session = fixture("checkout.session");
    session["customer_details"]["name"] = json!("Ada Lovelace");
    session["customer_email"] = json!("created-with@example.com");
    session["metadata"] = json!({ key::MEMBER_ID: "m-1" });
    session["client_reference_id"] = json!("ref-1");
    assert_eq!(
        session_contact(&session),
        Contact {
            email: Some("example@example.com"),
            name: Some("Ada Lovelace"),
            member_id: Some("m-1"),
        }
    );
}

#[test]
fn session_contact_falls_back_to_the_session_email_and_the_client_reference() {
    let mut session = without(fixture("checkout.session"), "customer_details");
    session["customer_email"] = json!("created-with@example.com");
    session["client_reference_id"] = json!("ref-1");
    assert_eq!(
        session_contact(&session),
        Contact {
            email: Some("created-with@example.com"),
            name: None,
            member_id: Some("ref-1"),
        }
    );
    assert_eq!(session_contact(&json!({})), Contact::default());
}

#[test]
fn subscription_contact_is_the_member_in_the_metadata() {
    let mut subscription = fixture("subscription");
    assert_eq!(subscription_contact(&subscription), Contact::default());
    subscription["metadata"] = json!({ key::MEMBER_ID: "m-1" });
    assert_eq!(
        subscription_contact(&subscription),
        Contact {
            member_id: Some("m-1"),
            ..Contact::default()
        }
    );
    assert_eq!(
        subscription_contact(&without(subscription, "metadata")),
        Contact::default()
    );
}

#[test]
fn invoice_contact_is_the_invoiced_email_and_name() {
    let mut invoice = fixture("invoice");
    assert_eq!(
        invoice_contact(&invoice),
        Contact::default(),
        "null in the example"
    );
    invoice["customer_email"] = json!("ada@example.com");
    invoice["customer_name"] = json!("Ada Lovelace");
    assert_eq!(
        invoice_contact(&invoice),
        Contact {
            email: Some("ada@example.com"),
            name: Some("Ada Lovelace"),
            member_id: None,
        }
    );
    assert_eq!(invoice_contact(&json!({})), Contact::default());
}

fn text_field(key: &str, value: &str) -> Value {
    json!({
        "key": key,
        "label": { "custom": "Your site", "type": "custom" },
        "optional": false,
        "type": "text",
        "text": { "maximum_length": null, "minimum_length": null, "value": value },
    })
}

#[test]
fn custom_field_site_is_none_without_a_site_field() {
    let mut session = fixture("checkout.session");
    assert_eq!(
        custom_field_site(&session),
        None,
        "no custom fields in the example"
    );
    session["custom_fields"] = json!([text_field("company", "example.com")]);
    assert_eq!(custom_field_site(&session), None, "not a site key");
    assert_eq!(custom_field_site(&without(session, "custom_fields")), None);
}

#[test]
fn custom_field_site_reads_a_text_or_dropdown_field_of_any_site_key() {
    let mut session = fixture("checkout.session");
    session["custom_fields"] = json!([text_field("Website", "Example.COM")]);
    assert_eq!(custom_field_site(&session), Some(site("example.com")));
    session["custom_fields"] = json!([{
        "key": "domain",
        "label": { "custom": "Domain", "type": "custom" },
        "optional": false,
        "type": "dropdown",
        "dropdown": { "options": [{ "label": "Shop", "value": "shop.example.com" }], "value": "shop.example.com" },
    }]);
    assert_eq!(custom_field_site(&session), Some(site("shop.example.com")));
}

#[test]
fn custom_field_site_skips_an_invalid_site() {
    let mut session = fixture("checkout.session");
    session["custom_fields"] = json!([text_field("site", "not a domain")]);
    assert_eq!(custom_field_site(&session), None);
    session["custom_fields"] = json!([
        text_field("site", "not a domain"),
        text_field("domain", "example.org")
    ]);
    assert_eq!(custom_field_site(&session), Some(site("example.org")));
}

#[test]
fn is_paid_reads_a_sessions_payment_status_and_an_intents_status() {
    let mut session = fixture("checkout.session");
    assert!(!is_paid(&session), "unpaid in the example");
    session["payment_status"] = json!("paid");
    assert!(is_paid(&session));
    session["payment_status"] = json!("unpaid");
    session["status"] = json!("succeeded");
    assert!(!is_paid(&session), "a session's status is not its payment");
    assert!(!is_paid(&without(session, "payment_status")));

    let mut intent = fixture("payment_intent");
    assert!(!is_paid(&intent), "requires_payment_method in the example");
    intent["status"] = json!("succeeded");
    assert!(is_paid(&intent));
    assert!(!is_paid(&without(intent, "status")));
}

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

fn example_item() -> SubscriptionItem {
    SubscriptionItem {
        item_id: "si_QXhVnC2h0Jczwc".into(),
        price: Price {
            price_id: "price_1PgafmB7WZ01zgkW6dKueIc5".into(),
            product_id: Some("prod_QXg1hqf4jFNsqG".into()),
            unit_amount: 2000,
            currency: "usd".into(),
            interval: BillingInterval::Month,
            interval_count: 1,
        },
        quantity: 1,
        site: None,
        purchase_type: PurchaseType::Quantity,
        license_purchase_id: None,
    }
}

#[test]
fn subscription_state_reads_the_example_subscription_with_the_period_on_its_items() {
    let subscription = fixture("subscription");
    assert!(subscription["current_period_start"].is_null());
    assert_eq!(
        subscription_state(&subscription, member()).expect("a state"),
        StripeSubscriptionState {
            subscription_id: "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".into(),
            customer_id: "cus_QXg1o8vcGmoR32".into(),
            member_id: member(),
            status: SubscriptionStatus::Active,
            items: vec![example_item()],
            current_period_start: Some(at(1_896_570_518)),
            current_period_end: Some(at(976_287_773)),
            cancel_at_period_end: true,
            cancel_at: Some(at(1_234_567_890)),
            canceled_at: Some(at(1_234_567_890)),
            created: at(1_234_567_890),
            discounts: Vec::new(),
            offer_id: None,
        }
    );
}

#[test]
fn subscription_state_takes_the_period_on_the_subscription_of_older_api_versions() {
    let mut subscription = fixture("subscription");
    subscription["current_period_start"] = json!(1_721_000_000);
    subscription["current_period_end"] = json!(1_723_000_000);
    let state = subscription_state(&subscription, member()).expect("a state");
    assert_eq!(state.current_period_start, Some(at(1_721_000_000)));
    assert_eq!(state.current_period_end, Some(at(1_723_000_000)));
}

#[test]
fn subscription_state_without_optional_fields() {
    let mut subscription = fixture("subscription");
    for key in ["cancel_at_period_end", "cancel_at", "canceled_at"] {
        subscription = without(subscription, key);
    }
    for item in subscription["items"]["data"].as_array_mut().expect("items") {
        *item = without(
            without(item.clone(), "current_period_start"),
            "current_period_end",
        );
    }
    subscription["customer"] = fixture("customer");
    let state = subscription_state(&subscription, member()).expect("a state");
    assert_eq!(state.customer_id, "cus_QXg1o8vcGmoR32", "expanded");
    assert_eq!(state.items.len(), 1);
    assert_eq!(
        (state.current_period_start, state.current_period_end),
        (None, None)
    );
    assert!(!state.cancel_at_period_end);
    assert_eq!((state.cancel_at, state.canceled_at), (None, None));
}

#[test]
fn subscription_state_gives_the_metadata_site_to_the_only_item_without_one() {
    let mut subscription = fixture("subscription");
    subscription["metadata"] = json!({ key::SITE: "Example.com" });
    let state = subscription_state(&subscription, member()).expect("a state");
    assert_eq!(state.items[0].site.as_deref(), Some("example.com"));
    assert_eq!(state.items[0].purchase_type, PurchaseType::Site);

    let mut second = subscription["items"]["data"][0].clone();
    second["id"] = json!("si_QXhVBoJ7NQdNXh");
    subscription["items"]["data"]
        .as_array_mut()
        .expect("items")
        .push(second);
    let state = subscription_state(&subscription, member()).expect("a state");
    assert!(
        state.items.iter().all(|i| i.site.is_none()),
        "two items without a site: neither is the metadata's"
    );
}

#[test]
fn subscription_state_needs_a_known_status_a_customer_and_a_created_time() {
    let subscription = fixture("subscription");
    let err = |object: Value| {
        subscription_state(&object, member())
            .expect_err("refused")
            .to_string()
    };
    assert_eq!(
        err(without(subscription.clone(), "status")),
        "the subscription has no status"
    );
    let mut unknown = subscription.clone();
    unknown["status"] = json!("frozen");
    assert_eq!(err(unknown), "unknown subscription status \"frozen\"");
    assert_eq!(
        err(without(subscription.clone(), "customer")),
        "the subscription has no customer"
    );
    assert_eq!(
        err(without(subscription, "created")),
        "the subscription has no created time"
    );
}

#[test]
fn a_subscription_without_items_is_refused_naming_the_field() {
    // Every API version lists them: without, applying the state would end every item.
    let err = subscription_state(&without(fixture("subscription"), "items"), member())
        .expect_err("refused");
    assert_eq!(err.to_string(), "the subscription has no `items.data`");
}

#[test]
fn subscription_item_reads_the_example_item() {
    let item = subscription_item(&fixture("subscription_item")).expect("an item");
    assert_eq!(
        item,
        SubscriptionItem {
            item_id: "si_QXhVBoJ7NQdNXh".into(),
            ..example_item()
        }
    );
}

#[test]
fn subscription_item_reads_its_site_or_license_purchase_from_its_metadata() {
    let mut object = fixture("subscription_item");
    object["metadata"] = json!({ key::SITE: "Shop.Example.com" });
    let item = subscription_item(&object).expect("an item");
    assert_eq!(item.site.as_deref(), Some("shop.example.com"));
    assert_eq!(item.purchase_type, PurchaseType::Site);

    let purchase_id = Uuid::from_u128(42);
    object["metadata"] =
        json!({ key::LICENSE_PURCHASE_ID: purchase_id.to_string(), key::SITE: "not a domain" });
    let item = subscription_item(&object).expect("an item");
    assert_eq!(item.license_purchase_id, Some(purchase_id));
    assert_eq!(item.site, None, "an invalid site is ignored");
    assert_eq!(item.purchase_type, PurchaseType::Quantity);

    object["metadata"] = json!({ key::LICENSE_PURCHASE_ID: "not a uuid" });
    assert_eq!(
        subscription_item(&object)
            .expect("an item")
            .license_purchase_id,
        None
    );
}

#[test]
fn subscription_item_defaults_what_its_price_leaves_out() {
    let mut object = without(fixture("subscription_item"), "quantity");
    let price = object["price"].as_object_mut().expect("a price");
    price.remove("unit_amount");
    price.remove("recurring");
    price.remove("currency");
    price.insert("unit_amount_decimal".into(), json!("2000.75"));
    let item = subscription_item(&object).expect("an item");
    assert_eq!(
        item.price.unit_amount, 2000,
        "the decimal amount's whole part"
    );
    assert_eq!(item.price.interval, BillingInterval::Month);
    assert_eq!(item.price.interval_count, 1);
    assert_eq!(item.price.currency, "usd");
    assert_eq!(item.quantity, 1);

    object["price"]["recurring"] = json!({ "interval": "year", "interval_count": 0 });
    let item = subscription_item(&object).expect("an item");
    assert_eq!(item.price.interval, BillingInterval::Year);
    assert_eq!(item.price.interval_count, 1, "at least one");

    object["price"] = without(object["price"].clone(), "unit_amount_decimal");
    assert_eq!(
        subscription_item(&object)
            .expect("an item")
            .price
            .unit_amount,
        0
    );
}

#[test]
fn subscription_item_needs_an_id_a_price_and_a_known_interval() {
    let object = fixture("subscription_item");
    let err = |object: Value| subscription_item(&object).expect_err("refused").to_string();
    assert_eq!(
        err(without(object.clone(), "id")),
        "a subscription item has no id"
    );
    let mut no_price = object.clone();
    no_price["price"] = without(no_price["price"].clone(), "id");
    assert_eq!(
        err(without(no_price, "plan")),
        "subscription item si_QXhVBoJ7NQdNXh has neither `price.id` nor `plan.id`"
    );
    let mut fortnightly = object;
    fortnightly["price"]["recurring"]["interval"] = json!("fortnight");
    assert_eq!(
        err(fortnightly),
        "item si_QXhVBoJ7NQdNXh: unknown interval \"fortnight\""
    );
}

/// Old API versions' shapes (`stripe-fixtures/old_shapes/`) read as today's do.
mod old_versions {
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
        let today_state =
            subscription_state(&today.subscription_object("active", 2, false), member())
                .expect("today's state");
        for version in ApiVersion::ALL {
            let (_, events) = events(version);
            let state =
                subscription_state(object(&events, "customer.subscription.updated"), member())
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
}

#[test]
fn subscription_discounts_read_every_shape_stripe_sends() {
    let mut coupon = fixture("coupon");
    coupon["id"] = json!("co_launch");
    coupon["percent_off"] = json!(25.5);
    coupon["duration"] = json!("repeating");
    coupon["duration_in_months"] = json!(3);
    let mut discount = fixture("discount");
    discount["id"] = json!("di_1");
    discount["end"] = json!(1_800_000_000);
    discount["coupon"] = coupon.clone();
    let expected = Discount {
        discount_id: Some("di_1".into()),
        coupon_id: Some("co_launch".into()),
        off: DiscountOff::PercentHundredths(2550),
        duration: DiscountDuration::Repeating(3),
        end: Some(at(1_800_000_000)),
    };

    // The legacy single discount, with `discounts` naming it by id.
    let mut subscription = fixture("subscription");
    subscription["discount"] = discount.clone();
    subscription["discounts"] = json!(["di_1"]);
    let state = subscription_state(&subscription, member()).expect("a state");
    assert_eq!(state.discounts, vec![expected.clone()]);

    // 2025 versions: the coupon under `source`, in an expanded `discounts`.
    let mut sourced = discount.clone();
    sourced["coupon"] = Value::Null;
    sourced["source"] = json!({"type": "coupon", "coupon": coupon});
    subscription["discount"] = Value::Null;
    subscription["discounts"] = json!([sourced]);
    let state = subscription_state(&subscription, member()).expect("a state");
    assert_eq!(state.discounts, vec![expected]);

    // Only ids: no terms here (the translator looks the coupon up among our offers).
    let mut by_id = discount;
    by_id["coupon"] = json!("co_launch");
    subscription["discounts"] = json!(["di_2", by_id]);
    let read = subscription_discounts(&subscription);
    assert_eq!(read.len(), 2);
    assert!(read.iter().all(|d| d.terms.is_none()));
    assert_eq!(read[1].coupon_id.as_deref(), Some("co_launch"));
    assert!(subscription_state(&subscription, member())
        .expect("a state")
        .discounts
        .is_empty());

    // An amount off in the subscription's currency, forever; and none at all.
    let mut amount = fixture("coupon");
    amount["percent_off"] = Value::Null;
    amount["amount_off"] = json!(500);
    amount["currency"] = Value::Null;
    subscription["discounts"] = json!([{"id": "di_3", "coupon": amount, "end": null}]);
    let state = subscription_state(&subscription, member()).expect("a state");
    assert_eq!(
        state.discounts[0].off,
        DiscountOff::Amount {
            amount: 500,
            currency: "usd".into()
        }
    );
    assert_eq!(state.discounts[0].duration, DiscountDuration::Forever);
    subscription["discounts"] = json!([]);
    assert!(subscription_state(&subscription, member())
        .expect("a state")
        .discounts
        .is_empty());
}

#[test]
fn percent_off_is_read_in_hundredths_without_floating_point() {
    for (value, hundredths) in [
        (json!(20), Some(2000)),
        (json!(25.5), Some(2550)),
        (json!(12.34), Some(1234)),
        (json!(100), Some(10_000)),
        (json!(100.5), None),
        (json!(1.234), None),
        (Value::Null, None),
    ] {
        assert_eq!(percent_hundredths(&value), hundredths, "{value}");
    }
}
