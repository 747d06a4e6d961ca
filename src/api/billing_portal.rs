//! `/v1/me/billing-portal`: a Stripe Billing Portal session for the signed-in member, where
//! Stripe's own pages let them update the payment method, cancel at period end or resume. What
//! they change there reaches us as webhooks, like any other change at Stripe.

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::problem::{db_error, FieldError, Problem};
use super::purchases::{check_return_urls, stripe_api, stripe_problem};
use super::sessions::MemberAuth;
use super::state::{ApiTags, State};
use crate::api::problem::api_response;

pub struct BillingPortalApi {
    pub state: State,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct BillingPortalRequest {
    /// Where the portal's "return" link leads; must be on an allowed origin
    /// (`CHECKOUT_ALLOWED_ORIGINS`, and the portal's own).
    #[oai(validator(max_length = 2048))]
    pub return_url: String,
}

/// A Billing Portal session: send the member to `url` (it works once, for a few minutes).
#[derive(Debug, Clone, Object)]
pub struct BillingPortalSession {
    pub url: String,
}

api_response! {
    pub enum BillingPortalResponse {
        /// The session was created.
        #[oai(status = 200)]
        Ok(Json<BillingPortalSession>),
    }
    problems {
        /// The request is malformed.
        400 => BadRequest,
        /// No valid member session.
        401 => Unauthorized,
        /// The member has no Stripe customer (never paid), so there is nothing to manage.
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// `return_url` is not an absolute URL on an allowed origin.
        422 => Invalid,
        /// Stripe refused, or could not be reached; nothing was created.
        502 => BadGateway,
    }
    unavailable: "Stripe is not configured, or the database is unavailable; retry later."
}

#[OpenApi(prefix_path = "/v1/me/billing-portal", tag = "ApiTags::Me")]
impl BillingPortalApi {
    /// Open the billing portal
    ///
    /// Creates a Stripe Billing Portal session for the member's Stripe customer (the one of
    /// their newest subscription): update the payment method, cancel at period end or resume.
    /// Send the member to the returned `url`; Stripe brings them back to `return_url`.
    #[oai(path = "/", method = "post", operation_id = "openBillingPortal")]
    async fn open(
        &self,
        session: MemberAuth,
        body: Json<BillingPortalRequest>,
    ) -> BillingPortalResponse {
        match open(&self.state, session.0.member_id, &body.0.return_url).await {
            Ok(url) => BillingPortalResponse::Ok(Json(BillingPortalSession { url })),
            Err(problem) => problem.into(),
        }
    }
}

/// The URL of a new Billing Portal session for `member_id` returning to `return_url`.
pub(crate) async fn open(
    state: &State,
    member_id: Uuid,
    return_url: &str,
) -> Result<String, Problem> {
    let mut errors: Vec<FieldError> = Vec::new();
    check_return_urls(state, [("return_url", return_url)], &mut errors);
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let stripe = stripe_api(state)?;
    // The customer of the newest subscription, else the one linked last.
    let customer: Option<String> = sqlx::query_scalar(
        "SELECT customer_id FROM (
             SELECT customer_id, 0 AS rank, created_at AS at FROM subscriptions WHERE member_id = $1
             UNION ALL
             SELECT customer_id, 1, linked_at FROM stripe_customers WHERE member_id = $1
         ) c ORDER BY rank, at DESC LIMIT 1",
    )
    .bind(member_id)
    .fetch_optional(&state.pool)
    .await
    .map_err(db_error)?;
    let customer = customer.ok_or_else(|| {
        Problem::conflict(
            "no-stripe-customer",
            "you have no payment details or subscription at Stripe yet",
        )
    })?;
    stripe
        .create_billing_portal_session(
            &customer,
            return_url,
            &format!("billing-portal-{}", Uuid::now_v7()),
        )
        .await
        .map_err(|e| stripe_problem(e, "nothing was created; retry"))
}

impl poem_openapi::types::Example for BillingPortalRequest {
    fn example() -> Self {
        Self {
            return_url: "https://example.com/account".to_owned(),
        }
    }
}
