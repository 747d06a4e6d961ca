//! Configuration: what the environment (and the matching command-line flags) says, and the
//! settings the server runs with, built from it. The lowest floor of the server: it imports
//! nothing of the crate but the rate-limit shape, the edge's settings (`edge`) and the
//! timeouts' own settings (`bounds`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aggregates::attribution::RoutePatterns;
use clap::{Args, ValueEnum};

use crate::edge::{EdgeConfig, EdgeSettings};
use crate::erasure::{ActiveSubscriptions, ErasureSettings, StripeCustomers};
use crate::rate_limit::Limit;

/// A secret that does not print.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Where the database is. Without `DATABASE_URL` a local cluster under `DATA_DIR/pg` is used.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL. Unset: start (or reuse) a local cluster under DATA_DIR/pg.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Directory for local state (the local PostgreSQL cluster).
    #[arg(long, env = "DATA_DIR", default_value = "./.memberledger")]
    pub data_dir: PathBuf,
    /// Maximum connections in the pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,
    #[command(flatten)]
    pub bounds: crate::bounds::DatabaseBoundsConfig,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address the HTTP server listens on.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// The URL clients reach this server under (used in links).
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Admin API bearer token. Unset: one is generated on first start, printed once and only
    /// its hash stored.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// How long a write waits for its read models before answering, in milliseconds.
    #[arg(long, env = "READ_YOUR_WRITES_TIMEOUT_MS", default_value_t = 5000)]
    pub read_your_writes_timeout_ms: u64,
    #[command(flatten)]
    pub stripe: StripeConfig,
    /// Origins Checkout may send buyers back to (success/cancel URLs), comma-separated.
    /// Default: the origins of SITE_URL and PUBLIC_URL.
    #[arg(long, env = "CHECKOUT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub checkout_allowed_origins: Vec<String>,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub licenses: LicenseConfig,
    #[command(flatten)]
    pub webhooks: WebhookConfig,
    #[command(flatten)]
    pub edge: EdgeConfig,
    #[command(flatten)]
    pub shutdown: crate::bounds::ShutdownConfig,
    #[command(flatten)]
    pub metrics: crate::metrics::MetricsConfig,
    #[command(flatten)]
    pub erasure: ErasureConfig,
}

impl ServeConfig {
    /// Everything `serve` runs with.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let public_url = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind))
            .trim_end_matches('/')
            .to_owned();
        let site_host = match &self.auth.site_url {
            Some(url) => Some(
                url::Url::parse(url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .ok_or_else(|| anyhow::anyhow!("SITE_URL {url:?} is not an absolute URL"))?,
            ),
            None => None,
        };
        let routes = if self.auth.static_pages.is_empty() {
            RoutePatterns::default()
        } else {
            let pages: Vec<&str> = self.auth.static_pages.iter().map(String::as_str).collect();
            RoutePatterns::new(
                RoutePatterns::DEFAULT_TAG,
                RoutePatterns::DEFAULT_AUTHOR,
                RoutePatterns::DEFAULT_POSTS,
                &pages,
            )
            .map_err(|e| anyhow::anyhow!("SITE_STATIC_PAGES: {e}"))?
        };
        Ok(Settings {
            bind: self.bind,
            public_url: public_url.clone(),
            admin_token: self.admin_token.as_ref().map(|t| t.expose().to_owned()),
            read_your_writes_timeout: Duration::from_millis(self.read_your_writes_timeout_ms),
            stripe: self.stripe.settings(),
            auth: self.auth.settings(&public_url),
            mail: MailSettings {
                smtp_url: self.auth.smtp_url.as_ref().map(|s| s.expose().to_owned()),
                from: self.auth.mail_from.clone(),
            },
            attribution_routes: routes,
            member_emails: member_email_kinds(&self.auth.member_emails)?,
            erasure: ErasureSettings {
                active_subscriptions: self.erasure.erasure_active_subscriptions,
                stripe_customers: self.erasure.erasure_stripe_customer,
            },
            site_host,
            licenses: self.licenses.settings(),
            webhooks: self.webhooks.settings(),
            edge: self.edge.settings(&public_url)?,
            shutdown_grace: self.shutdown.grace(),
            metrics: self.metrics.settings(),
            checkout_allowed_origins: {
                let mut origins: Vec<String> = self.checkout_allowed_origins.clone();
                if origins.is_empty() {
                    origins.extend(self.auth.site_url.iter().cloned());
                    origins.push(public_url.clone());
                }
                origins
                    .iter()
                    .map(|o| {
                        url::Url::parse(o)
                            .map(|u| u.origin().ascii_serialization())
                            .map_err(|_| {
                                anyhow::anyhow!("CHECKOUT_ALLOWED_ORIGINS: {o:?} is not a URL")
                            })
                    })
                    .collect::<anyhow::Result<_>>()?
            },
        })
    }
}

/// How a member's erasure treats what Stripe holds (`crate::erasure`).
#[derive(Debug, Clone, Args)]
pub struct ErasureConfig {
    /// Erasing a member whose subscriptions Stripe has not ended: `refuse` (409 until they
    /// end) or `cancel` them at Stripe first.
    #[arg(long, env = "ERASURE_ACTIVE_SUBSCRIPTIONS", value_enum, default_value_t = ActiveSubscriptions::Refuse)]
    pub erasure_active_subscriptions: ActiveSubscriptions,
    /// The erased member's Stripe customers: `keep` them at Stripe or `delete` them.
    #[arg(long, env = "ERASURE_STRIPE_CUSTOMER", value_enum, default_value_t = StripeCustomers::Keep)]
    pub erasure_stripe_customer: StripeCustomers,
}

#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// SMTP server for sign-in emails: smtp://host:port, smtp://user:pass@host?tls=required, smtps://host.
    /// Unset: emails are written to the log (development).
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<Secret>,
    /// Sender of sign-in emails.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "memberledger <noreply@localhost>"
    )]
    pub mail_from: String,
    /// The emails sent to members, comma-separated: `welcome` (signup), `welcome_paid` (first
    /// payment), `payment_failed`, `cancellation`; `none` for none.
    #[arg(
        long,
        env = "MEMBER_EMAILS",
        value_delimiter = ',',
        default_value = "welcome,welcome_paid,payment_failed,cancellation"
    )]
    pub member_emails: Vec<String>,
    /// The page magic links open (`?token=` is appended). Default: the portal, PUBLIC_URL + /account/signin.
    #[arg(long, env = "MAGIC_LINK_URL")]
    pub magic_link_url: Option<String>,
    /// The member site, for signup attribution (its own pages are not referrers).
    #[arg(long, env = "SITE_URL")]
    pub site_url: Option<String>,
    /// Slugs of the site's static pages (`/about/` → page), comma-separated.
    #[arg(long, env = "SITE_STATIC_PAGES", value_delimiter = ',')]
    pub static_pages: Vec<String>,
    /// Sign-in codes one email may request per hour.
    #[arg(long, env = "AUTH_CODE_LIMIT_PER_EMAIL", default_value_t = 5)]
    pub code_limit_per_email: u32,
    /// Sign-in codes one IP address may request per hour.
    #[arg(long, env = "AUTH_CODE_LIMIT_PER_IP", default_value_t = 50)]
    pub code_limit_per_ip: u32,
    /// Verification attempts per email per hour.
    #[arg(long, env = "AUTH_VERIFY_LIMIT_PER_EMAIL", default_value_t = 20)]
    pub verify_limit_per_email: u32,
    /// Verification attempts per IP address per hour.
    #[arg(long, env = "AUTH_VERIFY_LIMIT_PER_IP", default_value_t = 100)]
    pub verify_limit_per_ip: u32,
}

impl AuthConfig {
    pub fn settings(&self, public_url: &str) -> AuthSettings {
        let hour = Duration::from_secs(3600);
        let limit = |max| Limit { max, window: hour };
        AuthSettings {
            code_per_email: limit(self.code_limit_per_email),
            code_per_ip: limit(self.code_limit_per_ip),
            verify_per_email: limit(self.verify_limit_per_email),
            verify_per_ip: limit(self.verify_limit_per_ip),
            link_base: self
                .magic_link_url
                .clone()
                .unwrap_or_else(|| format!("{public_url}/account/signin")),
            ..AuthSettings::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct LicenseConfig {
    /// License validations (`POST /v1/licenses/validate`) one IP address may make per minute,
    /// counted by each instance in its memory.
    #[arg(long, env = "LICENSE_VALIDATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub license_validate_limit_per_minute: u32,
    /// How often the server frees activations whose heartbeat stopped for longer than their
    /// policy's `heartbeat_minutes`, in seconds.
    #[arg(long, env = "LICENSE_HEARTBEAT_SWEEP_SECS", default_value_t = 60)]
    pub license_heartbeat_sweep_secs: u64,
}

impl LicenseConfig {
    pub fn settings(&self) -> LicenseSettings {
        LicenseSettings {
            validate_per_ip: Limit {
                max: self.license_validate_limit_per_minute,
                window: Duration::from_secs(60),
            },
            heartbeat_sweep_every: Duration::from_secs(self.license_heartbeat_sweep_secs.max(1)),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct StripeConfig {
    /// Webhook signing secrets (`whsec_...`), comma-separated: any one verifies (rotation).
    #[arg(
        long,
        env = "STRIPE_WEBHOOK_SECRET",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub stripe_webhook_secret: Vec<Secret>,
    /// Stripe secret API key, for fetching customers (and later, checkout).
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<Secret>,
    /// Stripe API base URL; set to a fake Stripe in tests.
    #[arg(long, env = "STRIPE_API_BASE")]
    pub stripe_api_base: Option<String>,
    /// Stripe customers whose events this process handles at once (its inbox tasks; only as
    /// many run as customers have due events). 0: only store events.
    #[arg(long, env = "STRIPE_WORKERS", default_value_t = 8)]
    pub stripe_workers: usize,
    /// First retry delay of a failed Stripe event, in milliseconds (doubles per attempt, at most an hour).
    #[arg(long, env = "STRIPE_RETRY_BASE_MS", default_value_t = 1000)]
    pub stripe_retry_base_ms: u64,
    /// How long a claimed Stripe event stays claimed before another worker may take it, in seconds.
    #[arg(long, env = "STRIPE_LEASE_SECS", default_value_t = 60)]
    pub stripe_lease_secs: u64,
    /// How long a Stripe event may wait for another event of its customer (`deferred`) before
    /// it is marked failed, in seconds.
    #[arg(long, env = "STRIPE_DEFER_LIMIT_SECS", default_value_t = 86_400)]
    pub stripe_defer_limit_secs: u64,
    /// How often the server asks Stripe for the events of the last
    /// `STRIPE_RECONCILE_WINDOW_HOURS` and stores those it never received, in seconds; unset:
    /// never (run `memberledger stripe reconcile` instead). Needs `STRIPE_SECRET_KEY`.
    #[arg(long, env = "STRIPE_RECONCILE_EVERY_SECS")]
    pub stripe_reconcile_every_secs: Option<u64>,
    /// How far back the server's periodic reconciliation looks, in hours (Stripe keeps 720).
    #[arg(long, env = "STRIPE_RECONCILE_WINDOW_HOURS", default_value_t = 72)]
    pub stripe_reconcile_window_hours: u64,
}

impl StripeConfig {
    pub fn settings(&self) -> StripeSettings {
        StripeSettings {
            webhook_secrets: self
                .stripe_webhook_secret
                .iter()
                .map(|s| s.expose().trim().to_owned())
                .collect(),
            secret_key: self
                .stripe_secret_key
                .as_ref()
                .map(|s| s.expose().to_owned()),
            api_base: self.stripe_api_base.clone(),
            workers: self.stripe_workers,
            lease: Duration::from_secs(self.stripe_lease_secs.max(1)),
            retry_base: Duration::from_millis(self.stripe_retry_base_ms.max(1)),
            defer_limit: Duration::from_secs(self.stripe_defer_limit_secs),
            reconcile_every: self
                .stripe_reconcile_every_secs
                .map(|s| Duration::from_secs(s.max(1))),
            reconcile_window: Duration::from_secs(
                self.stripe_reconcile_window_hours.clamp(1, 720) * 3600,
            ),
            ..StripeSettings::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct WebhookConfig {
    /// The first retry delay of a failed outbound webhook delivery, in milliseconds (doubles
    /// per attempt, at most an hour; retried for a day).
    #[arg(long, env = "WEBHOOK_RETRY_BASE_MS", default_value_t = 30_000)]
    pub webhook_retry_base_ms: u64,
    /// Failed deliveries in a row after which an outbound webhook endpoint is disabled.
    #[arg(long, env = "WEBHOOK_DISABLE_AFTER", default_value_t = 50)]
    pub webhook_disable_after: u32,
}

impl WebhookConfig {
    pub fn settings(&self) -> WebhookSettings {
        WebhookSettings {
            retry_base: Duration::from_millis(self.webhook_retry_base_ms.max(1)),
            disable_after: i32::try_from(self.webhook_disable_after.max(1)).unwrap_or(i32::MAX),
            ..WebhookSettings::default()
        }
    }
}

/// How outbound webhooks are delivered (`crate::outbound`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The first retry's delay; doubles per attempt, at most an hour.
    pub retry_base: Duration,
    /// Consecutive failed attempts after which an endpoint is disabled.
    pub disable_after: i32,
    /// How long a delivery is retried before it is `failed`.
    pub give_up_after: Duration,
    /// Per attempt.
    pub timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(30),
            disable_after: 50,
            give_up_after: Duration::from_secs(86_400),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
}

/// Everything `serve` runs with.
pub struct Settings {
    pub bind: SocketAddr,
    /// `PUBLIC_URL` without a trailing slash (default `http://` + the bind address).
    pub public_url: String,
    pub admin_token: Option<String>,
    pub read_your_writes_timeout: Duration,
    pub stripe: StripeSettings,
    pub auth: AuthSettings,
    pub mail: MailSettings,
    pub attribution_routes: RoutePatterns,
    /// The member site's host (from `SITE_URL`), so its own pages are not referrers.
    pub site_host: Option<String>,
    pub licenses: LicenseSettings,
    pub webhooks: WebhookSettings,
    pub edge: EdgeSettings,
    /// Origins (`https://example.com`) checkout success and cancel URLs must belong to.
    pub checkout_allowed_origins: Vec<String>,
    /// How long a stop waits for in-flight requests, then for background work (`bounds`).
    pub shutdown_grace: Duration,
    pub metrics: crate::metrics::MetricsSettings,
    /// The emails sent to members (`MEMBER_EMAILS`).
    pub member_emails: Vec<crate::member_mail::Kind>,
    /// `ERASURE_ACTIVE_SUBSCRIPTIONS`, `ERASURE_STRIPE_CUSTOMER`.
    pub erasure: ErasureSettings,
}

/// `MEMBER_EMAILS`: kinds by name, or `none`.
fn member_email_kinds(names: &[String]) -> anyhow::Result<Vec<crate::member_mail::Kind>> {
    let mut kinds = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if name == "none" {
            continue;
        }
        let kind = crate::member_mail::Kind::parse(name).ok_or_else(|| {
            anyhow::anyhow!(
                "MEMBER_EMAILS: {name:?} is not one of welcome, welcome_paid, payment_failed, cancellation, none"
            )
        })?;
        kinds.push(kind);
    }
    Ok(kinds)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".to_owned(),
            admin_token: None,
            read_your_writes_timeout: Duration::from_secs(5),
            stripe: StripeSettings::default(),
            auth: AuthSettings::default(),
            mail: MailSettings::default(),
            attribution_routes: RoutePatterns::default(),
            site_host: None,
            licenses: LicenseSettings::default(),
            webhooks: WebhookSettings::default(),
            edge: EdgeSettings::default(),
            checkout_allowed_origins: Vec::new(),
            shutdown_grace: Duration::from_secs(10),
            metrics: crate::metrics::MetricsSettings::default(),
            member_emails: crate::member_mail::Kind::ALL.to_vec(),
            erasure: ErasureSettings::default(),
        }
    }
}

/// How the Stripe side is set up.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `whsec_...` secrets; any one verifying a signature accepts the event (rotation).
    pub webhook_secrets: Vec<String>,
    /// Secret API key; without it the translator cannot fetch customers.
    pub secret_key: Option<String>,
    /// Stripe API base URL (a fake Stripe in tests).
    pub api_base: Option<String>,
    /// Customers whose events the inbox handles at once in this process (0: only store events).
    pub workers: usize,
    /// How long a claimed event stays claimed before another worker may retry it.
    pub lease: Duration,
    /// First retry delay after a failure; doubles per attempt up to `max_retry_delay`.
    pub retry_base: Duration,
    pub max_retry_delay: Duration,
    /// How long an event may wait for another event of its customer (`deferred`) before it is
    /// marked failed.
    pub defer_limit: Duration,
    /// How often to store the events Stripe never delivered (`stripe::reconcile`); `None`: never.
    pub reconcile_every: Option<Duration>,
    /// How far back each periodic reconciliation looks.
    pub reconcile_window: Duration,
}

impl Default for StripeSettings {
    fn default() -> Self {
        Self {
            webhook_secrets: Vec::new(),
            secret_key: None,
            api_base: None,
            workers: 8,
            lease: Duration::from_secs(60),
            retry_base: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(3600),
            defer_limit: Duration::from_secs(86_400),
            reconcile_every: None,
            reconcile_window: Duration::from_secs(72 * 3600),
        }
    }
}

/// Sign-in: code and session lifetimes, rate limits, and where magic links point.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub code_ttl: Duration,
    pub session_ttl: Duration,
    /// Wrong codes before a code is burned.
    pub max_code_attempts: i32,
    pub code_per_email: Limit,
    pub code_per_ip: Limit,
    pub verify_per_email: Limit,
    pub verify_per_ip: Limit,
    /// The page the magic link opens, e.g. `https://example.com/account/signin`; `?token=` is appended.
    pub link_base: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        let hour = Duration::from_secs(3600);
        let per_hour = |max| Limit { max, window: hour };
        Self {
            code_ttl: Duration::from_secs(600),
            session_ttl: Duration::from_secs(30 * 86_400),
            max_code_attempts: 5,
            code_per_email: per_hour(5),
            code_per_ip: per_hour(50),
            verify_per_email: per_hour(20),
            verify_per_ip: per_hour(100),
            link_base: "http://127.0.0.1:8080/account/signin".to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `smtp://host:port` (plain), `smtp://host?tls=required` (STARTTLS) or `smtps://host`.
    pub smtp_url: Option<String>,
    pub from: String,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "memberledger <noreply@localhost>".to_owned(),
        }
    }
}

/// Limits of the license endpoints.
#[derive(Debug, Clone)]
pub struct LicenseSettings {
    /// Validations one IP address may make per window, in each instance's memory: a burst of
    /// `max`, then one more every `window / max` (`rate_limit::PerInstance`).
    pub validate_per_ip: Limit,
    /// How often activations whose heartbeat stopped are freed (`license_machines::sweep`).
    pub heartbeat_sweep_every: Duration,
}

impl Default for LicenseSettings {
    fn default() -> Self {
        Self {
            validate_per_ip: Limit {
                max: 600,
                window: Duration::from_secs(60),
            },
            heartbeat_sweep_every: Duration::from_secs(60),
        }
    }
}
