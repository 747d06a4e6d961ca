//! The License aggregate: one license key, issued because of one cause (a site item, one seat
//! of a quantity item, or one seat of a license purchase). Its id is derived from that cause, so
//! a repeated cause (a webhook delivered twice, a policy re-run) cannot issue a second key.
//!
//! A license purchase (`POST /v1/me/license-purchases`) reserves its keys before the member
//! pays: they are `pending` until the payment adds their item to the subscription (then
//! `active`), or `canceled` when the checkout expires unpaid.

mod aggregate;
mod command;
mod event;
mod key;
mod status;
#[cfg(test)]
mod tests;

pub use aggregate::{License, Machine};
pub use command::{LicenseCommand, LicenseError};
pub use event::LicenseEvent;
pub use key::{LicenseKey, LicenseKeyError};
pub use status::{CancelReason, DeactivationReason, LicenseStatus};
