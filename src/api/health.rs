//! `/healthz` (the process is up) and `/readyz` (it can serve: database, migrations, read models).

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::state::{ApiTags, State};
use crate::db::MIGRATOR;
use crate::runner;

pub struct HealthApi {
    pub state: State,
}

#[derive(Debug, Clone, Object)]
pub struct Health {
    /// `ok`
    pub status: String,
}

/// A projection's progress through the log.
#[derive(Debug, Clone, Object)]
pub struct ProjectionLag {
    pub name: String,
    /// Events in the log it has not applied yet, counted up to 10,000: 10000 means that many
    /// or more.
    pub lag_events: i64,
    /// Age of the oldest event it has not applied, in milliseconds.
    pub lag_ms: i64,
    /// Why it is stuck, if it is.
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// The global position of the event it cannot apply, if it is stuck on one.
    #[oai(nullable)]
    pub stuck_position: Option<i64>,
}

/// A dependency that fails, and how.
#[derive(Debug, Clone, Object)]
pub struct FailingDependency {
    /// `database`, `migrations`, or `projection:<name>` (a projection or policy that is stuck).
    pub dependency: String,
    /// What fails: the database error, the migrations missing, the stuck event and its error.
    pub detail: String,
}

#[derive(Debug, Clone, Object)]
pub struct Readiness {
    /// `ready`; `degraded` (serving, but a projection or policy is stuck: see `failing`); or
    /// `not_ready` (the database is unreachable or not migrated).
    pub status: String,
    pub database: bool,
    pub migrations_applied: bool,
    /// Every dependency that fails, by name; empty when all is well.
    pub failing: Vec<FailingDependency>,
    pub projections: Vec<ProjectionLag>,
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The process is up.
    #[oai(status = 200)]
    Ok(Json<Health>),
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Ready to serve (`ready`, or `degraded` when a projection is stuck).
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// Not ready: the database is unreachable or not migrated.
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

#[OpenApi(tag = "ApiTags::Operations")]
impl HealthApi {
    /// Liveness
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> HealthResponse {
        HealthResponse::Ok(Json(Health {
            status: "ok".into(),
        }))
    }

    /// Readiness
    ///
    /// The database is reachable, every migration is applied; reports each projection's lag,
    /// and names every failing dependency (a stuck projection too, which does not stop the
    /// instance from serving).
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> ReadyResponse {
        let pool = &self.state.pool;
        let expected = MIGRATOR.iter().count();
        let applied: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await;
        let mut failing = Vec::new();
        let mut fail = |dependency: &str, detail: String| {
            failing.push(FailingDependency {
                dependency: dependency.to_owned(),
                detail,
            });
        };
        let (database, migrations_applied) = match applied {
            Ok(n) if usize::try_from(n).is_ok_and(|n| n >= expected) => (true, true),
            Ok(n) => {
                fail(
                    "migrations",
                    format!("{n} of {expected} migrations applied; run `memberledger migrate`"),
                );
                (true, false)
            }
            Err(err) if !crate::bounds::is_unavailable(&err) => {
                fail("migrations", format!("cannot read the migrations: {err}"));
                (true, false)
            }
            Err(err) => {
                fail("database", err.to_string());
                (false, false)
            }
        };
        let projections = if database && migrations_applied {
            match runner::status(pool, self.state.projections.list()).await {
                Ok(projections) => projections,
                Err(err) => {
                    fail("database", format!("reading the projections: {err}"));
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let ready = database && migrations_applied;
        for p in &projections {
            if let Some(error) = &p.last_error {
                let at = p
                    .stuck_position
                    .map(|pos| format!("stuck at event {pos}: "))
                    .unwrap_or_default();
                fail(&format!("projection:{}", p.name), format!("{at}{error}"));
            }
        }
        let status = match (ready, failing.is_empty()) {
            (false, _) => "not_ready",
            (true, true) => "ready",
            (true, false) => "degraded",
        };
        let body = Readiness {
            status: status.into(),
            database,
            migrations_applied,
            failing,
            projections: projections
                .into_iter()
                .map(|p| ProjectionLag {
                    name: p.name,
                    lag_events: p.lag_events,
                    lag_ms: p.lag_ms,
                    last_error: p.last_error,
                    stuck_position: p.stuck_position,
                })
                .collect(),
        };
        if ready {
            ReadyResponse::Ready(Json(body))
        } else {
            ReadyResponse::NotReady(Json(body))
        }
    }
}
