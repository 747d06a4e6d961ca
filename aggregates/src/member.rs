//! The Member aggregate: who a member is (email, name, note, labels) and where they came from.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::attribution::Attribution;
use crate::values::{EmailAddress, Labels, MemberName, Note};

/// How a member came to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberSource {
    Admin,
    Api,
    Import,
    Signup,
    Stripe,
}

impl MemberSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Api => "api",
            Self::Import => "import",
            Self::Signup => "signup",
            Self::Stripe => "stripe",
        }
    }
}

/// Whether a member pays. Every member starts free.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    #[default]
    Free,
    Paid,
    Comped,
}

impl MemberStatus {
    /// The status rule, the one place it is written: a paying subscription wins (`paid`), else
    /// complimentary access (`comped`), else `free`. The subscriptions' side reaches the
    /// aggregate through `SetPaying`, the comp's through `GrantComp` and `EndComp`.
    pub fn of(paying: bool, comped: bool) -> Self {
        match (paying, comped) {
            (true, _) => Self::Paid,
            (false, true) => Self::Comped,
            (false, false) => Self::Free,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Paid => "paid",
            Self::Comped => "comped",
        }
    }
}

/// Complimentary access: a tier an admin gives a member for free, until a time or without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Comp {
    pub tier_id: Uuid,
    pub until: Option<DateTime<Utc>>,
}

/// Why complimentary access ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompEndReason {
    /// An admin took it away.
    Revoked,
    /// Its `until` passed.
    Expired,
}

impl CompEndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

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
}

/// How a member proved they own their email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoginMethod {
    /// The 6-digit code from the email.
    Code,
    /// The magic link from the email.
    Link,
}

impl LoginMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Link => "link",
        }
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("the member already exists")]
    AlreadyExists,
    #[error("the member does not exist")]
    NotFound,
    #[error("complimentary access must end after it is given")]
    CompUntilPassed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Member {
    id: Option<Uuid>,
    email: String,
    name: Option<String>,
    note: Option<String>,
    labels: Vec<String>,
    status: MemberStatus,
    stripe_customers: Vec<String>,
    newsletters: Vec<Uuid>,
    /// Why mail to the address is suppressed, while it is.
    #[serde(default)]
    email_disabled: Option<String>,
    /// Complimentary access, while the member has it.
    #[serde(default)]
    comp: Option<Comp>,
}

impl Member {
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    pub fn email(&self) -> &str {
        &self.email
    }

    pub fn status(&self) -> MemberStatus {
        self.status
    }

    pub fn newsletters(&self) -> &[Uuid] {
        &self.newsletters
    }

    /// Why member emails to the address are suppressed, while they are.
    pub fn email_disabled(&self) -> Option<&str> {
        self.email_disabled.as_deref()
    }

    pub fn comp(&self) -> Option<Comp> {
        self.comp
    }

    /// Whether a subscription pays: the status says it, as `paid` wins over a comp.
    fn paying(&self) -> bool {
        self.status == MemberStatus::Paid
    }

    /// The status change, if any, when paying or the comp is as given.
    fn status_change(
        &self,
        paying: bool,
        comped: bool,
        reason: String,
        at: DateTime<Utc>,
    ) -> Option<MemberEvent> {
        let to = MemberStatus::of(paying, comped);
        (to != self.status).then_some(MemberEvent::MemberStatusChanged {
            from: self.status,
            to,
            reason,
            changed_at: at,
        })
    }
}

impl Aggregate for Member {
    const TYPE: &'static str = "Member";
    type Command = MemberCommand;
    type Event = MemberEvent;
    type Error = MemberError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            MemberCommand::CreateMember {
                member_id,
                email,
                name,
                note,
                labels,
                source,
                attribution,
                newsletters,
                at,
            } => {
                if self.exists() {
                    return Err(MemberError::AlreadyExists);
                }
                let event = MemberEvent::MemberCreated {
                    member_id,
                    email: email.into(),
                    name: name.map(MemberName::into_inner),
                    note: note.map(Note::into_inner),
                    labels: labels.into_inner(),
                    source,
                    attribution,
                    created_at: at,
                };
                sink.write(event, self).await;
                for newsletter_id in newsletters {
                    if !self.newsletters.contains(&newsletter_id) {
                        let event = MemberEvent::NewsletterSubscribed {
                            newsletter_id,
                            subscribed_at: at,
                        };
                        sink.write(event, self).await;
                    }
                }
            }
            MemberCommand::UpdateMember {
                name,
                note,
                labels,
                at,
            } => {
                if !self.exists() {
                    return Err(MemberError::NotFound);
                }
                let name =
                    name.map_or_else(|| self.name.clone(), |n| n.map(MemberName::into_inner));
                let note = note.map_or_else(|| self.note.clone(), |n| n.map(Note::into_inner));
                let labels = labels.map_or_else(|| self.labels.clone(), Labels::into_inner);
                if name != self.name || note != self.note || labels != self.labels {
                    let event = MemberEvent::MemberUpdated {
                        name,
                        note,
                        labels,
                        updated_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            MemberCommand::ChangeEmail { email, at } => {
                if !self.exists() {
                    return Err(MemberError::NotFound);
                }
                if email.as_str() != self.email {
                    let event = MemberEvent::MemberEmailChanged {
                        old_email: self.email.clone(),
                        new_email: email.into(),
                        changed_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            MemberCommand::SetPaying { paying, reason, at } => {
                if !self.exists() {
                    return Err(MemberError::NotFound);
                }
                if let Some(event) = self.status_change(paying, self.comp.is_some(), reason, at) {
                    sink.write(event, self).await;
                }
            }
            MemberCommand::GrantComp { tier_id, until, at } => {
                if !self.exists() {
                    return Err(MemberError::NotFound);
                }
                if until.is_some_and(|until| until <= at) {
                    return Err(MemberError::CompUntilPassed);
                }
                let comp = Comp { tier_id, until };
                if self.comp != Some(comp) {
                    let event = MemberEvent::MemberCompGranted {
                        tier_id,
                        until,
                        granted_at: at,
                    };
                    sink.write(event, self).await;
                    let reason = format!("complimentary access to tier {tier_id}");
                    if let Some(event) = self.status_change(self.paying(), true, reason, at) {
                        sink.write(event, self).await;
                    }
                }
            }
            MemberCommand::EndComp { reason, at } => {
                if !self.exists() {
                    return Err(MemberError::NotFound);
                }
                let Some(comp) = self.comp else {
                    return Ok(());
                };
                let due = match reason {
                    CompEndReason::Revoked => true,
                    CompEndReason::Expired => comp.until.is_some_and(|until| until <= at),
                };
                if due {
                    let event = MemberEvent::MemberCompEnded {
                        tier_id: comp.tier_id,
                        reason,
                        ended_at: at,
                    };
                    sink.write(event, self).await;
                    let why = format!(
                        "complimentary access to tier {} {}",
                        comp.tier_id,
                        reason.as_str()
                    );
                    if let Some(event) = self.status_change(self.paying(), false, why, at) {
                        sink.write(event, self).await;
                    }
                }
            }
            MemberCommand::RecordLogin { method, at } => {
                if !self.exists() {
                    return Err(MemberError::NotFound);
                }
                let event = MemberEvent::MemberLoggedIn {
                    method,
                    logged_in_at: at,
                };
                sink.write(event, self).await;
            }
            MemberCommand::SubscribeNewsletter { newsletter_id, at } => {
                if !self.exists() {
                    return Err(MemberError::NotFound);
                }
                if !self.newsletters.contains(&newsletter_id) {
                    let event = MemberEvent::NewsletterSubscribed {
                        newsletter_id,
                        subscribed_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            MemberCommand::UnsubscribeNewsletter { newsletter_id, at } => {
                if !self.exists() {
                    return Err(MemberError::NotFound);
                }
                if self.newsletters.contains(&newsletter_id) {
                    let event = MemberEvent::NewsletterUnsubscribed {
                        newsletter_id,
                        unsubscribed_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            MemberCommand::DisableEmail { reason, at } => {
                if !self.exists() {
                    return Err(MemberError::NotFound);
                }
                if self.email_disabled.is_none() {
                    let event = MemberEvent::MemberEmailDisabled {
                        email: self.email.clone(),
                        reason,
                        disabled_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            MemberCommand::EnableEmail { at } => {
                if !self.exists() {
                    return Err(MemberError::NotFound);
                }
                if self.email_disabled.is_some() {
                    let event = MemberEvent::MemberEmailEnabled {
                        email: self.email.clone(),
                        enabled_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
            MemberCommand::LinkStripeCustomer { customer_id, at } => {
                if !self.exists() {
                    return Err(MemberError::NotFound);
                }
                if !self.stripe_customers.contains(&customer_id) {
                    let event = MemberEvent::MemberStripeCustomerLinked {
                        customer_id,
                        linked_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            MemberEvent::MemberCreated {
                member_id,
                email,
                name,
                note,
                labels,
                ..
            } => {
                self.id = Some(member_id);
                self.email = email;
                self.name = name;
                self.note = note;
                self.labels = labels;
            }
            MemberEvent::MemberUpdated {
                name, note, labels, ..
            } => {
                self.name = name;
                self.note = note;
                self.labels = labels;
            }
            MemberEvent::MemberEmailChanged { new_email, .. } => {
                // The suppression was the old address's: a new one gets mail.
                self.email = new_email;
                self.email_disabled = None;
            }
            MemberEvent::MemberStatusChanged { to, .. } => self.status = to,
            MemberEvent::MemberStripeCustomerLinked { customer_id, .. } => {
                self.stripe_customers.push(customer_id);
            }
            MemberEvent::MemberLoggedIn { .. } => {}
            MemberEvent::NewsletterSubscribed { newsletter_id, .. } => {
                self.newsletters.push(newsletter_id);
            }
            MemberEvent::NewsletterUnsubscribed { newsletter_id, .. } => {
                self.newsletters.retain(|n| *n != newsletter_id);
            }
            MemberEvent::MemberEmailDisabled { reason, .. } => self.email_disabled = Some(reason),
            MemberEvent::MemberEmailEnabled { .. } => self.email_disabled = None,
            MemberEvent::MemberCompGranted { tier_id, until, .. } => {
                self.comp = Some(Comp { tier_id, until });
            }
            MemberEvent::MemberCompEnded { .. } => self.comp = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;

    type MemberTest = TestFramework<Member>;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    fn id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
    }

    fn email(s: &str) -> EmailAddress {
        EmailAddress::parse(s).expect("valid email")
    }

    fn created() -> MemberEvent {
        MemberEvent::MemberCreated {
            member_id: id(),
            email: "ada@example.com".into(),
            name: Some("Ada".into()),
            note: None,
            labels: vec!["vip".into()],
            source: MemberSource::Admin,
            attribution: None,
            created_at: at(),
        }
    }

    fn create() -> MemberCommand {
        MemberCommand::CreateMember {
            member_id: id(),
            email: email("ada@example.com"),
            name: MemberName::parse("Ada").expect("valid"),
            note: None,
            labels: Labels::parse(&["vip"]).expect("valid"),
            source: MemberSource::Admin,
            attribution: None,
            newsletters: vec![],
            at: at(),
        }
    }

    #[test]
    fn create_member_emits_member_created() {
        MemberTest::with(())
            .given_no_previous_events()
            .when(create())
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn a_signup_is_created_with_its_attribution_and_newsletters() {
        let attribution =
            crate::attribution::for_context(crate::attribution::AttributionContext::Import);
        let newsletter_id = Uuid::from_u128(5);
        let MemberCommand::CreateMember {
            member_id,
            email,
            name,
            note,
            labels,
            at: created_at,
            ..
        } = create()
        else {
            unreachable!("create() builds a CreateMember")
        };
        MemberTest::with(())
            .given_no_previous_events()
            .when(MemberCommand::CreateMember {
                member_id,
                email,
                name,
                note,
                labels,
                source: MemberSource::Signup,
                attribution: Some(Box::new(attribution.clone())),
                newsletters: vec![newsletter_id, newsletter_id],
                at: created_at,
            })
            .then_expect_events(vec![
                MemberEvent::MemberCreated {
                    member_id: id(),
                    email: "ada@example.com".into(),
                    name: Some("Ada".into()),
                    note: None,
                    labels: vec!["vip".into()],
                    source: MemberSource::Signup,
                    attribution: Some(Box::new(attribution)),
                    created_at: at(),
                },
                MemberEvent::NewsletterSubscribed {
                    newsletter_id,
                    subscribed_at: at(),
                },
            ]);
    }

    fn disabled() -> MemberEvent {
        MemberEvent::MemberEmailDisabled {
            email: "ada@example.com".into(),
            reason: "550 no such user".into(),
            disabled_at: at(),
        }
    }

    #[test]
    fn a_permanent_failure_disables_the_email_once() {
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::DisableEmail {
                reason: "550 no such user".into(),
                at: at(),
            })
            .then_expect_events(vec![disabled()]);
        MemberTest::with(())
            .given(vec![created(), disabled()])
            .when(MemberCommand::DisableEmail {
                reason: "550 again".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn enabling_lifts_a_suppression_and_is_a_no_op_without_one() {
        let enabled = MemberEvent::MemberEmailEnabled {
            email: "ada@example.com".into(),
            enabled_at: at(),
        };
        MemberTest::with(())
            .given(vec![created(), disabled()])
            .when(MemberCommand::EnableEmail { at: at() })
            .then_expect_events(vec![enabled.clone()]);
        MemberTest::with(())
            .given(vec![created(), disabled(), enabled])
            .when(MemberCommand::EnableEmail { at: at() })
            .then_expect_events(vec![]);
        MemberTest::with(())
            .given_no_previous_events()
            .when(MemberCommand::EnableEmail { at: at() })
            .then_expect_error(MemberError::NotFound);
    }

    #[test]
    fn a_new_address_is_not_suppressed() {
        let changed = MemberEvent::MemberEmailChanged {
            old_email: "ada@example.com".into(),
            new_email: "ada@new.example".into(),
            changed_at: at(),
        };
        MemberTest::with(())
            .given(vec![created(), disabled(), changed])
            .when(MemberCommand::EnableEmail { at: at() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn create_member_twice_is_refused() {
        MemberTest::with(())
            .given(vec![created()])
            .when(create())
            .then_expect_error(MemberError::AlreadyExists);
    }

    #[test]
    fn update_changes_only_the_given_fields() {
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::UpdateMember {
                name: None,
                note: Some(Note::parse("met at a conference").expect("valid")),
                labels: None,
                at: at(),
            })
            .then_expect_events(vec![MemberEvent::MemberUpdated {
                name: Some("Ada".into()),
                note: Some("met at a conference".into()),
                labels: vec!["vip".into()],
                updated_at: at(),
            }]);
    }

    #[test]
    fn update_can_clear_the_name() {
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::UpdateMember {
                name: Some(None),
                note: None,
                labels: Some(Labels::default()),
                at: at(),
            })
            .then_expect_events(vec![MemberEvent::MemberUpdated {
                name: None,
                note: None,
                labels: vec![],
                updated_at: at(),
            }]);
    }

    #[test]
    fn update_that_changes_nothing_emits_nothing() {
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::UpdateMember {
                name: Some(MemberName::parse("Ada").expect("valid")),
                note: None,
                labels: None,
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn update_of_an_unknown_member_is_refused() {
        MemberTest::with(())
            .given_no_previous_events()
            .when(MemberCommand::UpdateMember {
                name: None,
                note: None,
                labels: None,
                at: at(),
            })
            .then_expect_error(MemberError::NotFound);
    }

    #[test]
    fn change_email_records_old_and_new_address() {
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::ChangeEmail {
                email: email("ada@lovelace.dev"),
                at: at(),
            })
            .then_expect_events(vec![MemberEvent::MemberEmailChanged {
                old_email: "ada@example.com".into(),
                new_email: "ada@lovelace.dev".into(),
                changed_at: at(),
            }]);
    }

    #[test]
    fn change_to_the_same_email_emits_nothing() {
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::ChangeEmail {
                email: email("ada@example.com"),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn status_change_records_from_and_to() {
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::SetPaying {
                paying: true,
                reason: "sub_1".into(),
                at: at(),
            })
            .then_expect_events(vec![MemberEvent::MemberStatusChanged {
                from: MemberStatus::Free,
                to: MemberStatus::Paid,
                reason: "sub_1".into(),
                changed_at: at(),
            }]);
    }

    #[test]
    fn status_change_to_the_current_status_emits_nothing() {
        let paid = MemberEvent::MemberStatusChanged {
            from: MemberStatus::Free,
            to: MemberStatus::Paid,
            reason: "sub_1".into(),
            changed_at: at(),
        };
        MemberTest::with(())
            .given(vec![created(), paid])
            .when(MemberCommand::SetPaying {
                paying: true,
                reason: "sub_2".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn linking_a_customer_twice_emits_once() {
        let linked = MemberEvent::MemberStripeCustomerLinked {
            customer_id: "cus_1".into(),
            linked_at: at(),
        };
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::LinkStripeCustomer {
                customer_id: "cus_1".into(),
                at: at(),
            })
            .then_expect_events(vec![linked.clone()]);
        MemberTest::with(())
            .given(vec![created(), linked])
            .when(MemberCommand::LinkStripeCustomer {
                customer_id: "cus_1".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn subscribing_twice_emits_once_and_unsubscribing_an_unsubscribed_one_nothing() {
        let newsletter_id = Uuid::from_u128(9);
        let subscribed = MemberEvent::NewsletterSubscribed {
            newsletter_id,
            subscribed_at: at(),
        };
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::SubscribeNewsletter {
                newsletter_id,
                at: at(),
            })
            .then_expect_events(vec![subscribed.clone()]);
        MemberTest::with(())
            .given(vec![created(), subscribed.clone()])
            .when(MemberCommand::SubscribeNewsletter {
                newsletter_id,
                at: at(),
            })
            .then_expect_events(vec![]);
        MemberTest::with(())
            .given(vec![created(), subscribed])
            .when(MemberCommand::UnsubscribeNewsletter {
                newsletter_id,
                at: at(),
            })
            .then_expect_events(vec![MemberEvent::NewsletterUnsubscribed {
                newsletter_id,
                unsubscribed_at: at(),
            }]);
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::UnsubscribeNewsletter {
                newsletter_id,
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn every_login_is_recorded() {
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::RecordLogin {
                method: LoginMethod::Link,
                at: at(),
            })
            .then_expect_events(vec![MemberEvent::MemberLoggedIn {
                method: LoginMethod::Link,
                logged_in_at: at(),
            }]);
    }

    fn tier() -> Uuid {
        Uuid::from_u128(0x71)
    }

    fn comp_granted(until: Option<DateTime<Utc>>) -> MemberEvent {
        MemberEvent::MemberCompGranted {
            tier_id: tier(),
            until,
            granted_at: at(),
        }
    }

    fn status(from: MemberStatus, to: MemberStatus, reason: &str) -> MemberEvent {
        MemberEvent::MemberStatusChanged {
            from,
            to,
            reason: reason.into(),
            changed_at: at(),
        }
    }

    #[test]
    fn the_status_rule_puts_paying_before_a_comp() {
        assert_eq!(MemberStatus::of(true, true), MemberStatus::Paid);
        assert_eq!(MemberStatus::of(true, false), MemberStatus::Paid);
        assert_eq!(MemberStatus::of(false, true), MemberStatus::Comped);
        assert_eq!(MemberStatus::of(false, false), MemberStatus::Free);
    }

    #[test]
    fn a_comp_makes_a_free_member_comped_and_its_end_free_again() {
        let reason = format!("complimentary access to tier {}", tier());
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::GrantComp {
                tier_id: tier(),
                until: None,
                at: at(),
            })
            .then_expect_events(vec![
                comp_granted(None),
                status(MemberStatus::Free, MemberStatus::Comped, &reason),
            ]);
        MemberTest::with(())
            .given(vec![
                created(),
                comp_granted(None),
                status(MemberStatus::Free, MemberStatus::Comped, &reason),
            ])
            .when(MemberCommand::EndComp {
                reason: CompEndReason::Revoked,
                at: at(),
            })
            .then_expect_events(vec![
                MemberEvent::MemberCompEnded {
                    tier_id: tier(),
                    reason: CompEndReason::Revoked,
                    ended_at: at(),
                },
                status(
                    MemberStatus::Comped,
                    MemberStatus::Free,
                    &format!("{reason} revoked"),
                ),
            ]);
    }

    #[test]
    fn a_paying_member_stays_paid_with_a_comp_and_becomes_comped_when_paying_stops() {
        let paid = status(MemberStatus::Free, MemberStatus::Paid, "sub_1");
        MemberTest::with(())
            .given(vec![created(), paid.clone()])
            .when(MemberCommand::GrantComp {
                tier_id: tier(),
                until: None,
                at: at(),
            })
            .then_expect_events(vec![comp_granted(None)]);
        MemberTest::with(())
            .given(vec![created(), paid, comp_granted(None)])
            .when(MemberCommand::SetPaying {
                paying: false,
                reason: "sub_1 canceled".into(),
                at: at(),
            })
            .then_expect_events(vec![status(
                MemberStatus::Paid,
                MemberStatus::Comped,
                "sub_1 canceled",
            )]);
    }

    #[test]
    fn the_same_comp_twice_emits_nothing_and_one_ending_in_the_past_is_refused() {
        MemberTest::with(())
            .given(vec![created(), comp_granted(None)])
            .when(MemberCommand::GrantComp {
                tier_id: tier(),
                until: None,
                at: at(),
            })
            .then_expect_events(vec![]);
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::GrantComp {
                tier_id: tier(),
                until: Some(at()),
                at: at(),
            })
            .then_expect_error(MemberError::CompUntilPassed);
    }

    #[test]
    fn expiry_ends_only_a_comp_whose_until_has_passed() {
        let later = at() + chrono::Duration::days(1);
        MemberTest::with(())
            .given(vec![created(), comp_granted(Some(later))])
            .when(MemberCommand::EndComp {
                reason: CompEndReason::Expired,
                at: at(),
            })
            .then_expect_events(vec![]);
        MemberTest::with(())
            .given(vec![created(), comp_granted(None)])
            .when(MemberCommand::EndComp {
                reason: CompEndReason::Expired,
                at: later,
            })
            .then_expect_events(vec![]);
        MemberTest::with(())
            .given(vec![created()])
            .when(MemberCommand::EndComp {
                reason: CompEndReason::Expired,
                at: later,
            })
            .then_expect_events(vec![]);
        MemberTest::with(())
            .given(vec![created(), comp_granted(Some(later))])
            .when(MemberCommand::EndComp {
                reason: CompEndReason::Expired,
                at: later,
            })
            .then_expect_events(vec![MemberEvent::MemberCompEnded {
                tier_id: tier(),
                reason: CompEndReason::Expired,
                ended_at: later,
            }]);
    }

    #[test]
    fn change_email_of_an_unknown_member_is_refused() {
        MemberTest::with(())
            .given_no_previous_events()
            .when(MemberCommand::ChangeEmail {
                email: email("ada@example.com"),
                at: at(),
            })
            .then_expect_error(MemberError::NotFound);
    }
}
