//! Stripe: verified webhooks into an inbox, inbox tasks translating events into commands,
//! and the outbound API client.

pub mod client;
pub mod endpoint;
#[cfg(test)]
mod fixtures;
pub mod inbox;
pub mod products;
pub mod purchase_metadata;
pub mod reconcile;
pub mod translate;
pub mod webhook;
