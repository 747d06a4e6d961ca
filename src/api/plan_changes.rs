//! `PUT /v1/me/plan`: a member moves their subscription to another tier or cadence (issue #16).
//! The subscription's tier item gets the new price at Stripe, prorated; the change itself
//! arrives through the webhooks as any change made at Stripe does (`SubscriptionPlanChanged`,
//! the MRR delta), so nothing is recorded here.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use stripe_client_core::StripeMethod;
use uuid::Uuid;

use super::checkout::Cadence;
use super::problem::{api_response, db_error, FieldError, Problem};
use super::purchases::{stripe_api, stripe_problem};
use super::sessions::MemberAuth;
use super::state::{ApiTags, RequestId, State};

pub struct PlanChangesApi {
    pub state: State,
}

#[derive(Debug, Clone, Object)]
pub struct ChangePlanRequest {
    /// The tier to move to (`GET /v1/tiers`), with `cadence` (`month` or `year`).
    pub tier_id: Uuid,
    pub cadence: Cadence,
}

/// The change asked of Stripe; the dashboard shows it once Stripe's webhook has arrived.
#[derive(Debug, Clone, Object)]
pub struct PlanChangeView {
    pub subscription_id: String,
    pub item_id: String,
    pub from_price_id: String,
    pub to_price_id: String,
    pub tier_id: Uuid,
    /// `month` or `year`.
    pub cadence: String,
    /// Whether Stripe was asked to change anything (`false`: already on this plan).
    pub changed: bool,
}

api_response! {
    pub enum ChangePlanResponse {
        /// Stripe changed the item (prorated); the subscription follows through its webhooks.
        #[oai(status = 202)]
        Accepted(Json<PlanChangeView>),
        /// Already on this tier and cadence: nothing was asked of Stripe.
        #[oai(status = 200)]
        Unchanged(Json<PlanChangeView>),
    }
    problems {
        /// The request is malformed.
        400 => BadRequest,
        /// No valid member session.
        401 => Unauthorized,
        /// No active subscription on a tier to change.
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// The tier is unknown or archived.
        422 => Invalid,
        /// Stripe refused or could not be reached; the plan is unchanged. Retry.
        502 => BadGateway,
    }
    unavailable: "Stripe is not configured, or the database is unavailable; retry later."
}

#[OpenApi(prefix_path = "/v1/me", tag = "ApiTags::Me")]
impl PlanChangesApi {
    /// Change my plan
    ///
    /// Moves the tier item of the member's active subscription to the price of another tier or
    /// cadence, with Stripe's proration (the difference is credited or charged on the next
    /// invoice). The subscription, its MRR and the dashboard follow once Stripe's
    /// `customer.subscription.updated` webhook has arrived.
    #[oai(path = "/plan", method = "put", operation_id = "changeMyPlan")]
    async fn change(
        &self,
        session: MemberAuth,
        request_id: Data<&RequestId>,
        body: Json<ChangePlanRequest>,
    ) -> ChangePlanResponse {
        match self
            .change_plan(session.0.member_id, &request_id, body.0)
            .await
        {
            Ok(view) if view.changed => ChangePlanResponse::Accepted(Json(view)),
            Ok(view) => ChangePlanResponse::Unchanged(Json(view)),
            Err(problem) => problem.into(),
        }
    }
}

impl PlanChangesApi {
    async fn change_plan(
        &self,
        member_id: Uuid,
        request_id: &RequestId,
        body: ChangePlanRequest,
    ) -> Result<PlanChangeView, Problem> {
        let state = &self.state;
        let target: Option<(String, String, bool)> = sqlx::query_as(
            "SELECT monthly_price_id, yearly_price_id, archived FROM tiers WHERE id = $1",
        )
        .bind(body.tier_id)
        .fetch_optional(&state.pool)
        .await
        .map_err(db_error)?;
        let to_price = match target {
            None => return Err(invalid("tier_id", "no tier has this id")),
            Some((_, _, true)) => return Err(invalid("tier_id", "is archived; it is not sold")),
            Some((monthly, yearly, false)) => match body.cadence {
                Cadence::Month => monthly,
                Cadence::Year => yearly,
            },
        };
        // The item of the member's paying subscription whose price is a tier's.
        let item: Option<(String, String, String)> = sqlx::query_as(
            "SELECT s.id, i.id, i.price_id
             FROM subscriptions s
             JOIN subscription_items i ON i.subscription_id = s.id AND i.status = 'active'
             JOIN tier_prices tp ON tp.price_id = i.price_id
             WHERE s.member_id = $1 AND s.status IN ('active', 'trialing', 'past_due')
             ORDER BY s.created_at DESC, i.added_at LIMIT 1",
        )
        .bind(member_id)
        .fetch_optional(&state.pool)
        .await
        .map_err(db_error)?;
        let Some((subscription_id, item_id, from_price)) = item else {
            return Err(Problem::conflict(
                "no-tier-subscription",
                "you have no active subscription to a tier; buy one with a checkout by tier",
            ));
        };
        let mut view = PlanChangeView {
            subscription_id,
            item_id,
            from_price_id: from_price,
            to_price_id: to_price,
            tier_id: body.tier_id,
            cadence: body.cadence.as_str().to_owned(),
            changed: false,
        };
        if view.from_price_id == view.to_price_id {
            return Ok(view);
        }
        let api = stripe_api(state)?;
        let form = [
            ("price", view.to_price_id.clone()),
            ("proration_behavior", "create_prorations".to_owned()),
        ];
        api.raw_json(
            "update_subscription_item",
            // From and to: asking again for the same move is the same call.
            &format!(
                "plan-{}-{}-{}",
                view.item_id, view.from_price_id, view.to_price_id
            ),
            StripeMethod::Post,
            &format!("/subscription_items/{}", view.item_id),
            None,
            Some(&form),
        )
        .await
        .map_err(|e| stripe_problem(e, "the plan is unchanged; retry"))?;
        tracing::info!(
            member_id = %member_id,
            subscription_id = %view.subscription_id,
            to_price = %view.to_price_id,
            request_id = %request_id.0,
            "plan change asked of Stripe"
        );
        view.changed = true;
        Ok(view)
    }
}

fn invalid(field: &str, reason: &str) -> Problem {
    Problem::validation(vec![FieldError::new(field, reason)])
}
