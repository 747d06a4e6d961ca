//! Stripe: verified webhooks into an inbox, inbox workers translating events into commands,
//! and the outbound API client.

pub mod client;
#[cfg(test)]
mod fixtures;
pub mod inbox;
pub mod purchase_metadata;
pub mod translate;
pub mod webhook;

use std::time::Duration;

/// How the Stripe side is set up.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `whsec_...` secrets; any one verifying a signature accepts the event (rotation).
    pub webhook_secrets: Vec<String>,
    /// Secret API key; without it the translator cannot fetch customers.
    pub secret_key: Option<String>,
    /// Stripe API base URL (a fake Stripe in tests).
    pub api_base: Option<String>,
    /// Inbox workers in this process (0: only store events).
    pub workers: usize,
    /// How long a claimed event stays claimed before another worker may retry it.
    pub lease: Duration,
    /// First retry delay after a failure; doubles per attempt up to `max_retry_delay`.
    pub retry_base: Duration,
    pub max_retry_delay: Duration,
}

impl Default for StripeSettings {
    fn default() -> Self {
        Self {
            webhook_secrets: Vec::new(),
            secret_key: None,
            api_base: None,
            workers: 2,
            lease: Duration::from_secs(60),
            retry_base: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(3600),
        }
    }
}
