//! `/v1/projections`: read models and policies, their lag, blue/green rebuilds, and skipping
//! the event a stuck one cannot apply (`crate::dead_letters`).

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::AdminAuth;
use super::problem::db_error;
use super::problem::Problem;
use super::state::{ApiTags, State};
use crate::api::problem::api_response;
use crate::dead_letters::{self, DeadLetter, SkipError};
use crate::rebuild::{self, RebuildError, RebuildStatus};
use crate::runner;

pub struct ProjectionsApi {
    pub state: State,
}

/// A read model (or policy) and how far it is through the log.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Projection")]
pub struct ProjectionView {
    pub name: String,
    /// The version whose tables are live.
    pub version: i32,
    /// The version of the running code; differs while a rebuild is pending.
    pub code_version: i32,
    /// Global position of the last event applied.
    pub global_position: i64,
    pub events_applied: i64,
    /// Events in the log not applied yet, counted up to 10,000: 10000 means that many or
    /// more.
    pub lag_events: i64,
    /// Age of the oldest event not applied yet, in milliseconds.
    pub lag_ms: i64,
    /// Why it is stuck, if it is.
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// The global position of the event it cannot apply, if it is stuck on one; after
    /// inspecting it, `POST /v1/projections/{name}/skip` moves past it.
    #[oai(nullable)]
    pub stuck_position: Option<i64>,
    /// Since when it has failed on that event.
    #[oai(nullable)]
    pub stuck_since: Option<DateTime<Utc>>,
    /// The latest rebuild, if any.
    #[oai(nullable)]
    pub rebuild: Option<RebuildView>,
}

/// A blue/green rebuild: the log replayed into shadow tables, then swapped in.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Rebuild")]
pub struct RebuildView {
    /// `running`, `done` or `failed`.
    pub state: String,
    pub version: i32,
    pub events_applied: i64,
    /// Events in the log when the rebuild started.
    pub events_total: i64,
    pub events_per_second: f64,
    /// Estimated seconds left, while running.
    #[oai(nullable)]
    pub eta_seconds: Option<f64>,
    pub started_at: DateTime<Utc>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub error: Option<String>,
}

impl From<RebuildStatus> for RebuildView {
    fn from(r: RebuildStatus) -> Self {
        let end = r.finished_at.unwrap_or(r.updated_at);
        #[expect(clippy::cast_precision_loss, reason = "rates for display")]
        let (applied, total) = (r.events_applied as f64, r.events_total as f64);
        let secs = (end - r.started_at).num_milliseconds().max(1) as f64 / 1000.0;
        let rate = applied / secs;
        let eta = (r.state == "running" && rate > 0.0).then(|| ((total - applied).max(0.0)) / rate);
        Self {
            state: r.state,
            version: r.version,
            events_applied: r.events_applied,
            events_total: r.events_total,
            events_per_second: rate,
            eta_seconds: eta,
            started_at: r.started_at,
            finished_at: r.finished_at,
            error: r.error,
        }
    }
}

#[derive(Debug, Clone, Object)]
pub struct ProjectionList {
    pub items: Vec<ProjectionView>,
}

api_response! {
    pub enum ListProjectionsResponse {
        /// Every projection and policy.
        #[oai(status = 200)]
        Ok(Json<ProjectionList>),
    }
    problems {
        /// No valid admin token.
        401 => Unauthorized,
    }
}

api_response! {
    pub enum RebuildResponse {
        /// The rebuild started; follow it with `GET /v1/projections`.
        #[oai(status = 202)]
        Accepted(Json<ProjectionView>),
    }
    problems {
        /// The name is malformed.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No projection has this name.
        404 => NotFound,
        /// A rebuild of this projection is already running, or it is a policy (not rebuilt).
        409 => Conflict,
        /// The name is longer than 100 characters.
        422 => Invalid,
    }
}

pub(crate) async fn views(state: &State) -> Result<Vec<ProjectionView>, sqlx::Error> {
    let statuses = runner::status(&state.pool, state.projections.list()).await?;
    let rebuilds = rebuild::statuses(&state.pool).await?;
    Ok(statuses
        .into_iter()
        .map(|s| ProjectionView {
            rebuild: rebuilds
                .iter()
                .find(|r| r.name == s.name)
                .cloned()
                .map(RebuildView::from),
            name: s.name,
            version: s.version,
            code_version: s.code_version,
            global_position: s.global_position,
            events_applied: s.events_applied,
            lag_events: s.lag_events,
            lag_ms: s.lag_ms,
            last_error: s.last_error,
            stuck_position: s.stuck_position,
            stuck_since: s.stuck_since,
        })
        .collect())
}

/// Starts a blue/green rebuild of `name` in the background (marked running before it returns,
/// so a status read right after shows it); the API's and the admin console's.
pub(crate) async fn start_rebuild(state: &State, name: &str) -> Result<(), Problem> {
    let Some(projection) = state
        .projections
        .list()
        .iter()
        .find(|p| p.name() == name)
        .cloned()
    else {
        return Err(Problem::not_found("no projection has this name"));
    };
    if !projection.rebuildable() {
        return Err(Problem::conflict(
            "not-rebuildable",
            "policies are not rebuilt: replaying them would issue their commands again",
        ));
    }
    // A running rebuild reports after every batch; one silent for minutes died with its process.
    let running: Result<bool, _> = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projection_rebuilds
                        WHERE name = $1 AND state = 'running' AND updated_at > now() - interval '2 minutes')",
    )
    .bind(name)
    .fetch_one(&state.pool)
    .await;
    match running {
        Ok(true) => {
            return Err(Problem::conflict(
                "rebuild-running",
                "a rebuild of this projection is already running",
            ))
        }
        Ok(false) => {}
        Err(err) => return Err(db_error(err)),
    }
    // Marked running before answering, so the 202 is followed by a visible rebuild.
    if let Err(err) = sqlx::query(
        "INSERT INTO projection_rebuilds (name, state, version) VALUES ($1, 'running', $2)
         ON CONFLICT (name) DO UPDATE SET state = 'running', version = EXCLUDED.version, events_applied = 0,
             started_at = now(), updated_at = now(), finished_at = NULL, error = NULL",
    )
    .bind(name)
    .bind(projection.version())
    .execute(&state.pool)
    .await
    {
        return Err(db_error(err));
    }
    // Not on the API's pool: its statement timeout would cut index builds and lock waits.
    let pool = crate::bounds::unbounded_pool(&state.pool, 8);
    tokio::spawn(async move {
        let result = rebuild::rebuild(&pool, projection.clone(), |_| {}).await;
        pool.close().await;
        match result {
            Ok(_) => {}
            Err(RebuildError::AlreadyRunning(name)) => {
                tracing::info!(projection = %name, "a rebuild is already running")
            }
            Err(err) => tracing::error!(
                projection = projection.name(),
                error = format!("{err:#}"),
                "rebuild failed"
            ),
        }
    });
    Ok(())
}

/// Which event to skip.
#[derive(Debug, Clone, Object)]
pub struct SkipRequest {
    /// The global position of the event the projection is stuck on (`stuck_position`).
    #[oai(validator(minimum(value = "1")))]
    pub position: i64,
}

/// An event skipped for a projection: recorded with the error it failed with. The event
/// itself stays in the log.
#[derive(Debug, Clone, Object)]
#[oai(rename = "DeadLetter")]
pub struct DeadLetterView {
    pub projection: String,
    pub global_position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    /// The error the projection failed with.
    pub error: String,
    /// `cli` or `api`.
    pub skipped_by: String,
    pub skipped_at: DateTime<Utc>,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(l: DeadLetter) -> Self {
        Self {
            projection: l.projection,
            global_position: l.global_position,
            aggregate_type: l.aggregate_type,
            aggregate_id: l.aggregate_id,
            event_type: l.event_type,
            error: l.error,
            skipped_by: l.skipped_by,
            skipped_at: l.skipped_at,
        }
    }
}

api_response! {
    pub enum SkipResponse {
        /// Skipped: recorded in the dead letters; the projection goes on from the next event.
        #[oai(status = 200)]
        Skipped(Json<DeadLetterView>),
    }
    problems {
        /// The body or name is malformed.
        400 => BadRequest,
        /// No valid admin token.
        401 => Unauthorized,
        /// No projection has this name.
        404 => NotFound,
        /// The projection is not stuck at this position (or is inline, never stuck).
        409 => Conflict,
        /// The body is not `application/json`.
        415 => UnsupportedMediaType,
        /// The position is not positive, or the name is longer than 100 characters.
        422 => Invalid,
    }
}

#[OpenApi(prefix_path = "/v1/projections", tag = "ApiTags::Operations")]
impl ProjectionsApi {
    /// List projections
    ///
    /// Each read model and policy: version, position, lag, last error, latest rebuild.
    #[oai(path = "/", method = "get", operation_id = "listProjections")]
    async fn list(&self, _auth: AdminAuth) -> ListProjectionsResponse {
        match views(&self.state).await {
            Ok(items) => ListProjectionsResponse::Ok(Json(ProjectionList { items })),
            Err(err) => db_error(err).into(),
        }
    }

    /// Rebuild a projection
    ///
    /// Replays the whole log into shadow tables while the live ones keep serving, then swaps
    /// them in atomically. Runs in the background.
    #[oai(
        path = "/:name/rebuild",
        method = "post",
        operation_id = "rebuildProjection"
    )]
    async fn rebuild(
        &self,
        _auth: AdminAuth,
        #[oai(validator(max_length = 100))] name: Path<String>,
    ) -> RebuildResponse {
        if let Err(problem) = start_rebuild(&self.state, &name.0).await {
            return problem.into();
        }
        match views(&self.state).await {
            Ok(items) => match items.into_iter().find(|p| p.name == name.0) {
                Some(view) => RebuildResponse::Accepted(Json(view)),
                None => Problem::internal().into(),
            },
            Err(err) => db_error(err).into(),
        }
    }

    /// Skip the event a projection is stuck on
    ///
    /// After inspecting it (`stuck_position`, `last_error`): records the event in the dead
    /// letters with its error, and the projection (or policy) goes on from the next event.
    /// The event stays in the log; a fixed projection can be rebuilt with it.
    #[oai(
        path = "/:name/skip",
        method = "post",
        operation_id = "skipProjectionEvent"
    )]
    async fn skip(
        &self,
        _auth: AdminAuth,
        #[oai(validator(max_length = 100))] name: Path<String>,
        body: Json<SkipRequest>,
    ) -> SkipResponse {
        let Some(projection) = self
            .state
            .projections
            .list()
            .iter()
            .find(|p| p.name() == name.0)
            .cloned()
        else {
            return Problem::not_found("no projection has this name").into();
        };
        match dead_letters::skip(
            &self.state.pool,
            projection.as_ref(),
            body.0.position,
            "api",
        )
        .await
        {
            Ok(letter) => SkipResponse::Skipped(Json(letter.into())),
            Err(SkipError::Database(err)) => db_error(err).into(),
            Err(err @ SkipError::Inline(_)) => {
                Problem::conflict("inline-projection", err.to_string()).into()
            }
            Err(err @ SkipError::NotStuckThere { .. }) => {
                Problem::conflict("not-stuck-there", err.to_string())
                    .with_field("position", "is not the event the projection is stuck on")
                    .into()
            }
        }
    }
}
