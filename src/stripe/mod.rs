//! Stripe: verified webhooks into an inbox, inbox workers translating events into commands,
//! and the outbound API client.

pub mod client;
pub mod inbox;
pub mod translate;
pub mod webhook;
