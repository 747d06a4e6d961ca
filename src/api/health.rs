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
    /// Events in the log it has not applied yet.
    pub lag_events: i64,
    /// Age of the oldest event it has not applied, in milliseconds.
    pub lag_ms: i64,
    /// Why it is stuck, if it is.
    #[oai(nullable)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Object)]
pub struct Readiness {
    /// `ready` or `not_ready`
    pub status: String,
    pub database: bool,
    pub migrations_applied: bool,
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
    /// Ready to serve.
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
    /// The database is reachable, every migration is applied; reports each projection's lag.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> ReadyResponse {
        let pool = &self.state.pool;
        let applied: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await;
        let (database, migrations_applied) = match applied {
            Ok(n) => (
                true,
                usize::try_from(n).is_ok_and(|n| n >= MIGRATOR.iter().count()),
            ),
            Err(sqlx::Error::Database(_)) => (true, false),
            Err(_) => (false, false),
        };
        let projections = if database && migrations_applied {
            runner::status(pool, self.state.projections.list())
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let ready = database && migrations_applied;
        let body = Readiness {
            status: if ready { "ready" } else { "not_ready" }.into(),
            database,
            migrations_applied,
            projections: projections
                .into_iter()
                .map(|p| ProjectionLag {
                    name: p.name,
                    lag_events: p.lag_events,
                    lag_ms: p.lag_ms,
                    last_error: p.last_error,
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
