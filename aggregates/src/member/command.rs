//! What the Member aggregate is asked to do, and why it refuses.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{CompEndReason, LoginMethod, MemberSource};
use crate::attribution::Attribution;
use crate::values::{EmailAddress, Labels, MemberName, Note};

#[derive(Debug, Clone, PartialEq)]
pub enum MemberCommand {
    CreateMember {
        member_id: Uuid,
        email: EmailAddress,
        name: Option<MemberName>,
        note: Option<Note>,
        labels: Labels,
        source: MemberSource,
        /// Where the member came from (signup URL history, or the fixed one of its context).
        attribution: Option<Box<Attribution>>,
        /// Newsletters to subscribe the new member to.
        newsletters: Vec<Uuid>,
        at: DateTime<Utc>,
    },
    /// Changes the fields that are `Some`; the inner `None` clears a name or note.
    UpdateMember {
        name: Option<Option<MemberName>>,
        note: Option<Option<Note>>,
        labels: Option<Labels>,
        at: DateTime<Utc>,
    },
    /// The caller has reserved the new address in the unique email lookup first.
    ChangeEmail {
        email: EmailAddress,
        at: DateTime<Utc>,
    },
    /// Whether any of the member's subscriptions is paying; the status follows
    /// [`MemberStatus::of`]. A no-op when the status stays.
    SetPaying {
        paying: bool,
        /// What caused the change, e.g. the subscription whose status changed.
        reason: String,
        at: DateTime<Utc>,
    },
    /// Gives complimentary access to `tier_id` (the caller checked the tier), or changes the
    /// tier or `until` of the current one. A no-op when unchanged; refused when `until` is not
    /// after `at`.
    GrantComp {
        tier_id: Uuid,
        until: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    /// Ends complimentary access. A no-op without one, and, when `Expired`, while its `until`
    /// is still ahead of `at` (an admin extended it meanwhile), so several sweepers may send it.
    EndComp {
        reason: CompEndReason,
        at: DateTime<Utc>,
    },
    /// The caller has reserved the customer in the unique customer lookup first. A no-op when
    /// already linked.
    LinkStripeCustomer {
        customer_id: String,
        at: DateTime<Utc>,
    },
    RecordLogin {
        method: LoginMethod,
        at: DateTime<Utc>,
    },
    /// A no-op when already subscribed.
    SubscribeNewsletter {
        newsletter_id: Uuid,
        at: DateTime<Utc>,
    },
    /// A no-op when not subscribed.
    UnsubscribeNewsletter {
        newsletter_id: Uuid,
        at: DateTime<Utc>,
    },
    /// The address refused mail for good (a permanent SMTP failure): no member email is sent
    /// to it until it is enabled again. A no-op when already disabled.
    DisableEmail { reason: String, at: DateTime<Utc> },
    /// The member (signed in) or an admin lifts the suppression. A no-op when not disabled.
    EnableEmail { at: DateTime<Utc> },
    /// Erases the member's personal data; ends complimentary access first. From then on the
    /// member does not exist for any command (those that reconcile outside state, such as
    /// [`Self::SetPaying`], are no-ops rather than errors, so late webhooks do not fail).
    Erase { at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("the member already exists")]
    AlreadyExists,
    #[error("the member does not exist")]
    NotFound,
    #[error("complimentary access must end after it is given")]
    CompUntilPassed,
}
