//! `/v1/me/sites`: the sites of a member's subscription.

use aggregates::{SiteDomain, StripeObservation, SubscriptionCommand};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;

use super::problem::{command_error, db_error};
use super::problem::{FieldError, Problem};
use super::purchases::{
    check_return_urls, pricing_time, stripe_api, stripe_problem, Plan, PricedLike,
};
use super::sessions::MemberAuth;
use super::state::{ApiTags, RequestId, State};
use crate::api::problem::api_response;
use crate::store::{Actor, EventMetadata};
use crate::stripe::client::{CheckoutLine, PaymentCheckout};
use crate::stripe::purchase_metadata::Added;

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

api_response! {
    pub enum AddSitesResponse {
        /// A Checkout Session for the prorated amount; the sites are pending until it is paid.
        #[oai(status = 201)]
        Created(Json<SitesCheckoutView>),
    }
    problems {
        /// The request is malformed.
        400 => BadRequest,
        /// No valid member session.
        401 => Unauthorized,
        /// No active subscription with sites to add to, or a site is already on it.
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// A site or URL is invalid.
        422 => Invalid,
        /// Stripe could not be reached, or kept failing; nothing pending was recorded. Retry.
        502 => BadGateway,
    }
    unavailable: "Stripe is not configured, or the database is unavailable; retry later."
}

api_response! {
    pub enum RemoveSiteResponse {
        /// Removed: its subscription item is deleted at Stripe and its license deactivated.
        #[oai(status = 204)]
        Removed,
    }
    problems {
        /// The request is malformed.
        400 => BadRequest,
        /// No valid member session.
        401 => Unauthorized,
        /// The member has no active site with this domain.
        404 => NotFound,
        /// The domain is not a domain name.
        422 => Invalid,
        /// Stripe could not be reached, or kept failing; nothing changed. Retry.
        502 => BadGateway,
    }
    unavailable: "Stripe is not configured, or the database is unavailable; retry later."
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

impl SitesApi {
    pub(crate) async fn add_sites(
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
        check_return_urls(
            state,
            [
                ("success_url", &body.success_url),
                ("cancel_url", &body.cancel_url),
            ],
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        let stripe = stripe_api(state)?;
        let Some(plan) = Plan::of_member(state, member_id, PricedLike::Site).await? else {
            return Err(Problem::conflict(
                "no-site-subscription",
                "you have no active subscription with sites to add to",
            ));
        };
        let taken: Vec<String> = sqlx::query_scalar(
            "SELECT site FROM subscription_items WHERE subscription_id = $1 AND status = 'active' AND site = ANY($2)",
        )
        .bind(&plan.subscription_id)
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
        let priced_at = pricing_time();
        let per_site = plan.prorated_unit_amount(priced_at);
        let site_list: Vec<String> = sites.iter().map(ToString::to_string).collect();
        // Derived from the cause and the hour it is priced for: the same sites asked for again
        // within the hour are the same purchase, with the same Stripe session.
        let purchase_id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!(
                "add-sites:{}:{}:{}",
                plan.subscription_id,
                site_list.join(","),
                priced_at.timestamp()
            )
            .as_bytes(),
        );
        let metadata = plan.metadata(member_id, purchase_id, Added::Sites(&site_list))?;
        let checkout = PaymentCheckout {
            customer: plan.customer_id.clone(),
            lines: site_list
                .iter()
                .map(|s| CheckoutLine {
                    name: format!("Site {s} (prorated)"),
                    unit_amount: per_site,
                    quantity: 1,
                })
                .collect(),
            currency: plan.currency.clone(),
            success_url: body.success_url,
            cancel_url: body.cancel_url,
            metadata,
        };
        let amount = per_site * i64::try_from(site_list.len()).unwrap_or(1);
        let session = stripe
            .create_payment_checkout(&checkout, &format!("add-sites-{purchase_id}"))
            .await
            .map_err(|e| stripe_problem(e, "nothing changed, retry"))?;
        state
            .subscriptions
            .execute(
                &plan.subscription_id,
                SubscriptionCommand::StartSitePurchase {
                    purchase_id,
                    session_id: session.id.clone(),
                    member_id,
                    sites: site_list.clone(),
                    price_id: plan.price_id.clone(),
                    amount,
                    currency: plan.currency.clone(),
                    at: chrono::Utc::now(),
                },
                EventMetadata::for_request(&request_id.0, Actor::Member(member_id)),
            )
            .await
            .map_err(|e| command_error(e).when_unavailable("the payment page was created but the pending sites could not be recorded; retry"))?;
        Ok(SitesCheckoutView {
            id: session.id,
            url: session.url,
            amount,
            currency: plan.currency,
            sites: site_list,
        })
    }

    pub(crate) async fn remove_site(
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
        stripe_api(state)?
            .delete_subscription_item(&item_id)
            .await
            .map_err(|e| stripe_problem(e, "nothing changed, retry"))?;
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
            .map_err(|e| command_error(e).when_unavailable("the site was removed at Stripe; recording it failed and the webhook will; retry to check"))?;
        // The item is gone from the (inline) subscription tables already; the site's license
        // is deactivated by the license policy, which runs after the append: wait for it, so
        // the answer means "removed and its key no longer validates".
        state.read_your_writes(&["license_policy"], position).await;
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
