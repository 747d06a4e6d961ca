//! The webhook endpoint at Stripe, set up from the command line (`memberledger stripe setup`),
//! as Ghost's webhook manager does: one endpoint for `PUBLIC_URL/webhooks/stripe`, sending
//! exactly the event types the translator handles, its signing secret stored in
//! `stripe_webhook_secrets`. A run that finds the endpoint as it should be changes nothing; one
//! that finds it with other event types updates them; one that finds no endpoint, or one whose
//! secret we do not have, creates one (deleting the latter) and retires the secrets before it,
//! which keep verifying for a day (deliveries in flight).
//!
//! Webhook deliveries are verified with `STRIPE_WEBHOOK_SECRET` and the stored secrets
//! ([`StoredSecrets`], cached for a few seconds and re-read once when a signature matches none).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use stripe_client_core::StripeMethod;

use super::client::{CallError, StripeApi};
use super::translate::Translator;

/// An endpoint as Stripe lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub enabled_events: Vec<String>,
    pub status: String,
}

impl Endpoint {
    fn from_json(value: &serde_json::Value) -> Option<Self> {
        Some(Self {
            id: value["id"].as_str()?.to_owned(),
            url: value["url"].as_str()?.to_owned(),
            enabled_events: value["enabled_events"]
                .as_array()
                .map(|events| {
                    events
                        .iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            status: value["status"].as_str().unwrap_or("enabled").to_owned(),
        })
    }

    /// Whether it sends exactly the handled types and is enabled.
    fn is_current(&self) -> bool {
        let mut events: Vec<&str> = self.enabled_events.iter().map(String::as_str).collect();
        events.sort_unstable();
        let mut handled = Translator::HANDLED.to_vec();
        handled.sort_unstable();
        self.status == "enabled" && events == handled
    }
}

/// What `setup` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupOutcome {
    /// The endpoint was there, as it should be.
    Unchanged { id: String },
    /// Its event types (or its disabled state) were changed.
    Updated { id: String },
    /// A new endpoint, with a new stored secret; `replaced`: the endpoint for the URL we had no
    /// secret of, deleted.
    Created {
        id: String,
        replaced: Option<String>,
    },
}

impl std::fmt::Display for SetupOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unchanged { id } => write!(f, "webhook endpoint {id}: unchanged"),
            Self::Updated { id } => write!(f, "webhook endpoint {id}: event types updated"),
            Self::Created { id, replaced: None } => {
                write!(f, "webhook endpoint {id}: created, its signing secret stored")
            }
            Self::Created {
                id,
                replaced: Some(old),
            } => write!(
                f,
                "webhook endpoint {id}: created, its signing secret stored (replacing {old}, whose secret we did not have)"
            ),
        }
    }
}

/// The form fields of an endpoint sending the handled types.
fn events_form() -> Vec<(&'static str, String)> {
    Translator::HANDLED
        .iter()
        .map(|t| ("enabled_events[]", (*t).to_owned()))
        .collect()
}

async fn list(api: &StripeApi) -> Result<Vec<Endpoint>, CallError> {
    let page = api
        .raw_json(
            "list_webhook_endpoints",
            &format!("list-endpoints-{}", uuid::Uuid::now_v7()),
            StripeMethod::Get,
            "/webhook_endpoints",
            Some("limit=100"),
            None,
        )
        .await?;
    Ok(page["data"]
        .as_array()
        .map(|all| all.iter().filter_map(Endpoint::from_json).collect())
        .unwrap_or_default())
}

/// Registers or updates the endpoint for `url` (see the module's documentation).
pub async fn setup(pool: &PgPool, api: &StripeApi, url: &str) -> anyhow::Result<SetupOutcome> {
    let existing = list(api).await?.into_iter().find(|e| e.url == url);
    if let Some(endpoint) = &existing {
        let ours: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM stripe_webhook_secrets
                            WHERE endpoint_id = $1 AND retired_at IS NULL)",
        )
        .bind(&endpoint.id)
        .fetch_one(pool)
        .await?;
        if ours {
            if endpoint.is_current() {
                return Ok(SetupOutcome::Unchanged {
                    id: endpoint.id.clone(),
                });
            }
            let mut form = events_form();
            form.push(("disabled", "false".to_owned()));
            api.raw_json(
                "update_webhook_endpoint",
                &format!("update-endpoint-{}-{}", endpoint.id, uuid::Uuid::now_v7()),
                StripeMethod::Post,
                &format!("/webhook_endpoints/{}", endpoint.id),
                None,
                Some(&form),
            )
            .await?;
            return Ok(SetupOutcome::Updated {
                id: endpoint.id.clone(),
            });
        }
        // Its secret is not ours to read: Stripe shows it only at creation.
        api.raw_json(
            "delete_webhook_endpoint",
            &format!("delete-endpoint-{}", endpoint.id),
            StripeMethod::Delete,
            &format!("/webhook_endpoints/{}", endpoint.id),
            None,
            None,
        )
        .await?;
    }
    let mut form = events_form();
    form.push(("url", url.to_owned()));
    form.push(("description", "memberledger".to_owned()));
    let created = api
        .raw_json(
            "create_webhook_endpoint",
            &format!("create-endpoint-{}", uuid::Uuid::now_v7()),
            StripeMethod::Post,
            "/webhook_endpoints",
            None,
            Some(&form),
        )
        .await?;
    let (Some(id), Some(secret)) = (created["id"].as_str(), created["secret"].as_str()) else {
        anyhow::bail!("Stripe created a webhook endpoint but did not answer its id and secret");
    };
    let mut tx = crate::db::begin(pool, crate::db::PoolName::Main).await?;
    sqlx::query("UPDATE stripe_webhook_secrets SET retired_at = now() WHERE retired_at IS NULL")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO stripe_webhook_secrets (secret, endpoint_id, url) VALUES ($1, $2, $3)",
    )
    .bind(secret)
    .bind(id)
    .bind(url)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(SetupOutcome::Created {
        id: id.to_owned(),
        replaced: existing.map(|e| e.id),
    })
}

/// How long the stored secrets are used before they are read again.
const CACHE_FOR: Duration = Duration::from_secs(10);

/// The stored signing secrets, as webhook verification uses them.
pub struct StoredSecrets {
    pool: PgPool,
    cache: Mutex<Option<(Instant, Vec<String>)>>,
}

impl StoredSecrets {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Mutex::new(None),
        }
    }

    /// The active secret and those retired less than a day ago; read from the database when
    /// the cache is older than a few seconds or `fresh` is asked.
    pub async fn current(&self, fresh: bool) -> Result<Vec<String>, sqlx::Error> {
        if !fresh {
            if let Ok(cache) = self.cache.lock() {
                if let Some((at, secrets)) = cache.as_ref() {
                    if at.elapsed() < CACHE_FOR {
                        return Ok(secrets.clone());
                    }
                }
            }
        }
        let secrets: Vec<String> = sqlx::query_scalar(
            "SELECT secret FROM stripe_webhook_secrets
             WHERE retired_at IS NULL OR retired_at > now() - interval '1 day'
             ORDER BY retired_at IS NULL DESC, created_at DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((Instant::now(), secrets.clone()));
        }
        Ok(secrets)
    }
}
