//! `/v1/checkout/sessions`: start a new subscription through Stripe Checkout.

use std::net::IpAddr;

use aggregates::{EmailAddress, SiteDomain};
use poem::web::Data;
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use sha2::{Digest, Sha256};

use super::declared::{EmailString, SiteString};
use super::edge;
use super::problem::db_error;
use super::problem::{FieldError, Problem};
use super::sessions::UrlHistoryItem;
use super::state::{ApiTags, RequestId, State};
use crate::api::problem::api_response;
use crate::rate_limit;
use crate::stripe::client::{CallError, CheckoutLine, OneTimeLines, SubscriptionCheckout};
use crate::stripe::purchase_metadata::{item_price_metadata, NewSubscription};

pub struct CheckoutApi {
    pub state: State,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct CreateCheckoutRequest {
    /// The buyer; a member with this email (ignoring case) is reused.
    #[oai(validator(min_length = 3, max_length = 254))]
    pub email: EmailString,
    /// The Stripe price of the subscription (`price_...`); or name a tier instead.
    #[oai(validator(pattern = "^price_[A-Za-z0-9_]{1,250}$"))]
    pub price_id: Option<String>,
    /// A tier to buy (`GET /v1/tiers`), with `cadence` (`month` or `year`), instead of
    /// `price_id`: the tier's price for that cadence is charged, and the subscription records
    /// the tier.
    pub tier_id: Option<uuid::Uuid>,
    pub cadence: Option<Cadence>,
    /// An offer (`POST /v1/offers`) for that tier and cadence: its discount is applied, and
    /// the subscription records it. Without it the buyer may type an offer's code at Stripe
    /// Checkout (`allow_promotion_codes`).
    pub offer_id: Option<uuid::Uuid>,
    /// A site purchase: the sites (domains) the subscription licenses, each its own
    /// subscription item with its own license. The first is the price's item; each further one
    /// is charged its first period at checkout and added as an item once paid. More are added
    /// later with `POST /v1/me/sites`. Each a domain name (a scheme, port or path given is
    /// dropped; repeats are ignored); comma-separated, they may not exceed 500 characters.
    #[oai(validator(min_items = 1, max_items = 20))]
    pub sites: Option<Vec<SiteString>>,
    /// A seat purchase: how many license keys (default 1). Not with `sites`.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    pub quantity: Option<u32>,
    /// Where Checkout sends the buyer after paying: an absolute URL whose origin is one of the
    /// server's allowed origins (`CHECKOUT_ALLOWED_ORIGINS`), else 422.
    #[oai(validator(max_length = 2048))]
    pub success_url: String,
    /// Where Checkout sends the buyer who gives up: an absolute URL on an allowed origin, as
    /// `success_url`.
    #[oai(validator(max_length = 2048))]
    pub cancel_url: String,
    /// Pages seen before buying, for attribution of a new member.
    #[oai(validator(max_items = 100))]
    pub url_history: Option<Vec<UrlHistoryItem>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
pub enum Cadence {
    Month,
    Year,
}

impl Cadence {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::Year => "year",
        }
    }
}

/// A Checkout Session to send the buyer to.
#[derive(Debug, Clone, Object)]
pub struct CheckoutSessionView {
    /// Stripe's session id (`cs_...`).
    pub id: String,
    /// Redirect the buyer here.
    pub url: Option<String>,
}

api_response! {
    pub enum CreateCheckoutResponse {
        /// The session was created (the same request repeated gets the same session).
        #[oai(status = 201)]
        Created(Json<CheckoutSessionView>),
        /// Too many checkouts from this address or for this email (`CHECKOUT_LIMIT_PER_IP`,
        /// `CHECKOUT_LIMIT_PER_EMAIL`); retry after `Retry-After` seconds.
        #[oai(status = 429, content_type = "application/problem+json")]
        TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    }
    problems {
        /// The body is not valid JSON of the expected shape.
        400 => BadRequest,
        /// The member already has an active subscription, or the offer's redemption limit is
        /// reached (`/problems/offer-redemption-limit`, field `offer_id`).
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation, or Stripe refused them (e.g. an unknown price).
        422 => Invalid,
        /// Stripe could not be reached, or kept failing; nothing was created here. Retry.
        502 => BadGateway,
    }
    unavailable: "Stripe is not configured, or the database is unavailable; retry later."
}

#[OpenApi(prefix_path = "/v1/checkout", tag = "ApiTags::Checkout")]
impl CheckoutApi {
    /// Start a subscription checkout
    ///
    /// Creates a Stripe Checkout Session in subscription mode for a site or seats, reusing the
    /// member's Stripe customer when the email has one. Its metadata (and the subscription's)
    /// carry the member id, the purchase type, the site and the attribution, which the
    /// webhooks use when the payment completes. A member with an active subscription gets 409.
    /// Limited per IP address and per email (429 with `Retry-After`).
    #[oai(
        path = "/sessions",
        method = "post",
        operation_id = "createCheckoutSession"
    )]
    async fn create(
        &self,
        req: &Request,
        request_id: Data<&RequestId>,
        body: Json<CreateCheckoutRequest>,
    ) -> CreateCheckoutResponse {
        let email = EmailAddress::parse(&body.email).ok();
        if let Err(refused) = self.limit(edge::client_ip(req), email.as_ref()).await {
            return refused;
        }
        match self.create_session(&request_id, body.0).await {
            Ok(session) => CreateCheckoutResponse::Created(Json(session)),
            Err(problem) => problem.into(),
        }
    }
}

impl CheckoutApi {
    /// Counts the checkout against its address's and its email's limits, shared by every
    /// instance (a session costs a Stripe call and may email the buyer), before any of it runs.
    async fn limit(
        &self,
        ip: Option<IpAddr>,
        email: Option<&EmailAddress>,
    ) -> Result<(), CreateCheckoutResponse> {
        let limits = &self.state.edge;
        let by_ip = ip.map(|ip| {
            (
                "checkout_per_ip",
                format!("checkout:ip:{ip}"),
                limits.checkout_per_ip,
            )
        });
        let by_email = email.map(|email| {
            (
                "checkout_per_email",
                format!("checkout:email:{}", email.normalized()),
                limits.checkout_per_email,
            )
        });
        for (name, key, limit) in by_ip.into_iter().chain(by_email) {
            match rate_limit::hit(&self.state.pool, &key, limit).await {
                Ok(None) => {}
                Ok(Some(wait)) => {
                    crate::metrics::rate_limited(name);
                    let (problem, secs) = edge::too_many_requests(wait, "checkouts");
                    return Err(CreateCheckoutResponse::TooManyRequests(Json(problem), secs));
                }
                Err(err) => return Err(db_error(err).into()),
            }
        }
        Ok(())
    }

    async fn create_session(
        &self,
        request_id: &RequestId,
        body: CreateCheckoutRequest,
    ) -> Result<CheckoutSessionView, Problem> {
        let state = &self.state;
        let mut errors = Vec::new();
        let email = EmailAddress::parse(&body.email)
            .map_err(|e| errors.push(FieldError::new("email", e.reason())))
            .ok();
        let mut sites: Vec<SiteDomain> = Vec::new();
        for (i, raw) in body.sites.iter().flatten().enumerate() {
            match SiteDomain::parse(raw) {
                Ok(site) if !sites.contains(&site) => sites.push(site),
                Ok(_) => {}
                Err(e) => errors.push(FieldError::new(format!("sites[{i}]"), e.reason())),
            }
        }
        let site_list = sites
            .iter()
            .map(SiteDomain::as_str)
            .collect::<Vec<_>>()
            .join(",");
        if site_list.len() > 500 {
            errors.push(FieldError::new(
                "sites",
                "the sites are too long together (500 characters at most, comma-separated); add more later",
            ));
        }
        if !sites.is_empty() && body.quantity.is_some_and(|q| q != 1) {
            errors.push(FieldError::new(
                "quantity",
                "a site purchase is one item per site; buy seats without `sites`",
            ));
        }
        super::purchases::check_return_urls(
            state,
            [
                ("success_url", &body.success_url),
                ("cancel_url", &body.cancel_url),
            ],
            &mut errors,
        );
        let attribution = match &body.url_history {
            Some(items) => {
                let entries = items
                    .iter()
                    .cloned()
                    .map(super::sessions::history_entry)
                    .collect();
                match aggregates::attribution::UrlHistory::parse(entries, chrono::Utc::now()) {
                    Ok(history) => Some(aggregates::attribution::attribute(
                        &history,
                        &state.attribution_routes,
                        state.site_host.as_deref(),
                    )),
                    Err(history_errors) => {
                        errors.extend(
                            history_errors
                                .into_iter()
                                .map(|e| FieldError::new(e.field, e.reason)),
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let price = self.price(&body, &mut errors).await?;
        let coupon = match (&price, body.offer_id) {
            (Some((_, tier)), Some(offer_id)) => self.coupon(offer_id, *tier, &mut errors).await?,
            _ => None,
        };
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        let (Some(email), Some((price_id, tier))) = (email, price) else {
            return Err(Problem::internal());
        };
        let stripe = super::purchases::stripe_api(state)?;

        let member_id = crate::members::find_by_email(&state.pool, &email)
            .await
            .map_err(db_error)?;
        let mut customer = None;
        if let Some(member_id) = member_id {
            let active: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE member_id = $1
                                AND status IN ('active', 'trialing', 'past_due', 'unpaid'))",
            )
            .bind(member_id)
            .fetch_one(&state.pool)
            .await
            .map_err(db_error)?;
            if active {
                return Err(Problem::conflict(
                    "subscription-exists",
                    "this member already has an active subscription; add sites or seats to it instead",
                ));
            }
            customer = sqlx::query_scalar("SELECT customer_id FROM stripe_customers WHERE member_id = $1 ORDER BY linked_at LIMIT 1")
                .bind(member_id)
                .fetch_optional(&state.pool)
                .await
                .map_err(db_error)?;
        }

        // Sites beyond the first: charged their first period now, added as items when paid.
        let mut one_time = None;
        let mut item_price = None;
        if sites.len() > 1 {
            let price = match stripe.recurring_price(&price_id).await {
                Ok(Some(price)) => price,
                Ok(None) => {
                    return Err(Problem::validation(vec![FieldError::new(
                        "price_id",
                        "is not a recurring price with a fixed amount, which several sites need",
                    )]))
                }
                Err(err) => return Err(checkout_problem(err)),
            };
            item_price = Some(item_price_metadata(
                &price.product_id,
                price.unit_amount,
                &price.currency,
                price.interval.as_str(),
                price.interval_count,
            ));
            let lines = sites[1..]
                .iter()
                .map(|site| CheckoutLine {
                    name: format!("Site {site} (first period)"),
                    unit_amount: price.unit_amount,
                    quantity: 1,
                })
                .collect();
            one_time = Some(OneTimeLines {
                currency: price.currency,
                lines,
            });
        }
        let metadata = NewSubscription {
            sites: &sites,
            member_id,
            attribution: attribution.as_ref(),
            tier: tier.map(|(id, cadence)| (id, cadence.as_str())),
        }
        .metadata(item_price);
        let mut metadata = metadata;
        if let Some(offer_id) = body.offer_id {
            metadata.insert(
                crate::stripe::purchase_metadata::key::OFFER_ID.to_owned(),
                offer_id.to_string(),
            );
        }
        let quantity = u64::from(body.quantity.unwrap_or(1));
        let checkout = SubscriptionCheckout {
            price_id: price_id.clone(),
            quantity,
            one_time,
            customer_email: customer.is_none().then(|| email.to_string()),
            customer,
            success_url: body.success_url.clone(),
            cancel_url: body.cancel_url.clone(),
            metadata,
            coupon,
        };
        // Derived from the cause: the same purchase asked for twice gets the same session.
        let key = {
            let mut h = Sha256::new();
            for part in [
                email.normalized().as_str(),
                &price_id,
                &site_list,
                &quantity.to_string(),
                &body.success_url,
                &body.cancel_url,
                &body.offer_id.map(|o| o.to_string()).unwrap_or_default(),
            ] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            format!("checkout-{}", hex::encode(h.finalize()))
        };
        let session = stripe
            .create_subscription_checkout(&checkout, &key)
            .await
            .map_err(checkout_problem)?;
        tracing::info!(session_id = %session.id, request_id = %request_id.0, "checkout session created");
        Ok(CheckoutSessionView {
            id: session.id,
            url: session.url,
        })
    }
}

impl CheckoutApi {
    /// The Stripe coupon of `offer_id`, which must be an active offer of the checkout's tier
    /// and cadence; `None` when it is not (pushed to `errors`).
    async fn coupon(
        &self,
        offer_id: uuid::Uuid,
        tier: Option<(uuid::Uuid, Cadence)>,
        errors: &mut Vec<FieldError>,
    ) -> Result<Option<String>, Problem> {
        let Some((tier_id, cadence)) = tier else {
            errors.push(FieldError::new("offer_id", "goes with tier_id and cadence"));
            return Ok(None);
        };
        type OfferRow = (uuid::Uuid, String, bool, String, Option<i32>, i64);
        let offer: Option<OfferRow> = sqlx::query_as(
            "SELECT tier_id, cadence, archived, stripe_coupon_id, redemption_limit,
                    (SELECT count(*) FROM offer_redemptions r WHERE r.offer_id = o.id)
             FROM offers o WHERE id = $1",
        )
        .bind(offer_id)
        .fetch_optional(&self.state.pool)
        .await
        .map_err(db_error)?;
        let reason = match offer {
            None => "no offer has this id",
            Some((_, _, true, ..)) => "the offer is archived",
            Some((t, c, false, ..)) if t != tier_id || c != cadence.as_str() => {
                "the offer is for another tier or cadence"
            }
            // Counted from the subscriptions started with it; Stripe's `max_redemptions` on
            // the coupon is the backstop for checkouts open at once.
            Some((.., Some(limit), redeemed)) if redeemed >= i64::from(limit) => {
                return Err(Problem {
                    errors: vec![FieldError::new(
                        "offer_id",
                        format!("the offer's {limit} redemption(s) are used up"),
                    )],
                    ..Problem::conflict(
                        "offer-redemption-limit",
                        "the offer has been redeemed as often as it may be",
                    )
                });
            }
            Some((_, _, false, coupon, ..)) => return Ok(Some(coupon)),
        };
        errors.push(FieldError::new("offer_id", reason));
        Ok(None)
    }

    /// The price to charge, from `price_id` or from `tier_id` and `cadence` (the tier's price
    /// for that cadence; the tier must be active), with the tier; `None` when a field is wrong
    /// (pushed to `errors`).
    async fn price(
        &self,
        body: &CreateCheckoutRequest,
        errors: &mut Vec<FieldError>,
    ) -> Result<Option<(String, Option<(uuid::Uuid, Cadence)>)>, Problem> {
        match (&body.price_id, body.tier_id, body.cadence) {
            (Some(price_id), None, None) => Ok(Some((price_id.clone(), None))),
            (None, Some(tier_id), Some(cadence)) => {
                let tier: Option<(String, String, bool)> = sqlx::query_as(
                    "SELECT monthly_price_id, yearly_price_id, archived FROM tiers WHERE id = $1",
                )
                .bind(tier_id)
                .fetch_optional(&self.state.pool)
                .await
                .map_err(db_error)?;
                match tier {
                    Some((_, _, true)) => {
                        errors.push(FieldError::new("tier_id", "is archived; it is not sold"));
                        Ok(None)
                    }
                    Some((monthly, yearly, false)) => {
                        let price = if cadence == Cadence::Month {
                            monthly
                        } else {
                            yearly
                        };
                        Ok(Some((price, Some((tier_id, cadence)))))
                    }
                    None => {
                        errors.push(FieldError::new("tier_id", "no tier has this id"));
                        Ok(None)
                    }
                }
            }
            (None, Some(_), None) => {
                errors.push(FieldError::new(
                    "cadence",
                    "is required with tier_id (month or year)",
                ));
                Ok(None)
            }
            (Some(_), Some(_), _) | (Some(_), None, Some(_)) => {
                errors.push(FieldError::new(
                    "price_id",
                    "give price_id, or tier_id and cadence, not both",
                ));
                Ok(None)
            }
            (None, None, _) => {
                errors.push(FieldError::new(
                    "price_id",
                    "is required, unless tier_id and cadence name a tier's price",
                ));
                Ok(None)
            }
        }
    }
}

/// What Stripe refuses here is the price (unknown, inactive, or not for subscriptions): 422.
fn checkout_problem(err: CallError) -> Problem {
    match err {
        CallError::Refused { message, .. } => Problem::validation(vec![FieldError::new(
            "price_id",
            format!("Stripe refused the checkout: {message}"),
        )]),
        CallError::Unavailable(message) => {
            tracing::error!(error = %message, "Stripe unavailable for checkout");
            Problem::new(
                poem::http::StatusCode::BAD_GATEWAY,
                "stripe-unavailable",
                "Stripe could not be reached; nothing was created, retry",
            )
        }
    }
}

impl poem_openapi::types::Example for CreateCheckoutRequest {
    fn example() -> Self {
        Self {
            email: "ada@example.com".into(),
            price_id: Some("price_1PgafmB7WZ01zgkW6dKueIc5".into()),
            tier_id: None,
            cadence: None,
            offer_id: None,
            sites: Some(vec!["example.com".into()]),
            quantity: None,
            success_url: "https://example.com/thanks".into(),
            cancel_url: "https://example.com/pricing".into(),
            url_history: None,
        }
    }
}
