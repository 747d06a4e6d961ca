//! `/v1/me/sites`: the sites of a member's subscription.

use aggregates::{SiteDomain, StripeObservation, SubscriptionCommand};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::members::db_error;
use super::problem::{FieldError, Problem};
use super::sessions::MemberAuth;
use super::{ApiTags, RequestId, State};
use crate::store::{Actor, EventMetadata};
use crate::stripe::client::CallError;

pub struct SitesApi {
    pub state: State,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum RemoveSiteResponse {
    /// Removed: its subscription item is deleted at Stripe and its license deactivated.
    #[oai(status = 204)]
    Removed,
    /// The request is malformed.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No valid member session.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// The member has no active site with this domain.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The domain is not a domain name.
    #[oai(status = 422, content_type = "application/problem+json")]
    Invalid(Json<Problem>),
    /// An unexpected error; it is logged under the request id.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// Stripe could not be reached, or kept failing; nothing changed. Retry.
    #[oai(status = 502, content_type = "application/problem+json")]
    BadGateway(Json<Problem>),
    /// Stripe is not configured, or the database is unavailable; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

super::problem_responses!(RemoveSiteResponse {
    400 => BadRequest, 401 => Unauthorized, 404 => NotFound, 422 => Invalid, 502 => BadGateway
});

fn bad_request<T: From<Problem>>(err: poem::Error) -> T {
    T::from(Problem::from_poem(&err))
}

pub(crate) fn stripe_problem(err: CallError) -> Problem {
    match err {
        CallError::Refused { message, .. } => {
            tracing::error!(error = %message, "Stripe refused a call");
            Problem::new(
                poem::http::StatusCode::BAD_GATEWAY,
                "stripe-refused",
                format!("Stripe refused the change: {message}"),
            )
        }
        CallError::Unavailable(message) => {
            tracing::error!(error = %message, "Stripe unavailable");
            Problem::new(
                poem::http::StatusCode::BAD_GATEWAY,
                "stripe-unavailable",
                "Stripe could not be reached; nothing changed, retry",
            )
        }
    }
}

#[OpenApi(prefix_path = "/v1/me/sites", tag = "ApiTags::Me")]
impl SitesApi {
    /// Remove a site
    ///
    /// Deletes the site's subscription item at Stripe (with Stripe's proration), records the
    /// removal right away and deactivates the site's license.
    #[oai(path = "/:domain", method = "delete", operation_id = "removeMySite")]
    async fn remove(
        &self,
        session: MemberAuth,
        request_id: Data<&RequestId>,
        #[oai(validator(max_length = 253))] domain: Path<String>,
    ) -> RemoveSiteResponse {
        match self
            .remove_site(session.0.member_id, &request_id, &domain.0)
            .await
        {
            Ok(()) => RemoveSiteResponse::Removed,
            Err(problem) => problem.into(),
        }
    }
}

impl SitesApi {
    async fn remove_site(
        &self,
        member_id: uuid::Uuid,
        request_id: &RequestId,
        domain: &str,
    ) -> Result<(), Problem> {
        let state = &self.state;
        let domain = SiteDomain::parse(domain)
            .map_err(|e| Problem::validation(vec![FieldError::new("domain", e.reason())]))?;
        let found: Option<(String, String)> = sqlx::query_as(
            "SELECT i.subscription_id, i.id FROM subscription_items i JOIN subscriptions s ON s.id = i.subscription_id
             WHERE s.member_id = $1 AND i.site = $2 AND i.status = 'active'
             ORDER BY i.added_at DESC LIMIT 1",
        )
        .bind(member_id)
        .bind(domain.as_str())
        .fetch_optional(&state.pool)
        .await
        .map_err(db_error)?;
        let Some((subscription_id, item_id)) = found else {
            return Err(Problem::not_found(
                "you have no active site with this domain",
            ));
        };
        let Some(stripe) = &state.stripe_api else {
            return Err(Problem::unavailable(
                "Stripe is not configured (STRIPE_SECRET_KEY)",
            ));
        };
        stripe
            .delete_subscription_item(&item_id)
            .await
            .map_err(stripe_problem)?;
        let observed = StripeObservation {
            event_id: format!("api_delete_{item_id}"),
            event_type: "memberledger.subscription_item.deleted".to_owned(),
            created: chrono::Utc::now().timestamp(),
        };
        let position = state
            .subscriptions
            .execute(
                &subscription_id,
                SubscriptionCommand::RecordItemRemoval { item_id, observed },
                EventMetadata::for_request(&request_id.0, Actor::Member(member_id)),
            )
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "recording a removed site");
                Problem::unavailable("the site was removed at Stripe; recording it failed and the webhook will; retry to check")
            })?;
        if let Some(position) = position {
            let models = &["member_subscriptions", "license_policy"];
            if let Err(err) = state
                .projections
                .wait_for(models, position, state.read_your_writes_timeout)
                .await
            {
                tracing::warn!(error = %err, "could not wait for the read models");
            }
        }
        Ok(())
    }
}
