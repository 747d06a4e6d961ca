//! The memberledger domain: aggregates, their commands, events and errors, and the
//! validated values they are built from. Pure logic: no I/O, no SQL.

pub mod license;
pub mod member;
pub mod mrr;
pub mod subscription;
pub mod values;

pub use cqrs_es;
pub use license::{
    DeactivationReason, License, LicenseCommand, LicenseError, LicenseEvent, LicenseKey,
    LicenseKeyError, LicenseStatus,
};
pub use member::{Member, MemberCommand, MemberError, MemberEvent, MemberSource, MemberStatus};
pub use subscription::{
    BillingInterval, Payment, Price, PurchaseType, StripeObservation, StripeSubscriptionState,
    Subscription, SubscriptionCommand, SubscriptionError, SubscriptionEvent, SubscriptionItem,
    SubscriptionStatus,
};
pub use values::{EmailAddress, Labels, MemberName, Note, SiteDomain, ValueError};
