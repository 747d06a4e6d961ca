//! `/v1/stripe-events`: the Stripe inbox, for operators.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};

use super::auth::AdminAuth;
use super::cursor;
use super::problem::db_error;
use super::problem::Problem;
use super::state::{ApiTags, State};
use crate::api::problem::api_response;
use crate::stripe::inbox::{self, StoredStripeEvent};
use crate::stripe::webhook;

pub struct StripeEventsApi {
    pub state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "StripeEventStatus", rename_all = "snake_case")]
pub enum StripeEventStatus {
    /// Stored, waiting for a worker.
    Pending,
    /// Claimed by a worker.
    Processing,
    Processed,
    /// Stored, but nothing to do (a type we do not handle).
    Ignored,
    /// Failed: an operator should look. Retried automatically with backoff, or now with
    /// `retry`.
    Failed,
    /// Waiting for another event of its customer (e.g. a subscription for the checkout that
    /// names its member); processed right after an event of the customer is, and failed if
    /// none comes within `STRIPE_DEFER_LIMIT_SECS`.
    Deferred,
}

impl StripeEventStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Failed => "failed",
            Self::Deferred => "deferred",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "processing" => Self::Processing,
            "processed" => Self::Processed,
            "ignored" => Self::Ignored,
            "failed" => Self::Failed,
            "deferred" => Self::Deferred,
            _ => Self::Pending,
        }
    }
}

/// A Stripe event in the inbox.
#[derive(Debug, Clone, Object)]
#[oai(rename = "StripeEvent")]
pub struct StripeEventView {
    /// Stripe's event id (`evt_...`).
    pub id: String,
    /// e.g. `customer.subscription.updated`.
    #[oai(rename = "type")]
    pub event_type: String,
    /// When Stripe created the event.
    pub created: DateTime<Utc>,
    #[oai(nullable)]
    pub customer_id: Option<String>,
    /// The id of the event's object (`sub_...`, `in_...`).
    #[oai(nullable)]
    pub object_id: Option<String>,
    /// Whether this server's async-stripe parses the event (it is processed either way).
    pub parsed: bool,
    pub received_at: DateTime<Utc>,
    pub status: StripeEventStatus,
    pub attempts: i32,
    /// When a failed event is tried again; for a deferred one, when it stops waiting.
    pub next_attempt_at: DateTime<Utc>,
    /// Why it failed, what it waits for, or why it was ignored.
    #[oai(nullable)]
    pub last_error: Option<String>,
    #[oai(nullable)]
    pub processed_at: Option<DateTime<Utc>>,
}

impl From<StoredStripeEvent> for StripeEventView {
    fn from(e: StoredStripeEvent) -> Self {
        Self {
            status: StripeEventStatus::parse(&e.status),
            id: e.id,
            event_type: e.event_type,
            created: e.created,
            customer_id: e.customer_id,
            object_id: e.object_id,
            parsed: webhook::typed_parser_accepts(&e.payload),
            received_at: e.received_at,
            attempts: e.attempts,
            next_attempt_at: e.next_attempt_at,
            last_error: e.last_error,
            processed_at: e.processed_at,
        }
    }
}

/// A page of Stripe events, newest received first.
#[derive(Debug, Clone, Object)]
pub struct StripeEventPage {
    pub items: Vec<StripeEventView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

api_response! {
    pub enum ListStripeEventsResponse {
        /// A page of events.
        #[oai(status = 200)]
        Ok(Json<StripeEventPage>),
    }
    problems {
        /// A query parameter is invalid.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// A query parameter is out of range.
        422 => Invalid,
    }
}

api_response! {
    pub enum StripeEventResponse {
        /// The event.
        #[oai(status = 200)]
        Ok(Json<StripeEventView>),
    }
    problems {
        /// The id is malformed.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No stored event has this id.
        404 => NotFound,
        /// The event was processed already, or is being processed.
        409 => Conflict,
        /// The id is longer than 255 characters or contains a NUL character.
        422 => Invalid,
    }
}

fn default_limit() -> i64 {
    50
}

#[OpenApi(prefix_path = "/v1/stripe-events", tag = "ApiTags::Stripe")]
impl StripeEventsApi {
    /// List Stripe events
    ///
    /// The inbox of verified Stripe webhook events, newest received first, optionally by status
    /// (e.g. `failed` to see what needs attention).
    #[oai(path = "/", method = "get", operation_id = "listStripeEvents")]
    async fn list(
        &self,
        _auth: AdminAuth,
        /// Only events with this status.
        status: Query<Option<StripeEventStatus>>,
        /// Page size, 1 to 200.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        limit: Query<i64>,
        /// `next_cursor` of the previous page.
        #[oai(validator(max_length = 300))]
        cursor: Query<Option<String>>,
    ) -> ListStripeEventsResponse {
        let before = match cursor.0.as_deref().map(cursor::decode) {
            None => None,
            Some(Some(position)) => Some(position),
            Some(None) => {
                return Problem::bad_request("the cursor is not one this API returned")
                    .with_field("cursor", "is malformed")
                    .into()
            }
        };
        let limit = limit.0;
        let rows = match inbox::list(
            &self.state.pool,
            status.0.map(StripeEventStatus::as_str),
            before,
            limit + 1,
        )
        .await
        {
            Ok(rows) => rows,
            Err(err) => return db_error(err).into(),
        };
        let mut items: Vec<StripeEventView> = rows.into_iter().map(StripeEventView::from).collect();
        let next_cursor = if items.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
            items.pop();
            items.last().map(|e| cursor::encode(e.received_at, &e.id))
        } else {
            None
        };
        ListStripeEventsResponse::Ok(Json(StripeEventPage { items, next_cursor }))
    }

    /// Get a Stripe event
    #[oai(path = "/:id", method = "get", operation_id = "getStripeEvent")]
    async fn get(
        &self,
        _auth: AdminAuth,
        #[oai(validator(max_length = 255, pattern = "^[^\\x00]*$"))] id: Path<String>,
    ) -> StripeEventResponse {
        match inbox::get(&self.state.pool, &id.0).await {
            Ok(Some(event)) => StripeEventResponse::Ok(Json(event.into())),
            Ok(None) => Problem::not_found("no stored Stripe event has this id").into(),
            Err(err) => db_error(err).into(),
        }
    }

    /// Retry a Stripe event
    ///
    /// Makes a failed, deferred or ignored event due for processing now (a deferred one may
    /// then wait its full time again). A processed event is not processed again (409).
    #[oai(
        path = "/:id/retry",
        method = "post",
        operation_id = "retryStripeEvent"
    )]
    async fn retry(
        &self,
        _auth: AdminAuth,
        #[oai(validator(max_length = 255, pattern = "^[^\\x00]*$"))] id: Path<String>,
    ) -> StripeEventResponse {
        match inbox::retry(&self.state.pool, &id.0).await {
            Ok(inbox::Retry::Queued(event)) => StripeEventResponse::Ok(Json(event.into())),
            Ok(inbox::Retry::NotRetryable(event)) => Problem::conflict(
                "stripe-event-not-retryable",
                format!("the event is {}", event.status),
            )
            .into(),
            Ok(inbox::Retry::NotFound) => {
                Problem::not_found("no stored Stripe event has this id").into()
            }
            Err(err) => db_error(err).into(),
        }
    }
}
