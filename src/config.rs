//! Configuration from the environment (and the matching command-line flags).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

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
    /// Stripe inbox workers in this process.
    #[arg(long, env = "STRIPE_WORKERS", default_value_t = 2)]
    pub stripe_workers: usize,
    /// First retry delay of a failed Stripe event, in milliseconds (doubles per attempt, at most an hour).
    #[arg(long, env = "STRIPE_RETRY_BASE_MS", default_value_t = 1000)]
    pub stripe_retry_base_ms: u64,
    /// How long a claimed Stripe event stays claimed before another worker may take it, in seconds.
    #[arg(long, env = "STRIPE_LEASE_SECS", default_value_t = 60)]
    pub stripe_lease_secs: u64,
}

impl StripeConfig {
    pub fn settings(&self) -> crate::stripe::StripeSettings {
        crate::stripe::StripeSettings {
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
            lease: std::time::Duration::from_secs(self.stripe_lease_secs.max(1)),
            retry_base: std::time::Duration::from_millis(self.stripe_retry_base_ms.max(1)),
            ..crate::stripe::StripeSettings::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
}
