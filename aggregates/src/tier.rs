//! The Tier aggregate: what members buy, as Ghost sells it. A tier has a name, a description,
//! benefits, a visibility, a monthly and a yearly price in one currency (each a Stripe price
//! of the tier's Stripe product) and is active or archived. Checkout names a tier and a
//! cadence; the prices are resolved from here.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Whether a tier is listed on the public pricing page (`GET /v1/tiers`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TierVisibility {
    #[default]
    Public,
    /// Not listed; still sold through a direct link or an admin.
    None,
}

impl TierVisibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::None => "none",
        }
    }
}

/// One of a tier's prices: its amount and the Stripe price that charges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TierPrice {
    /// Minor units (cents) per period.
    pub amount: i64,
    pub stripe_price_id: String,
}

/// The tier's editable description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TierProfile {
    pub name: String,
    pub description: Option<String>,
    pub benefits: Vec<String>,
    pub visibility: TierVisibility,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TierCommand {
    CreateTier {
        tier_id: Uuid,
        profile: TierProfile,
        /// ISO 4217, lower case (`usd`).
        currency: String,
        stripe_product_id: String,
        monthly: TierPrice,
        yearly: TierPrice,
        at: DateTime<Utc>,
    },
    /// Replaces the profile; nothing is appended when it is unchanged.
    UpdateTier {
        profile: TierProfile,
        at: DateTime<Utc>,
    },
    /// New prices (new Stripe prices: Stripe's are immutable); those already subscribed keep
    /// theirs.
    RepriceTier {
        monthly: TierPrice,
        yearly: TierPrice,
        at: DateTime<Utc>,
    },
    /// Archived tiers are not sold; their members keep them.
    ArchiveTier {
        at: DateTime<Utc>,
    },
    UnarchiveTier {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum TierEvent {
    TierCreated {
        tier_id: Uuid,
        profile: TierProfile,
        currency: String,
        stripe_product_id: String,
        monthly: TierPrice,
        yearly: TierPrice,
        created_at: DateTime<Utc>,
    },
    /// Carries the whole profile after the change.
    TierUpdated {
        profile: TierProfile,
        updated_at: DateTime<Utc>,
    },
    TierRepriced {
        monthly: TierPrice,
        yearly: TierPrice,
        repriced_at: DateTime<Utc>,
    },
    TierArchived {
        archived_at: DateTime<Utc>,
    },
    TierUnarchived {
        unarchived_at: DateTime<Utc>,
    },
}

impl TierEvent {
    pub const CREATED: &'static str = "TierCreated";
    pub const UPDATED: &'static str = "TierUpdated";
    pub const REPRICED: &'static str = "TierRepriced";
    pub const ARCHIVED: &'static str = "TierArchived";
    pub const UNARCHIVED: &'static str = "TierUnarchived";
}

impl DomainEvent for TierEvent {
    fn event_type(&self) -> String {
        match self {
            Self::TierCreated { .. } => Self::CREATED,
            Self::TierUpdated { .. } => Self::UPDATED,
            Self::TierRepriced { .. } => Self::REPRICED,
            Self::TierArchived { .. } => Self::ARCHIVED,
            Self::TierUnarchived { .. } => Self::UNARCHIVED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierError {
    #[error("the tier already exists")]
    AlreadyExists,
    #[error("the tier does not exist")]
    NotFound,
    #[error("the tier is archived")]
    Archived,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Tier {
    id: Option<Uuid>,
    profile: Option<TierProfile>,
    monthly: Option<TierPrice>,
    yearly: Option<TierPrice>,
    archived: bool,
}

impl Aggregate for Tier {
    const TYPE: &'static str = "Tier";
    type Command = TierCommand;
    type Event = TierEvent;
    type Error = TierError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let TierCommand::CreateTier {
            tier_id,
            profile,
            currency,
            stripe_product_id,
            monthly,
            yearly,
            at,
        } = command
        {
            if self.id.is_some() {
                return Err(TierError::AlreadyExists);
            }
            let event = TierEvent::TierCreated {
                tier_id,
                profile,
                currency,
                stripe_product_id,
                monthly,
                yearly,
                created_at: at,
            };
            sink.write(event, self).await;
            return Ok(());
        }
        if self.id.is_none() {
            return Err(TierError::NotFound);
        }
        let event = match command {
            TierCommand::CreateTier { .. } => unreachable!("handled above"),
            TierCommand::UpdateTier { profile, at } => (self.profile.as_ref() != Some(&profile))
                .then_some(TierEvent::TierUpdated {
                    profile,
                    updated_at: at,
                }),
            TierCommand::RepriceTier {
                monthly,
                yearly,
                at,
            } => {
                if self.archived {
                    return Err(TierError::Archived);
                }
                (self.monthly.as_ref() != Some(&monthly) || self.yearly.as_ref() != Some(&yearly))
                    .then_some(TierEvent::TierRepriced {
                        monthly,
                        yearly,
                        repriced_at: at,
                    })
            }
            TierCommand::ArchiveTier { at } => {
                (!self.archived).then_some(TierEvent::TierArchived { archived_at: at })
            }
            TierCommand::UnarchiveTier { at } => self
                .archived
                .then_some(TierEvent::TierUnarchived { unarchived_at: at }),
        };
        if let Some(event) = event {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TierEvent::TierCreated {
                tier_id,
                profile,
                monthly,
                yearly,
                ..
            } => {
                self.id = Some(tier_id);
                self.profile = Some(profile);
                self.monthly = Some(monthly);
                self.yearly = Some(yearly);
            }
            TierEvent::TierUpdated { profile, .. } => self.profile = Some(profile),
            TierEvent::TierRepriced {
                monthly, yearly, ..
            } => {
                self.monthly = Some(monthly);
                self.yearly = Some(yearly);
            }
            TierEvent::TierArchived { .. } => self.archived = true,
            TierEvent::TierUnarchived { .. } => self.archived = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    fn profile(name: &str) -> TierProfile {
        TierProfile {
            name: name.into(),
            description: None,
            benefits: vec!["Every article".into()],
            visibility: TierVisibility::Public,
        }
    }

    fn price(amount: i64, id: &str) -> TierPrice {
        TierPrice {
            amount,
            stripe_price_id: id.into(),
        }
    }

    fn created() -> TierEvent {
        TierEvent::TierCreated {
            tier_id: Uuid::from_u128(1),
            profile: profile("Gold"),
            currency: "usd".into(),
            stripe_product_id: "prod_1".into(),
            monthly: price(500, "price_m"),
            yearly: price(5000, "price_y"),
            created_at: at(),
        }
    }

    #[test]
    fn a_tier_is_created_once() {
        TestFramework::<Tier>::with(())
            .given(vec![created()])
            .when(TierCommand::CreateTier {
                tier_id: Uuid::from_u128(1),
                profile: profile("Gold"),
                currency: "usd".into(),
                stripe_product_id: "prod_1".into(),
                monthly: price(500, "price_m"),
                yearly: price(5000, "price_y"),
                at: at(),
            })
            .then_expect_error(TierError::AlreadyExists);
    }

    #[test]
    fn an_unchanged_profile_or_price_appends_nothing() {
        TestFramework::<Tier>::with(())
            .given(vec![created()])
            .when(TierCommand::UpdateTier {
                profile: profile("Gold"),
                at: at(),
            })
            .then_expect_events(vec![]);
        TestFramework::<Tier>::with(())
            .given(vec![created()])
            .when(TierCommand::RepriceTier {
                monthly: price(500, "price_m"),
                yearly: price(5000, "price_y"),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_archived_tier_is_not_repriced_and_archiving_twice_appends_once() {
        TestFramework::<Tier>::with(())
            .given(vec![
                created(),
                TierEvent::TierArchived { archived_at: at() },
            ])
            .when(TierCommand::RepriceTier {
                monthly: price(600, "price_m2"),
                yearly: price(6000, "price_y2"),
                at: at(),
            })
            .then_expect_error(TierError::Archived);
        TestFramework::<Tier>::with(())
            .given(vec![
                created(),
                TierEvent::TierArchived { archived_at: at() },
            ])
            .when(TierCommand::ArchiveTier { at: at() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn commands_on_an_unknown_tier_are_refused() {
        TestFramework::<Tier>::with(())
            .given_no_previous_events()
            .when(TierCommand::ArchiveTier { at: at() })
            .then_expect_error(TierError::NotFound);
    }
}
