//! The HTTP API: poem-openapi operations under `/v1`, the spec at `/openapi.json`, Swagger UI
//! at `/docs`, Prometheus metrics at `/metrics`; every error is `application/problem+json`.
//! The member portal (`/account`) and admin console (`/admin`) are mounted here too; they are
//! `crate::web`'s.

use poem::{Endpoint, EndpointExt, IntoResponse, Response, Route};
use poem_openapi::OpenApiService;

use crate::config::Settings;
use problem::Problem;
use state::{AppState, State};

pub mod auth;
pub mod billing_portal;
pub mod checkout;
pub mod cursor;
pub mod dashboard;
pub mod declared;
pub mod edge;
pub mod events;
pub mod health;
pub mod license_admin;
pub mod license_files;
pub mod license_holds;
pub mod license_policies;
pub mod license_purchases;
pub mod license_validation;
pub mod licenses;
pub mod me;
pub mod member_imports;
pub mod members;
pub mod metrics;
pub mod middleware;
pub mod newsletters;
pub mod offers;
pub mod outbound_webhooks;
pub mod plan_changes;
pub mod problem;
pub mod projections_api;
pub mod purchases;
pub mod retry_after;
pub mod sessions;
pub mod sites;
pub mod slow_headers;
pub mod state;
pub mod stripe_events;
pub mod tiers;
pub mod webhook;

pub const API_TITLE: &str = "memberledger";

type Apis = (
    members::MembersApi,
    member_imports::MemberImportsApi,
    stripe_events::StripeEventsApi,
    health::HealthApi,
    events::EventsApi,
    sessions::SessionsApi,
    me::MeApi,
    newsletters::NewslettersApi,
    (
        tiers::TiersApi,
        offers::OffersApi,
        plan_changes::PlanChangesApi,
    ),
    checkout::CheckoutApi,
    sites::SitesApi,
    license_purchases::LicensePurchasesApi,
    (
        licenses::LicensesApi,
        license_validation::LicenseValidationApi,
        license_files::LicenseFilesApi,
        license_holds::LicenseHoldsApi,
        license_admin::LicenseAdminApi,
        license_policies::LicensePoliciesApi,
        outbound_webhooks::OutboundWebhooksApi,
    ),
    projections_api::ProjectionsApi,
    billing_portal::BillingPortalApi,
);

pub fn openapi_service(state: &State) -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            members::MembersApi {
                state: state.clone(),
            },
            member_imports::MemberImportsApi {
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
            (
                tiers::TiersApi {
                    state: state.clone(),
                },
                offers::OffersApi {
                    state: state.clone(),
                },
                plan_changes::PlanChangesApi {
                    state: state.clone(),
                },
            ),
            checkout::CheckoutApi {
                state: state.clone(),
            },
            sites::SitesApi {
                state: state.clone(),
            },
            license_purchases::LicensePurchasesApi {
                state: state.clone(),
            },
            (
                licenses::LicensesApi {
                    state: state.clone(),
                },
                license_validation::LicenseValidationApi {
                    state: state.clone(),
                },
                license_files::LicenseFilesApi {
                    state: state.clone(),
                },
                license_holds::LicenseHoldsApi {
                    state: state.clone(),
                },
                license_admin::LicenseAdminApi {
                    state: state.clone(),
                },
                license_policies::LicensePoliciesApi {
                    state: state.clone(),
                },
                outbound_webhooks::OutboundWebhooksApi {
                    state: state.clone(),
                },
            ),
            projections_api::ProjectionsApi {
                state: state.clone(),
            },
            billing_portal::BillingPortalApi {
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

pub fn routes(state: &State, web: &crate::web::WebKeys) -> impl Endpoint {
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
        // The pages people use in a browser (src/web/).
        .nest("/assets", crate::web::assets::routes())
        .at("/signin", poem::get(crate::web::old_signin_link))
        .nest(
            "/account",
            crate::web::pages(crate::web::portal::routes(), state, web),
        )
        .nest(
            "/admin",
            crate::web::pages(crate::web::admin::routes(), state, web),
        )
        .at("/metrics", poem::get(metrics::scrape))
        .at("/webhooks/stripe", poem::post(webhook::receive))
        .nest("/", api)
        .around(edge::bounded_request)
        .around(metrics::track)
        .catch_all_error(|err: poem::Error| async move { Problem::from_poem(&err).into_response() })
        // Boxed every few layers: each `around` names the endpoint it wraps in its future's
        // type, so an unboxed stack grows past the compiler's depth limit.
        .boxed()
        .with(edge::BrowserCors::new(&state.edge.cors_allowed_origins))
        .around(retry_after::on_unavailable)
        .around(middleware::with_request_id)
        .map_to_response()
        .boxed()
        .around(edge::client_address)
        .around(edge::harden)
        .around(edge::compress)
        // Outermost, so every layer reads the settings (and the admin API, the unsubscribe
        // links' key).
        .data(state.clone())
        .data(web.clone())
}

/// The spec without a running server: the handlers never run, so the state behind them
/// uses a pool that never connects.
pub fn spec_json_standalone() -> String {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy_with(sqlx::postgres::PgConnectOptions::new());
    spec_json(&AppState::new(pool, &Settings::default()))
}
