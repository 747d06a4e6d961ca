//! The Newsletter aggregate: a list members subscribe to. Subscriptions themselves are
//! events of the Member aggregate (`NewsletterSubscribed`, `NewsletterUnsubscribed`).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NewsletterStatus {
    #[default]
    Active,
    /// Kept for history; members cannot subscribe any more.
    Archived,
}

impl NewsletterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum NewsletterCommand {
    CreateNewsletter {
        newsletter_id: Uuid,
        name: String,
        description: Option<String>,
        status: NewsletterStatus,
        subscribe_on_signup: bool,
        at: DateTime<Utc>,
    },
    /// Changes the fields that are `Some`; `description: Some(None)` clears it.
    UpdateNewsletter {
        name: Option<String>,
        description: Option<Option<String>>,
        status: Option<NewsletterStatus>,
        subscribe_on_signup: Option<bool>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum NewsletterEvent {
    NewsletterCreated {
        newsletter_id: Uuid,
        name: String,
        description: Option<String>,
        status: NewsletterStatus,
        subscribe_on_signup: bool,
        created_at: DateTime<Utc>,
    },
    /// Carries the whole newsletter after the change.
    NewsletterUpdated {
        name: String,
        description: Option<String>,
        status: NewsletterStatus,
        subscribe_on_signup: bool,
        updated_at: DateTime<Utc>,
    },
}

impl DomainEvent for NewsletterEvent {
    fn event_type(&self) -> String {
        match self {
            Self::NewsletterCreated { .. } => "NewsletterCreated",
            Self::NewsletterUpdated { .. } => "NewsletterUpdated",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewsletterError {
    #[error("the newsletter already exists")]
    AlreadyExists,
    #[error("the newsletter does not exist")]
    NotFound,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Newsletter {
    id: Option<Uuid>,
    name: String,
    description: Option<String>,
    status: NewsletterStatus,
    subscribe_on_signup: bool,
}

impl Aggregate for Newsletter {
    const TYPE: &'static str = "Newsletter";
    type Command = NewsletterCommand;
    type Event = NewsletterEvent;
    type Error = NewsletterError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            NewsletterCommand::CreateNewsletter {
                newsletter_id,
                name,
                description,
                status,
                subscribe_on_signup,
                at,
            } => {
                if self.id.is_some() {
                    return Err(NewsletterError::AlreadyExists);
                }
                let event = NewsletterEvent::NewsletterCreated {
                    newsletter_id,
                    name,
                    description,
                    status,
                    subscribe_on_signup,
                    created_at: at,
                };
                sink.write(event, self).await;
            }
            NewsletterCommand::UpdateNewsletter {
                name,
                description,
                status,
                subscribe_on_signup,
                at,
            } => {
                if self.id.is_none() {
                    return Err(NewsletterError::NotFound);
                }
                let name = name.unwrap_or_else(|| self.name.clone());
                let description = description.unwrap_or_else(|| self.description.clone());
                let status = status.unwrap_or(self.status);
                let subscribe_on_signup = subscribe_on_signup.unwrap_or(self.subscribe_on_signup);
                let changed = name != self.name
                    || description != self.description
                    || status != self.status
                    || subscribe_on_signup != self.subscribe_on_signup;
                if changed {
                    let event = NewsletterEvent::NewsletterUpdated {
                        name,
                        description,
                        status,
                        subscribe_on_signup,
                        updated_at: at,
                    };
                    sink.write(event, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            NewsletterEvent::NewsletterCreated {
                newsletter_id,
                name,
                description,
                status,
                subscribe_on_signup,
                ..
            } => {
                self.id = Some(newsletter_id);
                self.name = name;
                self.description = description;
                self.status = status;
                self.subscribe_on_signup = subscribe_on_signup;
            }
            NewsletterEvent::NewsletterUpdated {
                name,
                description,
                status,
                subscribe_on_signup,
                ..
            } => {
                self.name = name;
                self.description = description;
                self.status = status;
                self.subscribe_on_signup = subscribe_on_signup;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    fn created() -> NewsletterEvent {
        NewsletterEvent::NewsletterCreated {
            newsletter_id: Uuid::from_u128(7),
            name: "Weekly".into(),
            description: None,
            status: NewsletterStatus::Active,
            subscribe_on_signup: true,
            created_at: at(),
        }
    }

    #[test]
    fn create_then_create_again_is_refused() {
        TestFramework::<Newsletter>::with(())
            .given(vec![created()])
            .when(NewsletterCommand::CreateNewsletter {
                newsletter_id: Uuid::from_u128(7),
                name: "Weekly".into(),
                description: None,
                status: NewsletterStatus::Active,
                subscribe_on_signup: true,
                at: at(),
            })
            .then_expect_error(NewsletterError::AlreadyExists);
    }

    #[test]
    fn archiving_keeps_the_other_fields() {
        TestFramework::<Newsletter>::with(())
            .given(vec![created()])
            .when(NewsletterCommand::UpdateNewsletter {
                name: None,
                description: None,
                status: Some(NewsletterStatus::Archived),
                subscribe_on_signup: None,
                at: at(),
            })
            .then_expect_events(vec![NewsletterEvent::NewsletterUpdated {
                name: "Weekly".into(),
                description: None,
                status: NewsletterStatus::Archived,
                subscribe_on_signup: true,
                updated_at: at(),
            }]);
    }

    #[test]
    fn an_update_that_changes_nothing_emits_nothing() {
        TestFramework::<Newsletter>::with(())
            .given(vec![created()])
            .when(NewsletterCommand::UpdateNewsletter {
                name: Some("Weekly".into()),
                description: Some(None),
                status: None,
                subscribe_on_signup: Some(true),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn updating_an_unknown_newsletter_is_refused() {
        TestFramework::<Newsletter>::with(())
            .given_no_previous_events()
            .when(NewsletterCommand::UpdateNewsletter {
                name: None,
                description: None,
                status: None,
                subscribe_on_signup: None,
                at: at(),
            })
            .then_expect_error(NewsletterError::NotFound);
    }
}
