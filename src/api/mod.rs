//! The HTTP API: poem-openapi operations under `/v1`, the spec at `/openapi.json`, Swagger UI
//! at `/docs`; every error is `application/problem+json`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::attribution::RoutePatterns;
use aggregates::{License, Member, Newsletter, Subscription};
use poem::http::{HeaderValue, StatusCode};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::{OpenApiService, Tags};
use sqlx::PgPool;
use tracing::Instrument;

use crate::auth::AuthSettings;
use crate::runner::Projections;
use crate::startup::Settings;
use crate::store::CommandBus;
use crate::stripe::StripeSettings;

pub mod auth;
pub mod checkout;
pub mod cursor;
pub mod dashboard;
pub mod events;
pub mod health;
pub mod license_purchases;
pub mod licenses;
pub mod me;
pub mod members;
pub mod newsletters;
pub mod problem;
pub mod projections_api;
pub mod purchases;
pub mod sessions;
pub mod sites;
pub mod stripe_events;

pub use problem::Problem;

/// What every handler shares.
pub struct AppState {
    pub pool: PgPool,
    pub members: Arc<CommandBus<Member>>,
    pub subscriptions: Arc<CommandBus<Subscription>>,
    pub licenses: Arc<CommandBus<License>>,
    pub projections: Projections,
    pub admin_tokens: auth::AdminTokens,
    pub read_your_writes_timeout: Duration,
    pub stripe: StripeSettings,
    pub newsletters: Arc<CommandBus<Newsletter>>,
    pub auth: AuthSettings,
    pub attribution_routes: RoutePatterns,
    /// The member site's host, so its own pages are not counted as referrers.
    pub site_host: Option<String>,
    pub license_settings: licenses::LicenseSettings,
    /// The Stripe API client, when `STRIPE_SECRET_KEY` is set.
    pub stripe_api: Option<crate::stripe::client::StripeApi>,
    pub checkout_allowed_origins: Vec<String>,
}

impl AppState {
    pub fn new(pool: PgPool, settings: &Settings) -> State {
        let members = CommandBus::new(pool.clone(), ());
        let subscriptions = CommandBus::new(pool.clone(), ());
        let licenses = CommandBus::new(pool.clone(), ());
        let mut list: Vec<Arc<dyn projections::Projection>> =
            projections::all().into_iter().map(Arc::from).collect();
        list.extend(crate::policies::all(
            &pool,
            members.clone(),
            licenses.clone(),
        ));
        Arc::new(Self {
            projections: Projections::new(pool.clone(), list),
            admin_tokens: auth::AdminTokens::new(pool.clone(), settings.admin_token.as_deref()),
            newsletters: CommandBus::new(pool.clone(), ()),
            members,
            subscriptions,
            licenses,
            read_your_writes_timeout: settings.read_your_writes_timeout,
            stripe: settings.stripe.clone(),
            auth: settings.auth.clone(),
            attribution_routes: settings.attribution_routes.clone(),
            site_host: settings.site_host.clone(),
            license_settings: settings.licenses.clone(),
            stripe_api: crate::stripe::client::StripeApi::from_settings(&settings.stripe)
                .unwrap_or_else(|err| {
                    tracing::error!(
                        error = format!("{err:#}"),
                        "the Stripe client could not be built"
                    );
                    None
                }),
            checkout_allowed_origins: settings.checkout_allowed_origins.clone(),
            pool,
        })
    }
}

pub type State = Arc<AppState>;

#[derive(Tags)]
pub enum ApiTags {
    /// Members, as the admin manages them.
    Members,
    /// Health and readiness of the service.
    Operations,
    /// The Stripe webhook inbox.
    Stripe,
    /// The event log, in order, for exporters.
    Events,
    /// Passwordless sign-in for members.
    Auth,
    /// The signed-in member's own data.
    Me,
    /// Newsletters members subscribe to.
    Newsletters,
    /// Buying subscriptions through Stripe Checkout.
    Checkout,
    /// License keys: activation on a domain, and validation for the licensed software.
    Licenses,
}

/// The id of the request being served: the caller's `X-Request-Id` if sane, else a new UUIDv7.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Implements `From<Problem>` for an operation's response enum: each status goes to its
/// variant; 503 to `Unavailable`, anything else to `Internal` (logged).
macro_rules! problem_responses {
    ($response:ident { $($status:literal => $variant:ident),* $(,)? }) => {
        impl From<$crate::api::Problem> for $response {
            fn from(problem: $crate::api::Problem) -> Self {
                match problem.status {
                    $($status => Self::$variant(poem_openapi::payload::Json(problem)),)*
                    503 => Self::Unavailable(poem_openapi::payload::Json(problem)),
                    _ => {
                        if problem.status != 500 {
                            tracing::error!(status = problem.status, "undocumented status mapped to 500");
                        }
                        Self::Internal(poem_openapi::payload::Json($crate::api::Problem::internal()))
                    }
                }
            }
        }
    };
}
pub(crate) use problem_responses;

pub const API_TITLE: &str = "memberledger";

type Apis = (
    members::MembersApi,
    stripe_events::StripeEventsApi,
    health::HealthApi,
    events::EventsApi,
    sessions::SessionsApi,
    me::MeApi,
    newsletters::NewslettersApi,
    checkout::CheckoutApi,
    sites::SitesApi,
    license_purchases::LicensePurchasesApi,
    licenses::LicensesApi,
    projections_api::ProjectionsApi,
);

pub fn openapi_service(state: &State) -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            members::MembersApi {
                state: state.clone(),
            },
            stripe_events::StripeEventsApi {
                state: state.clone(),
            },
            health::HealthApi {
                state: state.clone(),
            },
            events::EventsApi {
                state: state.clone(),
            },
            sessions::SessionsApi {
                state: state.clone(),
            },
            me::MeApi {
                state: state.clone(),
            },
            newsletters::NewslettersApi {
                state: state.clone(),
            },
            checkout::CheckoutApi {
                state: state.clone(),
            },
            sites::SitesApi {
                state: state.clone(),
            },
            license_purchases::LicensePurchasesApi {
                state: state.clone(),
            },
            licenses::LicensesApi {
                state: state.clone(),
            },
            projections_api::ProjectionsApi {
                state: state.clone(),
            },
        ),
        API_TITLE,
        env!("CARGO_PKG_VERSION"),
    )
    .description("Paid memberships and software licenses, event-sourced.")
}

/// The spec as `memberledger openapi` prints it and `/openapi.json` serves it.
pub fn spec_json(state: &State) -> String {
    openapi_service(state).spec()
}

/// Largest request body the API accepts.
const MAX_BODY: usize = 1024 * 1024;

pub fn routes(state: &State) -> impl Endpoint {
    let api = openapi_service(state);
    let spec = api.spec();
    let docs = api.swagger_ui();
    Route::new()
        .at(
            "/openapi.json",
            poem::endpoint::make_sync(move |_| {
                Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            }),
        )
        .nest("/docs", docs)
        .at(
            "/webhooks/stripe",
            poem::post(crate::stripe::webhook::receive),
        )
        .nest("/", api)
        .around(limit_body)
        .catch_all_error(|err: poem::Error| async move { Problem::from_poem(&err).into_response() })
        .data(state.clone())
        .around(with_request_id)
}

/// Refuses bodies over [`MAX_BODY`] with 413, whether or not they declare their length.
async fn limit_body<E: Endpoint>(next: Arc<E>, mut req: Request) -> poem::Result<Response> {
    let too_large = || {
        poem::Error::from_string(
            "the request body is larger than 1 MiB",
            StatusCode::PAYLOAD_TOO_LARGE,
        )
    };
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(len) if len > MAX_BODY => return Err(too_large()),
        Some(_) => {}
        None => {
            // A chunked body: read it up to the limit.
            let body = req
                .take_body()
                .into_bytes_limit(MAX_BODY)
                .await
                .map_err(|_| too_large())?;
            req.set_body(body);
        }
    }
    next.call(req).await.map(IntoResponse::into_response)
}

/// Gives every request an id (echoed in `X-Request-Id`), runs it inside a span carrying that
/// id so every log line of the request names it, and logs its outcome.
async fn with_request_id<E: Endpoint>(next: Arc<E>, mut req: Request) -> poem::Result<Response> {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    req.set_data(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    async move {
        let started = Instant::now();
        let mut resp = next
            .call(req)
            .await
            .map_or_else(|err| err.into_response(), IntoResponse::into_response);
        if let Ok(value) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        let status = resp.status().as_u16();
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        if resp.status().is_server_error() {
            tracing::error!(status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request served");
        }
        Ok(resp)
    }
    .instrument(span)
    .await
}

/// The spec without a running server: the handlers never run, so the state behind them
/// uses a pool that never connects.
pub fn spec_json_standalone() -> String {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy_with(sqlx::postgres::PgConnectOptions::new());
    spec_json(&AppState::new(pool, &Settings::default()))
}
