//! `offers`: each offer with its terms and whether it is archived, and `offer_redemptions`: the
//! subscriptions started with each (`OfferRedeemed`, a Subscription event). Inline: an offer is
//! answered from it, checkout applies it and counts its redemptions against its limit, and it
//! is what keeps a code unique (a code taken refuses the events).

use aggregates::{OfferDiscount, OfferDuration, OfferEvent, SubscriptionEvent};
use async_trait::async_trait;
use sqlx::PgConnection;

use crate::{member_id, Handles, Mode, Projection, ProjectionError, StoredEvent};

pub struct Offers;

/// The reason a new offer is refused: its code belongs to another offer.
pub const CODE_TAKEN: &str = "code_taken";

#[async_trait]
impl Projection for Offers {
    fn name(&self) -> &'static str {
        "offers"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["offers", "offer_redemptions"]
    }

    fn handles(&self) -> &'static [Handles] {
        const HANDLES: &[Handles] = &[
            Handles::all("Offer"),
            Handles::only("Subscription", &[SubscriptionEvent::OFFER_REDEEMED]),
        ];
        HANDLES
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    /// Offers are created and archived rarely, by an admin, and redeemed once per
    /// subscription: a statement per event.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            if event.aggregate_type == "Subscription" {
                if let SubscriptionEvent::OfferRedeemed {
                    offer_id,
                    member_id,
                    redeemed_at,
                    ..
                } = event.decode::<SubscriptionEvent>()?
                {
                    sqlx::query(
                        "INSERT INTO offer_redemptions (offer_id, subscription_id, member_id,
                             redeemed_at)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(offer_id)
                    .bind(&event.aggregate_id)
                    .bind(member_id)
                    .bind(redeemed_at)
                    .execute(&mut *conn)
                    .await?;
                }
                continue;
            }
            let id = member_id(event)?;
            match event.decode::<OfferEvent>()? {
                OfferEvent::OfferCreated {
                    terms, created_at, ..
                } => {
                    let (discount_type, discount_value) = match terms.discount {
                        OfferDiscount::Percent(p) => ("percent", i64::from(p)),
                        OfferDiscount::Amount(a) => ("amount", a),
                    };
                    let (duration, months) = match terms.duration {
                        OfferDuration::Once => ("once", None),
                        OfferDuration::Repeating(n) => {
                            ("repeating", Some(i32::try_from(n).unwrap_or(i32::MAX)))
                        }
                        OfferDuration::Forever => ("forever", None),
                    };
                    let inserted = sqlx::query(
                        "INSERT INTO offers (id, name, code, tier_id, cadence, discount_type,
                             discount_value, duration, duration_months, redemption_limit,
                             stripe_coupon_id, stripe_promotion_code_id, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(id)
                    .bind(&terms.name)
                    .bind(&terms.code)
                    .bind(terms.tier_id)
                    .bind(&terms.cadence)
                    .bind(discount_type)
                    .bind(discount_value)
                    .bind(duration)
                    .bind(months)
                    .bind(
                        terms
                            .redemption_limit
                            .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                    )
                    .bind(&terms.stripe_coupon_id)
                    .bind(&terms.stripe_promotion_code_id)
                    .bind(created_at)
                    .execute(&mut *conn)
                    .await?;
                    if inserted.rows_affected() == 0 {
                        // Replayed (the row is there) or another offer has the code.
                        let ours: bool = sqlx::query_scalar(
                            "SELECT EXISTS (SELECT 1 FROM offers WHERE id = $1)",
                        )
                        .bind(id)
                        .fetch_one(&mut *conn)
                        .await?;
                        if !ours {
                            return Err(ProjectionError::Refused {
                                projection: "offers",
                                reason: CODE_TAKEN,
                            });
                        }
                    }
                }
                OfferEvent::OfferArchived { archived_at } => {
                    sqlx::query("UPDATE offers SET archived = true, updated_at = $2 WHERE id = $1")
                        .bind(id)
                        .bind(archived_at)
                        .execute(&mut *conn)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
