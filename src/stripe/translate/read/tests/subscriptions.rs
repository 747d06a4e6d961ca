//! Subscriptions and their items, and the discounts in force.

use super::*;

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
