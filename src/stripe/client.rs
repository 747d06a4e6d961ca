//! Outbound calls to Stripe's API with async-stripe: a timeout per attempt and retries with
//! exponential backoff (same idempotency key) on network errors and 5xx.

use std::time::Duration;

use stripe_core::customer::{RetrieveCustomer, RetrieveCustomerReturned};

use super::StripeSettings;

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
        let returned = RetrieveCustomer::new(customer_id)
            .send(&self.client)
            .await
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
