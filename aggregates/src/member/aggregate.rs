//! The Member aggregate's state, the commands it handles and how its events apply.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Comp, CompEndReason, MemberCommand, MemberError, MemberEvent, MemberStatus};
use crate::values::{Labels, MemberName, Note};

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
    /// Erased: the member exists for no command any more.
    #[serde(default)]
    erased: bool,
}

impl Member {
    /// Created and not erased.
    pub fn exists(&self) -> bool {
        self.id.is_some() && !self.erased
    }

    pub fn erased(&self) -> bool {
        self.erased
    }

    /// The Stripe customers linked to the member.
    pub fn stripe_customers(&self) -> &[String] {
        &self.stripe_customers
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
        if self.erased {
            return match command {
                MemberCommand::CreateMember { .. } => Err(MemberError::AlreadyExists),
                // Outside state catching up with a member who is gone: nothing to record.
                MemberCommand::SetPaying { .. }
                | MemberCommand::EndComp { .. }
                | MemberCommand::LinkStripeCustomer { .. }
                | MemberCommand::DisableEmail { .. } => Ok(()),
                _ => Err(MemberError::NotFound),
            };
        }
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
            MemberCommand::Erase { at } => {
                if !self.exists() {
                    return Err(MemberError::NotFound);
                }
                if let Some(comp) = self.comp {
                    let event = MemberEvent::MemberCompEnded {
                        tier_id: comp.tier_id,
                        reason: CompEndReason::Revoked,
                        ended_at: at,
                    };
                    sink.write(event, self).await;
                    let why = format!(
                        "complimentary access to tier {} ended by erasure",
                        comp.tier_id
                    );
                    if let Some(event) = self.status_change(self.paying(), false, why, at) {
                        sink.write(event, self).await;
                    }
                }
                for newsletter_id in self.newsletters.clone() {
                    let event = MemberEvent::NewsletterUnsubscribed {
                        newsletter_id,
                        unsubscribed_at: at,
                    };
                    sink.write(event, self).await;
                }
                sink.write(MemberEvent::MemberErased { erased_at: at }, self)
                    .await;
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
            MemberEvent::MemberErased { .. } => {
                self.erased = true;
                self.comp = None;
                // No personal data outlives the erasure in a state kept in memory (the
                // server's aggregate cache); loaded from the log, these fields read as erased.
                self.email.clear();
                self.name = None;
                self.note = None;
            }
        }
    }
}
