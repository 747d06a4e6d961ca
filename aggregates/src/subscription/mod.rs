//! The Subscription aggregate: a Stripe subscription as we know it (id = Stripe's `sub_...`).
//!
//! Stripe's webhooks arrive late, twice, out of order and in parallel. Each Stripe state is
//! applied only if it is newer than the newest applied one, by a total order on
//! [`StripeObservation`]s, so any delivery order converges on the same final state.

mod aggregate;
mod apply_state;
mod command;
mod event;
mod purchase;
mod stripe;
#[cfg(test)]
mod tests;

pub use aggregate::Subscription;
pub use command::{SubscriptionCommand, SubscriptionError};
pub use event::SubscriptionEvent;
pub use purchase::{Purchase, PurchaseState};
pub use stripe::{Payment, StripeObservation, StripeSubscriptionState};

pub use crate::billing::{
    BillingInterval, Discount, DiscountDuration, DiscountOff, Price, PurchaseType,
    SubscriptionItem, SubscriptionStatus,
};
