//! `/v1/me/sites`: the sites of a member's subscription.

use aggregates::{SiteDomain, StripeObservation, SubscriptionCommand};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::members::db_error;
use super::problem::bad_request;
use super::problem::{FieldError, Problem};
use super::sessions::MemberAuth;
use super::{ApiTags, RequestId, State};
use crate::store::{Actor, EventMetadata};
use crate::stripe::client::CallError;

pub struct SitesApi {
    pub state: State,
}

#[derive(Debug, Clone, poem_openapi::Object)]
#[oai(example)]
pub struct AddSitesRequest {
    /// Domains to add, each licensed like the subscription's other sites.
    #[oai(validator(min_items = 1, max_items = 20))]
    pub sites: Vec<String>,
    /// Where Checkout sends the member after paying; must be on an allowed origin.
    #[oai(validator(max_length = 2048))]
    pub success_url: String,
    /// Where Checkout sends the member who gives up; must be on an allowed origin.
    #[oai(validator(max_length = 2048))]
    pub cancel_url: String,
}

/// A payment for added sites: send the member to `url`.
#[derive(Debug, Clone, poem_openapi::Object)]
pub struct SitesCheckoutView {
    /// Stripe's session id.
    pub id: String,
    pub url: Option<String>,
    /// The prorated total for the rest of the current period, minor units.
    pub amount: i64,
    pub currency: String,
    /// The sites, normalised; pending on the dashboard until paid.
    pub sites: Vec<String>,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum AddSitesResponse {
    /// A Checkout Session for the prorated amount; the sites are pending until it is paid.
    #[oai(status = 201)]
    Created(Json<SitesCheckoutView>),
    /// The request is malformed.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No valid member session.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// No active subscription with sites to add to, or a site is already on it.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The body is not `application/json`.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// A site or URL is invalid.
    #[oai(status = 422, content_type = "application/problem+json")]
    Invalid(Json<Problem>),
    /// An unexpected error; it is logged under the request id.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// Stripe could not be reached, or kept failing; nothing pending was recorded. Retry.
    #[oai(status = 502, content_type = "application/problem+json")]
    BadGateway(Json<Problem>),
    /// Stripe is not configured, or the database is unavailable; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

super::problem_responses!(AddSitesResponse {
    400 => BadRequest, 401 => Unauthorized, 409 => Conflict, 415 => UnsupportedMediaType, 422 => Invalid, 502 => BadGateway
});

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
    /// Add sites
    ///
    /// Creates a payment-mode Checkout Session for the sites' price prorated to the end of the
    /// current period. Once paid, the sites are added to the subscription at Stripe (no further
    /// proration) and each gets a license; until then they are pending on the dashboard, and an
    /// expired session clears them.
    #[oai(path = "/", method = "post", operation_id = "addMySites")]
    async fn add(
        &self,
        session: MemberAuth,
        request_id: Data<&RequestId>,
        body: Json<AddSitesRequest>,
    ) -> AddSitesResponse {
        match self
            .add_sites(session.0.member_id, &request_id, body.0)
            .await
        {
            Ok(view) => AddSitesResponse::Created(Json(view)),
            Err(problem) => problem.into(),
        }
    }

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

#[derive(sqlx::FromRow)]
struct SiteSubscription {
    subscription_id: String,
    customer_id: String,
    price_id: String,
    product_id: Option<String>,
    unit_amount: i64,
    currency: String,
    interval: String,
    interval_count: i32,
    current_period_start: Option<chrono::DateTime<chrono::Utc>>,
    current_period_end: Option<chrono::DateTime<chrono::Utc>>,
}

/// `unit_amount` for what is left of the period (all of it when the period is unknown).
fn prorate(
    unit_amount: i64,
    start: Option<chrono::DateTime<chrono::Utc>>,
    end: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
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

impl SitesApi {
    async fn add_sites(
        &self,
        member_id: uuid::Uuid,
        request_id: &RequestId,
        body: AddSitesRequest,
    ) -> Result<SitesCheckoutView, Problem> {
        let state = &self.state;
        let mut errors = Vec::new();
        let mut sites: Vec<SiteDomain> = Vec::new();
        for (i, raw) in body.sites.iter().enumerate() {
            match SiteDomain::parse(raw) {
                Ok(site) if !sites.contains(&site) => sites.push(site),
                Ok(_) => {}
                Err(e) => errors.push(FieldError::new(format!("sites[{i}]"), e.reason())),
            }
        }
        for (field, url) in [
            ("success_url", &body.success_url),
            ("cancel_url", &body.cancel_url),
        ] {
            let origin = url::Url::parse(url)
                .ok()
                .map(|u| u.origin().ascii_serialization());
            if !origin.is_some_and(|o| state.checkout_allowed_origins.contains(&o)) {
                errors.push(FieldError::new(
                    field,
                    "is not a URL on an allowed origin (CHECKOUT_ALLOWED_ORIGINS)",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        let Some(stripe) = &state.stripe_api else {
            return Err(Problem::unavailable(
                "Stripe is not configured (STRIPE_SECRET_KEY)",
            ));
        };
        let sub: Option<SiteSubscription> = sqlx::query_as(
            "SELECT s.id AS subscription_id, s.customer_id, i.price_id, i.product_id, i.unit_amount, i.currency,
                    i.interval, i.interval_count, s.current_period_start, s.current_period_end
             FROM subscriptions s JOIN subscription_items i ON i.subscription_id = s.id
             WHERE s.member_id = $1 AND s.status IN ('active', 'trialing', 'past_due') AND i.site IS NOT NULL
             ORDER BY i.status = 'active' DESC, i.added_at LIMIT 1",
        )
        .bind(member_id)
        .fetch_optional(&state.pool)
        .await
        .map_err(db_error)?;
        let Some(sub) = sub else {
            return Err(Problem::conflict(
                "no-site-subscription",
                "you have no active subscription with sites to add to",
            ));
        };
        let taken: Vec<String> = sqlx::query_scalar(
            "SELECT site FROM subscription_items WHERE subscription_id = $1 AND status = 'active' AND site = ANY($2)",
        )
        .bind(&sub.subscription_id)
        .bind(sites.iter().map(ToString::to_string).collect::<Vec<_>>())
        .fetch_all(&state.pool)
        .await
        .map_err(db_error)?;
        if !taken.is_empty() {
            let mut problem = Problem::conflict(
                "site-already-licensed",
                "a site is already on your subscription",
            );
            for site in taken {
                problem = problem.with_field("sites", format!("{site} is already licensed"));
            }
            return Err(problem);
        }
        let Some(product_id) = sub.product_id.clone() else {
            return Err(Problem::unavailable(
                "the subscription's price has no product recorded yet; retry",
            ));
        };
        let per_site = prorate(
            sub.unit_amount,
            sub.current_period_start,
            sub.current_period_end,
            chrono::Utc::now(),
        );
        let site_list: Vec<String> = sites.iter().map(ToString::to_string).collect();
        let metadata = std::collections::HashMap::from([
            ("add_to_existing".to_owned(), "true".to_owned()),
            (
                "existing_subscription_id".to_owned(),
                sub.subscription_id.clone(),
            ),
            ("purchase_type".to_owned(), "site".to_owned()),
            ("sites".to_owned(), site_list.join(",")),
            ("member_id".to_owned(), member_id.to_string()),
            ("price_id".to_owned(), sub.price_id.clone()),
            ("product_id".to_owned(), product_id),
            ("unit_amount".to_owned(), sub.unit_amount.to_string()),
            ("currency".to_owned(), sub.currency.clone()),
            ("interval".to_owned(), sub.interval.clone()),
            ("interval_count".to_owned(), sub.interval_count.to_string()),
        ]);
        let checkout = crate::stripe::client::SitesCheckout {
            customer: sub.customer_id.clone(),
            lines: site_list
                .iter()
                .map(|s| (format!("Site {s} (prorated)"), per_site))
                .collect(),
            currency: sub.currency.clone(),
            success_url: body.success_url,
            cancel_url: body.cancel_url,
            metadata,
        };
        // The same sites asked for again within Stripe's idempotency window get the same session.
        let key = format!("add-sites-{}-{}", sub.subscription_id, site_list.join("+"));
        let key: String = key.chars().take(255).collect();
        let session = stripe
            .create_sites_checkout(&checkout, &key)
            .await
            .map_err(stripe_problem)?;
        let amount = per_site * i64::try_from(site_list.len()).unwrap_or(1);
        let position = state
            .subscriptions
            .execute(
                &sub.subscription_id,
                SubscriptionCommand::StartSitePurchase {
                    session_id: session.id.clone(),
                    member_id,
                    sites: site_list.clone(),
                    price_id: sub.price_id.clone(),
                    amount,
                    currency: sub.currency.clone(),
                    at: chrono::Utc::now(),
                },
                EventMetadata::for_request(&request_id.0, Actor::Member(member_id)),
            )
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "recording pending sites");
                Problem::unavailable("the payment page was created but the pending sites could not be recorded; retry")
            })?;
        if let Some(position) = position {
            if let Err(err) = state
                .projections
                .wait_for(
                    &["member_subscriptions"],
                    position,
                    state.read_your_writes_timeout,
                )
                .await
            {
                tracing::warn!(error = %err, "could not wait for the read models");
            }
        }
        Ok(SitesCheckoutView {
            id: session.id,
            url: session.url,
            amount,
            currency: sub.currency,
            sites: site_list,
        })
    }

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

impl poem_openapi::types::Example for AddSitesRequest {
    fn example() -> Self {
        Self {
            sites: vec!["shop.example.com".into()],
            success_url: "https://example.com/account".into(),
            cancel_url: "https://example.com/account".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proration_charges_what_is_left_of_the_period() {
        let t = |s| chrono::DateTime::from_timestamp(s, 0).expect("valid");
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
