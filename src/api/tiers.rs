//! Tiers: `/v1/tiers`. What members buy, as Ghost sells it: a name, a description, benefits,
//! a visibility, and a monthly and a yearly price (Stripe prices of the tier's own product,
//! created here, or existing ones linked). The list is public, for a pricing page.

use aggregates::{TierCommand, TierError, TierPrice, TierProfile, TierVisibility};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use uuid::Uuid;

use super::auth::AdminAuth;
use super::problem::{api_response, command_error, db_error, FieldError, Problem, Refusal};
use super::purchases::stripe_problem;
use super::state::{ApiTags, RequestId, State};
use crate::store::{Actor, EventMetadata};
use crate::stripe::client::StripeApi;
use crate::stripe::products;

pub struct TiersApi {
    pub state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "TierVisibility", rename_all = "snake_case")]
pub enum TierVisibilityDto {
    /// Listed by `GET /v1/tiers`.
    Public,
    /// Not listed; sold by a direct link or an admin.
    None,
}

impl From<TierVisibilityDto> for TierVisibility {
    fn from(v: TierVisibilityDto) -> Self {
        match v {
            TierVisibilityDto::Public => Self::Public,
            TierVisibilityDto::None => Self::None,
        }
    }
}

/// A tier.
#[derive(Debug, Clone, Object, sqlx::FromRow, serde::Serialize)]
#[oai(rename = "Tier")]
pub struct TierView {
    pub id: Uuid,
    pub name: String,
    #[oai(nullable)]
    pub description: Option<String>,
    #[sqlx(json)]
    pub benefits: Vec<String>,
    /// `public` (listed) or `none`.
    pub visibility: String,
    /// ISO 4217, lower case.
    pub currency: String,
    /// Minor units (cents) per month.
    pub monthly_price: i64,
    /// Minor units (cents) per year.
    pub yearly_price: i64,
    pub stripe_product_id: String,
    pub stripe_monthly_price_id: String,
    pub stripe_yearly_price_id: String,
    /// Archived tiers are not sold; their members keep them.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
#[oai(rename = "TierList")]
pub struct TierList {
    pub items: Vec<TierView>,
}

/// A tier's prices: amounts (the Stripe prices are created) or existing Stripe prices.
#[derive(Debug, Clone, Object)]
pub struct TierPricesRequest {
    /// Minor units per month (with `yearly_price`).
    #[oai(validator(minimum(value = "0"), maximum(value = "99999999")))]
    pub monthly_price: Option<i64>,
    /// Minor units per year (with `monthly_price`).
    #[oai(validator(minimum(value = "0"), maximum(value = "99999999")))]
    pub yearly_price: Option<i64>,
    /// ISO 4217 (`usd`), with amounts; taken from the prices when they are linked.
    #[oai(validator(pattern = "^[A-Za-z]{3}$"))]
    pub currency: Option<String>,
    /// An existing monthly Stripe price to link instead (with `stripe_yearly_price_id`).
    #[oai(validator(max_length = 255, pattern = "^price_[A-Za-z0-9_]+$"))]
    pub stripe_monthly_price_id: Option<String>,
    /// An existing yearly Stripe price of the same product.
    #[oai(validator(max_length = 255, pattern = "^price_[A-Za-z0-9_]+$"))]
    pub stripe_yearly_price_id: Option<String>,
}

#[derive(Debug, Clone, Object)]
pub struct CreateTierRequest {
    #[oai(validator(max_length = 191))]
    pub name: String,
    #[oai(validator(max_length = 2000))]
    pub description: Option<String>,
    /// What the tier gives, one line each.
    #[oai(default, validator(max_items = 50))]
    pub benefits: Vec<String>,
    pub visibility: Option<TierVisibilityDto>,
    #[oai(flatten)]
    pub prices: TierPricesRequest,
}

#[derive(Debug, Clone, Object)]
pub struct UpdateTierRequest {
    #[oai(validator(max_length = 191))]
    pub name: Option<String>,
    /// An empty string clears it.
    #[oai(validator(max_length = 2000))]
    pub description: Option<String>,
    #[oai(validator(max_items = 50))]
    pub benefits: Option<Vec<String>>,
    pub visibility: Option<TierVisibilityDto>,
    /// `false` archives the tier (it is no longer sold), `true` sells it again.
    pub active: Option<bool>,
}

api_response! {
    pub enum CreateTierResponse {
        /// The tier, with its Stripe product and prices.
        #[oai(status = 201)]
        Created(Json<TierView>, #[oai(header = "Location")] String),
    }
    problems {
        /// The body is malformed.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// Stripe is not configured on this server (`STRIPE_SECRET_KEY`).
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation; `errors` names them.
        422 => Invalid,
        /// Stripe refused or could not be reached; no tier was recorded.
        502 => BadGateway,
    }
}

api_response! {
    pub enum TierResponse {
        /// The tier.
        #[oai(status = 200)]
        Ok(Json<TierView>),
    }
    problems {
        /// The request is malformed.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No tier has this id (or, without an admin token, none that is listed).
        404 => NotFound,
        /// The tier is archived (it cannot be repriced), or Stripe is not configured.
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// Fields failed validation; `errors` names them.
        422 => Invalid,
        /// Stripe refused or could not be reached; the tier is unchanged.
        502 => BadGateway,
    }
}

api_response! {
    pub enum ListTiersResponse {
        /// Active public tiers, cheapest first; with an admin token, every tier.
        #[oai(status = 200)]
        Ok(Json<TierList>),
    }
    problems {
        /// The admin token sent is not valid.
        401 => Unauthorized,
    }
}

impl TiersApi {
    /// Creates a tier as `POST /v1/tiers` does (also `memberledger tiers create`).
    pub async fn create_tier(
        &self,
        request_id: &RequestId,
        body: CreateTierRequest,
    ) -> Result<TierView, Problem> {
        let profile = TierProfile {
            name: required_text("name", &body.name, 191)?,
            description: optional_text("description", body.description.as_deref(), 2000)?,
            benefits: benefits(&body.benefits)?,
            visibility: body.visibility.map_or(TierVisibility::Public, Into::into),
        };
        let api = stripe_api(&self.state)?;
        let id = Uuid::now_v7();
        let (currency, product, monthly, yearly) = prices(
            &self.state.pool,
            api,
            id,
            Target::New(&profile),
            &body.prices,
        )
        .await?;
        let command = TierCommand::CreateTier {
            tier_id: id,
            profile,
            currency,
            stripe_product_id: product,
            monthly,
            yearly,
            at: Utc::now(),
        };
        self.execute(id, command, request_id).await?;
        find(&self.state, id, true).await
    }
}

/// `memberledger tiers create`: `body` is the JSON of `POST /v1/tiers` (nulls for the options
/// not given), checked and created the same way; the tier is printed, a refusal is the error.
pub async fn create_from_cli(
    database: &crate::config::DatabaseConfig,
    stripe: crate::config::StripeSettings,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    use poem_openapi::types::ParseFromJSON;
    let body = CreateTierRequest::parse_from_json(Some(body))
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    let db = crate::db::Database::connect(database).await?;
    crate::db::migrate(&db.pool).await?;
    let settings = crate::config::Settings {
        stripe,
        ..crate::config::Settings::default()
    };
    let api = TiersApi {
        state: super::state::AppState::new(db.pool.clone(), &settings),
    };
    let request_id = RequestId(format!("cli-{}", Uuid::now_v7()));
    let created = api.create_tier(&request_id, body).await;
    db.close().await?;
    match created {
        Ok(tier) => {
            println!("{}", serde_json::to_string_pretty(&tier)?);
            Ok(())
        }
        Err(problem) => Err(anyhow::anyhow!("{}", problem.in_words())),
    }
}

const SELECT: &str = "SELECT id, name, description, benefits, visibility, currency,
        monthly_amount AS monthly_price, yearly_amount AS yearly_price, stripe_product_id,
        monthly_price_id AS stripe_monthly_price_id, yearly_price_id AS stripe_yearly_price_id,
        NOT archived AS active, created_at, updated_at
    FROM tiers";

#[OpenApi(prefix_path = "/v1/tiers", tag = "ApiTags::Tiers")]
impl TiersApi {
    /// Create a tier
    ///
    /// With `monthly_price`, `yearly_price` and `currency`, creates the tier's Stripe product
    /// and its two prices; with `stripe_monthly_price_id` and `stripe_yearly_price_id`, links
    /// those (a monthly and a yearly price of one product, in one currency). Stripe calls are
    /// idempotent; when one fails the answer is 502 and no tier is recorded.
    #[oai(path = "/", method = "post", operation_id = "createTier")]
    async fn create(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        body: Json<CreateTierRequest>,
    ) -> CreateTierResponse {
        let result = self.create_tier(&request_id, body.0).await;
        match result {
            Ok(tier) => {
                let location = format!("/v1/tiers/{}", tier.id);
                CreateTierResponse::Created(Json(tier), location)
            }
            Err(problem) => problem.into(),
        }
    }

    /// List tiers
    ///
    /// The active public tiers, cheapest first, for a pricing page (no token needed). With an
    /// admin token, every tier: hidden and archived ones too.
    #[oai(path = "/", method = "get", operation_id = "listTiers")]
    async fn list(&self, req: &poem::Request) -> ListTiersResponse {
        let result = async {
            let all = is_admin(&self.state, req).await?;
            let filter = if all {
                ""
            } else {
                " WHERE NOT archived AND visibility = 'public'"
            };
            sqlx::query_as(&format!(
                "{SELECT}{filter} ORDER BY archived, monthly_amount, id"
            ))
            .fetch_all(&self.state.pool)
            .await
            .map_err(db_error)
        }
        .await;
        match result {
            Ok(items) => ListTiersResponse::Ok(Json(TierList { items })),
            Err(problem) => problem.into(),
        }
    }

    /// Get a tier
    ///
    /// A listed tier without a token; any tier with an admin token.
    #[oai(path = "/:id", method = "get", operation_id = "getTier")]
    async fn get(&self, req: &poem::Request, id: Path<Uuid>) -> TierResponse {
        let result = async {
            let all = is_admin(&self.state, req).await?;
            find(&self.state, id.0, all).await
        }
        .await;
        match result {
            Ok(tier) => TierResponse::Ok(Json(tier)),
            Err(problem) => problem.into(),
        }
    }

    /// Update a tier
    ///
    /// Changes the given fields; `active: false` archives it (no longer sold; its members
    /// keep it).
    #[oai(path = "/:id", method = "patch", operation_id = "updateTier")]
    async fn update(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        id: Path<Uuid>,
        body: Json<UpdateTierRequest>,
    ) -> TierResponse {
        let body = body.0;
        let result = async {
            let tier = find(&self.state, id.0, true).await?;
            let profile = TierProfile {
                name: match &body.name {
                    Some(name) => required_text("name", name, 191)?,
                    None => tier.name.clone(),
                },
                description: match &body.description {
                    Some(d) => optional_text("description", Some(d), 2000)?,
                    None => tier.description.clone(),
                },
                benefits: match &body.benefits {
                    Some(b) => benefits(b)?,
                    None => tier.benefits.clone(),
                },
                visibility: body.visibility.map_or_else(
                    || {
                        if tier.visibility == "none" {
                            TierVisibility::None
                        } else {
                            TierVisibility::Public
                        }
                    },
                    Into::into,
                ),
            };
            let at = Utc::now();
            self.execute(id.0, TierCommand::UpdateTier { profile, at }, &request_id)
                .await?;
            match body.active {
                Some(false) => {
                    self.execute(id.0, TierCommand::ArchiveTier { at }, &request_id)
                        .await?;
                }
                Some(true) => {
                    self.execute(id.0, TierCommand::UnarchiveTier { at }, &request_id)
                        .await?;
                }
                None => {}
            }
            find(&self.state, id.0, true).await
        }
        .await;
        match result {
            Ok(tier) => TierResponse::Ok(Json(tier)),
            Err(problem) => problem.into(),
        }
    }

    /// Reprice a tier
    ///
    /// New amounts create new Stripe prices of the tier's product (Stripe's prices cannot
    /// change); existing prices of that product can be linked instead. New checkouts use the
    /// new prices; subscribed members keep theirs.
    #[oai(path = "/:id/prices", method = "put", operation_id = "repriceTier")]
    async fn reprice(
        &self,
        _auth: AdminAuth,
        request_id: Data<&RequestId>,
        id: Path<Uuid>,
        body: Json<TierPricesRequest>,
    ) -> TierResponse {
        let result = async {
            let tier = find(&self.state, id.0, true).await?;
            if !tier.active {
                return Err(TierError::Archived.problem());
            }
            let api = stripe_api(&self.state)?;
            let target = Target::Existing {
                product: &tier.stripe_product_id,
                currency: &tier.currency,
            };
            let (_, _, monthly, yearly) =
                prices(&self.state.pool, api, id.0, target, &body.0).await?;
            let command = TierCommand::RepriceTier {
                monthly,
                yearly,
                at: Utc::now(),
            };
            self.execute(id.0, command, &request_id).await?;
            find(&self.state, id.0, true).await
        }
        .await;
        match result {
            Ok(tier) => TierResponse::Ok(Json(tier)),
            Err(problem) => problem.into(),
        }
    }
}

impl TiersApi {
    async fn execute(
        &self,
        id: Uuid,
        command: TierCommand,
        request_id: &RequestId,
    ) -> Result<(), Problem> {
        let metadata = EventMetadata::for_request(&request_id.0, Actor::Admin);
        self.state
            .tiers
            .execute(&id.to_string(), command, metadata)
            .await
            .map_err(command_error)?;
        Ok(())
    }
}

impl Refusal for TierError {
    fn problem(&self) -> Problem {
        match self {
            Self::NotFound => Problem::not_found("no tier has this id"),
            Self::AlreadyExists => Problem::conflict("tier-exists", "the tier already exists"),
            Self::Archived => Problem::conflict(
                "tier-archived",
                "the tier is archived; make it active first",
            ),
        }
    }
}

/// The tiers, active ones first and cheapest first; `all`: hidden and archived ones too.
pub async fn list(pool: &sqlx::PgPool, all: bool) -> Result<Vec<TierView>, sqlx::Error> {
    let filter = if all {
        ""
    } else {
        " WHERE NOT archived AND visibility = 'public'"
    };
    sqlx::query_as(&format!(
        "{SELECT}{filter} ORDER BY archived, monthly_amount, id"
    ))
    .fetch_all(pool)
    .await
}

/// A tier from the read model; `all`: hidden and archived ones too.
async fn find(state: &State, id: Uuid, all: bool) -> Result<TierView, Problem> {
    let tier: Option<TierView> = sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(&state.pool)
        .await
        .map_err(db_error)?;
    tier.filter(|t| all || (t.active && t.visibility == "public"))
        .ok_or_else(|| Problem::not_found("no tier has this id"))
}

/// Whether the request carries a valid admin token; a token that is not one is a 401.
async fn is_admin(state: &State, req: &poem::Request) -> Result<bool, Problem> {
    let Some(header) = req.headers().get(poem::http::header::AUTHORIZATION) else {
        return Ok(false);
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    match state.admin_tokens.verify(token).await {
        Ok(true) => Ok(true),
        Ok(false) => Err(Problem::new(
            poem::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not an admin token; send none for the public list",
        )),
        Err(err) => Err(db_error(err)),
    }
}

/// The Stripe client; without one, tiers (and offers) cannot be priced: a 409 for the admin,
/// whose server is not set up for it (retrying will not help, unlike a 503).
pub(crate) fn stripe_api(state: &State) -> Result<&StripeApi, Problem> {
    state.stripe_api.as_ref().ok_or_else(|| {
        Problem::conflict(
            "stripe-not-configured",
            "this server has no Stripe account configured (STRIPE_SECRET_KEY); tiers and \
             offers are priced at Stripe",
        )
    })
}

/// Whose prices: a new tier (its product is created with them) or an existing one's.
enum Target<'a> {
    New(&'a TierProfile),
    Existing { product: &'a str, currency: &'a str },
}

/// The tier's (currency, product, monthly, yearly): created at Stripe from amounts, or
/// checked and linked from existing prices.
async fn prices(
    pool: &sqlx::PgPool,
    api: &StripeApi,
    tier_id: Uuid,
    target: Target<'_>,
    request: &TierPricesRequest,
) -> Result<(String, String, TierPrice, TierPrice), Problem> {
    let outcome = "nothing was recorded; retry";
    let existing = match target {
        Target::Existing { product, currency } => Some((product, currency)),
        Target::New(_) => None,
    };
    match request {
        TierPricesRequest {
            monthly_price: Some(monthly),
            yearly_price: Some(yearly),
            stripe_monthly_price_id: None,
            stripe_yearly_price_id: None,
            currency,
        } => {
            let currency = match (currency, existing) {
                (Some(c), Some((_, tier_currency))) if !c.eq_ignore_ascii_case(tier_currency) => {
                    return Err(invalid("currency", "must be the tier's currency"))
                }
                (Some(c), _) => c.to_ascii_lowercase(),
                (None, Some((_, tier_currency))) => tier_currency.to_owned(),
                (None, None) => return Err(invalid("currency", "is required with amounts")),
            };
            let product = match target {
                Target::Existing { product, .. } => product.to_owned(),
                Target::New(profile) => products::create_product(
                    api,
                    tier_id,
                    &profile.name,
                    profile.description.as_deref(),
                )
                .await
                .map_err(|e| stripe_problem(e, outcome))?,
            };
            let mut made = Vec::new();
            for (amount, interval) in [(*monthly, "month"), (*yearly, "year")] {
                let id =
                    products::create_price(api, tier_id, &product, &currency, amount, interval)
                        .await
                        .map_err(|e| stripe_problem(e, outcome))?;
                made.push(TierPrice {
                    amount,
                    stripe_price_id: id,
                });
            }
            let yearly = made.pop().expect("two prices");
            let monthly = made.pop().expect("two prices");
            Ok((currency, product, monthly, yearly))
        }
        TierPricesRequest {
            monthly_price: None,
            yearly_price: None,
            stripe_monthly_price_id: Some(monthly),
            stripe_yearly_price_id: Some(yearly),
            ..
        } => {
            let mut linked = Vec::new();
            for (field, id, interval) in [
                (
                    "stripe_monthly_price_id",
                    monthly,
                    aggregates::BillingInterval::Month,
                ),
                (
                    "stripe_yearly_price_id",
                    yearly,
                    aggregates::BillingInterval::Year,
                ),
            ] {
                let price = api
                    .recurring_price(id)
                    .await
                    .map_err(|e| stripe_problem(e, outcome))?
                    .filter(|p| p.interval == interval && p.interval_count == 1)
                    .ok_or_else(|| {
                        invalid(
                            field,
                            &format!(
                                "must be a recurring price billed every {}",
                                interval.as_str()
                            ),
                        )
                    })?;
                linked.push((field, id.clone(), price));
            }
            for (field, id, _) in &linked {
                let holder: Option<Uuid> =
                    sqlx::query_scalar("SELECT tier_id FROM tier_prices WHERE price_id = $1")
                        .bind(id)
                        .fetch_optional(pool)
                        .await
                        .map_err(db_error)?;
                if holder.is_some_and(|holder| holder != tier_id) {
                    return Err(invalid(field, "is another tier's price"));
                }
            }
            let (_, yearly_id, yearly) = linked.pop().expect("two prices");
            let (_, monthly_id, monthly) = linked.pop().expect("two prices");
            if monthly.product_id != yearly.product_id || monthly.currency != yearly.currency {
                return Err(invalid(
                    "stripe_yearly_price_id",
                    "must be a price of the monthly price's product, in its currency",
                ));
            }
            if let Some((product, currency)) = existing {
                if monthly.product_id != product || monthly.currency != currency {
                    return Err(invalid(
                        "stripe_monthly_price_id",
                        "must be a price of the tier's product, in its currency",
                    ));
                }
            }
            let amount = |p: &crate::stripe::client::RecurringPrice| p.unit_amount;
            Ok((
                monthly.currency.clone(),
                monthly.product_id.clone(),
                TierPrice {
                    amount: amount(&monthly),
                    stripe_price_id: monthly_id,
                },
                TierPrice {
                    amount: amount(&yearly),
                    stripe_price_id: yearly_id,
                },
            ))
        }
        _ => Err(invalid(
            "monthly_price",
            "give monthly_price and yearly_price, or stripe_monthly_price_id and \
             stripe_yearly_price_id",
        )),
    }
}

fn invalid(field: &str, reason: &str) -> Problem {
    Problem::validation(vec![FieldError::new(field, reason)])
}

fn required_text(field: &str, value: &str, max: usize) -> Result<String, Problem> {
    optional_text(field, Some(value), max)?.ok_or_else(|| invalid(field, "must not be blank"))
}

fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, Problem> {
    let Some(value) = value.map(str::trim) else {
        return Ok(None);
    };
    if value.chars().count() > max {
        return Err(invalid(field, &format!("must be at most {max} characters")));
    }
    if value.contains('\0') {
        return Err(invalid(field, "must not contain NUL"));
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

fn benefits(lines: &[String]) -> Result<Vec<String>, Problem> {
    lines
        .iter()
        .map(|b| required_text("benefits", b, 191))
        .collect()
}
