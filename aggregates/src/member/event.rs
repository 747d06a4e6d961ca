//! What happened to a member: the Member aggregate's events and their versions.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CompEndReason, LoginMethod, MemberSource, MemberStatus};
use crate::attribution::Attribution;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum MemberEvent {
    /// Version 1.1 added `attribution` (1.0 events are upcast with `attribution: null`).
    MemberCreated {
        member_id: Uuid,
        email: String,
        name: Option<String>,
        note: Option<String>,
        labels: Vec<String>,
        source: MemberSource,
        attribution: Option<Box<Attribution>>,
        created_at: DateTime<Utc>,
    },
    /// Carries the whole editable profile after the change.
    MemberUpdated {
        name: Option<String>,
        note: Option<String>,
        labels: Vec<String>,
        updated_at: DateTime<Utc>,
    },
    MemberEmailChanged {
        old_email: String,
        new_email: String,
        changed_at: DateTime<Utc>,
    },
    MemberStatusChanged {
        from: MemberStatus,
        to: MemberStatus,
        reason: String,
        changed_at: DateTime<Utc>,
    },
    MemberStripeCustomerLinked {
        customer_id: String,
        linked_at: DateTime<Utc>,
    },
    MemberLoggedIn {
        method: LoginMethod,
        logged_in_at: DateTime<Utc>,
    },
    NewsletterSubscribed {
        newsletter_id: Uuid,
        subscribed_at: DateTime<Utc>,
    },
    NewsletterUnsubscribed {
        newsletter_id: Uuid,
        unsubscribed_at: DateTime<Utc>,
    },
    /// The address refused mail for good; member emails to it stop (Ghost's suppression).
    MemberEmailDisabled {
        email: String,
        reason: String,
        disabled_at: DateTime<Utc>,
    },
    /// The suppression was lifted (who did it is the event's `actor`).
    MemberEmailEnabled {
        email: String,
        enabled_at: DateTime<Utc>,
    },
    /// Complimentary access to `tier_id` was given, or its tier or `until` changed: it replaces
    /// any the member had.
    MemberCompGranted {
        tier_id: Uuid,
        until: Option<DateTime<Utc>>,
        granted_at: DateTime<Utc>,
    },
    /// Complimentary access to `tier_id` ended.
    MemberCompEnded {
        tier_id: Uuid,
        reason: CompEndReason,
        ended_at: DateTime<Utc>,
    },
    /// The member's personal data was erased (GDPR): its data key is destroyed in the same
    /// transaction, so its earlier events' personal fields read as the erased placeholder.
    /// Carries no personal data itself.
    MemberErased { erased_at: DateTime<Utc> },
}

impl MemberEvent {
    pub const CREATED: &'static str = "MemberCreated";
    pub const CREATED_VERSION: &'static str = "1.1";
    pub const UPDATED: &'static str = "MemberUpdated";
    pub const EMAIL_CHANGED: &'static str = "MemberEmailChanged";
    pub const STATUS_CHANGED: &'static str = "MemberStatusChanged";
    pub const STRIPE_CUSTOMER_LINKED: &'static str = "MemberStripeCustomerLinked";
    pub const LOGGED_IN: &'static str = "MemberLoggedIn";
    pub const NEWSLETTER_SUBSCRIBED: &'static str = "NewsletterSubscribed";
    pub const NEWSLETTER_UNSUBSCRIBED: &'static str = "NewsletterUnsubscribed";
    pub const EMAIL_DISABLED: &'static str = "MemberEmailDisabled";
    pub const EMAIL_ENABLED: &'static str = "MemberEmailEnabled";
    pub const COMP_GRANTED: &'static str = "MemberCompGranted";
    pub const COMP_ENDED: &'static str = "MemberCompEnded";
    pub const ERASED: &'static str = "MemberErased";
}

impl DomainEvent for MemberEvent {
    fn event_type(&self) -> String {
        match self {
            Self::MemberCreated { .. } => Self::CREATED,
            Self::MemberUpdated { .. } => Self::UPDATED,
            Self::MemberEmailChanged { .. } => Self::EMAIL_CHANGED,
            Self::MemberStatusChanged { .. } => Self::STATUS_CHANGED,
            Self::MemberStripeCustomerLinked { .. } => Self::STRIPE_CUSTOMER_LINKED,
            Self::MemberLoggedIn { .. } => Self::LOGGED_IN,
            Self::NewsletterSubscribed { .. } => Self::NEWSLETTER_SUBSCRIBED,
            Self::NewsletterUnsubscribed { .. } => Self::NEWSLETTER_UNSUBSCRIBED,
            Self::MemberEmailDisabled { .. } => Self::EMAIL_DISABLED,
            Self::MemberEmailEnabled { .. } => Self::EMAIL_ENABLED,
            Self::MemberCompGranted { .. } => Self::COMP_GRANTED,
            Self::MemberCompEnded { .. } => Self::COMP_ENDED,
            Self::MemberErased { .. } => Self::ERASED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::MemberCreated { .. } => Self::CREATED_VERSION,
            _ => "1.0",
        }
        .to_owned()
    }
}
