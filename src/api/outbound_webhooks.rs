//! Outbound webhooks (admin): register endpoints, see their deliveries, redeliver one, enable
//! an endpoint that was disabled. What is delivered and how is `crate::outbound`'s.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use rand::RngCore;
use uuid::Uuid;

use super::auth::AdminAuth;
use super::problem::{db_error, FieldError, Problem};
use super::state::{ApiTags, State};
use crate::api::problem::api_response;

pub struct OutboundWebhooksApi {
    pub state: State,
}

/// Every event type of the log, as `GET /v1/events/schema` lists them.
static EVENT_TYPES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let schemas = aggregates::schema::event_schemas();
    let mut types: Vec<String> = schemas
        .as_object()
        .into_iter()
        .flat_map(|aggregates| aggregates.values())
        .filter_map(|events| events.as_object())
        .flat_map(|events| events.keys().cloned())
        .collect();
    types.sort();
    types
});

#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct CreateWebhook {
    /// Where deliveries are POSTed (http or https).
    #[oai(validator(min_length = 1, max_length = 2000))]
    pub url: String,
    /// Our event types (`MemberCreated`, `LicenseRevoked`, ... as `GET /v1/events/schema` lists
    /// them), or `["*"]` for every one.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub event_types: Vec<String>,
    #[oai(validator(max_length = 500))]
    pub description: Option<String>,
}

/// A registered endpoint.
#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    #[oai(nullable)]
    pub description: Option<String>,
    /// False once its deliveries kept failing (see `disabled_reason`) until an admin enables it.
    pub enabled: bool,
    #[oai(nullable)]
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i32,
    pub created_at: DateTime<Utc>,
}

/// An endpoint just registered, with its signing secret (shown this once).
#[derive(Debug, Clone, Object)]
pub struct CreatedWebhook {
    #[oai(flatten)]
    pub webhook: Webhook,
    /// Verify each delivery's `Memberledger-Signature: t=<unix>,v1=<hex>` header: the
    /// HMAC-SHA256 with this secret of `<t>.<body>`.
    pub secret: String,
}

/// One delivery of one event to one endpoint.
#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct WebhookDelivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// The event's position in the log.
    pub global_position: i64,
    pub event_type: String,
    /// `pending` (due or retrying), `delivered`, or `failed` (retried for a day).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    /// The endpoint's last HTTP status.
    #[oai(nullable)]
    pub last_status: Option<i32>,
    /// Why the last attempt failed.
    #[oai(nullable)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub delivered_at: Option<DateTime<Utc>>,
    /// What was (or will be) POSTed.
    pub payload: serde_json::Value,
}

api_response! {
    pub enum CreateWebhookResponse {
        #[oai(status = 201)]
        Created(Json<CreatedWebhook>),
    }
    problems {
        400 => BadRequest,
        401 => Unauthorized,
        415 => UnsupportedMediaType,
        /// `url` is not an http(s) URL, or an event type is not one of ours.
        422 => Invalid,
    }
}

api_response! {
    pub enum ListWebhooksResponse {
        #[oai(status = 200)]
        Ok(Json<Vec<Webhook>>),
    }
    problems {
        401 => Unauthorized,
    }
}

api_response! {
    pub enum WebhookResponse {
        #[oai(status = 200)]
        Ok(Json<Webhook>),
    }
    problems {
        400 => BadRequest,
        401 => Unauthorized,
        /// No endpoint has this id.
        404 => NotFound,
    }
}

api_response! {
    pub enum DeleteWebhookResponse {
        /// Gone, with its deliveries.
        #[oai(status = 204)]
        Deleted,
    }
    problems {
        400 => BadRequest,
        401 => Unauthorized,
        404 => NotFound,
    }
}

api_response! {
    pub enum DeliveriesResponse {
        /// Its newest deliveries first, at most 100.
        #[oai(status = 200)]
        Ok(Json<Vec<WebhookDelivery>>),
    }
    problems {
        400 => BadRequest,
        401 => Unauthorized,
        404 => NotFound,
        /// `status` is not `pending`, `delivered` or `failed`.
        422 => Invalid,
    }
}

api_response! {
    pub enum RedeliverResponse {
        /// Due again now (also a delivered or failed one); its attempts count on.
        #[oai(status = 202)]
        Accepted(Json<WebhookDelivery>),
    }
    problems {
        400 => BadRequest,
        401 => Unauthorized,
        /// No delivery has this id.
        404 => NotFound,
    }
}

const WEBHOOK_COLUMNS: &str = "id, url, event_types, description, enabled, disabled_reason, \
     consecutive_failures, created_at";
const DELIVERY_COLUMNS: &str = "id, endpoint_id, global_position, event_type, status, attempts, \
     next_attempt_at, last_status, last_error, created_at, delivered_at, payload";

#[OpenApi(tag = "ApiTags::Webhooks")]
impl OutboundWebhooksApi {
    /// Register a webhook endpoint
    ///
    /// Each event of the chosen types appended from now on is POSTed to `url` as JSON (`id`,
    /// `position`, `type`, `version`, `aggregate_type`, `aggregate_id`, `sequence`,
    /// `created_at`, `data`), signed in the `Memberledger-Signature` header. A 2xx answer is a
    /// delivery; others are retried with exponential backoff for a day.
    #[oai(path = "/v1/webhooks", method = "post", operation_id = "createWebhook")]
    async fn create(&self, _auth: AdminAuth, body: Json<CreateWebhook>) -> CreateWebhookResponse {
        match register(&self.state.pool, body.0).await {
            Ok(created) => CreateWebhookResponse::Created(Json(created)),
            Err(problem) => problem.into(),
        }
    }

    /// List webhook endpoints
    #[oai(path = "/v1/webhooks", method = "get", operation_id = "listWebhooks")]
    async fn list(&self, _auth: AdminAuth) -> ListWebhooksResponse {
        match list_all(&self.state.pool).await {
            Ok(all) => ListWebhooksResponse::Ok(Json(all)),
            Err(problem) => problem.into(),
        }
    }

    /// Delete a webhook endpoint
    #[oai(
        path = "/v1/webhooks/:id",
        method = "delete",
        operation_id = "deleteWebhook"
    )]
    async fn delete(&self, _auth: AdminAuth, id: Path<Uuid>) -> DeleteWebhookResponse {
        match sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id.0)
            .execute(&self.state.pool)
            .await
        {
            Ok(done) if done.rows_affected() == 1 => DeleteWebhookResponse::Deleted,
            Ok(_) => Problem::not_found("no webhook endpoint has this id").into(),
            Err(err) => db_error(err).into(),
        }
    }

    /// Enable a webhook endpoint
    ///
    /// After it was disabled because its deliveries kept failing: its pending deliveries are
    /// due again now.
    #[oai(
        path = "/v1/webhooks/:id/enable",
        method = "post",
        operation_id = "enableWebhook"
    )]
    async fn enable(&self, _auth: AdminAuth, id: Path<Uuid>) -> WebhookResponse {
        match enable(&self.state.pool, id.0).await {
            Ok(webhook) => WebhookResponse::Ok(Json(webhook)),
            Err(problem) => problem.into(),
        }
    }

    /// List an endpoint's deliveries
    #[oai(
        path = "/v1/webhooks/:id/deliveries",
        method = "get",
        operation_id = "listWebhookDeliveries"
    )]
    async fn deliveries(
        &self,
        _auth: AdminAuth,
        id: Path<Uuid>,
        /// Only those in this status.
        status: Query<Option<String>>,
    ) -> DeliveriesResponse {
        match deliveries(&self.state.pool, id.0, status.0.as_deref()).await {
            Ok(found) => DeliveriesResponse::Ok(Json(found)),
            Err(problem) => problem.into(),
        }
    }

    /// Redeliver
    ///
    /// Makes a delivery due now, whatever its status: a delivered one is sent again.
    #[oai(
        path = "/v1/webhook-deliveries/:id/redeliver",
        method = "post",
        operation_id = "redeliverWebhook"
    )]
    async fn redeliver(&self, _auth: AdminAuth, id: Path<Uuid>) -> RedeliverResponse {
        match redeliver(&self.state.pool, id.0).await {
            Ok(delivery) => RedeliverResponse::Accepted(Json(delivery)),
            Err(problem) => problem.into(),
        }
    }
}

/// Every endpoint, oldest first.
pub(crate) async fn list_all(pool: &sqlx::PgPool) -> Result<Vec<Webhook>, Problem> {
    sqlx::query_as(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints ORDER BY created_at"
    ))
    .fetch_all(pool)
    .await
    .map_err(db_error)
}

/// Enables endpoint `id` again; its pending deliveries are due now.
pub(crate) async fn enable(pool: &sqlx::PgPool, id: Uuid) -> Result<Webhook, Problem> {
    let enabled: Option<Webhook> = sqlx::query_as(&format!(
        "WITH due AS (UPDATE webhook_deliveries SET next_attempt_at = now()
                      WHERE endpoint_id = $1 AND status = 'pending')
         UPDATE webhook_endpoints SET enabled = true, disabled_reason = NULL,
             consecutive_failures = 0
         WHERE id = $1 RETURNING {WEBHOOK_COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    enabled.ok_or_else(|| Problem::not_found("no webhook endpoint has this id"))
}

/// The newest 100 deliveries of endpoint `id`, of `status` when given.
pub(crate) async fn deliveries(
    pool: &sqlx::PgPool,
    id: Uuid,
    status: Option<&str>,
) -> Result<Vec<WebhookDelivery>, Problem> {
    if status.is_some_and(|s| !matches!(s, "pending" | "delivered" | "failed")) {
        return Err(Problem::validation(vec![FieldError::new(
            "status",
            "pending, delivered or failed",
        )]));
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $1)")
            .bind(id)
            .fetch_one(pool)
            .await
            .map_err(db_error)?;
    if !exists {
        return Err(Problem::not_found("no webhook endpoint has this id"));
    }
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
         WHERE endpoint_id = $1 AND ($2::text IS NULL OR status = $2)
         ORDER BY global_position DESC LIMIT 100"
    ))
    .bind(id)
    .bind(status)
    .fetch_all(pool)
    .await
    .map_err(db_error)
}

/// Makes delivery `id` due now, whatever its status.
pub(crate) async fn redeliver(pool: &sqlx::PgPool, id: Uuid) -> Result<WebhookDelivery, Problem> {
    let due: Option<WebhookDelivery> = sqlx::query_as(&format!(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now()
         WHERE id = $1 RETURNING {DELIVERY_COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    let due = due.ok_or_else(|| Problem::not_found("no webhook delivery has this id"))?;
    // Wakes a deliverer now rather than at its next poll; harmless when it fails.
    let _ = sqlx::query("SELECT pg_notify('webhook_delivery', '')")
        .execute(pool)
        .await;
    Ok(due)
}

/// Registers an endpoint (the API's and the console's), or a 422 naming each bad field.
pub(crate) async fn register(
    pool: &sqlx::PgPool,
    body: CreateWebhook,
) -> Result<CreatedWebhook, Problem> {
    let mut errors = Vec::new();
    match url::Url::parse(body.url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => errors.push(FieldError::new("url", "an http or https URL")),
    }
    let mut types = body.event_types.clone();
    types.sort();
    types.dedup();
    if let Some(bad) = types.iter().find(|t| *t != "*" && !EVENT_TYPES.contains(t)) {
        errors.push(FieldError::new(
            "event_types",
            format!("{bad:?} is not an event type of ours (see GET /v1/events/schema), nor *"),
        ));
    }
    if body
        .description
        .as_deref()
        .is_some_and(|d| d.chars().any(char::is_control))
    {
        errors.push(FieldError::new("description", "no control characters"));
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("mlwh_{}", hex::encode(bytes));
    let created: Result<Webhook, sqlx::Error> = sqlx::query_as(&format!(
        "INSERT INTO webhook_endpoints (id, url, event_types, secret, description)
             VALUES ($1, $2, $3, $4, $5) RETURNING {WEBHOOK_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(body.url.trim())
    .bind(&types)
    .bind(&secret)
    .bind(body.description.as_deref().map(str::trim))
    .fetch_one(pool)
    .await;
    let webhook = created.map_err(db_error)?;
    Ok(CreatedWebhook { webhook, secret })
}

impl poem_openapi::types::Example for CreateWebhook {
    fn example() -> Self {
        Self {
            url: "https://tools.example.com/hooks/memberledger".into(),
            event_types: vec!["MemberCreated".into(), "LicenseRevoked".into()],
            description: Some("CRM sync".into()),
        }
    }
}
