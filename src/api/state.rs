//! What every handler shares: the application state, the request id, the spec's tags.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aggregates::attribution::RoutePatterns;
use aggregates::{License, Member, Newsletter, Offer, Subscription, Tier};
use poem_openapi::Tags;
use sqlx::PgPool;

use super::auth::AdminTokens;
use crate::auth::SignIn;
use crate::config::{LicenseSettings, Settings, StripeSettings};
use crate::edge::EdgeSettings;
use crate::eventlog::LogPosition;
use crate::eventlog::{Wakeups, EVENTS_APPENDED, STRIPE_EVENT_RECEIVED};
use crate::policies;
use crate::rate_limit::PerInstance;
use crate::runner::Projections;
use crate::store::{Appender, CommandBus};
use crate::stripe::client::StripeApi;

/// How many members, and how many subscriptions, a server keeps in memory between commands
/// (a few kB each, for a minute at most): those of a burst of Stripe events.
const AGGREGATES_CACHED: std::num::NonZeroUsize = std::num::NonZeroUsize::new(10_000).unwrap();

/// What every handler shares.
pub struct AppState {
    pub pool: PgPool,
    pub members: Arc<CommandBus<Member>>,
    pub subscriptions: Arc<CommandBus<Subscription>>,
    pub licenses: Arc<CommandBus<License>>,
    pub projections: Projections,
    pub admin_tokens: AdminTokens,
    pub read_your_writes_timeout: Duration,
    pub stripe: StripeSettings,
    pub newsletters: Arc<CommandBus<Newsletter>>,
    pub tiers: Arc<CommandBus<Tier>>,
    pub offers: Arc<CommandBus<Offer>>,
    pub sign_in: SignIn,
    pub attribution_routes: RoutePatterns,
    /// The member site's host, so its own pages are not counted as referrers.
    pub site_host: Option<String>,
    pub license_settings: LicenseSettings,
    /// How outbound webhooks are delivered.
    pub webhooks: crate::config::WebhookSettings,
    /// The per-IP limit of license validations, in this instance's memory (a validation
    /// writes nothing).
    pub validation_limit: PerInstance<IpAddr>,
    /// The Stripe API client, when `STRIPE_SECRET_KEY` is set.
    pub stripe_api: Option<StripeApi>,
    pub checkout_allowed_origins: Vec<String>,
    /// `PUBLIC_URL` without a trailing slash: links to the portal, and whether cookies are
    /// `Secure`.
    pub public_url: String,
    /// Trusted proxies, CORS origins, checkout limits, timeouts.
    pub edge: EdgeSettings,
    /// The webhook signing secrets `memberledger stripe setup` stored (besides
    /// `STRIPE_WEBHOOK_SECRET`).
    pub stored_webhook_secrets: crate::stripe::endpoint::StoredSecrets,
    /// Announces stored Stripe events to the inbox (this instance's at once, others' by
    /// `NOTIFY`, coalesced).
    pub stripe_received: Arc<Wakeups>,
    /// Stores verified webhook deliveries, several to a statement under load.
    pub stripe_intake: crate::stripe::inbox::Intake,
    /// SHA-256 of `METRICS_TOKEN`, when `/metrics` requires it.
    pub metrics_token: Option<[u8; 32]>,
    /// The background work's pool, once `Application::build` made it (for its metrics).
    pub background_pool: std::sync::OnceLock<PgPool>,
    /// How erasure treats what Stripe holds.
    pub erasure: crate::erasure::ErasureSettings,
}

impl AppState {
    /// Erases a member (`crate::erasure::erase`) with this server's Stripe client and settings.
    pub async fn erase_member(
        &self,
        member_id: uuid::Uuid,
        metadata: crate::store::EventMetadata,
    ) -> Result<(), crate::erasure::EraseError> {
        crate::erasure::erase(
            &self.pool,
            &self.members,
            self.stripe_api.as_ref(),
            self.erasure,
            member_id,
            metadata,
        )
        .await
    }

    pub fn new(pool: PgPool, settings: &Settings) -> State {
        let mut list: Vec<Arc<dyn projections::Projection>> =
            projections::all().into_iter().map(Arc::from).collect();
        let inline: Arc<[Arc<dyn projections::Projection>]> = list
            .iter()
            .filter(|p| p.mode() == projections::Mode::Inline)
            .cloned()
            .collect();
        let wakeups = Wakeups::new(pool.clone(), EVENTS_APPENDED);
        // One appender for every bus: concurrent commands of any aggregate share transactions.
        let appender = Appender::new(pool.clone(), inline);
        // Members and subscriptions stay in memory between commands: a Stripe event's or a
        // policy's command then reads no events (`store::cache`).
        let members = CommandBus::new_cached(
            pool.clone(),
            appender.clone(),
            wakeups.clone(),
            (),
            AGGREGATES_CACHED,
        );
        let subscriptions = CommandBus::new_cached(
            pool.clone(),
            appender.clone(),
            wakeups.clone(),
            (),
            AGGREGATES_CACHED,
        );
        let licenses = CommandBus::new(pool.clone(), appender.clone(), wakeups.clone(), ());
        let newsletters = CommandBus::new(pool.clone(), appender.clone(), wakeups.clone(), ());
        let tiers = CommandBus::new(pool.clone(), appender.clone(), wakeups.clone(), ());
        let offers = CommandBus::new(pool.clone(), appender, wakeups.clone(), ());
        list.extend(policies::all(
            &pool,
            members.clone(),
            licenses.clone(),
            crate::member_mail::MemberMailSettings {
                public_url: settings.public_url.clone(),
                site_name: crate::member_mail::MemberMailSettings::site_name_from(
                    &settings.mail.from,
                    &settings.public_url,
                ),
                kinds: settings.member_emails.clone(),
            },
        ));
        let stripe_received = Wakeups::new(pool.clone(), STRIPE_EVENT_RECEIVED);
        Arc::new(Self {
            projections: Projections::new(pool.clone(), list, wakeups),
            admin_tokens: AdminTokens::new(pool.clone(), settings.admin_token.as_deref()),
            stripe_intake: crate::stripe::inbox::Intake::new(pool.clone(), stripe_received.clone()),
            stripe_received,
            stored_webhook_secrets: crate::stripe::endpoint::StoredSecrets::new(pool.clone()),
            newsletters,
            tiers,
            offers,
            sign_in: SignIn {
                pool: pool.clone(),
                members: members.clone(),
                settings: settings.auth.clone(),
            },
            members,
            subscriptions,
            licenses,
            read_your_writes_timeout: settings.read_your_writes_timeout,
            stripe: settings.stripe.clone(),
            attribution_routes: settings.attribution_routes.clone(),
            site_host: settings.site_host.clone(),
            license_settings: settings.licenses.clone(),
            webhooks: settings.webhooks.clone(),
            validation_limit: PerInstance::new(settings.licenses.validate_per_ip),
            stripe_api: StripeApi::from_settings(&settings.stripe).unwrap_or_else(|err| {
                tracing::error!(
                    error = format!("{err:#}"),
                    "the Stripe client could not be built"
                );
                None
            }),
            checkout_allowed_origins: {
                // The portal's own purchases come back to it, whatever the list says.
                let mut origins = settings.checkout_allowed_origins.clone();
                if let Ok(portal) = url::Url::parse(&settings.public_url) {
                    origins.push(portal.origin().ascii_serialization());
                }
                origins
            },
            public_url: settings.public_url.clone(),
            edge: settings.edge.clone(),
            metrics_token: settings
                .metrics
                .token
                .as_deref()
                .map(super::metrics::token_hash),
            background_pool: std::sync::OnceLock::new(),
            erasure: settings.erasure,
            pool,
        })
    }
}

impl AppState {
    /// Read-your-writes: after a command, waits (at most `read_your_writes_timeout`) until the
    /// named read models include its events, so the answer and the client's next request see
    /// them. A command that wrote nothing (`None`) does not wait; a read model that does not
    /// catch up in time is logged, and the request answers with what it can read.
    pub async fn read_your_writes(&self, read_models: &[&str], position: Option<LogPosition>) {
        let Some(position) = position else { return };
        match self
            .projections
            .wait_for(read_models, position, self.read_your_writes_timeout)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                ?position,
                ?read_models,
                "read models did not catch up in time"
            ),
            Err(err) => tracing::warn!(error = %err, "could not wait for the read models"),
        }
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
    /// Tiers: what members buy, with their monthly and yearly prices, and offers on them.
    Tiers,
    /// Buying subscriptions through Stripe Checkout.
    Checkout,
    /// License keys: activation on a domain, and validation for the licensed software.
    Licenses,
    /// Our events, delivered to other tools (outbound webhooks).
    Webhooks,
}

/// The id of the request being served: the caller's `X-Request-Id` if sane, else a new UUIDv7.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub const REQUEST_ID_HEADER: &str = "x-request-id";
