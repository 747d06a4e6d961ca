//! `/v1/events`: the event log in log order, page by page, for exporters.

use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::auth::AdminAuth;
use super::problem::db_error;
use super::problem::{FieldError, Problem};
use super::state::{ApiTags, State};
use crate::api::problem::api_response;
use crate::export::{After, ExportedEvent, LogFilter, LogReader, ResolveError};

pub struct EventsApi {
    pub state: State,
}

/// One event of the log.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Event")]
pub struct EventView {
    /// The event's global position: unique, taken when the event was inserted (so positions
    /// can commit out of order; the log order is `(transaction_id, position)`).
    pub position: i64,
    /// The writing transaction's id (`xid8`).
    pub transaction_id: i64,
    /// When the writing transaction started.
    pub recorded_at: DateTime<Utc>,
    /// `Member`, `Subscription`, `License`, ...
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The event's number within its aggregate, from 1.
    pub sequence: i64,
    /// e.g. `MemberCreated`.
    pub event_type: String,
    pub event_version: String,
    /// The event as stored (see docs/events.md), its personal fields opened: an erased
    /// member's read as the erased placeholder (`erased-<id>@erased.invalid`, or null).
    pub payload: serde_json::Value,
    /// Correlation id, causation id, actor.
    pub metadata: serde_json::Value,
}

impl From<ExportedEvent> for EventView {
    fn from(e: ExportedEvent) -> Self {
        Self {
            position: e.position,
            transaction_id: e.transaction_id,
            recorded_at: e.recorded_at,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            payload: e.payload,
            metadata: e.metadata,
        }
    }
}

/// A page of the event log, in log order.
#[derive(Debug, Clone, Object)]
pub struct EventPage {
    pub items: Vec<EventView>,
    /// Pass as `after` for the events that follow. Present whenever `items` is not empty;
    /// on an empty page it is the `after` given (null when none was): poll with it later.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

api_response! {
    pub enum ListEventsResponse {
        /// A page of events (possibly empty: nothing new yet).
        #[oai(status = 200)]
        Ok(Json<EventPage>),
    }
    problems {
        /// A query parameter is malformed (`errors` names it), e.g. a cursor this API did not
        /// return or the position of no event.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// A query parameter is out of range (`limit` is 1 to 1000).
        422 => Invalid,
    }
}

fn default_limit() -> i64 {
    100
}

#[derive(ApiResponse)]
pub enum EventSchemasResponse {
    /// `{aggregate type: {event type: {"version", "schema"}}}`: a JSON Schema (2020-12) of each
    /// event type's stored payload at its current version (older versions are upcast on read).
    #[oai(status = 200)]
    Ok(Json<serde_json::Value>),
    /// No valid admin token.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// An unexpected error; it is logged under the request id.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// The database is unavailable; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

#[OpenApi(prefix_path = "/v1/events", tag = "ApiTags::Events")]
impl EventsApi {
    /// Event schemas
    ///
    /// The JSON Schema of every event type, with its current version (also committed as
    /// `docs/event-schemas.json` and printed by `memberledger events schema`).
    #[oai(path = "/schema", method = "get", operation_id = "getEventSchemas")]
    async fn schema(&self, _auth: AdminAuth) -> EventSchemasResponse {
        EventSchemasResponse::Ok(Json(aggregates::schema::event_schemas()))
    }

    /// List events
    ///
    /// The event log in the order projections apply it, `(transaction_id, position)`, after
    /// `after`. Only events of finished transactions are listed: an event whose transaction
    /// is still open, and every event after it, waits until it commits. So following
    /// `next_cursor` never skips an event and never returns one twice, even though positions
    /// commit out of order; an exporter keeps polling with the last `next_cursor` it got to
    /// receive events appended later. `memberledger events export` reads the same stream and
    /// prints the same cursors.
    #[oai(path = "/", method = "get", operation_id = "listEvents")]
    async fn list(
        &self,
        _auth: AdminAuth,
        /// `next_cursor` of the previous page (`<transaction_id>.<position>`), or the
        /// `position` of an event to list the events after it. Absent: from the start.
        #[oai(validator(max_length = 64))]
        after: Query<Option<String>>,
        /// Page size, 1 to 1000.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<i64>,
        /// Only events of this aggregate type (`Member`, `Subscription`, `License`, ...).
        #[oai(validator(max_length = 255, pattern = "^[^\\x00]*$"))]
        aggregate_type: Query<Option<String>>,
        /// Only events of these types: repeat the parameter
        /// (`event_type=MemberCreated&event_type=MemberUpdated`) or separate them by commas.
        #[oai(default, validator(max_items = 100))]
        event_type: Query<Vec<String>>,
    ) -> ListEventsResponse {
        let after = match after.0.as_deref().map(str::parse::<After>) {
            None => None,
            Some(Ok(after)) => Some(after),
            Some(Err(err)) => {
                return Problem::bad_request("the cursor is not one this API returned")
                    .with_field("after", err.to_string())
                    .into()
            }
        };
        let cursor = match after {
            None => None,
            Some(after) => match after.resolve(&self.state.pool).await {
                Ok(cursor) => Some(cursor),
                Err(ResolveError::UnknownPosition(position)) => {
                    return Problem::bad_request(format!("no event has position {position}"))
                        .with_field("after", "is the position of no event")
                        .into()
                }
                Err(ResolveError::Database(err)) => return db_error(err).into(),
            },
        };
        // poem-openapi cannot put a pattern on a list parameter; PostgreSQL refuses NUL bytes.
        if event_type.0.iter().any(|t| t.contains('\0')) {
            return Problem::validation(vec![FieldError::new(
                "event_type",
                "must not contain NUL characters",
            )])
            .into();
        }
        let filter = LogFilter {
            aggregate_type: aggregate_type.0,
            event_types: event_type
                .0
                .iter()
                .flat_map(|types| types.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            since: None,
            until: None,
        };
        let mut reader =
            LogReader::new(self.state.pool.clone(), filter, cursor.unwrap_or_default())
                .batch_size(limit.0);
        let items = match reader.next_batch().await {
            Ok(batch) => batch,
            Err(err) => return db_error(err).into(),
        };
        let next_cursor = if items.is_empty() {
            cursor.map(|c| c.to_string())
        } else {
            Some(reader.cursor().to_string())
        };
        ListEventsResponse::Ok(Json(EventPage {
            items: items.into_iter().map(EventView::from).collect(),
            next_cursor,
        }))
    }
}
