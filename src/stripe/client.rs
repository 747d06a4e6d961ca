//! Outbound calls to Stripe's API with async-stripe: a timeout per attempt and retries with
//! exponential backoff (same idempotency key) on network errors and 5xx.

use std::time::Duration;

use std::collections::HashMap;

use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_core::customer::{RetrieveCustomer, RetrieveCustomerReturned};

use crate::config::StripeSettings;

#[derive(Clone)]
pub struct StripeApi {
    client: stripe::Client,
}

/// A customer's contact details as Stripe has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerContact {
    pub email: Option<String>,
    pub name: Option<String>,
}

impl StripeApi {
    /// `None` when no secret key is configured.
    pub fn from_settings(settings: &StripeSettings) -> anyhow::Result<Option<Self>> {
        let Some(key) = &settings.secret_key else {
            return Ok(None);
        };
        let mut builder = stripe::ClientBuilder::new(key.clone())
            .request_strategy(stripe::RequestStrategy::ExponentialBackoff(4))
            .timeout(Duration::from_secs(10));
        if let Some(base) = &settings.api_base {
            // async-stripe appends `v1/...` to the base as is.
            let base = if base.ends_with('/') {
                base.clone()
            } else {
                format!("{base}/")
            };
            builder = builder.url(base);
        }
        let client = builder
            .build()
            .map_err(|e| anyhow::anyhow!("building the Stripe client: {e}"))?;
        Ok(Some(Self { client }))
    }

    /// The customer's email and name; `None` for a deleted customer.
    pub async fn customer_contact(
        &self,
        customer_id: &str,
    ) -> anyhow::Result<Option<CustomerContact>> {
        let started = std::time::Instant::now();
        let returned = RetrieveCustomer::new(customer_id).send(&self.client).await;
        let outcome = match &returned {
            Ok(_) => "ok",
            Err(StripeError::Stripe(_, status)) if *status < 500 => "refused",
            Err(_) => "unavailable",
        };
        crate::metrics::stripe_call("retrieve_customer", outcome, started.elapsed());
        let returned = returned
            .map_err(|e| anyhow::anyhow!("fetching customer {customer_id} from Stripe: {e}"))?;
        Ok(match returned {
            RetrieveCustomerReturned::Customer(c) => Some(CustomerContact {
                email: c.email,
                name: c.name,
            }),
            RetrieveCustomerReturned::DeletedCustomer(_) => None,
        })
    }
}

/// One page of Stripe's events, newest first, as the raw JSON Stripe sends to webhooks.
#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<serde_json::Value>,
    pub has_more: bool,
}

impl StripeApi {
    /// Events created at or after `created_gte` (unix seconds), 100 a page, after the event
    /// `starting_after` (the last of the previous page). Stripe keeps events 30 days.
    ///
    /// Read as raw JSON, not async-stripe's typed events: the inbox stores what a webhook would
    /// have carried, field for field (async-stripe deserialises with miniserde, whose `Value`
    /// is turned into serde_json's).
    pub async fn list_events(
        &self,
        created_gte: i64,
        starting_after: Option<&str>,
    ) -> Result<EventPage, CallError> {
        let mut query = vec![
            ("created[gte]", created_gte.to_string()),
            ("limit", "100".to_owned()),
        ];
        if let Some(after) = starting_after {
            query.push(("starting_after", after.to_owned()));
        }
        let query = serde_urlencoded::to_string(&query)
            .map_err(|e| CallError::Unavailable(format!("encoding the query: {e}")))?;
        let page = self
            .raw_json(
                "list_events",
                &format!("list-events-{created_gte}-{}", starting_after.unwrap_or("")),
                stripe_client_core::StripeMethod::Get,
                "/events",
                Some(&query),
                None,
            )
            .await?;
        Ok(EventPage {
            events: page["data"].as_array().cloned().unwrap_or_default(),
            has_more: page["has_more"].as_bool().unwrap_or(false),
        })
    }

    /// The JSON answer of a request the async-stripe crates we use have no typed request for
    /// (`query` and `form` URL-encoded), through [`Self::with_retries`] with one idempotency
    /// key. Read into async-stripe's own `miniserde` value, then serde_json's, so nothing of
    /// Stripe's answer is dropped by a generated struct.
    pub(crate) async fn raw_json(
        &self,
        what: &'static str,
        idempotency_key: &str,
        method: stripe_client_core::StripeMethod,
        path: &str,
        query: Option<&str>,
        form: Option<&[(&str, String)]>,
    ) -> Result<serde_json::Value, CallError> {
        let body = match form {
            Some(form) => Some(
                serde_urlencoded::to_string(form)
                    .map_err(|e| CallError::Unavailable(format!("encoding the form: {e}")))?,
            ),
            None => None,
        };
        let value = self
            .with_retries(idempotency_key, what, |strategy| {
                let mut request = stripe_client_core::RequestBuilder::new(method, path.to_owned());
                request.query = query.map(str::to_owned);
                request.body = body.clone();
                async move {
                    request
                        .customize::<miniserde::json::Value>()
                        .request_strategy(strategy)
                        .send(&self.client)
                        .await
                }
            })
            .await?;
        serde_json::from_str(&miniserde::json::to_string(&value))
            .map_err(|e| CallError::Unavailable(format!("an unreadable answer: {e}")))
    }
}

/// Attempts of one outbound call: the first plus retries on network errors and 5xx.
const ATTEMPTS: u32 = 3;

/// Why a call to Stripe failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Stripe refused the request (4xx): retrying will not help.
    #[error("Stripe refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// Stripe could not be reached, or kept failing (5xx), after retries.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
}

fn classify(err: StripeError) -> Result<CallError, CallError> {
    match err {
        StripeError::Stripe(api, status) if status < 500 => Err(CallError::Refused {
            status,
            message: api.message.clone().unwrap_or_else(|| format!("{api:?}")),
        }),
        // 5xx, timeouts and network errors: worth another attempt.
        other => Ok(CallError::Unavailable(other.to_string())),
    }
}

/// A new subscription-mode Checkout Session.
pub struct SubscriptionCheckout {
    pub price_id: String,
    pub quantity: u64,
    /// Charged once with the first invoice (the first period of extra sites).
    pub one_time: Option<OneTimeLines>,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    pub success_url: String,
    pub cancel_url: String,
    /// Copied to the session, its line item and the subscription it creates.
    pub metadata: HashMap<String, String>,
    /// A coupon applied to the subscription (an offer's); without one the buyer may type a
    /// promotion code at Checkout.
    pub coupon: Option<String>,
}

/// What a created Checkout Session is.
pub struct CheckoutSession {
    pub id: String,
    pub url: Option<String>,
}

/// Stripe takes idempotency keys of up to 255 characters. A longer one keeps its start and ends
/// with the SHA-256 of the whole, so keys that differ only past the cut stay different.
fn fit_idempotency_key(key: &str) -> String {
    const MAX: usize = 255;
    if key.chars().count() <= MAX {
        return key.to_owned();
    }
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    let head: String = key.chars().take(MAX - digest.len() - 1).collect();
    format!("{head}-{digest}")
}

impl StripeApi {
    /// Runs `call` with one idempotency key, retrying network errors and 5xx with backoff;
    /// counts it (all attempts as one call) as the operation `what`.
    async fn with_retries<T, F, Fut>(
        &self,
        idempotency_key: &str,
        what: &'static str,
        call: F,
    ) -> Result<T, CallError>
    where
        F: Fn(RequestStrategy) -> Fut,
        Fut: std::future::Future<Output = Result<T, StripeError>>,
    {
        let started = std::time::Instant::now();
        let result = self.attempts(idempotency_key, what, call).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(CallError::Refused { .. }) => "refused",
            Err(CallError::Unavailable(_)) => "unavailable",
        };
        crate::metrics::stripe_call(what, outcome, started.elapsed());
        result
    }

    async fn attempts<T, F, Fut>(
        &self,
        idempotency_key: &str,
        what: &str,
        call: F,
    ) -> Result<T, CallError>
    where
        F: Fn(RequestStrategy) -> Fut,
        Fut: std::future::Future<Output = Result<T, StripeError>>,
    {
        let key = IdempotencyKey::new(fit_idempotency_key(idempotency_key))
            .map_err(|e| CallError::Unavailable(format!("idempotency key: {e}")))?;
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
            }
            match call(RequestStrategy::Idempotent(key.clone())).await {
                Ok(value) => return Ok(value),
                Err(err) => match classify(err) {
                    Ok(retryable) => {
                        tracing::warn!(attempt = attempt + 1, call = what, error = %retryable, "a Stripe call failed; retrying");
                        last = Some(retryable);
                    }
                    Err(refused) => return Err(refused),
                },
            }
        }
        Err(last.unwrap_or_else(|| CallError::Unavailable("no attempt was made".into())))
    }

    /// Deletes a subscription item (a site removed). Deleting one that is gone already counts
    /// as done.
    pub async fn delete_subscription_item(&self, item_id: &str) -> Result<(), CallError> {
        let request = stripe_billing::subscription_item::DeleteSubscriptionItem::new(item_id);
        let key = format!("delete-item-{item_id}");
        self.gone_is_done(&key, "delete_subscription_item", |strategy| {
            request
                .customize()
                .request_strategy(strategy)
                .send(&self.client)
        })
        .await
    }

    /// Cancels a subscription at once (a member erased with `ERASURE_ACTIVE_SUBSCRIPTIONS=cancel`).
    /// One that is gone already counts as done; the cancellation reaches the aggregates through
    /// its webhook, as any other does.
    pub async fn cancel_subscription(&self, subscription_id: &str) -> Result<(), CallError> {
        let request = stripe_billing::subscription::CancelSubscription::new(subscription_id);
        let key = format!("cancel-subscription-{subscription_id}");
        self.gone_is_done(&key, "cancel_subscription", |strategy| {
            request
                .customize()
                .request_strategy(strategy)
                .send(&self.client)
        })
        .await
    }

    /// Deletes a customer (a member erased with `ERASURE_STRIPE_CUSTOMER=delete`). One that is
    /// gone already counts as done.
    pub async fn delete_customer(&self, customer_id: &str) -> Result<(), CallError> {
        let request = stripe_core::customer::DeleteCustomer::new(customer_id);
        let key = format!("delete-customer-{customer_id}");
        self.gone_is_done(&key, "delete_customer", |strategy| {
            request
                .customize()
                .request_strategy(strategy)
                .send(&self.client)
        })
        .await
    }

    /// [`Self::with_retries`] for a call that ends or removes something: a 404 (it is gone
    /// already) counts as done.
    async fn gone_is_done<T, F, Fut>(
        &self,
        idempotency_key: &str,
        what: &'static str,
        call: F,
    ) -> Result<(), CallError>
    where
        F: Fn(RequestStrategy) -> Fut,
        Fut: std::future::Future<Output = Result<T, StripeError>>,
    {
        match self.with_retries(idempotency_key, what, call).await {
            Ok(_) | Err(CallError::Refused { status: 404, .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Creates the session. `idempotency_key` is derived from the request's cause, so a retry
    /// (ours after a 5xx or network error, or the client's) cannot create a second session.
    pub async fn create_subscription_checkout(
        &self,
        checkout: &SubscriptionCheckout,
        idempotency_key: &str,
    ) -> Result<CheckoutSession, CallError> {
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price = Some(checkout.price_id.clone());
        item.quantity = Some(checkout.quantity);
        item.metadata = Some(checkout.metadata.clone());
        let mut lines = vec![item];
        if let Some(one_time) = &checkout.one_time {
            lines.extend(price_data_lines(&one_time.currency, &one_time.lines)?);
        }
        let mut subscription = CreateCheckoutSessionSubscriptionData::new();
        subscription.metadata = Some(checkout.metadata.clone());
        let mut request = CreateCheckoutSession::new()
            .mode(stripe_shared::CheckoutSessionMode::Subscription)
            .line_items(lines)
            .subscription_data(subscription)
            .metadata(checkout.metadata.clone())
            .success_url(checkout.success_url.clone())
            .cancel_url(checkout.cancel_url.clone());
        if let Some(coupon) = &checkout.coupon {
            let mut discount =
                stripe_checkout::checkout_session::CreateCheckoutSessionDiscounts::new();
            discount.coupon = Some(coupon.clone());
            request = request.discounts(vec![discount]);
        } else {
            // Without an offer the buyer may type an offer's promotion code at Stripe (Stripe
            // refuses `allow_promotion_codes` together with `discounts`).
            request = request.allow_promotion_codes(true);
        }
        request = match (&checkout.customer, &checkout.customer_email) {
            (Some(customer), _) => request.customer(customer.clone()),
            (None, Some(email)) => request.customer_email(email.clone()),
            (None, None) => request,
        };
        let session = self
            .with_retries(idempotency_key, "create_checkout_session", |strategy| {
                request
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client)
            })
            .await?;
        Ok(CheckoutSession {
            id: session.id.to_string(),
            url: session.url,
        })
    }
}

impl StripeApi {
    /// A Billing Portal session for `customer` (update the payment method, cancel at period
    /// end or resume, as the account's portal configuration allows), returning to
    /// `return_url`; answers the session's short-lived URL. Each call is a new session (they
    /// expire within minutes); `idempotency_key` covers this call's own retries.
    pub async fn create_billing_portal_session(
        &self,
        customer: &str,
        return_url: &str,
        idempotency_key: &str,
    ) -> Result<String, CallError> {
        use stripe_billing::billing_portal_session::CreateBillingPortalSession;
        let request = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url);
        let session = self
            .with_retries(
                idempotency_key,
                "create_billing_portal_session",
                |strategy| {
                    request
                        .customize()
                        .request_strategy(strategy)
                        .send(&self.client)
                },
            )
            .await?;
        Ok(session.url)
    }
}

/// A recurring price, as Stripe has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurringPrice {
    pub product_id: String,
    pub unit_amount: i64,
    pub currency: String,
    pub interval: aggregates::BillingInterval,
    pub interval_count: u32,
}

impl StripeApi {
    /// The price, or `None` when it is not a recurring price with a fixed unit amount.
    pub async fn recurring_price(
        &self,
        price_id: &str,
    ) -> Result<Option<RecurringPrice>, CallError> {
        use stripe_client_core::{RequestBuilder, StripeMethod};
        use stripe_shared::RecurringInterval;
        let price = self
            .with_retries(&format!("price-{price_id}"), "retrieve_price", |strategy| {
                RequestBuilder::new(StripeMethod::Get, format!("/prices/{price_id}"))
                    .customize::<stripe_shared::Price>()
                    .request_strategy(strategy)
                    .send(&self.client)
            })
            .await?;
        let (Some(recurring), Some(unit_amount)) = (price.recurring, price.unit_amount) else {
            return Ok(None);
        };
        let interval = match recurring.interval {
            RecurringInterval::Day => aggregates::BillingInterval::Day,
            RecurringInterval::Week => aggregates::BillingInterval::Week,
            RecurringInterval::Month => aggregates::BillingInterval::Month,
            RecurringInterval::Year => aggregates::BillingInterval::Year,
            _ => return Ok(None),
        };
        Ok(Some(RecurringPrice {
            product_id: price.product.id().to_string(),
            unit_amount,
            currency: price.currency.to_string(),
            interval,
            interval_count: u32::try_from(recurring.interval_count).unwrap_or(1),
        }))
    }
}

/// Paying now for what is added to an existing subscription (sites, or license seats).
pub struct PaymentCheckout {
    pub customer: String,
    pub lines: Vec<CheckoutLine>,
    pub currency: String,
    pub success_url: String,
    pub cancel_url: String,
    /// On the session and its payment intent.
    pub metadata: HashMap<String, String>,
}

/// Lines charged once, in one currency.
pub struct OneTimeLines {
    pub currency: String,
    pub lines: Vec<CheckoutLine>,
}

/// One line of a [`PaymentCheckout`] or [`OneTimeLines`].
pub struct CheckoutLine {
    /// Its name on the receipt.
    pub name: String,
    /// Per unit, minor units (prorated).
    pub unit_amount: i64,
    pub quantity: u64,
}

/// An item to add to a subscription: the price of the subscription's plan, as an ad hoc price
/// (Stripe allows one item per price), already paid for (no proration).
pub struct NewItem {
    pub subscription_id: String,
    pub product_id: String,
    pub unit_amount: i64,
    pub currency: String,
    pub interval: aggregates::BillingInterval,
    pub interval_count: u32,
    pub quantity: u64,
    /// `site` for a site, `license_purchase_id` for license seats.
    pub metadata: HashMap<String, String>,
}

/// Line items with ad hoc one-time prices.
fn price_data_lines(
    currency_code: &str,
    lines: &[CheckoutLine],
) -> Result<Vec<CreateCheckoutSessionLineItems>, CallError> {
    use stripe_checkout::checkout_session::{CreateCheckoutSessionLineItemsPriceData, ProductData};
    let code = currency(currency_code)?;
    Ok(lines
        .iter()
        .map(|line| {
            let mut price = CreateCheckoutSessionLineItemsPriceData::new(code.clone());
            price.product_data = Some(ProductData::new(line.name.clone()));
            price.unit_amount = Some(line.unit_amount);
            let mut item = CreateCheckoutSessionLineItems::new();
            item.price_data = Some(price);
            item.quantity = Some(line.quantity);
            item
        })
        .collect())
}

fn currency(code: &str) -> Result<stripe_types::Currency, CallError> {
    code.parse().map_err(|_| CallError::Refused {
        status: 400,
        message: format!("unknown currency {code:?}"),
    })
}

impl StripeApi {
    /// A payment-mode Checkout Session for `checkout`.
    pub async fn create_payment_checkout(
        &self,
        checkout: &PaymentCheckout,
        idempotency_key: &str,
    ) -> Result<CheckoutSession, CallError> {
        use stripe_checkout::checkout_session::CreateCheckoutSessionPaymentIntentData;
        let lines = price_data_lines(&checkout.currency, &checkout.lines)?;
        let mut intent = CreateCheckoutSessionPaymentIntentData::new();
        intent.metadata = Some(checkout.metadata.clone());
        let request = CreateCheckoutSession::new()
            .mode(stripe_shared::CheckoutSessionMode::Payment)
            .customer(checkout.customer.clone())
            .line_items(lines)
            .payment_intent_data(intent)
            .metadata(checkout.metadata.clone())
            .success_url(checkout.success_url.clone())
            .cancel_url(checkout.cancel_url.clone());
        let session = self
            .with_retries(idempotency_key, "create_payment_checkout", |strategy| {
                request
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client)
            })
            .await?;
        Ok(CheckoutSession {
            id: session.id.to_string(),
            url: session.url,
        })
    }

    /// Adds an item; returns its id. The idempotency key makes a repeated call (a second
    /// webhook for the same payment) return the same item instead of adding another.
    pub async fn add_item(
        &self,
        item: &NewItem,
        idempotency_key: &str,
    ) -> Result<String, CallError> {
        use stripe_billing::subscription_item::{
            CreateSubscriptionItem, CreateSubscriptionItemPriceData,
            CreateSubscriptionItemPriceDataRecurring,
            CreateSubscriptionItemPriceDataRecurringInterval as Interval,
            CreateSubscriptionItemProrationBehavior,
        };
        let interval = match item.interval {
            aggregates::BillingInterval::Day => Interval::Day,
            aggregates::BillingInterval::Week => Interval::Week,
            aggregates::BillingInterval::Month => Interval::Month,
            aggregates::BillingInterval::Year => Interval::Year,
        };
        let mut recurring = CreateSubscriptionItemPriceDataRecurring::new(interval);
        recurring.interval_count = Some(u64::from(item.interval_count));
        let mut price = CreateSubscriptionItemPriceData::new(
            currency(&item.currency)?,
            item.product_id.clone(),
            recurring,
        );
        price.unit_amount = Some(item.unit_amount);
        let request = CreateSubscriptionItem::new(item.subscription_id.clone())
            .price_data(price)
            .quantity(item.quantity)
            .proration_behavior(CreateSubscriptionItemProrationBehavior::None)
            .metadata(item.metadata.clone());
        let created = self
            .with_retries(idempotency_key, "add_subscription_item", |strategy| {
                request
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client)
            })
            .await?;
        Ok(created.id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_idempotency_keys_are_cut_to_255_characters_and_stay_distinct() {
        assert_eq!(
            fit_idempotency_key("add-site-cs_1-a.com"),
            "add-site-cs_1-a.com"
        );
        let site = "x".repeat(240);
        let a = fit_idempotency_key(&format!("add-site-cs_1-{site}.a.com"));
        let b = fit_idempotency_key(&format!("add-site-cs_1-{site}.b.com"));
        assert_eq!(a.chars().count(), 255);
        assert_eq!(b.chars().count(), 255);
        assert_ne!(a, b);
        assert!(a.starts_with("add-site-cs_1-xxx"));
        assert_eq!(
            a,
            fit_idempotency_key(&format!("add-site-cs_1-{site}.a.com"))
        );
    }
}
