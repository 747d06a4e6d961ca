//! What the two ways of adding to a subscription share (`POST /v1/me/sites` and
//! `POST /v1/me/license-purchases`): the plan they are priced like, proration, return URLs,
//! the Checkout Session metadata the webhooks act on, and Stripe errors as problems.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::problem::db_error;
use super::problem::{FieldError, Problem};
use super::State;
use crate::stripe::client::{CallError, StripeApi};
use crate::stripe::purchase_metadata::{item_price_metadata, Added, Addition};

/// The member's paying subscription and the price of one of its items, which what is added is
/// priced like.
#[derive(sqlx::FromRow)]
pub(crate) struct Plan {
    pub subscription_id: String,
    pub customer_id: String,
    pub price_id: String,
    pub product_id: Option<String>,
    pub unit_amount: i64,
    pub currency: String,
    pub interval: String,
    pub interval_count: i32,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
}

/// Which item of the subscription prices the addition.
#[derive(Clone, Copy)]
pub(crate) enum PricedLike {
    /// A site item; a subscription without one has no plan for sites.
    Site,
    /// A quantity item if there is one, else any item.
    Seat,
}

impl Plan {
    /// The plan of the member's active (or trialing, or past due) subscription.
    pub async fn of_member(
        state: &State,
        member_id: Uuid,
        like: PricedLike,
    ) -> Result<Option<Self>, Problem> {
        let filter = match like {
            PricedLike::Site => "AND i.site IS NOT NULL",
            PricedLike::Seat => "",
        };
        sqlx::query_as(&format!(
            "SELECT s.id AS subscription_id, s.customer_id, i.price_id, i.product_id, i.unit_amount, i.currency,
                    i.interval, i.interval_count, s.current_period_start, s.current_period_end
             FROM subscriptions s JOIN subscription_items i ON i.subscription_id = s.id
             WHERE s.member_id = $1 AND s.status IN ('active', 'trialing', 'past_due') {filter}
             ORDER BY i.status = 'active' DESC, i.purchase_type = 'quantity' DESC, i.added_at LIMIT 1"
        ))
        .bind(member_id)
        .fetch_optional(&state.pool)
        .await
        .map_err(db_error)
    }

    /// One unit for what is left of the current period.
    pub fn prorated_unit_amount(&self, now: DateTime<Utc>) -> i64 {
        prorate(
            self.unit_amount,
            self.current_period_start,
            self.current_period_end,
            now,
        )
    }

    /// The Checkout Session metadata the webhooks act on (see `stripe::purchase_metadata`).
    pub fn metadata(
        &self,
        member_id: Uuid,
        purchase_id: Uuid,
        added: Added<'_>,
    ) -> Result<HashMap<String, String>, Problem> {
        let addition = Addition {
            subscription_id: &self.subscription_id,
            purchase_id,
            member_id,
            price_id: &self.price_id,
            added,
        };
        Ok(addition.metadata(item_price_metadata(
            self.product()?,
            self.unit_amount,
            &self.currency,
            &self.interval,
            self.interval_count,
        )))
    }

    /// The product of the plan's price; Stripe needs it for the ad hoc price of a new item.
    pub fn product(&self) -> Result<&str, Problem> {
        self.product_id.as_deref().ok_or_else(|| {
            Problem::unavailable("the subscription's price has no product recorded yet; retry")
        })
    }
}

/// `unit_amount` for what is left of the period (all of it when the period is unknown).
pub(crate) fn prorate(
    unit_amount: i64,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> i64 {
    let (Some(start), Some(end)) = (start, end) else {
        return unit_amount;
    };
    let total = (end - start).num_seconds();
    let left = (end - now).num_seconds().clamp(0, total.max(0));
    if total <= 0 {
        return unit_amount;
    }
    let amount =
        (i128::from(unit_amount) * i128::from(left) + i128::from(total) / 2) / i128::from(total);
    i64::try_from(amount).unwrap_or(unit_amount)
}

/// Checks that Checkout's return URLs are on an allowed origin; adds an error per bad one.
pub(crate) fn check_return_urls<const N: usize>(
    state: &State,
    urls: [(&str, &str); N],
    errors: &mut Vec<FieldError>,
) {
    for (field, url) in urls {
        let origin = url::Url::parse(url)
            .ok()
            .map(|u| u.origin().ascii_serialization());
        match origin {
            Some(origin) if state.checkout_allowed_origins.contains(&origin) => {}
            Some(_) => errors.push(FieldError::new(
                field,
                "is not on an allowed origin (CHECKOUT_ALLOWED_ORIGINS)",
            )),
            None => errors.push(FieldError::new(field, "is not an absolute URL")),
        }
    }
}

/// The Stripe client, or 503 when Stripe is not configured.
pub(crate) fn stripe_api(state: &State) -> Result<&StripeApi, Problem> {
    state
        .stripe_api
        .as_ref()
        .ok_or_else(|| Problem::unavailable("Stripe is not configured (STRIPE_SECRET_KEY)"))
}

/// A failed Stripe call as a 502: Stripe refused, or could not be reached. `outcome` tells the
/// client what that left behind (e.g. "nothing changed, retry").
pub(crate) fn stripe_problem(err: CallError, outcome: &str) -> Problem {
    let (kind, what) = match err {
        CallError::Refused { message, .. } => {
            tracing::error!(error = %message, "Stripe refused a call");
            (
                "stripe-refused",
                format!("Stripe refused the change: {message}"),
            )
        }
        CallError::Unavailable(message) => {
            tracing::error!(error = %message, "Stripe unavailable");
            (
                "stripe-unavailable",
                "Stripe could not be reached".to_owned(),
            )
        }
    };
    Problem::new(
        poem::http::StatusCode::BAD_GATEWAY,
        kind,
        format!("{what}; {outcome}"),
    )
}

/// When an addition is priced: the start of the current hour. A repeated request within the
/// hour gets the same amount, so the same Stripe idempotency key and session; the member pays
/// for at most an hour more than is left.
pub(crate) fn pricing_time() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(3600), 0).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proration_charges_what_is_left_of_the_period() {
        let t = |s| DateTime::from_timestamp(s, 0).expect("valid");
        assert_eq!(prorate(3000, Some(t(0)), Some(t(300)), t(100)), 2000);
        assert_eq!(
            prorate(3000, Some(t(0)), Some(t(300)), t(400)),
            0,
            "the period is over"
        );
        assert_eq!(
            prorate(3000, Some(t(0)), Some(t(300)), t(-50)),
            3000,
            "not started: all of it"
        );
        assert_eq!(prorate(3000, None, None, t(0)), 3000);
        assert_eq!(prorate(1000, Some(t(0)), Some(t(3)), t(1)), 667, "rounded");
    }
}
