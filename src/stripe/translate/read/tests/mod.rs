//! The readers on Stripe's own example objects, in the shape of the API version they come
//! from, in the older shapes the readers still accept, and with fields left out: plain values
//! and contacts, invoices and payments, subscriptions and their discounts, and old API versions.

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

mod contacts;
mod old_versions;
mod payments;
mod subscriptions;
