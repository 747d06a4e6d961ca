//! The memberledger domain: aggregates, their commands, events and errors, and the
//! validated values they are built from. Pure logic: no I/O, no SQL.

pub mod attribution;
pub mod billing;
pub mod license;
pub mod member;
pub mod mrr;
pub mod newsletter;
pub mod offer;
pub mod schema;
pub mod subscription;
pub mod tier;
pub mod upcast;
pub mod values;

pub use attribution::{
    Attribution, AttributionContext, HistoryError, PatternError, ResourceType, RoutePatterns,
    UrlHistory, UrlHistoryEntry,
};
pub use cqrs_es;
pub use license::{
    CancelReason, DeactivationReason, License, LicenseCommand, LicenseError, LicenseEvent,
    LicenseKey, LicenseKeyError, LicenseStatus, Machine,
};
pub use member::{
    Comp, CompEndReason, LoginMethod, Member, MemberCommand, MemberError, MemberEvent,
    MemberSource, MemberStatus,
};
pub use newsletter::{
    Newsletter, NewsletterCommand, NewsletterError, NewsletterEvent, NewsletterStatus,
};
pub use offer::{
    Offer, OfferCommand, OfferDiscount, OfferDuration, OfferError, OfferEvent, OfferTerms,
};
pub use subscription::{
    BillingInterval, Discount, DiscountDuration, DiscountOff, Payment, Price, Purchase,
    PurchaseState, PurchaseType, StripeObservation, StripeSubscriptionState, Subscription,
    SubscriptionCommand, SubscriptionError, SubscriptionEvent, SubscriptionItem,
    SubscriptionStatus,
};
pub use tier::{Tier, TierCommand, TierError, TierEvent, TierPrice, TierProfile, TierVisibility};
pub use values::{EmailAddress, Labels, MemberName, Note, SiteDomain, ValueError};
