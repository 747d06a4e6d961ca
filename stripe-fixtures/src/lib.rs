//! Realistic Stripe webhook payloads from Stripe's own example objects
//! (`../shared/stripe/fixtures3.json`, next to the repository), signed with the real scheme. Shared by the integration tests and the load generator, so both send the
//! same shapes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

mod old_shapes;
pub use old_shapes::ApiVersion;

/// Stripe's example objects, by resource name.
#[derive(Debug, Clone)]
pub struct Fixtures(Arc<Value>);

impl Fixtures {
    /// Parses the contents of a `fixtures3.json`.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text).map(|v| Self(Arc::new(v)))
    }

    /// Where the repository's fixtures file is: `../shared/stripe/fixtures3.json` from the
    /// workspace root (this crate sits one level below it).
    pub fn repo_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/stripe/fixtures3.json")
    }

    /// The repository's fixtures file, read once; panics when it is missing or not JSON
    /// (tests cannot run without it).
    pub fn repo() -> &'static Fixtures {
        static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
        FIXTURES.get_or_init(|| {
            let path = Self::repo_path();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            Self::from_json(&text).expect("fixtures3.json is JSON")
        })
    }

    /// Stripe's example object of a resource (`subscription`, `invoice`, `checkout.session`, ...).
    pub fn resource(&self, resource: &str) -> Value {
        self.0["resources"][resource].clone()
    }

    /// An event around `object`, built from Stripe's example event.
    pub fn event(&self, id: &str, event_type: &str, created: i64, object: Value) -> Value {
        let mut event = self.resource("event");
        event["id"] = json!(id);
        event["type"] = json!(event_type);
        event["created"] = json!(created);
        event["data"] = json!({ "object": object });
        event
    }
}

/// `Stripe-Signature` for `payload` signed at `timestamp` with `secret`.
pub fn signature(payload: &str, secret: &str, timestamp: i64) -> String {
    stripe_webhook::Webhook::generate_test_header(payload, secret, Some(timestamp))
}

/// One customer's subscription lifecycle, as Stripe would send it.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    fixtures: Fixtures,
    pub tag: String,
    pub customer: String,
    pub email: String,
    /// The name on the checkout session's customer details.
    pub customer_name: String,
    pub subscription: String,
    pub item: String,
    pub site: String,
    pub start: i64,
}

impl Lifecycle {
    /// A lifecycle from the repository's fixtures file ([`Fixtures::repo`]).
    pub fn new(tag: &str) -> Self {
        Self::with_fixtures(Fixtures::repo(), tag)
    }

    pub fn with_fixtures(fixtures: &Fixtures, tag: &str) -> Self {
        Self {
            fixtures: fixtures.clone(),
            tag: tag.to_owned(),
            customer: format!("cus_{tag}"),
            email: format!("{tag}@example.com"),
            customer_name: "Test Customer".to_owned(),
            subscription: format!("sub_{tag}"),
            item: format!("si_{tag}"),
            site: format!("{tag}.example.com"),
            start: 1_764_000_000,
        }
    }

    pub fn checkout_completed(&self, offset: i64) -> Value {
        let mut session = self.fixtures.resource("checkout.session");
        session["id"] = json!(format!("cs_{}", self.tag));
        session["mode"] = json!("subscription");
        session["customer"] = json!(self.customer);
        session["customer_details"]["email"] = json!(self.email);
        session["customer_details"]["name"] = json!(self.customer_name);
        session["subscription"] = json!(self.subscription);
        session["status"] = json!("complete");
        self.fixtures.event(
            &format!("evt_{}_checkout", self.tag),
            "checkout.session.completed",
            self.start + offset,
            session,
        )
    }

    /// The subscription with one site item, in `status`.
    pub fn subscription_object(
        &self,
        status: &str,
        offset: i64,
        cancel_at_period_end: bool,
    ) -> Value {
        let mut sub = self.fixtures.resource("subscription");
        let mut item = sub["items"]["data"][0].clone();
        item["id"] = json!(self.item);
        item["subscription"] = json!(self.subscription);
        item["metadata"] = json!({ "site": self.site });
        item["quantity"] = json!(1);
        item["price"]["unit_amount"] = json!(2000);
        item["price"]["currency"] = json!("usd");
        item["price"]["recurring"]["interval"] = json!("month");
        item["price"]["recurring"]["interval_count"] = json!(1);
        item["current_period_start"] = json!(self.start);
        item["current_period_end"] = json!(self.start + 30 * 86_400);
        sub["id"] = json!(self.subscription);
        sub["customer"] = json!(self.customer);
        sub["status"] = json!(status);
        sub["created"] = json!(self.start);
        sub["metadata"] = json!({});
        sub["cancel_at_period_end"] = json!(cancel_at_period_end);
        sub["cancel_at"] = if cancel_at_period_end {
            json!(self.start + 30 * 86_400)
        } else {
            Value::Null
        };
        sub["canceled_at"] = if status == "canceled" {
            json!(self.start + offset)
        } else {
            Value::Null
        };
        sub["ended_at"] = if status == "canceled" {
            json!(self.start + offset)
        } else {
            Value::Null
        };
        sub["items"]["data"] = json!([item]);
        sub
    }

    pub fn subscription_event(
        &self,
        name: &str,
        event_type: &str,
        status: &str,
        offset: i64,
    ) -> Value {
        let object = self.subscription_object(status, offset, false);
        self.fixtures.event(
            &format!("evt_{}_{name}", self.tag),
            event_type,
            self.start + offset,
            object,
        )
    }

    pub fn invoice_paid(&self, invoice: &str, offset: i64) -> Value {
        let mut inv = self.fixtures.resource("invoice");
        inv["id"] = json!(invoice);
        inv["customer"] = json!(self.customer);
        inv["customer_email"] = json!(self.email);
        inv["subscription"] = json!(self.subscription);
        inv["parent"] = json!({
            "type": "subscription_details",
            "quote_details": null,
            "subscription_details": { "metadata": {}, "subscription": self.subscription }
        });
        inv["amount_due"] = json!(2000);
        inv["amount_paid"] = json!(2000);
        inv["amount_remaining"] = json!(0);
        inv["currency"] = json!("usd");
        inv["status"] = json!("paid");
        inv["billing_reason"] = json!("subscription_create");
        self.fixtures.event(
            &format!("evt_{}_{invoice}", self.tag),
            "invoice.paid",
            self.start + offset,
            inv,
        )
    }

    /// checkout completed, subscription created (incomplete), updated to active, invoice paid,
    /// updated past_due, updated active — in Stripe's order; the customer stays subscribed.
    pub fn subscribed_events(&self) -> Vec<Value> {
        vec![
            self.checkout_completed(1),
            self.subscription_event("created", "customer.subscription.created", "incomplete", 0),
            self.subscription_event("active", "customer.subscription.updated", "active", 2),
            self.invoice_paid(&format!("in_{}_1", self.tag), 2),
            self.subscription_event("past_due", "customer.subscription.updated", "past_due", 100),
            self.subscription_event("recovered", "customer.subscription.updated", "active", 200),
        ]
    }

    /// [`Self::subscribed_events`], then the subscription deleted.
    pub fn events(&self) -> Vec<Value> {
        let mut events = self.subscribed_events();
        events.push(self.subscription_event(
            "deleted",
            "customer.subscription.deleted",
            "canceled",
            300,
        ));
        events
    }

    /// [`Self::subscribed_events`] with the invoice paid through a payment intent, as today's
    /// shape names it (`payments`, no top-level `payment_intent`), so a refund of its charge
    /// finds it.
    pub fn subscribed_events_paid_by_intent(&self) -> Vec<Value> {
        let mut events = self.subscribed_events();
        let invoice = format!("in_{}_1", self.tag);
        for event in &mut events {
            if event["data"]["object"]["id"] == invoice.as_str() {
                event["data"]["object"]["payments"] = json!({
                    "object": "list",
                    "data": [{
                        "id": format!("inpay_{invoice}"),
                        "object": "invoice_payment",
                        "amount_paid": 2000,
                        "currency": "usd",
                        "invoice": invoice,
                        "is_default": true,
                        "payment": { "type": "payment_intent", "payment_intent": format!("pi_{invoice}") },
                        "status": "paid"
                    }],
                    "has_more": false,
                    "url": format!("/v1/invoice_payments?invoice={invoice}")
                });
            }
        }
        events
    }

    /// `charge.refunded` in today's shape for the charge of
    /// [`Self::subscribed_events_paid_by_intent`]'s invoice, refunded `amount_refunded` of 2000
    /// in all so far: the charge names the payment intent, not the invoice.
    pub fn refund(&self, amount_refunded: i64, offset: i64) -> Value {
        let invoice = format!("in_{}_1", self.tag);
        let mut charge = self.fixtures.resource("charge");
        charge["id"] = json!(format!("ch_{invoice}"));
        charge["customer"] = json!(self.customer);
        charge["payment_intent"] = json!(format!("pi_{invoice}"));
        charge["amount"] = json!(2000);
        charge["amount_captured"] = json!(2000);
        charge["captured"] = json!(true);
        charge["amount_refunded"] = json!(amount_refunded);
        charge["currency"] = json!("usd");
        charge["refunded"] = json!(amount_refunded >= 2000);
        self.fixtures.event(
            &format!("evt_{}_refund_{amount_refunded}", self.tag),
            "charge.refunded",
            self.start + offset,
            charge,
        )
    }
}
