//! The Offer aggregate: a discount on a tier and cadence, as Ghost's offers are. A percentage
//! or a fixed amount off, once, for some months, or forever, with a code and an optional
//! redemption limit; Stripe applies it as a coupon at checkout.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What an offer takes off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OfferDiscount {
    /// Percent off, 1 to 100.
    Percent(u8),
    /// Minor units off each period, in the tier's currency.
    Amount(i64),
}

/// How long the discount lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OfferDuration {
    /// The first period only.
    Once,
    /// The first `n` months.
    Repeating(u32),
    Forever,
}

/// An offer as created: everything but its archived flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OfferTerms {
    pub name: String,
    /// What buyers type or links carry, unique among offers.
    pub code: String,
    pub tier_id: Uuid,
    /// `month` or `year`.
    pub cadence: String,
    pub discount: OfferDiscount,
    pub duration: OfferDuration,
    /// Redemptions Stripe allows in all; `None`: no limit.
    pub redemption_limit: Option<u32>,
    pub stripe_coupon_id: String,
    /// The Stripe promotion code with `code` for the coupon, which a buyer types at
    /// Checkout; `None` for offers created before promotion codes (event version 1.0).
    pub stripe_promotion_code_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OfferCommand {
    CreateOffer {
        offer_id: Uuid,
        terms: OfferTerms,
        at: DateTime<Utc>,
    },
    /// An archived offer is no longer applied at checkout.
    ArchiveOffer { at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum OfferEvent {
    OfferCreated {
        offer_id: Uuid,
        terms: OfferTerms,
        created_at: DateTime<Utc>,
    },
    OfferArchived {
        archived_at: DateTime<Utc>,
    },
}

impl OfferEvent {
    pub const CREATED: &'static str = "OfferCreated";
    pub const ARCHIVED: &'static str = "OfferArchived";
    /// 1.1 added `terms.stripe_promotion_code_id` (upcast from 1.0 as `null`).
    pub const CREATED_VERSION: &'static str = "1.1";
}

impl DomainEvent for OfferEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OfferCreated { .. } => Self::CREATED,
            Self::OfferArchived { .. } => Self::ARCHIVED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::OfferCreated { .. } => Self::CREATED_VERSION,
            Self::OfferArchived { .. } => "1.0",
        }
        .to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("the offer already exists")]
    AlreadyExists,
    #[error("the offer does not exist")]
    NotFound,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Offer {
    id: Option<Uuid>,
    archived: bool,
}

impl Aggregate for Offer {
    const TYPE: &'static str = "Offer";
    type Command = OfferCommand;
    type Event = OfferEvent;
    type Error = OfferError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            OfferCommand::CreateOffer {
                offer_id,
                terms,
                at,
            } => {
                if self.id.is_some() {
                    return Err(OfferError::AlreadyExists);
                }
                let event = OfferEvent::OfferCreated {
                    offer_id,
                    terms,
                    created_at: at,
                };
                sink.write(event, self).await;
            }
            OfferCommand::ArchiveOffer { at } => {
                if self.id.is_none() {
                    return Err(OfferError::NotFound);
                }
                if !self.archived {
                    sink.write(OfferEvent::OfferArchived { archived_at: at }, self)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OfferEvent::OfferCreated { offer_id, .. } => self.id = Some(offer_id),
            OfferEvent::OfferArchived { .. } => self.archived = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn terms() -> OfferTerms {
        OfferTerms {
            name: "Launch".into(),
            code: "launch".into(),
            tier_id: Uuid::from_u128(1),
            cadence: "month".into(),
            discount: OfferDiscount::Percent(20),
            duration: OfferDuration::Repeating(3),
            redemption_limit: Some(100),
            stripe_coupon_id: "co_1".into(),
            stripe_promotion_code_id: Some("promo_1".into()),
        }
    }

    fn created() -> OfferEvent {
        OfferEvent::OfferCreated {
            offer_id: Uuid::from_u128(2),
            terms: terms(),
            created_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn an_offer_is_created_with_its_promotion_code_at_version_1_1() {
        TestFramework::<Offer>::with(())
            .given_no_previous_events()
            .when(OfferCommand::CreateOffer {
                offer_id: Uuid::from_u128(2),
                terms: terms(),
                at: DateTime::UNIX_EPOCH,
            })
            .then_expect_events(vec![created()]);
        assert_eq!(created().event_version(), "1.1");
        let OfferEvent::OfferCreated { terms, .. } = created() else {
            unreachable!("created() is an OfferCreated")
        };
        assert_eq!(terms.stripe_promotion_code_id.as_deref(), Some("promo_1"));
        let archived = OfferEvent::OfferArchived {
            archived_at: DateTime::UNIX_EPOCH,
        };
        assert_eq!(archived.event_version(), "1.0");
    }

    #[test]
    fn an_offer_is_created_once_and_archived_once() {
        TestFramework::<Offer>::with(())
            .given(vec![created()])
            .when(OfferCommand::CreateOffer {
                offer_id: Uuid::from_u128(2),
                terms: terms(),
                at: DateTime::UNIX_EPOCH,
            })
            .then_expect_error(OfferError::AlreadyExists);
        TestFramework::<Offer>::with(())
            .given(vec![
                created(),
                OfferEvent::OfferArchived {
                    archived_at: DateTime::UNIX_EPOCH,
                },
            ])
            .when(OfferCommand::ArchiveOffer {
                at: DateTime::UNIX_EPOCH,
            })
            .then_expect_events(vec![]);
        TestFramework::<Offer>::with(())
            .given_no_previous_events()
            .when(OfferCommand::ArchiveOffer {
                at: DateTime::UNIX_EPOCH,
            })
            .then_expect_error(OfferError::NotFound);
    }
}
