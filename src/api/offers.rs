//! Offers: `/v1/offers`. A discount on a tier and cadence (Ghost's offers): a percentage or an
//! amount off, once, for some months or forever, with a code and an optional redemption
//! limit. Creating one creates its Stripe coupon (limited to the tier's product) and a
//! promotion code with its code; checkout by tier applies it with `offer_id`, and a checkout
//! without an offer lets the buyer type the code at Stripe. Archiving deactivates the code.

use aggregates::{OfferCommand, OfferDiscount, OfferDuration, OfferError, OfferTerms};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use uuid::Uuid;

use super::auth::AdminAuth;
use super::checkout::Cadence;
use super::problem::{api_response, command_error, db_error, FieldError, Problem, Refusal};
use super::purchases::stripe_problem;
use super::state::{ApiTags, RequestId, State};
use super::tiers::stripe_api;
use crate::store::{inline_refusal, Actor, EventMetadata};
use crate::stripe::products::{self, Coupon, Off};

pub struct OffersApi {
    pub state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum DiscountType {
    /// `discount_amount` percent off (1 to 100).
    Percent,
    /// `discount_amount` minor units off each period, in the tier's currency.
    Amount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum DiscountDuration {
    /// The first period.
    Once,
    /// The first `duration_months` months (monthly offers).
    Repeating,
    Forever,
}

#[derive(Debug, Clone, Object)]
pub struct CreateOfferRequest {
    #[oai(validator(max_length = 191))]
    pub name: String,
    /// Lower-case letters, digits and dashes; unique among offers.
    #[oai(validator(pattern = "^[a-z0-9][a-z0-9-]{0,63}$"))]
    pub code: String,
    pub tier_id: Uuid,
    pub cadence: Cadence,
    pub discount_type: DiscountType,
    /// Percent (1 to 100) or minor units, as `discount_type` says.
    #[oai(validator(minimum(value = "1"), maximum(value = "99999999")))]
    pub discount_amount: i64,
    pub duration: DiscountDuration,
    /// With `repeating`: 1 to 36.
    #[oai(validator(minimum(value = "1"), maximum(value = "36")))]
    pub duration_months: Option<u32>,
    /// Redemptions allowed in all; none: no limit.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000")))]
    pub redemption_limit: Option<u32>,
}

/// An offer.
#[derive(Debug, Clone, Object, sqlx::FromRow)]
#[oai(rename = "Offer")]
pub struct OfferView {
    pub id: Uuid,
    pub name: String,
    pub code: String,
    pub tier_id: Uuid,
    /// `month` or `year`.
    pub cadence: String,
    /// `percent` or `amount`.
    pub discount_type: String,
    pub discount_amount: i64,
    /// `once`, `repeating` or `forever`.
    pub duration: String,
    #[oai(nullable)]
    pub duration_months: Option<i32>,
    #[oai(nullable)]
    pub redemption_limit: Option<i32>,
    /// Subscriptions started with the offer (`OfferRedeemed`); checkout refuses it with 409
    /// once this reaches `redemption_limit`.
    pub redemption_count: i64,
    pub stripe_coupon_id: String,
    /// The Stripe promotion code with `code`, which buyers type at Checkout; absent for
    /// offers created before promotion codes were.
    #[oai(skip_serializing_if_is_none)]
    pub stripe_promotion_code_id: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct OfferList {
    pub items: Vec<OfferView>,
}

api_response! {
    pub enum CreateOfferResponse {
        /// The offer, with its Stripe coupon and promotion code.
        #[oai(status = 201)]
        Created(Json<OfferView>, #[oai(header = "Location")] String),
    }
    problems {
        /// The body is malformed.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// Another offer has this code, or Stripe is not configured on this server.
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation (an unknown or archived tier among them).
        422 => Invalid,
        /// Stripe refused or could not be reached; no offer was recorded.
        502 => BadGateway,
    }
}

api_response! {
    pub enum OfferResponse {
        /// The offer.
        #[oai(status = 200)]
        Ok(Json<OfferView>),
    }
    problems {
        /// The id is malformed.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No offer has this id.
        404 => NotFound,
    }
}

api_response! {
    pub enum ArchiveOfferResponse {
        /// The offer, archived (archiving an archived offer changes nothing).
        #[oai(status = 200)]
        Ok(Json<OfferView>),
    }
    problems {
        /// The id is malformed.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No offer has this id.
        404 => NotFound,
        /// The offer has a promotion code and Stripe is not configured on this server.
        409 => Conflict,
        /// Stripe refused to deactivate the promotion code or could not be reached; the
        /// offer was not archived.
        502 => BadGateway,
    }
}

api_response! {
    pub enum ListOffersResponse {
        /// Every offer, active first, newest first.
        #[oai(status = 200)]
        Ok(Json<OfferList>),
    }
    problems {
        /// No valid admin token.
        401 => Unauthorized,
    }
}

const SELECT: &str = "SELECT id, name, code, tier_id, cadence, discount_type,
        discount_value AS discount_amount, duration, duration_months, redemption_limit,
        (SELECT count(*) FROM offer_redemptions r WHERE r.offer_id = offers.id)
            AS redemption_count,
        stripe_coupon_id, stripe_promotion_code_id, NOT archived AS active, created_at,
        updated_at
    FROM offers";

#[OpenApi(prefix_path = "/v1/offers", tag = "ApiTags::Tiers")]
impl OffersApi {
    /// Create an offer
    ///
    /// Creates the offer's Stripe coupon (limited to the tier's product) and a promotion code
    /// with the offer's `code` and `redemption_limit` (both idempotent), then the offer.
    /// Checkout by tier applies it with `offer_id` for the same tier and cadence; a checkout
    /// without `offer_id` lets the buyer type the code at Stripe.
    #[oai(path = "/", method = "post", operation_id = "createOffer")]
    async fn create(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        body: Json<CreateOfferRequest>,
    ) -> CreateOfferResponse {
        match self.create_offer(&request_id, body.0).await {
            Ok(offer) => {
                let location = format!("/v1/offers/{}", offer.id);
                CreateOfferResponse::Created(Json(offer), location)
            }
            Err(problem) => problem.into(),
        }
    }

    /// List offers
    #[oai(path = "/", method = "get", operation_id = "listOffers")]
    async fn list(&self, _auth: AdminAuth) -> ListOffersResponse {
        match sqlx::query_as(&format!("{SELECT} ORDER BY archived, created_at DESC, id"))
            .fetch_all(&self.state.pool)
            .await
        {
            Ok(items) => ListOffersResponse::Ok(Json(OfferList { items })),
            Err(err) => db_error(err).into(),
        }
    }

    /// Get an offer
    #[oai(path = "/:id", method = "get", operation_id = "getOffer")]
    async fn get(&self, _auth: AdminAuth, id: Path<Uuid>) -> OfferResponse {
        match find(&self.state, id.0).await {
            Ok(offer) => OfferResponse::Ok(Json(offer)),
            Err(problem) => problem.into(),
        }
    }

    /// Archive an offer
    ///
    /// Deactivates its Stripe promotion code first (idempotent; when Stripe fails nothing is
    /// archived), then archives it: checkout no longer applies it and Stripe no longer takes
    /// its code. Subscriptions that have it keep their discount.
    #[oai(path = "/:id/archive", method = "post", operation_id = "archiveOffer")]
    async fn archive(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        id: Path<Uuid>,
    ) -> ArchiveOfferResponse {
        let request_id: &RequestId = &request_id;
        let result = async {
            let offer = find(&self.state, id.0).await?;
            if let (true, Some(code)) = (offer.active, &offer.stripe_promotion_code_id) {
                let api = stripe_api(&self.state)?;
                products::deactivate_promotion_code(api, id.0, code)
                    .await
                    .map_err(|e| stripe_problem(e, "the offer was not archived; retry"))?;
            }
            let metadata = EventMetadata::for_request(&request_id.0, Actor::Admin);
            let command = OfferCommand::ArchiveOffer { at: Utc::now() };
            self.state
                .offers
                .execute(&id.0.to_string(), command, metadata)
                .await
                .map_err(command_error)?;
            find(&self.state, id.0).await
        }
        .await;
        match result {
            Ok(offer) => ArchiveOfferResponse::Ok(Json(offer)),
            Err(problem) => problem.into(),
        }
    }
}

impl OffersApi {
    async fn create_offer(
        &self,
        request_id: &RequestId,
        body: CreateOfferRequest,
    ) -> Result<OfferView, Problem> {
        let state = &self.state;
        let name = body.name.trim();
        if name.is_empty() || name.contains('\0') {
            return Err(invalid("name", "must not be blank"));
        }
        let discount = match body.discount_type {
            DiscountType::Percent => OfferDiscount::Percent(
                u8::try_from(body.discount_amount)
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| invalid("discount_amount", "a percentage is 1 to 100"))?,
            ),
            DiscountType::Amount => OfferDiscount::Amount(body.discount_amount),
        };
        let duration = match (body.duration, body.duration_months, body.cadence) {
            (DiscountDuration::Repeating, _, Cadence::Year) => {
                return Err(invalid(
                    "duration",
                    "repeating is for monthly offers; a yearly offer is once or forever",
                ))
            }
            (DiscountDuration::Repeating, Some(months), Cadence::Month) => {
                OfferDuration::Repeating(months)
            }
            (DiscountDuration::Repeating, None, _) => {
                return Err(invalid("duration_months", "is required with repeating"))
            }
            (_, Some(_), _) => return Err(invalid("duration_months", "goes only with repeating")),
            (DiscountDuration::Once, None, _) => OfferDuration::Once,
            (DiscountDuration::Forever, None, _) => OfferDuration::Forever,
        };
        let tier: Option<(String, String, bool)> =
            sqlx::query_as("SELECT stripe_product_id, currency, archived FROM tiers WHERE id = $1")
                .bind(body.tier_id)
                .fetch_optional(&state.pool)
                .await
                .map_err(db_error)?;
        let (product, currency) = match tier {
            None => return Err(invalid("tier_id", "no tier has this id")),
            Some((_, _, true)) => return Err(invalid("tier_id", "is archived")),
            Some((product, currency, false)) => (product, currency),
        };
        let taken: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM offers WHERE code = $1)")
                .bind(&body.code)
                .fetch_one(&state.pool)
                .await
                .map_err(db_error)?;
        if taken {
            return Err(code_taken());
        }
        let api = stripe_api(state)?;
        let id = Uuid::now_v7();
        let (duration_name, months) = match duration {
            OfferDuration::Once => ("once", None),
            OfferDuration::Repeating(n) => ("repeating", Some(n)),
            OfferDuration::Forever => ("forever", None),
        };
        let coupon = Coupon {
            name,
            off: match discount {
                OfferDiscount::Percent(p) => Off::Percent(p),
                OfferDiscount::Amount(a) => Off::Amount(a),
            },
            currency: &currency,
            duration: duration_name,
            months,
            max_redemptions: body.redemption_limit,
            product: &product,
        };
        let coupon_id = products::create_coupon(api, id, &coupon)
            .await
            .map_err(|e| stripe_problem(e, "no offer was recorded; retry"))?;
        let promotion_code_id =
            products::create_promotion_code(api, id, &coupon_id, &body.code, body.redemption_limit)
                .await
                .map_err(|e| stripe_problem(e, "no offer was recorded; retry"))?;
        let command = OfferCommand::CreateOffer {
            offer_id: id,
            terms: OfferTerms {
                name: name.to_owned(),
                code: body.code,
                tier_id: body.tier_id,
                cadence: body.cadence.as_str().to_owned(),
                discount,
                duration,
                redemption_limit: body.redemption_limit,
                stripe_coupon_id: coupon_id,
                stripe_promotion_code_id: Some(promotion_code_id),
            },
            at: Utc::now(),
        };
        let metadata = EventMetadata::for_request(&request_id.0, Actor::Admin);
        match state
            .offers
            .execute(&id.to_string(), command, metadata)
            .await
        {
            Ok(_) => find(state, id).await,
            // Another offer took the code meanwhile: the inline read model refused it.
            Err(err) if inline_refusal(&err).is_some() => Err(code_taken()),
            Err(err) => Err(command_error(err)),
        }
    }
}

impl Refusal for OfferError {
    fn problem(&self) -> Problem {
        match self {
            Self::NotFound => Problem::not_found("no offer has this id"),
            Self::AlreadyExists => Problem::conflict("offer-exists", "the offer already exists"),
        }
    }
}

async fn find(state: &State, id: Uuid) -> Result<OfferView, Problem> {
    sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(&state.pool)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Problem::not_found("no offer has this id"))
}

fn code_taken() -> Problem {
    Problem::conflict("offer-code-taken", "another offer has this code")
}

fn invalid(field: &str, reason: &str) -> Problem {
    Problem::validation(vec![FieldError::new(field, reason)])
}
