//! `/v1/me/license-purchases`: buying more license keys (seats) for the member's subscription.
//!
//! The keys come first: they are reserved as `pending` (on the dashboard at once), then the
//! member pays a payment-mode Checkout Session for the seats prorated to the end of the period.
//! The payment adds one quantity item to the subscription at Stripe, which activates exactly
//! these keys; an expired session cancels them. Nothing is activated without payment.

use aggregates::{CancelReason, License, LicenseCommand, SubscriptionCommand};
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::problem::Problem;
use super::problem::{command_error, db_error};
use super::purchases::{
    check_return_urls, pricing_time, stripe_api, stripe_problem, Plan, PricedLike,
};
use super::sessions::MemberAuth;
use super::state::{ApiTags, RequestId, State};
use crate::api::problem::api_response;
use crate::store::{Actor, EventMetadata};
use crate::stripe::client::{CheckoutLine, PaymentCheckout};
use crate::stripe::purchase_metadata::Added;

pub struct LicensePurchasesApi {
    pub state: State,
}

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct LicensePurchaseRequest {
    /// How many license keys to buy, each priced like the subscription's plan.
    #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
    pub quantity: u32,
    /// Where Checkout sends the member after paying; must be on an allowed origin.
    #[oai(validator(max_length = 2048))]
    pub success_url: String,
    /// Where Checkout sends the member who gives up; must be on an allowed origin.
    #[oai(validator(max_length = 2048))]
    pub cancel_url: String,
}

/// A reserved key, pending until its purchase is paid.
#[derive(Debug, Clone, Object)]
pub struct PendingKey {
    pub key: String,
    /// Which seat of the purchase (1-based).
    pub seat: u32,
}

/// A license purchase: its keys are pending; send the member to `url` to pay.
#[derive(Debug, Clone, Object)]
pub struct LicensePurchaseView {
    /// Our id of the purchase (in the Checkout Session's metadata).
    pub purchase_id: Uuid,
    /// Stripe's Checkout Session id.
    pub id: String,
    pub url: Option<String>,
    pub quantity: u32,
    /// The prorated total for the rest of the current period, minor units.
    pub amount: i64,
    pub currency: String,
    /// The reserved keys, `pending` on the dashboard until paid.
    pub keys: Vec<PendingKey>,
}

api_response! {
    pub enum LicensePurchaseResponse {
        /// The keys are reserved (pending) and a Checkout Session for them created.
        #[oai(status = 201)]
        Created(Json<LicensePurchaseView>),
    }
    problems {
        /// The request is malformed.
        400 => BadRequest,
        /// No valid member session.
        401 => Unauthorized,
        /// No active subscription to add keys to.
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// The quantity or a URL is invalid.
        422 => Invalid,
        /// Stripe could not be reached, or kept failing. The keys stay pending (never active
        /// without payment); the same request again reuses them.
        502 => BadGateway,
    }
    unavailable: "Stripe is not configured, or the database is unavailable; retry later."
}

/// The read models a member looks at after a purchase step.

#[OpenApi(prefix_path = "/v1/me/license-purchases", tag = "ApiTags::Me")]
impl LicensePurchasesApi {
    /// Buy license keys
    ///
    /// Reserves `quantity` license keys as `pending` (shown on the dashboard), then creates a
    /// payment-mode Checkout Session for them, prorated to the end of the current period. Once
    /// paid, they are added to the subscription at Stripe as one quantity item and exactly these
    /// keys become active; an expired session cancels them. When Stripe cannot be reached the
    /// keys stay pending, and asking again for the same quantity reuses them.
    #[oai(path = "/", method = "post", operation_id = "buyLicenseKeys")]
    async fn buy(
        &self,
        session: MemberAuth,
        request_id: Data<&RequestId>,
        body: Json<LicensePurchaseRequest>,
    ) -> LicensePurchaseResponse {
        match self
            .purchase(session.0.member_id, &request_id, body.0)
            .await
        {
            Ok(view) => LicensePurchaseResponse::Created(Json(view)),
            Err(problem) => problem.into(),
        }
    }
}

impl LicensePurchasesApi {
    pub(crate) async fn purchase(
        &self,
        member_id: Uuid,
        request_id: &RequestId,
        body: LicensePurchaseRequest,
    ) -> Result<LicensePurchaseView, Problem> {
        let state = &self.state;
        let mut errors = Vec::new();
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
        let Some(plan) = Plan::of_member(state, member_id, PricedLike::Seat).await? else {
            return Err(Problem::conflict(
                "no-subscription",
                "you have no active subscription to add license keys to",
            ));
        };
        // Checked before anything is reserved: the session's metadata needs it.
        plan.product()?;
        let quantity = body.quantity;
        let metadata = EventMetadata::for_request(&request_id.0, Actor::Member(member_id));

        let purchase_id = self
            .reusable_purchase(member_id, &plan.subscription_id, quantity, &metadata)
            .await?
            .unwrap_or_else(Uuid::now_v7);
        let mut keys = Vec::new();
        for seat in 1..=quantity {
            let license_id = License::id_for_purchase(purchase_id, seat);
            let key = crate::license_keys::reserve(&state.pool, license_id)
                .await
                .map_err(db_error)?;
            keys.push(PendingKey {
                key: key.to_string(),
                seat,
            });
            let command = LicenseCommand::ReserveLicense {
                license_id,
                key,
                member_id,
                subscription_id: plan.subscription_id.clone(),
                purchase_id,
                seat,
                at: chrono::Utc::now(),
            };
            state
                .licenses
                .execute(&license_id.to_string(), command, metadata.clone())
                .await
                .map_err(|e| {
                    command_error(e).when_unavailable("the keys could not be reserved; retry")
                })?;
        }

        let per_seat = plan.prorated_unit_amount(pricing_time());
        let amount = per_seat * i64::from(quantity);
        let checkout = PaymentCheckout {
            customer: plan.customer_id.clone(),
            lines: vec![CheckoutLine {
                name: "License key (prorated)".to_owned(),
                unit_amount: per_seat,
                quantity: u64::from(quantity),
            }],
            currency: plan.currency.clone(),
            success_url: body.success_url,
            cancel_url: body.cancel_url,
            metadata: plan.metadata(member_id, purchase_id, Added::Seats(quantity))?,
        };
        // One session per purchase and amount: a retry (ours, or the member's within the
        // hour the price is computed for) gets the same session.
        let key = format!("license-purchase-{purchase_id}-{amount}");
        let session = match stripe.create_payment_checkout(&checkout, &key).await {
            Ok(session) => session,
            Err(err) => {
                return Err(stripe_problem(
                    err,
                    &format!("the {quantity} key(s) stay pending, and asking again for {quantity} reuses them"),
                ));
            }
        };
        let command = SubscriptionCommand::StartLicensePurchase {
            purchase_id,
            session_id: session.id.clone(),
            member_id,
            quantity,
            price_id: plan.price_id.clone(),
            amount,
            currency: plan.currency.clone(),
            at: chrono::Utc::now(),
        };
        state
            .subscriptions
            .execute(&plan.subscription_id, command, metadata)
            .await
            .map_err(|e| {
                command_error(e).when_unavailable(
                    "the payment page was created but the purchase could not be recorded; retry",
                )
            })?;
        Ok(LicensePurchaseView {
            purchase_id,
            id: session.id,
            url: session.url,
            quantity,
            amount,
            currency: plan.currency,
            keys,
        })
    }

    /// The member's purchase whose keys were reserved but whose checkout was never created
    /// (Stripe failed): reused when it is for the same quantity. Any other such purchase is
    /// given up and its keys canceled; nobody could pay it, since its session's URL (if Stripe
    /// made one) was never handed out.
    async fn reusable_purchase(
        &self,
        member_id: Uuid,
        subscription_id: &str,
        quantity: u32,
        metadata: &EventMetadata,
    ) -> Result<Option<Uuid>, Problem> {
        let state = &self.state;
        let stranded: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT l.purchase_id, count(*) FROM licenses l
             WHERE l.member_id = $1 AND l.subscription_id = $2 AND l.status = 'pending'
               AND l.purchase_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM license_purchases p WHERE p.purchase_id = l.purchase_id)
             GROUP BY l.purchase_id ORDER BY min(l.issued_at) DESC",
        )
        .bind(member_id)
        .bind(subscription_id)
        .fetch_all(&state.pool)
        .await
        .map_err(db_error)?;
        let mut reuse = None;
        for (purchase_id, count) in stranded {
            if reuse.is_none() && count == i64::from(quantity) {
                reuse = Some(purchase_id);
                continue;
            }
            for seat in 1..=u32::try_from(count).unwrap_or(0) {
                let license_id = License::id_for_purchase(purchase_id, seat);
                let command = LicenseCommand::CancelPendingLicense {
                    reason: CancelReason::CheckoutAbandoned,
                    at: chrono::Utc::now(),
                };
                state
                    .licenses
                    .execute(&license_id.to_string(), command, metadata.clone())
                    .await
                    .map_err(|e| {
                        command_error(e)
                            .when_unavailable("an earlier purchase could not be given up; retry")
                    })?;
            }
        }
        Ok(reuse)
    }
}

impl poem_openapi::types::Example for LicensePurchaseRequest {
    fn example() -> Self {
        Self {
            quantity: 5,
            success_url: "https://example.com/account".into(),
            cancel_url: "https://example.com/account".into(),
        }
    }
}
