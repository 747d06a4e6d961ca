//! A lifecycle in the shapes of older Stripe API versions (`old_shapes/`, see its README):
//! webhooks arrive in the account's default version, which can be years old.

use serde_json::{json, Value};

use crate::Lifecycle;

/// An older API version whose shapes `old_shapes/` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// Items with `plan` and no `price`; no `customer_details` on sessions.
    V2019_12_03,
    /// Items with `price` and `plan`; periods on the subscription; invoices without `parent`.
    V2022_11_15,
}

impl ApiVersion {
    pub const ALL: [ApiVersion; 2] = [ApiVersion::V2019_12_03, ApiVersion::V2022_11_15];

    pub fn name(self) -> &'static str {
        match self {
            ApiVersion::V2019_12_03 => "2019-12-03",
            ApiVersion::V2022_11_15 => "2022-11-15",
        }
    }

    /// The example object of `resource` (`subscription`, `invoice`, `checkout.session`,
    /// `charge`), its
    /// placeholders as written.
    pub fn template(self, resource: &str) -> &'static str {
        match (self, resource) {
            (ApiVersion::V2019_12_03, "subscription") => {
                include_str!("../old_shapes/2019-12-03/subscription.json")
            }
            (ApiVersion::V2019_12_03, "invoice") => {
                include_str!("../old_shapes/2019-12-03/invoice.json")
            }
            (ApiVersion::V2019_12_03, "checkout.session") => {
                include_str!("../old_shapes/2019-12-03/checkout.session.json")
            }
            (ApiVersion::V2019_12_03, "charge") => {
                include_str!("../old_shapes/2019-12-03/charge.json")
            }
            (ApiVersion::V2022_11_15, "charge") => {
                include_str!("../old_shapes/2022-11-15/charge.json")
            }
            (ApiVersion::V2022_11_15, "subscription") => {
                include_str!("../old_shapes/2022-11-15/subscription.json")
            }
            (ApiVersion::V2022_11_15, "invoice") => {
                include_str!("../old_shapes/2022-11-15/invoice.json")
            }
            (ApiVersion::V2022_11_15, "checkout.session") => {
                include_str!("../old_shapes/2022-11-15/checkout.session.json")
            }
            (version, other) => panic!("no {other} in the {} shapes", version.name()),
        }
    }
}

impl Lifecycle {
    /// `resource` in `version`'s shape, with this lifecycle's ids.
    fn old_object(&self, version: ApiVersion, resource: &str, invoice: &str) -> Value {
        let text = version
            .template(resource)
            .replace("{customer}", &self.customer)
            .replace("{subscription}", &self.subscription)
            .replace("{item}", &self.item)
            .replace("{email}", &self.email)
            .replace("{site}", &self.site)
            .replace("{session}", &format!("cs_{}", self.tag))
            .replace("{invoice}", invoice);
        serde_json::from_str(&text).expect("the old shapes are JSON")
    }

    fn old_event(
        &self,
        version: ApiVersion,
        name: &str,
        event_type: &str,
        offset: i64,
        object: Value,
    ) -> Value {
        let mut event = self.fixtures.event(
            &format!("evt_{}_{name}", self.tag),
            event_type,
            self.start + offset,
            object,
        );
        event["api_version"] = json!(version.name());
        event
    }

    /// The subscription in `version`'s shape, in `status`.
    pub fn old_subscription_object(&self, version: ApiVersion, status: &str, offset: i64) -> Value {
        let mut sub = self.old_object(version, "subscription", "");
        let period_end = self.start + 30 * 86_400;
        sub["status"] = json!(status);
        sub["created"] = json!(self.start);
        sub["start_date"] = json!(self.start);
        sub["billing_cycle_anchor"] = json!(self.start);
        sub["current_period_start"] = json!(self.start);
        sub["current_period_end"] = json!(period_end);
        sub["items"]["data"][0]["created"] = json!(self.start);
        if status == "canceled" {
            sub["canceled_at"] = json!(self.start + offset);
            sub["ended_at"] = json!(self.start + offset);
        }
        sub
    }

    /// [`Self::events`] as an account on `version` receives them.
    pub fn events_in(&self, version: ApiVersion) -> Vec<Value> {
        let mut session = self.old_object(version, "checkout.session", "");
        session["created"] = json!(self.start);
        let invoice_id = format!("in_{}_1", self.tag);
        let mut invoice = self.old_object(version, "invoice", &invoice_id);
        for field in [
            "created",
            "period_start",
            "period_end",
            "webhooks_delivered_at",
        ] {
            invoice[field] = json!(self.start);
        }
        invoice["status_transitions"]["finalized_at"] = json!(self.start + 2);
        invoice["status_transitions"]["paid_at"] = json!(self.start + 2);
        invoice["lines"]["data"][0]["period"] =
            json!({ "start": self.start, "end": self.start + 30 * 86_400 });
        let sub = |status, offset| self.old_subscription_object(version, status, offset);
        vec![
            self.old_event(
                version,
                "checkout",
                "checkout.session.completed",
                1,
                session,
            ),
            self.old_event(
                version,
                "created",
                "customer.subscription.created",
                0,
                sub("incomplete", 0),
            ),
            self.old_event(
                version,
                "active",
                "customer.subscription.updated",
                2,
                sub("active", 2),
            ),
            self.old_event(
                version,
                &invoice_id,
                "invoice.payment_succeeded",
                2,
                invoice,
            ),
            self.old_event(
                version,
                "past_due",
                "customer.subscription.updated",
                100,
                sub("past_due", 100),
            ),
            self.old_event(
                version,
                "recovered",
                "customer.subscription.updated",
                200,
                sub("active", 200),
            ),
            self.old_event(
                version,
                "deleted",
                "customer.subscription.deleted",
                300,
                sub("canceled", 300),
            ),
        ]
    }

    /// `charge.refunded` for the charge of [`Self::events_in`]'s invoice, refunded
    /// `amount_refunded` of 2000 in all so far, in `version`'s shape: the charge names its
    /// invoice; 2019-12-03 lists the refunds on it, 2022-11-15 no longer includes them.
    pub fn old_refund(&self, version: ApiVersion, amount_refunded: i64, offset: i64) -> Value {
        let invoice_id = format!("in_{}_1", self.tag);
        let mut charge = self.old_object(version, "charge", &invoice_id);
        charge["created"] = json!(self.start + 2);
        charge["amount_refunded"] = json!(amount_refunded);
        charge["refunded"] = json!(amount_refunded >= 2000);
        if charge["refunds"].is_object() {
            charge["refunds"]["data"] = json!([refund_object(
                &format!("re_{}_{amount_refunded}", self.tag),
                &format!("ch_{invoice_id}"),
                &format!("pi_{invoice_id}"),
                amount_refunded,
                self.start + offset,
            )]);
            charge["refunds"]["total_count"] = json!(1);
        }
        self.old_event(
            version,
            &format!("refund_{amount_refunded}"),
            "charge.refunded",
            offset,
            charge,
        )
    }
}

/// A refund object as the 2019-12-03 charge lists it.
fn refund_object(id: &str, charge: &str, intent: &str, amount: i64, created: i64) -> Value {
    json!({
        "id": id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": format!("txn_{id}"),
        "charge": charge,
        "created": created,
        "currency": "usd",
        "metadata": {},
        "payment_intent": intent,
        "reason": "requested_by_customer",
        "receipt_number": null,
        "source_transfer_reversal": null,
        "status": "succeeded",
        "transfer_reversal": null
    })
}
